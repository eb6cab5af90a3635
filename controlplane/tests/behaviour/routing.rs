//! Routing: namespaced tools over several upstreams, id rewriting, pagination, collisions,
//! batches, and upstream faults (moved from `tests/proxy.rs`).

use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{MemUpstream, UpstreamOptions};

use crate::env::{AUD, Env, ISSUER, config_yaml, listed_tools};

#[test]
fn list_and_call_through_two_upstreams() {
    let env = Env::start(2);
    let tok = env.token("alice");
    let sid = env.session(&tok);
    let r = env.post(
        Some(&tok),
        Some(&sid),
        &json!({"jsonrpc":"2.0","id":"L","method":"tools/list"}),
    );
    let v = r.json();
    assert_eq!(v["id"], "L");
    let names = listed_tools(&v);
    assert!(names.contains(&"up0_echo"), "{names:?}");
    assert!(names.contains(&"up1_echo"), "{names:?}");
    let v = env.call(&tok, &sid, json!(42), "up1_echo", json!({"x": "y"}));
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
}

#[test]
fn paginated_upstream_lists_are_merged_into_one_page() {
    let opts = UpstreamOptions {
        tools: 25,
        page_size: 10,
        ..Default::default()
    };
    let env = Env::start_with(1, opts, "");
    let tok = env.token("alice");
    let sid = env.session(&tok);
    let r = env.post(
        Some(&tok),
        Some(&sid),
        &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
    );
    let v = r.json();
    let names = listed_tools(&v);
    for i in 0..25 {
        assert!(
            names.contains(&format!("up0_tool_{i}").as_str()),
            "missing tool_{i} in {names:?}"
        );
    }
    assert!(v["result"].get("nextCursor").is_none());
}

#[test]
fn colliding_tool_names_are_refused() {
    let issuer = Rc::new(testkit::MemIssuer::new(ISSUER));
    let (a, b) = (
        Rc::new(MemUpstream::default()),
        Rc::new(MemUpstream::default()),
    );
    let yaml = format!(
        "policy:\n  default: allow\ngateway:\n  listen: 127.0.0.1:0\n  public_url: {AUD}\n  shards: 1\nissuers:\n  - issuer: {ISSUER}\nupstreams:\n  - name: a\n    url: http://a.test/mcp\n    namespace: x_\n  - name: b\n    url: http://b.test/mcp\n    namespace: x_\n",
    );
    let h = controlplane::testing::Harness::builder(&yaml)
        .issuer(&issuer)
        .upstream("a", a.clone())
        .upstream("b", b.clone())
        .build()
        .unwrap();
    let env = Env {
        h,
        issuer,
        upstreams: vec![a, b],
    };
    let tok = env.token("alice");
    let sid = env.session(&tok);
    let r = env.post(
        Some(&tok),
        Some(&sid),
        &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
    );
    let v = r.json();
    let echo = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == "x_echo")
        .count();
    assert_eq!(echo, 1, "a contested name is served once");
    // The first upstream in config order keeps it.
    let _ = env.call(&tok, &sid, json!(1), "x_echo", json!({}));
    assert_eq!(env.upstreams[0].tool_calls().len(), 1);
    assert_eq!(env.upstreams[1].tool_calls().len(), 0);
}

#[test]
fn batches_only_for_2025_03_26() {
    let env = Env::start(1);
    let tok = env.token("alice");
    let batch = json!([
        {"jsonrpc":"2.0","id":1,"method":"ping"},
        {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"up0_echo","arguments":{"k":"v"}}},
        {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"x","progress":1}},
        {"jsonrpc":"2.0","id":3,"method":"initialize","params":{}}
    ]);
    // A 2025-06-18 session: refused, nothing runs.
    let sid = env.session(&tok);
    let r = env.post(Some(&tok), Some(&sid), &batch);
    assert_eq!(r.status, 400);
    assert!(env.upstreams[0].tool_calls().is_empty());
    // A 2025-03-26 session: every element answered in one array.
    let r = env.post(Some(&tok), None, &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}));
    let old = r.header("mcp-session-id").unwrap().to_owned();
    let v = r.json();
    assert_eq!(v["result"]["protocolVersion"], "2025-03-26");
    let r = env.post(Some(&tok), Some(&old), &batch);
    assert_eq!(r.status, 200);
    let v = r.json();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 3, "{v}");
    assert_eq!(arr[0]["id"], 1);
    assert_eq!(arr[1]["id"], 2);
    assert_eq!(arr[1]["result"]["structuredContent"]["k"], "v");
    assert_eq!(arr[2]["id"], 3);
    assert_eq!(arr[2]["error"]["code"], -32600);
}

#[test]
#[allow(
    clippy::disallowed_methods,
    reason = "the upstream timeout is a real timer: the test measures real elapsed time"
)]
fn upstream_faults_become_jsonrpc_errors() {
    // The upstream timeout is real time (monoio's timer): 300 ms here instead of 2 s.
    let env = Env::start_edited(2, UpstreamOptions::default(), "", |y| {
        y.replace("    timeout: 2s\n", "    timeout: 300ms\n")
    });
    let tok = env.token("alice");
    let sid = env.session(&tok);
    // Slow: beyond the upstream timeout → error with our id, in time.
    let t0 = Instant::now();
    let v = env.call(&tok, &sid, json!("s"), "up0_slow", json!({"ms": 5000}));
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
    let v = env.call(&tok, &sid, json!("c"), "up0_cut", json!({}));
    assert_eq!(v["id"], "c");
    assert!(v["error"].is_object(), "{v}");
    // Garbage → error; the other upstream keeps working.
    env.upstreams[0].set_mode(testkit::UpstreamMode::Garbage);
    let v = env.call(&tok, &sid, json!("g"), "up0_echo", json!({}));
    assert_eq!(v["id"], "g");
    assert!(v["error"].is_object(), "{v}");
    let v = env.call(&tok, &sid, json!("ok"), "up1_echo", json!({"a":1}));
    assert_eq!(v["result"]["structuredContent"]["a"], 1, "{v}");
    // Refused (503) → error.
    env.upstreams[0].set_mode(testkit::UpstreamMode::Refuse);
    let v = env.call(&tok, &sid, json!("r"), "up0_echo", json!({}));
    assert!(
        v["error"]["message"].as_str().unwrap().contains("503"),
        "{v}"
    );
    // Unknown tool → -32602.
    let v = env.call(&tok, &sid, json!("u"), "up0_nope", json!({}));
    assert_eq!(v["error"]["code"], -32602);
}

#[test]
fn a_tool_call_is_sent_at_most_once() {
    // The upstream reads every tools/call, counts it and closes the connection without an
    // answer (it ran, then crashed). Each request below goes out on a connection reused from
    // the shard's pool (the upstream session was opened on it), which is exactly where a
    // resend used to happen.
    let env = Env::start(1);
    let up = env.upstreams[0].clone();
    let tok = env.token("alice");
    // An idempotent request (the DELETE ending an upstream session) on a reused connection
    // that closed unanswered is resent, once. (The MCP lists, the other safe methods, are
    // answered from the catalog and no longer reach an upstream.)
    let first = env.session(&tok);
    let v = env.call(&tok, &first, json!(1), "up0_echo", json!({}));
    assert!(v["result"].is_object(), "{v}");
    let deletes = up.count("DELETE"); // discovery's own session end
    up.hang_up_on("DELETE", 1);
    assert_eq!(env.delete(Some(&tok), &first).status, 200);
    assert_eq!(up.count("DELETE") - deletes, 2);
    up.hang_up_on("tools/call", usize::MAX);
    let sid = env.session(&tok);
    // Its upstream session is opened, and the connection pooled, by a forwarded request.
    let r = env.post(
        Some(&tok),
        Some(&sid),
        &json!({"jsonrpc":"2.0","id":2,"method":"logging/setLevel","params":{"level":"info"}}),
    );
    assert_eq!(r.status, 200);
    // A tool call never is.
    let before = up.count("tools/call");
    let v = env.call(
        &tok,
        &sid,
        json!("req.1"),
        "up0_echo",
        json!({"status": "closed"}),
    );
    assert_eq!(
        up.count("tools/call") - before,
        1,
        "executed exactly once: {v}"
    );
    assert_eq!(v["id"], "req.1", "{v}");
    assert_eq!(v["error"]["code"], -32002, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("without answering") && msg.contains("not sent again"),
        "{msg}"
    );
}

#[test]
fn config_yaml_is_the_socket_tests_shape() {
    // Guard against the fixture drifting from `tests/common`: same keys, in-memory URLs.
    let y = config_yaml(&[ISSUER], &["up0"], "");
    assert!(y.contains("url: http://up0.test/mcp"), "{y}");
    controlplane::Config::parse(&y, "t.yaml").unwrap();
}
