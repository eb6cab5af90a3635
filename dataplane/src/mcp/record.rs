//! Step 6 and the last step of the request path: the audit bracket around every
//! upstream-bound request — a slot is reserved before anything happens (or the call is
//! refused), and exactly one record is committed, whatever the outcome. The answer leaves
//! only once its record is written ([`crate::audit::Written`]): a relayed answer's record is
//! committed just before the answer's last bytes ([`Open::settle`]).

use std::rc::Rc;

use crate::audit::{self, DelegationRecord, Outcome, Record, Reservation, Written};
use crate::auth::jwt::Claims;
use crate::shard::Shard;

use super::refusal::Refusal;
use super::vocab::{Cx, Meta};
use crate::jsonrpc::Message;

/// What became of a forwarded request, for the audit record.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The upstream's HTTP status, when it answered.
    pub upstream_status: Option<u16>,
    /// Why the agent got an error instead of the upstream's answer.
    pub failure: Option<String>,
    /// The upstream's own time (send to last byte), when it was asked.
    pub upstream_ms: Option<f64>,
}

impl Report {
    pub fn failed(status: Option<u16>, why: impl Into<String>) -> Report {
        Report {
            upstream_status: status,
            failure: Some(why.into()),
            upstream_ms: None,
        }
    }
}

/// Methods whose requests reach an upstream: each gets an audit record.
pub(crate) fn is_audited(method: &str) -> bool {
    method == "tools/call"
        || super::route_items::is_routed_item_method(method)
        || super::route::is_passthrough_method(method)
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
        session: meta.session().map(str::to_owned),
        iss: claims.map(|c| c.iss.clone()),
        sub: claims.map(|c| c.sub.clone()),
        client_id: claims.and_then(|c| c.client_id.clone()),
        jti_hash: claims.and_then(|c| c.jti_hash.clone()),
        // Claims reach a record only after authentication, where a bound token passed only
        // with a proof of exactly this key.
        sender_constrained: claims.is_some_and(|c| c.cnf_jkt.is_some()),
        jkt: claims.and_then(|c| c.cnf_jkt.clone()),
        actors: audit::actors(gateway, claims.and_then(|c| c.act.as_ref())),
        scopes: claims.map(|c| c.scopes.clone()).unwrap_or_default(),
        groups: claims.map(|c| c.groups.clone()).unwrap_or_default(),
        shadow: None,
        method: method.to_owned(),
        upstream: None,
        tool: None,
        upstream_tool: None,
        decision: Outcome::Allow,
        policy_ids: Vec::new(),
        reason: None,
        blame: None,
        delegation: None,
        upstream_status: None,
        latency_ms: 0.0,
        upstream_ms: None,
        protocol: None,
        upstream_protocol: None,
    }
}

impl Audit {
    /// Open the record of an upstream-bound request (`None` for methods answered locally),
    /// or refuse the request: it is never run unaudited.
    pub fn open(cx: &Cx<'_>, msg: &Message<'_>) -> Result<Option<Audit>, Refusal> {
        let method = msg.method.as_deref().unwrap_or("");
        if !is_audited(method) {
            return Ok(None);
        }
        // The tool, prompt or resource the client named (its name for it; routing is exact).
        let tool = match method {
            "tools/call" => super::rewrite::tool_name(msg.params),
            m => super::route_items::item_name(m, msg.params),
        };
        let claims = cx.caller.claims.as_ref();
        match Audit::begin(cx.shard, claims, method, tool.as_deref(), cx.meta) {
            Some(a) => Ok(Some(a)),
            None => Err(Refusal::audit_unavailable()),
        }
    }

    /// Reserve the record's slot, or `None`: then the call must be refused (counted).
    fn begin(
        shard: &Shard,
        claims: Option<&Rc<Claims>>,
        method: &str,
        tool: Option<&str>,
        meta: &Meta,
    ) -> Option<Audit> {
        let Some(res) = shard.shared.audit.reserve() else {
            count_audit_refusal(shard);
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

    /// The revisions spoken: the client's, and the upstream's when it is asked.
    pub fn protocol(&mut self, client: &str) {
        self.rec.protocol = Some(client.to_owned());
    }

    /// The revision the upstream the call was routed to speaks.
    pub fn upstream_protocol(&mut self, upstream: Option<&str>) {
        self.rec.upstream_protocol = upstream.map(str::to_owned);
    }

    /// Where the call goes (or would have gone).
    pub fn route(&mut self, upstream: &str, upstream_tool: Option<&str>) {
        self.rec.upstream = Some(upstream.to_owned());
        self.rec.upstream_tool = upstream_tool.map(str::to_owned);
    }

    /// The gateway as the outermost actor, when it acts for the user with a delegation token.
    pub fn acting(&mut self, gateway_client: &str) {
        self.rec.actors.insert(0, gateway_client.to_owned());
    }

    pub fn policies(&mut self, ids: Vec<String>) {
        self.rec.policy_ids = ids;
    }

    /// The shadow policy's decision, where it disagreed.
    pub fn shadow(&mut self, s: crate::audit::ShadowRecord) {
        self.rec.shadow = Some(s);
    }

    pub fn delegation(&mut self, d: DelegationRecord) {
        self.rec.delegation = Some(d);
    }

    /// Commit the record for a forwarded request.
    pub fn forwarded(mut self, shard: &Shard, report: &Report) -> Written {
        let outcome = if report.failure.is_some() {
            Outcome::UpstreamError
        } else {
            Outcome::Allow
        };
        if report.failure.is_some() {
            self.rec.blame = Some(super::refusal::Blame::Upstream.label());
        }
        let reason = report.failure.clone();
        let status = report.upstream_status;
        self.rec.upstream_ms = report.upstream_ms;
        self.finish(shard, outcome, reason, status)
    }

    /// Commit the record of a refused request: its outcome, reason and blame.
    pub fn refused(mut self, shard: &Shard, r: &Refusal) -> Written {
        self.rec.blame = Some(r.blame.label());
        self.finish(shard, r.outcome, Some(r.why().to_owned()), None)
    }

    /// Commit the record.
    fn finish(
        mut self,
        shard: &Shard,
        outcome: Outcome,
        reason: Option<String>,
        upstream_status: Option<u16>,
    ) -> Written {
        self.rec.decision = outcome;
        self.rec.reason = reason;
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
        self.res.commit(self.rec)
    }
}

/// Commit the record of a forwarded request, if it is still open, and wait until it is
/// written: the answer is sent after this.
pub(crate) async fn settle(shard: &Shard, rec: &mut Option<Audit>, report: &Report) {
    if let Some(a) = rec.take() {
        a.forwarded(shard, report).wait().await;
    }
}

/// [`settle`] for a refused request.
pub(crate) async fn settle_refused(shard: &Shard, rec: &mut Option<Audit>, r: &Refusal) {
    if let Some(a) = rec.take() {
        a.refused(shard, r).wait().await;
    }
}

/// The record of a forwarded call while its answer is relayed: committed, and waited for,
/// just before the answer's last bytes are written, so no answer leaves unrecorded. What is
/// not settled here (the client went away, a batch) is settled by the pipeline afterwards.
pub(crate) struct Open<'r> {
    rec: &'r mut Option<Audit>,
    /// When the upstream was asked, for the record's `upstream_ms`.
    started: quanta::Instant,
}

impl<'r> Open<'r> {
    pub fn new(rec: &'r mut Option<Audit>, started: quanta::Instant) -> Open<'r> {
        Open { rec, started }
    }

    /// The answer is ready with `report`: commit its record and wait until it is written.
    pub async fn settle(&mut self, shard: &Shard, report: &Report) {
        let ms = shard
            .clock
            .now()
            .saturating_duration_since(self.started)
            .as_secs_f64()
            * 1000.0;
        let report = Report {
            upstream_ms: report.upstream_ms.or(Some(ms)),
            ..report.clone()
        };
        settle(shard, self.rec, &report).await;
    }
}

/// Record a refusal decided before any reservation (authentication failure, rejected
/// input, the per-user limit), from the unreserved share; the answer waits on the
/// [`Written`]. `None` when that share is full: nothing is on record, so the caller answers
/// [`Refusal::audit_unavailable`] instead of `r` (counted here as an audit refusal).
#[must_use]
pub(crate) fn unreserved(
    shard: &Shard,
    claims: Option<&Rc<Claims>>,
    body: &[u8],
    meta: &Meta,
    r: &Refusal,
) -> Option<Written> {
    let (method, tool) = peek(body);
    let mut rec = base(shard, claims, None, &method, meta);
    rec.tool = tool;
    rec.decision = r.outcome;
    rec.reason = Some(r.why().to_owned());
    rec.blame = Some(r.blame.label());
    let Some(written) = shard.shared.audit.record(rec) else {
        count_audit_refusal(shard);
        return None;
    };
    metrics::counter!("warden_tool_calls_total", "upstream" => "", "tool" => "", "decision" => r.outcome.label()).increment(1);
    Some(written)
}

/// A request refused for want of an audit slot: the queue's count and the metric.
fn count_audit_refusal(shard: &Shard) {
    shard
        .shared
        .audit
        .refused
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    metrics::counter!("warden_audit_refusals_total").increment(1);
}

/// A lenient look at a body that will be refused: its method and tool name, for the record.
fn peek(body: &[u8]) -> (String, Option<String>) {
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
