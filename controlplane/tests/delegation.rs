//! Per-call delegation tokens (RFC 8693 claims, embedded STS) end to end: what the upstream
//! receives, verified against the STS JWKS on the admin port. Reuse, renewal and `act`
//! chains run in memory: `tests/behaviour/delegation.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(
    clippy::disallowed_methods,
    reason = "mints tokens for the real now (the gateway runs on the real clock)"
)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::Env;
use serde_json::{Value, json};

const UP_AUD: &str = "https://up0.example/";

fn delegation_block() -> String {
    "delegation:\n  client_id: warden-gw\n  issuer: http://sts.warden.test\n".to_string()
}

async fn start() -> Env {
    let issuer = testkit::TestIssuer::start().await;
    let up = testkit::TestUpstream::start(testkit::UpstreamOptions {
        tools: 1,
        ..Default::default()
    })
    .await;
    let yaml = format!(
        "{}{}",
        common::config_yaml(&issuer.issuer(), &[], ""),
        delegation_block()
    )
    .replace(
        "upstreams:\n  []\n",
        &format!(
            "upstreams:\n  - name: up0\n    url: {}\n    timeout: 2s\n    token_exchange:\n      type: delegation\n      idp: warden\n      audience: {UP_AUD}\n      tools:\n        - name: echo\n          ttl: 5s\n          scopes:\n            - name: up:echo\n        - name: whoami\n          ttl: 5s\n          scopes: [up:whoami, up:read]\n        - name: tool_0\n          ttl: 2s\n          scopes: [up:t0]\n",
            up.url()
        ),
    );
    // Tokens are cached per shard: one shard makes reuse deterministic.
    let yaml = yaml.replace("  shards: 2\n", "  shards: 1\n");
    let cfg = controlplane::Config::parse(&yaml, "deleg.yaml").expect("config");
    let gw = controlplane::start(cfg, None).await.expect("start");
    Env {
        issuer,
        upstreams: vec![up],
        gw,
        client: reqwest::Client::new(),
    }
}

fn bearer_of(rec: &testkit::Recorded) -> String {
    rec.header("authorization")
        .expect("an Authorization header")
        .strip_prefix("Bearer ")
        .expect("Bearer")
        .to_owned()
}

fn part(token: &str, i: usize) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(i).unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_carries_a_token_minted_for_it() {
    let env = start().await;
    let alice = env.token("alice");
    let sid = env.session(&alice).await;
    let v = env
        .call(&alice, &sid, json!(1), "up0_echo", json!({"a": 1}))
        .await;
    assert_eq!(v["result"]["structuredContent"]["a"], 1, "{v}");

    let calls = env.upstreams[0].tool_calls();
    assert_eq!(calls.len(), 1);
    let tok = bearer_of(&calls[0]);
    assert_ne!(tok, alice, "never the user's token");
    let h = part(&tok, 0);
    assert_eq!(h["typ"], "at+jwt");
    assert_eq!(h["alg"], "EdDSA");
    let c = part(&tok, 1);
    assert_eq!(c["iss"], "http://sts.warden.test");
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], UP_AUD);
    assert_eq!(c["scope"], "up:echo");
    assert_eq!(c["client_id"], "warden-gw");
    assert_eq!(c["act"], json!({"sub": "warden-gw"}));
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 5);
    assert!(c["jti"].as_str().unwrap().len() >= 16);

    // It verifies against the STS JWKS served on the admin port.
    let jwks = env
        .client
        .get(format!("http://{}/sts/jwks.json", env.gw.admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let keys =
        dataplane::auth::jwks::parse_jwks(jwks.as_bytes(), &[jsonwebtoken::Algorithm::EdDSA])
            .unwrap();
    let policy = dataplane::auth::jwt::ValidationPolicy {
        issuer: "http://sts.warden.test".into(),
        audiences: vec![UP_AUD.into()],
        leeway_secs: 5,
        max_lifetime_secs: 5,
        token_types: vec!["at+jwt".into()],
    };
    let d = dataplane::auth::jwt::decode(&tok, 16384, &policy.token_types).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(
        dataplane::auth::jwt::verify(&d, &keys, &policy, now)
            .unwrap()
            .sub,
        "alice"
    );

    // Sessions and discovery used the gateway's own service token: sub = the gateway, no act.
    let init = env.upstreams[0]
        .requests()
        .into_iter()
        .find(|r| r.rpc_method() == Some("initialize"))
        .unwrap();
    let s = part(&bearer_of(&init), 1);
    assert_eq!(s["sub"], "warden-gw");
    assert!(s.get("act").is_none());
    assert_eq!(s["aud"], UP_AUD);
    // The user's token reached no upstream request at all.
    for r in env.upstreams[0].requests() {
        assert!(!r.headers.iter().any(|(_, v)| v.contains(&alice)));
    }
    env.gw.shutdown().await;
}

/// What the verifying upstream saw: one entry per request, whether its bearer token verified
/// against the STS JWKS fetched from the gateway's admin port at that moment.
type Verdicts = std::sync::Arc<tokio::sync::Mutex<Vec<(String, Result<(), String>)>>>;

/// An MCP upstream that, like a real resource server, fetches the STS JWKS from the gateway's
/// admin port for every request and verifies the bearer token before answering.
async fn verifying_upstream(admin: u16, seen: Verdicts) -> String {
    use axum::extract::State;
    use axum::http::HeaderMap;
    async fn mcp(
        State((admin, seen)): State<(u16, Verdicts)>,
        headers: HeaderMap,
        body: String,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let req: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let method = req["method"].as_str().unwrap_or("").to_owned();
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
            .to_owned();
        let verdict = async {
            let jwks = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{admin}/sts/jwks.json"))
                .timeout(std::time::Duration::from_secs(2))
                .send()
                .await
                .map_err(|e| format!("JWKS fetch: {e}"))?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            let keys = dataplane::auth::jwks::parse_jwks(
                jwks.as_bytes(),
                &[jsonwebtoken::Algorithm::EdDSA],
            )
            .map_err(|e| format!("JWKS: {e:?}"))?;
            let policy = dataplane::auth::jwt::ValidationPolicy {
                issuer: "http://sts.warden.test".into(),
                audiences: vec![UP_AUD.into()],
                leeway_secs: 5,
                max_lifetime_secs: 3600,
                token_types: vec!["at+jwt".into()],
            };
            let d = dataplane::auth::jwt::decode(&token, 16384, &policy.token_types)
                .map_err(|e| format!("decode: {e:?}"))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            dataplane::auth::jwt::verify(&d, &keys, &policy, now)
                .map(|_| ())
                .map_err(|e| format!("verify: {e:?}"))
        }
        .await;
        seen.lock().await.push((method.clone(), verdict));
        let id = req["id"].clone();
        let result = match method.as_str() {
            "initialize" => json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                                   "serverInfo": {"name": "verifying", "version": "1"}}),
            "tools/list" => json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}),
            m if m.starts_with("notifications/") => {
                return axum::http::StatusCode::ACCEPTED.into_response();
            }
            _ => json!({}),
        };
        (
            [
                ("mcp-session-id", "s-1"),
                ("content-type", "application/json"),
            ],
            json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string(),
        )
            .into_response()
    }
    let app = axum::Router::new()
        .route("/mcp", axum::routing::post(mcp))
        .with_state((admin, seen));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    url
}

/// Startup order (a soak found it): catalog discovery sends the upstream the gateway's
/// service token, so `/sts/jwks.json` must already be served when it runs — else the first
/// tokens an upstream sees cannot be verified and a verifying upstream refuses discovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sts_jwks_is_served_before_discovery_sends_the_first_token() {
    let issuer = testkit::TestIssuer::start().await;
    let admin = testkit::stable_port();
    let seen = Verdicts::default();
    let up = verifying_upstream(admin, seen.clone()).await;
    let yaml = format!(
        "{}{}",
        common::config_yaml(&issuer.issuer(), &[], ""),
        delegation_block()
    )
    .replace("admin:\n  listen: 127.0.0.1:0\n", &format!("admin:\n  listen: 127.0.0.1:{admin}\n"))
    .replace(
        "upstreams:\n  []\n",
        &format!(
            "upstreams:\n  - name: up0\n    url: {up}\n    timeout: 5s\n    token_exchange:\n      type: delegation\n      idp: warden\n      audience: {UP_AUD}\n      tools:\n        - name: echo\n          ttl: 5s\n          scopes: [up:echo]\n"
        ),
    );
    let cfg = controlplane::Config::parse(&yaml, "deleg.yaml").expect("config");
    let gw = controlplane::start(cfg, None).await.expect("start");
    let seen = seen.lock().await.clone();
    assert!(
        seen.iter().any(|(m, _)| m == "tools/list"),
        "discovery reached the upstream during start: {seen:?}"
    );
    for (method, verdict) in &seen {
        assert_eq!(
            verdict,
            &Ok(()),
            "{method}: the upstream could not verify the token"
        );
    }
    gw.shutdown().await;
}

/// Each `tools/call` the forgetful upstream received: the token's `exp`, and the time then.
type Seen = std::sync::Arc<tokio::sync::Mutex<Vec<(i64, f64)>>>;

/// An MCP upstream that forgets the session of the first `tools/call` (404) and from then on
/// is slow (`reopen`) to open a session.
async fn forgetful_upstream(reopen: std::time::Duration, seen: Seen) -> String {
    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::response::IntoResponse;
    #[derive(Clone)]
    struct St {
        seen: Seen,
        inits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        forgot: std::sync::Arc<std::sync::atomic::AtomicBool>,
        reopen: std::time::Duration,
    }
    async fn mcp(
        State(st): State<St>,
        headers: HeaderMap,
        body: String,
    ) -> axum::response::Response {
        let req: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let sid = headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let ok = |result: Value, sid: &str| {
            (
                [
                    ("mcp-session-id", sid.to_owned()),
                    ("content-type", "application/json".to_owned()),
                ],
                json!({"jsonrpc": "2.0", "id": req["id"], "result": result}).to_string(),
            )
                .into_response()
        };
        match req["method"].as_str().unwrap_or("") {
            "initialize" => {
                let n = st.inits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if st.forgot.load(std::sync::atomic::Ordering::SeqCst) {
                    tokio::time::sleep(st.reopen).await;
                }
                ok(
                    json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                           "serverInfo": {"name": "forgetful", "version": "1"}}),
                    &format!("s-{n}"),
                )
            }
            "tools/list" => ok(
                json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}),
                &sid,
            ),
            "tools/call" => {
                let tok = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or("");
                let exp = part(tok, 1)["exp"].as_i64().unwrap_or(0);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64();
                st.seen.lock().await.push((exp, now));
                // The first call's session is forgotten: a restarted upstream.
                if !st.forgot.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    return axum::http::StatusCode::NOT_FOUND.into_response();
                }
                ok(json!({"content": [{"type": "text", "text": "ran"}]}), &sid)
            }
            m if m.starts_with("notifications/") => {
                axum::http::StatusCode::ACCEPTED.into_response()
            }
            _ => ok(json!({}), &sid),
        }
    }
    let app = axum::Router::new()
        .route("/mcp", axum::routing::post(mcp))
        .with_state(St {
            seen,
            inits: Default::default(),
            forgot: Default::default(),
            reopen,
        });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    url
}

/// A soak found it: when the upstream forgot the session, the call was resent in a new one
/// with the delegation token minted before — expired by then if reopening took longer than
/// the token had left. An expired token is never sent; the call fails as such, typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_delegation_token_is_never_resent() {
    let issuer = testkit::TestIssuer::start().await;
    let seen = Seen::default();
    let up = forgetful_upstream(std::time::Duration::from_millis(3200), seen.clone()).await;
    let yaml = format!(
        "{}{}",
        common::config_yaml(&issuer.issuer(), &[], ""),
        delegation_block()
    )
    .replace(
        "upstreams:\n  []\n",
        &format!(
            "upstreams:\n  - name: up0\n    url: {up}\n    timeout: 8s\n    token_exchange:\n      type: delegation\n      idp: warden\n      audience: {UP_AUD}\n      tools:\n        - name: echo\n          ttl: 2s\n          scopes: [up:echo]\n"
        ),
    );
    let cfg = controlplane::Config::parse(&yaml, "deleg.yaml").expect("config");
    let gw = controlplane::start(cfg, None).await.expect("start");
    let env = Env {
        issuer,
        upstreams: Vec::new(),
        gw,
        client: reqwest::Client::new(),
    };
    let alice = env.token("alice");
    let sid = env.session(&alice).await;
    let v = env
        .call(&alice, &sid, json!(1), "up0_echo", json!({}))
        .await;
    let seen = seen.lock().await.clone();
    for (exp, at) in &seen {
        assert!(
            (*exp as f64) > *at,
            "the upstream received a token with exp {exp} at {at:.3}: {seen:?}"
        );
    }
    assert_eq!(seen.len(), 1, "sent once, not resent expired: {seen:?}");
    let text = v.to_string();
    assert!(
        v["result"]["isError"] == true || v.get("error").is_some(),
        "the client is told: {text}"
    );
    assert!(text.contains("expired"), "{text}");
    env.gw.shutdown().await;
}

/// `warden_delegation_tokens_total{source}` on the admin port's `/metrics`.
async fn delegated(env: &Env, source: &str) -> f64 {
    let text = (env.client)
        .get(format!("http://{}/metrics", env.gw.admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("warden_delegation_tokens_total{{source=\"{source}\"}}");
    (text.lines())
        .filter(|l| l.starts_with(&series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_and_cached_tokens_are_counted() {
    let env = start().await;
    let alice = env.token("alice");
    let sid = env.session(&alice).await;
    let (fresh, cached) = (
        delegated(&env, "fresh").await,
        delegated(&env, "cache").await,
    );
    for id in [1, 2] {
        env.call(&alice, &sid, json!(id), "up0_echo", json!({}))
            .await;
    }
    // The first call's token is minted, the second's comes from the shard's cache.
    assert!(delegated(&env, "fresh").await > fresh);
    assert!(delegated(&env, "cache").await > cached);
}
