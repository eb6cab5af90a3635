//! The 2024-11-05 HTTP+SSE transport, for clients older than Streamable HTTP (on when
//! `gateway.legacy_sse_transport` is set; `warden demo` sets it). `GET /sse` opens the event
//! stream, after authentication, and names where to post (`event: endpoint`,
//! `/messages?sessionId=…`); each message posted there is answered `202 Accepted` and its
//! answer arrives on the stream as `event: message`.
//!
//! A posted message takes the same steps as one on the MCP endpoint: `initialize` opens a
//! session (held by the stream), and every request is routed, decided by policy, delegated,
//! forwarded and audited exactly as on `/mcp` (its answer is collected, then sent on the
//! stream). The stream is bound to the user who opened it: another user's post to its id is
//! answered 404, like an unknown id. Once its session is open the stream also carries what a
//! 2025 session's GET stream does: list changes as this caller may see them
//! (`stream::LegacyWatch`) and its upstream sessions' messages outside a call
//! (`stream_relay.rs`). Closing the stream ends the session. The channel lives
//! in this process: behind a balancer, both requests of one client must reach the same
//! replica (as the transport has always required).

use std::sync::atomic::Ordering;
use std::time::Duration;

use std::sync::Arc;

use futures_channel::mpsc::UnboundedReceiver;
use futures_util::StreamExt;
use monoio::io::AsyncWriteRent;

use super::authz::Who;
use super::pipeline::{Gateway, send};
use super::refusal::Refusal;
use super::stream::{KEEP_ALIVE, LegacyWatch, TICK};
use super::stream_relay::{Mode, Relays, Woken};
use super::vocab::Cx;
use super::{admit, forward, http, sessions};
use crate::http1::Response;
use crate::http1::conn::{Request, Responder};
use crate::jsonrpc::{Invalid, Kind, Message};
use crate::session::{LegacyChannel, Session};

/// Where the stream is opened.
pub const SSE_PATH: &str = "/sse";
/// Where messages are posted (with `?sessionId=`).
pub const MESSAGES_PATH: &str = "/messages";

/// `GET /sse`: the stream, until the client leaves, its token expires or the gateway drains.
pub(super) async fn open<S: AsyncWriteRent>(cx: &Cx<'_>, out: &mut Responder<'_, S>) -> u16 {
    let Some(id) = channel_id() else {
        let r = Refusal::session_not_created();
        r.count();
        return send(out, r.response(&cx.snap.settings, None), cx.cors).await;
    };
    let (tx, mut rx) = futures_channel::mpsc::unbounded::<Vec<u8>>();
    let store = &cx.shard.shared.sessions;
    store.legacy.insert(
        id.clone(),
        LegacyChannel {
            owner: cx.caller.owner,
            tx,
            session_id: None,
        },
    );
    let headers = http::sse_headers(cx.cors);
    let endpoint = format!("event: endpoint\ndata: {MESSAGES_PATH}?sessionId={id}\n\n");
    let opened = out.start_stream(200, &headers).await.is_ok()
        && out.send_chunk(endpoint.as_bytes()).await.is_ok();
    metrics::gauge!("warden_streams_open", "kind" => "legacy_sse").increment(1.0);
    if opened {
        carry(cx, &id, &mut rx, out).await;
    }
    metrics::gauge!("warden_streams_open", "kind" => "legacy_sse").decrement(1.0);
    // The stream was the session: both end here.
    if let Some((_, ch)) = store.legacy.remove(&id)
        && let Some(sid) = ch.session_id
    {
        let st = &cx.snap.settings;
        let now = cx.shard.clock.unix_secs();
        if let Ok((session, _, _)) = store.remove(
            &st.session_keys,
            &sid,
            &cx.caller.owner,
            now,
            st.session_life,
        ) {
            forward::close_upstream_sessions(cx.shard, cx.snap, &session).await;
        }
    }
    let _ = out.end_stream().await;
    200
}

/// The open stream until it ends (the client left, its token expired, or the gateway
/// drains): the answers posted to it and, once its session is open, what its other
/// streams would tell — list changes as this caller may see them, and its upstream sessions'
/// messages outside a call (`stream_relay.rs`).
async fn carry<S: AsyncWriteRent>(
    cx: &Cx<'_>,
    id: &str,
    rx: &mut UnboundedReceiver<Vec<u8>>,
    out: &mut Responder<'_, S>,
) {
    let shard = &**cx.shard;
    let exp = cx.caller.claims.as_ref().map(|c| c.exp);
    let mut quiet = Duration::ZERO;
    let mut ticks: u32 = 0;
    let mut watched: Option<(Arc<Session>, LegacyWatch)> = None;
    let mut relays = Relays::default();
    let mut ev = Vec::new();
    loop {
        if shard.shared.stopping.load(Ordering::Relaxed)
            || exp.is_some_and(|e| shard.clock.unix_secs() >= e)
        {
            return;
        }
        let snap = shard.shared.snapshot.load_full();
        let woken = match &watched {
            Some((session, _)) => {
                (relays.wait_or_answer(TICK, rx, shard, &snap, session, ticks)).await
            }
            None => match monoio::time::timeout(TICK, rx.next()).await {
                Ok(Some(msg)) => Woken::Answer(msg),
                Ok(None) => Woken::Closed,
                Err(_) => Woken::Relayed(None),
            },
        };
        match woken {
            Woken::Answer(msg) | Woken::Relayed(Some(msg)) => {
                forward::write_event(&mut ev, None, &msg);
                if out.send_chunk(&ev).await.is_err() {
                    return;
                }
                quiet = Duration::ZERO;
            }
            Woken::Closed => return,
            Woken::Relayed(None) => quiet += TICK,
        }
        ticks = ticks.wrapping_add(1);
        if watched.is_none() {
            watched = session_of(cx, id).map(|s| {
                let who = who(cx, &s);
                let w = LegacyWatch::new(shard, &snap, &who);
                (s, w)
            });
        }
        if let Some((session, watch)) = &mut watched {
            let who = who(cx, session);
            match watch.tell_changes(shard, &snap, &who, out).await {
                Err(()) => return,
                Ok(true) => quiet = Duration::ZERO,
                Ok(false) => {}
            }
            relays
                .open_due(cx, &snap, session, ticks, Mode::Session)
                .await;
        }
        if quiet >= KEEP_ALIVE {
            if out.send_chunk(b": keep-alive\n\n").await.is_err() {
                return;
            }
            quiet = Duration::ZERO;
        }
    }
}

fn who<'a>(cx: &Cx<'a>, session: &'a Session) -> Who<'a> {
    Who {
        caller: cx.caller,
        session,
        session_hash: None,
    }
}

/// The session the stream's `initialize` opened, once it has.
fn session_of(cx: &Cx<'_>, id: &str) -> Option<Arc<Session>> {
    let store = &cx.shard.shared.sessions;
    let sid = store.legacy.get(id)?.session_id.clone()?;
    let st = &cx.snap.settings;
    let now = cx.shard.clock.unix_secs();
    (store.get(
        &st.session_keys,
        &sid,
        &cx.caller.owner,
        now,
        st.session_life,
    ))
    .ok()
}

/// `POST /messages?sessionId=…`: one message, answered on its stream; `202` here.
pub(super) async fn message<S: AsyncWriteRent>(
    gw: &Gateway,
    cx: &Cx<'_>,
    req: &Request,
    out: &mut Responder<'_, S>,
) -> Result<u16, Refusal> {
    let id = query_param(req.head.query.as_deref().unwrap_or(""), "sessionId")
        .ok_or_else(|| Refusal::session_unknown("sessionId query parameter required"))?;
    let store = &cx.shard.shared.sessions;
    // Another user's channel is answered as an unknown one.
    let (tx, sid) = match store.legacy.get(&id) {
        Some(ch) if ch.owner == cx.caller.owner => (ch.tx.clone(), ch.session_id.clone()),
        _ => return Err(Refusal::session_unknown("unknown or ended SSE session")),
    };
    admit::post_headers(req)?;
    let msg = match Message::parse(&req.body) {
        Ok(m) => m,
        Err(Invalid::Parse) => return Err(Refusal::parse_error()),
        Err(_) => return Err(Refusal::invalid_request("Invalid Request")),
    };
    let answer = if msg.method.as_deref() == Some("initialize") {
        if msg.kind() != Kind::Request {
            return Err(Refusal::invalid_request("initialize must be a request"));
        }
        let resp = sessions::initialize(cx, &msg)?;
        let opened = (resp.headers.iter())
            .find(|(k, _)| k.eq_ignore_ascii_case("mcp-session-id"))
            .map(|(_, v)| v.clone());
        if let Some(mut ch) = store.legacy.get_mut(&id) {
            ch.session_id = opened;
        }
        Some(resp.body)
    } else {
        let sid = sid.ok_or_else(|| Refusal::session_unknown("initialize first"))?;
        let st = &cx.snap.settings;
        let now = cx.shard.clock.unix_secs();
        let session = store
            .get(
                &st.session_keys,
                &sid,
                &cx.caller.owner,
                now,
                st.session_life,
            )
            .map_err(|_| Refusal::session_unknown("unknown or ended session"))?;
        if msg.kind() == Kind::Request {
            Some(match gw.request::<S>(cx, &session, &msg, None).await {
                Ok(body) => body.unwrap_or_default(),
                Err(r) => r.body(msg.id),
            })
        } else {
            gw.deliver(cx, &session, &msg).await;
            None
        }
    };
    if let Some(body) = answer.filter(|b| !b.is_empty()) {
        // The stream went away: the client will not read this answer (the call was made).
        let _ = tx.unbounded_send(body);
    }
    Ok(send(out, Response::new(202), cx.cors).await)
}

/// A fresh, unguessable channel id.
fn channel_id() -> Option<String> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).ok()?;
    Some(crate::audit::hex(&b))
}

/// One query parameter (ids are hex: no decoding needed, anything else refused).
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
}

/// Whether `path` is one of this transport's.
pub(super) fn route(path: &str) -> Option<LegacyPath> {
    match path {
        SSE_PATH => Some(LegacyPath::Stream),
        MESSAGES_PATH => Some(LegacyPath::Messages),
        _ => None,
    }
}

/// The transport's two endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LegacyPath {
    Stream,
    Messages,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_hex_session_id_is_taken() {
        assert_eq!(
            query_param("sessionId=ab12", "sessionId").as_deref(),
            Some("ab12")
        );
        assert_eq!(
            query_param("x=1&sessionId=ff", "sessionId").as_deref(),
            Some("ff")
        );
        assert_eq!(query_param("sessionId=", "sessionId"), None);
        assert_eq!(query_param("sessionId=a%20b", "sessionId"), None);
        assert_eq!(query_param("sessionId=zz", "sessionId"), None);
        assert_eq!(query_param("other=ab", "sessionId"), None);
        assert_eq!(route("/sse"), Some(LegacyPath::Stream));
        assert_eq!(route("/messages"), Some(LegacyPath::Messages));
        assert_eq!(route("/mcp"), None);
    }
}
