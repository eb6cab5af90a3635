//! Upstream messages outside a call, relayed on a client's stream.
//!
//! **A 2025-xx session's GET stream** ([`Mode::Session`]): for each upstream session the
//! gateway holds for that client session, the upstream's own GET stream is read, and its
//! `notifications/resources/updated` (the resources this client subscribed to in that
//! session) and `notifications/message` (log messages) reach the client with URIs in the
//! gateway's naming (`items::outbound`). Its requests (`sampling/createMessage`,
//! `elicitation/create`, `roots/list`, `ping`, …) reach the client with the id made unique
//! across upstreams (`rewrite::wrap_server_id`), exactly as during a call: the answer the
//! client posts in its session goes back to that upstream session with the upstream's own id
//! (`notes::client_response`), so it can only reach an upstream session of the same client
//! session, and so of the same user.
//!
//! **A 2026-07-28 subscription's resources** ([`Mode::Subscription`], `subscribe.rs`): a
//! 2025-xx upstream's GET stream in the user's upstream session, and for a 2026-07-28 upstream
//! a `subscriptions/listen` of the gateway's own naming the upstream's URIs (with a delegation
//! token for this user); only `notifications/resources/updated` of a granted resource is told,
//! tagged with the subscription's id. Such a client takes no requests outside a request, so
//! an upstream's requests are declined to it (`-32601`).
//!
//! In both, an upstream's list change is reported to the control plane (rediscovery; the
//! client stream tells what changed in the gateway's names), never relayed in the upstream's
//! names, and anything else is dropped.
//!
//! Every read owns its `SseStream` and hands it back with the event, so waiting for the next
//! event beside the stream's timer never drops a read half done. An upstream stream that ends
//! (or reaches its request deadline) is reopened after [`REOPEN_TICKS`]; one the upstream
//! refuses (HTTP 405, or any other non-stream answer) is not asked for again by this stream.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_channel::mpsc::UnboundedReceiver;
use futures_util::StreamExt;
use futures_util::future::{AbortHandle, AbortRegistration, Abortable, Either, select, select_all};

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::delegate::{self, session_auth};
use super::subscribe::Subscribed;
use super::vocab::Cx;
use super::{era, forward, items, rewrite};
use crate::jsonrpc::Message;
use crate::session::{Session, UpstreamSession};
use crate::shard::Shard;
use crate::snapshot::{Snapshot, Upstream};
use crate::upstream::{self, Replay, SseEvent, SseStream, UpBody, UpError, UpResponse};

/// Stream ticks before an ended upstream stream is reopened.
pub(super) const REOPEN_TICKS: u32 = 4;

/// One finished read: the upstream, its stream back (`None`: the read was ended because the
/// listen it belonged to was replaced), and what was read.
struct Read {
    uid: u32,
    stream: Option<SseStream>,
    got: Result<Option<SseEvent>, UpError>,
}

type PendingRead = Pin<Box<dyn Future<Output = Read>>>;

/// Where the relay stands with one upstream.
enum State {
    /// A read is pending on its stream.
    Reading,
    /// Ended; reopened at this tick.
    ReopenAt(u32),
    /// The upstream offers no stream: not asked again.
    Refused,
}

/// The relays of one client stream.
#[derive(Default)]
pub(super) struct Relays {
    reads: Vec<PendingRead>,
    state: HashMap<u32, State>,
    /// Each 2026-07-28 upstream's listen: the upstream URIs it names, and the end of its read
    /// (a session that subscribes or unsubscribes gets a new listen instead).
    listening: HashMap<u32, (Vec<String>, AbortHandle)>,
}

/// The next read of `stream`; with `abort`, one that can be ended from outside.
fn read(uid: u32, mut stream: SseStream, abort: Option<AbortRegistration>) -> PendingRead {
    Box::pin(async move {
        let Some(reg) = abort else {
            let got = stream.next_event().await;
            return Read {
                uid,
                stream: Some(stream),
                got,
            };
        };
        let next = async move {
            let got = stream.next_event().await;
            (stream, got)
        };
        match Abortable::new(next, reg).await {
            Ok((stream, got)) => Read {
                uid,
                stream: Some(stream),
                got,
            },
            Err(_) => Read {
                uid,
                stream: None,
                got: Ok(None),
            },
        }
    })
}

/// Whose stream the relays feed, and so what is opened and what is told.
#[derive(Clone, Copy)]
pub(super) enum Mode<'a> {
    /// A 2025-xx session's GET stream.
    Session,
    /// A 2026-07-28 `subscriptions/listen` with resources granted.
    Subscription {
        id: &'a RawValue,
        resources: &'a [Subscribed],
    },
}

impl Relays {
    /// Open the upstream streams due at tick `tick`: in [`Mode::Session`], one per upstream
    /// session of `session` whose upstream is still in `snap` and a listen per 2026-07-28
    /// upstream the session holds subscriptions of; in [`Mode::Subscription`], one per
    /// upstream serving a granted resource (its session's GET stream, or a listen).
    pub(super) async fn open_due(
        &mut self,
        cx: &Cx<'_>,
        snap: &Snapshot,
        session: &Session,
        tick: u32,
        mode: Mode<'_>,
    ) {
        let shard = &**cx.shard;
        let listens = wanted_listens(snap, session, mode);
        // A listen whose URIs changed (or that is no longer wanted) ends; a new one is opened.
        let stale: Vec<u32> = (self.listening.iter())
            .filter(|(uid, (uris, _))| listens.get(uid) != Some(uris))
            .map(|(uid, _)| *uid)
            .collect();
        for uid in stale {
            if let Some((_, h)) = self.listening.remove(&uid) {
                h.abort();
            }
            self.state.remove(&uid);
        }
        let mut due: Vec<u32> = match mode {
            Mode::Session => (session.upstream_sessions.iter())
                .map(|e| *e.key())
                .collect(),
            Mode::Subscription { resources, .. } => (resources.iter())
                .filter_map(|r| snap.upstreams.get(r.upstream).map(|u| u.id))
                .collect(),
        };
        due.extend(listens.keys());
        due.sort_unstable();
        due.dedup();
        for uid in due {
            let due = match self.state.get(&uid) {
                None => true,
                Some(State::ReopenAt(t)) => *t <= tick,
                // A stream of a session since replaced (the upstream forgot it) ends by
                // itself, and is reopened in the new one.
                Some(State::Reading | State::Refused) => false,
            };
            let Some(up) = snap.upstreams.iter().find(|u| u.id == uid) else {
                continue;
            };
            if !due {
                continue;
            }
            let opened = match listens.get(&uid) {
                Some(uris) => listen_upstream(cx, up, uid, uris).await.map(|s| {
                    let (h, reg) = AbortHandle::new_pair();
                    self.listening.insert(uid, (uris.clone(), h));
                    (s, Some(reg))
                }),
                None => match session.upstream_sessions.get(&uid).map(|s| s.clone()) {
                    Some(us) if us.session_id.is_some() && !speaks_modern(snap, uid) => {
                        session_get(shard, up, &us).await.map(|s| (s, None))
                    }
                    _ => continue,
                },
            };
            let next = match opened {
                Ok((s, reg)) => {
                    self.reads.push(read(uid, s, reg));
                    State::Reading
                }
                // The session is being replaced, or the upstream is struggling: later.
                Err(Some(status)) if status == 404 || status >= 500 => {
                    State::ReopenAt(tick + REOPEN_TICKS)
                }
                Err(Some(_)) => State::Refused,
                Err(None) => State::ReopenAt(tick + REOPEN_TICKS),
            };
            self.state.insert(uid, next);
        }
    }

    /// Wait `d`, or less when an upstream event arrives first: that event's message for the
    /// client, if it is one to relay.
    pub(super) async fn wait(
        &mut self,
        d: Duration,
        shard: &Shard,
        snap: &Snapshot,
        session: &Session,
        tick: u32,
        mode: Mode<'_>,
    ) -> Option<Vec<u8>> {
        if self.reads.is_empty() {
            monoio::time::sleep(d).await;
            return None;
        }
        let reads = std::mem::take(&mut self.reads);
        let sleep = std::pin::pin!(monoio::time::sleep(d));
        let r = match select(sleep, select_all(reads)).await {
            Either::Left((_, pending)) => {
                self.reads = pending.into_inner();
                return None;
            }
            Either::Right(((r, _, rest), _)) => {
                self.reads = rest;
                r
            }
        };
        self.finished(r, shard, snap, session, tick, mode).await
    }

    /// Like [`Relays::wait`], for a 2024-11-05 stream, which also carries the answers posted
    /// to it (`rx`): whichever comes first.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn wait_or_answer(
        &mut self,
        d: Duration,
        rx: &mut UnboundedReceiver<Vec<u8>>,
        shard: &Shard,
        snap: &Snapshot,
        session: &Session,
        tick: u32,
    ) -> Woken {
        let reads = std::mem::take(&mut self.reads);
        let sleep = std::pin::pin!(monoio::time::sleep(d));
        let quick = select(sleep, rx.next());
        let answered = |a: Option<Vec<u8>>| a.map_or(Woken::Closed, Woken::Answer);
        if reads.is_empty() {
            return match quick.await {
                Either::Left(_) => Woken::Relayed(None),
                Either::Right((a, _)) => answered(a),
            };
        }
        match select(quick, select_all(reads)).await {
            Either::Left((q, pending)) => {
                self.reads = pending.into_inner();
                match q {
                    Either::Left(_) => Woken::Relayed(None),
                    Either::Right((a, _)) => answered(a),
                }
            }
            Either::Right(((r, _, rest), _)) => {
                self.reads = rest;
                Woken::Relayed(
                    self.finished(r, shard, snap, session, tick, Mode::Session)
                        .await,
                )
            }
        }
    }

    /// One finished read: read on (or mark the stream for reopening), and what to tell.
    async fn finished(
        &mut self,
        r: Read,
        shard: &Shard,
        snap: &Snapshot,
        session: &Session,
        tick: u32,
        mode: Mode<'_>,
    ) -> Option<Vec<u8>> {
        // Ended because its listen was replaced: the new one stands.
        let stream = r.stream?;
        let ev = match r.got {
            Ok(Some(ev)) => {
                let reg = self.listening.get_mut(&r.uid).map(|(_, h)| {
                    let (fresh, reg) = AbortHandle::new_pair();
                    *h = fresh;
                    reg
                });
                self.reads.push(read(r.uid, stream, reg));
                ev
            }
            Ok(None) | Err(_) => {
                self.listening.remove(&r.uid);
                self.state
                    .insert(r.uid, State::ReopenAt(tick + REOPEN_TICKS));
                return None;
            }
        };
        relayed(shard, snap, session, r.uid, ev, mode).await
    }
}

/// What a 2024-11-05 stream's wait ended with.
pub(super) enum Woken {
    /// An answer posted to the stream's channel.
    Answer(Vec<u8>),
    /// The channel closed.
    Closed,
    /// An upstream event (what to tell, if anything), or nothing within the wait.
    Relayed(Option<Vec<u8>>),
}

/// The 2026-07-28 upstreams to hold a listen with, and the upstream URIs each names (sorted):
/// a session's subscriptions, or a modern subscription's granted resources.
fn wanted_listens(snap: &Snapshot, session: &Session, mode: Mode<'_>) -> HashMap<u32, Vec<String>> {
    let mut by_upstream: HashMap<u32, Vec<String>> = HashMap::new();
    match mode {
        Mode::Session => {
            for e in session.modern_subscriptions.iter() {
                let (uid, theirs) = e.value();
                by_upstream.entry(*uid).or_default().push(theirs.clone());
            }
        }
        Mode::Subscription { resources, .. } => {
            for r in resources {
                if let Some(u) = snap.upstreams.get(r.upstream) {
                    by_upstream
                        .entry(u.id)
                        .or_default()
                        .push(r.upstream_uri.clone());
                }
            }
        }
    }
    by_upstream.retain(|uid, _| speaks_modern(snap, *uid));
    for uris in by_upstream.values_mut() {
        uris.sort_unstable();
        uris.dedup();
    }
    by_upstream
}

fn speaks_modern(snap: &Snapshot, uid: u32) -> bool {
    (snap.settings.upstream_protocols.get(&uid)).is_some_and(|v| super::era::is_modern(v))
}

/// The GET stream of the gateway's upstream session `us`; `Err(Some(status))` when the
/// upstream answered something else, `Err(None)` when it could not be asked.
async fn session_get(
    shard: &Shard,
    up: &Upstream,
    us: &UpstreamSession,
) -> Result<SseStream, Option<u16>> {
    let auth = session_auth(shard, up).await.map_err(|_| None)?;
    let mut h: Vec<(&str, &str)> = vec![
        ("accept", "text/event-stream"),
        ("mcp-protocol-version", us.protocol_version.as_str()),
    ];
    if let Some(sid) = &us.session_id {
        h.push(("mcp-session-id", sid.as_str()));
    }
    if let Some(a) = &auth {
        h.push(("authorization", a.expose().as_str()));
    }
    let sent = upstream::send(&shard.pool, up, "GET", &h, b"", up.timeout, Replay::Safe);
    stream_of(sent.await)
}

/// A `subscriptions/listen` of the gateway's own with a 2026-07-28 upstream, naming `uris`
/// (the upstream's own), with a delegation token for this user.
async fn listen_upstream(
    cx: &Cx<'_>,
    up: &Upstream,
    uid: u32,
    uris: &[String],
) -> Result<SseStream, Option<u16>> {
    let shard = &**cx.shard;
    let snap = &**cx.snap;
    let version = snap
        .settings
        .upstream_protocols
        .get(&uid)
        .map_or("", String::as_str);
    let caps = cx
        .modern
        .map_or_else(|| json!({}), |c| c.m.capabilities.clone());
    let body =
        json!({"jsonrpc": "2.0", "id": format!("warden-listen-{}", shard.next_upstream_id()),
        "method": "subscriptions/listen", "params": {
            "_meta": {era::META_VERSION: version, era::META_CAPABILITIES: caps,
                      era::META_CLIENT: {"name": "warden", "version": env!("CARGO_PKG_VERSION")}},
            "notifications": {"resourceSubscriptions": uris}}})
        .to_string();
    let call = delegate::for_call(cx, up, None, &mut None)
        .await
        .map_err(|_| None)?;
    let mut h: Vec<(&str, &str)> = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", version),
        ("mcp-method", "subscriptions/listen"),
    ];
    let auth = match &call.auth {
        Some(a) => Some(a.clone()),
        None => session_auth(shard, up).await.map_err(|_| None)?,
    };
    if let Some(a) = &auth {
        h.push(("authorization", a.expose().as_str()));
    }
    let sent = upstream::send(
        &shard.pool,
        up,
        "POST",
        &h,
        body.as_bytes(),
        up.timeout,
        Replay::Never,
    );
    stream_of(sent.await)
}

fn stream_of(r: Result<UpResponse, UpError>) -> Result<SseStream, Option<u16>> {
    match r {
        Ok(r) if r.status == 200 => match r.body {
            UpBody::Sse(s) => Ok(s),
            _ => Err(Some(r.status)),
        },
        Ok(r) => Err(Some(r.status)),
        Err(_) => Err(None),
    }
}

/// What the client is sent of one upstream event (`None`: nothing).
async fn relayed(
    shard: &Shard,
    snap: &Snapshot,
    session: &Session,
    uid: u32,
    ev: SseEvent,
    mode: Mode<'_>,
) -> Option<Vec<u8>> {
    let m = Message::parse(ev.data.as_bytes()).ok()?;
    let idx = snap.upstreams.iter().position(|u| u.id == uid)?;
    let up = &snap.upstreams[idx];
    let prefix = snap.items.uri_prefix(idx);
    let told = |body: Vec<u8>| {
        metrics::counter!("warden_streams_relayed_total", "upstream" => up.name.clone())
            .increment(1);
        Some(body)
    };
    match (m.method.as_deref(), m.id, mode) {
        (None, _, _) => None,
        (Some(_), Some(id), Mode::Session) => {
            let wrapped = rewrite::wrap_server_id(uid, id);
            told(rewrite::reframe(&m, Some(&wrapped), None))
        }
        (Some(_), Some(id), Mode::Subscription { .. }) => {
            forward::decline_server_request(shard, session, up, id).await;
            None
        }
        (method, None, _) if forward::announces_list_change(method) => {
            shard.shared.control.upstream_changed(uid);
            None
        }
        (
            Some("notifications/resources/updated" | "notifications/message"),
            None,
            Mode::Session,
        ) if speaks_modern(snap, uid) => {
            // From the gateway's own listen: its subscription id is not the client's.
            let mut v: Value =
                serde_json::from_slice(&items::outbound(prefix, ev.data.into_bytes())).ok()?;
            if let Some(p) = v.get_mut("params").and_then(Value::as_object_mut) {
                p.remove("_meta");
            }
            told(v.to_string().into_bytes())
        }
        (
            Some("notifications/resources/updated" | "notifications/message"),
            None,
            Mode::Session,
        ) => told(items::outbound(prefix, ev.data.into_bytes())),
        (Some("notifications/resources/updated"), None, Mode::Subscription { id, resources }) => {
            let mut v: Value =
                serde_json::from_slice(&items::outbound(prefix, ev.data.into_bytes())).ok()?;
            let uri = v.pointer("/params/uri").and_then(Value::as_str)?;
            if !resources.iter().any(|r| r.covers(uri)) {
                return None;
            }
            let params = v.get_mut("params")?.as_object_mut()?;
            params.insert(
                "_meta".into(),
                json!({ super::stream::META_SUBSCRIPTION: id }),
            );
            told(v.to_string().into_bytes())
        }
        (Some(_), None, _) => None,
    }
}
