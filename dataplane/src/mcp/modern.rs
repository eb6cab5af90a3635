//! Steps 5–11 for a modern (2026-07-28) request: served statelessly, per request. Its
//! mirrored headers are checked against the body first (`-32020`); `server/discover` is
//! answered here; an MRTR retry's `requestState` is unwrapped (or refused); then the request
//! takes the same route, policy, delegation, forwarding and audit as a session's, in a
//! session the gateway holds for the user. [`Shape`] puts every answer in the client's
//! revision: `resultType`, `serverInfo`, caching hints, its error codes, wrapped state.

use monoio::io::AsyncWriteRent;
use serde_json::{Map, Value, json};

use super::era::{self, META_SERVER, Modern};
use super::mrtr::{self, Binding};
use super::pipeline::{Gateway, send};
use super::refusal::Refusal;
use super::sessions;
use super::stream;
use super::subscribe;
use super::vocab::{Cx, ModernCall};
use crate::http1::Response;
use crate::http1::conn::{Request, Responder};
use crate::jsonrpc::{self, Kind, Message};
use crate::snapshot::Settings;

/// Freshness (`ttlMs`) of the lists and discovery result the gateway answers: a minute, so
/// a policy reload reaches a caching client within one.
pub const LIST_TTL_MS: u64 = 60_000;

/// Serve one modern request (after authentication and the per-user limit).
pub(super) async fn serve<S: AsyncWriteRent>(
    gw: &Gateway,
    cx: &Cx<'_>,
    req: &Request,
    msg: &Message<'_>,
    m: Modern,
    out: &mut Responder<'_, S>,
) -> Result<u16, Refusal> {
    let st = &cx.snap.settings;
    // 5. The mirrored headers, before anything is decided on the request.
    era::check_headers(&req.head, msg, &m, &cx.snap.tools).map_err(Refusal::modern)?;
    match msg.kind() {
        // No client notification is defined over HTTP in this revision: accepted, ignored.
        Kind::Notification => return Ok(send(out, Response::new(202), cx.cors).await),
        Kind::Response => {
            return Err(Refusal::not_in_modern(
                "a 2026-07-28 client answers input requests by retrying with inputResponses, not with a response",
            )
            .modern());
        }
        Kind::Request => {}
    }
    let method = msg.method.as_deref().unwrap_or("");
    let null = jsonrpc::null();
    let id = msg.id.unwrap_or(&null);
    if method == "server/discover" {
        return Ok(send(out, Response::json(200, discover(st, id)), cx.cors).await);
    }
    if let Some(instead) = removed(method) {
        return Err(Refusal::removed_in_modern(method, instead).modern());
    }
    if method == "subscriptions/listen" {
        let (wants, uris) = listen_filter(msg)?;
        let session = sessions::owned(cx, &m);
        let call = ModernCall { m, binding: None };
        let mcx = Cx {
            modern: Some(&call),
            ..*cx
        };
        // Each resource asked for is decided (and audited) as its `resources/subscribe`.
        let granted = subscribe::decide_each::<S>(gw, &mcx, &session, &uris).await;
        let asked_resources = (!uris.is_empty()).then_some(granted.as_slice());
        return Ok(stream::listen(&mcx, &session, id, wants, asked_resources, out).await);
    }
    let binding = era::name_field(method).map(|f| {
        let name = field_of(msg, f).unwrap_or_default();
        Binding::new(cx.caller.owner, method, &name)
    });
    // An MRTR retry: the gateway's wrapper back to the upstream's state, or refused.
    let rewritten = match &binding {
        Some(b) => unwrap_state(cx, msg, b)?,
        None => None,
    };
    let reparsed;
    let msg = match &rewritten {
        Some(body) => {
            reparsed = Message::parse(body).map_err(|_| Refusal::parse_error().modern())?;
            &reparsed
        }
        None => msg,
    };
    let call = ModernCall { m, binding };
    let session = sessions::owned(cx, &call.m);
    let mcx = Cx {
        modern: Some(&call),
        ..*cx
    };
    let answer = gw.request(&mcx, &session, msg, Some(&mut *out)).await;
    Ok(match answer {
        Ok(None) => 200, // relayed, already shaped
        Ok(Some(body)) => {
            let shape = Shape::local(&mcx, method);
            let shaped = shape.apply(body);
            send(out, Response::json(shape.status(&shaped), shaped), cx.cors).await
        }
        Err(r) => send(out, r.modern().response(st, msg.id), cx.cors).await,
    })
}

/// The methods 2026-07-28 removed, with what replaced each (404 `-32601` to a modern
/// client; never forwarded, whatever the upstream's revision).
fn removed(method: &str) -> Option<&'static str> {
    Some(match method {
        "initialize" => {
            "a request carrying 2026-07-28 _meta needs no session (use server/discover to learn the server)"
        }
        "ping" => "every request is independent; send server/discover to probe",
        "logging/setLevel" => "set _meta[\"io.modelcontextprotocol/logLevel\"] per request",
        "resources/subscribe" | "resources/unsubscribe" => {
            "use subscriptions/listen with notifications.resourceSubscriptions"
        }
        _ => return None,
    })
}

/// A `subscriptions/listen` filter: which of `toolsListChanged`, `promptsListChanged` and
/// `resourcesListChanged` it asks for (the kinds this gateway tells, in
/// [`stream::List::ALL`] order; the acknowledgment says so), and the URIs of its
/// `resourceSubscriptions` ([`subscribe::requested`]). A filter that is not an object is
/// `-32602`.
fn listen_filter(msg: &Message<'_>) -> Result<([bool; 3], Vec<String>), Refusal> {
    let p: Map<String, Value> = msg
        .params
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or_default();
    match p.get("notifications") {
        None => Ok(([false; 3], Vec::new())),
        Some(Value::Object(n)) => Ok((
            stream::List::ALL.map(|l| n.get(l.filter_key()) == Some(&Value::Bool(true))),
            subscribe::requested(p.get("notifications"))?,
        )),
        Some(_) => Err(Refusal::modern_meta_invalid(
            "params.notifications must be an object".into(),
        )),
    }
}

/// The HTTP status of a JSON-RPC error code for a modern client.
fn modern_status(code: Option<i64>) -> u16 {
    match code {
        Some(jsonrpc::code::HEADER_MISMATCH)
        | Some(jsonrpc::code::MISSING_CAPABILITY)
        | Some(jsonrpc::code::UNSUPPORTED_VERSION) => 400,
        Some(jsonrpc::code::METHOD_NOT_FOUND) => 404,
        _ => 200,
    }
}

/// A string field of the params (`name`, `uri`).
fn field_of(msg: &Message<'_>, field: &str) -> Option<String> {
    let p: Map<String, Value> = serde_json::from_str(msg.params?.get()).ok()?;
    p.get(field).and_then(Value::as_str).map(str::to_owned)
}

/// The retry's body with the upstream's own state, when it carries a wrapper.
fn unwrap_state(cx: &Cx<'_>, msg: &Message<'_>, b: &Binding) -> Result<Option<Vec<u8>>, Refusal> {
    let Some(params) = msg.params else {
        return Ok(None);
    };
    let Ok(mut p) = serde_json::from_str::<Map<String, Value>>(params.get()) else {
        return Ok(None);
    };
    let keys = &cx.snap.settings.session_keys;
    match mrtr::unwrap_params(&mut p, keys, b, cx.shard.clock.unix_secs()) {
        Ok(false) => Ok(None),
        Ok(true) => {
            let params = Value::Object(p);
            let mut out = Map::new();
            out.insert("jsonrpc".into(), json!("2.0"));
            if let Some(id) = msg.id
                && let Ok(v) = serde_json::from_str::<Value>(id.get())
            {
                out.insert("id".into(), v);
            }
            out.insert("method".into(), json!(msg.method));
            out.insert("params".into(), params);
            Ok(Some(serde_json::to_vec(&out).unwrap_or_default()))
        }
        Err(e) => Err(Refusal::request_state_invalid(e.why()).modern()),
    }
}

/// The `server/discover` result: every revision served, the gateway's capabilities and
/// identity, the upstreams' merged instructions, caching hints.
fn discover(st: &Settings, id: &serde_json::value::RawValue) -> Vec<u8> {
    let mut result = json!({
        "resultType": "complete",
        "supportedVersions": era::supported_versions(),
        "capabilities": modern_capabilities(st),
        "ttlMs": LIST_TTL_MS,
        "cacheScope": "public",
        "_meta": { META_SERVER: server_info(st) },
    });
    if let Some(i) = &st.instructions {
        result["instructions"] = Value::String(i.clone());
    }
    jsonrpc::result_value(id, &result)
}

/// The capabilities as a modern client reads them: `listChanged` is delivered on
/// `subscriptions/listen`, which tells tool, prompt and resource list changes (see
/// [`stream`]); `resources.subscribe` is not offered (the revision removed it), nor any
/// other kind's `listChanged`.
fn modern_capabilities(st: &Settings) -> Value {
    let mut caps: Value = serde_json::from_str(&st.capabilities_json).unwrap_or_else(|_| json!({}));
    if let Some(m) = caps.as_object_mut() {
        for (k, v) in m.iter_mut() {
            if let Some(o) = v.as_object_mut() {
                if !matches!(k.as_str(), "tools" | "prompts" | "resources") {
                    o.remove("listChanged");
                }
                o.remove("subscribe");
            }
        }
    }
    caps
}

fn server_info(st: &Settings) -> Value {
    json!({"name": st.server_name, "version": st.server_version})
}

/// Methods whose complete results carry caching hints (2026-07-28 "Caching").
fn cacheable(method: &str) -> bool {
    matches!(
        method,
        "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
    )
}

/// How an answer is put in the client's revision.
pub(super) struct Shape<'a> {
    /// `Some` for a modern client.
    modern: Option<&'a ModernCall>,
    settings: &'a Settings,
    method: &'a str,
    /// The upstream spoke 2026-07-28: its results may ask for input.
    upstream_modern: bool,
    /// Error codes in the answer are the gateway's (else a 2025-era upstream's: its -32002
    /// is "resource not found").
    own_codes: bool,
    now: i64,
}

impl<'a> Shape<'a> {
    pub fn of(cx: &Cx<'a>, method: &'a str, upstream_modern: bool) -> Shape<'a> {
        Shape {
            modern: cx.modern,
            settings: &cx.snap.settings,
            method,
            upstream_modern,
            own_codes: upstream_modern,
            now: cx.shard.clock.unix_secs(),
        }
    }

    /// For the gateway's own answers (local, bridged): its codes are its own.
    pub fn local(cx: &Cx<'a>, method: &'a str) -> Shape<'a> {
        Shape {
            own_codes: true,
            ..Shape::of(cx, method, false)
        }
    }

    /// The client speaks 2026-07-28.
    pub fn is_modern_client(&self) -> bool {
        self.modern.is_some()
    }

    /// The upstream speaks 2026-07-28.
    pub fn upstream_is_modern(&self) -> bool {
        self.upstream_modern
    }

    /// The HTTP status of a whole JSON answer: for a modern client, the revision's protocol
    /// errors are HTTP errors (`-32020`, `-32021`, `-32022`: 400; `-32601`: 404); anything
    /// else, and every answer to a 2025-era client, is 200.
    pub fn status(&self, body: &[u8]) -> u16 {
        if self.modern.is_none() || memchr::memmem::find(body, b"\"error\"").is_none() {
            return 200;
        }
        let code = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["error"]["code"].as_i64());
        modern_status(code)
    }

    /// Nothing to change: a 2025-era client of a 2025-era upstream (the common path).
    pub fn is_identity(&self) -> bool {
        self.modern.is_none() && !self.upstream_modern
    }

    /// A refusal of the gateway's own, in the client's revision.
    pub fn refusal(&self, r: Refusal, id: Option<&serde_json::value::RawValue>) -> Vec<u8> {
        match self.modern {
            Some(_) => r.modern().body(id),
            None => r.body(id),
        }
    }

    /// One JSON-RPC response (already carrying the client's id) in the client's revision.
    pub fn apply(&self, body: Vec<u8>) -> Vec<u8> {
        if self.is_identity() {
            return body;
        }
        let Ok(mut v) = serde_json::from_slice::<Map<String, Value>>(&body) else {
            return body;
        };
        match self.modern {
            Some(call) => self.to_modern(&mut v, call),
            None => self.to_legacy(&mut v),
        }
        serde_json::to_vec(&v).unwrap_or(body)
    }

    fn to_modern(&self, v: &mut Map<String, Value>, call: &ModernCall) {
        if let Some(Value::Object(e)) = v.get_mut("error") {
            if let Some(c) = e.get("code").and_then(Value::as_i64) {
                let mapped = if self.own_codes {
                    jsonrpc::modern_code(c)
                } else {
                    jsonrpc::modern_upstream_code(c)
                };
                e.insert("code".into(), json!(mapped));
            }
            return;
        }
        let Some(Value::Object(r)) = v.get_mut("result") else {
            return;
        };
        let kind = r
            .entry("resultType")
            .or_insert_with(|| json!("complete"))
            .as_str()
            .unwrap_or("complete")
            .to_owned();
        let meta = r.entry("_meta").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            m.insert(META_SERVER.into(), server_info(self.settings));
        }
        if kind == "complete" && cacheable(self.method) {
            r.entry("ttlMs").or_insert_with(|| json!(LIST_TTL_MS));
            // Behind policy every list and read depends on who asks.
            r.insert("cacheScope".into(), json!("private"));
        }
        if kind == "input_required" {
            let sealed = call
                .binding
                .as_ref()
                .is_some_and(|b| mrtr::wrap_result(r, &self.settings.session_keys, b, self.now));
            if !sealed {
                let msg = "The upstream asked for input, but its requestState could not be sealed";
                v.remove("result");
                v.insert(
                    "error".into(),
                    json!({"code": jsonrpc::code::INTERNAL_ERROR, "message": msg}),
                );
            }
        }
    }

    /// A 2025-era client cannot be given an `input_required` result: a clear error instead.
    fn to_legacy(&self, v: &mut Map<String, Value>) {
        let asks = v
            .get("result")
            .and_then(|r| r.get("resultType"))
            .and_then(Value::as_str)
            == Some("input_required");
        if asks {
            let msg = "The upstream needs more input from the user (a 2026-07-28 input_required \
                       result) that this client cannot give: it did not declare the capability \
                       the request needs (elicitation, sampling or roots) in initialize";
            v.remove("result");
            v.insert(
                "error".into(),
                json!({"code": jsonrpc::code::INTERNAL_ERROR, "message": msg}),
            );
        }
    }
}

/// The params for a modern upstream: the caller's, with `_meta` saying what Warden, as
/// the upstream's client, speaks and what the caller can do.
pub(super) fn upstream_params(
    params: &str,
    version: &str,
    caps: &Value,
    log_level: Option<&str>,
) -> Result<String, serde_json::Error> {
    let mut p: Map<String, Value> = serde_json::from_str(params)?;
    let meta = p.entry("_meta").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    if let Some(m) = meta.as_object_mut() {
        m.insert(era::META_VERSION.into(), json!(version));
        m.insert(era::META_CAPABILITIES.into(), caps.clone());
        m.insert(
            era::META_CLIENT.into(),
            json!({"name": "warden", "version": env!("CARGO_PKG_VERSION")}),
        );
        // A 2025 client's `logging/setLevel`, said per request as the revision wants.
        if let Some(l) = log_level {
            m.entry(era::META_LOG_LEVEL).or_insert_with(|| json!(l));
        }
    }
    serde_json::to_string(&p)
}

/// The params for a 2025-era upstream from a modern caller: without the modern `_meta` keys
/// (the session carries them).
pub(super) fn legacy_params(params: &str) -> String {
    let Ok(mut p) = serde_json::from_str::<Map<String, Value>>(params) else {
        return params.to_owned();
    };
    if let Some(Value::Object(m)) = p.get_mut("_meta") {
        m.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
        if m.is_empty() {
            p.remove("_meta");
        }
    }
    serde_json::to_string(&p).unwrap_or_else(|_| params.to_owned())
}
