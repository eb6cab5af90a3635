//! SECURITY.md "Token validation" cases that need a JWKS served over HTTP (keys refused at
//! load, `jku`/`x5u` never fetched, refetch sharing and rate limits, JWKS faults), against the
//! real gateway. The other cases run in memory: `tests/behaviour/tokens.rs`.
//!
//! Gateways that must wait out the JWKS refetch window run on a mock clock, stepped past it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{AUD, Env, config_yaml};
use controlplane::{Clock, MockClock, StartOptions};
use serde_json::{Value, json};
use testkit::issuer::now_secs;
use testkit::{JwksMode, KeyAlg, TestIssuer, TestUpstream, UpstreamOptions};

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// Past the `jwks_min_refetch_interval: 2s` of `config_yaml`: a step of the mock clock after
/// which an unknown kid may refetch the JWKS again.
const PAST_REFETCH_WINDOW: Duration = Duration::from_millis(2200);

/// A gateway on a mock clock (the handle steps it).
async fn gateway_on_mock(cfg: controlplane::Config) -> (controlplane::Running, MockClock) {
    let (clock, time) = Clock::mock();
    let opts = StartOptions {
        clock,
        ..StartOptions::default()
    };
    (
        controlplane::start_with(cfg, opts).await.expect("start"),
        time,
    )
}

/// Start a gateway with one upstream after `prep` has shaped the issuer, with `edit` applied
/// to the YAML, on a mock clock.
async fn start_env(
    prep: impl FnOnce(&TestIssuer),
    edit: impl FnOnce(String) -> String,
) -> (Env, MockClock) {
    let issuer = TestIssuer::start().await;
    prep(&issuer);
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let yaml = edit(config_yaml(
        &issuer.issuer(),
        &[("up0".to_owned(), up.url())],
        "",
    ));
    let cfg = controlplane::Config::parse(&yaml, "test.yaml").expect("config");
    let (gw, time) = gateway_on_mock(cfg).await;
    let env = Env {
        issuer,
        upstreams: vec![up],
        gw,
        client: reqwest::Client::new(),
    };
    (env, time)
}

fn hdr(alg: &str, kid: &str) -> Value {
    json!({"alg": alg, "kid": kid, "typ": "at+jwt"})
}

/// A token signed by key `kid` with a standard header and `claims`.
fn signed(env: &Env, kid: &str, claims: &Value) -> String {
    let alg = env.issuer.key_alg(kid).unwrap().jws_alg();
    env.issuer.mint_raw(&hdr(alg, kid), claims, kid)
}

fn claims(env: &Env) -> Value {
    env.issuer.claims("mallory", AUD, "mcp:tools")
}

fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

fn call_body(id: i64) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"up0_echo","arguments":{"k":"v"}}})
}

/// A session made with a good token, so refused tokens are tested at the tool-call step.
async fn good_session(env: &Env) -> String {
    let kid = first_kid(env);
    let tok = signed(env, &kid, &claims(env));
    env.session(&tok).await
}

fn first_kid(env: &Env) -> String {
    // The issuer's first key is always EdDSA with an `ed-` kid; tests that add keys keep track of it.
    env.issuer.current_kid()
}

/// R401: 401, `Bearer error="invalid_token"` with `resource_metadata`, and nothing reached the upstream.
async fn assert_r401(env: &Env, sid: &str, token: &str, what: &str) {
    let before = env.upstreams[0].tool_calls().len();
    let r = env.post(Some(token), Some(sid), &call_body(9)).await;
    assert_eq!(r.status(), 401, "{what}: status");
    let www = r
        .headers()
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("{what}: no WWW-Authenticate"))
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        www.starts_with("Bearer error=\"invalid_token\""),
        "{what}: {www}"
    );
    assert!(www.contains("resource_metadata=\""), "{what}: {www}");
    assert_eq!(
        env.upstreams[0].tool_calls().len(),
        before,
        "{what}: a tool call reached the upstream"
    );
}

/// The token is accepted: the tool call goes through to the upstream.
async fn assert_accepted(env: &Env, sid: &str, token: &str, what: &str) {
    let before = env.upstreams[0].tool_calls().len();
    let r = env.post(Some(token), Some(sid), &call_body(8)).await;
    assert_eq!(r.status(), 200, "{what}: status");
    assert_eq!(
        env.upstreams[0].tool_calls().len(),
        before + 1,
        "{what}: call did not reach the upstream"
    );
}

/// A session for `token`'s own user (sessions are bound to iss+sub).
async fn accepted_fresh(env: &Env, token: &str, what: &str) {
    let sid = env.session(token).await;
    assert_accepted(env, &sid, token, what).await;
}

async fn fetch_jwk(issuer: &TestIssuer, kid: &str) -> Value {
    let doc: Value = reqwest::get(issuer.jwks_uri())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case03_oct_and_weak_rsa_keys_refused_at_load() {
    let mut ed_kid = String::new();
    let mut weak_kid = String::new();
    let secret = b"a-shared-secret-the-attacker-knows";
    let (env, time) = start_env(
        |i| {
            ed_kid = i.current_kid();
            weak_kid = i.add_key(KeyAlg::RS256Weak1024);
            i.set_extra_jwks_keys(vec![
                json!({"kty": "oct", "kid": "oct-1", "k": b64(secret), "use": "sig"}),
                json!({"kty": "oct", "kid": "oct-2", "k": b64(secret), "alg": "HS256"}),
            ]);
        },
        |y| y,
    )
    .await;
    let c = claims(&env);
    let sid = env.session(&signed(&env, &ed_kid, &c)).await;
    // Step past the refetch interval so unknown-kid refetches really re-read the (same) JWKS.
    time.advance(PAST_REFETCH_WINDOW);
    let fetches = env.issuer.jwks_fetches();
    for kid in ["oct-1", "oct-2"] {
        let h = json!({"alg": "HS256", "kid": kid, "typ": "at+jwt"});
        assert_r401(&env, &sid, &hs256(&h, &c, secret), kid).await;
    }
    assert_r401(&env, &sid, &signed(&env, &weak_kid, &c), "weak RSA key").await;
    assert!(
        env.issuer.jwks_fetches() >= fetches,
        "refused keys were re-read from the JWKS, not trusted"
    );
    // The only key in use is the EdDSA one.
    let metrics = env
        .client
        .get(format!("http://{}/metrics", env.gw.admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!("warden_jwks_keys{{issuer=\"{}\"}} 1", env.issuer.issuer());
    assert!(
        metrics.lines().any(|l| l == line),
        "expected {line:?} in metrics"
    );
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case04_jku_x5u_jwk_x5c_headers_are_ignored() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let trap = format!("http://{}/jwks", listener.local_addr().unwrap());
    let mut ed_kid = String::new();
    let mut evil_kid = String::new();
    let issuer_setup = |i: &TestIssuer| {
        ed_kid = i.current_kid();
        // The attacker's key: generated by the issuer, then unpublished, so it can sign but is not trusted.
        evil_kid = i.add_key(KeyAlg::EdDSA);
    };
    let (env, time) = start_env(issuer_setup, |y| y).await;
    let evil_jwk = fetch_jwk(&env.issuer, &evil_kid).await;
    env.issuer.remove_key(&evil_kid);
    // The gateway loaded the JWKS while the attacker key was still published: step past the
    // refetch window, then force a refetch
    // so it is gone from the gateway too (the refetch is triggered by an unknown kid).
    time.advance(PAST_REFETCH_WINDOW);
    let c = claims(&env);
    let sid = env.session(&signed(&env, &ed_kid, &c)).await;
    assert_r401(
        &env,
        &sid,
        &env.issuer.mint_raw(&hdr("EdDSA", "nope"), &c, &ed_kid),
        "refresh trigger",
    )
    .await;
    assert_r401(
        &env,
        &sid,
        &signed(&env, &evil_kid, &c),
        "attacker key no longer published",
    )
    .await;

    let variants = [
        json!({"alg": "EdDSA", "kid": evil_kid, "typ": "at+jwt", "jku": trap}),
        json!({"alg": "EdDSA", "kid": evil_kid, "typ": "at+jwt", "x5u": trap}),
        json!({"alg": "EdDSA", "kid": ed_kid, "typ": "at+jwt", "jku": trap}),
        json!({"alg": "EdDSA", "kid": ed_kid, "typ": "at+jwt", "x5u": trap}),
        json!({"alg": "EdDSA", "kid": evil_kid, "typ": "at+jwt", "jwk": evil_jwk}),
        json!({"alg": "EdDSA", "typ": "at+jwt", "jwk": evil_jwk}),
        json!({"alg": "EdDSA", "kid": ed_kid, "typ": "at+jwt", "jwk": evil_jwk}),
        // x5c: a (junk) certificate chain for the attacker key; never a key source.
        json!({"alg": "EdDSA", "kid": evil_kid, "typ": "at+jwt", "x5c": [b64(b"not a real certificate")]}),
    ];
    for h in &variants {
        assert_r401(
            &env,
            &sid,
            &env.issuer.mint_raw(h, &c, &evil_kid),
            &h.to_string(),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the jku/x5u listener saw a connection: {other:?}"),
    }
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case13_unknown_kid_refetch_is_shared_and_rate_limited() {
    let (env, time) = Env::start_mocked(1).await;
    let kid0 = env.issuer.current_kid();
    let sid = good_session(&env).await;
    let c = claims(&env);
    // The start-up fetch opened a 2 s window: step past it.
    time.advance(PAST_REFETCH_WINDOW);
    let f0 = env.issuer.jwks_fetches();
    assert_r401(
        &env,
        &sid,
        &env.issuer.mint_raw(&hdr("EdDSA", "no-such-kid"), &c, &kid0),
        "unknown kid",
    )
    .await;
    assert_eq!(
        env.issuer.jwks_fetches(),
        f0 + 1,
        "exactly one refetch for an unknown kid"
    );

    // A flood of 20 random kids, concurrently, in a fresh window: at most one fetch.
    time.advance(PAST_REFETCH_WINDOW);
    let f1 = env.issuer.jwks_fetches();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let tok = env.issuer.mint_raw(
            &hdr("EdDSA", &format!("random-{i}-{}", now_secs())),
            &c,
            &kid0,
        );
        let url = env.url();
        let sid = sid.clone();
        tasks.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(tok)
                .header("content-type", "application/json")
                .header("mcp-session-id", sid)
                .body(call_body(i).to_string())
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 401);
    }
    let extra = env.issuer.jwks_fetches() - f1;
    assert!(extra <= 1, "a kid flood caused {extra} JWKS fetches");
    assert!(env.upstreams[0].tool_calls().is_empty());
    // And right after, still inside the window: no more fetches.
    assert_r401(
        &env,
        &sid,
        &env.issuer.mint_raw(&hdr("EdDSA", "one-more"), &c, &kid0),
        "within window",
    )
    .await;
    assert_eq!(env.issuer.jwks_fetches() - f1, extra);

    // Rotation: a new key is picked up with exactly one refetch.
    time.advance(PAST_REFETCH_WINDOW);
    let new_kid = env.issuer.add_key(KeyAlg::EdDSA);
    let f2 = env.issuer.jwks_fetches();
    let rotated = env.issuer.mint(&c);
    assert!(rotated.contains('.') && env.issuer.current_kid() == new_kid);
    assert_accepted(&env, &sid, &rotated, "token from the rotated key").await;
    assert_eq!(
        env.issuer.jwks_fetches(),
        f2 + 1,
        "rotation needs exactly one refetch"
    );
    let again = env.issuer.mint(&claims(&env));
    assert_accepted(&env, &sid, &again, "second token from the rotated key").await;
    assert_eq!(
        env.issuer.jwks_fetches(),
        f2 + 1,
        "no further fetch once the key is known"
    );
    env.gw.shutdown().await;
}

async fn readyz(env: &Env) -> u16 {
    env.client
        .get(format!("http://{}/readyz", env.gw.admin_addr))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_faults_keep_last_known_good() {
    let (env, time) = Env::start_mocked(1).await;
    assert_eq!(readyz(&env).await, 200);
    let kid0 = env.issuer.current_kid();
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    assert_accepted(&env, &sid, &tok, "before faults").await;
    for mode in [JwksMode::Status500, JwksMode::Garbage] {
        env.issuer.set_jwks_mode(mode);
        let f = env.issuer.jwks_fetches();
        // Force a refetch (unknown kid after the rate-limit window) so the fault is really seen.
        // After a failure the control loop also retries on its own, so count "at least one".
        time.advance(PAST_REFETCH_WINDOW);
        let c = env.issuer.claims("alice", AUD, "mcp:tools");
        assert_r401(
            &env,
            &sid,
            &env.issuer.mint_raw(&hdr("EdDSA", "unknown"), &c, &kid0),
            "unknown kid during fault",
        )
        .await;
        assert!(
            env.issuer.jwks_fetches() > f,
            "{mode:?}: the faulty JWKS was fetched"
        );
        // Existing token and a brand-new token from the old key keep working.
        assert_accepted(&env, &sid, &tok, &format!("{mode:?}: existing token")).await;
        assert_accepted(
            &env,
            &sid,
            &env.token("alice"),
            &format!("{mode:?}: new token, old key"),
        )
        .await;
        assert_eq!(
            readyz(&env).await,
            200,
            "{mode:?}: still ready on last-known-good keys"
        );
    }
    env.issuer.set_jwks_mode(JwksMode::Normal);
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_down_at_start_is_not_ready() {
    let (env, time) = start_env(|i| i.set_jwks_mode(JwksMode::Status500), |y| y).await;
    assert_eq!(readyz(&env).await, 503);
    let tok = env.token("alice");
    let r = env.post(Some(&tok), None, &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})).await;
    assert_eq!(r.status(), 401);
    let www = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        www.starts_with("Bearer error=\"invalid_token\"") && www.contains("resource_metadata=\""),
        "{www}"
    );
    assert!(env.upstreams[0].tool_calls().is_empty());
    // Once the JWKS is back, the retry loop loads it (on its next tick once the retry
    // interval has passed) and the gateway becomes ready.
    env.issuer.set_jwks_mode(JwksMode::Normal);
    time.advance(PAST_REFETCH_WINDOW);
    let mut ready = false;
    for _ in 0..50 {
        if readyz(&env).await == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready,
        "gateway did not become ready after the JWKS recovered"
    );
    accepted_fresh(&env, &tok, "after recovery").await;
    env.gw.shutdown().await;
}
