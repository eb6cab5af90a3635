//! SECURITY.md "Token validation" cases that need no JWKS server, on the harness (moved from
//! `tests/security_tokens.rs`, which keeps the cases about fetching keys over HTTP).

use std::rc::Rc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use controlplane::testing::Harness;
use dataplane::testing::HttpRequest;
use serde_json::{Value, json};
use testkit::issuer::now_secs;
use testkit::{KeyAlg, MemIssuer, MemUpstream, UpstreamOptions};

use crate::env::{AUD, Env, ISSUER, config_yaml};

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// A gateway with one upstream after `prep` has shaped the issuer, with `edit` applied to the YAML.
fn start_env(prep: impl FnOnce(&MemIssuer), edit: impl FnOnce(String) -> String) -> Env {
    Env::start_shaped(1, UpstreamOptions::default(), "", prep, edit)
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
fn good_session(env: &Env) -> String {
    let kid = env.issuer.current_kid();
    let tok = signed(env, &kid, &claims(env));
    env.session(&tok)
}

/// R401: 401, `Bearer error="invalid_token"` with `resource_metadata`, and nothing reached the upstream.
fn assert_r401(env: &Env, sid: &str, token: &str, what: &str) {
    let before = env.upstreams[0].tool_calls().len();
    let r = env.post(Some(token), Some(sid), &call_body(9));
    assert_eq!(r.status, 401, "{what}: status");
    let www = r
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{what}: no WWW-Authenticate"))
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
fn assert_accepted(env: &Env, sid: &str, token: &str, what: &str) {
    let before = env.upstreams[0].tool_calls().len();
    let r = env.post(Some(token), Some(sid), &call_body(8));
    assert_eq!(r.status, 200, "{what}: status");
    assert_eq!(
        env.upstreams[0].tool_calls().len(),
        before + 1,
        "{what}: call did not reach the upstream"
    );
}

/// A session for `token`'s own user (sessions are bound to iss+sub).
fn accepted_fresh(env: &Env, token: &str, what: &str) {
    let sid = env.session(token);
    assert_accepted(env, &sid, token, what);
}

fn fetch_jwk(issuer: &MemIssuer, kid: &str) -> Value {
    let doc = issuer.jwks();
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .cloned()
        .unwrap()
}

#[test]
fn case01_no_authorization_is_a_bare_challenge() {
    let env = Env::start(1);
    let r = env.post(None, None, &call_body(1));
    assert_eq!(r.status, 401);
    let www = r.header("www-authenticate").unwrap().to_owned();
    assert!(www.starts_with("Bearer "), "{www}");
    assert!(www.contains("resource_metadata=\""), "{www}");
    assert!(!www.contains("error="), "no error= without a token: {www}");
    assert!(env.upstreams[0].tool_calls().is_empty());
}

#[test]
fn case02_algorithm_attacks() {
    let mut rs_kid = String::new();
    let mut es_kid = String::new();
    let mut ed_kid = String::new();
    let env = start_env(
        |i| {
            ed_kid = i.current_kid();
            rs_kid = i.add_key(KeyAlg::RS256);
            es_kid = i.add_key(KeyAlg::ES256);
        },
        |y| y,
    );
    let c = claims(&env);
    let sid = env.session(&signed(&env, &ed_kid, &c));
    // Sanity: each real key is accepted with its own algorithm.
    for k in [&ed_kid, &rs_kid, &es_kid] {
        assert_accepted(&env, &sid, &signed(&env, k, &c), "real key");
    }
    // alg none in any case, unsigned and signed.
    for none in ["none", "None", "NONE", "nOnE"] {
        let h = json!({"alg": none, "kid": ed_kid, "typ": "at+jwt"});
        let unsigned = format!(
            "{}.{}.",
            b64(h.to_string().as_bytes()),
            b64(c.to_string().as_bytes())
        );
        assert_r401(&env, &sid, &unsigned, &format!("alg {none} unsigned"));
        assert_r401(
            &env,
            &sid,
            &env.issuer.mint_raw(&h, &c, &ed_kid),
            &format!("alg {none} signed"),
        );
    }
    // HS256 keyed with the RSA public key (modulus bytes, whole JWK JSON, and e||n), kid of the RSA key.
    let jwk = fetch_jwk(&env.issuer, &rs_kid);
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
        );
    }
    // Header alg differs from the key's pinned alg: ES256 on the EdDSA kid (real ES256 signature),
    // RS256 on the ES256 kid, PS256 on the RS256 kid.
    assert_r401(
        &env,
        &sid,
        &env.issuer.mint_raw(&hdr("ES256", &ed_kid), &c, &es_kid),
        "ES256 on EdDSA kid",
    );
    assert_r401(
        &env,
        &sid,
        &env.issuer.mint_raw(&hdr("ES256", &ed_kid), &c, &ed_kid),
        "ES256 header, EdDSA sig",
    );
    assert_r401(
        &env,
        &sid,
        &env.issuer.mint_raw(&hdr("RS256", &es_kid), &c, &rs_kid),
        "RS256 on ES256 kid",
    );
    assert_r401(
        &env,
        &sid,
        &env.issuer.mint_raw(&hdr("PS256", &rs_kid), &c, &rs_kid),
        "PS256 on RS256 kid",
    );
}

#[test]
fn case05_zero_and_empty_signatures() {
    let mut es_kid = String::new();
    let mut ed_kid = String::new();
    let env = start_env(
        |i| {
            ed_kid = i.current_kid();
            es_kid = i.add_key(KeyAlg::ES256);
        },
        |y| y,
    );
    let c = claims(&env);
    let sid = env.session(&signed(&env, &ed_kid, &c));
    let good_es = signed(&env, &es_kid, &c);
    assert_accepted(&env, &sid, &good_es, "real ES256");
    // CVE-2022-21449: r = s = 0.
    assert_r401(&env, &sid, &with_sig(&good_es, &[0u8; 64]), "ES256 r=s=0");
    assert_r401(
        &env,
        &sid,
        &forge(&hdr("ES256", &es_kid), &c, &[0u8; 64]),
        "forged ES256 r=s=0",
    );
    // Empty signature segment, for both key types.
    let good_ed = signed(&env, &ed_kid, &c);
    for t in [&good_es, &good_ed] {
        let i = t.rfind('.').unwrap();
        assert_r401(&env, &sid, &t[..=i], "empty signature");
    }
    // Truncated and zero EdDSA signatures.
    assert_r401(&env, &sid, &with_sig(&good_ed, &[0u8; 64]), "EdDSA zero");
    assert_r401(&env, &sid, &with_sig(&good_ed, &[1u8; 10]), "EdDSA short");
}

#[test]
fn case06_malformed_compact_serialisation() {
    let env = Env::start(1);
    let sid = good_session(&env);
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
        assert_r401(&env, &sid, t, what);
    }
    // Whitespace inside the token: the Authorization value has two parts after the scheme.
    let spaced = format!("{}. {}.{}", parts[0], parts[1], parts[2]);
    assert_r401(&env, &sid, &spaced, "space inside");
}

#[test]
fn case07_typ_must_be_at_jwt() {
    let env = Env::start(1);
    let sid = good_session(&env);
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
        );
    }
    let h = json!({"alg": "EdDSA", "kid": kid});
    assert_r401(
        &env,
        &sid,
        &env.issuer.mint_raw(&h, &c, &kid),
        "typ missing",
    );
    // crit is always refused.
    let h = json!({"alg": "EdDSA", "kid": kid, "typ": "at+jwt", "crit": ["exp"]});
    assert_r401(&env, &sid, &env.issuer.mint_raw(&h, &c, &kid), "crit");
    // RFC 9068 §2.1: `application/at+jwt` is the same type.
    let h = json!({"alg": "EdDSA", "kid": kid, "typ": "application/at+jwt"});
    assert_accepted(
        &env,
        &sid,
        &env.issuer.mint_raw(&h, &c, &kid),
        "application/at+jwt",
    );
}

#[test]
fn case08_time_claims() {
    let env = Env::start(1);
    let sid = good_session(&env);
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
        assert_r401(&env, &sid, t, what);
    }
    // Within the leeway: accepted (each needs its own session: same user, so the session is reusable).
    let ok = with(&|c| {
        c["exp"] = json!(now - 10);
        c["iat"] = json!(now - 600);
        c["nbf"] = json!(now - 600);
    });
    assert_accepted(&env, &sid, &ok, "exp now-10 within leeway");
    let ok = with(&|c| c["exp"] = json!(now + 24 * 3600 - 60));
    assert_accepted(&env, &sid, &ok, "lifetime just under 24 h");
}

#[test]
fn case09_audience() {
    let env = Env::start(1);
    let sid = good_session(&env);
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
        assert_r401(&env, &sid, &with(aud), what);
    }
    // Documented rule: `aud` is a string or a non-empty array of strings, and it is accepted when
    // any element equals a configured audience exactly (byte for byte, no normalisation).
    assert_accepted(
        &env,
        &sid,
        &with(Some(json!(["https://other.example/mcp", AUD]))),
        "array containing ours",
    );
    assert_accepted(
        &env,
        &sid,
        &with(Some(json!([AUD]))),
        "single-element array",
    );
}

#[test]
fn case10_issuer_and_cross_issuer_confusion() {
    let a = Rc::new(MemIssuer::new(ISSUER));
    let b = Rc::new(MemIssuer::new("https://idp-b.test"));
    let up = Rc::new(MemUpstream::new(UpstreamOptions::default()));
    let yaml = config_yaml(&[&a.issuer(), &b.issuer()], &["up0"], "");
    let cfg = controlplane::Config::parse(&yaml, "test.yaml").expect("config");
    assert_eq!(cfg.issuers.len(), 2);
    let h = Harness::builder(&yaml)
        .issuer(&a)
        .issuer(&b)
        .upstream("up0", up.clone())
        .build()
        .expect("start");
    let env = Env {
        h,
        issuer: a,
        upstreams: vec![up],
    };
    let sid = good_session(&env);
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
        assert_r401(&env, &sid, &with(iss), what);
    }
    // B is trusted: its own token works (with its own session, sessions are bound to iss+sub).
    let b_tok = b.mint(&b.claims("mallory", AUD, "mcp:tools"));
    accepted_fresh(&env, &b_tok, "issuer B's own token");
    // Signed by A's key, claiming to be from B: refused (B's keys are B's only). Refetches
    // are not rate-limited here, so the bound below is the gateway's own.
    let b_fetches = b.jwks_fetches();
    let mut c = claims(&env);
    c["iss"] = json!(b.issuer());
    let confused = signed(&env, &kid, &c);
    let b_sid = env.session(&b_tok);
    assert_r401(&env, &b_sid, &confused, "A's key, iss = B");
    assert!(
        b.jwks_fetches() <= b_fetches + 1,
        "at most one refetch of B's JWKS"
    );
    // And the reverse: B's key, iss = A.
    let mut c = b.claims("mallory", AUD, "mcp:tools");
    c["iss"] = json!(a_iss);
    let reverse = b.mint(&c);
    assert_r401(&env, &sid, &reverse, "B's key, iss = A");
}

#[test]
fn case11_token_length_cap_before_key_work() {
    // Headers up to 64 KiB here, so the 16 KiB token cap (not the header cap) is what answers.
    let env = start_env(
        |_| {},
        |y| y.replace("max_header_bytes: 8192", "max_header_bytes: 65536"),
    );
    let sid = good_session(&env);
    let kid = env.issuer.current_kid();
    let mut c = claims(&env);
    c["pad"] = json!("x".repeat(11_000));
    let under = signed(&env, &kid, &c);
    assert!(
        under.len() < 16 * 1024 && under.len() > 14_000,
        "{}",
        under.len()
    );
    assert_accepted(&env, &sid, &under, "validly signed token under 16 KiB");
    c["pad"] = json!("x".repeat(13_000));
    let over = signed(&env, &kid, &c);
    assert!(over.len() > 16 * 1024, "{}", over.len());
    assert_r401(&env, &sid, &over, "validly signed token over 16 KiB");
    // An oversize token with an unknown kid causes no JWKS refetch: refused before any key
    // work. (Refetches are not rate-limited here, so one would show.)
    let fetches = env.issuer.jwks_fetches();
    let big_unknown = env.issuer.mint_raw(&hdr("EdDSA", "unknown-kid"), &c, &kid);
    assert_r401(&env, &sid, &big_unknown, "oversize, unknown kid");
    assert_eq!(
        env.issuer.jwks_fetches(),
        fetches,
        "oversize token triggered key work"
    );
}

#[test]
fn case11_header_block_over_limit_is_431() {
    let env = Env::start(1);
    let tok = env.token("alice");
    let r = env.send(
        env.mcp("POST")
            .bearer(&tok)
            .header("x-pad", "a".repeat(9000))
            .json(&call_body(1)),
    );
    assert_eq!(r.status, 431);
    // Many small headers adding up over the limit.
    let mut req = format!("POST /mcp HTTP/1.1\r\nHost: {}\r\n", env.host());
    for i in 0..90 {
        req.push_str(&format!("x-h{i}: {}\r\n", "b".repeat(100)));
    }
    req.push_str("\r\n");
    let out = String::from_utf8_lossy(&env.request(req.as_bytes())).into_owned();
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    assert!(env.upstreams[0].tool_calls().is_empty());
}

#[test]
fn case12_query_token_and_duplicate_authorization() {
    let env = Env::start(1);
    let tok = env.token("alice");
    let sid = env.session(&tok);
    for (with_header, q) in [
        (false, format!("access_token={tok}")),
        (true, format!("access_token={tok}")),
        (false, format!("a=1&access_token={tok}")),
    ] {
        let mut rb = HttpRequest::new("POST", &format!("/mcp?{q}"))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &sid)
            .header("mcp-protocol-version", "2025-06-18");
        if with_header {
            rb = rb.bearer(&tok);
        }
        let r = env.send(rb.json(&call_body(1)));
        assert_eq!(r.status, 400, "query {q} header {with_header}");
        let v: Value = r.json();
        assert_eq!(v["error"], "invalid_request");
    }
    // Two Authorization headers, both valid.
    let body = call_body(2).to_string();
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {tok}\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: {sid}\r\nMcp-Protocol-Version: 2025-06-18\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        env.host(),
        body.len()
    );
    let out = String::from_utf8_lossy(&env.request(req.as_bytes())).into_owned();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("invalid_request"), "{out}");
    assert!(
        env.upstreams[0].tool_calls().is_empty(),
        "nothing reached the upstream"
    );
}
