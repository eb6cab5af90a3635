//! The behaviour suites' fixture: a harness with one in-memory issuer and `up0..` upstreams,
//! from the same configuration the socket tests use (`tests/common/mod.rs`).

use std::ops::Deref;
use std::rc::Rc;

use controlplane::testing::Harness;
use testkit::{MemIssuer, MemUpstream, UpstreamOptions};

pub const AUD: &str = "http://127.0.0.1/mcp";
pub const ISSUER: &str = "https://idp.test";

/// A harness with the issuer and the upstreams the test talks about.
pub struct Env {
    pub h: Harness,
    pub issuer: Rc<MemIssuer>,
    pub upstreams: Vec<Rc<MemUpstream>>,
}

impl Deref for Env {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.h
    }
}

/// `tests/common::config_yaml`, for in-memory peers: upstreams `<name>` at
/// `http://<name>.test/mcp`, no listener or audit files to speak of. Unknown-`kid` refetches
/// are not rate-limited (`jwks_min_refetch_interval: 0s`), so no test waits out a window.
pub fn config_yaml(issuers: &[&str], upstreams: &[&str], extra_gateway: &str) -> String {
    let mut ups = String::new();
    for name in upstreams {
        ups.push_str(&format!(
            "  - name: {name}\n    url: http://{name}.test/mcp\n    timeout: 2s\n"
        ));
    }
    if ups.is_empty() {
        ups.push_str("  []\n");
    }
    let mut iss = String::new();
    for i in issuers {
        iss.push_str(&format!(
            "  - issuer: {i}\n    jwks_min_refetch_interval: 0s\n"
        ));
    }
    format!(
        "policy:\n  default: allow\ngateway:\n  listen: 127.0.0.1:0\n  public_url: {AUD}\n  shards: 1\n  scopes_supported: [mcp:tools]\n{extra_gateway}limits:\n  max_body_bytes: 65536\n  max_header_bytes: 8192\n  header_timeout: 1s\n  body_timeout: 1s\nissuers:\n{iss}upstreams:\n{ups}"
    )
}

impl Env {
    pub fn start(n_upstreams: usize) -> Env {
        Self::start_with(n_upstreams, UpstreamOptions::default(), "")
    }

    pub fn start_with(n_upstreams: usize, opts: UpstreamOptions, extra_gateway: &str) -> Env {
        Self::start_edited(n_upstreams, opts, extra_gateway, |y| y)
    }

    /// Like `start_with`, with the generated YAML passed through `edit` first.
    pub fn start_edited(
        n_upstreams: usize,
        opts: UpstreamOptions,
        extra_gateway: &str,
        edit: impl FnOnce(String) -> String,
    ) -> Env {
        Self::start_shaped(n_upstreams, opts, extra_gateway, |_| {}, edit)
    }

    /// An issuer shaped by `prep` first (keys added before the gateway loads them).
    pub fn start_shaped(
        n_upstreams: usize,
        opts: UpstreamOptions,
        extra_gateway: &str,
        prep: impl FnOnce(&MemIssuer),
        edit: impl FnOnce(String) -> String,
    ) -> Env {
        let issuer = Rc::new(MemIssuer::new(ISSUER));
        prep(&issuer);
        let names: Vec<String> = (0..n_upstreams).map(|i| format!("up{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let yaml = edit(config_yaml(&[ISSUER], &refs, extra_gateway));
        let mut b = Harness::builder(&yaml).issuer(&issuer);
        let mut upstreams = Vec::new();
        for n in &names {
            let u = Rc::new(MemUpstream::new(opts));
            b = b.upstream(n, u.clone());
            upstreams.push(u);
        }
        Env {
            h: b.build().expect("harness"),
            issuer,
            upstreams,
        }
    }

    pub fn token(&self, sub: &str) -> String {
        self.issuer.mint(&self.issuer.claims(sub, AUD, "mcp:tools"))
    }
}

/// The tool names of a `tools/list` answer, in order.
pub fn listed_tools(v: &serde_json::Value) -> Vec<&str> {
    v["result"]["tools"]
        .as_array()
        .expect("a tools array")
        .iter()
        .map(|t| t["name"].as_str().expect("a tool name"))
        .collect()
}
