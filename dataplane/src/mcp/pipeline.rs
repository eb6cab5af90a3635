//! The request path on one page, in the order a request meets it:
//!
//! 1. admit (the in-flight cap) — here
//! 2. admit (Origin, Host, the public documents, path and method) — [`super::admit`]
//! 3. authenticate — [`super::authn`]
//! 4. the per-user rate limit — [`super::limits`]
//! 5. parse (media headers, one JSON-RPC message or a batch) — [`super::admit`], [`crate::jsonrpc`], [`super::batch`]
//! 6. session — [`super::sessions`] (GET: the session's stream — [`super::stream`]); the audit record is reserved — [`super::record`]
//! 7. route, 8. authorize — [`super::route`] with [`super::authz`]; the per-tool limit — [`super::limits`]
//! 9. delegate — [`super::delegate`]
//! 10. forward — [`super::forward`]
//! 11. audit: exactly one record — [`super::record`]
//!
//! Every step fails with a [`Refusal`], which alone decides the answer, the audit record,
//! the metric and who is to blame. A batch is a loop over the same single-message steps.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use monoio::io::AsyncWriteRent;

use super::admit::{self, Endpoint};
use super::record::{self, Audit, Report};
use super::refusal::Refusal;
use super::route::{self, Plan};
use super::vocab::{Caller, Cx, Meta};
use super::{
    authn, batch, delegate, era, forward, http, limits, modern, sessions, sse_legacy, stream,
};
use crate::http1::conn::{Handler, Request, Responder};
use crate::http1::{Method, Response};
use crate::jsonrpc::{self, Invalid, Kind, Message};
use crate::session::Session;
use crate::shard::Shard;
use crate::snapshot::Snapshot;

/// The per-connection handler: the MCP endpoint and the well-known documents.
#[derive(Debug)]
pub struct Gateway {
    pub shard: Rc<Shard>,
}

impl Handler for Gateway {
    async fn handle<S: AsyncWriteRent>(&self, req: Request, out: &mut Responder<'_, S>) {
        let shard = &*self.shard;
        // One snapshot for the whole request.
        let snap = shard.shared.snapshot.load_full();
        // 1. Beyond the shard's in-flight cap, a fast 503 before any other work.
        let Some(_admitted) = shard.admit(snap.settings.max_in_flight_per_shard) else {
            metrics::counter!("warden_overload_rejected_total", "reason" => "in_flight")
                .increment(1);
            let r = Refusal::overloaded();
            r.count();
            let _ = out.send(r.response(&snap.settings, None)).await;
            return;
        };
        // Draining: answer what arrives on open connections, and tell the client to move on.
        if shard.shared.stopping.load(Ordering::Relaxed) {
            out.close_after();
        }
        let meta = Meta::of(shard, &req.head);
        out.add_header("x-request-id", meta.request_id.clone());
        // Log lines of this request carry its ids (cheap when debug logging is off).
        let span = tracing::debug_span!("request", request_id = %meta.request_id, trace_id = meta.trace_id.as_deref().unwrap_or(""));
        let method = req.head.method;
        let status =
            tracing::Instrument::instrument(self.serve(&snap, &meta, &req, out), span).await;
        (shard.meters).http_request(http::method_label(method), http::status_label(status));
    }

    /// A POST to the MCP endpoint whose body the connection refused unread (413, 408) is
    /// still a request, with its one audit record (no identity: nothing was authenticated),
    /// or, with no room for the record, answered "audit unavailable" instead.
    async fn refused(
        &self,
        head: &crate::http1::parse::Head,
        error: &crate::http1::HttpError,
    ) -> Option<Response> {
        let shard = &*self.shard;
        let snap = shard.shared.snapshot.load_full();
        if head.method != Method::Post || head.path != snap.settings.mcp_path {
            return None;
        }
        let r = Refusal::body_refused(error.status, error.reason);
        r.count();
        if let Some(written) = record::unreserved(shard, None, &[], &Meta::of(shard, head), &r) {
            written.wait().await;
            return None;
        }
        let r = Refusal::audit_unavailable();
        r.count();
        Some(r.response(&snap.settings, None))
    }
}

impl Gateway {
    /// Steps 2–11 of one HTTP request; a refusal is answered (and, for a POST to the MCP
    /// endpoint not yet on record, audited) here. Returns the status sent.
    async fn serve<S: AsyncWriteRent>(
        &self,
        snap: &Arc<Snapshot>,
        meta: &Meta,
        req: &Request,
        out: &mut Responder<'_, S>,
    ) -> u16 {
        let shard = &*self.shard;
        let st = &snap.settings;
        let origin = req.head.get_str("origin");
        let cors = http::cors_origin(st, origin);
        let cors = cors.as_deref();
        // 2. Origin and Host (DNS rebinding), the public documents, the endpoint's path.
        let mut caller = None;
        let (at_mcp, result) = match admit::endpoint(st, req, origin.is_some(), cors) {
            Ok(Endpoint::Public(resp)) => return send(out, resp, cors).await,
            Ok(Endpoint::Mcp) => (
                true,
                self.mcp(snap, meta, req, cors, &mut caller, out).await,
            ),
            Ok(Endpoint::Legacy(p)) => (
                true,
                self.legacy(snap, meta, req, cors, &mut caller, p, out)
                    .await,
            ),
            Err(r) => (false, Err(r)),
        };
        let mut r = match result {
            Ok(status) => return status,
            Err(r) => r,
        };
        r.count();
        let post = req.head.method == Method::Post;
        if post && at_mcp {
            let claims = caller.as_ref().and_then(|c: &Caller| c.claims.as_ref());
            match record::unreserved(shard, claims, &req.body, meta, &r) {
                // Answered once its record is written.
                Some(written) => {
                    written.wait().await;
                }
                // No room for its record: never answered unrecorded; the client is told, as
                // a call refused for want of a slot is.
                None => {
                    r = Refusal::audit_unavailable();
                    r.count();
                }
            }
        }
        let parsed = post.then(|| Message::parse(&req.body).ok()).flatten();
        send(out, r.response(st, parsed.and_then(|m| m.id)), cors).await
    }

    /// Steps 3–11 at the MCP endpoint.
    async fn mcp<S: AsyncWriteRent>(
        &self,
        snap: &Arc<Snapshot>,
        meta: &Meta,
        req: &Request,
        cors: Option<&str>,
        caller: &mut Option<Caller>,
        out: &mut Responder<'_, S>,
    ) -> Result<u16, Refusal> {
        // 3. Authenticate, before anything else is revealed (even the 405 for GET).
        let caller = &*caller.insert(authn::authenticate(&self.shard, snap, req).await?);
        if let Some(n) = &caller.next_nonce {
            out.add_header("dpop-nonce", n.clone());
        }
        let cx = Cx {
            shard: &self.shard,
            snap,
            meta,
            caller,
            cors,
            modern: None,
        };
        // 4. The caller's rate limit (needs the user; before any session or upstream work).
        limits::per_user(&cx, req.head.method == Method::Post)?;
        // 2026-07-28 has no GET stream and no sessions to DELETE.
        let modern_header = req
            .head
            .get_str("mcp-protocol-version")
            .is_some_and(|v| era::is_modern(v.trim()));
        match req.head.method {
            Method::Post => self.post(&cx, req, out).await,
            Method::Get | Method::Delete if modern_header => {
                Err(Refusal::method_not_allowed("POST, OPTIONS"))
            }
            Method::Delete => Ok(send(out, sessions::end(&cx, req).await?, cors).await),
            Method::Get => {
                // The session is checked first, so a stale id gets its 404.
                let session = sessions::required(&cx, req)?;
                admit::get_headers(req)?;
                let id = req.head.get_str("mcp-session-id").unwrap_or_default();
                let last = req.head.get_str("last-event-id");
                Ok(stream::session_stream(&cx, &session, id, last, out).await)
            }
            _ => Err(Refusal::method_not_allowed("GET, POST, DELETE, OPTIONS")),
        }
    }

    /// Steps 3–11 on the 2024-11-05 HTTP+SSE transport: the same authentication and
    /// per-user limit, then its stream (GET) or one posted message (POST) — [`super::sse_legacy`].
    #[allow(clippy::too_many_arguments)]
    async fn legacy<S: AsyncWriteRent>(
        &self,
        snap: &Arc<Snapshot>,
        meta: &Meta,
        req: &Request,
        cors: Option<&str>,
        caller: &mut Option<Caller>,
        path: sse_legacy::LegacyPath,
        out: &mut Responder<'_, S>,
    ) -> Result<u16, Refusal> {
        let caller = &*caller.insert(authn::authenticate(&self.shard, snap, req).await?);
        let cx = Cx {
            shard: &self.shard,
            snap,
            meta,
            caller,
            cors,
            modern: None,
        };
        limits::per_user(&cx, req.head.method == Method::Post)?;
        match (path, req.head.method) {
            (sse_legacy::LegacyPath::Stream, Method::Get) => {
                admit::get_headers(req)?;
                Ok(sse_legacy::open(&cx, out).await)
            }
            (sse_legacy::LegacyPath::Messages, Method::Post) => {
                sse_legacy::message(self, &cx, req, out).await
            }
            (sse_legacy::LegacyPath::Stream, _) => Err(Refusal::method_not_allowed("GET, OPTIONS")),
            (sse_legacy::LegacyPath::Messages, _) => {
                Err(Refusal::method_not_allowed("POST, OPTIONS"))
            }
        }
    }

    /// Steps 5–11 of a POST: one JSON-RPC message, or (2025-03-26 sessions) a batch.
    async fn post<S: AsyncWriteRent>(
        &self,
        cx: &Cx<'_>,
        req: &Request,
        out: &mut Responder<'_, S>,
    ) -> Result<u16, Refusal> {
        // 5. Parse: media headers, then one message (duplicate members anywhere refused).
        admit::post_headers(req)?;
        let msg = match Message::parse(&req.body) {
            Ok(m) => m,
            Err(Invalid::Parse) => return Err(Refusal::parse_error()),
            Err(Invalid::Envelope) => return Err(Refusal::invalid_request("Invalid Request")),
            Err(Invalid::Batch) => {
                // Batches exist only in 2025-03-26; later revisions removed them.
                let session = sessions::lookup(cx, req)?
                    .filter(|s| s.protocol_version == "2025-03-26")
                    .ok_or_else(|| {
                        Refusal::invalid_request(
                            "JSON-RPC batches are not supported by this protocol version",
                        )
                    })?;
                let resp = match batch::run::<S>(self, cx, &session, &req.body).await? {
                    Some(body) => Response::json(200, body),
                    None => Response::new(202),
                };
                return Ok(send(out, resp, cx.cors).await);
            }
        };
        // A modern (2026-07-28) request is served statelessly, per request.
        let version_header = req.head.get_str("mcp-protocol-version");
        if let Some(m) = era::detect(msg.params, version_header).map_err(Refusal::modern)? {
            return modern::serve(self, cx, req, &msg, m, out).await;
        }
        if let Some(v) = req.head.get_str("mcp-protocol-version")
            && era::is_modern(v.trim())
        {
            return Err(Refusal::modern_meta_invalid(format!(
                "MCP-Protocol-Version is {} but params._meta lacks \"{}\"",
                v.trim(),
                era::META_VERSION
            ))
            .modern());
        }
        // 6. The session: initialize opens one; everything else needs one.
        if msg.method.as_deref() == Some("initialize") {
            if msg.kind() != Kind::Request {
                return Err(Refusal::invalid_request("initialize must be a request"));
            }
            return Ok(send(out, sessions::initialize(cx, &msg)?, cx.cors).await);
        }
        let session = sessions::required(cx, req)?;
        if msg.kind() != Kind::Request {
            self.deliver(cx, &session, &msg).await;
            return Ok(send(out, Response::new(202), cx.cors).await);
        }
        let answer = self.request(cx, &session, &msg, Some(&mut *out)).await;
        Ok(match answer {
            Ok(None) => 200, // relayed
            Ok(Some(body)) => send(out, Response::json(200, body), cx.cors).await,
            Err(r) => send(out, r.response(&cx.snap.settings, msg.id), cx.cors).await,
        })
    }

    /// Steps 6–11 of one JSON-RPC request, alone (`out`: the answer is relayed, streams
    /// included; `Ok(None)`) or in a batch (the answer is returned). Exactly one audit record
    /// is committed for every upstream-bound method; a refusal comes back counted and on
    /// record, to be answered by the caller.
    pub(super) async fn request<S: AsyncWriteRent>(
        &self,
        cx: &Cx<'_>,
        session: &Arc<Session>,
        msg: &Message<'_>,
        out: Option<&mut Responder<'_, S>>,
    ) -> Result<Option<Vec<u8>>, Refusal> {
        let null = jsonrpc::null();
        let id = msg.id.unwrap_or(&null);
        // 6. The audit record, reserved before anything happens — or the call is refused.
        let mut rec = match Audit::open(cx, msg) {
            Ok(rec) => rec,
            Err(r) => {
                r.count();
                return Err(r);
            }
        };
        if let Some(a) = rec.as_mut() {
            let client = cx
                .modern
                .map_or(session.protocol_version.as_str(), |c| c.m.version.as_str());
            a.protocol(client);
        }
        let result = async {
            // 7–8. Route and authorize: a local answer, or one upstream exchange.
            let fwd = match route::plan(cx, session, msg, id, &mut rec)? {
                Plan::Local(body) => return Ok((Some(body), Report::default())),
                Plan::Forward(f) => f,
            };
            limits::per_tool(cx, fwd.tool_limit)?;
            let up = &cx.snap.upstreams[fwd.upstream];
            // 9. Delegate: a token for this one call, or the call fails here.
            let call = delegate::for_call(cx, up, fwd.tool.as_deref(), &mut rec).await?;
            // 10. Forward: one request to a bridged REST API, or to an MCP upstream.
            match (&up.bridge, fwd.tool.as_deref()) {
                (Some(bridge), Some(tool)) => {
                    let (body, report) =
                        forward::bridge_call(cx.shard, up, bridge, tool, &fwd.params, call, id)
                            .await?;
                    Ok((Some(body), report))
                }
                // A relayed answer's record is settled before its last bytes (`record::Open`).
                _ => forward::mcp(cx, session, &fwd, call, id, out, &mut rec).await,
            }
        }
        .await;
        // 11. Audit: exactly one record, whatever happened, written before the answer leaves.
        match result {
            Ok((body, report)) => {
                record::settle(cx.shard, &mut rec, &report).await;
                Ok(body)
            }
            Err(r) => {
                r.count();
                record::settle_refused(cx.shard, &mut rec, &r).await;
                Err(r)
            }
        }
    }

    /// A notification or a client's response: delivered upstream, answered 202.
    pub(super) async fn deliver(&self, cx: &Cx<'_>, session: &Arc<Session>, msg: &Message<'_>) {
        match msg.kind() {
            Kind::Response => forward::client_response(cx.shard, cx.snap, session, msg).await,
            _ => forward::notification(cx.shard, cx.snap, session, msg).await,
        }
    }
}

/// Send a full response with CORS headers; returns the status for metrics.
pub(crate) async fn send<S: AsyncWriteRent>(
    out: &mut Responder<'_, S>,
    mut resp: Response,
    cors: Option<&str>,
) -> u16 {
    http::add_cors(&mut resp.headers, cors);
    let status = resp.status;
    let _ = out.send(resp).await;
    status
}
