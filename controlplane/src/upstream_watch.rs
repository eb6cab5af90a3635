//! Upstream change listeners: one per MCP upstream that says it tells list changes
//! (`capabilities.*.listChanged`). A 2026-07-28 upstream gets a `subscriptions/listen`
//! asking for tool, prompt and resource list changes; a 2025-era one gets a session of the
//! gateway's own (`initialize`, then its GET stream). Each `notifications/*/list_changed`
//! asks the control loop to rediscover that upstream, which republishes the catalog; the
//! shards' streams then tell each client whose visible list changed.
//!
//! A listener that ends (upstream restart, connection lost, its lifetime reached) is opened
//! again after a backoff, and the upstream is rediscovered then too, since a change may have
//! passed while nobody listened. Everything here runs on the control plane's runtime.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use crate::catalog::Discovered;
use dataplane::mcp::era;

/// How long one listening connection is kept before it is renewed (with a fresh credential).
const LIFETIME: Duration = Duration::from_secs(600);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Where a listener's `Authorization` comes from: fixed, or the gateway's service token for
/// the upstream's audience, fetched anew for every connection.
#[derive(Clone)]
pub(crate) enum Auth {
    Fixed(Option<String>),
    Service {
        engine: crate::delegate::EngineCell,
        audience: String,
    },
}

impl Auth {
    async fn header(&self) -> Result<Option<String>, String> {
        match self {
            Auth::Fixed(h) => Ok(h.clone()),
            Auth::Service { engine, audience } => {
                let e = engine.load_full();
                let t = e.service_token(audience).await.map_err(|e| e.to_string())?;
                Ok(Some(format!("Bearer {}", t.token.expose())))
            }
        }
    }
}

/// What one listener needs.
#[derive(Clone)]
pub(crate) struct Target {
    pub id: u32,
    pub name: String,
    pub url: String,
    pub http: reqwest::Client,
    pub auth: Auth,
    /// The revision discovery found.
    pub version: String,
}

/// Whether a discovered upstream says it tells list changes.
pub(crate) fn tells_changes(d: &Discovered) -> bool {
    ["tools", "prompts", "resources"]
        .iter()
        .any(|k| d.capabilities[k]["listChanged"] == true)
}

/// The running listeners, by upstream id.
#[derive(Default)]
pub(crate) struct Watchers {
    tasks: HashMap<u32, JoinHandle<()>>,
}

impl Watchers {
    /// Keep exactly one listener for each id of `keep` (made by `target` when it has none);
    /// stop the others.
    pub fn sync(
        &mut self,
        keep: &[u32],
        mut target: impl FnMut(u32) -> Option<Target>,
        changed: &UnboundedSender<u32>,
    ) {
        self.tasks.retain(|id, task| {
            let k = keep.contains(id);
            if !k {
                task.abort();
            }
            k
        });
        for &id in keep {
            if self.tasks.get(&id).is_some_and(|h| !h.is_finished()) {
                continue;
            }
            if let Some(t) = target(id) {
                let tx = changed.clone();
                self.tasks.insert(id, tokio::spawn(listen_forever(t, tx)));
            }
        }
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for t in self.tasks.values() {
            t.abort();
        }
    }
}

/// How one listening connection ended.
enum Ended {
    /// It was open and then ended (or its lifetime passed): listen again, and rediscover.
    WasOpen,
    /// It could not be opened: try again later.
    Failed(String),
    /// The upstream offers no such stream (HTTP 404/405, `-32601`): stop listening.
    Unsupported(String),
}

/// Listen, and listen again when it ends.
async fn listen_forever(t: Target, changed: UnboundedSender<u32>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let ended = tokio::time::timeout(LIFETIME, listen_once(&t, &changed))
            .await
            .unwrap_or(Ended::WasOpen);
        if changed.is_closed() {
            return;
        }
        match ended {
            Ended::WasOpen => {
                // A change may have passed while nobody listened.
                backoff = BACKOFF_MIN;
                if changed.send(t.id).is_err() {
                    return;
                }
            }
            Ended::Failed(e) => {
                tracing::debug!(upstream = %t.name, error = %e, "Upstream change listener could not open; retrying");
            }
            Ended::Unsupported(why) => {
                tracing::info!(upstream = %t.name, why = %why, "Upstream declares listChanged but offers no change stream; its lists are rediscovered on reload only");
                return;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One listening connection, until it ends.
async fn listen_once(t: &Target, changed: &UnboundedSender<u32>) -> Ended {
    let auth = match t.auth.header().await {
        Ok(a) => a,
        Err(e) => return Ended::Failed(e),
    };
    let opened = if era::is_modern(&t.version) {
        subscribe(t, auth.as_deref()).await
    } else {
        session_stream(t, auth.as_deref()).await
    };
    let (mut resp, framing) = match opened {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut buf = String::new();
    // Whether a notification came (the acknowledgment, at least): a JSON body that carries
    // none was an answer, not a stream.
    let mut notified = framing == Framing::Sse;
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            _ => break,
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(data) = framing.next_message(&mut buf) {
            notified |= data.contains("\"method\"");
            if let Some(end) = heard(t, changed, &data) {
                return end;
            }
        }
        if buf.len() > 1 << 20 {
            return Ended::WasOpen; // a message over 1 MiB: not an upstream to trust; reconnect
        }
    }
    if framing == Framing::Lines {
        // A line-framed body's last message may end without its newline.
        let last = std::mem::take(&mut buf);
        notified |= last.contains("\"method\"");
        if let Some(end) = heard(t, changed, last.trim()) {
            return end;
        }
        if !notified {
            return Ended::Failed("a JSON answer, no stream".into());
        }
    }
    Ended::WasOpen
}

/// How a change stream frames its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Server-sent events (what the specification says).
    Sse,
    /// One JSON message per line of an `application/json` body, as the conformance suite's
    /// reference server answers `subscriptions/listen` (and its client reads).
    Lines,
}

impl Framing {
    /// The next whole message taken from `buf` (an SSE event's data, or one line).
    fn next_message(self, buf: &mut String) -> Option<String> {
        match self {
            Framing::Sse => {
                let end = buf.find("\n\n")?;
                let event: String = buf.drain(..end + 2).collect();
                Some(
                    (event.lines())
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect(),
                )
            }
            Framing::Lines => {
                let end = buf.find('\n')?;
                let line: String = buf.drain(..end + 1).collect();
                Some(line.trim().to_owned())
            }
        }
    }
}

/// What one message from the stream means: a list change is sent on for rediscovery
/// (`None`: listen on); an error answer ends the listener (`-32601`: no such stream here).
fn heard(t: &Target, changed: &UnboundedSender<u32>, data: &str) -> Option<Ended> {
    let v = serde_json::from_str::<Value>(data).ok()?;
    if let Some(e) = v.get("error") {
        return Some(match e["code"].as_i64() {
            Some(-32601) => Ended::Unsupported("method not found".into()),
            _ => Ended::Failed("the upstream ended the stream with an error".into()),
        });
    }
    if dataplane::mcp::announces_list_change(v["method"].as_str()) {
        tracing::info!(upstream = %t.name, "Upstream says its list changed; rediscovering");
        if changed.send(t.id).is_err() {
            return Some(Ended::WasOpen);
        }
    }
    None
}

fn request(t: &Target, auth: Option<&str>, method: reqwest::Method) -> reqwest::RequestBuilder {
    let mut rb = t
        .http
        .request(method, &t.url)
        .timeout(LIFETIME + Duration::from_secs(5));
    if let Some(a) = auth {
        rb = rb.header("authorization", a);
    }
    rb
}

/// A response that opened a stream (and how it frames its messages), or how it did not.
async fn ok_stream(r: reqwest::Response) -> Result<(reqwest::Response, Framing), Ended> {
    let status = r.status();
    let kind = (r.headers().get("content-type"))
        .and_then(|v| v.to_str().ok())
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if status.is_success() && kind.starts_with("text/event-stream") {
        return Ok((r, Framing::Sse));
    }
    // A JSON body on success: messages one per line (an error answer among them ends it).
    if status.is_success() && kind.starts_with("application/json") {
        return Ok((r, Framing::Lines));
    }
    if matches!(status.as_u16(), 404 | 405) {
        return Err(Ended::Unsupported(format!("HTTP {status}")));
    }
    // A JSON answer to a stream request is an error (or a refusal of the method).
    let body = r.text().await.unwrap_or_default();
    let code = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["code"].as_i64());
    match code {
        Some(-32601) => Err(Ended::Unsupported("method not found".into())),
        _ => Err(Ended::Failed(format!("HTTP {status}, no event stream"))),
    }
}

fn failed(e: reqwest::Error) -> Ended {
    Ended::Failed(e.to_string())
}

/// A 2026-07-28 subscription to every list's changes.
async fn subscribe(t: &Target, auth: Option<&str>) -> Result<(reqwest::Response, Framing), Ended> {
    let body = json!({"jsonrpc": "2.0", "id": "warden-watch", "method": "subscriptions/listen",
    "params": {
        "_meta": {
            era::META_VERSION: t.version,
            era::META_CAPABILITIES: {},
            era::META_CLIENT: {"name": "warden", "version": env!("CARGO_PKG_VERSION")},
        },
        "notifications": {"toolsListChanged": true, "promptsListChanged": true,
                          "resourcesListChanged": true},
    }});
    let r = request(t, auth, reqwest::Method::POST)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", &t.version)
        .header("mcp-method", "subscriptions/listen")
        .body(body.to_string())
        .send()
        .await
        .map_err(failed)?;
    ok_stream(r).await
}

/// A 2025-era session of the gateway's own, and its GET stream. A session whose stream is
/// refused is ended again.
async fn session_stream(
    t: &Target,
    auth: Option<&str>,
) -> Result<(reqwest::Response, Framing), Ended> {
    let post = |body: String, sid: Option<&str>| {
        let mut rb = request(t, auth, reqwest::Method::POST)
            .timeout(Duration::from_secs(10))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", &t.version)
            .body(body);
        if let Some(s) = sid {
            rb = rb.header("mcp-session-id", s);
        }
        rb
    };
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": t.version, "capabilities": {},
        "clientInfo": {"name": "warden", "version": env!("CARGO_PKG_VERSION")}}});
    let r = post(init.to_string(), None).send().await.map_err(failed)?;
    if !r.status().is_success() {
        return Err(Ended::Failed(format!("initialize: HTTP {}", r.status())));
    }
    let sid = (r.headers().get("mcp-session-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    drop(r.text().await);
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_owned();
    post(note, sid.as_deref()).send().await.map_err(failed)?;
    let mut get = request(t, auth, reqwest::Method::GET)
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", &t.version);
    if let Some(s) = &sid {
        get = get.header("mcp-session-id", s);
    }
    let opened = ok_stream(get.send().await.map_err(failed)?).await;
    if opened.is_err()
        && let Some(s) = &sid
    {
        let end = request(t, auth, reqwest::Method::DELETE)
            .timeout(Duration::from_secs(5))
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", &t.version);
        let _ = end.send().await;
    }
    opened
}

#[cfg(test)]
#[path = "upstream_watch_tests.rs"]
mod tests;
