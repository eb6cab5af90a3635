//! The read-only live page on the admin port: topology (clients → gateway → upstreams,
//! with call and error rates over the last minute) and the recent decision stream.
//! Fed by the audit writer's observer, so it shows exactly what was recorded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use dataplane::audit::{Outcome, Record};
use serde::Serialize;

const RECENT: usize = 100;

/// Per-second buckets over the last minute: memory stays constant whatever the call rate.
#[derive(Debug)]
struct Edge {
    /// (second, calls, errors), indexed by second modulo 60.
    buckets: [(i64, u32, u32); 60],
}

impl Default for Edge {
    fn default() -> Self {
        Edge {
            buckets: [(i64::MIN, 0, 0); 60],
        }
    }
}

impl Edge {
    fn add(&mut self, time_ms: i64, error: bool) {
        let sec = time_ms.div_euclid(1000);
        let b = &mut self.buckets[sec.rem_euclid(60) as usize];
        if b.0 != sec {
            *b = (sec, 0, 0);
        }
        b.1 += 1;
        b.2 += u32::from(error);
    }

    fn last_minute(&self, now_ms: i64) -> (usize, usize) {
        let now = now_ms.div_euclid(1000);
        self.buckets
            .iter()
            .filter(|b| b.0 > now - 60 && b.0 <= now)
            .fold((0, 0), |(c, e), b| (c + b.1 as usize, e + b.2 as usize))
    }
}

#[derive(Debug, Default)]
struct Inner {
    recent: VecDeque<RecentDecision>,
    /// client → upstream → calls.
    edges: HashMap<String, HashMap<String, Edge>>,
    upstreams: Vec<String>,
}

/// One line of the decision stream.
#[derive(Debug, Clone, Serialize)]
pub struct RecentDecision {
    pub time_ms: i64,
    pub user: String,
    pub client: String,
    pub tool: String,
    pub decision: &'static str,
    pub reason: String,
}

/// Shared between the audit writer (writes) and the admin handlers (reads).
#[derive(Debug, Default)]
pub struct Live {
    inner: RwLock<Inner>,
}

#[derive(Debug, Serialize)]
struct EdgeView {
    client: String,
    upstream: String,
    calls_per_min: usize,
    errors_per_min: usize,
}

#[derive(Debug, Serialize)]
struct View {
    upstreams: Vec<String>,
    edges: Vec<EdgeView>,
    recent: Vec<RecentDecision>,
}

impl Live {
    pub fn new(upstreams: Vec<String>) -> Arc<Live> {
        Arc::new(Live {
            inner: RwLock::new(Inner {
                upstreams,
                ..Default::default()
            }),
        })
    }

    /// Take in one written audit record.
    pub fn observe(&self, r: &Record) {
        let Ok(mut g) = self.inner.write() else {
            return;
        };
        let client = r.client_id.as_deref().unwrap_or("(unknown client)");
        let upstream = r.upstream.as_deref().unwrap_or("(not routed)");
        let error = !matches!(r.decision, Outcome::Allow);
        // Look up without allocating; keys are made only for a new edge.
        if !g
            .edges
            .get(client)
            .is_some_and(|m| m.contains_key(upstream))
        {
            g.edges
                .entry(client.to_owned())
                .or_default()
                .entry(upstream.to_owned())
                .or_default();
        }
        if let Some(e) = g.edges.get_mut(client).and_then(|m| m.get_mut(upstream)) {
            e.add(r.time_ms, error);
        }
        let client = client.to_owned();
        g.recent.push_back(RecentDecision {
            time_ms: r.time_ms,
            user: r.sub.clone().unwrap_or_else(|| "(anonymous)".into()),
            client,
            tool: r.tool.clone().unwrap_or_default(),
            decision: r.decision.label(),
            reason: r.reason.clone().unwrap_or_default(),
        });
        while g.recent.len() > RECENT {
            g.recent.pop_front();
        }
    }

    /// The current view as JSON.
    pub fn state(&self, now_ms: i64) -> serde_json::Value {
        let Ok(g) = self.inner.read() else {
            return serde_json::Value::Null;
        };
        let edges = g
            .edges
            .iter()
            .flat_map(|(c, ups)| {
                ups.iter().map(move |(u, e)| {
                    let (calls, errors) = e.last_minute(now_ms);
                    EdgeView {
                        client: c.clone(),
                        upstream: u.clone(),
                        calls_per_min: calls,
                        errors_per_min: errors,
                    }
                })
            })
            .collect();
        let v = View {
            upstreams: g.upstreams.clone(),
            edges,
            recent: g.recent.iter().rev().cloned().collect(),
        };
        serde_json::to_value(v).unwrap_or_default()
    }
}

/// The page itself: static HTML that polls `/live/state.json` once a second.
pub const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Warden — live</title>
<style>
body{font:14px system-ui,sans-serif;margin:24px;color:#1d2330}
h1{font-size:20px} h2{font-size:16px;margin-top:24px}
#topo{display:flex;gap:48px;align-items:center}
.col{display:flex;flex-direction:column;gap:8px}
.box{border:1px solid #9aa4b5;border-radius:6px;padding:6px 10px;background:#f4f6fa}
.gw{background:#1d2330;color:#fff}
table{border-collapse:collapse;width:100%} td,th{border-bottom:1px solid #e1e5ec;padding:4px 8px;text-align:left}
.allow{color:#17733a}.deny,.unauthenticated,.rejected,.exchange_failed,.upstream_error{color:#b3261e}
</style></head>
<body>
<h1>Warden — live</h1>
<div id="topo"><div class="col" id="clients"></div><div class="box gw">Warden gateway</div><div class="col" id="upstreams"></div></div>
<h2>Traffic (last minute)</h2>
<table><thead><tr><th>client</th><th>upstream</th><th>calls/min</th><th>errors/min</th></tr></thead><tbody id="edges"></tbody></table>
<h2>Recent decisions</h2>
<table><thead><tr><th>time</th><th>user</th><th>tool</th><th>decision</th><th>reason</th></tr></thead><tbody id="recent"></tbody></table>
<script>
function cell(t){const d=document.createElement('td');d.textContent=t;return d}
function row(cells,cls){const r=document.createElement('tr');cells.forEach((c,i)=>{const d=cell(c);if(i===3&&cls)d.className=cls;r.appendChild(d)});return r}
function box(t){const d=document.createElement('div');d.className='box';d.textContent=t;return d}
async function tick(){
  try{
    const s=await (await fetch('/live/state.json',{cache:'no-store'})).json();
    const clients=[...new Set(s.edges.map(e=>e.client))];
    document.getElementById('clients').replaceChildren(...clients.map(box));
    document.getElementById('upstreams').replaceChildren(...s.upstreams.map(box));
    document.getElementById('edges').replaceChildren(...s.edges.map(e=>row([e.client,e.upstream,String(e.calls_per_min),String(e.errors_per_min)])));
    document.getElementById('recent').replaceChildren(...s.recent.map(r=>row([new Date(r.time_ms).toISOString(),r.user,r.tool,r.decision,r.reason],r.decision)));
  }catch(e){}
}
tick();setInterval(tick,1000);
</script></body></html>"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_cover_the_last_minute_in_constant_memory() {
        let mut e = Edge::default();
        for i in 0..120_000 {
            // Two minutes of calls, one per millisecond; every 10th an error.
            e.add(1_000_000 + i, i % 10 == 0);
        }
        let (calls, errors) = e.last_minute(1_000_000 + 119_999);
        assert_eq!(calls, 60_000);
        assert_eq!(errors, 6_000);
        assert_eq!(
            e.last_minute(1_000_000 + 119_999 + 120_000),
            (0, 0),
            "an idle minute later: nothing"
        );
    }
}
