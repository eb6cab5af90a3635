//! Overload and abuse through the real gateway: per-user and per-tool rate limits (429,
//! `Retry-After`, a readable JSON-RPC error, audited, never forwarded) and the in-flight cap.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(
    clippy::disallowed_methods,
    reason = "measures real latencies and deadlines under load"
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Env;
use controlplane::Config;
use serde_json::{Value, json};

async fn start(rate_limits: &str, edit: impl FnOnce(String) -> String) -> (Env, PathBuf) {
    let mut dir = PathBuf::new();
    let env = Env::start_edited(1, Default::default(), "", |y| {
        dir = common::audit_dir_of(&y);
        edit(format!("{y}{rate_limits}"))
    })
    .await;
    (env, dir)
}

fn records(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for f in controlplane::audit::chain_files(dir).unwrap_or_default() {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            out.push(serde_json::from_str(line).unwrap());
        }
    }
    out
}

fn call_body(id: Value, tool: &str, args: Value) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}})
}

/// A 429's `Retry-After` seconds and its JSON-RPC body.
async fn limited(r: reqwest::Response) -> (u64, Value) {
    assert_eq!(r.status(), 429);
    let retry = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    (retry, r.json().await.unwrap())
}

async fn metrics(env: &Env) -> String {
    env.client
        .get(format!("http://{}/metrics", env.gw.admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_the_limit_gets_429_and_others_are_unaffected() {
    // One token per 10 s, bursts of 6: a session (initialize + initialized) and four calls.
    let (env, dir) = start(
        "rate_limits:\n  per_user: { per_second: 0.1, burst: 6 }\n",
        |y| y,
    )
    .await;
    let (alice, bob) = (env.token("alice"), env.token("bob"));
    let (sa, sb) = (env.session(&alice).await, env.session(&bob).await);
    // Interleaved: both users call in the same time span.
    for i in 0..4 {
        let v = env
            .call(
                &alice,
                &sa,
                json!(i),
                "up0_echo",
                json!({"who": "alice", "i": i}),
            )
            .await;
        assert_eq!(v["result"]["structuredContent"]["i"], i, "{v}");
        if i < 3 {
            let v = env
                .call(
                    &bob,
                    &sb,
                    json!(i),
                    "up0_echo",
                    json!({"who": "bob", "i": i}),
                )
                .await;
            assert_eq!(v["result"]["structuredContent"]["i"], i, "{v}");
        }
    }
    let t0 = Instant::now();
    let r = env
        .post(
            Some(&alice),
            Some(&sa),
            &call_body(
                json!("over"),
                "up0_echo",
                json!({"who": "alice", "i": "over"}),
            ),
        )
        .await;
    let (retry, v) = limited(r).await;
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    assert_eq!(v["id"], "over", "the request's own id: {v}");
    assert_eq!(v["error"]["code"], -32029, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("Rate limit exceeded"), "{msg}");
    assert!(
        msg.contains(&format!("Retry after {retry} seconds")),
        "{msg}"
    );
    assert_eq!(v["error"]["data"]["scope"], "user");
    assert_eq!(v["error"]["data"]["retryAfterSeconds"], retry);
    // Any request of alice's is limited now, not only tool calls; bob's are not.
    let r = env
        .post(
            Some(&alice),
            Some(&sa),
            &json!({"jsonrpc":"2.0","id":"p","method":"ping"}),
        )
        .await;
    assert_eq!(limited(r).await.1["id"], "p");
    let v = env
        .call(
            &bob,
            &sb,
            json!(9),
            "up0_echo",
            json!({"who": "bob", "i": 9}),
        )
        .await;
    assert_eq!(v["result"]["structuredContent"]["i"], 9, "{v}");

    // The limited calls never reached the upstream.
    let calls = env.upstreams[0].tool_calls();
    assert_eq!(calls.len(), 8, "4 of alice's, 4 of bob's");
    assert!(
        calls
            .iter()
            .all(|c| c.body["params"]["arguments"]["i"] != "over")
    );
    let m = metrics(&env).await;
    assert!(
        m.contains("warden_ratelimit_limited_total{scope=\"user\"}"),
        "{m}"
    );
    env.gw.shutdown().await;
    // One record per limited request, with its own outcome; never the user id as a label.
    let recs = records(&dir);
    let lim: Vec<&Value> = recs
        .iter()
        .filter(|r| r["decision"] == "rate_limited")
        .collect();
    assert_eq!(lim.len(), 2, "{lim:#?}");
    assert!(lim.iter().all(|r| r["sub"] == "alice"));
    assert!(
        lim.iter()
            .all(|r| r["reason"] == "per-user rate limit exceeded")
    );
    let call = lim.iter().find(|r| r["method"] == "tools/call").unwrap();
    assert_eq!(call["tool"], "up0_echo");
    assert!(lim.iter().any(|r| r["method"] == "ping"));
    assert!(!m.contains("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_tool_limit_limits_only_that_tool() {
    // A configured tool the catalog lacks is a warning, not a start failure.
    let (env, dir) = start(
        "rate_limits:\n  per_tool:\n    - { tool: up0_echo, per_second: 0.1, burst: 2 }\n    - { tool: up0_not_offered, per_second: 1, burst: 1 }\n",
        |y| y,
    )
    .await;
    let (alice, bob) = (env.token("alice"), env.token("bob"));
    let (sa, sb) = (env.session(&alice).await, env.session(&bob).await);
    for i in 0..2 {
        let v = env
            .call(&alice, &sa, json!(i), "up0_echo", json!({"i": i}))
            .await;
        assert!(v["result"].is_object(), "{v}");
    }
    let r = env
        .post(
            Some(&alice),
            Some(&sa),
            &call_body(json!(7), "up0_echo", json!({"i": "over"})),
        )
        .await;
    let (retry, v) = limited(r).await;
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    assert_eq!(v["id"], 7);
    assert_eq!(v["error"]["code"], -32029);
    assert_eq!(v["error"]["data"]["scope"], "tool");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Rate limit exceeded for this tool"),
        "{v}"
    );
    // Other tools of the same user, and the same tool for another user, still work.
    for i in 0..3 {
        let v = env
            .call(&alice, &sa, json!(10 + i), "up0_whoami", json!({}))
            .await;
        assert!(v["result"].is_object(), "{v}");
    }
    for i in 0..2 {
        let v = env
            .call(&bob, &sb, json!(i), "up0_echo", json!({"i": i}))
            .await;
        assert!(v["result"].is_object(), "{v}");
    }
    let echo_calls = env.upstreams[0]
        .tool_calls()
        .into_iter()
        .filter(|c| c.body["params"]["name"] == "echo")
        .count();
    assert_eq!(echo_calls, 4, "the limited call was not forwarded");
    env.gw.shutdown().await;
    let recs = records(&dir);
    let lim: Vec<&Value> = recs
        .iter()
        .filter(|r| r["decision"] == "rate_limited")
        .collect();
    assert_eq!(lim.len(), 1, "{lim:#?}");
    assert_eq!(lim[0]["sub"], "alice");
    assert_eq!(lim[0]["tool"], "up0_echo");
    assert_eq!(lim[0]["upstream"], "up0");
    assert_eq!(lim[0]["upstream_tool"], "echo");
    assert_eq!(lim[0]["reason"], "per-tool rate limit exceeded");
    assert!(lim[0]["upstream_status"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_in_flight_cap_a_fast_503() {
    let (env, _dir) = start("", |y| {
        y.replace("  shards: 2\n", "  shards: 1\n")
            .replace("limits:\n", "limits:\n  max_in_flight_per_shard: 2\n")
    })
    .await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    // Two requests in flight: a slow call and an SSE stream (streams count until their end).
    let slow = {
        let (c, url, tok, sid) = (env.client.clone(), env.url(), tok.clone(), sid.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let r = c
                .post(url)
                .bearer_auth(tok)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-session-id", sid)
                .body(call_body(json!(1), "up0_slow", json!({"ms": 1500})).to_string())
                .send()
                .await
                .unwrap();
            let status = r.status();
            let text = r.text().await.unwrap();
            (status, text, t.elapsed())
        })
    };
    let stream = {
        let (c, url, tok, sid) = (env.client.clone(), env.url(), tok.clone(), sid.clone());
        tokio::spawn(async move {
            let r = c
                .post(url)
                .bearer_auth(tok)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-session-id", sid)
                .body(
                    json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"up0_ticks","arguments":{"count":3,"interval_ms":500},"_meta":{"progressToken":"t"}}})
                        .to_string(),
                )
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.upstreams[0].tool_calls().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the two calls never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The third: answered at once, before authentication (even without a token).
    for token in [Some(tok.as_str()), None] {
        let t = Instant::now();
        let r = env
            .post(
                token,
                Some(&sid),
                &call_body(json!(3), "up0_echo", json!({})),
            )
            .await;
        let took = t.elapsed();
        assert_eq!(r.status(), 503);
        assert!(took < Duration::from_millis(500), "took {took:?}");
        assert_eq!(r.headers()["retry-after"], "1");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "overloaded");
    }
    let (status, text, took) = slow.await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(took >= Duration::from_millis(1500));
    let (status, text) = stream.await.unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("\"id\":2"), "{text}");
    // Slots are released at the end of each response.
    let v = env.call(&tok, &sid, json!(4), "up0_echo", json!({})).await;
    assert!(v["result"].is_object(), "{v}");
    assert_eq!(
        env.upstreams[0].tool_calls().len(),
        3,
        "the refused request was never forwarded"
    );
    let m = metrics(&env).await;
    let line = m
        .lines()
        .find(|l| l.starts_with("warden_overload_rejected_total{reason=\"in_flight\"}"))
        .unwrap_or_else(|| panic!("{m}"));
    assert!(line.ends_with(" 2"), "{line}");
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_messages_pay_per_message() {
    // 4 tokens per user: initialize, the batch's HTTP request (its first message), two more.
    let (env, _dir) = start(
        "rate_limits:\n  per_user: { per_second: 0.1, burst: 4 }\n  per_tool:\n    - { tool: up0_echo, per_second: 0.1, burst: 1 }\n",
        |y| y,
    )
    .await;
    let tok = env.token("alice");
    let r = env
        .post(Some(&tok), None, &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
        .await;
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let batch = json!([
        call_body(json!(1), "up0_echo", json!({})),
        call_body(json!(2), "up0_echo", json!({})),
        call_body(json!(3), "up0_whoami", json!({})),
        {"jsonrpc":"2.0","id":4,"method":"ping"},
    ]);
    let r = env.post(Some(&tok), Some(&sid), &batch).await;
    assert_eq!(r.status(), 200, "limits inside a batch answer in the array");
    let v: Value = r.json().await.unwrap();
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), 4, "{v}");
    assert!(a[0]["result"].is_object(), "{v}");
    assert_eq!(a[1]["id"], 2);
    assert_eq!(a[1]["error"]["code"], -32029);
    assert_eq!(a[1]["error"]["data"]["scope"], "tool");
    assert!(a[2]["result"].is_object(), "{v}");
    assert_eq!(a[3]["id"], 4);
    assert_eq!(a[3]["error"]["data"]["scope"], "user");
    let names: Vec<Value> = env.upstreams[0]
        .tool_calls()
        .iter()
        .map(|c| c.body["params"]["name"].clone())
        .collect();
    assert_eq!(names, [json!("echo"), json!("whoami")]);
    env.gw.shutdown().await;
}

fn parse_err(extra: &str) -> String {
    let base = "gateway:\n  listen: 127.0.0.1:8080\n  public_url: http://127.0.0.1:8080/mcp\nissuers:\n  - issuer: http://127.0.0.1:9000\n";
    Config::parse(&format!("{base}{extra}"), "bad.yaml")
        .unwrap_err()
        .to_string()
}

#[test]
fn limit_settings_are_validated_with_key_paths() {
    let base = "gateway:\n  listen: 127.0.0.1:8080\n  public_url: http://127.0.0.1:8080/mcp\nissuers:\n  - issuer: http://127.0.0.1:9000\n";
    let ok = Config::parse(
        &format!("{base}limits:\n  max_in_flight_per_shard: 8\nrate_limits:\n  per_user: {{ per_second: 50, burst: 100 }}\n  per_tool:\n    - {{ tool: a_b, per_second: 0.5, burst: 1 }}\n"),
        "ok.yaml",
    )
    .unwrap();
    assert_eq!(ok.limits.max_in_flight_per_shard, 8);
    assert_eq!(ok.rate_limits.per_tool[0].per_second, 0.5);
    let dflt = Config::parse(base, "ok.yaml").unwrap();
    assert_eq!(dflt.limits.max_in_flight_per_shard, 1024);
    assert!(dflt.rate_limits.per_user.is_none());
    for (extra, path) in [
        (
            "rate_limits:\n  per_user: { per_second: 0, burst: 1 }\n",
            "rate_limits.per_user.per_second",
        ),
        (
            "rate_limits:\n  per_user: { per_second: -2, burst: 1 }\n",
            "rate_limits.per_user.per_second",
        ),
        (
            "rate_limits:\n  per_user: { per_second: 1, burst: 0 }\n",
            "rate_limits.per_user.burst",
        ),
        (
            "rate_limits:\n  per_tool:\n    - { tool: a, per_second: 1, burst: 1 }\n    - { tool: b, per_second: 1, burst: 0 }\n",
            "rate_limits.per_tool[1].burst",
        ),
        (
            "rate_limits:\n  per_tool:\n    - { tool: a, per_second: 1, burst: 1 }\n    - { tool: a, per_second: 2, burst: 1 }\n",
            "rate_limits.per_tool[1].tool",
        ),
        (
            "rate_limits:\n  per_tool:\n    - { tool: a, per_second: 1 }\n",
            "rate_limits.per_tool[0]",
        ),
        (
            "rate_limits:\n  per_user: { per_second: 1, brust: 1 }\n",
            "rate_limits.per_user",
        ),
        (
            "limits:\n  max_in_flight_per_shard: 0\n",
            "limits.max_in_flight_per_shard",
        ),
    ] {
        let e = parse_err(extra);
        assert!(e.starts_with(&format!("bad.yaml: {path}")), "{extra}: {e}");
    }
}
