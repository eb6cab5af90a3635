//! The console's HTTP side: the page (one static file, no data in it), the vendored uPlot
//! assets, and the JSON it polls — each data endpoint behind the access rule.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Filter;
use crate::admin::AdminState;

/// The page: static HTML and script; every datum comes from the JSON endpoints.
pub const PAGE: &str = include_str!("page.html");
/// uPlot 1.6.32 (MIT, Leon Sorokin), vendored from npm: `controlplane/assets/uplot/`.
const UPLOT_JS: &str = include_str!("../../assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../assets/uplot/uPlot.min.css");

pub async fn uplot_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        UPLOT_JS,
    )
}

pub async fn uplot_css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        UPLOT_CSS,
    )
}

#[derive(Debug, serde::Deserialize)]
pub struct Since {
    /// Chart points after this unix second only (0: the whole window).
    #[serde(default)]
    since: i64,
}

fn json(v: serde_json::Value) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(v)).into_response()
}

/// `GET /console/state.json?since=N`: topology, chart points after N, tools, latest decisions.
pub async fn state(
    State(s): State<AdminState>,
    headers: axum::http::HeaderMap,
    Query(q): Query<Since>,
) -> Response {
    if let Some(r) = s.guard(&headers) {
        return r;
    }
    json(s.console.state(s.clock.unix_ms(), q.since, &s.health()))
}

/// `GET /console/decisions.json?user=&client=&tool=&upstream=&decision=&since_ms=&until_ms=&limit=`.
pub async fn decisions(
    State(s): State<AdminState>,
    headers: axum::http::HeaderMap,
    Query(f): Query<Filter>,
) -> Response {
    if let Some(r) = s.guard(&headers) {
        return r;
    }
    json(serde_json::json!({ "decisions": s.console.decisions(&f) }))
}

/// `GET /console/decision/{seq}`: the record, its chain link, and a re-check of its line on
/// disk (file sink) on a blocking thread.
pub async fn decision(
    State(s): State<AdminState>,
    headers: axum::http::HeaderMap,
    Path(seq): Path<u64>,
) -> Response {
    if let Some(r) = s.guard(&headers) {
        return r;
    }
    let Some((rec, link, linked)) = s.console.decision(seq) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": format!("record {seq} is not among the console's latest {}", super::RECENT)})),
        )
            .into_response();
    };
    let l = link.clone();
    let on_disk = tokio::task::spawn_blocking(move || crate::audit::check_link(&l))
        .await
        .unwrap_or_else(|e| Err(format!("check failed: {e}")));
    let (file, offset) = match &link.at {
        Some((p, o, _)) => (Some(p.display().to_string()), Some(*o)),
        None => (None, None),
    };
    json(serde_json::json!({
        "record": rec,
        "chain": {
            "seq": link.seq,
            "prev": link.prev,
            "hash": link.hash,
            "file": file,
            "offset": offset,
            "on_disk_ok": on_disk.is_ok(),
            "on_disk_problem": on_disk.err(),
            "linked_to_previous": linked,
        },
    }))
}
