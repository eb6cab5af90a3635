//! Step 10 of the request path: forwarding. Upstream sessions, id rewriting, JSON and SSE
//! relay to MCP upstreams; one request per call to bridged REST APIs; notifications and
//! client responses routed back to the upstream that asked.

use std::sync::Arc;

use monoio::io::AsyncWriteRent;
use serde_json::value::RawValue;

use super::delegate::session_auth;
use super::http::{self, UPSTREAM_VERSION};
use super::items;
use super::modern::{self, Shape};
pub(super) use super::notes::send_note;
pub use super::notes::{client_response, close_upstream_sessions, notification};
use super::park::{self, Parker};
use super::pipeline::send;
use super::record::{Audit, Open, Report};
use super::refusal::Refusal;
use super::rewrite;
use super::route::Forward;
use super::vocab::{Cx, Outbound};
use crate::http1::Response;
use crate::http1::conn::Responder;
use crate::jsonrpc::{self, Message};
use crate::secret::Secret;
use crate::session::{Session, UpstreamSession};
use crate::shard::Shard;
use crate::snapshot::Upstream;
use crate::upstream::{self, Replay, UpBody, UpError, UpResponse};

/// The header value of a credential, for the one place it is written: the upstream request.
pub(super) fn exposed(auth: &Option<Secret<String>>) -> Option<&str> {
    auth.as_ref().map(|a| a.expose().as_str())
}

/// Headers for an upstream request in an upstream session.
pub(super) fn headers<'a>(
    up_sess: Option<&'a UpstreamSession>,
    auth: Option<&'a str>,
    version: &'a str,
) -> Vec<(&'static str, &'a str)> {
    let mut h: Vec<(&'static str, &'a str)> = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", version),
    ];
    if let Some(sid) = up_sess.and_then(|s| s.session_id.as_deref()) {
        h.push(("mcp-session-id", sid));
    }
    if let Some(a) = auth {
        h.push(("authorization", a));
    }
    h
}

/// Read a response to `gid` from a JSON or SSE body, ignoring anything else.
async fn collect_response(
    resp: UpResponse,
    gid: u64,
    shard: &Shard,
    up: &Upstream,
) -> Result<Vec<u8>, UpError> {
    match resp.body {
        UpBody::Full(b) => Ok(b),
        UpBody::Sse(mut s) => loop {
            match s.next_event().await? {
                None => return Err(UpError::Closed),
                Some(ev) => {
                    if let Ok(m) = Message::parse(ev.data.as_bytes())
                        && m.method.is_none()
                        && rewrite::gateway_id(m.id) == Some(gid)
                    {
                        let data = ev.data.into_bytes();
                        s.finish(&shard.pool, up.id);
                        return Ok(data);
                    }
                }
            }
        },
    }
}

/// Open (once) the gateway's session with `up` for this client session: `initialize` asks
/// for the newest 2025 revision ([`UPSTREAM_VERSION`]) whatever the client's, and the
/// upstream's answer, if Warden speaks it, is the `MCP-Protocol-Version` of every later
/// request in that session; any other answer is refused ([`UpError::UnsupportedVersion`]).
async fn ensure_upstream_session(
    shard: &Shard,
    session: &Session,
    up: &Upstream,
) -> Result<UpstreamSession, UpError> {
    if let Some(s) = session.upstream_sessions.get(&up.id) {
        return Ok(s.clone());
    }
    let gid = shard.next_upstream_id();
    // Forward the client's declared capabilities so sampling/elicitation requests make sense upstream.
    let mut params: serde_json::Value = session
        .client_init
        .as_deref()
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    if !params.is_object() {
        params = serde_json::json!({});
    }
    params["protocolVersion"] = serde_json::Value::String(UPSTREAM_VERSION.to_owned());
    if params.get("capabilities").is_none() {
        params["capabilities"] = serde_json::json!({});
    }
    params["clientInfo"] =
        serde_json::json!({"name": "warden", "version": env!("CARGO_PKG_VERSION")});
    let body = rewrite::upstream_request(gid, "initialize", &params.to_string());
    let auth = session_auth(shard, up).await?;
    let h = headers(None, exposed(&auth), UPSTREAM_VERSION);
    let resp = upstream::send(
        &shard.pool,
        up,
        "POST",
        &h,
        &body,
        up.timeout,
        Replay::of_method("initialize"),
    )
    .await?;
    if resp.status != 200 {
        return Err(UpError::BadResponse);
    }
    let sid = resp.header("mcp-session-id").map(str::to_owned);
    let data = collect_response(resp, gid, shard, up).await?;
    let v: serde_json::Value = serde_json::from_slice(&data).map_err(|_| UpError::BadResponse)?;
    let version = v
        .pointer("/result/protocolVersion")
        .and_then(|x| x.as_str())
        .ok_or(UpError::BadResponse)?
        .to_owned();
    if !http::speaks(&version) {
        tracing::warn!(upstream = %up.name, version = ?version, "Upstream session refused: unsupported protocol version");
        // The session it opened is ended again (best effort), in the revision it asked for.
        let asked = UpstreamSession {
            session_id: sid,
            protocol_version: UPSTREAM_VERSION.to_owned(),
        };
        if asked.session_id.is_some() {
            let h = headers(Some(&asked), exposed(&auth), UPSTREAM_VERSION);
            let _ =
                upstream::send(&shard.pool, up, "DELETE", &h, b"", up.timeout, Replay::Safe).await;
        }
        return Err(UpError::UnsupportedVersion);
    }
    let us = UpstreamSession {
        session_id: sid,
        protocol_version: version,
    };
    let h = headers(Some(&us), exposed(&auth), &us.protocol_version);
    let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let r = upstream::send(&shard.pool, up, "POST", &h, note, up.timeout, Replay::Never).await?;
    if !(200..300).contains(&r.status) {
        return Err(UpError::BadResponse);
    }
    if let UpBody::Sse(s) = r.body {
        drop(s);
    }
    session.upstream_sessions.insert(up.id, us.clone());
    Ok(us)
}

fn upstream_error(id: &RawValue, up: &Upstream, e: &UpError) -> Vec<u8> {
    upstream_refusal(up, e).body(Some(id))
}

/// An upstream failure before any answer reached the client (counted by kind).
pub(super) fn upstream_refusal(up: &Upstream, e: &UpError) -> Refusal {
    metrics::counter!("warden_upstream_errors_total", "upstream" => up.name.clone(), "kind" => error_kind(e)).increment(1);
    let msg = format!("Upstream '{}' failed: {e}", up.name);
    Refusal::upstream("upstream_error", msg, e.to_string())
}

fn error_kind(e: &UpError) -> &'static str {
    match e {
        UpError::Connect => "connect",
        UpError::Timeout => "timeout",
        UpError::Closed => "closed",
        UpError::Unanswered => "unanswered",
        UpError::BadResponse => "bad_response",
        UpError::TooLarge => "too_large",
        UpError::Credential => "credential",
        UpError::CredentialExpired => "credential_expired",
        UpError::Tls => "tls",
        UpError::UnsupportedVersion => "unsupported_version",
    }
}

/// Send one request to a 2026-07-28 upstream: stateless, `_meta` in the params, the
/// mirrored headers (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`) beside it; no session.
pub(super) async fn exchange_stateless(
    shard: &Shard,
    session: &Arc<Session>,
    up: &Upstream,
    version: &str,
    wire: &Wire<'_>,
    call: &Outbound,
    client_id: &RawValue,
) -> Result<(UpResponse, u64), UpError> {
    let gid = shard.next_upstream_id();
    let body = rewrite::upstream_request(gid, wire.method, wire.params);
    let auth = outbound_auth(shard, up, call).await?;
    let mut h: Vec<(&str, &str)> = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", version),
        ("mcp-method", wire.method),
    ];
    if let Some(n) = &wire.name {
        h.push(("mcp-name", n.as_str()));
    }
    for (k, v) in &wire.param_headers {
        h.push((k.as_str(), v.as_str()));
    }
    if let Some(a) = exposed(&auth) {
        h.push(("authorization", a));
    }
    if let Some(tp) = &call.traceparent {
        h.push(("traceparent", tp.as_str()));
    }
    session
        .inflight
        .insert(client_id.get().to_owned(), (up.id, gid));
    let replay = Replay::of_method(wire.method);
    let r = upstream::send(&shard.pool, up, "POST", &h, &body, up.timeout, replay).await?;
    Ok((r, gid))
}

/// The `Authorization` of one send of `call`: its own delegation token while unexpired (an
/// expired one is never sent: [`UpError::CredentialExpired`]), else the session credential.
async fn outbound_auth(
    shard: &Shard,
    up: &Upstream,
    call: &Outbound,
) -> Result<Option<Secret<String>>, UpError> {
    match &call.auth {
        Some(_)
            if call
                .auth_exp
                .is_some_and(|exp| shard.clock.unix_secs() >= exp) =>
        {
            Err(UpError::CredentialExpired)
        }
        Some(a) => Ok(Some(a.clone())),
        None => session_auth(shard, up).await,
    }
}

/// What goes to a modern upstream besides the session-free body: the method and params in
/// its revision, and the headers mirroring them.
pub(super) struct Wire<'a> {
    method: &'a str,
    params: &'a str,
    /// `Mcp-Name`, encoded.
    name: Option<String>,
    param_headers: Vec<(String, String)>,
}

/// Send one request to `up` in this client's upstream session, with a gateway id.
/// Records the id mapping for cancellation; the caller removes it.
async fn exchange(
    shard: &Shard,
    session: &Arc<Session>,
    up: &Upstream,
    method: &str,
    params: &str,
    call: &Outbound,
    client_id: &RawValue,
) -> Result<(UpResponse, u64), UpError> {
    let mut retried = false;
    loop {
        let us = ensure_upstream_session(shard, session, up).await?;
        let gid = shard.next_upstream_id();
        let body = rewrite::upstream_request(gid, method, params);
        let auth = outbound_auth(shard, up, call).await?;
        let mut h = headers(Some(&us), exposed(&auth), &us.protocol_version);
        if let Some(tp) = &call.traceparent {
            h.push(("traceparent", tp.as_str()));
        }
        session
            .inflight
            .insert(client_id.get().to_owned(), (up.id, gid));
        let replay = Replay::of_method(method);
        let r = upstream::send(&shard.pool, up, "POST", &h, &body, up.timeout, replay).await?;
        // The upstream forgot our session (restart, expiry): open a new one, once.
        if r.status == 404 && !retried && us.session_id.is_some() {
            session.upstream_sessions.remove(&up.id);
            retried = true;
            continue;
        }
        return Ok((r, gid));
    }
}

/// Observe the upstream's time (and return it in milliseconds, for the audit record).
pub(super) fn record_latency(shard: &Shard, up: &Upstream, started: quanta::Instant) -> f64 {
    let secs = shard
        .clock
        .now()
        .saturating_duration_since(started)
        .as_secs_f64();
    shard.meters.upstream_latency(&up.name, secs);
    secs * 1000.0
}

/// A `tools/call` on a bridged REST API: validate the arguments, build exactly one request
/// for exactly that operation, map the answer to a tool result: the JSON-RPC body and the
/// report; refused arguments or a failed request are refusals (nothing was answered).
pub(super) async fn bridge_call(
    shard: &Shard,
    up: &Upstream,
    bridge: &warden_bridge::Bridge,
    tool: &str,
    params: &str,
    call: Outbound,
    client_id: &RawValue,
) -> Result<(Vec<u8>, Report), Refusal> {
    let args = serde_json::from_str::<serde_json::Value>(params)
        .ok()
        .and_then(|p| p.get("arguments").cloned());
    let req = match bridge.build_request(tool, args.as_ref()) {
        Ok(r) => r,
        Err(e) => return Err(Refusal::bad_arguments(e.json_rpc_code(), e.to_string())),
    };
    // The bridge's request carries its own Accept.
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(req.headers.len() + 3);
    for (k, v) in &req.headers {
        headers.push((k.as_str(), v.as_str()));
    }
    if let Some(ct) = &req.content_type {
        headers.push(("content-type", ct.as_str()));
    }
    if let Some(a) = &call.auth {
        headers.push(("authorization", a.expose().as_str()));
    }
    if let Some(tp) = &call.traceparent {
        headers.push(("traceparent", tp.as_str()));
    }
    let body = req.body.unwrap_or_default();
    let started = shard.clock.now();
    let out = upstream::Outgoing {
        method: &req.method,
        path: &req.path_and_query,
        headers: &headers,
        body: &body,
        timeout: up.timeout,
        // A bridged REST call is a tools/call, whatever its HTTP method.
        replay: Replay::Never,
    };
    let sent = upstream::send_to(&shard.pool, up, &out).await;
    let upstream_ms = Some(record_latency(shard, up, started));
    match sent {
        Ok(resp) => {
            let status = resp.status;
            let ct = resp.header("content-type").map(str::to_owned);
            let bytes = match resp.body {
                UpBody::Full(b) => b,
                UpBody::Sse(_) => {
                    let e = UpError::BadResponse;
                    return Ok((
                        upstream_error(client_id, up, &e),
                        Report {
                            upstream_ms,
                            ..Report::failed(
                                Some(status),
                                "unexpected event stream from a REST API",
                            )
                        },
                    ));
                }
            };
            let result = bridge.map_response(tool, status, ct.as_deref(), &bytes);
            let failure = (status >= 400).then(|| format!("HTTP {status}"));
            if failure.is_some() {
                metrics::counter!("warden_upstream_errors_total", "upstream" => up.name.clone(), "kind" => "status").increment(1);
            }
            Ok((
                jsonrpc::result_value(client_id, &result),
                Report {
                    upstream_status: Some(status),
                    failure,
                    upstream_ms,
                },
            ))
        }
        Err(e) => Err(upstream_refusal(up, &e)),
    }
}

/// Forward one request to an MCP upstream in this client's upstream session. With `out`,
/// relay the answer (JSON or SSE) to the client with its own id, its record `rec` settled
/// just before the answer's last bytes; without (inside a batch), return the final answer.
/// An upstream that fails before answering is a refusal.
pub(super) async fn mcp<S: AsyncWriteRent>(
    cx: &Cx<'_>,
    session: &Arc<Session>,
    fwd: &Forward,
    call: Outbound,
    client_id: &RawValue,
    out: Option<&mut Responder<'_, S>>,
    rec: &mut Option<Audit>,
) -> Result<(Option<Vec<u8>>, Report), Refusal> {
    let (shard, up) = (cx.shard, &cx.snap.upstreams[fwd.upstream]);
    let started = shard.clock.now();
    let mut open = Open::new(rec, started);
    // Each upstream is spoken to in its own revision, whatever the client's.
    let upstream_version = cx.snap.settings.modern_upstream(up.id);
    let shape = Shape::of(cx, &fwd.method, upstream_version.is_some());
    let uris = fwd.uri_prefix.as_deref();
    let exchanged = match upstream_version {
        Some(version) => {
            let caps = match cx.modern {
                Some(c) => c.m.capabilities.clone(),
                None => session_capabilities(session),
            };
            let level = session.log_level.load_full();
            let level = level
                .as_deref()
                .map(String::as_str)
                .filter(|_| cx.modern.is_none());
            let params = modern::upstream_params(&fwd.params, version, &caps, level)
                .unwrap_or_else(|_| fwd.params.clone());
            // A 2025 client answers a modern upstream's input requests on the call's stream.
            let bridge = cx.modern.is_none() && super::era::name_field(&fwd.method).is_some();
            if bridge && let Some(out) = out {
                let r = super::input_bridge::bridged(
                    cx, session, fwd, call, client_id, out, &mut open, version, &caps, &params,
                    &shape,
                )
                .await;
                session.inflight.remove(client_id.get());
                let upstream_ms = Some(record_latency(shard, up, started));
                return r.map(|(body, report)| {
                    (
                        body,
                        Report {
                            upstream_ms,
                            ..report
                        },
                    )
                });
            }
            let wire = wire(cx, fwd, &params);
            exchange_stateless(shard, session, up, version, &wire, &call, client_id).await
        }
        None => {
            let params = match cx.modern {
                Some(_) => modern::legacy_params(&fwd.params),
                None => fwd.params.clone(),
            };
            // A modern client's retry with the input a parked call asked for: that call goes on.
            if cx.modern.is_some()
                && let Some((marker, answer)) = park::resuming(&params)
            {
                let outcome = park::resume(shard, &marker, answer, up.timeout).await?;
                return park::answer(cx, up, outcome, client_id, out, &mut open, &shape, uris)
                    .await;
            }
            exchange(shard, session, up, &fwd.method, &params, &call, client_id).await
        }
    };
    // A modern client's call to a 2025 upstream may be parked when the upstream asks for input.
    let parker = match (cx.modern, upstream_version) {
        (Some(c), None) => Some(Parker {
            shard: cx.shard,
            snap: cx.snap,
            session,
            upstream: fwd.upstream,
            caps: &c.m.capabilities,
        }),
        _ => None,
    };
    let result = match (exchanged, out) {
        (Err(e), _) => Err(upstream_refusal(up, &e)),
        (Ok((r, gid)), Some(out)) => Ok((
            None,
            relay(
                shard,
                session,
                up,
                r,
                gid,
                client_id,
                out,
                &mut open,
                parker.as_ref(),
                cx.cors,
                &shape,
                uris,
            )
            .await,
        )),
        (Ok((r, gid)), None) => Ok(collect(shard, up, r, gid, client_id, &shape, uris).await),
    };
    session.inflight.remove(client_id.get());
    let upstream_ms = Some(record_latency(shard, up, started));
    result.map(|(body, report)| {
        (
            body,
            Report {
                upstream_ms,
                ..report
            },
        )
    })
}

/// The capabilities a 2025-era client declared in its `initialize`.
fn session_capabilities(session: &Session) -> serde_json::Value {
    session
        .client_init
        .as_deref()
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        .and_then(|p| p.get("capabilities").cloned())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}))
}

/// The mirrored headers of a request to a modern upstream, from its (checked) params.
pub(super) fn wire<'a>(cx: &Cx<'_>, fwd: &'a Forward, params: &'a str) -> Wire<'a> {
    let p: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(params).unwrap_or_default();
    let name = super::era::name_field(&fwd.method)
        .and_then(|f| p.get(f))
        .and_then(serde_json::Value::as_str)
        .map(super::era::encode_value);
    let param_headers = match (fwd.method.as_str(), &fwd.tool) {
        ("tools/call", Some(_)) => {
            let exposed = p
                .get("name")
                .and_then(serde_json::Value::as_str)
                .and_then(|n| route_of(cx, fwd.upstream, n));
            let args = p.get("arguments").unwrap_or(&serde_json::Value::Null);
            exposed
                .map(|r| super::era::param_headers(&r.param_headers, args))
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    Wire {
        method: &fwd.method,
        params,
        name,
        param_headers,
    }
}

/// The route of an upstream's own tool name (the table is keyed by the exposed name).
fn route_of<'s>(
    cx: &Cx<'s>,
    upstream: usize,
    upstream_name: &str,
) -> Option<&'s crate::snapshot::ToolRoute> {
    cx.snap
        .tools
        .routes
        .values()
        .find(|r| r.upstream == upstream && r.upstream_name == upstream_name)
}

/// The final answer of a forwarded request (for batches), with the client's id.
async fn collect(
    shard: &Shard,
    up: &Upstream,
    r: UpResponse,
    gid: u64,
    client_id: &RawValue,
    shape: &Shape<'_>,
    uris: Option<&str>,
) -> (Option<Vec<u8>>, Report) {
    let status = Some(r.status);
    let result = if r.status != 200 {
        Err(UpError::BadResponse)
    } else {
        collect_response(r, gid, shard, up).await
    };
    let (body, report) = match result {
        Ok(b) => match Message::parse(&b) {
            Ok(m) if m.method.is_none() => (
                shape.apply(items::outbound(
                    uris,
                    rewrite::reframe(&m, Some(client_id), None),
                )),
                Report {
                    upstream_status: status,
                    failure: None,
                    upstream_ms: None,
                },
            ),
            _ => (
                upstream_error(client_id, up, &UpError::BadResponse),
                Report::failed(status, UpError::BadResponse.to_string()),
            ),
        },
        Err(e) => (
            upstream_error(client_id, up, &e),
            Report::failed(status, e.to_string()),
        ),
    };
    (Some(body), report)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn relay<S: AsyncWriteRent>(
    shard: &Shard,
    session: &Session,
    up: &Upstream,
    r: UpResponse,
    gid: u64,
    client_id: &RawValue,
    out: &mut Responder<'_, S>,
    open: &mut Open<'_>,
    parker: Option<&Parker<'_>>,
    cors: Option<&str>,
    shape: &Shape<'_>,
    uris: Option<&str>,
) -> Report {
    let status = Some(r.status);
    // A 2026-07-28 upstream answers its protocol errors (-32020..-32022, -32601) with HTTP
    // 400/404 and a JSON-RPC error: that error is the answer, not an upstream failure.
    let protocol_error = shape.upstream_is_modern()
        && matches!(r.status, 400 | 404)
        && matches!(r.body, UpBody::Full(_));
    if r.status != 200 && !protocol_error {
        let e = format!("Upstream '{}' answered HTTP {}", up.name, r.status);
        metrics::counter!("warden_upstream_errors_total", "upstream" => up.name.clone(), "kind" => "status").increment(1);
        let refused = Refusal::upstream("upstream_status", e.clone(), e.clone());
        refused.count();
        let report = Report::failed(status, e);
        open.settle(shard, &report).await;
        send(
            out,
            Response::json(200, shape.refusal(refused, Some(client_id))),
            cors,
        )
        .await;
        return report;
    }
    let ok = Report {
        upstream_status: status,
        failure: None,
        upstream_ms: None,
    };
    match r.body {
        UpBody::Full(b) => {
            let (body, report) = match Message::parse(&b) {
                Ok(m) if m.method.is_none() && rewrite::gateway_id(m.id) == Some(gid) => (
                    shape.apply(items::outbound(
                        uris,
                        rewrite::reframe(&m, Some(client_id), None),
                    )),
                    ok,
                ),
                _ => (
                    shape.refusal(upstream_refusal(up, &UpError::BadResponse), Some(client_id)),
                    Report::failed(status, UpError::BadResponse.to_string()),
                ),
            };
            open.settle(shard, &report).await;
            send(out, Response::json(shape.status(&body), body), cors).await;
            report
        }
        UpBody::Sse(mut stream) => {
            if out
                .start_stream(200, &super::http::sse_headers(cors))
                .await
                .is_err()
            {
                return Report::failed(status, "client went away");
            }
            let mut ev_buf = Vec::with_capacity(512);
            loop {
                let ev = match stream.next_event().await {
                    Ok(Some(ev)) => ev,
                    Ok(None) => {
                        let e =
                            shape.refusal(upstream_refusal(up, &UpError::Closed), Some(client_id));
                        let report = Report::failed(status, UpError::Closed.to_string());
                        open.settle(shard, &report).await;
                        write_event(&mut ev_buf, None, &e);
                        let _ = out.send_chunk(&ev_buf).await;
                        let _ = out.end_stream().await;
                        return report;
                    }
                    Err(err) => {
                        let e = shape.refusal(upstream_refusal(up, &err), Some(client_id));
                        let report = Report::failed(status, err.to_string());
                        open.settle(shard, &report).await;
                        write_event(&mut ev_buf, None, &e);
                        let _ = out.send_chunk(&ev_buf).await;
                        let _ = out.end_stream().await;
                        return report;
                    }
                };
                let event_id = ev.id.as_ref().map(|i| format!("u{}-{i}", up.id));
                if ev.data.is_empty() {
                    // Priming events (id only) carry no message; pass the id on.
                    ev_buf.clear();
                    if let Some(i) = &event_id {
                        ev_buf.extend_from_slice(format!("id: {i}\ndata: \n\n").as_bytes());
                        if out.send_chunk(&ev_buf).await.is_err() {
                            return Report::failed(status, "client went away");
                        }
                    }
                    continue;
                }
                let Ok(m) = Message::parse(ev.data.as_bytes()) else {
                    continue; // Garbage events are dropped, not relayed.
                };
                let (data, done) = match (m.method.is_some(), m.id) {
                    (false, _) if rewrite::gateway_id(m.id) == Some(gid) => (
                        shape.apply(items::outbound(
                            uris,
                            rewrite::reframe(&m, Some(client_id), None),
                        )),
                        true,
                    ),
                    (false, _) => continue, // A response to something else: not for this client.
                    // A 2026-07-28 client takes no requests on a response stream: where it can
                    // answer by MRTR, the call is parked and the client gets `input_required`;
                    // otherwise the upstream is told this client cannot answer, and the call
                    // goes on without it.
                    (true, Some(id)) if shape.is_modern_client() => {
                        if let Some(p) = parker
                            && let Some((method, params)) = park::bridgeable(&m, p.caps)
                        {
                            match park::park(p, stream, gid, id.to_owned()) {
                                Ok(marker) => {
                                    let body =
                                        park::input_required(client_id, &method, &params, &marker);
                                    open.settle(shard, &ok).await;
                                    write_event(&mut ev_buf, None, &shape.apply(body));
                                    let _ = out.send_chunk(&ev_buf).await;
                                    let _ = out.end_stream().await;
                                    return ok;
                                }
                                Err(back) => stream = *back,
                            }
                        }
                        decline_server_request(shard, session, up, id).await;
                        continue;
                    }
                    (true, Some(id)) => {
                        let wrapped = rewrite::wrap_server_id(up.id, id);
                        (rewrite::reframe(&m, Some(&wrapped), None), false)
                    }
                    // An upstream's list changed: the control plane rediscovers it, and each
                    // client's own stream tells it if what it may see changed. The
                    // upstream's own wording (its names, not the gateway's) is not relayed.
                    (true, None) if announces_list_change(m.method.as_deref()) => {
                        shard.shared.control.upstream_changed(up.id);
                        continue;
                    }
                    (true, None) => (items::outbound(uris, ev.data.clone().into_bytes()), false),
                };
                if done {
                    open.settle(shard, &ok).await;
                }
                write_event(&mut ev_buf, event_id.as_deref(), &data);
                if out.send_chunk(&ev_buf).await.is_err() {
                    // Client went away; dropping the stream closes the upstream connection.
                    return Report::failed(status, "client went away");
                }
                if done {
                    let _ = out.end_stream().await;
                    stream.finish(&shard.pool, up.id);
                    return ok;
                }
            }
        }
    }
}

/// `notifications/{tools,prompts,resources}/list_changed`.
pub fn announces_list_change(method: Option<&str>) -> bool {
    matches!(
        method,
        Some(
            "notifications/tools/list_changed"
                | "notifications/prompts/list_changed"
                | "notifications/resources/list_changed"
        )
    )
}

/// Answer an upstream's request to the client that a 2026-07-28 client cannot receive on a
/// response stream: an error to the upstream (in the session the gateway holds), so its call
/// goes on — or fails — without waiting for an answer that will not come.
pub(super) async fn decline_server_request(
    shard: &Shard,
    session: &Session,
    up: &Upstream,
    id: &RawValue,
) {
    let why = "The client speaks MCP 2026-07-28 and cannot answer requests during a call through the gateway";
    decline(shard, session, up, id, why).await;
}

/// Answer an upstream's request `id` with `-32601` and `why`, in the session the gateway
/// holds with it (counted in `warden_server_requests_declined_total`).
pub(super) async fn decline(
    shard: &Shard,
    session: &Session,
    up: &Upstream,
    id: &RawValue,
    why: &str,
) {
    let body = jsonrpc::error(Some(id), jsonrpc::code::METHOD_NOT_FOUND, why);
    metrics::counter!("warden_server_requests_declined_total", "upstream" => up.name.clone())
        .increment(1);
    send_note(shard, session, up, &body).await;
}

pub(super) fn write_event(buf: &mut Vec<u8>, id: Option<&str>, data: &[u8]) {
    buf.clear();
    buf.extend_from_slice(b"event: message\n");
    if let Some(i) = id {
        buf.extend_from_slice(b"id: ");
        buf.extend(i.bytes().filter(|b| *b != b'\n' && *b != b'\r'));
        buf.push(b'\n');
    }
    buf.extend_from_slice(b"data: ");
    buf.extend_from_slice(data);
    buf.extend_from_slice(b"\n\n");
}

#[cfg(test)]
#[path = "forward_tests.rs"]
mod tests;
