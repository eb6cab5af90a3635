//! The admin listener: `/healthz`, `/readyz`, `/metrics`. Never on the request path.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use dataplane::shard::Shared;

#[derive(Clone)]
struct AdminState {
    shared: Shared,
    shards: usize,
}

/// Serve the admin endpoints until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, shared: Shared, shards: usize) {
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState { shared, shards });
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
