//! The read-only live page on the admin port: topology (clients → gateway → upstreams,
//! with call and error rates over the last minute) and the recent decision stream.
//! Fed by the audit writer's observer, so it shows exactly what was recorded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use dataplane::audit::{Outcome, Record};
use serde::Serialize;

const WINDOW_MS: i64 = 60_000;
const RECENT: usize = 100;

#[derive(Debug, Default)]
struct Edge {
    /// (time_ms, error) of calls within the window.
    calls: VecDeque<(i64, bool)>,
}

#[derive(Debug, Default)]
struct Inner {
    recent: VecDeque<RecentDecision>,
    /// (client, upstream) → calls.
    edges: HashMap<(String, String), Edge>,
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
        let client = r
            .client_id
            .clone()
            .unwrap_or_else(|| "(unknown client)".into());
        let upstream = r.upstream.clone().unwrap_or_else(|| "(not routed)".into());
        let error = !matches!(r.decision, Outcome::Allow);
        let e = g.edges.entry((client.clone(), upstream)).or_default();
        e.calls.push_back((r.time_ms, error));
        while e
            .calls
            .front()
            .is_some_and(|(t, _)| *t < r.time_ms - WINDOW_MS)
        {
            e.calls.pop_front();
        }
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
            .map(|((c, u), e)| {
                let live: Vec<&(i64, bool)> = e
                    .calls
                    .iter()
                    .filter(|(t, _)| *t >= now_ms - WINDOW_MS)
                    .collect();
                EdgeView {
                    client: c.clone(),
                    upstream: u.clone(),
                    calls_per_min: live.len(),
                    errors_per_min: live.iter().filter(|(_, err)| *err).count(),
                }
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
