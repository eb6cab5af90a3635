//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/live`, `POST /admin/reload`,
//! `GET /admin/config`. Never on the request path; bind it where only operators reach it.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use dataplane::clock::Clock;
use dataplane::shard::Shared;
use std::sync::Arc;

use crate::live::Live;
use crate::reload::{StatusCell, Trigger};
use crate::sts::Sts;

/// What the admin endpoints read and the reload trigger they send on.
#[derive(Clone)]
pub struct AdminState {
    pub shared: Shared,
    pub shards: usize,
    pub sts: Option<Arc<Sts>>,
    pub live: Arc<Live>,
    pub reload: tokio::sync::mpsc::Sender<Trigger>,
    pub status: StatusCell,
    /// The live page's "now" (the process's clock).
    pub clock: Clock,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

/// `POST /admin/reload`: reload now and answer with the outcome (200 with the generation,
/// 409 with the reason when the running configuration stays).
async fn admin_reload(State(s): State<AdminState>) -> impl IntoResponse {
    match crate::gateway::request_reload(&s.reload).await {
        Ok(generation) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"reloaded": true, "generation": generation})),
        ),
        Err(e) => (
            // The running configuration stays (409); a stopping gateway reloads nothing (503).
            match e {
                crate::reload::ReloadError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::CONFLICT,
            },
            axum::Json(serde_json::json!({"reloaded": false, "error": e.to_string()})),
        ),
    }
}

/// `GET /admin/config`: generation, load time, last error, watched files.
async fn admin_config(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json((**s.status.load()).clone()),
    )
}

async fn live_state(State(s): State<AdminState>) -> impl IntoResponse {
    let now = s.clock.unix_ms();
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(s.live.state(now)),
    )
}

/// The embedded STS's public keys, for upstreams that verify delegation tokens
/// (also served by the embedded authorization server at `/jwks`).
async fn sts_jwks(State(s): State<AdminState>) -> impl IntoResponse {
    match &s.sts {
        Some(sts) => (StatusCode::OK, axum::Json(sts.jwks())),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": "no embedded STS"})),
        ),
    }
}

/// Serve the admin endpoints until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, state: AdminState) {
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/sts/jwks.json", get(sts_jwks))
        .route(
            "/live",
            get(|| async { axum::response::Html(crate::live::PAGE) }),
        )
        .route("/live/state.json", get(live_state))
        .route("/admin/reload", axum::routing::post(admin_reload))
        .route("/admin/config", get(admin_config))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "Admin listener failed");
    }
}

/// 200 only once every issuer's keys are loaded (and fresh) and every shard runs.
async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    let snap = s.shared.snapshot.load();
    let keys_ok = snap.issuers.iter().all(|i| i.usable)
        && (!snap.issuers.is_empty() || !snap.settings.auth_enabled);
    let shards_ok = s.shared.running.load(Ordering::SeqCst) >= s.shards
        && !s.shared.stopping.load(Ordering::SeqCst);
    let body = serde_json::json!({
        "ready": keys_ok && shards_ok,
        "issuers_ready": keys_ok,
        "shards_running": s.shared.running.load(Ordering::SeqCst),
        "shards_expected": s.shards,
        "generation": snap.generation,
        "tools": snap.tools.order.len(),
    });
    let status = if keys_ok && shards_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
}
