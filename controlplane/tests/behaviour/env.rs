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

/// A connection whose answer is read while it is being written (a stream): the request is
/// written and half-closed, the shard serves it in a task of its own.
pub struct Open {
    client: dataplane::testing::MemStream,
    done: Rc<std::cell::Cell<bool>>,
    /// Everything the gateway wrote so far.
    pub raw: Vec<u8>,
}

impl Open {
    /// Start serving `request` on `shard`; must run on the harness's runtime (`block_on`).
    pub async fn start(shard: &Rc<dataplane::shard::Shard>, request: Vec<u8>) -> Open {
        use monoio::io::AsyncWriteRentExt;
        let (mut client, server) = dataplane::testing::duplex();
        let (written, _) = client.write_all(request).await;
        written.expect("request written");
        client.close_write();
        let done = Rc::new(std::cell::Cell::new(false));
        let (d, shard) = (done.clone(), shard.clone());
        monoio::spawn(async move {
            let limits = shard.shared.snapshot.load().settings.limits;
            let handler = dataplane::mcp::Gateway { shard };
            dataplane::http1::conn::serve(server, &handler, limits).await;
            d.set(true);
        });
        Open {
            client,
            done,
            raw: Vec::new(),
        }
    }

    /// The text written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// Whether the gateway closed the connection.
    pub fn closed(&self) -> bool {
        self.done.get()
    }

    /// Read for `wait` of real time (streams tick on monoio's real timer), or until the
    /// connection closed or `until` holds of what was written.
    pub async fn read(&mut self, wait: std::time::Duration, until: impl Fn(&str) -> bool) {
        let step = std::time::Duration::from_millis(10);
        let mut waited = std::time::Duration::ZERO;
        loop {
            self.raw.extend(self.client.take_available());
            if self.closed() {
                self.raw.extend(self.client.take_available());
                return;
            }
            if until(&self.text()) || waited >= wait {
                return;
            }
            monoio::time::sleep(step).await;
            waited += step;
        }
    }

    /// The one response written, parsed (the connection must have closed).
    pub fn response(&self) -> dataplane::testing::HttpResponse {
        assert!(self.closed(), "still open: {}", self.text());
        let mut all = dataplane::testing::HttpResponse::parse_all(&self.raw).unwrap();
        assert_eq!(all.len(), 1, "{}", self.text());
        all.remove(0)
    }
}
