//! Messages from a client to its upstreams outside a call: notifications (cancellations mapped
//! to the upstream's id), a client's responses to an upstream's requests, and the end of the
//! gateway's upstream sessions when the client's session ends. Sent in the gateway's upstream
//! session, best effort.

use std::sync::Arc;

use super::delegate::session_auth;
use super::forward::{exposed, headers};
use super::rewrite;
use crate::jsonrpc::Message;
use crate::session::{Session, UpstreamSession};
use crate::shard::Shard;
use crate::snapshot::{Snapshot, Upstream};
use crate::upstream::{self, Replay};

/// A client notification: cancellations are mapped to the upstream's id; others go to the passthrough upstream.
pub async fn notification(
    shard: &Shard,
    snap: &Arc<Snapshot>,
    session: &Arc<Session>,
    msg: &Message<'_>,
) {
    let method = msg.method.as_deref().unwrap_or("");
    match method {
        "notifications/initialized" => {}
        "notifications/cancelled" => {
            let Some(params) = msg.params else { return };
            let Ok(mut p) = serde_json::from_str::<serde_json::Value>(params.get()) else {
                return;
            };
            let Some(req_id) = p.get("requestId").map(|v| v.to_string()) else {
                return;
            };
            let Some((uid, gid)) = session.inflight.get(&req_id).map(|e| *e.value()) else {
                return;
            };
            let Some(up) = snap.upstreams.iter().find(|u| u.id == uid) else {
                return;
            };
            p["requestId"] = serde_json::Value::from(gid);
            let body =
                format!(r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{p}}}"#);
            send_note(shard, session, up, body.as_bytes()).await;
        }
        _ => {
            if let Some(u) = snap.settings.passthrough_upstream {
                let body = rewrite::reframe(msg, None, None);
                send_note(shard, session, &snap.upstreams[u], &body).await;
            }
        }
    }
}

pub(crate) async fn send_note(shard: &Shard, session: &Session, up: &Upstream, body: &[u8]) {
    let Some(us) = session.upstream_sessions.get(&up.id).map(|s| s.clone()) else {
        return;
    };
    let Ok(auth) = session_auth(shard, up).await else {
        return;
    };
    let h = headers(Some(&us), exposed(&auth), &us.protocol_version);
    let sent = upstream::send(&shard.pool, up, "POST", &h, body, up.timeout, Replay::Never);
    if let Err(e) = sent.await {
        tracing::debug!(upstream = %up.name, error = %e, "Notification not delivered");
    }
}

/// A client's response to a server→client request: route it back by the wrapped id.
pub async fn client_response(
    shard: &Shard,
    snap: &Arc<Snapshot>,
    session: &Arc<Session>,
    msg: &Message<'_>,
) {
    if super::input_bridge::deliver_answer(session, msg) {
        return;
    }
    let Some((uid, orig)) = msg.id.and_then(rewrite::unwrap_server_id) else {
        return;
    };
    let Some(up) = snap.upstreams.iter().find(|u| u.id == uid) else {
        return;
    };
    let body = rewrite::reframe(msg, Some(&orig), None);
    send_note(shard, session, up, &body).await;
}

/// DELETE: end the gateway's upstream sessions too (best effort).
pub async fn close_upstream_sessions(shard: &Shard, snap: &Arc<Snapshot>, session: &Session) {
    let ids: Vec<(u32, UpstreamSession)> = session
        .upstream_sessions
        .iter()
        .map(|e| (*e.key(), e.value().clone()))
        .collect();
    for (uid, us) in ids {
        let Some(up) = snap.upstreams.iter().find(|u| u.id == uid) else {
            continue;
        };
        if us.session_id.is_none() {
            continue;
        }
        let Ok(auth) = session_auth(shard, up).await else {
            continue;
        };
        let h = headers(Some(&us), exposed(&auth), &us.protocol_version);
        let _ = upstream::send(&shard.pool, up, "DELETE", &h, b"", up.timeout, Replay::Safe).await;
    }
}
