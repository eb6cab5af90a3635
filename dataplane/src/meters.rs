//! Per-shard handles of the labelled series a tool call touches, registered once, so the
//! request path increments a handle instead of building a labelled key (measured: a
//! pre-registered counter costs ~6 ns, the `counter!` macro with labels ~90–300 ns).

use std::cell::RefCell;
use std::collections::HashMap;

/// Decisions, in the order of the per-tool handle arrays.
const DECISIONS: [&str; 7] = [
    "allow",
    "deny",
    "unauthenticated",
    "rejected",
    "exchange_failed",
    "upstream_error",
    "rate_limited",
];

type ToolCounters = HashMap<String, [Option<metrics::Counter>; 7]>;

/// Handles for one shard; labels are bounded by the catalog (upstreams × tools × decisions).
#[derive(Default)]
pub struct Meters {
    tool_calls: RefCell<HashMap<String, ToolCounters>>,
    upstream_latency: RefCell<HashMap<String, metrics::Histogram>>,
}

impl std::fmt::Debug for Meters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meters").finish_non_exhaustive()
    }
}

impl Meters {
    /// `warden_tool_calls_total{upstream, tool, decision}` += 1.
    pub fn tool_call(&self, upstream: &str, tool: &str, decision: &'static str) {
        let Some(i) = DECISIONS.iter().position(|d| *d == decision) else {
            return;
        };
        let mut map = self.tool_calls.borrow_mut();
        let tools = match map.get_mut(upstream) {
            Some(t) => t,
            None => map.entry(upstream.to_owned()).or_default(),
        };
        let slots = match tools.get_mut(tool) {
            Some(s) => s,
            None => tools.entry(tool.to_owned()).or_default(),
        };
        slots[i]
            .get_or_insert_with(|| metrics::counter!("warden_tool_calls_total", "upstream" => upstream.to_owned(), "tool" => tool.to_owned(), "decision" => decision))
            .increment(1);
    }

    /// `warden_upstream_request_duration_seconds{upstream}` observes `secs`.
    pub fn upstream_latency(&self, upstream: &str, secs: f64) {
        let mut map = self.upstream_latency.borrow_mut();
        match map.get(upstream) {
            Some(h) => h.record(secs),
            None => {
                let h = metrics::histogram!("warden_upstream_request_duration_seconds", "upstream" => upstream.to_owned());
                h.record(secs);
                map.insert(upstream.to_owned(), h);
            }
        }
    }
}
