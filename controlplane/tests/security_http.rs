//! SECURITY.md "HTTP" rules and client identity headers, against the real gateway over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(
    clippy::disallowed_methods,
    reason = "measures real connection timeouts"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Env, raw};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn call_body(id: i64) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"up0_echo","arguments":{"k":"v"}}})
}

/// POST raw body bytes with extra headers; returns (status, body text).
async fn post_bytes(
    env: &Env,
    tok: &str,
    sid: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String) {
    let mut rb = env
        .client
        .post(env.url())
        .bearer_auth(tok)
        .header("accept", "application/json, text/event-stream")
        .timeout(Duration::from_secs(10));
    if let Some(s) = sid {
        rb = rb.header("mcp-session-id", s);
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("mcp-protocol-version"))
        {
            rb = rb.header("mcp-protocol-version", "2025-06-18");
        }
    }
    let has_ct = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
    if !has_ct {
        rb = rb.header("content-type", "application/json");
    }
    for (n, v) in headers {
        rb = rb.header(*n, *v);
    }
    let r = rb.body(body).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.text().await.unwrap())
}

fn rpc_code(text: &str) -> i64 {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error code: {text}"))
}

/// Connect, send `bytes`, then read until EOF within `wait`. Returns (output, closed by the peer, elapsed).
async fn exchange(
    addr: std::net::SocketAddr,
    bytes: &[u8],
    wait: Duration,
) -> (String, bool, Duration) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let t0 = Instant::now();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    // Ok(_) = read_to_end finished (EOF or reset) before `wait`: the peer closed.
    let closed = tokio::time::timeout(wait, s.read_to_end(&mut out))
        .await
        .is_ok();
    (
        String::from_utf8_lossy(&out).into_owned(),
        closed,
        t0.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_limit_by_content_length_is_413_before_the_body() {
    let env = Env::start(1).await;
    let tok = env.token("alice");
    // Only the head, announcing 10 MB: the 413 must come without the body (body_timeout is 1 s,
    // so a gateway waiting for the body would answer 408 instead, and later).
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n",
        env.gw.addr
    );
    let (out, closed, took) = exchange(env.gw.addr, head.as_bytes(), Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(closed, "connection left open after 413");
    assert!(took < Duration::from_millis(900), "413 took {took:?}");
    // Just over the limit (65536 + 1) is refused too; exactly at the limit is read.
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 65537\r\n\r\n",
        env.gw.addr
    );
    let (out, _, _) = exchange(env.gw.addr, head.as_bytes(), Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(env.upstreams[0].tool_calls().is_empty());
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_limit_is_413() {
    let env = Env::start(1).await;
    let tok = env.token("alice");
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        env.gw.addr
    );
    // One chunk announced larger than the limit: refused at its size line.
    let mut req = head.clone().into_bytes();
    req.extend_from_slice(b"20000\r\n");
    let (out, closed, took) = exchange(env.gw.addr, &req, Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(
        closed && took < Duration::from_millis(900),
        "closed {closed} after {took:?}"
    );
    // Small chunks adding up past the limit: 4 × 16000 sent, then a 4000-byte chunk announced.
    let mut req = head.into_bytes();
    for _ in 0..4 {
        req.extend_from_slice(b"3e80\r\n");
        req.extend_from_slice(&vec![b' '; 16000]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"fa0\r\n");
    let (out, closed, _) = exchange(env.gw.addr, &req, Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(closed);
    assert!(env.upstreams[0].tool_calls().is_empty());
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_body_are_cut_at_the_timeout() {
    let env = Env::start(1).await;
    // A partial head, never finished: closed after header_timeout (1 s), with 408 or nothing.
    let partial = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: appl",
        env.gw.addr
    );
    let (out, closed, took) =
        exchange(env.gw.addr, partial.as_bytes(), Duration::from_secs(5)).await;
    assert!(closed, "slow head not closed within 5 s");
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
    // A connection that sends nothing at all is closed too.
    let (_, closed, _) = exchange(env.gw.addr, b"", Duration::from_secs(5)).await;
    assert!(closed, "idle connection not closed");
    // A body that never finishes: closed at body_timeout (1 s).
    let tok = env.token("alice");
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"jsonrpc\"",
        env.gw.addr
    );
    let (out, closed, took) = exchange(env.gw.addr, head.as_bytes(), Duration::from_secs(5)).await;
    assert!(closed, "slow body not closed");
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_400_and_closed() {
    let env = Env::start(1).await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    let addr = env.gw.addr;
    let body = call_body(1).to_string();
    let common = format!(
        "Host: {addr}\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\nMcp-Session-Id: {sid}\r\nMcp-Protocol-Version: 2025-06-18\r\n"
    );
    // A second, smuggled request follows each one; it must never be answered or forwarded.
    let smuggled = format!(
        "POST /mcp HTTP/1.1\r\n{common}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let heads = [
        format!(
            "POST /mcp HTTP/1.1\r\n{common}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
            body.len()
        ),
        format!(
            "POST /mcp HTTP/1.1\r\n{common}Transfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ),
        format!(
            "POST /mcp HTTP/1.1\r\n{common}Content-Length: {}\r\nContent-Length: {}\r\n\r\n",
            body.len(),
            body.len() + 1
        ),
        format!(
            "POST /mcp HTTP/1.1\r\n{common}Content-Length: {0}, {0}\r\n\r\n",
            body.len()
        ),
        format!(
            "POST /mcp HTTP/1.1\r\n{common}Content-Length: +{}\r\n\r\n",
            body.len()
        ),
        format!(
            "POST /mcp HTTP/1.1\r\n{common}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
        format!(
            "POST /mcp HTTP/1.1\r\n{common}Content-Length : {}\r\n\r\n",
            body.len()
        ),
        format!(
            "POST /mcp HTTP/1.1\r\n{common}X-Fold: a\r\n b\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ),
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nHost: evil.example\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ),
    ];
    for h in &heads {
        let mut req = h.clone().into_bytes();
        req.extend_from_slice(format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()).as_bytes());
        req.extend_from_slice(smuggled.as_bytes());
        let (out, closed, _) = exchange(addr, &req, Duration::from_secs(3)).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{h:?} → {out}");
        assert!(closed, "{h:?}: connection kept open");
        assert_eq!(
            out.matches("HTTP/1.1 ").count(),
            1,
            "{h:?}: more than one response: {out}"
        );
    }
    assert!(
        env.upstreams[0].tool_calls().is_empty(),
        "an ambiguous request was forwarded"
    );
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_jsonrpc() {
    let env = Env::start(1).await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    let s = Some(sid.as_str());
    for (body, code, what) in [
        (vec![0xff, 0xfe, b'{', b'}'], -32700, "invalid UTF-8"),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xc3\x28\"}".to_vec(),
            -32700,
            "invalid UTF-8 in a string",
        ),
        (b"hello".to_vec(), -32700, "not JSON"),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,".to_vec(),
            -32700,
            "truncated JSON",
        ),
        (b"".to_vec(), -32700, "empty"),
        (b"{\"foo\":1}".to_vec(), -32600, "JSON, not JSON-RPC"),
        (
            b"{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"ping\"}".to_vec(),
            -32600,
            "wrong jsonrpc version",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"ping\"}".to_vec(),
            -32600,
            "object id",
        ),
        (b"42".to_vec(), -32600, "a number"),
    ] {
        let (st, text) = post_bytes(&env, &tok, s, &[], body).await;
        assert_eq!(st, 400, "{what}: {text}");
        assert_eq!(rpc_code(&text), code, "{what}: {text}");
    }
    // A batch is refused as a whole: nothing in it runs.
    let batch = json!([call_body(1), call_body(2), {"jsonrpc":"2.0","id":3,"method":"ping"}]);
    let (st, text) = post_bytes(&env, &tok, s, &[], batch.to_string().into_bytes()).await;
    assert_eq!(st, 400, "{text}");
    assert_eq!(rpc_code(&text), -32600);
    assert!(
        env.upstreams[0].tool_calls().is_empty(),
        "a batched call ran"
    );
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_is_rejected_fast_without_panic() {
    // 1 MiB bodies here so 100k-deep documents get past the size limit and meet the parser.
    let env = Env::start_edited(1, Default::default(), "", |y| {
        y.replace("max_body_bytes: 65536", "max_body_bytes: 1048576")
    })
    .await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    let s = Some(sid.as_str());
    let deep_open = "[".repeat(100_000);
    let prefix = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"up0_echo","arguments":{"x":"#;
    let bodies = [
        (deep_open.clone(), "100k ["),
        (
            format!("{prefix}{deep_open}"),
            "100k [ in arguments, unterminated",
        ),
        (
            format!(
                "{prefix}{}{}}}}}}}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
            "100k balanced [] in arguments",
        ),
        (
            format!(
                "{prefix}{}1{}}}}}}}",
                "{\"a\":".repeat(50_000),
                "}".repeat(50_000)
            ),
            "50k nested objects in arguments",
        ),
    ];
    for (body, what) in bodies {
        let t0 = Instant::now();
        let (st, text) = post_bytes(&env, &tok, s, &[], body.into_bytes()).await;
        assert_eq!(st, 400, "{what}: {text}");
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "{what}: took {:?}",
            t0.elapsed()
        );
        // Still serving.
        let v = env
            .call(&tok, &sid, json!("after"), "up0_echo", json!({"ok": true}))
            .await;
        assert_eq!(v["result"]["structuredContent"]["ok"], true, "{what}: {v}");
    }
    // Only the follow-up calls reached the upstream.
    assert_eq!(env.upstreams[0].tool_calls().len(), 4);
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_host_version_and_content_type() {
    let env = Env::start(1).await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    let s = Some(sid.as_str());
    let body = || call_body(1).to_string().into_bytes();
    let (st, _) = post_bytes(&env, &tok, s, &[("origin", "http://evil.example")], body()).await;
    assert_eq!(st, 403, "foreign Origin");
    let (st, _) = post_bytes(&env, &tok, s, &[("origin", "null")], body()).await;
    assert_eq!(st, 403, "Origin null");
    // Host: via raw, so no client library rewrites it.
    let b = String::from_utf8(body()).unwrap();
    for host in [
        "evil.example.com",
        "evil.example.com:80",
        "127.0.0.1.evil.example.com",
    ] {
        let req = format!(
            "POST /mcp HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\nMcp-Session-Id: {sid}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
            b.len()
        );
        let out = raw(env.gw.addr, req.as_bytes(), Duration::from_secs(3)).await;
        assert!(out.starts_with("HTTP/1.1 403"), "Host {host}: {out}");
    }
    let (st, text) = post_bytes(
        &env,
        &tok,
        s,
        &[("mcp-protocol-version", "1999-01-01")],
        body(),
    )
    .await;
    assert_eq!(st, 400, "unsupported MCP-Protocol-Version: {text}");
    // Two values, one supported and one not: ambiguous, refused.
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\nMcp-Session-Id: {sid}\r\nMcp-Protocol-Version: 2025-06-18\r\nMcp-Protocol-Version: 1999-01-01\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
        env.gw.addr,
        b.len()
    );
    let out = raw(env.gw.addr, req.as_bytes(), Duration::from_secs(3)).await;
    assert!(
        out.starts_with("HTTP/1.1 400"),
        "repeated MCP-Protocol-Version: {out}"
    );
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ] {
        let (st, _) = post_bytes(&env, &tok, s, &[("content-type", ct)], body()).await;
        assert_eq!(st, 415, "Content-Type {ct}");
    }
    assert!(
        env.upstreams[0].tool_calls().is_empty(),
        "a refused request was forwarded"
    );
    // The request as a browser would send it from an allowed place still works (no Origin).
    let (st, _) = post_bytes(&env, &tok, s, &[], body()).await;
    assert_eq!(st, 200);
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_answered_locally() {
    let env = Env::start(1).await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    let before = env.upstreams[0].requests().len();
    let r = env
        .post(
            Some(&tok),
            Some(&sid),
            &json!({"jsonrpc":"2.0","id":"p","method":"ping"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], "p");
    assert_eq!(v["result"], json!({}));
    let reqs = env.upstreams[0].requests();
    assert!(
        reqs.iter().all(|r| r.rpc_method() != Some("ping")),
        "upstream saw a ping"
    );
    assert_eq!(reqs.len(), before, "ping caused upstream traffic");
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_identity_headers_are_not_forwarded() {
    let env = Env::start(1).await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    let spoof = [
        ("x-user", "admin"),
        ("x-forwarded-user", "admin"),
        ("x-forwarded-email", "admin@example.com"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-groups", "admins"),
        ("x-remote-user", "admin"),
        ("x-auth-request-user", "admin"),
        ("cookie", "session=stolen"),
    ];
    let (st, text) = post_bytes(
        &env,
        &tok,
        Some(&sid),
        &spoof,
        call_body(5).to_string().into_bytes(),
    )
    .await;
    assert_eq!(st, 200, "{text}");
    let calls = env.upstreams[0].tool_calls();
    assert_eq!(calls.len(), 1);
    for rec in env.upstreams[0].requests() {
        for (name, _) in spoof {
            assert!(
                rec.header(name).is_none(),
                "upstream received client header {name}: {:?}",
                rec.headers
            );
        }
        assert!(
            rec.header("authorization").is_none(),
            "upstream received the user's token"
        );
        for (_, v) in &rec.headers {
            assert!(
                !v.contains("admin"),
                "a spoofed identity value reached the upstream: {v}"
            );
        }
    }
    env.gw.shutdown().await;
}

/// The audit records in a test gateway's audit directory.
fn audit_records(dir: &std::path::Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// A soak found both: the gateway answered 413 to a client still sending its body and closed
/// the socket with the body unread (the kernel's reset can destroy the answer before the client
/// reads it), and the refused request had no audit record. Every request has exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_body_still_being_sent_gets_its_413_and_one_audit_record() {
    let mut dir = std::path::PathBuf::new();
    let env = Env::start_edited(1, Default::default(), "", |y| {
        dir = common::audit_dir_of(&y);
        y
    })
    .await;
    let addr = env.gw.addr;
    let (out, err) = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let head = format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n"
        );
        // A client that sends (part of) its body before reading: the gateway reads the head,
        // answers, and the rest of what was sent sits unread in its socket.
        let mut req = head.into_bytes();
        req.extend_from_slice(&vec![b' '; 256 * 1024]);
        let _ = s.write_all(&req);
        std::thread::sleep(Duration::from_millis(200));
        let mut out = Vec::new();
        let r = s.read_to_end(&mut out);
        (String::from_utf8_lossy(&out).into_owned(), r.err())
    })
    .await
    .unwrap();
    assert!(
        out.starts_with("HTTP/1.1 413"),
        "answer {out:?}, error {err:?}"
    );
    assert!(
        err.is_none(),
        "the client saw {err:?} instead of a clean close"
    );
    env.gw.shutdown().await;
    let recs = audit_records(&dir);
    let refused: Vec<_> = recs
        .iter()
        .filter(|r| r["reason"] == "request body refused unread")
        .collect();
    assert_eq!(refused.len(), 1, "records: {recs:?}");
    assert_eq!(refused[0]["decision"], "rejected", "{:?}", refused[0]);
    assert_eq!(recs.len(), 1, "nothing else was recorded: {recs:?}");
}
