//! Optional OpenTelemetry export (off by default): one SERVER span per upstream-bound
//! request, sent as OTLP/HTTP JSON to a collector. Spans come from the audit records, so
//! what is traced is exactly what was recorded; the span id is the one the upstream
//! received as its parent in `traceparent`.
//!
//! Why not the opentelemetry crates: the request path runs on monoio shards that keep no
//! tracing context across tasks; the records already hold everything a span needs, and
//! OTLP's JSON encoding is a small, stable wire format. Export never blocks a shard: the
//! audit writer hands records over a bounded channel and drops (and counts) on overflow.

use std::time::Duration;

use dataplane::audit::{Outcome, Record};
use serde::Deserialize;
use serde_json::{Value, json};

/// The `telemetry:` block.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/HTTP traces endpoint, e.g. `http://collector:4318/v1/traces`. Absent = off.
    #[serde(default)]
    pub otlp_endpoint: Option<url::Url>,
    /// `service.name` of the exported resource.
    #[serde(default = "default_service")]
    pub service_name: String,
}

fn default_service() -> String {
    "warden".into()
}

const BATCH: usize = 512;

fn attr(k: &str, v: &str) -> Value {
    json!({"key": k, "value": {"stringValue": v}})
}

/// The OTLP JSON span of one record.
pub fn span(r: &Record) -> Option<Value> {
    let trace = r.trace_id.as_deref()?;
    let span_id = r.span_id.as_deref()?;
    let start = (r.time_ms as u128) * 1_000_000;
    let end = start + (r.latency_ms * 1_000_000.0) as u128;
    let name = match &r.tool {
        Some(t) => format!("{} {t}", r.method),
        None => r.method.clone(),
    };
    let mut attrs = vec![
        attr("mcp.method", &r.method),
        attr("warden.decision", r.decision.label()),
        attr("warden.request_id", &r.request_id),
    ];
    if let Some(t) = &r.tool {
        attrs.push(attr("mcp.tool", t));
    }
    if let Some(u) = &r.upstream {
        attrs.push(attr("warden.upstream", u));
    }
    if let Some(c) = &r.client_id {
        attrs.push(attr("warden.client_id", c));
    }
    if let Some(s) = r.upstream_status {
        attrs.push(
            json!({"key": "http.response.status_code", "value": {"intValue": s.to_string()}}),
        );
    }
    let mut s = json!({
        "traceId": trace,
        "spanId": span_id,
        "name": name,
        "kind": 2,
        "startTimeUnixNano": start.to_string(),
        "endTimeUnixNano": end.to_string(),
        "attributes": attrs,
        "status": if r.decision == Outcome::Allow { json!({"code": 1}) } else { json!({"code": 2, "message": r.reason.clone().unwrap_or_default()}) },
    });
    if let Some(p) = &r.parent_span_id {
        s["parentSpanId"] = Value::String(p.clone());
    }
    Some(s)
}

/// Start the exporter on the current tokio runtime; returns the sender the audit writer feeds.
pub fn start(
    cfg: &TelemetryConfig,
    http: reqwest::Client,
) -> Option<tokio::sync::mpsc::Sender<Record>> {
    let endpoint = cfg.otlp_endpoint.clone()?;
    let service = cfg.service_name.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Record>(8192);
    tokio::spawn(async move {
        let mut batch: Vec<Value> = Vec::with_capacity(BATCH);
        loop {
            let got = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
            match got {
                Ok(Some(r)) => {
                    if let Some(s) = span(&r) {
                        batch.push(s);
                    }
                    if batch.len() < BATCH {
                        continue;
                    }
                }
                Ok(None) => return,
                Err(_) => {}
            }
            if batch.is_empty() {
                continue;
            }
            let n = batch.len() as u64;
            let body = json!({"resourceSpans": [{
                "resource": {"attributes": [attr("service.name", &service)]},
                "scopeSpans": [{"scope": {"name": "warden", "version": env!("CARGO_PKG_VERSION")}, "spans": std::mem::take(&mut batch)}],
            }]});
            match http
                .post(endpoint.as_str())
                .timeout(Duration::from_secs(5))
                .json(&body)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => {
                    metrics::counter!("warden_otlp_spans_exported_total").increment(n)
                }
                Ok(r) => {
                    metrics::counter!("warden_otlp_export_failures_total").increment(1);
                    tracing::warn!(status = %r.status(), "OTLP collector refused spans");
                }
                Err(e) => {
                    metrics::counter!("warden_otlp_export_failures_total").increment(1);
                    tracing::warn!(error = %e, "OTLP export failed");
                }
            }
        }
    });
    Some(tx)
}
