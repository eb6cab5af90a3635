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

use futures_channel::oneshot;
use monoio::io::AsyncWriteRent;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::forward::{
    announces_list_change, exchange_stateless, relay, upstream_refusal, wire, write_event,
};
use super::modern::Shape;
use super::pipeline::send;
use super::record::{Open, Report};
use super::refusal::Refusal;
use super::route::Forward;
use super::vocab::{Cx, Outbound};
use super::{delegate, items, rewrite};
use crate::clock::{Clock, Instant};
use crate::http1::Response;
use crate::http1::conn::Responder;
use crate::jsonrpc::{self, Message};
use crate::session::Session;
use crate::upstream::{UpBody, UpError};

/// Rounds of input one call may ask for.
pub const MAX_ROUNDS: usize = 8;
/// How long the client has to answer one round (a person may be typing), on the shard's
/// clock.
pub const ANSWER_WAIT: Duration = Duration::from_secs(300);
/// How often a round waiting for its answers looks at the clock.
const ANSWER_TICK: Duration = Duration::from_millis(250);

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
pub(super) fn capability_of(method: &str) -> Option<&'static str> {
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
    clock: &Clock,
    out: &mut Responder<'_, S>,
) -> Result<Map<String, Value>, Refusal> {
    let mut waiting = Vec::new();
    let mut ev = Vec::with_capacity(256);
    for (key, method, params) in &round.requests {
        let id = format!("warden-input-{tag}-{key}");
        let (tx, rx) = oneshot::channel();
        session.pending_inputs.insert(json!(id).to_string(), tx);
        let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        write_event(&mut ev, None, req.to_string().as_bytes());
        if out.send_chunk(&ev).await.is_err() {
            forget(session, tag, round);
            return Err(Refusal::input_unanswered("the client went away"));
        }
        waiting.push((key.clone(), rx));
    }
    let mut answers = Map::new();
    let asked_at = clock.now();
    for (key, mut rx) in waiting {
        let Some(body) = answer(clock, asked_at, &mut rx).await else {
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

/// The client's answer, or `None` once [`ANSWER_WAIT`] has passed since `asked_at` on
/// `clock` (the shard's: a test steps it instead of waiting five minutes).
async fn answer(
    clock: &Clock,
    asked_at: Instant,
    rx: &mut oneshot::Receiver<String>,
) -> Option<String> {
    loop {
        match monoio::time::timeout(ANSWER_TICK, &mut *rx).await {
            Ok(got) => return got.ok(),
            Err(_) if clock.since(asked_at) >= ANSWER_WAIT => return None,
            Err(_) => {}
        }
    }
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
    write_event(&mut ev, None, &framed);
    let _ = out.send_chunk(&ev).await;
    let _ = out.end_stream().await;
}

/// A 2025 client's call to a modern upstream, with its rounds of input bridged (see
/// [`super::input_bridge`]): the answer is relayed, or sent on the stream the rounds opened.
#[allow(clippy::too_many_arguments)]
pub(super) async fn bridged<S: AsyncWriteRent>(
    cx: &Cx<'_>,
    session: &Arc<Session>,
    fwd: &Forward,
    mut call: Outbound,
    client_id: &RawValue,
    out: &mut Responder<'_, S>,
    open: &mut Open<'_>,
    version: &str,
    caps: &serde_json::Value,
    params: &str,
    shape: &Shape<'_>,
) -> Result<(Option<Vec<u8>>, Report), Refusal> {
    let (shard, up) = (cx.shard, &cx.snap.upstreams[fwd.upstream]);
    let mut params = params.to_owned();
    let mut streaming = false;
    // Resource URIs in the answers carry the gateway's prefix (several resource upstreams).
    let uris = fwd.uri_prefix.as_deref();
    for round in 0..=MAX_ROUNDS {
        let wire = wire(cx, fwd, &params);
        let (r, gid) = exchange_stateless(shard, session, up, version, &wire, &call, client_id)
            .await
            .map_err(|e| upstream_refusal(up, &e))?;
        // Not an answer to inspect (an HTTP error): relayed as it is.
        if !streaming && r.status != 200 {
            return Ok((
                None,
                relay(
                    shard, session, up, r, gid, client_id, out, open, None, cx.cors, shape, uris,
                )
                .await,
            ));
        }
        let status = Some(r.status);
        let body = match r.body {
            UpBody::Full(b) => b,
            // A stream: its notifications are relayed as they come, its answer inspected.
            UpBody::Sse(mut st) => {
                if !streaming {
                    if out
                        .start_stream(200, &super::http::sse_headers(cx.cors))
                        .await
                        .is_err()
                    {
                        return Ok((None, Report::failed(status, "client went away")));
                    }
                    streaming = true;
                }
                let mut ev_buf = Vec::with_capacity(512);
                loop {
                    let ev = st
                        .next_event()
                        .await
                        .ok()
                        .flatten()
                        .ok_or_else(|| upstream_refusal(up, &UpError::Closed))?;
                    let Ok(m) = Message::parse(ev.data.as_bytes()) else {
                        continue;
                    };
                    if m.method.is_none() && rewrite::gateway_id(m.id) == Some(gid) {
                        let data = ev.data.into_bytes();
                        st.finish(&shard.pool, up.id);
                        break data;
                    }
                    if m.id.is_none() && m.method.is_some() {
                        if announces_list_change(m.method.as_deref()) {
                            shard.shared.control.upstream_changed(up.id);
                            continue;
                        }
                        let note = items::outbound(uris, ev.data.into_bytes());
                        write_event(&mut ev_buf, None, &note);
                        if out.send_chunk(&ev_buf).await.is_err() {
                            return Ok((None, Report::failed(status, "client went away")));
                        }
                    }
                }
            }
        };
        let ok = Report {
            upstream_status: status,
            failure: None,
            upstream_ms: None,
        };
        let asked = asked(&body).filter(|_| round < MAX_ROUNDS);
        let Some(asked) = asked.filter(|a| unanswerable(a, caps).is_none()) else {
            // Complete (or not bridgeable: the shape says why, in the client's revision).
            open.settle(shard, &ok).await;
            if streaming {
                finish(&items::outbound(uris, body), client_id, shape, out).await;
            } else {
                let framed = match Message::parse(&body) {
                    Ok(m) => shape.apply(items::outbound(
                        uris,
                        rewrite::reframe(&m, Some(client_id), None),
                    )),
                    Err(_) => {
                        shape.refusal(upstream_refusal(up, &UpError::BadResponse), Some(client_id))
                    }
                };
                send(out, Response::json(200, framed), cx.cors).await;
            }
            return Ok((None, ok));
        };
        if !streaming {
            if out
                .start_stream(200, &super::http::sse_headers(cx.cors))
                .await
                .is_err()
            {
                return Ok((None, Report::failed(status, "client went away")));
            }
            streaming = true;
        }
        metrics::counter!("warden_input_rounds_bridged_total", "upstream" => up.name.clone())
            .increment(1);
        let answers = match ask_client(session, &asked, gid, &shard.clock, out).await {
            Ok(a) => a,
            Err(r) => {
                let e = shape.refusal(r, Some(client_id));
                let report = Report::failed(status, "input not answered");
                open.settle(shard, &report).await;
                finish(&e, client_id, shape, out).await;
                return Ok((None, report));
            }
        };
        params = retry_params(&params, answers, asked.state);
        call = fresh_credential(cx, fwd).await?;
    }
    Ok((None, Report::failed(None, "too many rounds of input")))
}
