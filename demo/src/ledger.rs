//! The Enterprise Ledger: an MCP server (Streamable HTTP, JSON answers) that is an OAuth resource server for delegation tokens.

pub mod data;
mod tools;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use dashmap::{DashMap, DashSet};
use serde_json::{Value, json};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

pub use crate::auth::{JWKS_REFETCH_INTERVAL, LEEWAY_SECS};
pub use tools::{TOOL_SCOPES, required_scope};

use crate::auth::{self, AuthError, ChainSummary, Now, Verifier, bearer, random_hex};
use data::LedgerData;

/// Protocol versions accepted from `initialize`; anything else gets [`DEFAULT_PROTOCOL_VERSION`].
pub const SUPPORTED_PROTOCOL_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];
/// The version answered when the client asks for an unsupported one.
pub const DEFAULT_PROTOCOL_VERSION: &str = "2025-06-18";

/// How to start a [`Ledger`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerOptions {
    /// Where to listen; `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// Warden's STS JWKS, fetched over HTTP on first use and on unknown `kid` (at most once per 5 s).
    pub jwks_uri: String,
    /// Expected `iss` of delegation tokens.
    pub issuer: String,
    /// This resource server's audience, e.g. `https://enterprise-ledger.orchestrator.lab/`.
    pub audience: String,
    /// Expected `act.sub` of delegation tokens, e.g. `ai-identity-gateway`.
    pub gateway_client_id: String,
}

/// One authorized `tools/call` as the ledger received it. Holds a hash of the token, never the token.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedCall {
    /// The tool called.
    pub tool: String,
    /// Lower-case hex SHA-256 of the bearer token.
    pub token_sha256: String,
    /// The validated delegation token's claims.
    pub claims: Value,
    /// When the call arrived.
    pub at: SystemTime,
}

/// Server state shared by all requests.
#[derive(Debug)]
struct Shared {
    opts: LedgerOptions,
    verifier: Verifier,
    sessions: DashSet<String>,
    data: Mutex<LedgerData>,
    received: DashMap<u64, ReceivedCall>,
    seq: AtomicU64,
}

/// A running Enterprise Ledger on `http://ADDR/mcp`. Dropping it stops the server.
#[derive(Debug)]
pub struct Ledger {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        self.task.abort();
    }
}

impl Ledger {
    /// Binds `opts.listen` and serves in the background. Must be called inside a tokio runtime.
    pub fn start(opts: LedgerOptions) -> Result<Ledger, String> {
        Self::start_on(opts, Now::system())
    }

    /// Like [`Ledger::start`], judging token expiry by `now`.
    pub fn start_on(opts: LedgerOptions, now: Now) -> Result<Ledger, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| format!("Ledger::start needs a tokio runtime: {e}"))?;
        let std_listener = std::net::TcpListener::bind(opts.listen)
            .map_err(|e| format!("cannot bind {}: {e}", opts.listen))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| format!("cannot make the listener non-blocking: {e}"))?;
        let addr = std_listener
            .local_addr()
            .map_err(|e| format!("listener has no local address: {e}"))?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)
                .map_err(|e| format!("cannot register the listener: {e}"))?
        };
        let verifier = Verifier::new(
            "ledger",
            opts.jwks_uri.clone(),
            opts.issuer.clone(),
            opts.audience.clone(),
            now,
        )?;
        let shared = Arc::new(Shared {
            opts,
            verifier,
            sessions: DashSet::new(),
            data: Mutex::new(LedgerData::seed()),
            received: DashMap::new(),
            seq: AtomicU64::new(0),
        });
        let router = Router::new()
            .route("/mcp", any(mcp))
            .route(
                "/.well-known/oauth-protected-resource",
                get(resource_metadata),
            )
            .route(
                "/.well-known/oauth-protected-resource/mcp",
                get(resource_metadata),
            )
            .with_state(Arc::clone(&shared));
        let (shutdown, mut rx) = watch::channel(false);
        let task = runtime.spawn(async move {
            let signal = async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(signal)
                .await
            {
                tracing::warn!(error = %e, "ledger: server stopped");
            }
        });
        tracing::info!(%addr, audience = %shared.opts.audience, "ledger: Enterprise Ledger listening");
        Ok(Ledger {
            shared,
            addr,
            shutdown,
            task,
        })
    }

    /// `http://ADDR/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// The socket the ledger listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every authorized `tools/call` so far, in arrival order.
    pub fn received(&self) -> Vec<ReceivedCall> {
        let mut calls: Vec<(u64, ReceivedCall)> = self
            .shared
            .received
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        calls.sort_by_key(|(seq, _)| *seq);
        calls.into_iter().map(|(_, c)| c).collect()
    }
}

/// RFC 9728 Protected Resource Metadata (public, no token needed).
async fn resource_metadata(State(shared): State<Arc<Shared>>) -> Response {
    let scopes: Vec<&str> = TOOL_SCOPES.iter().map(|(_, s)| *s).collect();
    json_response(
        StatusCode::OK,
        &json!({
            "resource": shared.opts.audience,
            "authorization_servers": [shared.opts.issuer],
            "scopes_supported": scopes,
            "bearer_methods_supported": ["header"],
            "resource_name": "Enterprise Ledger",
        }),
    )
}

/// Every `/mcp` request: authenticate, then dispatch on the HTTP method.
async fn mcp(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = match bearer(&headers) {
        Ok(t) => t,
        Err(e) => return auth_error(&e),
    };
    let claims = match shared.verifier.verify(token).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(reason = ?e, "ledger: token refused");
            return auth_error(&e);
        }
    };
    match method {
        Method::POST => post(&shared, &headers, token, claims, &body).await,
        Method::DELETE => match check_session(&shared, &headers) {
            Ok(id) => {
                shared.sessions.remove(&id);
                StatusCode::OK.into_response()
            }
            Err(e) => e,
        },
        _ => {
            let mut resp = StatusCode::METHOD_NOT_ALLOWED.into_response();
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
            resp
        }
    }
}

async fn post(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    token: &str,
    claims: Value,
    body: &[u8],
) -> Response {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return http_rpc_error(StatusCode::BAD_REQUEST, -32700, "parse error"),
    };
    let Value::Object(msg) = parsed else {
        return http_rpc_error(
            StatusCode::BAD_REQUEST,
            -32600,
            "batches and non-object messages are not supported",
        );
    };
    let id = msg.get("id").cloned();
    let Some(method) = msg.get("method").and_then(Value::as_str) else {
        // A response to a server request (none are sent): accept quietly.
        return StatusCode::ACCEPTED.into_response();
    };
    let params = msg.get("params").cloned().unwrap_or(Value::Null);
    log_chain(&claims, method, &params);

    if method == "initialize" {
        return initialize(shared, &id.unwrap_or(Value::Null), &params);
    }
    if let Err(resp) = check_session(shared, headers) {
        return resp;
    }
    let Some(id) = id else {
        return StatusCode::ACCEPTED.into_response();
    };
    if method.starts_with("notifications/") {
        return StatusCode::ACCEPTED.into_response();
    }
    match method {
        "ping" => rpc_result(&id, &json!({})),
        "tools/list" => rpc_result(&id, &json!({ "tools": tools::catalogue() })),
        "tools/call" => call_tool(shared, &id, &params, token, claims).await,
        other => rpc_error(&id, -32601, &format!("method not found: {other}")),
    }
}

/// `tools/call`: delegation checks, per-tool scope, record, run.
async fn call_tool(
    shared: &Arc<Shared>,
    id: &Value,
    params: &Value,
    token: &str,
    claims: Value,
) -> Response {
    let act = match auth::check_delegation(&claims, &shared.opts.gateway_client_id) {
        Ok(chain) => chain,
        Err(e) => {
            tracing::info!(reason = ?e, "ledger: tools/call without a valid delegation chain");
            return auth_error(&e);
        }
    };
    let name = params.get("name").and_then(Value::as_str).unwrap_or("");
    let Some(scope) = tools::required_scope(name) else {
        return rpc_error(id, -32602, &format!("unknown tool: {name}"));
    };
    if !auth::scopes(&claims).iter().any(|s| s == scope) {
        tracing::info!(tool = name, required = scope, "ledger: insufficient scope");
        return insufficient_scope(name, scope);
    }
    let args = match params.get("arguments") {
        Some(v @ Value::Object(_)) => v.clone(),
        _ => json!({}),
    };
    let caller = tools::Caller {
        sub: claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        act,
    };
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
    shared.received.insert(
        seq,
        ReceivedCall {
            tool: name.to_owned(),
            token_sha256: auth::token_sha256(token),
            claims,
            at: SystemTime::now(),
        },
    );
    let result = {
        let mut data = shared.data.lock().await;
        tools::call(&mut data, name, &args, &caller)
    };
    match result {
        Some(r) => rpc_result(id, &r),
        None => rpc_error(id, -32602, &format!("unknown tool: {name}")),
    }
}

/// Logs the delegation chain (never the token): info for delegation tokens, debug for direct ones.
fn log_chain(claims: &Value, method: &str, params: &Value) {
    let chain = ChainSummary::of(claims);
    let tool = params.get("name").and_then(Value::as_str).unwrap_or("-");
    if chain.act.is_empty() {
        tracing::debug!(
            method,
            sub = chain.sub.as_str(),
            aud = chain.aud.as_str(),
            scope = chain.scope.as_str(),
            "ledger: direct token"
        );
    } else {
        tracing::info!(
            method,
            tool,
            sub = chain.sub.as_str(),
            act = chain.act.as_str(),
            aud = chain.aud.as_str(),
            scope = chain.scope.as_str(),
            jti = chain.jti.as_str(),
            ttl_secs = chain.ttl_secs,
            "ledger: delegation chain received"
        );
    }
}

fn initialize(shared: &Shared, id: &Value, params: &Value) -> Response {
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    let version = asked
        .filter(|v| SUPPORTED_PROTOCOL_VERSIONS.contains(v))
        .unwrap_or(DEFAULT_PROTOCOL_VERSION);
    let Some(session) = random_hex(16) else {
        return http_rpc_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            -32603,
            "cannot create a session id",
        );
    };
    shared.sessions.insert(session.clone());
    let result = json!({
        "protocolVersion": version,
        "capabilities": { "tools": { "listChanged": false } },
        "serverInfo": { "name": "enterprise-ledger", "title": "Enterprise Ledger", "version": env!("CARGO_PKG_VERSION") },
        "instructions": "Enterprise Ledger: accounts, transactions, customer PII and the audit log. \
                         Every tool needs a delegation token carrying that tool's ledger:* scope.",
    });
    let mut resp = rpc_result(id, &result);
    if let Ok(v) = HeaderValue::from_str(&session) {
        resp.headers_mut().insert("mcp-session-id", v);
    }
    resp
}

/// The request's known session id, or the 400 (missing) / 404 (unknown) answer.
#[expect(
    clippy::result_large_err,
    reason = "the error is a ready HTTP response, built once per refused request"
)]
fn check_session(shared: &Shared, headers: &HeaderMap) -> Result<String, Response> {
    let Some(id) = headers.get("mcp-session-id").and_then(|v| v.to_str().ok()) else {
        return Err(http_rpc_error(
            StatusCode::BAD_REQUEST,
            -32600,
            "missing Mcp-Session-Id",
        ));
    };
    if shared.sessions.contains(id) {
        Ok(id.to_owned())
    } else {
        Err(http_rpc_error(
            StatusCode::NOT_FOUND,
            -32600,
            "unknown Mcp-Session-Id",
        ))
    }
}

/// `401 invalid_token` (or `503` when the keys are unreachable).
fn auth_error(e: &AuthError) -> Response {
    match e {
        AuthError::Invalid(desc) => {
            let mut resp = json_response(
                StatusCode::UNAUTHORIZED,
                &json!({ "error": "invalid_token", "error_description": desc }),
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            resp
        }
        AuthError::Unavailable(desc) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "error": "temporarily_unavailable", "error_description": desc }),
        ),
    }
}

/// `403 insufficient_scope` naming the scope the tool needs.
fn insufficient_scope(tool: &str, scope: &str) -> Response {
    let mut resp = json_response(
        StatusCode::FORBIDDEN,
        &json!({
            "error": "insufficient_scope",
            "error_description": format!("tool {tool} requires scope {scope}"),
            "scope": scope,
        }),
    );
    let challenge = format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"");
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

fn rpc_result(id: &Value, result: &Value) -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "jsonrpc": "2.0", "id": id, "result": result }),
    )
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } }),
    )
}

fn http_rpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    json_response(
        status,
        &json!({ "jsonrpc": "2.0", "id": null, "error": { "code": code, "message": message } }),
    )
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
