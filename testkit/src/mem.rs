//! Socket-free peers: [`MemIssuer`] (a test issuer's keys, JWKS and tokens, handed over in
//! memory) and [`MemUpstream`] (the test MCP server as a `dataplane::testing::FakeUpstream`).
//! They behave like [`crate::TestIssuer`] and [`crate::TestUpstream`] where a socket-free test
//! can tell, and share their keys and tool catalogue.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dataplane::testing::{FakeUpstream, PeerReply, PeerRequest};
use serde_json::{Value, json};

use crate::keys::{self, KeyAlg, KeyRing};
use crate::upstream::tools::{
    echo_result, list_result, progress, progress_token, sse_text, text_result, u64_arg,
};
use crate::upstream::{DEFAULT_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS};
use crate::util::{lock, random_hex};
use crate::{JwksMode, Recorded, UpstreamMode, UpstreamOptions, UpstreamStats};

#[derive(Debug)]
struct IssuerInner {
    ring: KeyRing,
    mode: JwksMode,
}

/// A token issuer with no server: what [`crate::TestIssuer`] would serve at `/jwks`, read by
/// calling [`MemIssuer::fetch_jwks`].
#[derive(Debug)]
pub struct MemIssuer {
    issuer: String,
    inner: Mutex<IssuerInner>,
    jwks_fetches: AtomicUsize,
}

impl MemIssuer {
    /// An issuer named `issuer` (no trailing slash) with one EdDSA key.
    pub fn new(issuer: &str) -> MemIssuer {
        MemIssuer {
            issuer: issuer.to_owned(),
            inner: Mutex::new(IssuerInner {
                ring: KeyRing::new(),
                mode: JwksMode::Normal,
            }),
            jwks_fetches: AtomicUsize::new(0),
        }
    }

    pub fn issuer(&self) -> String {
        self.issuer.clone()
    }

    /// The JWKS document as it stands (not counted as a fetch).
    pub fn jwks(&self) -> Value {
        lock(&self.inner).ring.jwks()
    }

    /// One `GET /jwks`, counted: the document's bytes, or why the fetch failed, by mode.
    pub fn fetch_jwks(&self) -> Result<Vec<u8>, String> {
        self.jwks_fetches.fetch_add(1, Ordering::SeqCst);
        let inner = lock(&self.inner);
        match inner.mode {
            JwksMode::Normal => Ok(inner.ring.jwks().to_string().into_bytes()),
            JwksMode::Status500 => Err("HTTP 500 Internal Server Error".into()),
            JwksMode::Garbage => Ok(b"not json{".to_vec()),
            JwksMode::Hang => Err("timed out".into()),
        }
    }

    /// How many times [`MemIssuer::fetch_jwks`] ran.
    pub fn jwks_fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    pub fn set_jwks_mode(&self, mode: JwksMode) {
        lock(&self.inner).mode = mode;
    }

    /// See [`crate::TestIssuer::add_key`].
    pub fn add_key(&self, alg: KeyAlg) -> String {
        lock(&self.inner).ring.add(alg)
    }

    /// See [`crate::TestIssuer::remove_key`].
    pub fn remove_key(&self, kid: &str) {
        lock(&self.inner).ring.remove(kid);
    }

    pub fn current_kid(&self) -> String {
        lock(&self.inner).ring.current().to_owned()
    }

    pub fn key_alg(&self, kid: &str) -> Option<KeyAlg> {
        lock(&self.inner).ring.alg(kid)
    }

    /// See [`crate::TestIssuer::set_extra_jwks_keys`].
    pub fn set_extra_jwks_keys(&self, keys: Vec<Value>) {
        lock(&self.inner).ring.extra = keys;
    }

    /// See [`crate::TestIssuer::mint`].
    pub fn mint(&self, claims: &Value) -> String {
        lock(&self.inner).ring.mint(claims)
    }

    /// See [`crate::TestIssuer::mint_raw`].
    pub fn mint_raw(&self, header: &Value, claims: &Value, kid: &str) -> String {
        lock(&self.inner).ring.mint_raw(header, claims, kid)
    }

    /// See [`crate::TestIssuer::claims`].
    pub fn claims(&self, sub: &str, aud: &str, scope: &str) -> Value {
        keys::claims(&self.issuer, sub, aud, scope)
    }
}

#[derive(Debug, Default)]
pub(crate) struct UpstreamInner {
    mode: UpstreamMode,
    sessions: HashSet<String>,
    requests: Vec<Recorded>,
    stats: UpstreamStats,
    call_ids: HashSet<String>,
    /// Requests per JSON-RPC method (`DELETE` for session ends).
    counts: HashMap<String, usize>,
    /// JSON-RPC method → how many more of its requests are hung up on unanswered.
    drops: HashMap<String, usize>,
    /// Set by [`MemUpstream::answer_protocol`]: what `initialize` answers, whatever was asked.
    answer_version: Option<String>,
    /// Session id → messages its next GET stream carries ([`MemUpstream::notify`]); a
    /// session without an entry gets 405 for GET.
    pending: HashMap<String, Vec<Value>>,
}

/// The test MCP server without a socket: the same tools as [`crate::TestUpstream`] (`echo`,
/// `whoami`, `slow`, `ticks`, `cut`, `tool_i`, pagination), sessions, modes and recording.
/// Differences: `ticks` sends its events at once (timing needs a socket test), and
/// `resources/list` answers one resource (`mem://one`) as [`crate::DroppingUpstream`] does.
#[derive(Debug, Default)]
pub struct MemUpstream {
    pub(crate) tools: usize,
    pub(crate) page_size: usize,
    /// 2026-07-28 only: see `mem_modern.rs`.
    pub(crate) modern: bool,
    /// Resources, prompts and completions: see `mem_items.rs`.
    pub(crate) items: bool,
    /// No `tools` capability (`UpstreamOptions::items_only`).
    items_only: bool,
    pub(crate) inner: Mutex<UpstreamInner>,
}

impl MemUpstream {
    pub fn new(opts: UpstreamOptions) -> MemUpstream {
        MemUpstream {
            tools: opts.tools,
            page_size: opts.page_size,
            modern: opts.modern,
            items: opts.items,
            items_only: opts.items && opts.items_only,
            inner: Mutex::new(UpstreamInner {
                mode: opts.mode,
                ..Default::default()
            }),
        }
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.inner).requests.clone()
    }

    /// Only the `tools/call` requests.
    pub fn tool_calls(&self) -> Vec<Recorded> {
        (self.requests().into_iter())
            .filter(|r| r.rpc_method() == Some("tools/call"))
            .collect()
    }

    pub fn set_mode(&self, mode: UpstreamMode) {
        lock(&self.inner).mode = mode;
    }

    pub fn stats(&self) -> UpstreamStats {
        lock(&self.inner).stats
    }

    /// Session ids open now.
    pub fn sessions(&self) -> Vec<String> {
        lock(&self.inner).sessions.iter().cloned().collect()
    }

    /// Hang up, unanswered, on the next `n` requests of JSON-RPC `method` (`usize::MAX`: all):
    /// an upstream that ran them and crashed, like [`crate::DroppingUpstream`].
    pub fn hang_up_on(&self, method: &str, n: usize) {
        lock(&self.inner).drops.insert(method.to_owned(), n);
    }

    /// From now on `initialize` answers protocol version `version`, whatever it was asked
    /// (an upstream that speaks only that revision, or one Warden does not know).
    pub fn answer_protocol(&self, version: &str) {
        lock(&self.inner).answer_version = Some(version.to_owned());
    }

    /// Queue `message` for session `session`'s GET stream: the next GET of that session
    /// answers every queued message as an SSE stream and ends it. GET is 405 for a session
    /// never notified (an upstream without a server→client stream).
    pub fn notify(&self, session: &str, message: Value) {
        let mut inner = lock(&self.inner);
        inner
            .pending
            .entry(session.to_owned())
            .or_default()
            .push(message);
    }

    /// Requests with JSON-RPC `method` received (answered or not); `DELETE` counts session ends.
    pub fn count(&self, method: &str) -> usize {
        lock(&self.inner).counts.get(method).copied().unwrap_or(0)
    }

    /// Record `req`; whether to hang up on it, and the mode to answer in.
    fn record(&self, req: &PeerRequest, body: &Value) -> (bool, UpstreamMode) {
        let rpc = if req.method == "DELETE" {
            "DELETE"
        } else {
            body.get("method").and_then(Value::as_str).unwrap_or("")
        };
        let mut inner = lock(&self.inner);
        inner.requests.push(Recorded {
            method: req.method.clone(),
            path: req.path.clone(),
            headers: req.headers.clone(),
            body: body.clone(),
        });
        *inner.counts.entry(rpc.to_owned()).or_default() += 1;
        let hang_up = match inner.drops.get_mut(rpc) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        (hang_up, inner.mode)
    }

    /// The request's known session, or the 400 (missing) / 404 (unknown) answer.
    fn session(&self, req: &PeerRequest) -> Result<String, PeerReply> {
        let Some(id) = req.header("mcp-session-id") else {
            return Err(session_error(400, "missing Mcp-Session-Id"));
        };
        if lock(&self.inner).sessions.contains(id) {
            Ok(id.to_owned())
        } else {
            Err(session_error(404, "unknown Mcp-Session-Id"))
        }
    }

    fn post(&self, req: &PeerRequest, body: Value) -> PeerReply {
        let Value::Object(msg) = body else {
            let (code, text) = if body.is_null() {
                (-32700, "parse error")
            } else {
                (-32600, "batches and non-object messages are not supported")
            };
            let err = json!({"jsonrpc":"2.0","id":null,"error":{"code":code,"message":text}});
            return PeerReply::json(400, &err);
        };
        let id = msg.get("id").cloned();
        let Some(method) = msg.get("method").and_then(Value::as_str) else {
            return PeerReply::status(202);
        };
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        if self.modern {
            return self.post_modern(req, id, method, &params);
        }
        if method == "initialize" {
            return self.initialize(id.unwrap_or(Value::Null), &params);
        }
        if let Err(e) = self.session(req) {
            return e;
        }
        let Some(id) = id else {
            return PeerReply::status(202);
        };
        if method.starts_with("notifications/") {
            return PeerReply::status(202);
        }
        if self.items
            && let Some(r) = crate::mem_items::answer(method, &params, self.page_size)
        {
            return match r {
                Ok(r) => rpc_result(&id, &r),
                Err((code, m)) => rpc_error(&id, code, &m),
            };
        }
        match method {
            "ping" => rpc_result(&id, &json!({})),
            "tools/list" => match list_result(self.tools, self.page_size, &params) {
                Ok(mut r) => {
                    self.add_link_tool(&mut r);
                    rpc_result(&id, &r)
                }
                Err(m) => rpc_error(&id, -32602, m),
            },
            "resources/list" => rpc_result(
                &id,
                &json!({"resources": [{"uri": "mem://one", "name": "one"}]}),
            ),
            "tools/call" => {
                self.count_call(&params);
                self.call(req, id, &params)
            }
            other => rpc_error(&id, -32601, &format!("method not found: {other}")),
        }
    }

    fn initialize(&self, id: Value, params: &Value) -> PeerReply {
        let asked = params.get("protocolVersion").and_then(Value::as_str);
        let version = asked
            .filter(|v| SUPPORTED_PROTOCOL_VERSIONS.contains(v))
            .unwrap_or(DEFAULT_PROTOCOL_VERSION);
        let session = random_hex(16);
        let mut inner = lock(&self.inner);
        inner.sessions.insert(session.clone());
        let version = inner.answer_version.clone().unwrap_or(version.to_owned());
        drop(inner);
        let mut caps = match self.items_only {
            true => json!({}),
            false => json!({ "tools": { "listChanged": true } }),
        };
        if self.items {
            crate::mem_items::capabilities(&mut caps);
        }
        let result = json!({
            "protocolVersion": version,
            "capabilities": caps,
            "serverInfo": { "name": "test-upstream", "version": "1" },
            "instructions": "Test upstream.",
        });
        rpc_result(&id, &result).with_header("mcp-session-id", session)
    }

    /// With items, the last `tools/list` page ends with the `link` tool.
    pub(crate) fn add_link_tool(&self, r: &mut Value) {
        if self.items
            && r.get("nextCursor").is_none()
            && let Some(t) = r.get_mut("tools").and_then(Value::as_array_mut)
        {
            t.push(crate::mem_items::link_tool());
        }
    }

    pub(crate) fn count_call(&self, params: &Value) {
        let call_id = params
            .get("arguments")
            .and_then(|a| a.get("call_id"))
            .and_then(Value::as_str);
        let mut inner = lock(&self.inner);
        inner.stats.tool_calls += 1;
        if let Some(c) = call_id {
            if inner.call_ids.insert(c.to_owned()) {
                inner.stats.call_ids += 1;
            } else {
                inner.stats.duplicate_call_ids += 1;
            }
        }
    }

    pub(crate) fn call(&self, req: &PeerRequest, id: Value, params: &Value) -> PeerReply {
        let name = params.get("name").and_then(Value::as_str).unwrap_or("");
        let args = match params.get("arguments") {
            Some(v @ Value::Object(_)) => v.clone(),
            _ => json!({}),
        };
        match name {
            "echo" => rpc_result(&id, &echo_result(&args)),
            "link" if self.items => rpc_result(&id, &crate::mem_items::link_result()),
            "whoami" => {
                let auth = req.header("authorization").unwrap_or("none").to_owned();
                rpc_result(&id, &text_result(auth))
            }
            "slow" => PeerReply::After(
                Duration::from_millis(u64_arg(&args, "ms", 5000)),
                Box::new(rpc_result(&id, &echo_result(&args))),
            ),
            "ticks" => {
                let token = progress_token(params);
                let count = u64_arg(&args, "count", 3);
                let mut events = Vec::new();
                if let Some(t) = &token {
                    events.extend((1..=count).map(|i| sse_text(i, &progress(t, i, count))));
                }
                let done = json!({"jsonrpc":"2.0","id":id,"result":text_result("done".into())});
                events.push(sse_text(events.len() as u64 + 1, &done));
                sse(events, true)
            }
            "cut" => {
                let token = progress_token(params).unwrap_or_else(|| json!("cut"));
                sse(vec![sse_text(1, &progress(&token, 1, 2))], false)
            }
            _ => match name
                .strip_prefix("tool_")
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(n) if n < self.tools && name == format!("tool_{n}") => {
                    rpc_result(&id, &text_result(format!("{name} called")))
                }
                _ => rpc_error(&id, -32602, &format!("unknown tool: {name}")),
            },
        }
    }
}

impl FakeUpstream for MemUpstream {
    fn handle(&self, req: &PeerRequest) -> PeerReply {
        let body = if req.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&req.body).unwrap_or(Value::Null)
        };
        let (hang_up, mode) = self.record(req, &body);
        if hang_up {
            return PeerReply::HangUp;
        }
        if mode == UpstreamMode::Refuse {
            return PeerReply::status(503);
        }
        if req.path != "/mcp" {
            return PeerReply::status(404);
        }
        match req.method.as_str() {
            "POST" if mode == UpstreamMode::Garbage => PeerReply::Full {
                status: 200,
                headers: vec![("content-type", "application/json".into())],
                body: b"<<garbage>>".to_vec(),
            },
            "POST" => self.post(req, body),
            "DELETE" => match self.session(req) {
                Ok(id) => {
                    lock(&self.inner).sessions.remove(&id);
                    PeerReply::status(200)
                }
                Err(e) => e,
            },
            "GET" => self.get_stream(req),
            _ => PeerReply::status(405).with_header("allow", "POST, DELETE"),
        }
    }
}

/// Where [`MemUpstream::notify_listeners`] queues (no session id looks like it).
const LISTEN_QUEUE: &str = "\0listen";

impl MemUpstream {
    /// Queue `message` for the next 2026-07-28 `subscriptions/listen` (`modern` only).
    pub fn notify_listeners(&self, message: Value) {
        self.notify(LISTEN_QUEUE, message);
    }

    /// A `subscriptions/listen` (2026-07-28): the acknowledgment of the resources it asked
    /// for, every message [`MemUpstream::notify_listeners`] queued (tagged with its id), then
    /// the end (a listener opens another).
    pub(crate) fn listen(&self, id: &Value, params: &Value) -> PeerReply {
        let uris = (params.pointer("/notifications/resourceSubscriptions"))
            .cloned()
            .unwrap_or_else(|| json!([]));
        let tag = json!({ "io.modelcontextprotocol/subscriptionId": id });
        let ack = json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
            "params": {"_meta": tag, "notifications": {"resourceSubscriptions": uris}}});
        let queued = (lock(&self.inner).pending.get_mut(LISTEN_QUEUE))
            .map(std::mem::take)
            .unwrap_or_default();
        let mut events = vec![sse_text(1, &ack)];
        for mut m in queued {
            if let Some(p) = m.get_mut("params").and_then(Value::as_object_mut) {
                p.insert("_meta".into(), tag.clone());
            }
            events.push(sse_text(events.len() as u64 + 1, &m));
        }
        sse(events, true)
    }

    /// A session's GET stream: what [`MemUpstream::notify`] queued for it, then the end.
    fn get_stream(&self, req: &PeerRequest) -> PeerReply {
        let id = match self.session(req) {
            Ok(id) => id,
            Err(e) => return e,
        };
        let Some(queued) = lock(&self.inner).pending.get_mut(&id).map(std::mem::take) else {
            return PeerReply::status(405).with_header("allow", "POST, DELETE");
        };
        let events = (queued.iter().enumerate())
            .map(|(i, m)| sse_text(i as u64 + 1, m))
            .collect();
        sse(events, true)
    }
}

pub(crate) fn rpc_result(id: &Value, result: &Value) -> PeerReply {
    PeerReply::json(200, &json!({"jsonrpc":"2.0","id":id,"result":result}))
}

pub(crate) fn rpc_error(id: &Value, code: i64, message: &str) -> PeerReply {
    PeerReply::json(
        200,
        &json!({"jsonrpc":"2.0","id":id,"error":{"code":code,"message":message}}),
    )
}

fn session_error(status: u16, message: &str) -> PeerReply {
    let body = json!({"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":message}});
    PeerReply::json(status, &body)
}

fn sse(events: Vec<String>, complete: bool) -> PeerReply {
    PeerReply::Sse {
        status: 200,
        headers: vec![
            ("content-type", "text/event-stream".into()),
            ("cache-control", "no-cache".into()),
        ],
        events: events.into_iter().map(String::into_bytes).collect(),
        complete,
    }
}
