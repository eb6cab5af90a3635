//! Server→client streams: a 2025-xx session's GET stream and a 2026-07-28
//! `subscriptions/listen` stream. Both tell a client when the list of tools it may call
//! changes — after a policy reload, or after an upstream's list changed and the control plane
//! published the rediscovered catalog — and nothing it did not ask for.
//!
//! A stream is bound to the caller who opened it and ends when the caller's token expires,
//! when its session ends (DELETE, on any replica), or when the gateway drains (a
//! subscription then gets its graceful final result). Changes are found by reading the
//! snapshot generation every [`TICK`] (a shard-local atomic load); the caller's visible list
//! is fingerprinted only when the generation moved, so an idle stream costs a timer.
//!
//! Resumption (2025-xx, `Last-Event-ID`): each event id is `<session tag>-<fingerprint>`; a
//! client that reconnects with an id of its own session whose fingerprint is not the current
//! one is told of the change at once. An id of another session is ignored. The revision
//! 2026-07-28 has no resumption: a new `subscriptions/listen` starts afresh.

use std::sync::atomic::Ordering;
use std::time::Duration;

use monoio::io::AsyncWriteRent;
use serde_json::json;
use serde_json::value::RawValue;

use super::authz::{self, Who};
use super::http;
use super::vocab::Cx;
use crate::http1::conn::Responder;
use crate::session::Session;
use crate::shard::Shard;
use crate::snapshot::Snapshot;

/// How often a stream looks for a new snapshot.
pub const TICK: Duration = Duration::from_millis(250);
/// A comment after this long without an event: proxies keep the stream, and a client that
/// went away is noticed.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often a session stream checks that its session still stands.
const SESSION_CHECK_TICKS: u32 = 4;

/// `_meta` key tagging every message of a subscription.
pub const META_SUBSCRIPTION: &str = "io.modelcontextprotocol/subscriptionId";

/// Why a stream ended (for the log and the metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    ClientGone,
    TokenExpired,
    SessionEnded,
    Draining,
}

impl End {
    fn label(self) -> &'static str {
        match self {
            End::ClientGone => "client_gone",
            End::TokenExpired => "token_expired",
            End::SessionEnded => "session_ended",
            End::Draining => "draining",
        }
    }
}

/// How a stream frames what it tells.
pub(super) enum Framing<'a> {
    /// A 2025-xx session's GET stream: events carry ids for `Last-Event-ID`.
    Session { tag: String, id: &'a str },
    /// A 2026-07-28 subscription: every message carries its id in `_meta`.
    Subscription { id: &'a RawValue, tools: bool },
}

impl Framing<'_> {
    /// The event telling the client its tools changed (`None`: it did not ask).
    fn tools_changed(&self, fp: &[u8; 32]) -> Option<Vec<u8>> {
        match self {
            Framing::Session { tag, .. } => Some(event(
                Some(&event_id(tag, fp)),
                br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#,
            )),
            Framing::Subscription { tools: false, .. } => None,
            Framing::Subscription { id, .. } => {
                let m = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed",
                    "params": {"_meta": {META_SUBSCRIPTION: id}}});
                Some(event(None, m.to_string().as_bytes()))
            }
        }
    }
}

/// The session tag of event ids: a short hash, never the session id.
pub(super) fn session_tag(session: &Session) -> String {
    crate::audit::hex(&session.id_hash[..6])
}

fn event_id(tag: &str, fp: &[u8; 32]) -> String {
    format!("{tag}-{}", crate::audit::hex(&fp[..8]))
}

/// One SSE event (`id` optional).
fn event(id: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 48);
    if let Some(i) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(i.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    out
}

/// The fingerprint of the tools `who` may see in `snap`, in list order with their
/// definitions: it changes exactly when this caller's `tools/list` would.
pub(super) fn tools_fingerprint(shard: &Shard, snap: &Snapshot, who: &Who<'_>) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for name in &snap.tools.order {
        if let Some(r) = snap.tools.routes.get(name)
            && authz::visible(shard, snap, who, name)
        {
            ctx.update(name.as_bytes());
            ctx.update(&[0]);
            ctx.update(r.definition.get().as_bytes());
            ctx.update(&[0]);
        }
    }
    let mut fp = [0u8; 32];
    fp.copy_from_slice(ctx.finish().as_ref());
    fp
}

/// A 2025-xx session's GET stream, until it ends. Returns the status sent (200).
pub(super) async fn session_stream<S: AsyncWriteRent>(
    cx: &Cx<'_>,
    session: &Session,
    session_id: &str,
    last_event_id: Option<&str>,
    out: &mut Responder<'_, S>,
) -> u16 {
    let who = Who {
        caller: cx.caller,
        session,
        session_hash: cx.meta.session.as_deref(),
    };
    let snap = cx.shard.shared.snapshot.load_full();
    let fp = tools_fingerprint(cx.shard, &snap, &who);
    let tag = session_tag(session);
    if out
        .start_stream(200, &http::sse_headers(cx.cors))
        .await
        .is_err()
    {
        return 200;
    }
    // A reconnect of this session that missed a change hears of it now; otherwise the
    // priming event gives the client an id to resume from.
    let missed = last_event_id
        .and_then(|l| l.trim().strip_prefix(tag.as_str()))
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|seen| seen != crate::audit::hex(&fp[..8]));
    let first = event(Some(&event_id(&tag, &fp)), b"");
    let framing = Framing::Session {
        tag,
        id: session_id,
    };
    let first = match missed {
        true => framing.tools_changed(&fp).unwrap_or(first),
        false => first,
    };
    if out.send_chunk(&first).await.is_err() {
        return 200;
    }
    metrics::gauge!("warden_streams_open", "kind" => "session").increment(1.0);
    let end = run(cx, &who, &framing, snap.generation, fp, out).await;
    metrics::gauge!("warden_streams_open", "kind" => "session").decrement(1.0);
    metrics::counter!("warden_streams_ended_total", "kind" => "session", "why" => end.label())
        .increment(1);
    let _ = out.end_stream().await;
    200
}

/// A 2026-07-28 `subscriptions/listen`, until it ends: the acknowledgment first (naming
/// what is honoured: `toolsListChanged`), then the changes asked for.
pub(super) async fn listen<S: AsyncWriteRent>(
    cx: &Cx<'_>,
    session: &Session,
    id: &RawValue,
    wants_tools: bool,
    out: &mut Responder<'_, S>,
) -> u16 {
    let who = Who {
        caller: cx.caller,
        session,
        session_hash: None,
    };
    let snap = cx.shard.shared.snapshot.load_full();
    let fp = tools_fingerprint(cx.shard, &snap, &who);
    let mut honoured = serde_json::Map::new();
    if wants_tools {
        honoured.insert("toolsListChanged".into(), json!(true));
    }
    let ack = json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
        "params": {"_meta": {META_SUBSCRIPTION: id}, "notifications": honoured}});
    if out
        .start_stream(200, &http::sse_headers(cx.cors))
        .await
        .is_err()
        || out
            .send_chunk(&event(None, ack.to_string().as_bytes()))
            .await
            .is_err()
    {
        return 200;
    }
    let framing = Framing::Subscription {
        id,
        tools: wants_tools,
    };
    metrics::gauge!("warden_streams_open", "kind" => "subscription").increment(1.0);
    let end = run(cx, &who, &framing, snap.generation, fp, out).await;
    metrics::gauge!("warden_streams_open", "kind" => "subscription").decrement(1.0);
    metrics::counter!("warden_streams_ended_total", "kind" => "subscription", "why" => end.label())
        .increment(1);
    if end == End::Draining {
        // A graceful end: the response to the long-lived request.
        let done = json!({"jsonrpc": "2.0", "id": id,
            "result": {"resultType": "complete", "_meta": {META_SUBSCRIPTION: id}}});
        let _ = out
            .send_chunk(&event(None, done.to_string().as_bytes()))
            .await;
    }
    let _ = out.end_stream().await;
    200
}

/// The loop both streams share: watch the snapshot, tell changes, keep the stream alive,
/// and end it when the caller, its session or the gateway is done.
async fn run<S: AsyncWriteRent>(
    cx: &Cx<'_>,
    who: &Who<'_>,
    framing: &Framing<'_>,
    mut generation: u64,
    mut fp: [u8; 32],
    out: &mut Responder<'_, S>,
) -> End {
    let shard = cx.shard;
    let exp = cx.caller.claims.as_ref().map(|c| c.exp);
    let mut quiet = Duration::ZERO;
    let mut ticks: u32 = 0;
    loop {
        monoio::time::sleep(TICK).await;
        quiet += TICK;
        ticks = ticks.wrapping_add(1);
        if shard.shared.stopping.load(Ordering::Relaxed) {
            return End::Draining;
        }
        let now = shard.clock.unix_secs();
        if exp.is_some_and(|e| now >= e) {
            return End::TokenExpired;
        }
        let snap = shard.shared.snapshot.load_full();
        if let Framing::Session { id, .. } = framing
            && ticks.is_multiple_of(SESSION_CHECK_TICKS)
        {
            let st = &snap.settings;
            let alive = (shard.shared.sessions)
                .get(&st.session_keys, id, &cx.caller.owner, now, st.session_life)
                .is_ok();
            if !alive {
                return End::SessionEnded;
            }
        }
        if snap.generation != generation {
            generation = snap.generation;
            let now_fp = tools_fingerprint(shard, &snap, who);
            if now_fp != fp {
                fp = now_fp;
                if let Some(ev) = framing.tools_changed(&fp) {
                    if out.send_chunk(&ev).await.is_err() {
                        return End::ClientGone;
                    }
                    quiet = Duration::ZERO;
                }
            }
        }
        if quiet >= KEEP_ALIVE {
            if out.send_chunk(b": keep-alive\n\n").await.is_err() {
                return End::ClientGone;
            }
            quiet = Duration::ZERO;
        }
    }
}
