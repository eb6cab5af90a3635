//! End-to-end through the real gateway over real sockets: one happy path per concern the
//! socket-free behaviour suites cover (`tests/behaviour`), and what only sockets, real time
//! or a real process can show: SSE timing, cancellation while a call is in flight, the
//! epoll driver and metrics, SIGTERM draining, key staleness, a kernel-closed connection.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::disallowed_methods, reason = "measures real stream timing")]

mod common;

use std::time::{Duration, Instant};

use common::Env;
use serde_json::{Value, json};

/// Token accepted, session opened and ended, a deny-by-default policy, a call routed to the
/// second of two upstreams: the behaviour suites' subjects, once, through real HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_paths_end_to_end() {
    let env = Env::start_edited(2, Default::default(), "", |y| {
        y.replace(
            "policy:\n  default: allow\n",
            "policy:\n  default: deny\n  rules:\n    - tools: [up0_echo, up1_echo]\n",
        )
    })
    .await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    let list = json!({"jsonrpc":"2.0","id":"L","method":"tools/list"});
    let v: Value = env
        .post(Some(&tok), Some(&sid), &list)
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["up0_echo", "up1_echo"], "only permitted tools");
    let v = env
        .call(&tok, &sid, json!(42), "up1_echo", json!({"x": "y"}))
        .await;
    assert_eq!(v["id"], 42, "{v}");
    assert_eq!(v["result"]["structuredContent"]["x"], "y");
    let calls = env.upstreams[1].tool_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body["params"]["name"], "echo");
    assert_ne!(calls[0].body["id"], json!(42));
    assert!(env.upstreams[0].tool_calls().is_empty());
    let r = env
        .client
        .delete(env.url())
        .bearer_auth(&tok)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(env.post(Some(&tok), Some(&sid), &list).await.status(), 404);
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
async fn cancellation_is_mapped_to_the_upstream_id() {
    let env = Env::start(1).await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    let slow = {
        let (client, url, tok, sid) = (env.client.clone(), env.url(), tok.clone(), sid.clone());
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(tok)
                .header("content-type", "application/json")
                .header("mcp-session-id", sid)
                .body(json!({"jsonrpc":"2.0","id":"slow-1","method":"tools/call","params":{"name":"up0_slow","arguments":{"ms":1500}}}).to_string())
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    };
    // Wait until the call reached the upstream.
    let mut gid = serde_json::Value::Null;
    for _ in 0..200 {
        if let Some(c) = env.upstreams[0].tool_calls().first() {
            gid = c.body["id"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        gid.is_u64(),
        "upstream saw a gateway-assigned numeric id: {gid}"
    );
    let r = env
        .post(Some(&tok), Some(&sid), &json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"slow-1","reason":"user"}}))
        .await;
    assert_eq!(r.status(), 202);
    let cancels: Vec<_> = env.upstreams[0]
        .requests()
        .into_iter()
        .filter(|r| r.rpc_method() == Some("notifications/cancelled"))
        .collect();
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].body["params"]["requestId"], gid);
    let _ = slow.await.unwrap();
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoll_fallback_serves_and_metrics_move() {
    let env = Env::start_with(1, Default::default(), "  io_driver: epoll\n").await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    let v = env
        .call(&tok, &sid, json!(1), "up0_echo", json!({"a": 2}))
        .await;
    assert_eq!(v["result"]["structuredContent"]["a"], 2, "{v}");
    let m = env
        .client
        .get(format!("http://{}/metrics", env.gw.admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("warden_http_requests_total{method=\"POST\",status=\"200\"}"),
        "{m}"
    );
    assert!(
        m.contains("warden_upstream_request_duration_seconds"),
        "{m}"
    );
    let r = env
        .client
        .get(format!("http://{}/readyz", env.gw.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .client
        .get(format!("http://{}/healthz", env.gw.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let issuer = testkit::TestIssuer::start().await;
    let up = testkit::TestUpstream::start(Default::default()).await;
    let port = testkit::stable_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("w.yaml");
    let yaml = common::config_yaml(&issuer.issuer(), &[("up0".into(), up.url())], "").replace(
        "listen: 127.0.0.1:0\n  public_url",
        &format!("listen: 127.0.0.1:{port}\n  public_url"),
    );
    let audit_dir = common::audit_dir_of(&yaml);
    std::fs::write(&cfg, yaml).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["serve", "-c"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let client = reqwest::Client::new();
    let tok = issuer.mint(&issuer.claims("alice", common::AUD, "mcp:tools"));
    let mut sid = None;
    for _ in 0..200 {
        let r = client
            .post(&url)
            .bearer_auth(&tok)
            .header("content-type", "application/json")
            .body(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#)
            .send()
            .await;
        if let Ok(r) = r {
            sid = r
                .headers()
                .get("mcp-session-id")
                .map(|v| v.to_str().unwrap().to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sid = sid.expect("gateway came up");
    let call = {
        let (client, url, tok, sid) = (client.clone(), url.clone(), tok.clone(), sid.clone());
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(tok)
                .header("content-type", "application/json")
                .header("mcp-session-id", sid)
                .body(json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"up0_slow","arguments":{"ms":1500}}}).to_string())
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        })
    };
    for _ in 0..200 {
        if !up.tool_calls().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A keep-alive connection opened before the signal.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let prm = format!(
        "GET /.well-known/oauth-protected-resource/mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    );
    let mut keep = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    keep.write_all(prm.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = keep.read(&mut buf).await.unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(!first.contains("connection: close"), "{first}");
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // New connections are refused while the call is still being served.
    let t0 = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "still accepting after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!call.is_finished(), "the call outlived the listener");
    // A request on an open connection is still answered, with `connection: close`.
    keep.write_all(prm.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), keep.read_to_end(&mut out))
        .await
        .expect("closed after the answer")
        .unwrap();
    let second = String::from_utf8_lossy(&out);
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(second.contains("connection: close"), "{second}");
    let v = call.await.unwrap();
    assert_eq!(v["id"], 9);
    assert!(v["result"].is_object(), "the in-flight call finished: {v}");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "warden did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "no longer accepting"
    );
    // The drained call's audit record was flushed before the process exited.
    let recs: Vec<serde_json::Value> = controlplane::audit::chain_files(&audit_dir)
        .unwrap()
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        recs.iter()
            .any(|r| r["tool"] == "up0_slow" && r["decision"] == "allow"),
        "{recs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_keys_stop_being_used() {
    // Keys older than jwks_max_staleness without a successful refresh: fail closed.
    let env = Env::start_edited(1, Default::default(), "", |y| {
        y.replace(
            "    jwks_min_refetch_interval: 2s\n",
            "    jwks_min_refetch_interval: 1s\n    jwks_max_staleness: 2s\n",
        )
    })
    .await;
    let tok = env.token("alice");
    let ready = |c: reqwest::Client, a: std::net::SocketAddr| async move {
        c.get(format!("http://{a}/readyz"))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(ready(env.client.clone(), env.gw.admin_addr).await, 200);
    let sid = env.session(&tok).await;
    env.issuer.set_jwks_mode(testkit::JwksMode::Status500);
    let mut status = 200;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = ready(env.client.clone(), env.gw.admin_addr).await.as_u16();
        if status == 503 {
            break;
        }
    }
    assert_eq!(status, 503, "not ready once the keys are stale");
    let r = env
        .post(
            Some(&tok),
            Some(&sid),
            &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
        )
        .await;
    assert_eq!(
        r.status(),
        401,
        "stale keys are not used, even for a cached token"
    );
    // The issuer recovers: keys are fresh again.
    env.issuer.set_jwks_mode(testkit::JwksMode::Normal);
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if ready(env.client.clone(), env.gw.admin_addr).await == 200 {
            break;
        }
    }
    let r = env
        .post(
            Some(&tok),
            Some(&sid),
            &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    env.gw.shutdown().await;
}

/// Also in memory (`behaviour::routing`); kept here because a real kernel FIN after an
/// unanswered request, and the pool's `MSG_PEEK` probe of it, only exist on a socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_is_sent_at_most_once() {
    // The upstream reads every tools/call, counts it and closes the connection without an
    // answer (it ran, then crashed). Each request below goes out on a connection reused from
    // the shard's pool (the upstream session was opened on it), which is exactly where a
    // resend used to happen.
    let up = testkit::DroppingUpstream::start(&[("tools/call", usize::MAX)]).await;
    let url = up.url();
    let env = Env::start_edited(0, Default::default(), "", |y| {
        y.replace(
            "upstreams:\n  []\n",
            &format!("upstreams:\n  - name: up0\n    url: {url}\n    timeout: 2s\n"),
        )
    })
    .await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    // A forwarded request opens the upstream session and leaves its connection in the pool.
    // (The resend of a safe request, once, is shown in memory: the MCP lists this test used
    // are answered from the catalog now and never reach an upstream.)
    let r = env
        .post(
            Some(&tok),
            Some(&sid),
            &json!({"jsonrpc":"2.0","id":2,"method":"logging/setLevel","params":{"level":"info"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    // A tool call on that reused connection is never resent.
    let tool = format!("up0_{}", testkit::DROPPING_TOOL);
    let v = env
        .call(
            &tok,
            &sid,
            json!("req.1"),
            &tool,
            json!({"status": "closed"}),
        )
        .await;
    assert_eq!(up.count("tools/call"), 1, "executed exactly once: {v}");
    assert_eq!(v["id"], "req.1", "{v}");
    assert_eq!(v["error"]["code"], -32002, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("without answering") && msg.contains("not sent again"),
        "{msg}"
    );
    env.gw.shutdown().await;
}
