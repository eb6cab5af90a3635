//! JSON-RPC batches (2025-03-26 sessions only): each element audited and decided like a
//! single request, answered together as one JSON array (no streaming inside a batch).

use std::sync::Arc;

use monoio::io::AsyncWriteRent;
use serde_json::value::RawValue;

use super::{Caller, Gateway, Next, Plan, send};
use crate::http1::Response;
use crate::http1::conn::Responder;
use crate::jsonrpc::{self, Kind, Message, code};
use crate::mcp::call::Meta;
use crate::mcp::forward;
use crate::session::Session;
use crate::snapshot::Snapshot;

impl Gateway {
    /// A JSON-RPC batch (2025-03-26 sessions only): each element handled in order, answers
    /// collected into one JSON array (no streaming inside a batch).
    #[expect(
        clippy::too_many_arguments,
        reason = "the request path's context (shard, snapshot, session, caller, ids, output) is passed explicitly rather than bundled"
    )]
    pub(super) async fn batch<S: AsyncWriteRent>(
        &self,
        snap: &Arc<Snapshot>,
        session: &Arc<Session>,
        caller: &Caller,
        meta: &Meta,
        body: &[u8],
        out: &mut Responder<'_, S>,
        cors: Option<&str>,
    ) -> u16 {
        let items: Vec<&RawValue> = match std::str::from_utf8(body)
            .ok()
            .and_then(|t| serde_json::from_str(t).ok())
        {
            Some(v) => v,
            None => {
                return send(
                    out,
                    Response::json(400, jsonrpc::error(None, code::PARSE_ERROR, "Parse error")),
                    cors,
                )
                .await;
            }
        };
        if items.is_empty() {
            return send(
                out,
                Response::json(
                    400,
                    jsonrpc::error(None, code::INVALID_REQUEST, "Invalid Request"),
                ),
                cors,
            )
            .await;
        }
        let mut answers: Vec<Vec<u8>> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let msg = match Message::parse(item.get().as_bytes()) {
                Ok(m) => m,
                Err(_) => {
                    answers.push(jsonrpc::error(
                        None,
                        code::INVALID_REQUEST,
                        "Invalid Request",
                    ));
                    continue;
                }
            };
            let null = jsonrpc::null();
            let id: &RawValue = msg.id.unwrap_or(&null);
            if i > 0
                && let Some(limited) = self.limit_user_message(snap, caller, &msg, meta)
            {
                if msg.kind() == Kind::Request {
                    answers.push(limited.body);
                }
                continue;
            }
            match msg.kind() {
                Kind::Notification => forward::notification(&self.shard, snap, session, &msg).await,
                Kind::Response => forward::client_response(&self.shard, snap, session, &msg).await,
                Kind::Request if msg.method.as_deref() == Some("initialize") => {
                    answers.push(jsonrpc::error(
                        Some(id),
                        code::INVALID_REQUEST,
                        "initialize cannot be part of a batch",
                    ));
                }
                Kind::Request => {
                    let answer = self
                        .batch_request(snap, session, caller, meta, &msg, id)
                        .await;
                    answers.push(answer);
                }
            }
        }
        if answers.is_empty() {
            return send(out, Response::new(202), cors).await;
        }
        let mut body =
            Vec::with_capacity(answers.iter().map(Vec::len).sum::<usize>() + answers.len() + 2);
        body.push(b'[');
        for (i, a) in answers.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(a);
        }
        body.push(b']');
        send(out, Response::json(200, body), cors).await
    }
}

impl Gateway {
    /// One request of a batch, audited like a single request, answered as bytes.
    async fn batch_request(
        &self,
        snap: &Arc<Snapshot>,
        session: &Arc<Session>,
        caller: &Caller,
        meta: &Meta,
        msg: &Message<'_>,
        id: &RawValue,
    ) -> Vec<u8> {
        let mut audit = match self.open_audit(caller, msg, meta, id) {
            Ok(a) => a,
            Err(body) => return body,
        };
        match self.plan(snap, caller, session, meta, msg, id) {
            Plan::Local(b) => {
                self.record_refusal(
                    snap,
                    audit,
                    None,
                    "unknown tool or method".into(),
                    Vec::new(),
                );
                b
            }
            Plan::Refused {
                body,
                reason,
                policy_ids,
                step_up,
                route,
            } => {
                self.record_refusal(snap, audit, route, reason.clone(), policy_ids);
                match step_up {
                    // No HTTP challenge inside a batch: the reason as a JSON-RPC error.
                    Some(_) => jsonrpc::error(Some(id), code::INVALID_PARAMS, &reason),
                    None => body,
                }
            }
            Plan::Forward {
                upstream,
                method,
                params,
                tool,
                policy_ids,
                tool_limit,
            } => {
                let up = &snap.upstreams[upstream];
                // Inside a batch a limited call is answered in the array (the batch is 200).
                if let Some(limited) = self.limit_tool(
                    snap,
                    caller,
                    tool_limit,
                    &mut audit,
                    up,
                    tool.as_deref(),
                    &policy_ids,
                    id,
                ) {
                    return limited.body;
                }
                let call = match self
                    .prepare_forward(
                        snap,
                        caller,
                        meta,
                        &mut audit,
                        up,
                        tool.as_deref(),
                        &params,
                        policy_ids,
                        id,
                    )
                    .await
                {
                    Next::Answer(body) => return body,
                    Next::Mcp(call) => call,
                };
                let (body, report) =
                    forward::request_collect(&self.shard, session, up, &method, &params, call, id)
                        .await;
                if let Some(a) = audit {
                    a.forwarded(&self.shard, &report);
                }
                body
            }
        }
    }
}
