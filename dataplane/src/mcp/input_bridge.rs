//! A 2026-07-28 upstream asks a 2025-xx client for input: MRTR bridged into server→client
//! requests. When a modern upstream answers a session client's call with `input_required`,
//! the gateway opens the call's SSE stream, sends each of the result's `inputRequests` to the
//! client as a request of its own (`elicitation/create`, `sampling/createMessage`,
//! `roots/list` — only those the client declared in its `initialize`), waits for the answers
//! the client posts back, and retries the call upstream with `inputResponses` and the
//! upstream's `requestState`, with a fresh delegation token, until the upstream completes
//! (or [`MAX_ROUNDS`] pass). The answer goes on the same stream.
//!
//! The call is executed once: `input_required` means the upstream has not acted yet, and each
//! retry is the MRTR continuation of the same request (the upstream's `requestState` says so).
//! A client without the needed capability, or one that does not answer within
//! [`ANSWER_WAIT`], gets an error saying which, and nothing more is sent upstream.

use std::sync::Arc;
use std::time::Duration;

use monoio::io::AsyncWriteRent;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::delegate;
use super::modern::Shape;
use super::refusal::Refusal;
use super::rewrite;
use super::route::Forward;
use super::vocab::{Cx, Outbound};
use crate::http1::conn::Responder;
use crate::jsonrpc::{self, Message};
use crate::session::Session;

/// Rounds of input one call may ask for.
pub const MAX_ROUNDS: usize = 8;
/// How long the client has to answer one round (a person may be typing).
pub const ANSWER_WAIT: Duration = Duration::from_secs(300);

/// What one round of the upstream asked for: `(key, method, params)` each.
pub(super) struct Asked {
    pub requests: Vec<(String, String, Value)>,
    pub state: Option<Value>,
}

/// The `input_required` of a JSON-RPC response body, if it is one.
pub(super) fn asked(body: &[u8]) -> Option<Asked> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let r = v.get("result")?;
    if r.get("resultType").and_then(Value::as_str) != Some("input_required") {
        return None;
    }
    let reqs = r.get("inputRequests")?.as_object()?;
    let requests = reqs
        .iter()
        .filter_map(|(k, q)| {
            let m = q.get("method")?.as_str()?.to_owned();
            Some((k.clone(), m, q.get("params").cloned().unwrap_or(json!({}))))
        })
        .collect::<Vec<_>>();
    (!requests.is_empty()).then(|| Asked {
        requests,
        state: r.get("requestState").cloned(),
    })
}

/// The client capability a server→client request needs.
fn capability_of(method: &str) -> Option<&'static str> {
    match method {
        "elicitation/create" => Some("elicitation"),
        "sampling/createMessage" => Some("sampling"),
        "roots/list" => Some("roots"),
        _ => None,
    }
}

/// The first request the client cannot answer, by its declared capabilities.
pub(super) fn unanswerable<'a>(asked: &'a Asked, caps: &Value) -> Option<&'a str> {
    asked
        .requests
        .iter()
        .find(|(_, m, _)| capability_of(m).is_none_or(|c| caps.get(c).is_none()))
        .map(|(_, m, _)| m.as_str())
}

/// The retry's params: the call's, with the answers and the upstream's state.
pub(super) fn retry_params(
    params: &str,
    answers: Map<String, Value>,
    state: Option<Value>,
) -> String {
    let mut p: Map<String, Value> = serde_json::from_str(params).unwrap_or_default();
    p.insert("inputResponses".into(), Value::Object(answers));
    match state {
        Some(s) => p.insert("requestState".into(), s),
        None => p.remove("requestState"),
    };
    serde_json::to_string(&p).unwrap_or_else(|_| params.to_owned())
}

/// Ask the client, on its open stream, for every input of one round; their answers by key.
/// A refusal says why the round could not be completed.
pub(super) async fn ask_client<S: AsyncWriteRent>(
    session: &Arc<Session>,
    round: &Asked,
    tag: u64,
    out: &mut Responder<'_, S>,
) -> Result<Map<String, Value>, Refusal> {
    let mut waiting = Vec::new();
    let mut ev = Vec::with_capacity(256);
    for (key, method, params) in &round.requests {
        let id = format!("warden-input-{tag}-{key}");
        let (tx, rx) = futures_channel::oneshot::channel();
        session.pending_inputs.insert(json!(id).to_string(), tx);
        let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        ev.clear();
        ev.extend_from_slice(b"event: message\ndata: ");
        ev.extend_from_slice(req.to_string().as_bytes());
        ev.extend_from_slice(b"\n\n");
        if out.send_chunk(&ev).await.is_err() {
            forget(session, tag, round);
            return Err(Refusal::input_unanswered("the client went away"));
        }
        waiting.push((key.clone(), rx));
    }
    let mut answers = Map::new();
    for (key, rx) in waiting {
        let got = monoio::time::timeout(ANSWER_WAIT, rx).await;
        let Ok(Ok(body)) = got else {
            forget(session, tag, round);
            return Err(Refusal::input_unanswered(
                "the client did not answer the upstream's request for input in time",
            ));
        };
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        match v.get("result") {
            Some(r) => {
                answers.insert(key, r.clone());
            }
            None => {
                forget(session, tag, round);
                return Err(Refusal::input_unanswered(
                    "the client refused the upstream's request for input",
                ));
            }
        }
    }
    Ok(answers)
}

/// Drop the round's pending answers (the call ended without them).
fn forget(session: &Session, tag: u64, round: &Asked) {
    for (key, _, _) in &round.requests {
        let id = json!(format!("warden-input-{tag}-{key}")).to_string();
        session.pending_inputs.remove(&id);
    }
}

/// A client's response that answers one of the gateway's own input requests: delivered to
/// the waiting call. `false`: not one of ours.
pub(super) fn deliver_answer(session: &Session, msg: &Message<'_>) -> bool {
    let Some(id) = msg.id else { return false };
    let Some((_, tx)) = session.pending_inputs.remove(id.get()) else {
        return false;
    };
    let body = rewrite::reframe(msg, Some(id), None);
    let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
    true
}

/// A fresh delegation token for the retry (the first may have expired while the user typed).
pub(super) async fn fresh_credential(cx: &Cx<'_>, fwd: &Forward) -> Result<Outbound, Refusal> {
    let up = &cx.snap.upstreams[fwd.upstream];
    delegate::for_call(cx, up, fwd.tool.as_deref(), &mut None).await
}

/// The final answer on the open stream, in the client's revision.
pub(super) async fn finish<S: AsyncWriteRent>(
    body: &[u8],
    client_id: &RawValue,
    shape: &Shape<'_>,
    out: &mut Responder<'_, S>,
) {
    let framed = match Message::parse(body) {
        Ok(m) => shape.apply(rewrite::reframe(&m, Some(client_id), None)),
        Err(_) => jsonrpc::error(
            Some(client_id),
            jsonrpc::code::INTERNAL_ERROR,
            "The upstream's answer could not be read",
        ),
    };
    let mut ev = Vec::with_capacity(framed.len() + 24);
    ev.extend_from_slice(b"event: message\ndata: ");
    ev.extend_from_slice(&framed);
    ev.extend_from_slice(b"\n\n");
    let _ = out.send_chunk(&ev).await;
    let _ = out.end_stream().await;
}
