//! Step 6 of the request path: the session. `initialize` opens one (a sealed id bound to
//! the user); every other message names one, which must be this user's and not ended;
//! DELETE ends one here and, through the control plane, on every replica.

use std::sync::Arc;

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
        .map(Some)
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
