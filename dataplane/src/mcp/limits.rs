//! Overload and abuse answers: the in-flight cap's fast 503, and per-user and per-tool rate
//! limits (429 with `Retry-After` and a JSON-RPC error the model can read, audited).

use serde_json::json;
use serde_json::value::RawValue;

use super::call::{self, Audit, Meta};
use super::{Caller, Gateway, http, rewrite};
use crate::audit::Outcome;
use crate::http1::conn::Request;
use crate::http1::{Method, Response};
use crate::jsonrpc::{self, Message};
use crate::ratelimit::{self, Decision, Key, Quota, ToolLimit};
use crate::snapshot::{Snapshot, Upstream};

/// The in-flight cap's answer: made before authentication, parsing or any allocation beyond
/// the response itself. The connection stays open (the request was read whole, so framing is
/// in step); closing it would make the client reconnect, which costs more under overload.
pub(super) fn overloaded() -> Response {
    metrics::counter!("warden_overload_rejected_total", "reason" => "in_flight").increment(1);
    Response::json(
        503,
        br#"{"error":"overloaded","error_description":"too many requests in flight; retry shortly"}"#
            .to_vec(),
    )
    .header("retry-after", "1")
}

/// A request over a rate limit: its JSON-RPC error and when to retry.
pub(super) struct Limited {
    pub body: Vec<u8>,
    pub retry_after: u64,
}

impl Limited {
    /// The HTTP answer: 429 with `Retry-After`.
    pub fn response(self) -> Response {
        Response::json(429, self.body).header("retry-after", self.retry_after.to_string())
    }
}

fn rate(q: &Quota) -> String {
    let ps = q.per_second();
    if ps.fract() == 0.0 && ps < 1e15 {
        format!("{}", ps as u64)
    } else {
        format!("{ps}")
    }
}

fn limited(id: Option<&RawValue>, scope: &'static str, q: &Quota, d: Decision) -> Limited {
    let secs = d.retry_after_secs();
    let what = match scope {
        "tool" => "Rate limit exceeded for this tool: at most",
        _ => "Rate limit exceeded: at most",
    };
    let unit = if scope == "tool" { "calls" } else { "requests" };
    let message = format!(
        "{what} {} {unit} per second per user (bursts of {}). Retry after {secs} seconds.",
        rate(q),
        q.burst()
    );
    let data = json!({
        "scope": scope,
        "retryAfterSeconds": secs,
        "perSecond": q.per_second(),
        "burst": q.burst(),
    });
    metrics::counter!("warden_ratelimit_limited_total", "scope" => scope).increment(1);
    Limited {
        body: jsonrpc::error_with_data(id, ratelimit::JSONRPC_CODE, &message, Some(&data)),
        retry_after: secs,
    }
}

impl Gateway {
    fn take(&self, snap: &Snapshot, key: Key, q: Quota) -> Decision {
        let rl = &self.shard.shared.ratelimit;
        let now = rl.micros(self.shard.clock.now());
        rl.check(key, q, now, snap.settings.rate_limits.max_buckets)
    }

    /// The per-user limit, one token per HTTP request. `Some` is the answer to send: for a
    /// POST, a JSON-RPC error with the request's id (audited like an authentication failure).
    pub(super) fn limit_user(
        &self,
        snap: &Snapshot,
        req: &Request,
        caller: &Caller,
        meta: &Meta,
    ) -> Option<Response> {
        let q = snap.settings.rate_limits.per_user?;
        let d = self.take(snap, Key::user(&caller.owner), q);
        if d == Decision::Allowed {
            return None;
        }
        if req.head.method != Method::Post {
            metrics::counter!("warden_ratelimit_limited_total", "scope" => "user").increment(1);
            return Some(
                http::error_json(
                    429,
                    "rate_limited",
                    "rate limit exceeded for this user; retry later",
                )
                .header("retry-after", d.retry_after_secs().to_string()),
            );
        }
        let msg = Message::parse(&req.body).ok();
        let l = limited(msg.as_ref().and_then(|m| m.id), "user", &q, d);
        let (method, tool) = call::peek(&req.body);
        call::record_unreserved(
            &self.shard,
            caller.claims.as_ref(),
            &method,
            tool.as_deref(),
            meta,
            Outcome::RateLimited,
            "per-user rate limit exceeded",
        );
        Some(l.response())
    }

    /// The per-user limit for a batch element after the first (the HTTP request paid for the
    /// first): a batch costs one token per message, like the same messages sent one by one.
    pub(super) fn limit_user_message(
        &self,
        snap: &Snapshot,
        caller: &Caller,
        msg: &Message<'_>,
        meta: &Meta,
    ) -> Option<Limited> {
        let q = snap.settings.rate_limits.per_user?;
        let d = self.take(snap, Key::user(&caller.owner), q);
        if d == Decision::Allowed {
            return None;
        }
        let method = msg.method.as_deref().unwrap_or("");
        let tool = (method == "tools/call")
            .then(|| rewrite::tool_name(msg.params))
            .flatten();
        call::record_unreserved(
            &self.shard,
            caller.claims.as_ref(),
            method,
            tool.as_deref(),
            meta,
            Outcome::RateLimited,
            "per-user rate limit exceeded",
        );
        Some(limited(msg.id, "user", &q, d))
    }

    /// The per-(user, tool) limit of an allowed `tools/call`, before anything is delegated
    /// or forwarded. A limited call's audit record is finished here as `rate_limited`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the request path's context (shard, snapshot, caller, record, route, ids) is passed explicitly rather than bundled"
    )]
    pub(super) fn limit_tool(
        &self,
        snap: &Snapshot,
        caller: &Caller,
        limit: Option<ToolLimit>,
        audit: &mut Option<Audit>,
        up: &Upstream,
        upstream_tool: Option<&str>,
        policy_ids: &[String],
        id: &RawValue,
    ) -> Option<Limited> {
        let l = limit?;
        let d = self.take(snap, Key::tool(&caller.owner, l.key), l.quota);
        if d == Decision::Allowed {
            return None;
        }
        if let Some(mut a) = audit.take() {
            a.route(&up.name, upstream_tool, None);
            a.finish(
                &self.shard,
                Outcome::RateLimited,
                Some("per-tool rate limit exceeded".into()),
                policy_ids.to_vec(),
                None,
            );
        }
        Some(limited(Some(id), "tool", &l.quota, d))
    }
}
