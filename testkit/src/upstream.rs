//! `TestUpstream`: a real MCP server (Streamable HTTP, 2025-06-18) on 127.0.0.1 that records every request.
//! A session's GET stream tells `notifications/tools/list_changed` when [`TestUpstream::set_tools`]
//! changes the list, and carries what [`TestUpstream::notify`] sends.
//! It also counts the `tools/call` requests it executed (recording on or off) and answers them at
//! `GET /stats`, so load tests can compare what ran upstream with what their clients saw.

pub(crate) mod tools;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::util::{self, Server, lock, random_hex};

/// Protocol versions the upstream accepts from `initialize`; anything else gets the default.
pub const SUPPORTED_PROTOCOL_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];
/// The version answered when the client asks for one not in [`SUPPORTED_PROTOCOL_VERSIONS`].
pub const DEFAULT_PROTOCOL_VERSION: &str = "2025-06-18";

/// How the upstream answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UpstreamMode {
    /// A working MCP server.
    #[default]
    Normal,
    /// Every POST answers `200` with body `<<garbage>>` and `content-type: application/json`.
    Garbage,
    /// Every request answers `503`.
    Refuse,
}

/// Start-up options for [`TestUpstream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpstreamOptions {
    /// Extra tools `tool_0..tool_{n-1}` listed after the built-ins.
    pub tools: usize,
    /// `tools/list` page size (with `nextCursor`); 0 = everything on one page.
    pub page_size: usize,
    /// Initial mode.
    pub mode: UpstreamMode,
    /// Speak MCP 2026-07-28 only (stateless; `initialize` refused). In memory only
    /// ([`crate::MemUpstream`]); the socket upstream speaks 2025-xx.
    pub modern: bool,
    /// Serve resources, templates, prompts and completions (and the `link` tool): see
    /// `mem_items.rs`. Both upstreams; on the socket one, 2025-xx only.
    pub items: bool,
    /// With `items`: announce no `tools` capability, so only resources and prompts are
    /// discovered (an upstream that lists no tool). In memory, 2025-xx only.
    pub items_only: bool,
}

/// What the upstream executed, counted whether recording is on or off (see [`TestUpstream::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct UpstreamStats {
    /// `tools/call` requests executed (a known session, any tool).
    pub tool_calls: u64,
    /// Distinct string `arguments.call_id` values among them.
    pub call_ids: u64,
    /// Calls whose `arguments.call_id` had been executed before: the same call run twice.
    pub duplicate_call_ids: u64,
}

/// One HTTP request as the upstream received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Request path (no query).
    pub path: String,
    /// Headers in arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON; `Null` if empty or not JSON.
    pub body: Value,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The JSON-RPC method of the body, if any.
    pub fn rpc_method(&self) -> Option<&str> {
        self.body.get("method").and_then(Value::as_str)
    }
}

#[derive(Debug)]
struct Inner {
    mode: UpstreamMode,
    recording: bool,
    sessions: HashSet<String>,
    requests: Vec<Recorded>,
    tick_times: Vec<Instant>,
    stats: UpstreamStats,
    /// Every `arguments.call_id` executed; only callers that send one pay for it.
    call_ids: HashSet<String>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    /// Extra tools listed (see [`TestUpstream::set_tools`]).
    tools: std::sync::atomic::AtomicUsize,
    /// Bumped by every change of the tool list; each session's GET stream tells it.
    changes: watch::Sender<u64>,
    /// Messages for every open GET stream ([`TestUpstream::notify`]).
    notes: tokio::sync::broadcast::Sender<Value>,
    page_size: usize,
    /// Resources, prompts and completions (`UpstreamOptions::items`).
    items: bool,
    inner: Mutex<Inner>,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    pub(crate) fn tools(&self) -> usize {
        self.tools.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn note_tick(&self) {
        lock(&self.inner).tick_times.push(Instant::now());
    }
}

/// A real MCP server on `http://127.0.0.1:PORT/mcp`. Stops when dropped.
#[derive(Debug)]
pub struct TestUpstream {
    shared: Arc<Shared>,
    server: Server,
}

impl TestUpstream {
    /// Starts an upstream on a free port.
    pub async fn start(opts: UpstreamOptions) -> TestUpstream {
        TestUpstream::start_on(opts, 0).await
    }

    /// Starts an upstream on 127.0.0.1:`port` (0 = any free port).
    pub async fn start_on(opts: UpstreamOptions, port: u16) -> TestUpstream {
        let listener = util::bind(port).await;
        let (tx, rx) = util::shutdown_pair();
        let shared = Arc::new(Shared {
            tools: opts.tools.into(),
            changes: watch::channel(0).0,
            notes: tokio::sync::broadcast::channel(16).0,
            page_size: opts.page_size,
            items: opts.items,
            inner: Mutex::new(Inner {
                mode: opts.mode,
                recording: true,
                sessions: HashSet::new(),
                requests: Vec::new(),
                tick_times: Vec::new(),
                stats: UpstreamStats::default(),
                call_ids: HashSet::new(),
            }),
            shutdown: rx,
        });
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let server = util::serve(listener, router, tx);
        TestUpstream { shared, server }
    }

    /// `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.server.addr())
    }

    /// The socket the upstream listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every HTTP request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.inner).requests.clone()
    }

    /// Only the recorded `tools/call` requests.
    pub fn tool_calls(&self) -> Vec<Recorded> {
        lock(&self.shared.inner)
            .requests
            .iter()
            .filter(|r| r.rpc_method() == Some("tools/call"))
            .cloned()
            .collect()
    }

    /// Lists `n` extra tools from now on, and says so (`notifications/tools/list_changed`) on
    /// every session's GET stream.
    pub fn set_tools(&self, n: usize) {
        self.shared
            .tools
            .store(n, std::sync::atomic::Ordering::Relaxed);
        self.shared.changes.send_modify(|c| *c += 1);
    }

    /// Sends `message` on every session's open GET stream (a notification outside a call,
    /// e.g. `notifications/resources/updated`); streams opened later do not get it.
    pub fn notify(&self, message: Value) {
        let _ = self.shared.notes.send(message);
    }

    /// Changes how the upstream answers from now on.
    pub fn set_mode(&self, mode: UpstreamMode) {
        lock(&self.shared.inner).mode = mode;
    }

    /// Turns request recording on (the default) or off (load tests: keeps memory flat).
    pub fn set_recording(&self, on: bool) {
        lock(&self.shared.inner).recording = on;
    }

    /// When each `ticks` SSE event (progress events and the final result) was handed to the connection.
    pub fn tick_sent_times(&self) -> Vec<Instant> {
        lock(&self.shared.inner).tick_times.clone()
    }

    /// The `tools/call` requests executed so far (also served as JSON at `GET /stats`).
    pub fn stats(&self) -> UpstreamStats {
        lock(&self.shared.inner).stats
    }

    /// Session ids currently open (initialized and not deleted).
    pub fn sessions(&self) -> Vec<String> {
        lock(&self.shared.inner).sessions.iter().cloned().collect()
    }
}

/// Records the request, then answers it according to the mode.
async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let mode = {
        let mut inner = lock(&shared.inner);
        if inner.recording {
            inner.requests.push(Recorded {
                method: method.as_str().to_owned(),
                path: uri.path().to_owned(),
                headers: headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_ascii_lowercase(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body: parsed.clone(),
            });
        }
        inner.mode
    };
    if method == Method::GET && uri.path() == "/stats" {
        let stats = lock(&shared.inner).stats;
        return axum::Json(stats).into_response();
    }
    if mode == UpstreamMode::Refuse {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if uri.path() != "/mcp" {
        return StatusCode::NOT_FOUND.into_response();
    }
    match method {
        Method::POST if mode == UpstreamMode::Garbage => {
            ([(header::CONTENT_TYPE, "application/json")], "<<garbage>>").into_response()
        }
        Method::POST => post(&shared, &headers, parsed).await,
        Method::GET => match check_session(&shared, &headers) {
            Ok(_) => tools::change_stream(&shared),
            Err(e) => http_error(e),
        },
        Method::DELETE => match check_session(&shared, &headers) {
            Ok(id) => {
                lock(&shared.inner).sessions.remove(&id);
                StatusCode::OK.into_response()
            }
            Err(e) => http_error(e),
        },
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, POST, DELETE")],
        )
            .into_response(),
    }
}

/// Returns the request's known session id, or the 400 (missing) / 404 (unknown) answer.
fn check_session(shared: &Shared, headers: &HeaderMap) -> Result<String, SessionError> {
    let Some(id) = headers.get("mcp-session-id").and_then(|v| v.to_str().ok()) else {
        return Err((StatusCode::BAD_REQUEST, "missing Mcp-Session-Id"));
    };
    if lock(&shared.inner).sessions.contains(id) {
        Ok(id.to_owned())
    } else {
        Err((StatusCode::NOT_FOUND, "unknown Mcp-Session-Id"))
    }
}

/// Why a request's session was refused: the HTTP status and a message.
type SessionError = (StatusCode, &'static str);

fn http_error((status, msg): SessionError) -> Response {
    let body = json!({ "jsonrpc": "2.0", "id": null, "error": { "code": -32600, "message": msg } });
    (status, axum::Json(body)).into_response()
}

async fn post(shared: &Arc<Shared>, headers: &HeaderMap, body: Value) -> Response {
    let Value::Object(msg) = body else {
        let (code, text) = if body.is_null() {
            (-32700, "parse error")
        } else {
            (-32600, "batches and non-object messages are not supported")
        };
        let err =
            json!({ "jsonrpc": "2.0", "id": null, "error": { "code": code, "message": text } });
        return (StatusCode::BAD_REQUEST, axum::Json(err)).into_response();
    };
    let id = msg.get("id").cloned();
    let Some(method) = msg.get("method").and_then(Value::as_str) else {
        // A client's response to a server request (none are sent) or junk: accept quietly.
        return StatusCode::ACCEPTED.into_response();
    };
    let params = msg.get("params").cloned().unwrap_or(Value::Null);

    if method == "initialize" {
        return initialize(shared, id.unwrap_or(Value::Null), &params);
    }
    if let Err(e) = check_session(shared, headers) {
        return http_error(e);
    }
    let Some(id) = id else {
        // Notifications (notifications/initialized, cancelled, ...) are acknowledged.
        return StatusCode::ACCEPTED.into_response();
    };
    if method.starts_with("notifications/") {
        return StatusCode::ACCEPTED.into_response();
    }
    if shared.items
        && let Some(r) = crate::mem_items::answer(method, &params, shared.page_size)
    {
        return match r {
            Ok(r) => rpc_result(&id, &r),
            Err((code, m)) => rpc_error(&id, code, &m),
        };
    }
    match method {
        "ping" => rpc_result(&id, &json!({})),
        "tools/list" => tools::list(shared, &id, &params),
        "tools/call" => {
            count_call(shared, &params);
            tools::call(shared, headers, id, &params).await
        }
        other => rpc_error(&id, -32601, &format!("method not found: {other}")),
    }
}

/// Counts an executed `tools/call`, and its `arguments.call_id` if it has one.
fn count_call(shared: &Shared, params: &Value) {
    let call_id = params
        .get("arguments")
        .and_then(|a| a.get("call_id"))
        .and_then(Value::as_str);
    let mut inner = lock(&shared.inner);
    inner.stats.tool_calls += 1;
    if let Some(c) = call_id {
        if inner.call_ids.insert(c.to_owned()) {
            inner.stats.call_ids += 1;
        } else {
            inner.stats.duplicate_call_ids += 1;
        }
    }
}

fn initialize(shared: &Shared, id: Value, params: &Value) -> Response {
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    let version = asked
        .filter(|v| SUPPORTED_PROTOCOL_VERSIONS.contains(v))
        .unwrap_or(DEFAULT_PROTOCOL_VERSION);
    let session = random_hex(16);
    lock(&shared.inner).sessions.insert(session.clone());
    let mut caps = json!({ "tools": { "listChanged": true } });
    if shared.items {
        crate::mem_items::capabilities(&mut caps);
    }
    let result = json!({
        "protocolVersion": version,
        "capabilities": caps,
        "serverInfo": { "name": "test-upstream", "version": "1" },
        "instructions": "Test upstream.",
    });
    let mut resp = rpc_result(&id, &result);
    if let Ok(v) = HeaderValue::from_str(&session) {
        resp.headers_mut().insert("mcp-session-id", v);
    }
    resp
}

/// `200 application/json` with a JSON-RPC result; `id` echoed verbatim.
pub(crate) fn rpc_result(id: &Value, result: &Value) -> Response {
    json_response(&json!({ "jsonrpc": "2.0", "id": id, "result": result }))
}

/// `200 application/json` with a JSON-RPC error; `id` echoed verbatim.
pub(crate) fn rpc_error(id: &Value, code: i64, message: &str) -> Response {
    json_response(
        &json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } }),
    )
}

fn json_response(v: &Value) -> Response {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
