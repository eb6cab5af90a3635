//! The audit bracket around every upstream-bound request: a slot is reserved before
//! anything happens (or the call is refused), and exactly one record is committed.

use std::rc::Rc;

use crate::audit::{self, DelegationRecord, Outcome, Record, Reservation};
use crate::auth::jwt::Claims;
use crate::shard::Shard;

use super::forward::Report;

/// Per-request identifiers, made when the request arrives.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub request_id: String,
    pub trace_id: Option<String>,
    /// The gateway's span for this request: the parent of the upstream's.
    pub span_id: String,
    /// The caller's span, from its `traceparent`.
    pub parent_span_id: Option<String>,
    /// Short hash of the `Mcp-Session-Id`, never the id itself.
    pub session: Option<String>,
}

impl Meta {
    /// The extras of an upstream call: its credential and a `traceparent` continuing the
    /// caller's trace (or starting one), with a fresh span id.
    pub fn outbound(
        &self,
        auth: Option<crate::secret::Secret<String>>,
    ) -> super::forward::Outbound {
        super::forward::Outbound {
            auth,
            traceparent: Some(format!(
                "00-{}-{}-01",
                self.trace_id
                    .as_deref()
                    .unwrap_or("00000000000000000000000000000001"),
                self.span_id
            )),
        }
    }
}

/// Methods whose requests reach an upstream: each gets an audit record.
pub(crate) fn is_audited(method: &str) -> bool {
    method == "tools/call" || super::forward::is_passthrough_method(method)
}

/// An open audit record with its reserved slot.
pub(crate) struct Audit {
    res: Reservation,
    rec: Record,
    started: quanta::Instant,
}

fn base(
    shard: &Shard,
    claims: Option<&Rc<Claims>>,
    gateway: Option<&str>,
    method: &str,
    meta: &Meta,
) -> Record {
    Record {
        time_ms: shard.clock.unix_ms(),
        request_id: meta.request_id.clone(),
        trace_id: meta.trace_id.clone(),
        span_id: Some(meta.span_id.clone()),
        parent_span_id: meta.parent_span_id.clone(),
        session: meta.session.clone(),
        iss: claims.map(|c| c.iss.clone()),
        sub: claims.map(|c| c.sub.clone()),
        client_id: claims.and_then(|c| c.client_id.clone()),
        jti_hash: claims.and_then(|c| c.jti_hash.clone()),
        actors: audit::actors(gateway, claims.and_then(|c| c.act.as_ref())),
        method: method.to_owned(),
        upstream: None,
        tool: None,
        upstream_tool: None,
        decision: Outcome::Allow,
        policy_ids: Vec::new(),
        reason: None,
        delegation: None,
        upstream_status: None,
        latency_ms: 0.0,
    }
}

impl Audit {
    /// Reserve the record's slot, or `None`: then the call must be refused (counted).
    pub fn begin(
        shard: &Shard,
        claims: Option<&Rc<Claims>>,
        method: &str,
        tool: Option<&str>,
        meta: &Meta,
    ) -> Option<Audit> {
        let Some(res) = shard.shared.audit.reserve() else {
            shard
                .shared
                .audit
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("warden_audit_refusals_total").increment(1);
            return None;
        };
        let mut rec = base(shard, claims, None, method, meta);
        rec.tool = tool.map(str::to_owned);
        Some(Audit {
            res,
            rec,
            started: shard.clock.now(),
        })
    }

    pub fn route(
        &mut self,
        upstream: &str,
        upstream_tool: Option<&str>,
        gateway_client: Option<&str>,
    ) {
        self.rec.upstream = Some(upstream.to_owned());
        self.rec.upstream_tool = upstream_tool.map(str::to_owned);
        if let Some(g) = gateway_client {
            self.rec.actors.insert(0, g.to_owned());
        }
    }

    pub fn policies(&mut self, ids: Vec<String>) {
        self.rec.policy_ids = ids;
    }

    pub fn delegation(&mut self, d: DelegationRecord) {
        self.rec.delegation = Some(d);
    }

    /// Commit the record for a forwarded request.
    pub fn forwarded(self, shard: &Shard, report: &Report) {
        let outcome = if report.failure.is_some() {
            Outcome::UpstreamError
        } else {
            Outcome::Allow
        };
        let reason = report.failure.clone();
        let status = report.upstream_status;
        self.finish(shard, outcome, reason, Vec::new(), status);
    }

    /// Commit the record.
    pub fn finish(
        mut self,
        shard: &Shard,
        outcome: Outcome,
        reason: Option<String>,
        policy_ids: Vec<String>,
        upstream_status: Option<u16>,
    ) {
        self.rec.decision = outcome;
        self.rec.reason = reason;
        if !policy_ids.is_empty() {
            self.rec.policy_ids = policy_ids;
        }
        self.rec.upstream_status = upstream_status;
        self.rec.latency_ms = shard
            .clock
            .now()
            .saturating_duration_since(self.started)
            .as_secs_f64()
            * 1000.0;
        // Labels stay bounded: a tool name is a label only once it was routed (from the catalog).
        match &self.rec.upstream {
            Some(u) => {
                shard
                    .meters
                    .tool_call(u, self.rec.tool.as_deref().unwrap_or(""), outcome.label())
            }
            None => shard.meters.tool_call("", "", outcome.label()),
        }
        self.res.commit(self.rec);
    }
}

/// Record an outcome decided before any reservation (authentication failure, rejected input).
pub(crate) fn record_unreserved(
    shard: &Shard,
    claims: Option<&Rc<Claims>>,
    method: &str,
    tool: Option<&str>,
    meta: &Meta,
    outcome: Outcome,
    reason: &str,
) {
    let mut rec = base(shard, claims, None, method, meta);
    rec.tool = tool.map(str::to_owned);
    rec.decision = outcome;
    rec.reason = Some(reason.to_owned());
    metrics::counter!("warden_tool_calls_total", "upstream" => "", "tool" => "", "decision" => outcome.label()).increment(1);
    shard.shared.audit.record(rec);
}

/// A lenient look at a body that will be refused: its method and tool name, for the record.
pub(crate) fn peek(body: &[u8]) -> (String, Option<String>) {
    #[derive(serde::Deserialize)]
    struct P {
        method: Option<String>,
        params: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<P>(body) {
        Ok(p) => {
            let tool = p
                .params
                .as_ref()
                .and_then(|v| v.get("name"))
                .and_then(|n| n.as_str())
                .map(|s| s.chars().take(128).collect());
            (
                p.method.unwrap_or_default().chars().take(64).collect(),
                tool,
            )
        }
        Err(_) => (String::new(), None),
    }
}
