//! End-to-end through the real gateway: sessions, routing, id rewriting, SSE timing, faults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Env;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_call_through_two_upstreams() {
    let env = Env::start(2).await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    let r = env
        .post(
            Some(&tok),
            Some(&sid),
            &json!({"jsonrpc":"2.0","id":"L","method":"tools/list"}),
        )
        .await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["id"], "L");
    let names: Vec<String> = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"up0_echo".to_string()), "{names:?}");
    assert!(names.contains(&"up1_echo".to_string()), "{names:?}");
    let v = env
        .call(&tok, &sid, json!(42), "up1_echo", json!({"x": "y"}))
        .await;
    assert_eq!(v["id"], 42, "{v}");
    assert_eq!(v["result"]["structuredContent"]["x"], "y");
    // The call reached up1 only, with a gateway-assigned id and the upstream's own tool name.
    let calls = env.upstreams[1].tool_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body["params"]["name"], "echo");
    assert_ne!(calls[0].body["id"], json!(42));
    assert!(env.upstreams[0].tool_calls().is_empty());
    // Upstreams never receive the client's Authorization header.
    for u in &env.upstreams {
        for rec in u.requests() {
            assert!(
                rec.header("authorization").is_none(),
                "upstream got an Authorization header"
            );
        }
    }
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_keep_their_spacing() {
    let env = Env::start(1).await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    let body = json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"up0_ticks","arguments":{"count":3,"interval_ms":300},"_meta":{"progressToken":"p1"}}});
    let mut r = env.post(Some(&tok), Some(&sid), &body).await;
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut arrivals = Vec::new();
    let mut buf = String::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(i) = buf.find("\n\n") {
            let ev: String = buf.drain(..i + 2).collect();
            if ev.contains("data: ") {
                arrivals.push((Instant::now(), ev));
            }
        }
    }
    assert_eq!(arrivals.len(), 4, "{arrivals:?}");
    for w in arrivals.windows(2) {
        let gap = w[1].0 - w[0].0;
        assert!(
            gap >= Duration::from_millis(200),
            "events arrived {gap:?} apart"
        );
    }
    assert!(arrivals[0].1.contains("\"progressToken\":\"p1\""));
    assert!(arrivals[3].1.contains("\"id\":7"));
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_bound_and_end() {
    let env = Env::start(1).await;
    let alice = env.token("alice");
    let bob = env.token("bob");
    let sid = env.session(&alice).await;
    // Another user's valid token with alice's session → 404.
    let r = env
        .post(
            Some(&bob),
            Some(&sid),
            &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
        )
        .await;
    assert_eq!(r.status(), 404);
    // No token → 401 even with a valid session.
    let r = env
        .post(
            None,
            Some(&sid),
            &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
        )
        .await;
    assert_eq!(r.status(), 401);
    // Missing session → 400.
    let r = env
        .post(
            Some(&alice),
            None,
            &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    // DELETE ends it; afterwards 404.
    let r = env
        .client
        .delete(env.url())
        .bearer_auth(&alice)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .post(
            Some(&alice),
            Some(&sid),
            &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
        )
        .await;
    assert_eq!(r.status(), 404);
    // GET: authenticated first, then 405.
    let r = env
        .client
        .get(env.url())
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let sid2 = env.session(&alice).await;
    let r = env
        .client
        .get(env.url())
        .bearer_auth(&alice)
        .header("mcp-session-id", &sid2)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_become_jsonrpc_errors() {
    let env = Env::start(2).await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    // Slow: beyond the 2 s upstream timeout → error with our id, in time.
    let t0 = Instant::now();
    let v = env
        .call(&tok, &sid, json!("s"), "up0_slow", json!({"ms": 5000}))
        .await;
    assert_eq!(v["id"], "s");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{v}"
    );
    assert!(t0.elapsed() < Duration::from_secs(4));
    // Cut mid-SSE → error event with our id.
    let v = env.call(&tok, &sid, json!("c"), "up0_cut", json!({})).await;
    assert_eq!(v["id"], "c");
    assert!(v["error"].is_object(), "{v}");
    // Garbage → error; the other upstream keeps working.
    env.upstreams[0].set_mode(testkit::UpstreamMode::Garbage);
    let v = env
        .call(&tok, &sid, json!("g"), "up0_echo", json!({}))
        .await;
    assert_eq!(v["id"], "g");
    assert!(v["error"].is_object(), "{v}");
    let v = env
        .call(&tok, &sid, json!("ok"), "up1_echo", json!({"a":1}))
        .await;
    assert_eq!(v["result"]["structuredContent"]["a"], 1, "{v}");
    // Refused (503) → error.
    env.upstreams[0].set_mode(testkit::UpstreamMode::Refuse);
    let v = env
        .call(&tok, &sid, json!("r"), "up0_echo", json!({}))
        .await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("503"),
        "{v}"
    );
    // Unknown tool → -32602.
    let v = env
        .call(&tok, &sid, json!("u"), "up0_nope", json!({}))
        .await;
    assert_eq!(v["error"]["code"], -32602);
    env.gw.shutdown().await;
}
