//! Self-test of the testkit peers over real HTTP: issuer metadata/JWKS/minting and the MCP upstream flow.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
#![allow(clippy::disallowed_methods, reason = "measures the peers' real timing")]

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use testkit::issuer::WEAK_RSA_1024_N;
use testkit::{JwksMode, KeyAlg, TestIssuer, TestUpstream, UpstreamMode, UpstreamOptions};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn get_json(url: &str) -> (u16, Value) {
    let resp = client().get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn b64_json(segment: &str) -> Value {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

#[tokio::test]
async fn issuer_serves_and_counts_metadata_and_jwks() {
    let iss = TestIssuer::start().await;
    let base = iss.issuer();
    assert_eq!(base, format!("http://{}", iss.addr()));
    assert!(!base.ends_with('/'));

    let (status, meta) = get_json(&format!("{base}/.well-known/oauth-authorization-server")).await;
    assert_eq!(status, 200);
    assert_eq!(meta["issuer"], base);
    assert_eq!(meta["jwks_uri"], format!("{base}/jwks"));
    assert_eq!(meta["response_types_supported"], json!(["code"]));
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert!(
        meta["authorization_endpoint"]
            .as_str()
            .unwrap()
            .starts_with(&base)
    );
    assert!(meta["token_endpoint"].as_str().unwrap().starts_with(&base));
    let (status, oidc) = get_json(&format!("{base}/.well-known/openid-configuration")).await;
    assert_eq!(status, 200);
    assert_eq!(oidc, meta);
    assert_eq!(iss.metadata_fetches(), 2);

    iss.set_serve_oauth_metadata(false);
    let (status, _) = get_json(&format!("{base}/.well-known/oauth-authorization-server")).await;
    assert_eq!(status, 404);
    let (status, _) = get_json(&format!("{base}/.well-known/openid-configuration")).await;
    assert_eq!(status, 200);
    assert_eq!(iss.metadata_fetches(), 4);

    assert_eq!(iss.jwks_fetches(), 0);
    let (status, jwks) = get_json(&format!("{base}/jwks")).await;
    assert_eq!(status, 200);
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], iss.current_kid());
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert_eq!(keys[0]["use"], "sig");
    assert_eq!(iss.jwks_fetches(), 1);

    // Rotation: new key published and current, old one removed from the JWKS.
    let first = iss.current_kid();
    let second = iss.add_key(KeyAlg::ES256);
    assert_eq!(iss.current_kid(), second);
    iss.remove_key(&first);
    iss.set_extra_jwks_keys(vec![json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"})]);
    let (_, jwks) = get_json(&format!("{base}/jwks")).await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec![second.as_str(), "hmac"]);
    assert_eq!(iss.jwks_fetches(), 2);

    iss.set_jwks_mode(JwksMode::Status500);
    let resp = client().get(format!("{base}/jwks")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 500);
    iss.set_jwks_mode(JwksMode::Garbage);
    let resp = client().get(format!("{base}/jwks")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.unwrap(), "not json{");
    iss.set_jwks_mode(JwksMode::Hang);
    let hung = client()
        .get(format!("{base}/jwks"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(hung.unwrap_err().is_timeout());
    assert_eq!(iss.jwks_fetches(), 5);
}

#[tokio::test]
async fn minted_tokens_verify_against_published_jwk() {
    let iss = TestIssuer::start().await;
    for alg in [KeyAlg::EdDSA, KeyAlg::ES256, KeyAlg::RS256] {
        let kid = iss.add_key(alg);
        assert_eq!(iss.current_kid(), kid);
        let token = iss.mint(&iss.claims("alice", "https://warden.test/mcp", "read write"));

        let (_, jwks) = get_json(&format!("{}/jwks", iss.issuer())).await;
        let jwk_json = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .cloned()
            .expect("new key published");
        assert_eq!(jwk_json["use"], "sig");
        assert_eq!(jwk_json["alg"], alg.jws_alg());
        let jwk: Jwk = serde_json::from_value(jwk_json).unwrap();
        let key = DecodingKey::from_jwk(&jwk).unwrap();
        let jalg = match alg {
            KeyAlg::EdDSA => Algorithm::EdDSA,
            KeyAlg::ES256 => Algorithm::ES256,
            _ => Algorithm::RS256,
        };
        let mut validation = Validation::new(jalg);
        validation.set_audience(&["https://warden.test/mcp"]);
        validation.set_issuer(&[iss.issuer()]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Value>(&token, &key, &validation)
            .unwrap_or_else(|e| panic!("{alg:?} token must verify: {e}"));
        assert_eq!(data.header.kid.as_deref(), Some(kid.as_str()));
        assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(data.claims["sub"], "alice");
        assert_eq!(data.claims["scope"], "read write");
        assert_eq!(data.claims["client_id"], "test-client");
        let exp = data.claims["exp"].as_u64().unwrap();
        assert_eq!(exp, data.claims["iat"].as_u64().unwrap() + 300);
        assert_eq!(data.claims["jti"].as_str().unwrap().len(), 32);

        // A flipped signature byte must not verify.
        let (head, sig) = token.rsplit_once('.').unwrap();
        let mut sig = sig.to_owned();
        let first = if sig.starts_with('A') { "B" } else { "A" };
        sig.replace_range(0..1, first);
        let tampered = format!("{head}.{sig}");
        assert!(jsonwebtoken::decode::<Value>(&tampered, &key, &validation).is_err());

        // mint_raw writes the header verbatim, even a lying alg, and still signs with `kid`.
        let raw_header =
            json!({"alg": "HS256", "kid": "someone-else", "typ": "JWT", "crit": ["x"]});
        let raw = iss.mint_raw(&raw_header, &json!({"sub": "bob"}), &kid);
        let parts: Vec<&str> = raw.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(b64_json(parts[0]), raw_header);
        assert_eq!(b64_json(parts[1]), json!({"sub": "bob"}));
        let msg = format!("{}.{}", parts[0], parts[1]);
        assert!(jsonwebtoken::crypto::verify(parts[2], msg.as_bytes(), &key, jalg).unwrap());
    }

    // The weak key is published as a 1024-bit RS256 key.
    let weak = iss.add_key(KeyAlg::RS256Weak1024);
    let (_, jwks) = get_json(&format!("{}/jwks", iss.issuer())).await;
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == weak.as_str())
        .cloned()
        .unwrap();
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["alg"], "RS256");
    assert_eq!(jwk["n"], WEAK_RSA_1024_N);
    use base64::Engine as _;
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(WEAK_RSA_1024_N)
        .unwrap();
    assert_eq!(n.len() * 8, 1024);
    assert!(n[0] & 0x80 != 0);
    let token = iss.mint(&iss.claims("a", "b", "c"));
    assert_eq!(b64_json(token.split('.').next().unwrap())["kid"], weak);
}

/// A small MCP client over reqwest that keeps the session id.
struct Mcp {
    http: reqwest::Client,
    url: String,
    session: Option<String>,
}

impl Mcp {
    fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(body);
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        req
    }

    async fn rpc(&self, id: Value, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let resp = self.post(&body).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["id"], id, "id echoed exactly");
        v
    }
}

/// Reads an SSE response, returning each event's data JSON with its arrival time.
async fn read_sse(mut resp: reqwest::Response) -> Vec<(Instant, Value)> {
    let mut buf = String::new();
    let mut events = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        let now = Instant::now();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let mut lines = event.lines();
            assert_eq!(lines.next(), Some("event: message"));
            assert!(lines.next().unwrap().starts_with("id: "));
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            events.push((now, serde_json::from_str(data).unwrap()));
        }
    }
    assert!(buf.is_empty(), "no partial event left: {buf:?}");
    events
}

#[tokio::test]
async fn upstream_mcp_flow() {
    let up = TestUpstream::start(UpstreamOptions {
        tools: 7,
        page_size: 4,
        mode: UpstreamMode::Normal,
        modern: false,
        items: false,
        items_only: false,
    })
    .await;
    assert_eq!(up.url(), format!("http://{}/mcp", up.addr()));
    let mut mcp = Mcp {
        http: client(),
        url: up.url(),
        session: None,
    };

    // initialize → session id.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let resp = mcp.post(&init).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let session = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(session.len(), 32);
    assert!(session.chars().all(|c| c.is_ascii_hexdigit()));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["id"], 1);
    assert_eq!(v["result"]["protocolVersion"], "2025-03-26");
    assert_eq!(v["result"]["capabilities"]["tools"]["listChanged"], true);
    assert_eq!(v["result"]["serverInfo"]["name"], "test-upstream");
    assert_eq!(v["result"]["instructions"], "Test upstream.");
    let v = mcp
        .rpc(
            json!(2),
            "initialize",
            json!({"protocolVersion": "1999-01-01"}),
        )
        .await;
    assert_eq!(v["result"]["protocolVersion"], "2025-06-18");

    // Session enforcement.
    let ping = json!({"jsonrpc": "2.0", "id": 3, "method": "ping"});
    assert_eq!(mcp.post(&ping).send().await.unwrap().status().as_u16(), 400);
    mcp.session = Some("deadbeef".into());
    assert_eq!(mcp.post(&ping).send().await.unwrap().status().as_u16(), 404);
    mcp.session = Some(session.clone());
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let resp = mcp.post(&note).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    assert!(resp.bytes().await.unwrap().is_empty());
    assert_eq!(
        mcp.rpc(json!(3), "ping", json!({})).await["result"],
        json!({})
    );

    // tools/list pagination: 5 built-ins + 7 extra in pages of 4.
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let params = cursor.as_ref().map_or(json!({}), |c| json!({"cursor": c}));
        let v = mcp
            .rpc(json!(format!("list-{pages}")), "tools/list", params)
            .await;
        pages += 1;
        for t in v["result"]["tools"].as_array().unwrap() {
            assert_eq!(t["inputSchema"]["type"], "object");
            assert!(t["inputSchema"]["properties"].is_object());
            assert!(t["description"].is_string());
            names.push(t["name"].as_str().unwrap().to_owned());
        }
        match v["result"]["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut expected: Vec<String> = ["echo", "whoami", "slow", "ticks", "cut"]
        .map(String::from)
        .to_vec();
    expected.extend((0..7).map(|i| format!("tool_{i}")));
    assert_eq!(names, expected);
    let v = mcp
        .rpc(json!(4), "tools/list", json!({"cursor": "bogus"}))
        .await;
    assert_eq!(v["error"]["code"], -32602);

    // echo, whoami, tool_i, errors.
    let args = json!({"msg": "hi", "n": [1, 2]});
    let v = mcp
        .rpc(
            json!("e-1"),
            "tools/call",
            json!({"name": "echo", "arguments": args}),
        )
        .await;
    assert_eq!(v["result"]["structuredContent"], args);
    let text = v["result"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Value>(text).unwrap(), args);
    let body =
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "whoami"}});
    let v: Value = mcp
        .post(&body)
        .header("authorization", "Bearer upstream-cred")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "Bearer upstream-cred");
    let v = mcp
        .rpc(json!(6), "tools/call", json!({"name": "whoami"}))
        .await;
    assert_eq!(v["result"]["content"][0]["text"], "none");
    let v = mcp
        .rpc(json!(7), "tools/call", json!({"name": "tool_6"}))
        .await;
    assert_eq!(v["result"]["content"][0]["text"], "tool_6 called");
    let v = mcp
        .rpc(json!(8), "tools/call", json!({"name": "tool_7"}))
        .await;
    assert_eq!(v["error"]["code"], -32602);
    let v = mcp.rpc(json!(9), "resources/list", json!({})).await;
    assert_eq!(v["error"]["code"], -32601);
    let started = Instant::now();
    let v = mcp
        .rpc(
            json!(10),
            "tools/call",
            json!({"name": "slow", "arguments": {"ms": 200}}),
        )
        .await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(v["result"]["structuredContent"]["ms"], 200);

    // ticks: progress events streamed ≥ 250 ms apart, then the result.
    let body = json!({"jsonrpc": "2.0", "id": "t-1", "method": "tools/call", "params": {
        "name": "ticks", "arguments": {"count": 3}, "_meta": {"progressToken": "tok"}}});
    let resp = mcp.post(&body).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = read_sse(resp).await;
    assert_eq!(events.len(), 4);
    for (i, (_, ev)) in events[..3].iter().enumerate() {
        assert_eq!(ev["method"], "notifications/progress");
        assert_eq!(ev["params"]["progressToken"], "tok");
        assert_eq!(ev["params"]["progress"], i + 1);
        assert_eq!(ev["params"]["total"], 3);
    }
    assert_eq!(events[3].1["id"], "t-1");
    assert_eq!(events[3].1["result"]["content"][0]["text"], "done");
    for pair in events.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= Duration::from_millis(250),
            "events arrived {gap:?} apart"
        );
    }
    let sent = up.tick_sent_times();
    assert_eq!(sent.len(), 4);
    assert!(
        sent.windows(2)
            .all(|w| w[1] - w[0] >= Duration::from_millis(250))
    );

    // cut: one progress event, then the stream ends without a result.
    let body = json!({"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {
        "name": "cut", "_meta": {"progressToken": 99}}});
    let events = read_sse(mcp.post(&body).send().await.unwrap()).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1["params"]["progressToken"], 99);

    // GET needs a session (then it is the session's change stream); DELETE ends the session.
    let resp = mcp.http.get(&mcp.url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let resp = (mcp.http.get(&mcp.url))
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    drop(resp);
    let del = |s: &str| mcp.http.delete(&mcp.url).header("mcp-session-id", s).send();
    assert_eq!(del(&session).await.unwrap().status().as_u16(), 200);
    assert_eq!(del(&session).await.unwrap().status().as_u16(), 404);
    assert_eq!(mcp.post(&ping).send().await.unwrap().status().as_u16(), 404);

    // Recording.
    let reqs = up.requests();
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/mcp");
    assert_eq!(reqs[0].body, init);
    assert!(
        reqs.iter()
            .all(|r| r.headers.iter().all(|(k, _)| *k == k.to_lowercase()))
    );
    assert!(reqs.iter().any(|r| r.method == "GET"));
    assert_eq!(reqs.iter().filter(|r| r.method == "DELETE").count(), 2);
    let calls = up.tool_calls();
    assert_eq!(calls.len(), 8);
    assert_eq!(
        calls[1].header("Authorization"),
        Some("Bearer upstream-cred")
    );
    assert_eq!(calls[1].header("mcp-session-id"), Some(session.as_str()));
}

#[tokio::test]
async fn upstream_garbage_and_refuse_modes() {
    let up = TestUpstream::start(UpstreamOptions {
        mode: UpstreamMode::Garbage,
        ..UpstreamOptions::default()
    })
    .await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}});
    let resp = client().post(up.url()).json(&init).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers().get("mcp-session-id").is_none());
    assert_eq!(resp.text().await.unwrap(), "<<garbage>>");

    up.set_mode(UpstreamMode::Refuse);
    let resp = client().post(up.url()).json(&init).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);

    up.set_mode(UpstreamMode::Normal);
    let resp = client().post(up.url()).json(&init).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers().get("mcp-session-id").is_some());

    let reqs = up.requests();
    assert_eq!(
        reqs.len(),
        3,
        "garbage and refused requests are recorded too"
    );
    assert!(reqs.iter().all(|r| r.body == init));
}

#[tokio::test]
async fn servers_stop_when_dropped() {
    let iss = TestIssuer::start().await;
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let (ia, ua) = (iss.addr(), up.addr());
    iss.set_jwks_mode(JwksMode::Hang);
    let hanging = tokio::spawn(client().get(format!("{}/jwks", iss.issuer())).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(iss);
    drop(up);
    // The hanging JWKS request is released rather than left open forever.
    let released = tokio::time::timeout(Duration::from_secs(5), hanging).await;
    assert!(released.is_ok(), "hanging request released on drop");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(tokio::net::TcpStream::connect(ia).await.is_err());
    assert!(tokio::net::TcpStream::connect(ua).await.is_err());
}

#[tokio::test]
async fn test_issuer_binary_prints_a_valid_token() {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_test-issuer"))
        .args([
            "--aud",
            "http://gw/mcp",
            "--sub",
            "loader",
            "--scope",
            "a b",
            "--ttl-secs",
            "3600",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .unwrap();
    let out: Value = serde_json::from_str(&line).unwrap();
    let issuer = out["issuer"].as_str().unwrap();
    let token = out["token"].as_str().unwrap();
    let (_, jwks) = get_json(&format!("{issuer}/jwks")).await;
    let jwk: Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&["http://gw/mcp"]);
    validation.set_issuer(&[issuer]);
    let data =
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(&jwk).unwrap(), &validation)
            .unwrap();
    assert_eq!(data.claims["sub"], "loader");
    assert_eq!(data.claims["scope"], "a b");
    let ttl = data.claims["exp"].as_u64().unwrap() - data.claims["iat"].as_u64().unwrap();
    assert_eq!(ttl, 3600);
    child.kill().await.unwrap();
}

#[tokio::test]
async fn echo_upstream_binary_serves() {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_echo-upstream"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .unwrap();
    let out: Value = serde_json::from_str(&line).unwrap();
    let url = out["url"].as_str().unwrap();
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}});
    let resp = client().post(url).json(&init).send().await.unwrap();
    let session = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    for args in [
        json!({"x": 1}),
        json!({"call_id": "a"}),
        json!({"call_id": "a"}),
    ] {
        let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "echo", "arguments": args}});
        let v: Value = client()
            .post(url)
            .header("mcp-session-id", &session)
            .json(&call)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["result"]["structuredContent"], args);
    }
    // Counted with recording off: three calls, one call id, seen twice.
    let (status, stats) = get_json(&url.replace("/mcp", "/stats")).await;
    assert_eq!(status, 200);
    assert_eq!(
        stats,
        json!({"tool_calls": 3, "call_ids": 1, "duplicate_call_ids": 1})
    );
    child.kill().await.unwrap();
}
