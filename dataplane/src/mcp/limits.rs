//! Steps 4 and 8 of the request path: per-user and per-tool rate limits (429 with
//! `Retry-After` and a JSON-RPC error the model can read, audited). The in-flight cap's
//! fast 503 is `Refusal::overloaded`, taken first in the pipeline.

use serde_json::json;

use super::refusal::Refusal;
use super::vocab::Cx;
use crate::ratelimit::{Decision, Key, Quota, ToolLimit};

fn rate(q: &Quota) -> String {
    let ps = q.per_second();
    if ps.fract() == 0.0 && ps < 1e15 {
        format!("{}", ps as u64)
    } else {
        format!("{ps}")
    }
}

/// The refusal of a call over a limit: a JSON-RPC error the model can read, with when to retry.
fn limited(tool: bool, q: &Quota, d: Decision) -> Refusal {
    let secs = d.retry_after_secs();
    let (scope, what, unit) = if tool {
        (
            "tool",
            "Rate limit exceeded for this tool: at most",
            "calls",
        )
    } else {
        ("user", "Rate limit exceeded: at most", "requests")
    };
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
    Refusal::limited_call(tool, message, data, secs)
}

fn take(cx: &Cx<'_>, key: Key, q: Quota) -> Decision {
    let rl = &cx.shard.shared.ratelimit;
    let now = rl.micros(cx.shard.clock.now());
    rl.check(key, q, now, cx.snap.settings.rate_limits.max_buckets)
}

/// The per-user limit, one token per HTTP request (and per batch element after the first:
/// a batch costs what the same messages sent one by one cost).
pub(super) fn per_user(cx: &Cx<'_>, json_rpc: bool) -> Result<(), Refusal> {
    let Some(q) = cx.snap.settings.rate_limits.per_user else {
        return Ok(());
    };
    match take(cx, Key::user(&cx.caller.owner), q) {
        Decision::Allowed => Ok(()),
        d if json_rpc => Err(limited(false, &q, d)),
        d => {
            metrics::counter!("warden_ratelimit_limited_total", "scope" => "user").increment(1);
            Err(Refusal::user_limited_http(d.retry_after_secs()))
        }
    }
}

/// The per-(user, tool) limit of an allowed `tools/call`, before anything is delegated or
/// forwarded. Looked up by the exact routed name, after policy: a hidden tool is never
/// revealed by a 429.
pub(super) fn per_tool(cx: &Cx<'_>, limit: Option<ToolLimit>) -> Result<(), Refusal> {
    let Some(l) = limit else { return Ok(()) };
    match take(cx, Key::tool(&cx.caller.owner, l.key), l.quota) {
        Decision::Allowed => Ok(()),
        d => Err(limited(true, &l.quota, d)),
    }
}
