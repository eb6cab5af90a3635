//! The one refusal type of the request path. Every step fails with a [`Refusal`], and the
//! refusal alone decides the answer (HTTP status, `WWW-Authenticate`, JSON-RPC code and
//! message), the audit outcome and reason, the metric label — and who caused it.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::http;
use crate::audit::Outcome;
use crate::control::DelegationError;
use crate::http1::Response;
use crate::jsonrpc::{self, code};
use crate::snapshot::Settings;

/// Who caused a refusal (as Pingora's error sources do): where an operator should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The client: a bad request, a bad token, a call policy does not allow, too many calls.
    Agent,
    /// The identity provider: its keys could not be had.
    IdentityProvider,
    /// The token service: no delegation token for the call.
    TokenService,
    /// The upstream MCP server or REST API.
    Upstream,
    /// The operator's configuration (e.g. a tool without delegation settings).
    Operator,
    /// Warden itself: overload, a failing audit sink, an internal failure.
    Gateway,
}

impl Blame {
    pub fn label(self) -> &'static str {
        match self {
            Blame::Agent => "agent",
            Blame::IdentityProvider => "identity_provider",
            Blame::TokenService => "token_service",
            Blame::Upstream => "upstream",
            Blame::Operator => "operator",
            Blame::Gateway => "gateway",
        }
    }
}

/// How the refusal reads on the wire.
#[derive(Debug, Clone)]
enum Form {
    /// `{"error": …, "error_description": message}` (RFC 6749 §5.2 shape).
    OAuth(&'static str),
    /// 401 with the RFC 6750 / RFC 9728 challenge (`error=` when the token was bad).
    Challenge(Option<&'static str>),
    /// 401 with the RFC 9449 §7.1 `DPoP` challenge (`invalid_dpop_proof`, `use_dpop_nonce`).
    Dpop(&'static str),
    /// 403 `insufficient_scope` with the scopes to re-consent for (MCP step-up).
    StepUp(Vec<String>),
    /// A JSON-RPC error with the request's id.
    JsonRpc(i64, Option<serde_json::Value>),
    /// A tool result with `isError`: the model reads the message. `modern`: for a 2026-07-28
    /// client, which needs its `resultType`.
    ToolError { modern: bool },
    /// No body (a 405 with `Allow`).
    Empty,
}

/// Why a request was not (or not fully) served.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Bounded label: `warden_refusals_total{reason}`.
    pub reason: &'static str,
    pub blame: Blame,
    pub outcome: Outcome,
    status: u16,
    /// Boxed: a refusal travels in every step's `Result`, which stays small on the way.
    d: Box<Detail>,
}

/// The text and shape of a refusal.
#[derive(Debug, Clone)]
struct Detail {
    /// What the client reads.
    message: Cow<'static, str>,
    /// What the audit record says (often the same as `message`).
    why: Cow<'static, str>,
    form: Form,
    headers: Vec<(&'static str, String)>,
}

type Text = Cow<'static, str>;

impl Refusal {
    fn new(reason: &'static str, blame: Blame, outcome: Outcome, status: u16, form: Form) -> Self {
        Refusal {
            reason,
            blame,
            outcome,
            status,
            d: Box::new(Detail {
                message: Cow::Borrowed(""),
                why: Cow::Borrowed(""),
                form,
                headers: Vec::new(),
            }),
        }
    }

    fn says(mut self, message: impl Into<Text>) -> Self {
        self.d.message = message.into();
        if self.d.why.is_empty() {
            self.d.why = self.d.message.clone();
        }
        self
    }

    fn audited_as(mut self, why: impl Into<Text>) -> Self {
        self.d.why = why.into();
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.d.headers.push((name, value.into()));
        self
    }

    // ---- Admission (Origin, Host, path, method, load) ----

    pub fn overloaded() -> Self {
        Self::new(
            "overloaded",
            Blame::Gateway,
            Outcome::Rejected,
            503,
            Form::OAuth("overloaded"),
        )
        .says("too many requests in flight; retry shortly")
        .header("retry-after", "1")
    }

    pub fn origin_not_allowed() -> Self {
        Self::agent_oauth("origin", 403, "forbidden", "Origin not allowed")
    }

    pub fn host_not_allowed() -> Self {
        Self::agent_oauth("host", 403, "forbidden", "Host not allowed")
    }

    pub fn no_such_endpoint() -> Self {
        Self::agent_oauth("path", 404, "not_found", "no such endpoint")
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self::new(
            "http_method",
            Blame::Agent,
            Outcome::Rejected,
            405,
            Form::Empty,
        )
        .says("method not allowed")
        .header("allow", allow)
    }

    fn agent_oauth(
        reason: &'static str,
        status: u16,
        error: &'static str,
        msg: &'static str,
    ) -> Self {
        Self::new(
            reason,
            Blame::Agent,
            Outcome::Rejected,
            status,
            Form::OAuth(error),
        )
        .says(msg)
    }

    // ---- Authentication ----

    pub fn token_missing() -> Self {
        Self::new(
            "token_missing",
            Blame::Agent,
            Outcome::Unauthenticated,
            401,
            Form::Challenge(None),
        )
        .says("authentication required")
        .audited_as("bearer token missing")
    }

    pub fn token_in_query() -> Self {
        Self::agent_oauth(
            "token_in_query",
            400,
            "invalid_request",
            "tokens in the query string are not accepted",
        )
        .unauthenticated()
    }

    pub fn repeated_authorization() -> Self {
        Self::agent_oauth(
            "repeated_authorization",
            400,
            "invalid_request",
            "more than one Authorization header",
        )
        .unauthenticated()
    }

    /// A bad token (`label` from `TokenError::label`, or `not_bearer`). An unknown key after
    /// a refetch is the agent's (a forged or foreign token) unless the keys could not be had.
    pub fn token_invalid(label: &'static str, blame: Blame) -> Self {
        Self::new(
            "token_invalid",
            blame,
            Outcome::Unauthenticated,
            401,
            Form::Challenge(Some("invalid_token")),
        )
        .says("the access token is invalid")
        .audited_as(format!("bearer token invalid ({label})"))
    }

    /// A DPoP proof that fails a check of RFC 9449 §4.3 (`label` from `ProofError::label`;
    /// `message` its description, free of quotes).
    pub fn dpop_invalid(label: &'static str, message: String) -> Self {
        Self::new(
            "dpop_invalid",
            Blame::Agent,
            Outcome::Unauthenticated,
            401,
            Form::Dpop("invalid_dpop_proof"),
        )
        .says(message)
        .audited_as(format!("DPoP proof invalid ({label})"))
    }

    /// The proof lacks a nonce this gateway issued, or its nonce expired (RFC 9449 §9): the
    /// client retries with `nonce`.
    pub fn dpop_nonce(nonce: String) -> Self {
        Self::new(
            "dpop_nonce",
            Blame::Agent,
            Outcome::Unauthenticated,
            401,
            Form::Dpop("use_dpop_nonce"),
        )
        .says("Resource server requires nonce in DPoP proof")
        .audited_as("DPoP proof without a current server nonce (dpop_nonce)")
        .header("dpop-nonce", nonce)
    }

    /// The proofs already used could not be checked (the shared store did not answer, or the
    /// set is full): refused rather than risk a replay.
    pub fn dpop_unavailable(why: &'static str) -> Self {
        Self::new(
            "dpop_unavailable",
            Blame::Gateway,
            Outcome::Rejected,
            503,
            Form::OAuth("temporarily_unavailable"),
        )
        .says("DPoP replay protection is unavailable; retry shortly")
        .audited_as(why)
        .header("retry-after", "1")
    }

    fn unauthenticated(mut self) -> Self {
        self.outcome = Outcome::Unauthenticated;
        self
    }

    // ---- Rate limits ----

    /// Over the per-user limit on a request that is not JSON-RPC (GET, DELETE).
    pub fn user_limited_http(retry_after: u64) -> Self {
        Self::agent_oauth(
            "rate_limited_user",
            429,
            "rate_limited",
            "rate limit exceeded for this user; retry later",
        )
        .limited("per-user rate limit exceeded", retry_after)
    }

    /// Over a per-user (`tool == false`) or per-tool limit: a JSON-RPC error the model reads.
    pub fn limited_call(
        tool: bool,
        message: String,
        data: serde_json::Value,
        retry_after: u64,
    ) -> Self {
        let (reason, why) = if tool {
            ("rate_limited_tool", "per-tool rate limit exceeded")
        } else {
            ("rate_limited_user", "per-user rate limit exceeded")
        };
        Self::new(
            reason,
            Blame::Agent,
            Outcome::RateLimited,
            429,
            Form::JsonRpc(crate::ratelimit::JSONRPC_CODE, Some(data)),
        )
        .says(message)
        .limited(why, retry_after)
    }

    fn limited(mut self, why: &'static str, retry_after: u64) -> Self {
        self.outcome = Outcome::RateLimited;
        self.d.why = Cow::Borrowed(why);
        self.header("retry-after", retry_after.to_string())
    }

    // ---- The HTTP request and the JSON-RPC message ----

    pub fn unsupported_media(status: u16, message: &'static str) -> Self {
        Self::agent_oauth("headers", status, "invalid_request", message)
            .audited_as("request headers not acceptable")
    }

    /// The body was refused unread by the connection (413 too large, 408 too slow); the
    /// connection already answered, this is the audit record's and the metric's refusal.
    pub fn body_refused(status: u16, message: &'static str) -> Self {
        Self::agent_oauth("body", status, "invalid_request", message)
            .audited_as("request body refused unread")
    }

    pub fn parse_error() -> Self {
        Self::jsonrpc_400("parse_error", code::PARSE_ERROR, "Parse error")
    }

    pub fn invalid_request(message: &'static str) -> Self {
        Self::jsonrpc_400("invalid_request", code::INVALID_REQUEST, message)
    }

    fn jsonrpc_400(reason: &'static str, code: i64, message: &'static str) -> Self {
        Self::new(
            reason,
            Blame::Agent,
            Outcome::Rejected,
            400,
            Form::JsonRpc(code, None),
        )
        .says(message)
        .audited_as("not a valid JSON-RPC message")
    }

    // ---- The 2026-07-28 revision (HTTP 400, its own codes) ----

    /// A mirrored header is missing, repeated, undecodable or unlike the body (`-32020`).
    pub fn header_mismatch(message: impl Into<Text>) -> Self {
        Self::new(
            "header_mismatch",
            Blame::Agent,
            Outcome::Rejected,
            400,
            Form::JsonRpc(code::HEADER_MISMATCH, None),
        )
        .says(message)
    }

    /// A protocol version this gateway does not serve (`-32022`, with what it does serve).
    pub fn unsupported_version(requested: &str) -> Self {
        let requested: String = requested.chars().take(64).collect();
        let data = serde_json::json!({
            "supported": super::era::supported_versions(),
            "requested": requested,
        });
        Self::new(
            "unsupported_version",
            Blame::Agent,
            Outcome::Rejected,
            400,
            Form::JsonRpc(code::UNSUPPORTED_VERSION, Some(data)),
        )
        .says("Unsupported protocol version")
        .audited_as(format!("unsupported protocol version {requested:?}"))
    }

    /// A modern request without its required `_meta` fields (`-32602`).
    pub fn modern_meta_invalid(message: String) -> Self {
        Self::new(
            "invalid_meta",
            Blame::Agent,
            Outcome::Rejected,
            400,
            Form::JsonRpc(code::INVALID_PARAMS, None),
        )
        .says(message)
    }

    /// A `requestState` that is not one this gateway sealed for this user and this call:
    /// tampered, foreign, expired or for another request (`-32602`).
    pub fn request_state_invalid(why: &'static str) -> Self {
        Self::new(
            "request_state",
            Blame::Agent,
            Outcome::Rejected,
            400,
            Form::JsonRpc(code::INVALID_PARAMS, None),
        )
        .says("Invalid requestState: it was altered, has expired, or belongs to another user or request")
        .audited_as(why)
    }

    /// An MRTR retry for a parked call that is not waiting (any more) or lacks its answer
    /// (`-32602`): nothing is sent upstream ([`super::park`]).
    pub fn input_not_awaited(message: impl Into<Text>) -> Self {
        Self::new(
            "input_not_awaited",
            Blame::Agent,
            Outcome::Rejected,
            400,
            Form::JsonRpc(code::INVALID_PARAMS, None),
        )
        .says(message)
    }

    /// A legacy method sent the modern way (`initialize` with modern `_meta`, a session DELETE).
    pub fn not_in_modern(message: &'static str) -> Self {
        Self::new(
            "wrong_era",
            Blame::Agent,
            Outcome::Rejected,
            400,
            Form::JsonRpc(code::INVALID_REQUEST, None),
        )
        .says(message)
    }

    /// A 2026-07-28 upstream's request for input that the 2025-xx client could not or did
    /// not answer (the call ends here; nothing more is sent upstream).
    pub fn input_unanswered(why: &'static str) -> Self {
        Self::new(
            "input_unanswered",
            Blame::Agent,
            Outcome::Rejected,
            200,
            Form::JsonRpc(code::INTERNAL_ERROR, None),
        )
        .says(why)
    }

    /// A session's `resources/subscribe` beyond the resource subscriptions it may hold
    /// (`-32602`; nothing is sent).
    pub fn too_many_subscriptions(limit: usize) -> Self {
        Self::new(
            "invalid_params",
            Blame::Agent,
            Outcome::Rejected,
            200,
            Form::JsonRpc(code::INVALID_PARAMS, None),
        )
        .says(format!(
            "Invalid params: a session may hold at most {limit} resource subscriptions"
        ))
    }

    /// A `logging/setLevel` whose level is not one of RFC 5424's (`-32602`).
    pub fn bad_log_level() -> Self {
        Self::new(
            "invalid_params",
            Blame::Agent,
            Outcome::Rejected,
            200,
            Form::JsonRpc(code::INVALID_PARAMS, None),
        )
        .says("Invalid params: level must be one of debug, info, notice, warning, error, critical, alert, emergency")
    }

    /// A method 2026-07-28 removed (`initialize`, `ping`, `logging/setLevel`,
    /// `resources/subscribe`…): method not found (HTTP 404 once [`Self::modern`]), saying what
    /// replaced it.
    pub fn removed_in_modern(method: &str, instead: &'static str) -> Self {
        Self::new(
            "removed_method",
            Blame::Agent,
            Outcome::Rejected,
            200,
            Form::JsonRpc(code::METHOD_NOT_FOUND, None),
        )
        .says(format!(
            "Method not found: '{method}' is not part of MCP 2026-07-28; {instead}"
        ))
    }

    /// The same refusal as a modern client receives it: Warden's own codes outside the
    /// reserved range (see [`jsonrpc::modern_code`]) and an unknown method as HTTP 404.
    pub fn modern(mut self) -> Self {
        match &mut self.d.form {
            Form::JsonRpc(c, _) => {
                *c = jsonrpc::modern_code(*c);
                if *c == code::METHOD_NOT_FOUND {
                    self.status = 404;
                }
            }
            Form::ToolError { modern } => *modern = true,
            _ => {}
        }
        self
    }

    // ---- Sessions ----

    pub fn session_required() -> Self {
        Self::agent_oauth(
            "session_required",
            400,
            "invalid_request",
            "Mcp-Session-Id required",
        )
    }

    pub fn session_repeated() -> Self {
        Self::agent_oauth(
            "session_repeated",
            400,
            "invalid_request",
            "repeated Mcp-Session-Id",
        )
    }

    pub fn session_unknown(message: &'static str) -> Self {
        Self::agent_oauth("session_unknown", 404, "not_found", message)
    }

    pub fn session_not_created() -> Self {
        Self::new(
            "session_not_created",
            Blame::Gateway,
            Outcome::Rejected,
            500,
            Form::JsonRpc(code::INTERNAL_ERROR, None),
        )
        .says("could not create a session")
    }

    // ---- Routing and policy ----

    /// An unknown tool, or one policy hides: the same answer (no enumeration).
    pub fn unknown_tool() -> Self {
        Self::new(
            "unknown_tool",
            Blame::Agent,
            Outcome::Deny,
            200,
            Form::JsonRpc(code::INVALID_PARAMS, None),
        )
        .says("Unknown tool")
        .audited_as("unknown or hidden tool")
    }

    /// A prompt or resource that is unknown or hidden by policy (the same answer: no
    /// enumeration). `what` is "prompt" or "resource".
    pub fn unknown_item(what: &'static str) -> Self {
        let (says, why) = match what {
            "prompt" => ("Unknown prompt", "unknown or hidden prompt"),
            _ => ("Unknown resource", "unknown or hidden resource"),
        };
        Self::new(
            "unknown_item",
            Blame::Agent,
            Outcome::Deny,
            200,
            Form::JsonRpc(code::INVALID_PARAMS, None),
        )
        .says(says)
        .audited_as(why)
    }

    pub fn unknown_method() -> Self {
        Self::new(
            "unknown_method",
            Blame::Agent,
            Outcome::Deny,
            200,
            Form::JsonRpc(code::METHOD_NOT_FOUND, None),
        )
        .says("Method not found")
        .audited_as("unknown tool or method")
    }

    /// A `tools/call` a policy forbids: an `isError` result with the policy's reason.
    pub fn denied_tool(reason: String) -> Self {
        Self::new(
            "policy_deny",
            Blame::Agent,
            Outcome::Deny,
            200,
            Form::ToolError { modern: false },
        )
        .says(reason)
    }

    /// A non-tool method a policy forbids: a JSON-RPC error with the policy's reason.
    pub fn denied_method(reason: String, why: Option<&'static str>) -> Self {
        let r = Self::new(
            "policy_deny",
            Blame::Agent,
            Outcome::Deny,
            200,
            Form::JsonRpc(code::INVALID_PARAMS, None),
        )
        .says(reason);
        match why {
            Some(w) => r.audited_as(w),
            None => r,
        }
    }

    /// A scope the user could be granted: 403 so the client re-consents (a JSON-RPC error
    /// inside a batch, which has no HTTP challenge of its own).
    pub fn step_up(scopes: Vec<String>, reason: String) -> Self {
        Self::new(
            "step_up",
            Blame::Agent,
            Outcome::Deny,
            403,
            Form::StepUp(scopes),
        )
        .says(reason)
    }

    // ---- Audit, delegation, upstream ----

    pub fn audit_unavailable() -> Self {
        Self::new(
            "audit_unavailable",
            Blame::Gateway,
            Outcome::Rejected,
            200,
            Form::JsonRpc(code::UNAVAILABLE, None),
        )
        .says("The audit trail is unavailable, so the call was refused rather than run unaudited.")
    }

    /// No delegation token: nothing was sent. A missing setting is the operator's.
    pub fn delegation_failed(upstream: &str, e: &DelegationError) -> Self {
        let blame = match e {
            DelegationError::Refused(m) if m.starts_with("no delegation is configured") => {
                Blame::Operator
            }
            _ => Blame::TokenService,
        };
        let message =
            format!("Token exchange for upstream '{upstream}' failed: {e}. The call was not sent.");
        Self::new(
            "delegation_failed",
            blame,
            Outcome::ExchangeFailed,
            200,
            Form::JsonRpc(code::DELEGATION_FAILED, None),
        )
        .says(message)
        .audited_as(e.to_string())
    }

    /// Arguments a bridged REST operation cannot take: nothing was sent.
    pub fn bad_arguments(json_rpc_code: i64, message: String) -> Self {
        Self::new(
            "bad_arguments",
            Blame::Agent,
            Outcome::Rejected,
            200,
            Form::JsonRpc(json_rpc_code, None),
        )
        .says(message)
    }

    /// The upstream failed before answering (`why` is what failed, for the record).
    pub fn upstream(reason: &'static str, message: String, why: String) -> Self {
        Self::new(
            reason,
            Blame::Upstream,
            Outcome::UpstreamError,
            200,
            Form::JsonRpc(code::UPSTREAM_ERROR, None),
        )
        .says(message)
        .audited_as(why)
    }

    // ---- Reading it ----

    /// The HTTP status of a single request's answer.
    #[cfg(test)]
    pub fn status(&self) -> u16 {
        self.status
    }

    /// What the audit record says.
    pub fn why(&self) -> &str {
        &self.d.why
    }

    /// Count it: `warden_refusals_total{reason, blame}` (both bounded).
    pub fn count(&self) {
        metrics::counter!("warden_refusals_total", "reason" => self.reason, "blame" => self.blame.label())
            .increment(1);
    }

    /// The JSON-RPC body (inside a batch, or as the body of a single answer).
    pub fn body(&self, id: Option<&RawValue>) -> Vec<u8> {
        let message = &self.d.message;
        match &self.d.form {
            Form::JsonRpc(c, data) => jsonrpc::error_with_data(id, *c, message, data.as_ref()),
            Form::ToolError { modern } => {
                let mut result = serde_json::json!({"content": [{"type": "text", "text": message}], "isError": true});
                if *modern {
                    result["resultType"] = serde_json::json!("complete");
                }
                jsonrpc::result_value(id.unwrap_or(&jsonrpc::null()), &result)
            }
            // No HTTP challenge inside a batch: the reason as a JSON-RPC error.
            Form::StepUp(_) => jsonrpc::error(id, code::INVALID_PARAMS, message),
            Form::OAuth(_) | Form::Challenge(_) | Form::Dpop(_) | Form::Empty => {
                jsonrpc::error(id, code::INVALID_REQUEST, message)
            }
        }
    }

    /// The whole HTTP answer to a single request.
    pub fn response(&self, st: &Settings, id: Option<&RawValue>) -> Response {
        let mut r = match &self.d.form {
            Form::OAuth(error) => http::error_json(self.status, error, &self.d.message),
            Form::Challenge(error) => http::challenge(st, *error),
            Form::Dpop(error) => http::dpop_challenge(st, error, &self.d.message),
            Form::StepUp(scopes) => http::step_up(st, scopes),
            Form::Empty => Response::new(self.status),
            Form::JsonRpc(..) | Form::ToolError { .. } => {
                Response::json(self.status, self.body(id))
            }
        };
        r.headers.extend(self.d.headers.iter().cloned());
        r
    }
}

#[cfg(test)]
#[path = "refusal_tests.rs"]
mod tests;
