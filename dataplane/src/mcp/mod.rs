//! The request path, in the order a request meets it:
//! parse → (Origin/Host) → authenticate → session → route → forward.
//!
//! `Gateway::handle` is the whole stack on one page; each step is a small function below.

mod authz;
mod batch;
mod call;
mod forward;
mod http;
mod limits;
mod plan;
mod rewrite;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::io::AsyncWriteRent;
use serde_json::value::RawValue;

use crate::audit::Outcome;
use crate::auth::{AuthOutcome, jwt::Claims};
use crate::http1::conn::{Handler, Request, Responder};
use crate::http1::{Method, Response};
use crate::jsonrpc::{self, Invalid, Kind, Message, code};
use crate::session::{Session, owner_of};
use crate::shard::Shard;
use crate::snapshot::Snapshot;
use call::{Audit, Meta};
use plan::Plan;

pub use authz::PolicyCaches;
pub use http::{SUPPORTED_VERSIONS, negotiate_version};
/// Re-exported for `bench/` only: routing is otherwise reachable only through a live shard.
#[doc(hidden)]
pub use rewrite::tools_call_params;

/// The per-connection handler: the MCP endpoint and the well-known documents.
#[derive(Debug)]
pub struct Gateway {
    pub shard: Rc<Shard>,
}

/// Who is calling, after authentication.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub claims: Option<Rc<Claims>>,
    pub owner: [u8; 32],
    /// The inbound token, kept only for external RFC 8693 exchange; never forwarded or logged.
    pub token: Option<crate::secret::Secret<Arc<str>>>,
}

impl Handler for Gateway {
    async fn handle<S: AsyncWriteRent>(&self, req: Request, out: &mut Responder<'_, S>) {
        // One snapshot for the whole request.
        let snap = self.shard.shared.snapshot.load_full();
        // Admission: beyond the shard's in-flight cap, a fast 503 before any other work.
        let Some(_admitted) = self.shard.admit(snap.settings.max_in_flight_per_shard) else {
            let _ = out.send(limits::overloaded()).await;
            return;
        };
        // Draining: answer what arrives on open connections, and tell the client to move on.
        if self
            .shard
            .shared
            .stopping
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            out.close_after();
        }
        let method = req.head.method;
        // Continue the caller's W3C trace, or start one: the audit record, the exported span
        // and the upstream's `traceparent` carry the same trace id; the gateway's span is the
        // upstream's parent.
        let incoming = req.head.get_str("traceparent").and_then(trace_context_of);
        let meta = Meta {
            request_id: self.shard.next_request_id(),
            trace_id: Some(incoming.map(|(t, _)| t.to_owned()).unwrap_or_else(|| {
                format!(
                    "{:016x}{:016x}",
                    self.shard.trace_bits(),
                    self.shard.trace_bits()
                )
            })),
            span_id: format!("{:016x}", self.shard.trace_bits() | 1),
            parent_span_id: incoming.map(|(_, p)| p.to_owned()),
            session: req
                .head
                .get_str("mcp-session-id")
                .map(crate::audit::short_hash),
        };
        out.add_header("x-request-id", meta.request_id.clone());
        // Log lines of this request carry its ids (cheap when debug logging is off).
        let span = tracing::debug_span!("request", request_id = %meta.request_id, trace_id = meta.trace_id.as_deref().unwrap_or(""));
        let status =
            tracing::Instrument::instrument(self.route(&snap, req, &meta, out), span).await;
        metrics::counter!("warden_http_requests_total", "method" => method_label(method), "status" => status_label(status)).increment(1);
    }
}

fn method_label(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Delete => "DELETE",
        Method::Options => "OPTIONS",
        Method::Head => "HEAD",
        Method::Other => "other",
    }
}

fn status_label(s: u16) -> &'static str {
    match s {
        200 => "200",
        202 => "202",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        406 => "406",
        413 => "413",
        415 => "415",
        429 => "429",
        503 => "503",
        _ if s < 300 => "2xx",
        _ if s < 500 => "4xx",
        _ => "5xx",
    }
}

impl Gateway {
    async fn route<S: AsyncWriteRent>(
        &self,
        snap: &Arc<Snapshot>,
        req: Request,
        meta: &Meta,
        out: &mut Responder<'_, S>,
    ) -> u16 {
        let st = &snap.settings;
        let path = req.head.path.as_str();
        let origin = req.head.get_str("origin").map(str::to_owned);
        let cors = http::cors_origin(st, origin.as_deref());

        // 0. DNS-rebinding defences: a browser-supplied Origin must be allowed; Host must be ours.
        if origin.is_some() && cors.is_none() {
            return send(
                out,
                http::error_json(403, "forbidden", "Origin not allowed"),
                None,
            )
            .await;
        }
        if !http::host_allowed(st, req.head.get_str("host")) {
            return send(
                out,
                http::error_json(403, "forbidden", "Host not allowed"),
                None,
            )
            .await;
        }

        // Well-known documents (RFC 9728), public.
        if http::is_prm_path(st, path) {
            return match req.head.method {
                Method::Get | Method::Head => {
                    let r = Response::json(200, st.resource_metadata_json.clone())
                        .header("cache-control", "max-age=300");
                    send(out, r, cors.as_deref()).await
                }
                Method::Options => send(out, http::preflight(), cors.as_deref()).await,
                _ => {
                    send(
                        out,
                        Response::new(405).header("allow", "GET, HEAD, OPTIONS"),
                        cors.as_deref(),
                    )
                    .await
                }
            };
        }
        if path != st.mcp_path {
            return send(
                out,
                http::error_json(404, "not_found", "no such endpoint"),
                cors.as_deref(),
            )
            .await;
        }
        if req.head.method == Method::Options {
            return send(out, http::preflight(), cors.as_deref()).await;
        }

        // 1. Authenticate, before anything else is revealed (even the 405 for GET).
        let caller = match self.authenticate(snap, &req).await {
            Ok(c) => c,
            Err(resp) => {
                if req.head.method == Method::Post {
                    let (method, tool) = call::peek(&req.body);
                    call::record_unreserved(
                        &self.shard,
                        None,
                        &method,
                        tool.as_deref(),
                        meta,
                        Outcome::Unauthenticated,
                        "bearer token missing or invalid",
                    );
                }
                return send(out, resp, cors.as_deref()).await;
            }
        };

        // 1b. The caller's rate limit (needs the user; before any session or upstream work).
        if let Some(resp) = self.limit_user(snap, &req, &caller, meta) {
            return send(out, resp, cors.as_deref()).await;
        }

        // 2. Dispatch by HTTP method.
        let resp_status = match req.head.method {
            Method::Post => {
                return self
                    .post(snap, req, &caller, meta, out, cors.as_deref())
                    .await;
            }
            Method::Get => {
                // Sessions are checked first so a stale id gets its 404.
                match self.session(snap, &req, &caller) {
                    Err(r) => r,
                    Ok(None) => http::error_json(400, "invalid_request", "Mcp-Session-Id required"),
                    Ok(Some(_)) => Response::new(405).header("allow", "POST, DELETE, OPTIONS"),
                }
            }
            Method::Delete => match req.head.get_str("mcp-session-id") {
                None => http::error_json(400, "invalid_request", "Mcp-Session-Id required"),
                Some(id) => match self.shard.shared.sessions.remove(
                    &snap.settings.session_keys,
                    id,
                    &caller.owner,
                    self.shard.clock.unix_secs(),
                    snap.settings.session_life,
                ) {
                    Ok((sess, id_hash, until)) => {
                        // Other replicas learn of the end through the shared store.
                        self.shard.shared.control.session_ended(id_hash, until);
                        forward::close_upstream_sessions(&self.shard, snap, &sess).await;
                        Response::new(200)
                    }
                    Err(_) => http::error_json(404, "not_found", "unknown session"),
                },
            },
            _ => Response::new(405).header("allow", "GET, POST, DELETE, OPTIONS"),
        };
        send(out, resp_status, cors.as_deref()).await
    }

    /// Bearer authentication with the per-shard cache; an unknown `kid` triggers one shared refetch.
    async fn authenticate(&self, snap: &Arc<Snapshot>, req: &Request) -> Result<Caller, Response> {
        let st = &snap.settings;
        if !st.auth_enabled {
            return Ok(Caller {
                claims: None,
                owner: owner_of("", "anonymous"),
                token: None,
            });
        }
        if req
            .head
            .query
            .as_deref()
            .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("access_token=")))
        {
            metrics::counter!("warden_auth_failures_total", "reason" => "query_token").increment(1);
            return Err(http::error_json(
                400,
                "invalid_request",
                "tokens in the query string are not accepted",
            ));
        }
        let token = match req.head.count("authorization") {
            0 => {
                metrics::counter!("warden_auth_failures_total", "reason" => "missing").increment(1);
                return Err(http::challenge(st, None));
            }
            1 => req.head.get_str("authorization").and_then(http::bearer),
            _ => {
                metrics::counter!("warden_auth_failures_total", "reason" => "duplicate_header")
                    .increment(1);
                return Err(http::error_json(
                    400,
                    "invalid_request",
                    "more than one Authorization header",
                ));
            }
        };
        let Some(token) = token else {
            metrics::counter!("warden_auth_failures_total", "reason" => "not_bearer").increment(1);
            return Err(http::challenge(st, Some("invalid_token")));
        };
        let now = self.shard.clock.unix_secs();
        let (mut outcome, hit) = self.shard.cache.borrow_mut().authenticate(
            token,
            &snap.issuers,
            st.max_token_bytes,
            now,
        );
        let lookup = if hit { "hit" } else { "miss" };
        metrics::counter!("warden_token_cache_lookups_total", "result" => lookup).increment(1);
        if let AuthOutcome::UnknownKid { issuer } = outcome {
            // Ask the control plane (debounced and rate-limited there), then try once more
            // against whatever snapshot is current.
            self.shard
                .shared
                .control
                .refresh_jwks(issuer, Duration::from_secs(3))
                .await;
            let fresh = self.shard.shared.snapshot.load_full();
            outcome = self
                .shard
                .cache
                .borrow_mut()
                .authenticate(token, &fresh.issuers, st.max_token_bytes, now)
                .0;
            if let AuthOutcome::UnknownKid { .. } = outcome {
                outcome = AuthOutcome::Invalid(crate::auth::jwt::TokenError::UnknownKey);
            }
        }
        match outcome {
            AuthOutcome::Valid(claims) => {
                let owner = owner_of(&claims.iss, &claims.sub);
                Ok(Caller {
                    claims: Some(claims),
                    owner,
                    token: Some(Arc::<str>::from(token).into()),
                })
            }
            AuthOutcome::Invalid(e) => {
                metrics::counter!("warden_auth_failures_total", "reason" => e.label()).increment(1);
                tracing::debug!(reason = e.label(), "Bearer token refused");
                Err(http::challenge(st, Some("invalid_token")))
            }
            AuthOutcome::UnknownKid { .. } => Err(http::challenge(st, Some("invalid_token"))),
        }
    }

    /// The caller's session, if the request names one. `Ok(None)` = no session header.
    fn session(
        &self,
        snap: &Snapshot,
        req: &Request,
        caller: &Caller,
    ) -> Result<Option<Arc<Session>>, Response> {
        let Some(id) = req.head.get_str("mcp-session-id") else {
            return Ok(None);
        };
        if req.head.count("mcp-session-id") > 1 {
            return Err(http::error_json(
                400,
                "invalid_request",
                "repeated Mcp-Session-Id",
            ));
        }
        let now = self.shard.clock.unix_secs();
        self.shard
            .shared
            .sessions
            .get(
                &snap.settings.session_keys,
                id,
                &caller.owner,
                now,
                snap.settings.session_life,
            )
            .map(Some)
            .map_err(|_| http::error_json(404, "not_found", "unknown or ended session"))
    }

    async fn post<S: AsyncWriteRent>(
        &self,
        snap: &Arc<Snapshot>,
        req: Request,
        caller: &Caller,
        meta: &Meta,
        out: &mut Responder<'_, S>,
        cors: Option<&str>,
    ) -> u16 {
        if let Err(r) = http::check_post_headers(&req) {
            let (method, tool) = call::peek(&req.body);
            call::record_unreserved(
                &self.shard,
                caller.claims.as_ref(),
                &method,
                tool.as_deref(),
                meta,
                Outcome::Rejected,
                "request headers not acceptable",
            );
            return send(out, r, cors).await;
        }
        let parsed = Message::parse(&req.body);
        if let Err(e) = &parsed
            && *e != Invalid::Batch
        {
            let (method, tool) = call::peek(&req.body);
            call::record_unreserved(
                &self.shard,
                caller.claims.as_ref(),
                &method,
                tool.as_deref(),
                meta,
                Outcome::Rejected,
                "not a valid JSON-RPC message",
            );
        }
        let msg = match parsed {
            Ok(m) => m,
            Err(Invalid::Parse) => {
                return send(
                    out,
                    Response::json(400, jsonrpc::error(None, code::PARSE_ERROR, "Parse error")),
                    cors,
                )
                .await;
            }
            Err(Invalid::Batch) => {
                // Batches exist only in 2025-03-26; later revisions removed them.
                return match self.session(snap, &req, caller) {
                    Ok(Some(s)) if s.protocol_version == "2025-03-26" => {
                        self.batch(snap, &s, caller, meta, &req.body, out, cors)
                            .await
                    }
                    Err(r) => send(out, r, cors).await,
                    Ok(_) => {
                        let e = jsonrpc::error(
                            None,
                            code::INVALID_REQUEST,
                            "JSON-RPC batches are not supported by this protocol version",
                        );
                        send(out, Response::json(400, e), cors).await
                    }
                };
            }
            Err(Invalid::Envelope) => {
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
        };
        let method = msg.method.as_deref().unwrap_or("");

        // initialize creates a session; everything else needs one.
        if method == "initialize" {
            if msg.kind() != Kind::Request {
                return send(
                    out,
                    Response::json(
                        400,
                        jsonrpc::error(None, code::INVALID_REQUEST, "initialize must be a request"),
                    ),
                    cors,
                )
                .await;
            }
            let (resp, _) = self.initialize(snap, &msg, caller);
            return send(out, resp, cors).await;
        }
        let session = match self.session(snap, &req, caller) {
            Ok(Some(s)) => s,
            Ok(None) => {
                return send(
                    out,
                    http::error_json(400, "invalid_request", "Mcp-Session-Id required"),
                    cors,
                )
                .await;
            }
            Err(r) => return send(out, r, cors).await,
        };

        match msg.kind() {
            Kind::Notification => {
                forward::notification(&self.shard, snap, &session, &msg).await;
                send(out, Response::new(202), cors).await
            }
            Kind::Response => {
                forward::client_response(&self.shard, snap, &session, &msg).await;
                send(out, Response::new(202), cors).await
            }
            Kind::Request => {
                self.request(snap, &session, caller, meta, &msg, out, cors)
                    .await
            }
        }
    }

    fn initialize(
        &self,
        snap: &Snapshot,
        msg: &Message<'_>,
        caller: &Caller,
    ) -> (Response, String) {
        let st = &snap.settings;
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
        let now = self.shard.clock.unix_secs();
        let sid = match self.shard.shared.sessions.create(
            &st.session_keys,
            caller.owner,
            version.to_owned(),
            msg.params.map(|p| p.get().to_owned()),
            now,
        ) {
            Ok(sid) => sid,
            Err(_) => {
                let body = jsonrpc::error(Some(id), -32603, "could not create a session");
                return (Response::json(500, body), String::new());
            }
        };
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
        (
            Response::json(200, body).header("mcp-session-id", sid.clone()),
            sid,
        )
    }

    /// Open the audit record of an upstream-bound request, or refuse the request.
    fn open_audit(
        &self,
        caller: &Caller,
        msg: &Message<'_>,
        meta: &Meta,
        id: &RawValue,
    ) -> Result<Option<Audit>, Vec<u8>> {
        let method = msg.method.as_deref().unwrap_or("");
        if !call::is_audited(method) {
            return Ok(None);
        }
        let tool = if method == "tools/call" {
            rewrite::tool_name(msg.params)
        } else {
            None
        };
        match Audit::begin(
            &self.shard,
            caller.claims.as_ref(),
            method,
            tool.as_deref(),
            meta,
        ) {
            Some(a) => Ok(Some(a)),
            None => Err(jsonrpc::error(
                Some(id),
                code::UNAVAILABLE,
                "The audit trail is unavailable, so the call was refused rather than run unaudited.",
            )),
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the request path's context (shard, snapshot, session, caller, ids, output) is passed explicitly rather than bundled"
    )]
    async fn request<S: AsyncWriteRent>(
        &self,
        snap: &Arc<Snapshot>,
        session: &Arc<Session>,
        caller: &Caller,
        meta: &Meta,
        msg: &Message<'_>,
        out: &mut Responder<'_, S>,
        cors: Option<&str>,
    ) -> u16 {
        let null = jsonrpc::null();
        let id: &RawValue = msg.id.unwrap_or(&null);
        let mut audit = match self.open_audit(caller, msg, meta, id) {
            Ok(a) => a,
            Err(body) => return send(out, Response::json(200, body), cors).await,
        };
        match self.plan(snap, caller, session, meta, msg, id) {
            Plan::Local(body) => {
                self.record_refusal(
                    snap,
                    audit,
                    None,
                    "unknown tool or method".into(),
                    Vec::new(),
                );
                send(out, Response::json(200, body), cors).await
            }
            Plan::Refused {
                body,
                reason,
                policy_ids,
                step_up,
                route,
            } => {
                self.record_refusal(snap, audit, route, reason, policy_ids);
                match step_up {
                    // MCP step-up: the client re-consents for the challenged scopes.
                    Some(scopes) => send(out, http::step_up(&snap.settings, &scopes), cors).await,
                    None => send(out, Response::json(200, body), cors).await,
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
                    return send(out, limited.response(), cors).await;
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
                    Next::Answer(body) => return send(out, Response::json(200, body), cors).await,
                    Next::Mcp(call) => call,
                };
                let report = forward::request(
                    &self.shard,
                    session,
                    up,
                    &method,
                    &params,
                    call,
                    id,
                    out,
                    cors,
                )
                .await;
                if let Some(a) = audit {
                    a.forwarded(&self.shard, &report);
                }
                200
            }
        }
    }
}

/// Trace id and parent span id of a W3C `traceparent` header
/// (`00-<32 hex>-<16 hex>-<2 hex>`), if well formed.
fn trace_context_of(tp: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = tp.trim().split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1] != "0".repeat(32)
        && parts[2] != "0".repeat(16))
    .then_some((parts[1], parts[2]))
}

/// After the shared forwarding steps: a finished answer, or an MCP upstream still to call.
enum Next {
    Answer(Vec<u8>),
    Mcp(forward::Outbound),
}

impl Gateway {
    /// Commit the record of a request refused before forwarding (unknown, hidden or denied).
    fn record_refusal(
        &self,
        snap: &Snapshot,
        audit: Option<Audit>,
        route: Option<(usize, String)>,
        reason: String,
        policy_ids: Vec<String>,
    ) {
        let Some(mut a) = audit else { return };
        if let Some((u, t)) = &route {
            a.route(
                &snap.upstreams[*u].name,
                (!t.is_empty()).then_some(t.as_str()),
                None,
            );
        }
        a.finish(&self.shard, Outcome::Deny, Some(reason), policy_ids, None);
    }

    /// The forwarding steps shared by single requests and batches: record the route and the
    /// deciding policies, delegate (a token for this one call, or the call fails here), and
    /// serve bridged REST calls whole. Finishes the audit record when it ends the call.
    #[expect(
        clippy::too_many_arguments,
        reason = "the request path's context (shard, snapshot, session, caller, ids, output) is passed explicitly rather than bundled"
    )]
    async fn prepare_forward(
        &self,
        snap: &Snapshot,
        caller: &Caller,
        meta: &Meta,
        audit: &mut Option<Audit>,
        up: &crate::snapshot::Upstream,
        tool: Option<&str>,
        params: &str,
        policy_ids: Vec<String>,
        id: &RawValue,
    ) -> Next {
        if let Some(a) = audit.as_mut() {
            let gw = up
                .delegation
                .as_ref()
                .and(snap.settings.delegation_client_id.as_deref());
            a.route(&up.name, tool, gw);
            a.policies(policy_ids);
        }
        let header = match forward::call_auth(&self.shard, up, tool, caller).await {
            Ok(auth) => auth.map(|(h, d)| {
                if let Some(a) = audit.as_mut() {
                    a.delegation(d);
                }
                h
            }),
            Err(e) => {
                if let Some(a) = audit.take() {
                    a.finish(
                        &self.shard,
                        Outcome::ExchangeFailed,
                        Some(e.to_string()),
                        Vec::new(),
                        None,
                    );
                }
                return Next::Answer(forward::delegation_error(id, up, &e));
            }
        };
        let call = meta.outbound(header);
        let (Some(bridge), Some(t)) = (&up.bridge, tool) else {
            return Next::Mcp(call);
        };
        let (body, report, rejected) =
            forward::bridge_call(&self.shard, up, bridge, t, params, call, id).await;
        if let Some(a) = audit.take() {
            if rejected {
                a.finish(
                    &self.shard,
                    Outcome::Rejected,
                    report.failure.clone(),
                    Vec::new(),
                    None,
                );
            } else {
                a.forwarded(&self.shard, &report);
            }
        }
        Next::Answer(body)
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
