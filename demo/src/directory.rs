//! The Employee Directory: a REST API under `/api/v1` with a committed OpenAPI 3 spec, an OAuth resource server for delegation tokens.

pub mod data;
mod respond;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use dashmap::DashMap;
use serde_json::{Value, json};
use tokio::sync::{RwLock, watch};
use tokio::task::JoinHandle;

pub use crate::auth::{JWKS_REFETCH_INTERVAL, LEEWAY_SECS};

use crate::auth::{self, ChainSummary, Now, Verifier, bearer};
use data::{DirectoryData, EmployeeUpdate, Filter, NewEmployee, Status};
use respond::{
    auth_error, bad_request, data_error, error, insufficient_scope, json_response, json_value,
    parse_body, path_id,
};

/// The OpenAPI 3.0.3 description of the API, as committed in `demo/openapi/employee-directory.yaml`.
pub const OPENAPI_YAML: &str = include_str!("../openapi/employee-directory.yaml");
/// The demo's audience for the directory.
pub const DEFAULT_AUDIENCE: &str = "https://employee-directory.orchestrator.lab/";
/// Where the API lives under [`Directory::url`].
pub const API_PREFIX: &str = "/api/v1";
/// Every protected operation (`operationId`) and the one scope it needs.
pub const OPERATION_SCOPES: [(&str, &str); 7] = [
    ("listEmployees", "employee:List"),
    ("createEmployee", "employee:Create"),
    ("getEmployee", "employee:Get"),
    ("updateEmployee", "employee:Update"),
    ("deactivateEmployee", "employee:Deactivate"),
    ("listDirectReports", "employee:List"),
    ("listDepartments", "department:List"),
];

/// The scope `operation` needs, if it is a protected operation.
pub fn required_scope(operation: &str) -> Option<&'static str> {
    OPERATION_SCOPES
        .iter()
        .find(|(op, _)| *op == operation)
        .map(|(_, scope)| *scope)
}

/// How to start a [`Directory`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryOptions {
    /// Where to listen; `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// Warden's STS JWKS, fetched over HTTP on first use and on unknown `kid` (at most once per 5 s).
    pub jwks_uri: String,
    /// Expected `iss` of delegation tokens.
    pub issuer: String,
    /// This resource server's audience, e.g. [`DEFAULT_AUDIENCE`].
    pub audience: String,
    /// Expected `act.sub` of delegation tokens, e.g. `ai-identity-gateway`.
    pub gateway_client_id: String,
}

/// One authorized API call as the directory received it. Holds a hash of the token, never the token.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedCall {
    /// The `operationId` called, e.g. `listEmployees`.
    pub operation: String,
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
    opts: DirectoryOptions,
    verifier: Verifier,
    data: RwLock<DirectoryData>,
    received: DashMap<u64, ReceivedCall>,
    seq: AtomicU64,
}

type St = State<Arc<Shared>>;

/// A running Employee Directory on `http://ADDR/api/v1`. Dropping it stops the server.
#[derive(Debug)]
pub struct Directory {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for Directory {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        self.task.abort();
    }
}

impl Directory {
    /// Binds `opts.listen` and serves in the background. Must be called inside a tokio runtime.
    pub fn start(opts: DirectoryOptions) -> Result<Directory, String> {
        Self::start_on(opts, Now::system())
    }

    /// Like [`Directory::start`], judging token expiry by `now`.
    pub fn start_on(opts: DirectoryOptions, now: Now) -> Result<Directory, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| format!("Directory::start needs a tokio runtime: {e}"))?;
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
            "directory",
            opts.jwks_uri.clone(),
            opts.issuer.clone(),
            opts.audience.clone(),
            now,
        )?;
        let shared = Arc::new(Shared {
            opts,
            verifier,
            data: RwLock::new(DirectoryData::seed()),
            received: DashMap::new(),
            seq: AtomicU64::new(0),
        });
        let api = Router::new()
            .route("/employees", get(list_employees).post(create_employee))
            .route(
                "/employees/{id}",
                get(get_employee)
                    .put(update_employee)
                    .delete(deactivate_employee),
            )
            .route("/employees/{id}/reports", get(list_direct_reports))
            .route("/departments", get(list_departments))
            .route("/health", get(health))
            .route("/openapi.yaml", get(openapi));
        let router = Router::new()
            .nest(API_PREFIX, api)
            .route(
                "/.well-known/oauth-protected-resource",
                get(resource_metadata),
            )
            .fallback(not_found_route)
            .method_not_allowed_fallback(method_not_allowed)
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
                tracing::warn!(error = %e, "directory: server stopped");
            }
        });
        tracing::info!(%addr, audience = %shared.opts.audience, "directory: Employee Directory listening");
        Ok(Directory {
            shared,
            addr,
            shutdown,
            task,
        })
    }

    /// The base URL `http://ADDR`; the API lives under [`API_PREFIX`].
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket the directory listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every authorized API call so far, in arrival order.
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

/// Authenticates a call to `operation`: token, delegation chain, scope; records it on success.
async fn authorize(shared: &Shared, headers: &HeaderMap, operation: &str) -> Result<(), Response> {
    let token = bearer(headers).map_err(|e| auth_error(&e))?;
    let claims = match shared.verifier.verify(token).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(operation, reason = ?e, "directory: token refused");
            return Err(auth_error(&e));
        }
    };
    log_chain(&claims, operation);
    if let Err(e) = auth::check_delegation(&claims, &shared.opts.gateway_client_id) {
        tracing::info!(operation, reason = ?e, "directory: call without a valid delegation chain");
        return Err(auth_error(&e));
    }
    let Some(scope) = required_scope(operation) else {
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &format!("operation {operation} has no scope"),
        ));
    };
    if !auth::scopes(&claims).iter().any(|s| s == scope) {
        tracing::info!(operation, required = scope, "directory: insufficient scope");
        return Err(insufficient_scope(operation, scope));
    }
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
    shared.received.insert(
        seq,
        ReceivedCall {
            operation: operation.to_owned(),
            token_sha256: auth::token_sha256(token),
            claims,
            at: SystemTime::now(),
        },
    );
    Ok(())
}

/// Logs the delegation chain (never the token): info for delegation tokens, debug for direct ones.
fn log_chain(claims: &Value, operation: &str) {
    let chain = ChainSummary::of(claims);
    if chain.act.is_empty() {
        tracing::debug!(
            operation,
            sub = chain.sub.as_str(),
            aud = chain.aud.as_str(),
            scope = chain.scope.as_str(),
            "directory: direct token"
        );
    } else {
        tracing::info!(
            operation,
            sub = chain.sub.as_str(),
            act = chain.act.as_str(),
            aud = chain.aud.as_str(),
            scope = chain.scope.as_str(),
            jti = chain.jti.as_str(),
            ttl_secs = chain.ttl_secs,
            "directory: delegation chain received"
        );
    }
}

/// `GET /employees` (`listEmployees`).
async fn list_employees(
    State(shared): St,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    if let Err(resp) = authorize(&shared, &headers, "listEmployees").await {
        return resp;
    }
    let Query(query) = match query {
        Ok(q) => q,
        Err(e) => return bad_request(&format!("invalid query string: {e}")),
    };
    let filter = match filter(&query) {
        Ok(f) => f,
        Err(msg) => return bad_request(&msg),
    };
    let page = shared.data.read().await.list(&filter);
    json_value(StatusCode::OK, &page)
}

/// Validates `listEmployees`' query parameters.
fn filter(query: &HashMap<String, String>) -> Result<Filter, String> {
    let non_empty = |name: &str| {
        query
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let status = match non_empty("status") {
        None => None,
        Some(s) => {
            Some(Status::parse(&s).ok_or_else(|| "status must be active or inactive".to_owned())?)
        }
    };
    let limit = match non_empty("limit") {
        None => data::DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=data::MAX_LIMIT).contains(l))
            .ok_or_else(|| format!("limit must be an integer between 1 and {}", data::MAX_LIMIT))?,
    };
    let offset = match non_empty("offset") {
        None => 0,
        Some(o) => o
            .parse::<usize>()
            .map_err(|_| "offset must be a non-negative integer".to_owned())?,
    };
    Ok(Filter {
        department: non_empty("department"),
        status,
        q: non_empty("q"),
        limit,
        offset,
    })
}

/// `POST /employees` (`createEmployee`).
async fn create_employee(
    State(shared): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(resp) = authorize(&shared, &headers, "createEmployee").await {
        return resp;
    }
    let new: NewEmployee = match parse_body(body) {
        Ok(n) => n,
        Err(resp) => return resp,
    };
    let created = shared.data.write().await.create(new);
    match created {
        Ok(e) => {
            let mut resp = json_value(StatusCode::CREATED, &e);
            if let Ok(v) = HeaderValue::from_str(&format!("{API_PREFIX}/employees/{}", e.id)) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Err(e) => data_error(&e),
    }
}

/// `GET /employees/{id}` (`getEmployee`).
async fn get_employee(
    State(shared): St,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    if let Err(resp) = authorize(&shared, &headers, "getEmployee").await {
        return resp;
    }
    let id = match path_id(id) {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let found = shared.data.read().await.get(&id);
    match found {
        Ok(e) => json_value(StatusCode::OK, &e),
        Err(e) => data_error(&e),
    }
}

/// `PUT /employees/{id}` (`updateEmployee`).
async fn update_employee(
    State(shared): St,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(resp) = authorize(&shared, &headers, "updateEmployee").await {
        return resp;
    }
    let id = match path_id(id) {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let update: EmployeeUpdate = match parse_body(body) {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    let updated = shared.data.write().await.update(&id, update);
    match updated {
        Ok(e) => json_value(StatusCode::OK, &e),
        Err(e) => data_error(&e),
    }
}

/// `DELETE /employees/{id}` (`deactivateEmployee`): soft delete.
async fn deactivate_employee(
    State(shared): St,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    if let Err(resp) = authorize(&shared, &headers, "deactivateEmployee").await {
        return resp;
    }
    let id = match path_id(id) {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let done = shared.data.write().await.deactivate(&id);
    match done {
        Ok(e) => json_value(StatusCode::OK, &e),
        Err(e) => data_error(&e),
    }
}

/// `GET /employees/{id}/reports` (`listDirectReports`).
async fn list_direct_reports(
    State(shared): St,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    if let Err(resp) = authorize(&shared, &headers, "listDirectReports").await {
        return resp;
    }
    let id = match path_id(id) {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let reports = shared.data.read().await.reports(&id);
    match reports {
        Ok(items) => json_response(
            StatusCode::OK,
            &json!({ "managerId": id, "total": items.len(), "items": items }),
        ),
        Err(e) => data_error(&e),
    }
}

/// `GET /departments` (`listDepartments`).
async fn list_departments(State(shared): St, headers: HeaderMap) -> Response {
    if let Err(resp) = authorize(&shared, &headers, "listDepartments").await {
        return resp;
    }
    let items = shared.data.read().await.departments();
    json_response(
        StatusCode::OK,
        &json!({ "total": items.len(), "items": items }),
    )
}

/// `GET /health` (`health`, no token).
async fn health() -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "status": "ok", "service": "employee-directory" }),
    )
}

/// `GET /openapi.yaml` (no token).
async fn openapi() -> Response {
    let mut resp = Response::new(Body::from(OPENAPI_YAML));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    );
    resp
}

/// RFC 9728 Protected Resource Metadata (public, no token needed).
async fn resource_metadata(State(shared): St) -> Response {
    let mut scopes: Vec<&str> = Vec::new();
    for (_, scope) in OPERATION_SCOPES {
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    json_response(
        StatusCode::OK,
        &json!({
            "resource": shared.opts.audience,
            "authorization_servers": [shared.opts.issuer],
            "scopes_supported": scopes,
            "bearer_methods_supported": ["header"],
            "resource_name": "Employee Directory",
        }),
    )
}

async fn not_found_route() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}
