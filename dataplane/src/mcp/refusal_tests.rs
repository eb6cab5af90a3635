//! Each kind of refusal decides its answer, record and label consistently (no sockets).

use super::*;

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("JSON")
}

#[test]
fn who_is_to_blame_and_what_is_recorded() {
    let upstream_down = Refusal::upstream(
        "upstream_error",
        "Upstream 'a' failed".into(),
        "connect".into(),
    );
    let unconfigured = DelegationError::Refused("no delegation is configured for tool 'x'".into());
    let sts_down = DelegationError::Unavailable;
    let cases = [
        (
            Refusal::overloaded(),
            "overloaded",
            Blame::Gateway,
            Outcome::Rejected,
            503,
        ),
        (
            Refusal::token_missing(),
            "token_missing",
            Blame::Agent,
            Outcome::Unauthenticated,
            401,
        ),
        (
            Refusal::token_in_query(),
            "token_in_query",
            Blame::Agent,
            Outcome::Unauthenticated,
            400,
        ),
        (
            Refusal::token_invalid("expired", Blame::Agent),
            "token_invalid",
            Blame::Agent,
            Outcome::Unauthenticated,
            401,
        ),
        (
            Refusal::token_invalid("unknown_kid", Blame::IdentityProvider),
            "token_invalid",
            Blame::IdentityProvider,
            Outcome::Unauthenticated,
            401,
        ),
        (
            Refusal::unknown_tool(),
            "unknown_tool",
            Blame::Agent,
            Outcome::Deny,
            200,
        ),
        (
            Refusal::denied_tool("no".into()),
            "policy_deny",
            Blame::Agent,
            Outcome::Deny,
            200,
        ),
        (
            Refusal::step_up(vec!["s".into()], "need s".into()),
            "step_up",
            Blame::Agent,
            Outcome::Deny,
            403,
        ),
        (
            Refusal::audit_unavailable(),
            "audit_unavailable",
            Blame::Gateway,
            Outcome::Rejected,
            200,
        ),
        (
            Refusal::delegation_failed("a", &unconfigured),
            "delegation_failed",
            Blame::Operator,
            Outcome::ExchangeFailed,
            200,
        ),
        (
            Refusal::delegation_failed("a", &sts_down),
            "delegation_failed",
            Blame::TokenService,
            Outcome::ExchangeFailed,
            200,
        ),
        (
            upstream_down,
            "upstream_error",
            Blame::Upstream,
            Outcome::UpstreamError,
            200,
        ),
        (
            Refusal::session_unknown("unknown session"),
            "session_unknown",
            Blame::Agent,
            Outcome::Rejected,
            404,
        ),
    ];
    for (r, reason, blame, outcome, status) in cases {
        assert_eq!(
            (r.reason, r.blame, r.outcome, r.status()),
            (reason, blame, outcome, status),
            "{r:?}"
        );
        assert!(!r.why().is_empty(), "{r:?} has no audit reason");
    }
    // The record says what happened, not a generic "missing or invalid".
    assert_eq!(
        Refusal::token_in_query().why(),
        "tokens in the query string are not accepted"
    );
    assert_eq!(Refusal::token_missing().why(), "bearer token missing");
    assert_eq!(
        Refusal::token_invalid("bad_aud", Blame::Agent).why(),
        "bearer token invalid (bad_aud)"
    );
}

#[test]
fn json_rpc_answers_carry_the_request_id_and_code() {
    let id = RawValue::from_string("\"req.1\"".into()).unwrap();
    let v = json(&Refusal::unknown_tool().body(Some(&id)));
    assert_eq!(v["id"], "req.1");
    assert_eq!(v["error"]["code"], code::INVALID_PARAMS);
    assert_eq!(v["error"]["message"], "Unknown tool");
    // A policy denial is a tool result the model reads, not a protocol error.
    let v = json(&Refusal::denied_tool("Only managers may.".into()).body(Some(&id)));
    assert_eq!(v["result"]["isError"], true);
    assert_eq!(v["result"]["content"][0]["text"], "Only managers may.");
    // Inside a batch a step-up has no HTTP challenge: the reason as a JSON-RPC error.
    let v = json(&Refusal::step_up(vec!["s".into()], "need s".into()).body(Some(&id)));
    assert_eq!(v["error"]["code"], code::INVALID_PARAMS);
    assert_eq!(v["error"]["message"], "need s");
    // A rate limit: its own code and machine-readable data.
    let data = serde_json::json!({"scope": "tool", "retryAfterSeconds": 3});
    let r = Refusal::limited_call(true, "slow down".into(), data, 3);
    assert_eq!(
        (r.reason, r.outcome, r.status()),
        ("rate_limited_tool", Outcome::RateLimited, 429)
    );
    assert_eq!(r.why(), "per-tool rate limit exceeded");
    let v = json(&r.body(None));
    assert_eq!(v["id"], serde_json::Value::Null);
    assert_eq!(v["error"]["code"], crate::ratelimit::JSONRPC_CODE);
    assert_eq!(v["error"]["data"]["retryAfterSeconds"], 3);
}

#[test]
fn headers_that_tell_the_client_what_next() {
    let hs = |r: &Refusal| r.d.headers.clone();
    assert_eq!(
        hs(&Refusal::overloaded()),
        [("retry-after", "1".to_string())]
    );
    assert_eq!(
        hs(&Refusal::user_limited_http(7)),
        [("retry-after", "7".to_string())]
    );
    assert_eq!(
        hs(&Refusal::method_not_allowed("POST, DELETE, OPTIONS")),
        [("allow", "POST, DELETE, OPTIONS".to_string())]
    );
    assert!(hs(&Refusal::unknown_tool()).is_empty());
}
