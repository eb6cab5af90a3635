//! Step 6 of the request path: the session. `initialize` opens one (a sealed id bound to
//! the user); every other message names one, which must be this user's and not ended;
//! DELETE ends one here and, through the control plane, on every replica.

use std::sync::Arc;

use super::era::Modern;
use super::forward;
use super::http::negotiate_version;
use super::refusal::Refusal;
use super::vocab::Cx;
use crate::http1::Response;
use crate::http1::conn::Request;
use crate::jsonrpc::{self, Message};
use crate::session::Session;

/// The caller's session, if the request names one. `Ok(None)` = no session header.
pub(super) fn lookup(cx: &Cx<'_>, req: &Request) -> Result<Option<Arc<Session>>, Refusal> {
    let Some(id) = req.head.get_str("mcp-session-id") else {
        return Ok(None);
    };
    if req.head.count("mcp-session-id") > 1 {
        return Err(Refusal::session_repeated());
    }
    let st = &cx.snap.settings;
    cx.shard
        .shared
        .sessions
        .get(
            &st.session_keys,
            id,
            &cx.caller.owner,
            cx.shard.clock.unix_secs(),
            st.session_life,
        )
        .map(|s| {
            cx.meta.know_session(&s);
            Some(s)
        })
        .map_err(|_| Refusal::session_unknown("unknown or ended session"))
}

/// The session a message needs.
pub(super) fn required(cx: &Cx<'_>, req: &Request) -> Result<Arc<Session>, Refusal> {
    lookup(cx, req)?.ok_or_else(Refusal::session_required)
}

/// `initialize`: a new session with the negotiated version, answered with its id.
pub(super) fn initialize(cx: &Cx<'_>, msg: &Message<'_>) -> Result<Response, Refusal> {
    let st = &cx.snap.settings;
    let null = jsonrpc::null();
    let id = msg.id.unwrap_or(&null);
    let requested = msg
        .params
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p.get()).ok())
        .and_then(|p| {
            p.get("protocolVersion")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        });
    let version = negotiate_version(requested.as_deref());
    let sid = cx
        .shard
        .shared
        .sessions
        .create(
            &st.session_keys,
            cx.caller.owner,
            version.to_owned(),
            msg.params.map(|p| p.get().to_owned()),
            cx.shard.clock.unix_secs(),
        )
        .map_err(|_| Refusal::session_not_created())?;
    metrics::counter!("warden_sessions_created_total").increment(1);
    let mut result = serde_json::json!({
        "protocolVersion": version,
        "capabilities": serde_json::from_str::<serde_json::Value>(&st.capabilities_json).unwrap_or_default(),
        "serverInfo": {"name": st.server_name, "version": st.server_version},
    });
    if let Some(i) = &st.instructions {
        result["instructions"] = serde_json::Value::String(i.clone());
    }
    let body = jsonrpc::result_value(id, &result);
    Ok(Response::json(200, body).header("mcp-session-id", sid))
}

/// Sessions held per shard for stateless callers before the table is emptied (each one is
/// re-made, and its upstream sessions re-opened, on the user's next call).
const MAX_OWNED: usize = 10_000;

/// The 2025 revision a stateless caller's held session records (its policy context); its
/// upstream sessions ask for [`super::http::UPSTREAM_VERSION`] like every other.
const OWNED_VERSION: &str = super::http::UPSTREAM_VERSION;

/// The session Warden holds for a stateless (2026-07-28) caller: one per user and declared
/// capabilities on this shard. It holds the upstream sessions Warden opens with 2025-era
/// upstreams on that user's behalf — never shared between users — and replays the caller's
/// capabilities in their `initialize`.
pub(super) fn owned(cx: &Cx<'_>, m: &Modern) -> Arc<Session> {
    let caps = m.capabilities.to_string();
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(&cx.caller.owner);
    ctx.update(caps.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    let mut map = cx.shard.owned_sessions.borrow_mut();
    if let Some(s) = map.get(&key) {
        return s.clone();
    }
    if map.len() >= MAX_OWNED {
        map.clear();
    }
    let mut init = serde_json::json!({ "capabilities": m.capabilities });
    if let Some(ci) = &m.client_info {
        init["clientInfo"] = ci.clone();
    }
    let s = Arc::new(Session::owned(
        cx.caller.owner,
        OWNED_VERSION,
        init.to_string(),
        cx.shard.clock.unix_secs(),
    ));
    map.insert(key, s.clone());
    s
}

/// DELETE: end the caller's session here, on the other replicas (through the shared store)
/// and upstream (best effort).
pub(super) async fn end(cx: &Cx<'_>, req: &Request) -> Result<Response, Refusal> {
    let id = req
        .head
        .get_str("mcp-session-id")
        .ok_or_else(Refusal::session_required)?;
    let st = &cx.snap.settings;
    let (sess, id_hash, until) = cx
        .shard
        .shared
        .sessions
        .remove(
            &st.session_keys,
            id,
            &cx.caller.owner,
            cx.shard.clock.unix_secs(),
            st.session_life,
        )
        .map_err(|_| Refusal::session_unknown("unknown session"))?;
    cx.shard.shared.control.session_ended(id_hash, until);
    forward::close_upstream_sessions(cx.shard, cx.snap, &sess).await;
    Ok(Response::new(200))
}
