//! Shared harness for the integration tests: a real issuer, real upstreams, a real Warden.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
#![allow(
    clippy::disallowed_methods,
    reason = "the harness measures real waits and names temp dirs by the real time"
)]

pub mod balancer;
pub mod client;
pub mod process;

use std::time::Duration;

use controlplane::{Clock, Config, MockClock, Running, StartOptions};
use serde_json::{Value, json};
use testkit::{TestIssuer, TestUpstream, UpstreamOptions};

pub const AUD: &str = "http://127.0.0.1/mcp";

/// One gateway with one issuer and any number of upstreams.
pub struct Env {
    pub issuer: TestIssuer,
    pub upstreams: Vec<TestUpstream>,
    pub gw: Running,
    pub client: reqwest::Client,
}

/// A fresh directory for a test gateway's audit files.
pub fn audit_dir() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!(
        "warden-test-audit-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos
    ));
    d.display().to_string()
}

/// The audit directory named in a config produced by `config_yaml`.
pub fn audit_dir_of(yaml: &str) -> std::path::PathBuf {
    let line = yaml
        .lines()
        .find(|l| l.trim_start().starts_with("dir: "))
        .unwrap();
    line.trim_start().trim_start_matches("dir: ").into()
}

pub fn config_yaml(issuer: &str, upstreams: &[(String, String)], extra_gateway: &str) -> String {
    let mut ups = String::new();
    for (name, url) in upstreams {
        ups.push_str(&format!(
            "  - name: {name}\n    url: {url}\n    timeout: 2s\n"
        ));
    }
    if ups.is_empty() {
        ups.push_str("  []\n");
    }
    let audit = audit_dir();
    format!(
        "audit:\n  sink: file\n  dir: {audit}\npolicy:\n  default: allow\ngateway:\n  listen: 127.0.0.1:0\n  public_url: {AUD}\n  shards: 2\n  scopes_supported: [mcp:tools]\n{extra_gateway}admin:\n  listen: 127.0.0.1:0\nlimits:\n  max_body_bytes: 65536\n  max_header_bytes: 8192\n  header_timeout: 1s\n  body_timeout: 1s\n  shutdown_grace: 2s\nissuers:\n  - issuer: {issuer}\n    jwks_min_refetch_interval: 2s\nupstreams:\n{ups}"
    )
}

impl Env {
    pub async fn start(n_upstreams: usize) -> Env {
        Self::start_with(n_upstreams, UpstreamOptions::default(), "").await
    }

    pub async fn start_with(n_upstreams: usize, opts: UpstreamOptions, extra_gateway: &str) -> Env {
        Self::start_edited(n_upstreams, opts, extra_gateway, |y| y).await
    }

    /// Like `start`, with the gateway on a mock clock: the handle steps its time.
    pub async fn start_mocked(n_upstreams: usize) -> (Env, MockClock) {
        let (clock, time) = Clock::mock();
        let env = Self::start_on(n_upstreams, UpstreamOptions::default(), "", |y| y, clock).await;
        (env, time)
    }

    /// Like `start_with`, with the generated YAML passed through `edit` first.
    pub async fn start_edited(
        n_upstreams: usize,
        opts: UpstreamOptions,
        extra_gateway: &str,
        edit: impl FnOnce(String) -> String,
    ) -> Env {
        Self::start_on(n_upstreams, opts, extra_gateway, edit, Clock::new()).await
    }

    /// Like `start_edited`, with the gateway on `clock`.
    pub async fn start_on(
        n_upstreams: usize,
        opts: UpstreamOptions,
        extra_gateway: &str,
        edit: impl FnOnce(String) -> String,
        clock: Clock,
    ) -> Env {
        let issuer = TestIssuer::start().await;
        let mut upstreams = Vec::new();
        let mut list = Vec::new();
        for i in 0..n_upstreams {
            let u = TestUpstream::start(opts).await;
            list.push((format!("up{i}"), u.url()));
            upstreams.push(u);
        }
        let yaml = edit(config_yaml(&issuer.issuer(), &list, extra_gateway));
        let cfg = Config::parse(&yaml, "test.yaml").expect("config");
        let gw = controlplane::start_with(
            cfg,
            StartOptions {
                clock,
                ..StartOptions::default()
            },
        )
        .await
        .expect("start");
        Env {
            issuer,
            upstreams,
            gw,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.gw.addr)
    }

    pub fn token(&self, sub: &str) -> String {
        self.issuer.mint(&self.issuer.claims(sub, AUD, "mcp:tools"))
    }

    /// POST one JSON-RPC message with a token and optional session.
    pub async fn post(
        &self,
        token: Option<&str>,
        session: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        let mut rb = self
            .client
            .post(self.url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .timeout(Duration::from_secs(10));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(s) = session {
            rb = rb
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", "2025-06-18");
        }
        rb.body(body.to_string()).send().await.expect("send")
    }

    /// initialize + notifications/initialized; returns the session id.
    pub async fn session(&self, token: &str) -> String {
        let r = self
            .post(Some(token), None, &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
            .await;
        assert_eq!(r.status(), 200);
        let sid = r
            .headers()
            .get("mcp-session-id")
            .expect("session id")
            .to_str()
            .unwrap()
            .to_owned();
        let r = self
            .post(
                Some(token),
                Some(&sid),
                &json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
            )
            .await;
        assert_eq!(r.status(), 202);
        sid
    }

    pub async fn call(&self, token: &str, sid: &str, id: Value, tool: &str, args: Value) -> Value {
        let r = self.post(Some(token), Some(sid), &json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}})).await;
        assert_eq!(r.status(), 200);
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = r.text().await.unwrap();
        if ct.starts_with("text/event-stream") {
            last_sse_message(&text)
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }
}

/// The last JSON message in an SSE body.
pub fn last_sse_message(text: &str) -> Value {
    text.split("\n\n")
        .filter_map(|b| {
            let d: Vec<&str> = b.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            (!d.is_empty()).then(|| d.join("\n"))
        })
        .filter_map(|d| serde_json::from_str::<Value>(&d).ok())
        .last()
        .expect("an SSE message")
}

/// Send raw bytes on a fresh TCP connection and read until close or timeout.
pub async fn raw(addr: std::net::SocketAddr, bytes: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
