//! The socket-free harness (cargo feature `testing`): one real shard serving the real
//! snapshot of a YAML configuration, with in-memory issuers and upstreams and a fake clock.
//! Requests go in as bytes and come out as bytes; nothing opens a socket or starts a thread.
//! How to write a test with it: `docs/testing.md`.

mod build;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use dataplane::audit::Record;
use dataplane::shard::Shard;
use dataplane::snapshot::Snapshot;
use dataplane::testing::{FakeClock, HttpRequest, HttpResponse, MemNet, Runtime};
use serde_json::{Value, json};

pub use build::{Delegate, HarnessBuilder, JwksSource};
pub use dataplane::testing::{FakeUpstream, PeerReply, PeerRequest};

/// Why a harness could not be built: what would have stopped `warden` from starting.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Parse(#[from] crate::config::ConfigError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("upstream: {0}")]
    Upstream(String),
    #[error("policy: {0}")]
    Policy(String),
    #[error("monoio runtime: {0}")]
    Runtime(std::io::Error),
}

/// Where [`Harness::audit_sink`] sends records.
pub type AuditSink = Box<dyn FnMut(Record)>;

/// The protocol version the conveniences speak.
pub const PROTOCOL_VERSION: &str = "2025-06-18";

/// A gateway in a test: see the module docs. `!Send`; one per test. Every method takes
/// `&self` (the runtime is behind a `RefCell`), so tests read like the socket ones.
pub struct Harness {
    rt: RefCell<Runtime>,
    shard: Rc<Shard>,
    net: MemNet,
    clock: FakeClock,
    ctl: Rc<RefCell<build::Ctl>>,
    /// The `Host` header requests carry unless they set one.
    host: String,
    mcp_path: String,
    /// Audit records written so far (drained from the shard's queue after each exchange).
    audit: RefCell<Vec<Record>>,
    /// Set by [`Harness::stall_audit`]: the queue is not drained (a writer blocked on its sink).
    audit_stalled: Cell<bool>,
    /// Set by [`Harness::audit_sink`]: each record goes there instead of into `audit`.
    sink: RefCell<Option<AuditSink>>,
    /// Sibling shards made by [`Harness::send_on`], by id (1..).
    siblings: RefCell<Vec<Rc<Shard>>>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("host", &self.host)
            .field("mcp_path", &self.mcp_path)
            .field("net", &self.net)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// Start describing a harness for the configuration `yaml` (the `warden.yaml` format).
    pub fn builder(yaml: &str) -> HarnessBuilder {
        HarnessBuilder::new(yaml)
    }

    fn assemble(
        rt: Runtime,
        shard: Rc<Shard>,
        net: MemNet,
        clock: FakeClock,
        ctl: Rc<RefCell<build::Ctl>>,
    ) -> Harness {
        let (host, mcp_path) = {
            let c = ctl.borrow();
            let g = &c.cfg.gateway;
            let host = match g.allowed_hosts.first() {
                Some(h) => h.clone(),
                None => {
                    let h = g.public_url.host_str().unwrap_or("localhost");
                    match g.public_url.port() {
                        Some(p) => format!("{h}:{p}"),
                        None => h.to_owned(),
                    }
                }
            };
            (host, g.public_url.path().to_owned())
        };
        Harness {
            rt: RefCell::new(rt),
            shard,
            net,
            clock,
            ctl,
            host,
            mcp_path,
            audit: RefCell::default(),
            audit_stalled: Cell::new(false),
            sink: RefCell::default(),
            siblings: RefCell::default(),
        }
    }

    /// One connection: write `raw`, half-close, and return every byte the gateway wrote
    /// before closing. Several requests in `raw` are served in order (pipelining).
    pub fn request(&self, raw: &[u8]) -> Vec<u8> {
        self.request_on(0, raw)
    }

    /// Shard `id` of this process: 0 is the harness's own; others are made on first use, on
    /// the same runtime, sharing everything the process's shards share (snapshot, sessions,
    /// rate limits, the DPoP replay set, the audit queue) with their own per-shard caches.
    pub fn shard_on(&self, id: u16) -> Rc<Shard> {
        if id == 0 {
            return self.shard.clone();
        }
        let mut sib = self.siblings.borrow_mut();
        while sib.len() < usize::from(id) {
            let n = sib.len() as u16 + 1;
            sib.push(dataplane::testing::shard_n(
                n,
                self.shard.shared.clone(),
                self.shard.clock.clone(),
                self.net.clone(),
            ));
        }
        sib[usize::from(id) - 1].clone()
    }

    /// [`Harness::request`] on shard `id`.
    pub fn request_on(&self, id: u16, raw: &[u8]) -> Vec<u8> {
        let shard = self.shard_on(id);
        let out = self
            .rt
            .borrow_mut()
            .block_on(self.writing(dataplane::testing::exchange(&shard, raw)));
        self.collect_audit();
        out
    }

    /// One request on its own connection, its response read back. `Host` is added when
    /// absent. Panics unless exactly one response came back (a test failure).
    pub fn send(&self, req: HttpRequest) -> HttpResponse {
        self.send_on(0, req)
    }

    /// [`Harness::send`] on shard `id` (see [`Harness::shard_on`]).
    pub fn send_on(&self, id: u16, req: HttpRequest) -> HttpResponse {
        let req = if req
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"))
        {
            req
        } else {
            let host = self.host.clone();
            req.header("host", host)
        };
        let raw = self.request_on(id, &req.to_bytes());
        let mut all = HttpResponse::parse_all(&raw).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&raw));
        });
        if all.len() != 1 {
            panic!(
                "expected one response, got {}: {}",
                all.len(),
                String::from_utf8_lossy(&raw)
            );
        }
        all.remove(0)
    }

    /// A request to the MCP endpoint (`POST`, `GET`, `DELETE`, …), to be finished and sent.
    pub fn mcp(&self, method: &str) -> HttpRequest {
        HttpRequest::new(method, &self.mcp_path)
    }

    /// POST one JSON-RPC message with an optional token and session (and then the
    /// protocol version header), accepting JSON or SSE.
    pub fn post(&self, token: Option<&str>, session: Option<&str>, body: &Value) -> HttpResponse {
        let mut r = self
            .mcp("POST")
            .header("accept", "application/json, text/event-stream")
            .json(body);
        if let Some(t) = token {
            r = r.bearer(t);
        }
        if let Some(s) = session {
            r = r
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", PROTOCOL_VERSION);
        }
        self.send(r)
    }

    /// `initialize` and `notifications/initialized`; the session id.
    pub fn session(&self, token: &str) -> String {
        let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":PROTOCOL_VERSION,"capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
        let r = self.post(Some(token), None, &init);
        assert_eq!(r.status, 200, "initialize: {}", r.text());
        let sid = r
            .header("mcp-session-id")
            .unwrap_or_else(|| panic!("initialize gave no session id: {r:?}"))
            .to_owned();
        let r = self.post(
            Some(token),
            Some(&sid),
            &json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        );
        assert_eq!(r.status, 202, "notifications/initialized: {}", r.text());
        sid
    }

    /// `tools/call`, expecting HTTP 200; the JSON-RPC answer (JSON or the last SSE message).
    pub fn call(&self, token: &str, sid: &str, id: Value, tool: &str, args: Value) -> Value {
        let body = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}});
        let r = self.post(Some(token), Some(sid), &body);
        assert_eq!(r.status, 200, "tools/call {tool}: {}", r.text());
        r.message()
    }

    /// `DELETE` of a session.
    pub fn delete(&self, token: Option<&str>, session: &str) -> HttpResponse {
        let mut r = self.mcp("DELETE").header("mcp-session-id", session);
        if let Some(t) = token {
            r = r.bearer(t);
        }
        self.send(r)
    }

    /// `GET` of the endpoint (the server-to-client stream).
    pub fn get(&self, token: Option<&str>, session: Option<&str>) -> HttpResponse {
        let mut r = self.mcp("GET").header("accept", "text/event-stream");
        if let Some(t) = token {
            r = r.bearer(t);
        }
        if let Some(s) = session {
            r = r.header("mcp-session-id", s);
        }
        self.send(r)
    }

    /// Let `d` pass on the shard's clock (only there: upstream timeouts are real time).
    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    /// The shard's wall clock, in seconds.
    pub fn now_secs(&self) -> i64 {
        self.shard.clock.unix_secs()
    }

    /// The snapshot the shard serves now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shard.shared.snapshot.load_full()
    }

    /// The fake upstreams' network: connection counts, unplugging.
    pub fn net(&self) -> &MemNet {
        &self.net
    }

    /// Audit records of every exchange so far, taken (each is returned once).
    pub fn take_audit(&self) -> Vec<Record> {
        self.collect_audit();
        std::mem::take(&mut *self.audit.borrow_mut())
    }

    /// Sessions the shard reported ended (`DELETE`), as the control plane saw them.
    pub fn sessions_ended(&self) -> usize {
        self.ctl.borrow().sessions_ended
    }

    /// The upstream ids the shards said changed their lists (`UpstreamChanged`), in order.
    pub fn upstreams_changed(&self) -> Vec<u32> {
        self.ctl.borrow().upstreams_changed.clone()
    }

    /// The public keys of the in-memory STS (an embedded `delegation` block), as
    /// `/sts/jwks.json` serves them.
    pub fn sts_jwks(&self) -> Option<Value> {
        self.ctl.borrow().sts.as_ref().map(|s| s.jwks())
    }

    /// Build and publish the snapshot again (what the control loop does on its timer).
    pub fn republish(&self) {
        self.ctl.borrow_mut().publish();
    }

    /// The shard itself, for benchmarks and tests that drive [`dataplane::testing::exchange`].
    pub fn shard(&self) -> Rc<Shard> {
        self.shard.clone()
    }

    /// Run `f` on the harness's runtime (where the shard's tasks live).
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        let out = self.rt.borrow_mut().block_on(self.writing(f));
        self.collect_audit();
        out
    }

    /// `f` with the harness as the audit writer: whenever `f` waits, the queued records are
    /// taken and acknowledged as written (unless stalled), so answers waiting for their
    /// records go on, as behind the writer thread.
    async fn writing<F: Future>(&self, f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        std::future::poll_fn(|cx| {
            loop {
                if let std::task::Poll::Ready(v) = f.as_mut().poll(cx) {
                    return std::task::Poll::Ready(v);
                }
                if self.collect_audit() == 0 {
                    return std::task::Poll::Pending;
                }
            }
        })
        .await
    }

    /// The `Host` header value the conveniences send.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// While `stalled`, audit records stay in the shard's queue as behind a writer blocked
    /// on a slow sink (a full pipe), so the queue fills; `false` drains it again.
    pub fn stall_audit(&self, stalled: bool) {
        self.audit_stalled.set(stalled);
        if !stalled {
            self.collect_audit();
        }
    }

    /// Hand every record from now on to `sink` (what a benchmark's writer does with it)
    /// instead of keeping it for [`Harness::take_audit`].
    pub fn audit_sink(&self, sink: AuditSink) {
        *self.sink.borrow_mut() = Some(sink);
    }

    /// Take the queued records and acknowledge them written; how many.
    fn collect_audit(&self) -> usize {
        if self.audit_stalled.get() {
            return 0;
        }
        let q = &self.shard.shared.audit;
        let mut audit = self.audit.borrow_mut();
        let mut sink = self.sink.borrow_mut();
        let mut acks = Vec::new();
        while let Some(t) = q.pop() {
            match sink.as_mut() {
                Some(f) => f(t.record),
                None => audit.push(t.record),
            }
            acks.push(t.ack);
        }
        let n = acks.len();
        q.release(n);
        acks.into_iter().for_each(dataplane::audit::Ack::written);
        // A long run (a benchmark) keeps the most recent records only.
        if audit.len() > 10_000 {
            audit.drain(..5_000);
        }
        n
    }
}
