//! Both MCP eras on one endpoint: a 2025-era upstream (`up0`, sessions) and a 2026-07-28
//! upstream (`up1`, stateless) behind one gateway, called by a 2025-11-25 session client and
//! by a 2026-07-28 stateless client. Policy, delegation and audit must be the same in every
//! combination; the mirrored headers are checked before anything is forwarded; MRTR state
//! is wrapped, bound to the user and the request, and unwrapped only intact.

use std::rc::Rc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use controlplane::testing::Harness;
use dataplane::audit::Outcome;
use dataplane::testing::HttpResponse;
use serde_json::{Value, json};
use testkit::{MemIssuer, MemUpstream, UpstreamOptions};

use crate::env::{AUD, Env, ISSUER, config_yaml};

const MODERN: &str = "2026-07-28";

/// up0 speaks 2025-xx, up1 2026-07-28; both delegate per call (5 s tokens); policy allows
/// everything but `up*_whoami`, denied with a reason.
fn start() -> Env {
    let issuer = Rc::new(MemIssuer::new(ISSUER));
    let legacy = Rc::new(MemUpstream::new(UpstreamOptions::default()));
    let modern = Rc::new(MemUpstream::new(UpstreamOptions {
        modern: true,
        ..Default::default()
    }));
    let tools = "      tools:\n        - name: echo\n          ttl: 5s\n          scopes: [up:echo]\n        - name: whoami\n          ttl: 5s\n          scopes: [up:whoami]\n        - name: ask\n          ttl: 5s\n          scopes: [up:ask]\n        - name: locate\n          ttl: 5s\n          scopes: [up:locate]\n        - name: sample\n          ttl: 5s\n          scopes: [up:sample]\n";
    let mut ups = String::from("upstreams:\n");
    for n in ["up0", "up1"] {
        ups.push_str(&format!(
            "  - name: {n}\n    url: http://{n}.test/mcp\n    timeout: 2s\n    token_exchange:\n      type: delegation\n      idp: warden\n      audience: https://{n}.example/\n{tools}"
        ));
    }
    let yaml = format!(
        "{}delegation:\n  client_id: warden-gw\n  issuer: http://sts.warden.test\n",
        config_yaml(&[ISSUER], &[], "")
    )
    .replace("upstreams:\n  []\n", &ups)
    .replace(
        "policy:\n  default: allow\n",
        "policy:\n  default: allow\n  rules:\n    - tools: [up0_whoami, up1_whoami]\n      deny: true\n      reason: Nobody may ask who they are.\n",
    );
    let h = Harness::builder(&yaml)
        .issuer(&issuer)
        .upstream("up0", legacy.clone())
        .upstream("up1", modern.clone())
        .build()
        .expect("harness");
    Env {
        h,
        issuer,
        upstreams: vec![legacy, modern],
    }
}

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
        "io.modelcontextprotocol/clientInfo": {"name": "modern-test", "version": "1"},
    })
}

/// A 2026-07-28 request with the headers a conforming client sends (plus `extra`).
fn modern(
    env: &Env,
    token: &str,
    method: &str,
    mut params: Value,
    extra: &[(&str, &str)],
) -> HttpResponse {
    params["_meta"] = meta();
    let body = json!({"jsonrpc":"2.0","id":7,"method":method,"params":params});
    let mut r = env
        .mcp("POST")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", method)
        .bearer(token)
        .json(&body);
    if let Some(n) = body["params"]
        .get("name")
        .or(body["params"].get("uri"))
        .and_then(Value::as_str)
    {
        r = r.header("mcp-name", n);
    }
    for (k, v) in extra {
        r = r.header(k, *v);
    }
    env.send(r)
}

fn claims(token: &str) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// The delegation token on an upstream's last `tools/call`.
fn last_token(up: &MemUpstream) -> Value {
    let calls = up.tool_calls();
    let auth = calls
        .last()
        .expect("a call")
        .header("authorization")
        .unwrap()
        .to_owned();
    claims(auth.strip_prefix("Bearer ").unwrap())
}

#[test]
fn both_clients_list_and_call_both_upstreams_with_the_same_policy_delegation_and_audit() {
    let env = start();
    let alice = env.token("alice");
    env.take_audit();
    // 2026-07-28 client: no session at all.
    let r = modern(&env, &alice, "tools/list", json!({}), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for n in ["up0_echo", "up1_echo", "up1_ask", "up1_locate"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    assert_eq!(v["result"]["resultType"], "complete");
    assert_eq!(
        v["result"]["cacheScope"], "private",
        "lists depend on the caller's authorization"
    );
    assert!(v["result"]["ttlMs"].as_u64().is_some());
    assert_eq!(
        v["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "warden"
    );
    assert!(r.header("mcp-session-id").is_none(), "no session is minted");
    for up in ["up0", "up1"] {
        let r = modern(
            &env,
            &alice,
            "tools/call",
            json!({"name": format!("{up}_echo"), "arguments": {"who": up}}),
            &[],
        );
        let v = r.json();
        assert_eq!(r.status, 200, "{v}");
        assert_eq!(v["id"], 7);
        assert_eq!(v["result"]["structuredContent"]["who"], up, "{v}");
        assert_eq!(v["result"]["resultType"], "complete");
        assert_eq!(
            v["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
            "warden"
        );
    }
    // Each upstream was spoken to in its own revision, with a 5-second token for that tool.
    let (legacy, modern_up) = (&env.upstreams[0], &env.upstreams[1]);
    let call0 = legacy.tool_calls().pop().unwrap();
    assert!(
        call0.header("mcp-session-id").is_some(),
        "the legacy upstream runs in a session Warden holds"
    );
    assert!(
        call0.body["params"].get("_meta").is_none(),
        "no modern _meta to a 2025 upstream: {}",
        call0.body
    );
    let call1 = modern_up.tool_calls().pop().unwrap();
    assert!(call1.header("mcp-session-id").is_none());
    assert_eq!(call1.header("mcp-protocol-version"), Some(MODERN));
    assert_eq!(
        call1.header("mcp-name"),
        Some("echo"),
        "the upstream's own tool name"
    );
    assert_eq!(
        call1.body["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"],
        json!({"elicitation": {}})
    );
    for (up, aud) in [
        (&env.upstreams[0], "https://up0.example/"),
        (&env.upstreams[1], "https://up1.example/"),
    ] {
        let c = last_token(up);
        assert_eq!(
            (c["sub"].as_str(), c["aud"].as_str(), c["scope"].as_str()),
            (Some("alice"), Some(aud), Some("up:echo"))
        );
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 5);
        assert_eq!(c["act"], json!({"sub": "warden-gw"}));
    }
    // 2025-11-25 session client: the same two calls.
    let sid = env.session(&alice);
    for up in ["up0", "up1"] {
        let v = env.call(
            &alice,
            &sid,
            json!(1),
            &format!("{up}_echo"),
            json!({"who": up}),
        );
        assert_eq!(v["result"]["structuredContent"]["who"], up, "{v}");
    }
    assert_eq!(last_token(&env.upstreams[1])["sub"], "alice");
    // Policy denies the same tool with the same words in both eras.
    let m = modern(
        &env,
        &alice,
        "tools/call",
        json!({"name": "up1_whoami", "arguments": {}}),
        &[],
    )
    .json();
    let l = env.call(&alice, &sid, json!(2), "up1_whoami", json!({}));
    assert_eq!(m["result"]["isError"], true, "{m}");
    // A result of the client's revision: 2026-07-28 SDKs refuse one without resultType.
    assert_eq!(m["result"]["resultType"], "complete", "{m}");
    assert!(l["result"].get("resultType").is_none(), "{l}");
    assert_eq!(m["result"]["content"], l["result"]["content"]);
    assert_eq!(
        m["result"]["content"][0]["text"],
        "Nobody may ask who they are."
    );
    assert_eq!(
        modern_up.tool_calls().len(),
        2,
        "denied calls never reach the upstream"
    );
    // One record per upstream-bound request, naming both revisions.
    let recs = env.take_audit();
    let calls: Vec<_> = recs.iter().filter(|r| r.method == "tools/call").collect();
    assert_eq!(calls.len(), 6, "{recs:#?}");
    let proto =
        |r: &&dataplane::audit::Record| (r.protocol.clone().unwrap(), r.upstream_protocol.clone());
    // The 2025 upstream speaks the newest 2025 revision, which Warden asks for whatever
    // the client's.
    assert_eq!(proto(&calls[0]), (MODERN.into(), Some("2025-11-25".into())));
    assert_eq!(proto(&calls[1]), (MODERN.into(), Some(MODERN.into())));
    assert_eq!(
        proto(&calls[2]),
        ("2025-06-18".into(), Some("2025-11-25".into()))
    );
    assert_eq!(proto(&calls[3]), ("2025-06-18".into(), Some(MODERN.into())));
    // A denial names both revisions too.
    assert_eq!(proto(&calls[4]), (MODERN.into(), Some(MODERN.into())));
    assert_eq!(proto(&calls[5]), ("2025-06-18".into(), Some(MODERN.into())));
    assert_eq!(calls[4].decision, Outcome::Deny);
    assert_eq!(calls[4].decision, calls[5].decision);
    assert_eq!(calls[4].reason, calls[5].reason);
}

#[test]
fn discover_and_the_errors_of_the_new_revision() {
    let env = start();
    let alice = env.token("alice");
    let r = modern(&env, &alice, "server/discover", json!({}), &[]);
    let v = r.json();
    assert_eq!(r.status, 200, "{v}");
    let versions = v["result"]["supportedVersions"].as_array().unwrap();
    assert_eq!(versions[0], MODERN);
    assert!(versions.contains(&json!("2025-11-25")));
    assert_eq!(v["result"]["resultType"], "complete");
    assert!(v["result"]["capabilities"]["tools"].is_object());
    assert!(
        v["result"]["instructions"]
            .as_str()
            .unwrap()
            .contains("[up1] Modern test upstream.")
    );
    assert_eq!(
        v["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "warden"
    );
    // An unknown method: 404 and -32601.
    let r = modern(&env, &alice, "nothing/here", json!({}), &[]);
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_i64()),
        (404, Some(-32601)),
        "{}",
        r.text()
    );
    // Methods the revision removed: 404 and -32601, saying what replaced them; never
    // forwarded, to either upstream.
    let before: usize = env.upstreams.iter().map(|u| u.requests().len()).sum();
    for removed in [
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "resources/unsubscribe",
    ] {
        let r = modern(
            &env,
            &alice,
            removed,
            json!({"uri": "mem://x", "level": "info"}),
            &[],
        );
        let v = r.json();
        assert_eq!(
            (r.status, v["error"]["code"].as_i64()),
            (404, Some(-32601)),
            "{removed}: {v}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("2026-07-28"),
            "{v}"
        );
    }
    let after: usize = env.upstreams.iter().map(|u| u.requests().len()).sum();
    assert_eq!(before, after, "a removed method reached an upstream");
    // Header and body disagree on an unknown version: the mismatch (-32020) is told first.
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"v999.0.0","io.modelcontextprotocol/clientCapabilities":{}}}});
    let r = env.send(
        env.mcp("POST")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", MODERN)
            .header("mcp-method", "tools/list")
            .bearer(&alice)
            .json(&body),
    );
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_i64()),
        (400, Some(-32020)),
        "{}",
        r.text()
    );
    // An unsupported version: 400, -32022 with what is served.
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"1900-01-01","io.modelcontextprotocol/clientCapabilities":{}}}});
    let r = env.send(
        env.mcp("POST")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "1900-01-01")
            .header("mcp-method", "tools/list")
            .bearer(&alice)
            .json(&body),
    );
    let v = r.json();
    assert_eq!(
        (r.status, v["error"]["code"].as_i64()),
        (400, Some(-32022)),
        "{v}"
    );
    assert_eq!(v["error"]["data"]["requested"], "1900-01-01");
    assert_eq!(v["error"]["data"]["supported"][0], MODERN);
    // No GET stream and no DELETE in this revision.
    for method in ["GET", "DELETE"] {
        let r = env.send(
            env.mcp(method)
                .header("mcp-protocol-version", MODERN)
                .bearer(&alice),
        );
        assert_eq!(r.status, 405, "{method}");
    }
    // Unauthenticated is refused before anything else, as in the old revision.
    let r = env.send(env.mcp("POST").header("mcp-protocol-version", MODERN).json(
        &json!({"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta": meta()}}),
    ));
    assert_eq!(r.status, 401);
    // The gateway's own errors carry no code of the reserved range: an upstream that fails.
    env.upstreams[1].set_mode(testkit::UpstreamMode::Refuse);
    let v = modern(
        &env,
        &alice,
        "tools/call",
        json!({"name": "up1_echo", "arguments": {}}),
        &[],
    )
    .json();
    let code = v["error"]["code"].as_i64().unwrap();
    assert!(!(-32768..=-32000).contains(&code), "{v}");
}

#[test]
fn every_header_mismatch_is_refused_and_nothing_is_forwarded() {
    let env = start();
    let alice = env.token("alice");
    let before = (
        env.upstreams[0].requests().len(),
        env.upstreams[1].requests().len(),
    );
    let call = |method: &str, params: Value, headers: &[(&str, &str)]| {
        let mut p = params;
        p["_meta"] = meta();
        let mut r = env
            .mcp("POST")
            .header("accept", "application/json, text/event-stream")
            .bearer(&alice)
            .json(&json!({"jsonrpc":"2.0","id":3,"method":method,"params":p}));
        for (k, v) in headers {
            r = r.header(k, *v);
        }
        env.send(r)
    };
    let echo = json!({"name": "up1_echo", "arguments": {}});
    let locate = json!({"name": "up1_locate", "arguments": {"region": "us-west1"}});
    let v = ("mcp-protocol-version", MODERN);
    let m = ("mcp-method", "tools/call");
    let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
        (echo.clone(), vec![m, ("mcp-name", "up1_echo")]), // version missing
        (
            echo.clone(),
            vec![
                ("mcp-protocol-version", "2025-11-25"),
                m,
                ("mcp-name", "up1_echo"),
            ],
        ), // legacy version header
        (echo.clone(), vec![v, ("mcp-name", "up1_echo")]), // method missing
        (
            echo.clone(),
            vec![v, ("mcp-method", "tools/list"), ("mcp-name", "up1_echo")],
        ), // method mismatched
        (echo.clone(), vec![v, m]),                        // name missing
        (echo.clone(), vec![v, m, ("mcp-name", "up0_echo")]), // routed elsewhere by a header
        (echo.clone(), vec![v, m, ("mcp-name", "=?base64?%%%?=")]), // bad base64
        (locate.clone(), vec![v, m, ("mcp-name", "up1_locate")]), // Mcp-Param-Region missing
        (
            locate.clone(),
            vec![
                v,
                m,
                ("mcp-name", "up1_locate"),
                ("mcp-param-region", "eu-west1"),
            ],
        ),
    ];
    for (params, headers) in &cases {
        let r = call("tools/call", params.clone(), headers);
        let body = r.json();
        assert_eq!(
            (r.status, body["error"]["code"].as_i64()),
            (400, Some(-32020)),
            "{headers:?}: {body}"
        );
    }
    assert_eq!(
        (
            env.upstreams[0].requests().len(),
            env.upstreams[1].requests().len()
        ),
        before,
        "a refused request reaches no upstream"
    );
    // Base64 names decode; the mirrored parameter goes on to the upstream.
    let enc = format!("=?base64?{}?=", STANDARD.encode("up1_locate"));
    let r = call(
        "tools/call",
        locate,
        &[v, m, ("mcp-name", &enc), ("mcp-param-region", "us-west1")],
    );
    assert_eq!(
        r.json()["result"]["content"][0]["text"],
        "us-west1",
        "{}",
        r.text()
    );
    let sent = env.upstreams[1].tool_calls().pop().unwrap();
    assert_eq!(sent.header("mcp-param-region"), Some("us-west1"));
    // A 2025 client's call to the modern upstream gets its Mcp-Param-* header made for it.
    let sid = env.session(&alice);
    let v = env.call(
        &alice,
        &sid,
        json!(9),
        "up1_locate",
        json!({"region": "ap-south-1"}),
    );
    assert_eq!(v["result"]["content"][0]["text"], "ap-south-1", "{v}");
}

#[test]
fn mrtr_state_is_wrapped_bound_to_the_user_and_unwrapped_only_intact() {
    let env = start();
    let (alice, bob) = (env.token("alice"), env.token("bob"));
    let v = modern(
        &env,
        &alice,
        "tools/call",
        json!({"name": "up1_ask", "arguments": {}}),
        &[],
    )
    .json();
    let r = &v["result"];
    assert_eq!(r["resultType"], "input_required", "{v}");
    assert_eq!(r["inputRequests"]["who"]["method"], "elicitation/create");
    assert!(
        r.get("ttlMs").is_none(),
        "interim results carry no caching hints"
    );
    let wrapped = r["requestState"].as_str().unwrap().to_owned();
    assert_ne!(
        wrapped,
        testkit_state(),
        "the upstream's state is not handed out as it is"
    );
    let retry = |token: &str, name: &str, state: &str| {
        modern(
            &env,
            token,
            "tools/call",
            json!({"name": name, "arguments": {}, "requestState": state, "inputResponses": {"who": {"action": "accept", "content": {"name": "Ada"}}}}),
            &[],
        )
    };
    let calls = env.upstreams[1].tool_calls().len();
    // Another user, another tool, a changed byte, the upstream's raw state: refused, not sent.
    let mut tampered = wrapped.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for (tok, name, state) in [
        (&bob, "up1_ask", wrapped.as_str()),
        (&alice, "up1_echo", wrapped.as_str()),
        (&alice, "up1_ask", tampered.as_str()),
        (&alice, "up1_ask", testkit_state()),
    ] {
        let r = retry(tok, name, state);
        let v = r.json();
        assert_eq!(
            (r.status, v["error"]["code"].as_i64()),
            (400, Some(-32602)),
            "{name} {v}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("requestState")
        );
    }
    assert_eq!(
        env.upstreams[1].tool_calls().len(),
        calls,
        "nothing forwarded"
    );
    // The intact wrapper of this user for this call: the upstream gets its own state back.
    let v = retry(&alice, "up1_ask", &wrapped).json();
    assert_eq!(v["result"]["content"][0]["text"], "hello Ada", "{v}");
    assert_eq!(
        env.upstreams[1].tool_calls().pop().unwrap().body["params"]["requestState"],
        testkit_state()
    );
    // Past its lifetime the wrapper is refused too.
    env.advance(std::time::Duration::from_secs(601));
    let mut c = env.issuer.claims("alice", AUD, "mcp:tools");
    for k in ["iat", "nbf", "exp"] {
        if let Some(t) = c[k].as_i64() {
            c[k] = json!(t + 601);
        }
    }
    let alice = env.issuer.mint(&c);
    assert_eq!(retry(&alice, "up1_ask", &wrapped).status, 400);
    // A 2025 client cannot carry input_required: a clear error, not a result it misreads.
    let sid = env.session(&alice);
    let v = env.call(&alice, &sid, json!(4), "up1_ask", json!({}));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("input_required"),
        "{v}"
    );
}

fn testkit_state() -> &'static str {
    "mem-ask-state-1"
}

/// A modern upstream's own protocol error (HTTP 400, `-32021` with what it needs) is its
/// answer, relayed as such: to a modern client with HTTP 400 and the upstream's data, to a
/// 2025 client as a JSON-RPC error — never as "the upstream failed".
#[test]
fn an_upstreams_missing_capability_error_is_relayed_in_each_era() {
    let env = start();
    let alice = env.token("alice");
    let r = modern(
        &env,
        &alice,
        "tools/call",
        json!({"name": "up1_sample", "arguments": {}}),
        &[],
    );
    let v = r.json();
    assert_eq!(
        (r.status, v["error"]["code"].as_i64()),
        (400, Some(-32021)),
        "{v}"
    );
    assert_eq!(v["id"], 7, "{v}");
    assert_eq!(
        v["error"]["data"]["requiredCapabilities"]["sampling"],
        json!({})
    );
    let sid = env.session(&alice);
    let v = env.call(&alice, &sid, json!(5), "up1_sample", json!({}));
    assert_eq!(v["error"]["code"], -32021, "{v}");
    assert_eq!(v["id"], 5, "{v}");
}
