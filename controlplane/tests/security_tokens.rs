//! SECURITY.md "Token validation" cases 1–13 and the JWKS faults, against the real gateway over real HTTP.
//!
//! Gateways that must wait out the JWKS refetch window run on a mock clock, stepped past it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{AUD, Env, config_yaml, raw};
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

/// Replace the signature segment of a compact JWS.
fn with_sig(token: &str, sig: &[u8]) -> String {
    let i = token.rfind('.').unwrap();
    format!("{}.{}", &token[..i], b64(sig))
}

/// A compact JWS with arbitrary header and claims and the given signature bytes.
fn forge(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(sig)
    )
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
async fn case01_no_authorization_is_a_bare_challenge() {
    let env = Env::start(1).await;
    let r = env.post(None, None, &call_body(1)).await;
    assert_eq!(r.status(), 401);
    let www = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(www.starts_with("Bearer "), "{www}");
    assert!(www.contains("resource_metadata=\""), "{www}");
    assert!(!www.contains("error="), "no error= without a token: {www}");
    assert!(env.upstreams[0].tool_calls().is_empty());
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case02_algorithm_attacks() {
    let mut rs_kid = String::new();
    let mut es_kid = String::new();
    let mut ed_kid = String::new();
    let (env, _time) = start_env(
        |i| {
            ed_kid = i.current_kid();
            rs_kid = i.add_key(KeyAlg::RS256);
            es_kid = i.add_key(KeyAlg::ES256);
        },
        |y| y,
    )
    .await;
    let c = claims(&env);
    let sid = env.session(&signed(&env, &ed_kid, &c)).await;
    // Sanity: each real key is accepted with its own algorithm.
    for k in [&ed_kid, &rs_kid, &es_kid] {
        assert_accepted(&env, &sid, &signed(&env, k, &c), "real key").await;
    }
    // alg none in any case, unsigned and signed.
    for none in ["none", "None", "NONE", "nOnE"] {
        let h = json!({"alg": none, "kid": ed_kid, "typ": "at+jwt"});
        let unsigned = format!(
            "{}.{}.",
            b64(h.to_string().as_bytes()),
            b64(c.to_string().as_bytes())
        );
        assert_r401(&env, &sid, &unsigned, &format!("alg {none} unsigned")).await;
        assert_r401(
            &env,
            &sid,
            &env.issuer.mint_raw(&h, &c, &ed_kid),
            &format!("alg {none} signed"),
        )
        .await;
    }
    // HS256 keyed with the RSA public key (modulus bytes, whole JWK JSON, and e||n), kid of the RSA key.
    let jwk = fetch_jwk(&env.issuer, &rs_kid).await;
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let h = json!({"alg": "HS256", "kid": rs_kid, "typ": "at+jwt"});
    for secret in [
        n.clone(),
        jwk.to_string().into_bytes(),
        jwk["n"].as_str().unwrap().as_bytes().to_vec(),
    ] {
        assert_r401(
            &env,
            &sid,
            &hs256(&h, &c, &secret),
            "HS256 with RSA public key",
        )
        .await;
    }
    // Header alg differs from the key's pinned alg: ES256 on the EdDSA kid (real ES256 signature),
    // RS256 on the ES256 kid, PS256 on the RS256 kid.
    assert_r401(
        &env,
        &sid,
        &env.issuer.mint_raw(&hdr("ES256", &ed_kid), &c, &es_kid),
        "ES256 on EdDSA kid",
    )
    .await;
    assert_r401(
        &env,
        &sid,
        &env.issuer.mint_raw(&hdr("ES256", &ed_kid), &c, &ed_kid),
        "ES256 header, EdDSA sig",
    )
    .await;
    assert_r401(
        &env,
        &sid,
        &env.issuer.mint_raw(&hdr("RS256", &es_kid), &c, &rs_kid),
        "RS256 on ES256 kid",
    )
    .await;
    assert_r401(
        &env,
        &sid,
        &env.issuer.mint_raw(&hdr("PS256", &rs_kid), &c, &rs_kid),
        "PS256 on RS256 kid",
    )
    .await;
    env.gw.shutdown().await;
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
async fn case05_zero_and_empty_signatures() {
    let mut es_kid = String::new();
    let mut ed_kid = String::new();
    let (env, _time) = start_env(
        |i| {
            ed_kid = i.current_kid();
            es_kid = i.add_key(KeyAlg::ES256);
        },
        |y| y,
    )
    .await;
    let c = claims(&env);
    let sid = env.session(&signed(&env, &ed_kid, &c)).await;
    let good_es = signed(&env, &es_kid, &c);
    assert_accepted(&env, &sid, &good_es, "real ES256").await;
    // CVE-2022-21449: r = s = 0.
    assert_r401(&env, &sid, &with_sig(&good_es, &[0u8; 64]), "ES256 r=s=0").await;
    assert_r401(
        &env,
        &sid,
        &forge(&hdr("ES256", &es_kid), &c, &[0u8; 64]),
        "forged ES256 r=s=0",
    )
    .await;
    // Empty signature segment, for both key types.
    let good_ed = signed(&env, &ed_kid, &c);
    for t in [&good_es, &good_ed] {
        let i = t.rfind('.').unwrap();
        assert_r401(&env, &sid, &t[..=i], "empty signature").await;
    }
    // Truncated and zero EdDSA signatures.
    assert_r401(&env, &sid, &with_sig(&good_ed, &[0u8; 64]), "EdDSA zero").await;
    assert_r401(&env, &sid, &with_sig(&good_ed, &[1u8; 10]), "EdDSA short").await;
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case06_malformed_compact_serialisation() {
    let env = Env::start(1).await;
    let sid = good_session(&env).await;
    let good = env.token("mallory");
    let parts: Vec<&str> = good.split('.').collect();
    let cases = [
        (format!("{good}.AAAA.BBBB"), "5 segments (JWE shape)"),
        (
            format!(
                "{}.{}.{}.{}.{}",
                b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM","typ":"at+jwt"}"#),
                "AAAA",
                "AAAA",
                "AAAA",
                "AAAA"
            ),
            "JWE header",
        ),
        (format!("{good}.AAAA"), "4 segments"),
        (format!("{}.{}", parts[0], parts[1]), "2 segments"),
        (
            format!("{}.{}!!.{}", parts[0], parts[1], parts[2]),
            "bad base64 (!)",
        ),
        (
            format!("{}.{}==.{}", parts[0], parts[1], parts[2]),
            "base64 padding",
        ),
        (
            format!("{}.{}+/.{}", parts[0], parts[1], parts[2]),
            "standard-alphabet base64",
        ),
        (
            format!("{}.{}\t.{}", parts[0], parts[1], parts[2]),
            "tab inside",
        ),
        (
            format!(
                "{}.{}.{}",
                b64(&[0xff, 0xfe, 0x7b, 0x22, 0xc3, 0x28]),
                parts[1],
                parts[2]
            ),
            "non-UTF-8 header",
        ),
        (
            format!(
                "{}.{}.{}",
                b64(b"{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\",\"kid\":\"\xc3\x28\"}".as_slice()),
                parts[1],
                parts[2]
            ),
            "non-UTF-8 in kid",
        ),
        (
            format!("{}.{}.{}", b64(b"not json"), parts[1], parts[2]),
            "header not JSON",
        ),
    ];
    for (t, what) in &cases {
        assert_r401(&env, &sid, t, what).await;
    }
    // Whitespace inside the token: the Authorization value has two parts after the scheme.
    let spaced = format!("{}. {}.{}", parts[0], parts[1], parts[2]);
    assert_r401(&env, &sid, &spaced, "space inside").await;
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case07_typ_must_be_at_jwt() {
    let env = Env::start(1).await;
    let sid = good_session(&env).await;
    let kid = env.issuer.current_kid();
    let c = claims(&env);
    for typ in [
        json!("JWT"),
        json!("jwt"),
        json!("id_token"),
        json!("application/jwt"),
        json!(["at+jwt"]),
        json!(1),
    ] {
        let h = json!({"alg": "EdDSA", "kid": kid, "typ": typ});
        assert_r401(
            &env,
            &sid,
            &env.issuer.mint_raw(&h, &c, &kid),
            &format!("typ {typ}"),
        )
        .await;
    }
    let h = json!({"alg": "EdDSA", "kid": kid});
    assert_r401(
        &env,
        &sid,
        &env.issuer.mint_raw(&h, &c, &kid),
        "typ missing",
    )
    .await;
    // crit is always refused.
    let h = json!({"alg": "EdDSA", "kid": kid, "typ": "at+jwt", "crit": ["exp"]});
    assert_r401(&env, &sid, &env.issuer.mint_raw(&h, &c, &kid), "crit").await;
    // RFC 9068 §2.1: `application/at+jwt` is the same type.
    let h = json!({"alg": "EdDSA", "kid": kid, "typ": "application/at+jwt"});
    assert_accepted(
        &env,
        &sid,
        &env.issuer.mint_raw(&h, &c, &kid),
        "application/at+jwt",
    )
    .await;
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case08_time_claims() {
    let env = Env::start(1).await;
    let sid = good_session(&env).await;
    let kid = env.issuer.current_kid();
    let now = now_secs() as i64;
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(&env);
        f(&mut c);
        signed(&env, &kid, &c)
    };
    let refused: Vec<(String, &str)> = vec![
        (
            with(&|c| drop(c.as_object_mut().unwrap().remove("exp"))),
            "exp missing",
        ),
        (
            with(&|c| c["exp"] = json!((now + 300).to_string())),
            "exp string",
        ),
        (with(&|c| c["exp"] = json!(null)), "exp null"),
        (with(&|c| c["exp"] = json!(now - 3600)), "exp an hour ago"),
        // Leeway is 30 s: exp = now - 31 is past it.
        (
            with(&|c| {
                c["exp"] = json!(now - 31);
                c["iat"] = json!(now - 600);
                c["nbf"] = json!(now - 600);
            }),
            "exp now-31",
        ),
        (with(&|c| c["nbf"] = json!(now + 60)), "nbf +60"),
        (with(&|c| c["nbf"] = json!("0")), "nbf string"),
        (with(&|c| c["iat"] = json!(now + 60)), "iat +60"),
        (with(&|c| c["iat"] = json!("now")), "iat string"),
        // Default maximum lifetime: 24 h.
        (
            with(&|c| c["exp"] = json!(now + 24 * 3600 + 120)),
            "lifetime > 24 h",
        ),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("iat");
                c["exp"] = json!(now + 48 * 3600);
            }),
            "no iat, exp in 48 h",
        ),
        (with(&|c| c["exp"] = json!(i64::MAX)), "exp i64::MAX"),
        (with(&|c| c["exp"] = json!(1e300)), "exp 1e300"),
        (
            with(&|c| drop(c.as_object_mut().unwrap().remove("sub"))),
            "sub missing",
        ),
    ];
    for (t, what) in &refused {
        assert_r401(&env, &sid, t, what).await;
    }
    // Within the leeway: accepted (each needs its own session: same user, so the session is reusable).
    let ok = with(&|c| {
        c["exp"] = json!(now - 10);
        c["iat"] = json!(now - 600);
        c["nbf"] = json!(now - 600);
    });
    assert_accepted(&env, &sid, &ok, "exp now-10 within leeway").await;
    let ok = with(&|c| c["exp"] = json!(now + 24 * 3600 - 60));
    assert_accepted(&env, &sid, &ok, "lifetime just under 24 h").await;
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case09_audience() {
    let env = Env::start(1).await;
    let sid = good_session(&env).await;
    let kid = env.issuer.current_kid();
    let with = |aud: Option<Value>| {
        let mut c = claims(&env);
        match aud {
            Some(a) => c["aud"] = a,
            None => drop(c.as_object_mut().unwrap().remove("aud")),
        }
        signed(&env, &kid, &c)
    };
    for (aud, what) in [
        (None, "aud missing"),
        (Some(json!("https://other.example/mcp")), "other resource"),
        (Some(json!(format!("{AUD}/"))), "trailing slash"),
        (Some(json!("HTTP://127.0.0.1/mcp")), "case differs"),
        (Some(json!(42)), "number"),
        (Some(json!({"aud": AUD})), "object"),
        (Some(json!([])), "empty array"),
        (
            Some(json!(["https://other.example/mcp"])),
            "array without ours",
        ),
        (Some(json!([42, AUD])), "array with a non-string"),
    ] {
        assert_r401(&env, &sid, &with(aud), what).await;
    }
    // Documented rule: `aud` is a string or a non-empty array of strings, and it is accepted when
    // any element equals a configured audience exactly (byte for byte, no normalisation).
    assert_accepted(
        &env,
        &sid,
        &with(Some(json!(["https://other.example/mcp", AUD]))),
        "array containing ours",
    )
    .await;
    assert_accepted(
        &env,
        &sid,
        &with(Some(json!([AUD]))),
        "single-element array",
    )
    .await;
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case10_issuer_and_cross_issuer_confusion() {
    let a = TestIssuer::start().await;
    let b = TestIssuer::start().await;
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let yaml = config_yaml(&a.issuer(), &[("up0".to_owned(), up.url())], "").replacen(
        "upstreams:\n",
        &format!(
            "  - issuer: {}\n    jwks_min_refetch_interval: 2s\nupstreams:\n",
            b.issuer()
        ),
        1,
    );
    let cfg = controlplane::Config::parse(&yaml, "test.yaml").expect("config");
    assert_eq!(cfg.issuers.len(), 2);
    let (gw, time) = gateway_on_mock(cfg).await;
    let env = Env {
        issuer: a,
        upstreams: vec![up],
        gw,
        client: reqwest::Client::new(),
    };
    let sid = good_session(&env).await;
    let kid = env.issuer.current_kid();
    let with = |iss: Option<Value>| {
        let mut c = claims(&env);
        match iss {
            Some(i) => c["iss"] = i,
            None => drop(c.as_object_mut().unwrap().remove("iss")),
        }
        signed(&env, &kid, &c)
    };
    let a_iss = env.issuer.issuer();
    for (iss, what) in [
        (None, "iss missing"),
        (Some(json!("http://evil.example")), "other"),
        (Some(json!(format!("{a_iss}/"))), "trailing slash"),
        (Some(json!([a_iss.clone()])), "array"),
        (Some(json!(7)), "number"),
    ] {
        assert_r401(&env, &sid, &with(iss), what).await;
    }
    // B is trusted: its own token works (with its own session, sessions are bound to iss+sub).
    let b_tok = b.mint(&b.claims("mallory", AUD, "mcp:tools"));
    accepted_fresh(&env, &b_tok, "issuer B's own token").await;
    // Signed by A's key, claiming to be from B: refused (B's keys are B's only).
    time.advance(PAST_REFETCH_WINDOW);
    let b_fetches = b.jwks_fetches();
    let mut c = claims(&env);
    c["iss"] = json!(b.issuer());
    let confused = signed(&env, &kid, &c);
    let b_sid = env.session(&b_tok).await;
    assert_r401(&env, &b_sid, &confused, "A's key, iss = B").await;
    assert!(
        b.jwks_fetches() <= b_fetches + 1,
        "at most one refetch of B's JWKS"
    );
    // And the reverse: B's key, iss = A.
    let mut c = b.claims("mallory", AUD, "mcp:tools");
    c["iss"] = json!(a_iss);
    let reverse = b.mint(&c);
    assert_r401(&env, &sid, &reverse, "B's key, iss = A").await;
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case11_token_length_cap_before_key_work() {
    // Headers up to 64 KiB here, so the 16 KiB token cap (not the header cap) is what answers.
    let (env, time) = start_env(
        |_| {},
        |y| y.replace("max_header_bytes: 8192", "max_header_bytes: 65536"),
    )
    .await;
    let sid = good_session(&env).await;
    let kid = env.issuer.current_kid();
    let mut c = claims(&env);
    c["pad"] = json!("x".repeat(11_000));
    let under = signed(&env, &kid, &c);
    assert!(
        under.len() < 16 * 1024 && under.len() > 14_000,
        "{}",
        under.len()
    );
    assert_accepted(&env, &sid, &under, "validly signed token under 16 KiB").await;
    c["pad"] = json!("x".repeat(13_000));
    let over = signed(&env, &kid, &c);
    assert!(over.len() > 16 * 1024, "{}", over.len());
    assert_r401(&env, &sid, &over, "validly signed token over 16 KiB").await;
    // An oversize token with an unknown kid causes no JWKS refetch: refused before any key work.
    time.advance(PAST_REFETCH_WINDOW);
    let fetches = env.issuer.jwks_fetches();
    let big_unknown = env.issuer.mint_raw(&hdr("EdDSA", "unknown-kid"), &c, &kid);
    assert_r401(&env, &sid, &big_unknown, "oversize, unknown kid").await;
    assert_eq!(
        env.issuer.jwks_fetches(),
        fetches,
        "oversize token triggered key work"
    );
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case11_header_block_over_limit_is_431() {
    let env = Env::start(1).await;
    let tok = env.token("alice");
    let r = env
        .client
        .post(env.url())
        .bearer_auth(&tok)
        .header("content-type", "application/json")
        .header("x-pad", "a".repeat(9000))
        .body(call_body(1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    // Many small headers adding up over the limit.
    let mut req = format!("POST /mcp HTTP/1.1\r\nHost: {}\r\n", env.gw.addr);
    for i in 0..90 {
        req.push_str(&format!("x-h{i}: {}\r\n", "b".repeat(100)));
    }
    req.push_str("\r\n");
    let out = raw(env.gw.addr, req.as_bytes(), Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    assert!(env.upstreams[0].tool_calls().is_empty());
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case12_query_token_and_duplicate_authorization() {
    let env = Env::start(1).await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    for (with_header, q) in [
        (false, format!("access_token={tok}")),
        (true, format!("access_token={tok}")),
        (false, format!("a=1&access_token={tok}")),
    ] {
        let mut rb = env
            .client
            .post(format!("{}?{q}", env.url()))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &sid)
            .header("mcp-protocol-version", "2025-06-18");
        if with_header {
            rb = rb.bearer_auth(&tok);
        }
        let r = rb.body(call_body(1).to_string()).send().await.unwrap();
        assert_eq!(r.status(), 400, "query {q} header {with_header}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "invalid_request");
    }
    // Two Authorization headers, both valid.
    let body = call_body(2).to_string();
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {tok}\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: {sid}\r\nMcp-Protocol-Version: 2025-06-18\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        env.gw.addr,
        body.len()
    );
    let out = raw(env.gw.addr, req.as_bytes(), Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("invalid_request"), "{out}");
    assert!(
        env.upstreams[0].tool_calls().is_empty(),
        "nothing reached the upstream"
    );
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
