//! The Prometheus recorder: installed once per process, rendered only by the admin port.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Help text for every series (Prometheus `# HELP`), one table so nothing is missed.
const HELP: &[(&str, &str, &str)] = &[
    (
        "counter",
        "warden_http_requests_total",
        "HTTP requests served by the MCP listener, by method and status.",
    ),
    (
        "counter",
        "warden_tool_calls_total",
        "Upstream-bound requests by upstream, tool and decision (one per audit record).",
    ),
    (
        "counter",
        "warden_auth_failures_total",
        "Requests refused by bearer authentication, by reason.",
    ),
    (
        "counter",
        "warden_refusals_total",
        "Requests refused anywhere on the request path, by reason and by who caused it (agent, identity_provider, token_service, upstream, operator, gateway).",
    ),
    (
        "counter",
        "warden_token_cache_lookups_total",
        "Verified-token cache lookups on the shards, by result (hit or miss).",
    ),
    (
        "counter",
        "warden_jwks_fetches_total",
        "JWKS fetches, by issuer.",
    ),
    (
        "counter",
        "warden_jwks_fetch_failures_total",
        "JWKS fetches that failed or returned unusable keys, by issuer.",
    ),
    (
        "counter",
        "warden_jwks_refetch_limited_total",
        "Unknown-kid refetches refused by the rate limit.",
    ),
    (
        "gauge",
        "warden_jwks_keys",
        "Usable keys in the last good JWKS, by issuer.",
    ),
    (
        "counter",
        "warden_delegation_tokens_total",
        "Delegation tokens attached to calls, by source (cache or fresh).",
    ),
    (
        "counter",
        "warden_delegation_mints_total",
        "Tokens minted by the embedded STS.",
    ),
    (
        "counter",
        "warden_delegation_exchanges_total",
        "RFC 8693 exchanges at the external authorization server, by HTTP status.",
    ),
    (
        "counter",
        "warden_delegation_failures_total",
        "Calls failed because no delegation token could be obtained, by upstream.",
    ),
    (
        "histogram",
        "warden_delegation_mint_duration_seconds",
        "Time to mint one token with the embedded STS.",
    ),
    (
        "histogram",
        "warden_delegation_exchange_duration_seconds",
        "Time of one external token exchange.",
    ),
    (
        "histogram",
        "warden_upstream_request_duration_seconds",
        "Upstream request time, by upstream.",
    ),
    (
        "counter",
        "warden_upstream_errors_total",
        "Upstream failures, by upstream and kind.",
    ),
    (
        "counter",
        "warden_upstream_stale_connections_total",
        "Idle pooled upstream connections found closed before reuse (dropped, not used).",
    ),
    (
        "counter",
        "warden_sessions_created_total",
        "MCP sessions created.",
    ),
    (
        "gauge",
        "warden_sessions_active",
        "MCP sessions currently open.",
    ),
    (
        "gauge",
        "warden_connections_open",
        "Open client connections, by shard.",
    ),
    (
        "counter",
        "warden_connections_refused_total",
        "Connections refused over the per-shard limit.",
    ),
    (
        "gauge",
        "warden_snapshot_generation",
        "Generation of the snapshot the shards serve.",
    ),
    (
        "gauge",
        "warden_audit_queue_depth",
        "Audit records waiting to be written.",
    ),
    (
        "counter",
        "warden_audit_records_written_total",
        "Audit records written to the sink.",
    ),
    (
        "counter",
        "warden_audit_refusals_total",
        "Calls refused because no audit record could be guaranteed.",
    ),
    (
        "counter",
        "warden_audit_sink_failures_total",
        "Failed attempts to write an audit batch.",
    ),
    (
        "counter",
        "warden_otlp_spans_exported_total",
        "Spans accepted by the OTLP collector.",
    ),
    (
        "counter",
        "warden_otlp_export_failures_total",
        "OTLP export attempts that failed.",
    ),
    (
        "counter",
        "warden_otlp_spans_dropped_total",
        "Spans dropped because the exporter's queue was full.",
    ),
    (
        "counter",
        "warden_audit_records_dropped_total",
        "Audit records lost after being accepted (a push that found the queue full despite its slot; not expected). A request whose record finds no room is answered as audit unavailable instead (warden_audit_refusals_total).",
    ),
    (
        "gauge",
        "warden_policy_generation",
        "Generation of the compiled policy set.",
    ),
    (
        "counter",
        "warden_policy_reload_failures_total",
        "Policy reloads refused (the previous policy stays).",
    ),
    (
        "counter",
        "warden_policy_changed_tools_total",
        "Tools whose applicable policies changed, summed over policy recompilations (each is logged by name).",
    ),
    (
        "counter",
        "warden_policy_shadow_disagreements_total",
        "Calls on which the shadow policy (policy.shadow) decided otherwise than the live one, by both decisions; never enforced.",
    ),
    (
        "counter",
        "warden_config_reload_total",
        "Configuration reloads by result; anything but ok kept the running configuration.",
    ),
    (
        "counter",
        "warden_overload_rejected_total",
        "Requests answered 503 because the shard was at its in-flight cap.",
    ),
    (
        "counter",
        "warden_ratelimit_limited_total",
        "Requests answered 429 by a per-user or per-tool rate limit, by scope.",
    ),
    (
        "gauge",
        "warden_ratelimit_buckets",
        "Rate-limit buckets held (updated once a second).",
    ),
    (
        "counter",
        "warden_ratelimit_overflow_total",
        "Rate-limit checks of users who found the bucket map full (they share one bucket per scope).",
    ),
    (
        "counter",
        "warden_console_auth_failures_total",
        "Console requests refused for want of the admin credential (401/403).",
    ),
    (
        "counter",
        "warden_sessions_ended_total",
        "MCP sessions ended by DELETE on this replica.",
    ),
    (
        "counter",
        "warden_session_revocations_failed_total",
        "Failed writes or reads of the shared set of ended sessions (retried on reads).",
    ),
];

fn describe() {
    for (kind, name, help) in HELP {
        match *kind {
            "counter" => metrics::describe_counter!(*name, *help),
            "gauge" => metrics::describe_gauge!(*name, *help),
            _ => metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help),
        }
    }
}

/// Install the recorder (idempotent; several gateways in one test process share it).
pub fn install() {
    HANDLE.get_or_init(|| {
        let buckets = [
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 5.0, 10.0,
        ];
        let b = PrometheusBuilder::new().set_buckets(&buckets).ok()?;
        let h = b
            .install_recorder()
            .map_err(|e| tracing::error!(error = %e, "Metrics recorder not installed"))
            .ok();
        describe();
        h
    });
}

/// Render the exposition text; also runs upkeep (histogram draining).
pub fn render() -> String {
    match HANDLE.get().and_then(Option::as_ref) {
        Some(h) => {
            h.run_upkeep();
            h.render()
        }
        None => String::new(),
    }
}
