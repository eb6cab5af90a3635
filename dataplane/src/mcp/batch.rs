//! Step 5 for a batch (2025-03-26 sessions only): a loop over the same single-message
//! steps, each element audited and decided like a single request, the answers collected
//! into one JSON array (no streaming inside a batch).

use std::sync::Arc;

use monoio::io::AsyncWriteRent;
use serde_json::value::RawValue;

use super::limits;
use super::pipeline::Gateway;
use super::record;
use super::refusal::Refusal;
use super::vocab::Cx;
use crate::jsonrpc::{Kind, Message};
use crate::session::Session;

/// The batch's answer (`None` when it held no request: 202).
pub(super) async fn run<S: AsyncWriteRent>(
    gw: &Gateway,
    cx: &Cx<'_>,
    session: &Arc<Session>,
    body: &[u8],
) -> Result<Option<Vec<u8>>, Refusal> {
    let items: Vec<&RawValue> = std::str::from_utf8(body)
        .ok()
        .and_then(|t| serde_json::from_str(t).ok())
        .ok_or_else(Refusal::parse_error)?;
    if items.is_empty() {
        return Err(Refusal::invalid_request("Invalid Request"));
    }
    let mut answers: Vec<Vec<u8>> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let Ok(msg) = Message::parse(item.get().as_bytes()) else {
            let r = Refusal::invalid_request("Invalid Request");
            r.count();
            answers.push(r.body(None));
            continue;
        };
        // The HTTP request paid the per-user limit for the first element; each further one
        // costs what it would cost sent alone.
        if i > 0
            && let Err(mut r) = limits::per_user(cx, true)
        {
            r.count();
            let claims = cx.caller.claims.as_ref();
            match record::unreserved(cx.shard, claims, item.get().as_bytes(), cx.meta, &r) {
                Some(written) => {
                    written.wait().await;
                }
                None => {
                    r = Refusal::audit_unavailable();
                    r.count();
                }
            }
            if msg.kind() == Kind::Request {
                answers.push(r.body(msg.id));
            }
            continue;
        }
        match msg.kind() {
            Kind::Request if msg.method.as_deref() == Some("initialize") => {
                let r = Refusal::invalid_request("initialize cannot be part of a batch");
                r.count();
                answers.push(r.body(msg.id));
            }
            Kind::Request => {
                let answer = match gw.request::<S>(cx, session, &msg, None).await {
                    Ok(body) => body.unwrap_or_default(),
                    Err(r) => r.body(msg.id),
                };
                answers.push(answer);
            }
            _ => gw.deliver(cx, session, &msg).await,
        }
    }
    if answers.is_empty() {
        return Ok(None);
    }
    let mut out =
        Vec::with_capacity(answers.iter().map(Vec::len).sum::<usize>() + answers.len() + 2);
    out.push(b'[');
    for (i, a) in answers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(a);
    }
    out.push(b']');
    Ok(Some(out))
}
