//! The admin listener: `/healthz`, `/readyz`, `/metrics`, the console (`/console`, also at
//! `/live`), `POST /admin/reload`, `GET /admin/config`. Never on the request path; bind it
//! where only operators reach it (off loopback, the console's data requires authentication).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use dataplane::clock::Clock;
use dataplane::shard::Shared;
use std::sync::Arc;

use crate::console::Console;
use crate::console::access::{Access, Denied};
use crate::reload::{StatusCell, Trigger};
use crate::sts::Sts;

/// What the admin endpoints read and the reload trigger they send on.
#[derive(Clone)]
pub struct AdminState {
    pub shared: Shared,
    pub shards: usize,
    pub sts: Option<Arc<Sts>>,
    pub console: Arc<Console>,
    /// Who may read the console's data.
    pub access: Access,
    /// The token service delegation goes through, as the topology names it.
    pub token_service: Option<String>,
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
    let page = || async {
        (
            [(header::CACHE_CONTROL, "no-store")],
            axum::response::Html(crate::console::page::PAGE),
        )
    };
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/sts/jwks.json", get(sts_jwks))
        .route("/live", get(page))
        .route("/console", get(page))
        .route("/console/uplot.js", get(crate::console::page::uplot_js))
        .route("/console/uplot.css", get(crate::console::page::uplot_css))
        .route("/console/state.json", get(crate::console::page::state))
        .route("/live/state.json", get(crate::console::page::state))
        .route(
            "/console/decisions.json",
            get(crate::console::page::decisions),
        )
        .route(
            "/console/decision/{seq}",
            get(crate::console::page::decision),
        )
        .route("/admin/reload", axum::routing::post(admin_reload))
        .route("/admin/config", get(admin_config))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "Admin listener failed");
    }
}

impl AdminState {
    /// The refusal (401/403, JSON) of a console request without the required credential.
    pub(crate) fn guard(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Option<axum::response::Response> {
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let snap = self.shared.snapshot.load();
        match self.access.check(
            auth,
            &snap.issuers,
            snap.settings.max_token_bytes,
            self.clock.unix_secs(),
        ) {
            Ok(()) => None,
            Err(d) => {
                metrics::counter!("warden_console_auth_failures_total").increment(1);
                let status = match d {
                    Denied::Scope => StatusCode::FORBIDDEN,
                    Denied::Missing | Denied::Invalid => StatusCode::UNAUTHORIZED,
                };
                Some(
                    (
                        status,
                        [(header::WWW_AUTHENTICATE, "Bearer realm=\"warden-console\"")],
                        axum::Json(serde_json::json!({"error": d.to_string()})),
                    )
                        .into_response(),
                )
            }
        }
    }

    /// The dependencies' health, for the topology.
    pub(crate) fn health(&self) -> crate::console::Health {
        let snap = self.shared.snapshot.load();
        crate::console::Health {
            issuers: snap
                .issuers
                .iter()
                .map(|i| (i.policy.issuer.clone(), i.usable))
                .collect(),
            token_service: self.token_service.clone(),
            audit_ok: self.shared.audit.is_healthy(),
            audit_queue: self.shared.audit.depth(),
            shards_ok: self.shared.running.load(Ordering::SeqCst) >= self.shards
                && !self.shared.stopping.load(Ordering::SeqCst),
            generation: snap.generation,
        }
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
