//! A 2025-xx upstream asks a 2026-07-28 client for input during a call (`elicitation/create`,
//! `sampling/createMessage`, `roots/list` on the call's stream): bridged into MRTR. The call
//! is parked — its upstream stream stays open in a task on this shard — and the client gets an
//! `input_required` result whose `requestState` names the parked call (sealed like any MRTR
//! state: this user, this tool, short-lived, see [`super::mrtr`]). The client's retry, on any
//! shard of this process, hands its `inputResponses` to the parked call over a channel; the
//! call answers the upstream's request in the gateway's upstream session and reads on: the
//! upstream's final answer (or its next request for input) is the retry's answer.
//!
//! The call runs once: a retry only resumes it, and a parked call is resumed at most once per
//! request for input (the retry takes it out of the table). A retry that finds nothing parked
//! (answered already, timed out after the upstream's `timeout`, or parked by another replica:
//! the state says which process) is refused with a message saying to call the tool again.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::jsonrpc::{self, Message};
use crate::session::Session;
use crate::shard::Shard;
use crate::snapshot::Snapshot;
use crate::upstream::SseStream;

use monoio::io::AsyncWriteRent;

use super::modern::Shape;
use super::pipeline::send;
use super::record::{Open, Report};
use super::refusal::Refusal;
use super::vocab::Cx;
use super::{items, rewrite};
use crate::http1::Response;
use crate::http1::conn::Responder;
use crate::snapshot::Upstream;
use crate::upstream::UpError;

/// What a parked call's `requestState` holds, before it is sealed.
const MARKER: &str = "warden-parked:";
/// The one input a parked call asks for at a time, by this key.
pub const INPUT_KEY: &str = "input";
/// Calls one process may hold parked (each holds an upstream connection until its timeout).
pub const MAX_PARKED: usize = 10_000;

/// The client's answer to a parked call's request, and where its outcome goes.
#[derive(Debug)]
pub struct Resume {
    answer: Value,
    reply: oneshot::Sender<Outcome>,
}

/// What became of a resumed call.
#[derive(Debug)]
pub enum Outcome {
    /// The upstream's final answer (a JSON-RPC response with the gateway's id).
    Done(Vec<u8>),
    /// It asked for more input: the next `input_required` (method, params, state).
    Asks(String, Value, String),
    /// The upstream failed or went away: why.
    Failed(String),
}

/// The calls waiting for their client's input, process-wide (a retry may land on any shard).
#[derive(Debug)]
pub struct ParkedCalls {
    calls: DashMap<u64, mpsc::UnboundedSender<Resume>>,
    next: AtomicU64,
    /// Names this process in a marker, so another replica's is told apart.
    process: u64,
}

impl ParkedCalls {
    pub fn new(process: u64) -> ParkedCalls {
        ParkedCalls {
            calls: DashMap::new(),
            next: AtomicU64::new(1),
            process,
        }
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Take the parked call `marker` names out of the table (so one retry resumes it, and a
    /// second finds it gone); `None` when it is not parked here.
    fn take(&self, marker: &str) -> Option<mpsc::UnboundedSender<Resume>> {
        let (process, id) = parse_marker(marker)?;
        if process != self.process {
            return None;
        }
        self.calls.remove(&id).map(|(_, tx)| tx)
    }

    /// Register a parked call; its marker (the `requestState` to seal).
    fn register(&self, tx: mpsc::UnboundedSender<Resume>) -> String {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.calls.insert(id, tx);
        format!("{MARKER}{:016x}:{id}", self.process)
    }
}

/// The method and params of an upstream's request this modern client can answer by MRTR
/// (it declared the capability the method needs in its `clientCapabilities`).
pub fn bridgeable(m: &Message<'_>, caps: &Value) -> Option<(String, Value)> {
    let method = m.method.as_deref()?;
    let cap = super::input_bridge::capability_of(method)?;
    caps.get(cap)?;
    let params = m
        .params
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or_else(|| json!({}));
    Some((method.to_owned(), params))
}

/// An `input_required` response to the client's request `client_id`: the one input asked
/// for, and the (not yet sealed) state naming the parked call.
pub fn input_required(client_id: &RawValue, method: &str, params: &Value, state: &str) -> Vec<u8> {
    let result = json!({
        "resultType": "input_required",
        "inputRequests": { INPUT_KEY: { "method": method, "params": params } },
        "requestState": state,
    });
    jsonrpc::result_value(client_id, &result)
}

/// What the relay of a modern client's call to a 2025-xx upstream needs to park it.
pub(crate) struct Parker<'a> {
    pub shard: &'a Rc<Shard>,
    pub snap: &'a Arc<Snapshot>,
    pub session: &'a Arc<Session>,
    pub upstream: usize,
    /// The client's `clientCapabilities`.
    pub caps: &'a Value,
}

/// Park the call whose stream `stream` just brought the upstream's request `asked_id`: a task
/// on this shard holds the stream until the client's retry resumes it, or the upstream's
/// timeout passes. The marker for the `input_required` result, or `None` (the stream given
/// back) when the process holds [`MAX_PARKED`] calls already.
pub(crate) fn park(
    p: &Parker<'_>,
    stream: SseStream,
    gid: u64,
    asked_id: Box<RawValue>,
) -> Result<String, Box<SseStream>> {
    let parked = &p.shard.shared.parked;
    if parked.len() >= MAX_PARKED {
        return Err(Box::new(stream));
    }
    let (tx, rx) = mpsc::unbounded();
    let marker = parked.register(tx.clone());
    let held = Held {
        shard: p.shard.clone(),
        snap: p.snap.clone(),
        session: p.session.clone(),
        upstream: p.upstream,
        gid,
        caps: p.caps.clone(),
        tx,
    };
    metrics::counter!("warden_calls_parked_for_input_total").increment(1);
    monoio::spawn(held.hold(stream, asked_id, rx, marker.clone()));
    Ok(marker)
}

/// A parked call's own: what its task needs after the request that parked it is answered.
struct Held {
    shard: Rc<Shard>,
    snap: Arc<Snapshot>,
    session: Arc<Session>,
    upstream: usize,
    gid: u64,
    caps: Value,
    tx: mpsc::UnboundedSender<Resume>,
}

impl Held {
    /// Wait for the client's answer, give it to the upstream, read on; again while the
    /// upstream asks for more. Dropping the stream (timeout, failure) closes the upstream
    /// connection, which ends the call there.
    async fn hold(
        self,
        mut stream: SseStream,
        mut asked_id: Box<RawValue>,
        mut rx: mpsc::UnboundedReceiver<Resume>,
        mut marker: String,
    ) {
        let up = &self.snap.upstreams[self.upstream];
        loop {
            let mut wait = crate::deadline::Deadline::after(up.timeout);
            let Ok(Some(resume)) = wait.run(rx.next()).await else {
                // No answer in time: nothing resumes it any more.
                self.forget(&marker);
                return;
            };
            let answer = json!({"jsonrpc": "2.0", "id": &*asked_id, "result": resume.answer});
            let body = serde_json::to_vec(&answer).unwrap_or_default();
            super::forward::send_note(&self.shard, &self.session, up, &body).await;
            let outcome = loop {
                let ev = match stream.next_event().await {
                    Ok(Some(ev)) => ev,
                    Ok(None) => {
                        break Outcome::Failed(crate::upstream::UpError::Closed.to_string());
                    }
                    Err(e) => break Outcome::Failed(e.to_string()),
                };
                let Ok(m) = Message::parse(ev.data.as_bytes()) else {
                    continue;
                };
                match (m.method.is_some(), m.id) {
                    (false, _) if rewrite::gateway_id(m.id) == Some(self.gid) => {
                        break Outcome::Done(ev.data.into_bytes());
                    }
                    (true, Some(id)) => match bridgeable(&m, &self.caps) {
                        Some((method, params)) => {
                            asked_id = id.to_owned();
                            marker = self.shard.shared.parked.register(self.tx.clone());
                            break Outcome::Asks(method, params, marker.clone());
                        }
                        None => {
                            super::forward::decline_server_request(
                                &self.shard,
                                &self.session,
                                up,
                                id,
                            )
                            .await;
                        }
                    },
                    (true, None) if super::forward::announces_list_change(m.method.as_deref()) => {
                        self.shard.shared.control.upstream_changed(up.id);
                    }
                    // Notifications and answers to something else: not for this client.
                    _ => {}
                }
            };
            match outcome {
                // Parked again (registered above) for the next round.
                Outcome::Asks(..) => {
                    let _ = resume.reply.send(outcome);
                }
                Outcome::Done(_) => {
                    let _ = resume.reply.send(outcome);
                    // The call is over: its connection may serve the next request.
                    stream.finish(&self.shard.pool, up.id);
                    return;
                }
                Outcome::Failed(_) => {
                    let _ = resume.reply.send(outcome);
                    return;
                }
            }
        }
    }

    fn forget(&self, marker: &str) {
        if let Some((_, id)) = parse_marker(marker) {
            self.shard.shared.parked.calls.remove(&id);
        }
    }
}

/// `(process, id)` of a marker.
fn parse_marker(s: &str) -> Option<(u64, u64)> {
    let rest = s.strip_prefix(MARKER)?;
    let (p, id) = rest.split_once(':')?;
    Some((u64::from_str_radix(p, 16).ok()?, id.parse().ok()?))
}

/// A retry's params, when they resume a parked call: its marker and the client's answer.
pub fn resuming(params: &str) -> Option<(String, Option<Value>)> {
    let p: serde_json::Map<String, Value> = serde_json::from_str(params).ok()?;
    let state = p.get("requestState")?.as_str()?;
    parse_marker(state)?;
    let answer = p
        .get("inputResponses")
        .and_then(|r| r.get(INPUT_KEY))
        .cloned();
    Some((state.to_owned(), answer))
}

/// Hand the client's answer to the parked call `marker` and wait for what the upstream did
/// next (bounded by the upstream's timeout). A refusal when nothing is parked under it.
pub async fn resume(
    shard: &Shard,
    marker: &str,
    answer: Option<Value>,
    timeout: std::time::Duration,
) -> Result<Outcome, Refusal> {
    let gone = || {
        Refusal::input_not_awaited(
            "The call that asked for this input is no longer waiting (answered already, timed \
             out, or held by another gateway replica); call the tool again to start over",
        )
    };
    let Some(answer) = answer else {
        return Err(Refusal::input_not_awaited(format!(
            "The retry must carry inputResponses.{INPUT_KEY}, the answer to the input asked for"
        )));
    };
    let tx = shard.shared.parked.take(marker).ok_or_else(gone)?;
    let (reply, rx) = oneshot::channel();
    tx.unbounded_send(Resume { answer, reply })
        .map_err(|_| gone())?;
    match crate::deadline::Deadline::after(timeout).run(rx).await {
        Ok(Ok(outcome)) => Ok(outcome),
        _ => Ok(Outcome::Failed(
            "the upstream did not answer after the input".to_owned(),
        )),
    }
}

/// The answer to a modern client's retry that resumed a parked call ([`super::park`]): the
/// upstream's final answer, or its next request for input, in the client's revision, sent
/// once its record is written.
#[allow(clippy::too_many_arguments)]
pub(super) async fn answer<S: AsyncWriteRent>(
    cx: &Cx<'_>,
    up: &Upstream,
    outcome: Outcome,
    client_id: &RawValue,
    out: Option<&mut Responder<'_, S>>,
    open: &mut Open<'_>,
    shape: &Shape<'_>,
    uris: Option<&str>,
) -> Result<(Option<Vec<u8>>, Report), Refusal> {
    let body = match outcome {
        Outcome::Done(b) => match Message::parse(&b) {
            Ok(m) if m.method.is_none() => {
                items::outbound(uris, rewrite::reframe(&m, Some(client_id), None))
            }
            _ => return Err(super::forward::upstream_refusal(up, &UpError::BadResponse)),
        },
        Outcome::Asks(method, params, marker) => {
            input_required(client_id, &method, &params, &marker)
        }
        Outcome::Failed(why) => {
            let e = format!("Upstream '{}' failed after the input: {why}", up.name);
            return Err(Refusal::upstream("upstream_after_input", e.clone(), e));
        }
    };
    let ok = Report {
        upstream_status: Some(200),
        failure: None,
        upstream_ms: None,
    };
    let body = shape.apply(body);
    match out {
        Some(out) => {
            open.settle(cx.shard, &ok).await;
            send(out, Response::json(shape.status(&body), body), cx.cors).await;
            Ok((None, ok))
        }
        None => Ok((Some(body), ok)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_name_their_process_and_call_and_nothing_else_resumes() {
        let parked = ParkedCalls::new(0xabc);
        let (tx, _rx) = mpsc::unbounded();
        let m = parked.register(tx);
        assert_eq!(parse_marker(&m), Some((0xabc, 1)));
        assert_eq!(parked.len(), 1);
        let p = json!({"name": "t", "requestState": m, "inputResponses": {"input": {"action": "accept"}}});
        let (state, answer) = resuming(&p.to_string()).unwrap();
        assert_eq!(state, m);
        assert_eq!(answer.unwrap()["action"], "accept");
        // Taken once: a second retry with the same state finds nothing.
        assert!(parked.take(&m).is_some());
        assert!(parked.take(&m).is_none());
        assert!(parked.is_empty());
        // Another process's marker, or an unknown call, is not taken.
        let (tx, _rx2) = mpsc::unbounded();
        let mine = parked.register(tx);
        assert!(ParkedCalls::new(0xdef).take(&mine).is_none());
        assert!(parked.take("warden-parked:0000000000000abc:99").is_none());
        assert!(parked.take(&mine).is_some());
        // An upstream's own state, or none, is not a parked call.
        assert!(resuming(&json!({"requestState": "opaque"}).to_string()).is_none());
        assert!(resuming(&json!({"name": "t"}).to_string()).is_none());
        assert_eq!(parse_marker("warden-parked:zz:1"), None);
    }

    #[test]
    fn only_what_the_client_declared_is_bridged() {
        let ask = Message::parse(br#"{"jsonrpc":"2.0","id":7,"method":"elicitation/create","params":{"message":"Name?"}}"#).unwrap();
        let caps = json!({"elicitation": {"form": {}}});
        let (method, params) = bridgeable(&ask, &caps).unwrap();
        assert_eq!(
            (method.as_str(), &params["message"]),
            ("elicitation/create", &json!("Name?"))
        );
        assert!(bridgeable(&ask, &json!({"sampling": {}})).is_none());
        let other = Message::parse(br#"{"jsonrpc":"2.0","id":8,"method":"tools/list"}"#).unwrap();
        assert!(bridgeable(&other, &json!({"elicitation": {}, "tools": {}})).is_none());
        let id = RawValue::from_string("3".into()).unwrap();
        let body: Value =
            serde_json::from_slice(&input_required(&id, &method, &params, "warden-parked:1:2"))
                .unwrap();
        assert_eq!(body["id"], 3);
        assert_eq!(body["result"]["resultType"], "input_required");
        assert_eq!(
            body["result"]["inputRequests"][INPUT_KEY]["method"],
            "elicitation/create"
        );
        assert_eq!(body["result"]["requestState"], "warden-parked:1:2");
    }
}
