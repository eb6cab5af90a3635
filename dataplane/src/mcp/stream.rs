//! Server→client streams: a 2025-xx session's GET stream and a 2026-07-28
//! `subscriptions/listen` stream. Both tell a client when the list of tools, prompts or
//! resources it may use changes — after a policy reload, or after an upstream's list changed
//! and the control plane published the rediscovered catalog — and nothing it did not ask for.
//! A session's GET stream also carries its upstream sessions' resource updates and log
//! messages outside a call (`stream_relay.rs`).
//!
//! A stream is bound to the caller who opened it and ends when the caller's token expires,
//! when its session ends (DELETE, on any replica), or when the gateway drains (a
//! subscription then gets its graceful final result). Changes are found by reading the
//! snapshot generation every [`TICK`] (a shard-local atomic load); the caller's visible lists
//! are fingerprinted only when the generation moved, so an idle stream costs a timer.
//!
//! Resumption (2025-xx, `Last-Event-ID`): each event id is
//! `<session tag>-<tools>-<prompts>-<resources>` (fingerprint prefixes of what the client has
//! been told); a client that reconnects with an id of its own session is told at once of
//! each list whose fingerprint is not the current one. An id of another session is ignored.
//! The revision 2026-07-28 has no resumption: a new `subscriptions/listen` starts afresh.

use std::sync::atomic::Ordering;
use std::time::Duration;

use monoio::io::AsyncWriteRent;
use serde_json::json;
use serde_json::value::RawValue;

use warden_policy::Action;

use super::authz::{self, Who};
use super::http;
use super::stream_relay::{self, Mode};
use super::subscribe::Subscribed;
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

/// The lists a stream watches, each told by its own `notifications/<list>/list_changed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum List {
    Tools,
    Prompts,
    /// Resources and resource templates (one notification covers both).
    Resources,
}

impl List {
    /// Every list, in the order of [`Prints`].
    pub(super) const ALL: [List; 3] = [List::Tools, List::Prompts, List::Resources];

    fn method(self) -> &'static str {
        match self {
            List::Tools => "notifications/tools/list_changed",
            List::Prompts => "notifications/prompts/list_changed",
            List::Resources => "notifications/resources/list_changed",
        }
    }

    /// The `subscriptions/listen` filter key (and acknowledgment key) asking for it.
    pub(super) fn filter_key(self) -> &'static str {
        match self {
            List::Tools => "toolsListChanged",
            List::Prompts => "promptsListChanged",
            List::Resources => "resourcesListChanged",
        }
    }
}

/// What the client was last told of each list (in [`List::ALL`] order): the hex prefix of
/// the list's fingerprint, as it stands in event ids.
type Told = [String; 3];

/// How a stream frames what it tells.
pub(super) enum Framing<'a> {
    /// A 2025-xx session's GET stream: events carry ids for `Last-Event-ID`.
    Session { tag: String, id: &'a str },
    /// A 2026-07-28 subscription: every message carries its id in `_meta`; `wants` says
    /// which lists it asked for (in [`List::ALL`] order), `resources` which resources it
    /// was granted (`subscribe.rs`).
    Subscription {
        id: &'a RawValue,
        wants: [bool; 3],
        resources: &'a [Subscribed],
    },
    /// A 2024-11-05 HTTP+SSE stream: `event: message`, no ids (no resumption).
    Legacy,
}

impl Framing<'_> {
    /// The event telling the client `list` changed, now that `told` is what it knows
    /// (`None`: it did not ask).
    fn changed(&self, list: List, told: &Told) -> Option<Vec<u8>> {
        match self {
            Framing::Session { tag, .. } => {
                let m = format!(r#"{{"jsonrpc":"2.0","method":"{}"}}"#, list.method());
                Some(event(Some(&event_id(tag, told)), m.as_bytes()))
            }
            Framing::Legacy => {
                let m = format!(r#"{{"jsonrpc":"2.0","method":"{}"}}"#, list.method());
                let mut ev = Vec::with_capacity(m.len() + 24);
                super::forward::write_event(&mut ev, None, m.as_bytes());
                Some(ev)
            }
            Framing::Subscription { id, wants, .. } => {
                let i = List::ALL.iter().position(|l| *l == list)?;
                if !wants[i] {
                    return None;
                }
                let m = json!({"jsonrpc": "2.0", "method": list.method(),
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

/// `<session tag>-<tools>-<prompts>-<resources>`: what the client knows of each list.
fn event_id(tag: &str, told: &Told) -> String {
    format!("{tag}-{}-{}-{}", told[0], told[1], told[2])
}

/// Which lists a reconnect with `last` (an event id of this session, else ignored) missed a
/// change of, and what it knew of each. An id of the earlier `<tag>-<tools>` form speaks of
/// the tools only.
fn resumed(last: Option<&str>, tag: &str, now: &Told) -> Told {
    let mut knew = now.clone();
    let Some(rest) = last
        .and_then(|l| l.trim().strip_prefix(tag))
        .and_then(|r| r.strip_prefix('-'))
    else {
        return knew;
    };
    let parts: Vec<&str> = rest.split('-').collect();
    match parts.as_slice() {
        [t, p, r] => knew = [(*t).to_owned(), (*p).to_owned(), (*r).to_owned()],
        [t] => knew[0] = (*t).to_owned(),
        _ => {}
    }
    knew
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
    digest(ctx)
}

/// The fingerprint of the prompts `who` may see: changes exactly when its `prompts/list` would.
fn prompts_fingerprint(shard: &Shard, snap: &Snapshot, who: &Who<'_>) -> [u8; 32] {
    let t = &snap.items;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for name in &t.prompt_order {
        if let Some(r) = t.prompts.get(name)
            && authz::visible_item(shard, snap, who, Action::GetPrompt, r.upstream, name)
        {
            ctx.update(r.definition.get().as_bytes());
            ctx.update(&[0]);
        }
    }
    digest(ctx)
}

/// The fingerprint of the resources and templates `who` may see: changes exactly when its
/// `resources/list` or `resources/templates/list` would.
fn resources_fingerprint(shard: &Shard, snap: &Snapshot, who: &Who<'_>) -> [u8; 32] {
    let t = &snap.items;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for (list, sep) in [(&t.resources, 1u8), (&t.templates, 2u8)] {
        ctx.update(&[sep]);
        for r in list {
            if authz::visible_item(shard, snap, who, Action::ReadResource, r.upstream, &r.uri) {
                ctx.update(r.definition.get().as_bytes());
                ctx.update(&[0]);
            }
        }
    }
    digest(ctx)
}

fn digest(ctx: aws_lc_rs::digest::Context) -> [u8; 32] {
    let mut fp = [0u8; 32];
    fp.copy_from_slice(ctx.finish().as_ref());
    fp
}

/// What `who` may see of each list in `snap`, as event ids carry it.
fn seen_now(shard: &Shard, snap: &Snapshot, who: &Who<'_>) -> Told {
    let hex = |fp: [u8; 32]| crate::audit::hex(&fp[..8]);
    [
        hex(tools_fingerprint(shard, snap, who)),
        hex(prompts_fingerprint(shard, snap, who)),
        hex(resources_fingerprint(shard, snap, who)),
    ]
}

/// Tell every list of `now` that differs from `told` (updating `told` as each is told, so
/// each event's id says exactly what the client knows after it). `Err`: the client is gone.
async fn tell<S: AsyncWriteRent>(
    framing: &Framing<'_>,
    told: &mut Told,
    now: &Told,
    out: &mut Responder<'_, S>,
) -> Result<bool, ()> {
    let mut sent = false;
    for (i, list) in List::ALL.into_iter().enumerate() {
        if told[i] == now[i] {
            continue;
        }
        told[i] = now[i].clone();
        if let Some(ev) = framing.changed(list, told) {
            out.send_chunk(&ev).await.map_err(|_| ())?;
            sent = true;
        }
    }
    Ok(sent)
}

/// What a 2024-11-05 HTTP+SSE stream has told its session of each list (`sse_legacy.rs`):
/// the same fingerprints as the other streams, told as `event: message`.
pub(super) struct LegacyWatch {
    generation: u64,
    told: Told,
}

impl LegacyWatch {
    /// What `who` may see now: nothing to tell yet.
    pub(super) fn new(shard: &Shard, snap: &Snapshot, who: &Who<'_>) -> LegacyWatch {
        LegacyWatch {
            generation: snap.generation,
            told: seen_now(shard, snap, who),
        }
    }

    /// Tell each list that changed for `who` since the last snapshot seen; `Ok(true)` when
    /// something was told, `Err` when the client is gone.
    pub(super) async fn tell_changes<S: AsyncWriteRent>(
        &mut self,
        shard: &Shard,
        snap: &Snapshot,
        who: &Who<'_>,
        out: &mut Responder<'_, S>,
    ) -> Result<bool, ()> {
        if snap.generation == self.generation {
            return Ok(false);
        }
        self.generation = snap.generation;
        let now = seen_now(shard, snap, who);
        tell(&Framing::Legacy, &mut self.told, &now, out).await
    }
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
        session_hash: cx.meta.session(),
    };
    let snap = cx.shard.shared.snapshot.load_full();
    let now = seen_now(cx.shard, &snap, &who);
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
    let mut knew = resumed(last_event_id, &tag, &now);
    let framing = Framing::Session {
        tag,
        id: session_id,
    };
    match tell(&framing, &mut knew, &now, out).await {
        Err(()) => return 200,
        Ok(true) => {}
        Ok(false) => {
            let Framing::Session { tag, .. } = &framing else {
                return 200;
            };
            if out
                .send_chunk(&event(Some(&event_id(tag, &now)), b""))
                .await
                .is_err()
            {
                return 200;
            }
        }
    }
    metrics::gauge!("warden_streams_open", "kind" => "session").increment(1.0);
    let end = run(cx, &who, &framing, snap.generation, now, out).await;
    metrics::gauge!("warden_streams_open", "kind" => "session").decrement(1.0);
    metrics::counter!("warden_streams_ended_total", "kind" => "session", "why" => end.label())
        .increment(1);
    let _ = out.end_stream().await;
    200
}

/// A 2026-07-28 `subscriptions/listen`, until it ends: the acknowledgment first (naming
/// what is honoured of what it asked: `toolsListChanged`, `promptsListChanged`,
/// `resourcesListChanged`, in `wants` in [`List::ALL`] order, and of the
/// `resourceSubscriptions` asked for, the ones granted), then the changes asked for and the
/// granted resources' updates.
pub(super) async fn listen<S: AsyncWriteRent>(
    cx: &Cx<'_>,
    session: &Session,
    id: &RawValue,
    wants: [bool; 3],
    resources: Option<&[Subscribed]>,
    out: &mut Responder<'_, S>,
) -> u16 {
    let who = Who {
        caller: cx.caller,
        session,
        session_hash: None,
    };
    let snap = cx.shard.shared.snapshot.load_full();
    let now = seen_now(cx.shard, &snap, &who);
    let mut honoured = serde_json::Map::new();
    for (list, _) in List::ALL.iter().zip(wants).filter(|(_, w)| *w) {
        honoured.insert(list.filter_key().into(), json!(true));
    }
    if let Some(granted) = resources {
        let uris: Vec<&str> = granted.iter().map(|r| r.uri.as_str()).collect();
        honoured.insert("resourceSubscriptions".into(), json!(uris));
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
        wants,
        resources: resources.unwrap_or_default(),
    };
    metrics::gauge!("warden_streams_open", "kind" => "subscription").increment(1.0);
    let end = run(cx, &who, &framing, snap.generation, now, out).await;
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
    mut known: Told,
    out: &mut Responder<'_, S>,
) -> End {
    let shard = cx.shard;
    let exp = cx.caller.claims.as_ref().map(|c| c.exp);
    let mut quiet = Duration::ZERO;
    let mut ticks: u32 = 0;
    // A session's stream also carries its upstream sessions' messages outside a call; a
    // subscription, its granted resources' updates.
    let mode = match framing {
        Framing::Session { .. } => Some(Mode::Session),
        Framing::Subscription { id, resources, .. } if !resources.is_empty() => {
            Some(Mode::Subscription { id, resources })
        }
        Framing::Subscription { .. } | Framing::Legacy => None,
    };
    let mut relays = stream_relay::Relays::default();
    loop {
        let relayed = match mode {
            Some(mode) => {
                let snap = shard.shared.snapshot.load_full();
                (relays.wait(TICK, shard, &snap, who.session, ticks, mode)).await
            }
            None => {
                monoio::time::sleep(TICK).await;
                None
            }
        };
        match relayed {
            Some(data) => {
                if out.send_chunk(&event(None, &data)).await.is_err() {
                    return End::ClientGone;
                }
                quiet = Duration::ZERO;
            }
            None => quiet += TICK,
        }
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
            let now = seen_now(shard, &snap, who);
            match tell(framing, &mut known, &now, out).await {
                Err(()) => return End::ClientGone,
                Ok(true) => quiet = Duration::ZERO,
                Ok(false) => {}
            }
        }
        if let Some(mode) = mode {
            relays.open_due(cx, &snap, who.session, ticks, mode).await;
        }
        if quiet >= KEEP_ALIVE {
            if out.send_chunk(b": keep-alive\n\n").await.is_err() {
                return End::ClientGone;
            }
            quiet = Duration::ZERO;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn told(t: &str, p: &str, r: &str) -> Told {
        [t.to_owned(), p.to_owned(), r.to_owned()]
    }

    #[test]
    fn a_resumed_id_says_what_the_client_knew_of_each_list() {
        let now = told("t2", "p2", "r2");
        // This session's id: each list as it was then.
        assert_eq!(
            resumed(Some("abc-t1-p2-r1"), "abc", &now),
            told("t1", "p2", "r1")
        );
        // An id of the earlier form speaks of the tools only.
        assert_eq!(
            resumed(Some(" abc-t1 "), "abc", &now),
            told("t1", "p2", "r2")
        );
        // Another session's id, a malformed one, or none: nothing was missed.
        for last in [Some("xyz-t1-p1-r1"), Some("abc-t1-p1"), Some("abct1"), None] {
            assert_eq!(resumed(last, "abc", &now), now, "{last:?}");
        }
        // Each event's id says what the client knows once it is read.
        assert_eq!(event_id("abc", &now), "abc-t2-p2-r2");
    }
}
