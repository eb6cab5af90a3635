//! Upstream messages outside a call, relayed on a 2025-xx session's GET stream: for each
//! upstream session the gateway holds for that client session, the upstream's own GET stream
//! is read, and its `notifications/resources/updated` (the resources this client subscribed
//! to in that session) and `notifications/message` (log messages) reach the client with
//! URIs in the gateway's naming (`items::outbound`). An upstream's list change is reported to
//! the control plane (rediscovery; the client stream tells what changed in the gateway's
//! names), never relayed in the upstream's names. Its requests (`sampling/createMessage`,
//! `elicitation/create`, `roots/list`, `ping`, …) reach the client with the id made unique
//! across upstreams (`rewrite::wrap_server_id`), exactly as during a call: the answer the
//! client posts in its session goes back to that upstream session with the upstream's own id
//! (`notes::client_response`), so it can only reach an upstream session of the same client
//! session, and so of the same user. Anything else is dropped.
//!
//! Every read owns its `SseStream` and hands it back with the event, so waiting for the next
//! event beside the stream's timer never drops a read half done. An upstream stream that ends
//! (or reaches its request deadline) is reopened after [`REOPEN_TICKS`]; one the upstream
//! refuses (HTTP 405, or any other non-stream answer) is not asked for again by this stream.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::future::{Either, select, select_all};

use super::delegate::session_auth;
use super::forward;
use super::{items, rewrite};
use crate::jsonrpc::Message;
use crate::session::Session;
use crate::shard::Shard;
use crate::snapshot::Snapshot;
use crate::upstream::{self, Replay, SseEvent, SseStream, UpBody, UpError};

/// Stream ticks before an ended upstream stream is reopened.
pub(super) const REOPEN_TICKS: u32 = 4;

/// One finished read: the upstream, its stream back, and what was read.
struct Read {
    uid: u32,
    stream: SseStream,
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
}

fn read(uid: u32, mut stream: SseStream) -> PendingRead {
    Box::pin(async move {
        let got = stream.next_event().await;
        Read { uid, stream, got }
    })
}

impl Relays {
    /// Open the upstream streams due at tick `tick`: one per upstream session of `session`
    /// whose upstream is still in `snap`.
    pub(super) async fn open_due(
        &mut self,
        shard: &Shard,
        snap: &Snapshot,
        session: &Session,
        tick: u32,
    ) {
        let held: Vec<(u32, crate::session::UpstreamSession)> = (session.upstream_sessions)
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        for (uid, us) in held {
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
            if !due || us.session_id.is_none() {
                continue;
            }
            let Ok(auth) = session_auth(shard, up).await else {
                self.state.insert(uid, State::ReopenAt(tick + REOPEN_TICKS));
                continue;
            };
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
            match sent.await {
                Ok(r) if r.status == 200 && matches!(r.body, UpBody::Sse(_)) => {
                    if let UpBody::Sse(s) = r.body {
                        self.reads.push(read(uid, s));
                        self.state.insert(uid, State::Reading);
                    }
                }
                // The session is being replaced, or the upstream is struggling: later.
                Ok(r) if r.status == 404 || r.status >= 500 => {
                    self.state.insert(uid, State::ReopenAt(tick + REOPEN_TICKS));
                }
                Ok(_) => {
                    self.state.insert(uid, State::Refused);
                }
                Err(_) => {
                    self.state.insert(uid, State::ReopenAt(tick + REOPEN_TICKS));
                }
            }
        }
    }

    /// Wait `d`, or less when an upstream event arrives first: that event's message for the
    /// client, if it is one to relay.
    pub(super) async fn wait(
        &mut self,
        d: Duration,
        shard: &Shard,
        snap: &Snapshot,
        tick: u32,
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
        let ev = match r.got {
            Ok(Some(ev)) => {
                self.reads.push(read(r.uid, r.stream));
                ev
            }
            Ok(None) | Err(_) => {
                self.state
                    .insert(r.uid, State::ReopenAt(tick + REOPEN_TICKS));
                return None;
            }
        };
        relayed(shard, snap, r.uid, ev)
    }
}

/// What the client is sent of one upstream event (`None`: nothing).
fn relayed(shard: &Shard, snap: &Snapshot, uid: u32, ev: SseEvent) -> Option<Vec<u8>> {
    let m = Message::parse(ev.data.as_bytes()).ok()?;
    let idx = snap.upstreams.iter().position(|u| u.id == uid)?;
    let up = &snap.upstreams[idx];
    match (m.method.as_deref(), m.id) {
        (None, _) => None,
        (Some(_), Some(id)) => {
            let wrapped = rewrite::wrap_server_id(uid, id);
            metrics::counter!("warden_streams_relayed_total", "upstream" => up.name.clone())
                .increment(1);
            Some(rewrite::reframe(&m, Some(&wrapped), None))
        }
        (method, None) if forward::announces_list_change(method) => {
            shard.shared.control.upstream_changed(uid);
            None
        }
        (Some("notifications/resources/updated" | "notifications/message"), None) => {
            let prefix = snap.items.uri_prefix(idx);
            metrics::counter!("warden_streams_relayed_total", "upstream" => up.name.clone())
                .increment(1);
            Some(items::outbound(prefix, ev.data.into_bytes()))
        }
        (Some(_), None) => None,
    }
}
