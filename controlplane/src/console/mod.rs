//! The operator console on the admin port: topology, 15-minute charts, the per-tool table
//! and the decision stream with each record's delegation chain and place in the hash chain.
//! Fed by the audit writer's observer, so it shows exactly what was recorded; every
//! structure is a fixed ring or a capped map, so memory is bounded at any call rate.

pub mod access;
pub mod page;
pub mod series;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use dataplane::audit::{Outcome, Record};
use serde::Serialize;

use crate::audit::Link;
use series::{Class, Counts, Ring, Sample};

/// Records kept for the decision stream and its detail view.
pub const RECENT: usize = 1000;
/// Seconds of chart history (per-second buckets).
pub const WINDOW_SECS: usize = 900;
/// Distinct clients and tools tracked; beyond them calls count under one "(other)" entry.
pub const MAX_CLIENTS: usize = 64;
pub const MAX_TOOLS: usize = 512;
const OTHER: &str = "(other)";
/// Rates on the topology's edges are over the last minute.
const EDGE_SECS: i64 = 60;

/// The decision stream's entry: the record and its chain link.
#[derive(Debug, Clone)]
struct Entry {
    rec: Record,
    link: Link,
}

#[derive(Debug)]
struct ToolStats {
    minutes: Ring,
    last_caller: String,
    last_ms: i64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Reach {
    /// Last time the upstream answered (any status) and last time it could not be reached.
    answered_ms: i64,
    unreached_ms: i64,
}

#[derive(Debug)]
struct Inner {
    recent: VecDeque<Entry>,
    all: Ring,
    /// Per upstream (configured names, plus "(not routed)").
    upstreams: Vec<(String, Ring, Reach)>,
    clients: HashMap<String, Ring>,
    /// Per upstream, per tool (two levels, so a record's names are looked up, not copied).
    tools: HashMap<String, HashMap<String, ToolStats>>,
    /// Entries of `tools`, bounded by `MAX_TOOLS` (+1 for "(other)").
    tool_count: usize,
    /// Last call that got a delegation token, and last one that could not.
    delegated_ms: i64,
    exchange_failed_ms: i64,
}

/// Shared between the audit writer (writes) and the admin handlers (reads).
#[derive(Debug)]
pub struct Console {
    inner: RwLock<Inner>,
}

const NOT_ROUTED: &str = "(not routed)";

/// What the admin side knows about the gateway's dependencies at the time of a read.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Trusted issuers: (issuer URL, JWKS loaded and fresh).
    pub issuers: Vec<(String, bool)>,
    /// The token service the gateway delegates through, if any: (label, kind).
    pub token_service: Option<String>,
    pub audit_ok: bool,
    pub audit_queue: usize,
    pub shards_ok: bool,
    pub generation: u64,
}

#[derive(Debug, Serialize)]
struct Node {
    id: String,
    kind: &'static str,
    label: String,
    /// ok, degraded, down, idle.
    health: &'static str,
    detail: String,
}

#[derive(Debug, Serialize)]
struct EdgeView {
    from: String,
    to: String,
    /// Calls per second over the last minute.
    rate: f64,
    allow: u64,
    deny: u64,
    error: u64,
}

#[derive(Debug, Serialize)]
struct ToolRow {
    upstream: String,
    tool: String,
    calls: u64,
    denies: u64,
    errors: u64,
    p99_ms: Option<f64>,
    last_caller: String,
    last_ms: i64,
}

/// One line of the decision stream.
#[derive(Debug, Serialize)]
pub struct Row {
    pub seq: u64,
    pub time_ms: i64,
    pub user: String,
    pub client: String,
    pub tool: String,
    pub upstream: String,
    pub decision: &'static str,
    pub class: &'static str,
    pub reason: String,
    pub latency_ms: f64,
}

/// Filters of the decision stream (all optional; text filters match substrings).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(default)]
pub struct Filter {
    pub user: Option<String>,
    pub client: Option<String>,
    pub tool: Option<String>,
    pub upstream: Option<String>,
    /// A decision label (`deny`, `upstream_error`, ...) or a class (`allow`, `deny`, `error`).
    pub decision: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: Option<usize>,
}

fn contains(have: &str, want: &Option<String>) -> bool {
    want.as_deref()
        .is_none_or(|w| w.is_empty() || have.contains(w))
}

impl Filter {
    fn matches(&self, r: &Row) -> bool {
        contains(&r.user, &self.user)
            && contains(&r.client, &self.client)
            && contains(&r.tool, &self.tool)
            && self
                .upstream
                .as_deref()
                .is_none_or(|u| u.is_empty() || r.upstream == u)
            && self
                .decision
                .as_deref()
                .is_none_or(|d| d.is_empty() || r.decision == d || r.class == d)
            && self.since_ms.is_none_or(|t| r.time_ms >= t)
            && self.until_ms.is_none_or(|t| r.time_ms <= t)
    }
}

fn client_of(r: &Record) -> &str {
    match (&r.client_id, r.decision) {
        (Some(c), _) => c,
        (None, Outcome::Unauthenticated) => "(unauthenticated)",
        (None, _) => "(no client_id)",
    }
}

fn row(e: &Entry) -> Row {
    let r = &e.rec;
    Row {
        seq: e.link.seq,
        time_ms: r.time_ms,
        user: r.sub.clone().unwrap_or_else(|| "(anonymous)".into()),
        client: client_of(r).to_owned(),
        tool: r.tool.clone().unwrap_or_default(),
        upstream: r.upstream.clone().unwrap_or_default(),
        decision: r.decision.label(),
        class: Class::of(r.decision).label(),
        reason: r.reason.clone().unwrap_or_default(),
        latency_ms: r.latency_ms,
    }
}

/// The latency the gateway itself added to a call.
fn added_ms(r: &Record) -> f64 {
    (r.latency_ms - r.upstream_ms.unwrap_or(0.0)).max(0.0)
}

fn rate(c: &Counts) -> f64 {
    c.calls() as f64 / EDGE_SECS as f64
}

impl Console {
    pub fn new(upstreams: Vec<String>) -> Arc<Console> {
        let mut ups: Vec<(String, Ring, Reach)> = upstreams
            .into_iter()
            .map(|u| (u, Ring::new(WINDOW_SECS, 1), Reach::default()))
            .collect();
        ups.push((
            NOT_ROUTED.into(),
            Ring::new(WINDOW_SECS, 1),
            Reach::default(),
        ));
        Arc::new(Console {
            inner: RwLock::new(Inner {
                recent: VecDeque::with_capacity(RECENT),
                all: Ring::new(WINDOW_SECS, 1),
                upstreams: ups,
                clients: HashMap::new(),
                tools: HashMap::new(),
                tool_count: 0,
                delegated_ms: 0,
                exchange_failed_ms: 0,
            }),
        })
    }

    /// Take in one written audit record (on the audit writer's thread).
    pub fn observe(&self, r: Record, link: &Link) {
        let Ok(mut g) = self.inner.write() else {
            return;
        };
        let g = &mut *g;
        let class = Class::of(r.decision);
        let sample = Sample {
            class,
            added_ms: added_ms(&r),
            delegation: r.delegation.as_ref().map(|d| d.cached),
        };
        g.all.add(r.time_ms, sample);
        if r.delegation.is_some() {
            g.delegated_ms = g.delegated_ms.max(r.time_ms);
        } else if r.decision == Outcome::ExchangeFailed {
            g.exchange_failed_ms = g.exchange_failed_ms.max(r.time_ms);
        }
        let upstream = r.upstream.as_deref().unwrap_or(NOT_ROUTED);
        let slot = g
            .upstreams
            .iter()
            .position(|(u, _, _)| u == upstream)
            .unwrap_or(g.upstreams.len() - 1);
        let (_, ring, reach) = &mut g.upstreams[slot];
        ring.add(r.time_ms, sample);
        if r.upstream_status.is_some() {
            reach.answered_ms = r.time_ms;
        } else if r.decision == Outcome::UpstreamError {
            reach.unreached_ms = r.time_ms;
        }
        let client = client_of(&r);
        let key = if g.clients.contains_key(client) || g.clients.len() < MAX_CLIENTS {
            client
        } else {
            OTHER
        };
        match g.clients.get_mut(key) {
            Some(ring) => ring.add(r.time_ms, sample),
            None => {
                let mut ring = Ring::new(EDGE_SECS as usize, 1);
                ring.add(r.time_ms, sample);
                g.clients.insert(key.to_owned(), ring);
            }
        }
        // Tools only once routed: their names then come from the catalog (bounded).
        if let (Some(up), Some(tool)) = (r.upstream.as_deref(), r.tool.as_deref()) {
            let known = g.tools.get(up).is_some_and(|m| m.contains_key(tool));
            let (up, tool) = if known || g.tool_count < MAX_TOOLS {
                (up, tool)
            } else {
                (OTHER, OTHER)
            };
            if !g.tools.get(up).is_some_and(|m| m.contains_key(tool)) {
                g.tool_count += 1;
                g.tools.entry(up.to_owned()).or_default().insert(
                    tool.to_owned(),
                    ToolStats {
                        minutes: Ring::new(15, 60),
                        last_caller: String::new(),
                        last_ms: 0,
                    },
                );
            }
            if let Some(t) = g.tools.get_mut(up).and_then(|m| m.get_mut(tool)) {
                t.minutes.add(r.time_ms, sample);
                if r.time_ms >= t.last_ms {
                    t.last_ms = r.time_ms;
                    t.last_caller.clear();
                    t.last_caller
                        .push_str(r.sub.as_deref().unwrap_or("(anonymous)"));
                }
            }
        }
        if g.recent.len() >= RECENT {
            g.recent.pop_front();
        }
        g.recent.push_back(Entry {
            rec: r,
            link: link.clone(),
        });
    }

    /// The console's view: topology, chart points after `since` (unix seconds) and the
    /// per-tool table (the decisions come from [`Console::decisions`]).
    pub fn state(&self, now_ms: i64, since: i64, h: &Health) -> serde_json::Value {
        let Ok(g) = self.inner.read() else {
            return serde_json::Value::Null;
        };
        let mut nodes = Vec::new();
        let mut edges = Vec::new();
        let total = g.all.sum(now_ms, EDGE_SECS);
        let gw_health = if !h.audit_ok || !h.shards_ok {
            "down"
        } else if total.n[2] > 0 {
            "degraded"
        } else {
            "ok"
        };
        nodes.push(Node {
            id: "gateway".into(),
            kind: "gateway",
            label: "Warden".into(),
            health: gw_health,
            detail: format!("generation {}", h.generation),
        });
        let mut clients: Vec<_> = g.clients.iter().collect();
        clients.sort_by(|a, b| a.0.cmp(b.0));
        for (c, ring) in clients {
            let m = ring.sum(now_ms, EDGE_SECS);
            let id = format!("client:{c}");
            nodes.push(Node {
                id: id.clone(),
                kind: "client",
                label: c.clone(),
                health: if m.calls() == 0 { "idle" } else { "ok" },
                detail: String::new(),
            });
            edges.push(edge(id, "gateway".into(), &m));
        }
        for (u, ring, reach) in &g.upstreams {
            let m = ring.sum(now_ms, EDGE_SECS);
            if u == NOT_ROUTED && m.calls() == 0 {
                continue;
            }
            let recent = now_ms - EDGE_SECS * 1000;
            let health = if u == NOT_ROUTED {
                "ok"
            } else if reach.unreached_ms > reach.answered_ms && reach.unreached_ms > recent {
                "down"
            } else if m.n[2] > 0 {
                "degraded"
            } else if m.calls() == 0 {
                "idle"
            } else {
                "ok"
            };
            let id = format!("upstream:{u}");
            nodes.push(Node {
                id: id.clone(),
                kind: "upstream",
                label: u.clone(),
                health,
                detail: if u == NOT_ROUTED {
                    "refused before routing".into()
                } else if reach.answered_ms > 0 {
                    format!(
                        "last answered {} s ago",
                        (now_ms - reach.answered_ms) / 1000
                    )
                } else {
                    "no answer yet".into()
                },
            });
            edges.push(edge("gateway".into(), id, &m));
        }
        for (iss, fresh) in &h.issuers {
            let id = format!("idp:{iss}");
            nodes.push(Node {
                id: id.clone(),
                kind: "idp",
                label: iss.clone(),
                health: if *fresh { "ok" } else { "down" },
                detail: if *fresh {
                    "JWKS fresh".into()
                } else {
                    "JWKS missing or stale".into()
                },
            });
            edges.push(EdgeView {
                from: "gateway".into(),
                to: id,
                rate: 0.0,
                allow: 0,
                deny: 0,
                error: 0,
            });
        }
        if let Some(ts) = &h.token_service {
            let fresh = total.delegated - total.cached;
            nodes.push(Node {
                id: "token_service".into(),
                kind: "token_service",
                label: ts.clone(),
                health: if g.exchange_failed_ms <= now_ms - EDGE_SECS * 1000 {
                    "ok"
                } else if g.exchange_failed_ms > g.delegated_ms {
                    "down"
                } else {
                    "degraded"
                },
                detail: format!(
                    "{fresh} tokens minted, {} from cache (last minute)",
                    total.cached
                ),
            });
            edges.push(EdgeView {
                from: "gateway".into(),
                to: "token_service".into(),
                rate: fresh as f64 / EDGE_SECS as f64,
                allow: fresh,
                deny: 0,
                error: 0,
            });
        }
        nodes.push(Node {
            id: "audit".into(),
            kind: "audit",
            label: "audit sink".into(),
            health: if h.audit_ok { "ok" } else { "down" },
            detail: format!("{} queued", h.audit_queue),
        });
        edges.push(EdgeView {
            from: "gateway".into(),
            to: "audit".into(),
            rate: rate(&total),
            allow: total.calls(),
            deny: 0,
            error: 0,
        });
        let mut series = serde_json::Map::new();
        series.insert(
            "all".into(),
            serde_json::to_value(g.all.points(now_ms, since)).unwrap_or_default(),
        );
        for (u, ring, _) in &g.upstreams {
            series.insert(
                u.clone(),
                serde_json::to_value(ring.points(now_ms, since)).unwrap_or_default(),
            );
        }
        let mut tools: Vec<ToolRow> = g
            .tools
            .iter()
            .flat_map(|(u, m)| m.iter().map(move |(t, s)| (u, t, s)))
            .map(|(u, t, s)| {
                let c = s.minutes.sum(now_ms, WINDOW_SECS as i64);
                ToolRow {
                    upstream: u.clone(),
                    tool: t.clone(),
                    calls: c.calls(),
                    denies: c.n[1],
                    errors: c.n[2],
                    p99_ms: c.quantile(0.99),
                    last_caller: s.last_caller.clone(),
                    last_ms: s.last_ms,
                }
            })
            .collect();
        tools.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.tool.cmp(&b.tool)));
        serde_json::json!({
            "now_ms": now_ms,
            "window_secs": WINDOW_SECS,
            "nodes": nodes,
            "edges": edges,
            "last_minute": {"allow": total.n[0], "deny": total.n[1], "error": total.n[2]},
            "series": series,
            "tools": tools,
        })
    }

    /// The decision stream, newest first, filtered.
    pub fn decisions(&self, f: &Filter) -> Vec<Row> {
        let Ok(g) = self.inner.read() else {
            return Vec::new();
        };
        let limit = f.limit.unwrap_or(200).min(RECENT);
        g.recent
            .iter()
            .rev()
            .map(row)
            .filter(|r| f.matches(r))
            .take(limit)
            .collect()
    }

    /// One record and its chain link; and whether the previous record the console holds
    /// hashes to this one's `prev` (`None` when it is no longer held).
    pub fn decision(&self, seq: u64) -> Option<(Record, Link, Option<bool>)> {
        let g = self.inner.read().ok()?;
        let i = g.recent.iter().position(|e| e.link.seq == seq)?;
        let e = &g.recent[i];
        let linked = i
            .checked_sub(1)
            .map(|p| &g.recent[p])
            .filter(|p| p.link.seq + 1 == seq)
            .map(|p| p.link.hash == e.link.prev);
        Some((e.rec.clone(), e.link.clone(), linked))
    }
}

fn edge(from: String, to: String, m: &Counts) -> EdgeView {
    EdgeView {
        from,
        to,
        rate: rate(m),
        allow: m.n[0],
        deny: m.n[1],
        error: m.n[2],
    }
}

#[cfg(test)]
#[path = "console_tests.rs"]
mod tests;
