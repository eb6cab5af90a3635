//! DPoP at the gateway (RFC 9449, MCP SEP-1932) on the harness: proofs made in the test with
//! ES256 and EdDSA keys; every §4.3 check broken in turn → 401 with the right challenge,
//! nothing forwarded, one audit record; replays on the same and on another shard.

use std::time::Duration;

use dataplane::audit::{Outcome, Record};
use dataplane::testing::{HttpRequest, HttpResponse};
use serde_json::{Value, json};
use testkit::UpstreamOptions;
use testkit::dpop::{self as proofs, DpopKey};

use crate::env::{AUD, Env};

/// The htu of the gateway's endpoint (`public_url`).
const HTU: &str = AUD;

/// One upstream; the issuer's block gets `issuer_extra` (e.g. `    dpop: required\n`).
fn start(issuer_extra: &str) -> Env {
    let extra = issuer_extra.to_owned();
    Env::start_edited(1, UpstreamOptions::default(), "", move |y| {
        y.replace(
            "    jwks_min_refetch_interval: 0s\n",
            &format!("    jwks_min_refetch_interval: 0s\n{extra}"),
        )
    })
}

/// A token bound to `key` (`cnf.jkt`).
fn bound_token(env: &Env, key: &DpopKey) -> String {
    let mut c = env.issuer.claims("alice", AUD, "mcp:tools");
    c["cnf"] = json!({"jkt": key.thumbprint()});
    env.issuer.mint(&c)
}

fn initialize_body() -> Value {
    json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":controlplane::testing::PROTOCOL_VERSION,"capabilities":{},"clientInfo":{"name":"t","version":"1"}}})
}

fn call_body(id: i64) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"up0_echo","arguments":{"x":1}}})
}

/// A POST to the endpoint with `Authorization: <scheme> <token>` and the given proofs.
fn post(
    env: &Env,
    scheme: &str,
    token: &str,
    proofs: &[&str],
    sid: Option<&str>,
    body: &Value,
) -> HttpRequest {
    let mut r = env
        .mcp("POST")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("{scheme} {token}"))
        .json(body);
    for p in proofs {
        r = r.header("dpop", *p);
    }
    if let Some(s) = sid {
        r = r.header("mcp-session-id", s).header(
            "mcp-protocol-version",
            controlplane::testing::PROTOCOL_VERSION,
        );
    }
    r
}

/// A session opened with fresh proofs of `key`.
fn session(env: &Env, key: &DpopKey, tok: &str) -> String {
    let now = env.now_secs();
    let p = key.proof("POST", HTU, now, Some(tok));
    let r = env.send(post(env, "DPoP", tok, &[&p], None, &initialize_body()));
    assert_eq!(r.status, 200, "initialize: {}", r.text());
    let sid = r.header("mcp-session-id").expect("a session id").to_owned();
    let p = key.proof("POST", HTU, now, Some(tok));
    let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
    let r = env.send(post(env, "DPoP", tok, &[&p], Some(&sid), &note));
    assert_eq!(r.status, 202, "initialized: {}", r.text());
    sid
}

fn challenges(r: &HttpResponse) -> Vec<&str> {
    r.headers
        .iter()
        .filter(|(n, _)| n == "www-authenticate")
        .map(|(_, v)| v.as_str())
        .collect()
}

/// 401 with `DPoP error="<error>"`, the algorithms, and the Bearer challenge for discovery.
fn assert_dpop_401(r: &HttpResponse, error: &str, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    let ch = challenges(r);
    let dpop = ch
        .iter()
        .find(|c| c.starts_with("DPoP "))
        .unwrap_or_else(|| panic!("{what}: no DPoP challenge in {ch:?}"));
    assert!(
        dpop.contains(&format!("error=\"{error}\"")),
        "{what}: {dpop}"
    );
    assert!(dpop.contains("algs=\"ES256 EdDSA\""), "{what}: {dpop}");
    assert!(dpop.contains("resource_metadata=\""), "{what}: {dpop}");
    let bearer = ch
        .iter()
        .find(|c| c.starts_with("Bearer "))
        .unwrap_or_else(|| panic!("{what}: no Bearer challenge in {ch:?}"));
    assert!(
        bearer.contains(
            "resource_metadata=\"http://127.0.0.1/.well-known/oauth-protected-resource/mcp\""
        ),
        "{what}: {bearer}"
    );
    assert_eq!(r.json()["error"], error, "{what}");
}

/// The one audit record of a refused `tools/call`, with its reason.
fn refused_record(env: &Env, what: &str) -> Record {
    let recs: Vec<Record> = env
        .take_audit()
        .into_iter()
        .filter(|r| r.method == "tools/call")
        .collect();
    assert_eq!(recs.len(), 1, "{what}: {recs:?}");
    let r = recs.into_iter().next().unwrap();
    assert_eq!(r.decision, Outcome::Unauthenticated, "{what}");
    r
}

#[test]
fn valid_proofs_call_tools_and_the_record_says_sender_constrained() {
    for key in [DpopKey::es256(), DpopKey::ed25519()] {
        let env = start("");
        let tok = bound_token(&env, &key);
        let sid = session(&env, &key, &tok);
        env.take_audit();
        let p = key.proof("POST", HTU, env.now_secs(), Some(&tok));
        let r = env.send(post(&env, "DPoP", &tok, &[&p], Some(&sid), &call_body(1)));
        assert_eq!(r.status, 200, "{}: {}", key.alg(), r.text());
        assert_eq!(
            r.message()["result"]["isError"],
            Value::Null,
            "{}",
            r.text()
        );
        let calls = env.upstreams[0].tool_calls();
        assert_eq!(calls.len(), 1, "{}", key.alg());
        // Neither the proof nor the user's token goes upstream.
        assert!(
            calls[0]
                .headers
                .iter()
                .all(|(n, v)| n != "dpop" && !v.contains(&tok))
        );
        let rec: Vec<Record> = env
            .take_audit()
            .into_iter()
            .filter(|r| r.method == "tools/call")
            .collect();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].decision, Outcome::Allow);
        assert!(rec[0].sender_constrained);
        assert_eq!(rec[0].jkt.as_deref(), Some(key.thumbprint().as_str()));
    }
}

#[test]
fn bearer_tokens_are_recorded_as_not_sender_constrained() {
    let env = start("");
    let tok = env.token("bob");
    let sid = env.session(&tok);
    env.take_audit();
    env.call(&tok, &sid, json!(1), "up0_echo", json!({}));
    let rec: Vec<Record> = env
        .take_audit()
        .into_iter()
        .filter(|r| r.method == "tools/call")
        .collect();
    assert!(!rec[0].sender_constrained);
    assert_eq!(rec[0].jkt, None);
    let line = serde_json::to_value(&rec[0]).unwrap();
    assert_eq!(line["sender_constrained"], false);
}

/// Each RFC 9449 §4.3 check broken in turn, for both key types.
#[test]
fn every_broken_check_is_a_401_with_the_dpop_challenge_and_nothing_forwarded() {
    for key in [DpopKey::es256(), DpopKey::ed25519()] {
        let env = start("");
        let tok = bound_token(&env, &key);
        let sid = session(&env, &key, &tok);
        let now = env.now_secs();
        let good = || key.claims("POST", HTU, now, Some(&tok), None);
        let with = |name: &str, v: Value| {
            let mut c = good();
            c[name] = v;
            key.sign(&key.header(), &c)
        };
        let header_with = |name: &str, v: Value| {
            let mut h = key.header();
            h[name] = v;
            key.sign(&h, &good())
        };
        let mut no_ath = good();
        no_ath.as_object_mut().unwrap().remove("ath");
        let mut private = key.header();
        private["jwk"]["d"] = json!("AQAB");
        let mut none = key.header();
        none["alg"] = json!("none");
        let mut hs = key.header();
        hs["alg"] = json!("HS256");
        let other = DpopKey::es256();
        let cases: Vec<(&str, Vec<String>, &str)> = vec![
            ("missing proof", vec![], "dpop_missing"),
            (
                "two proofs",
                vec![
                    key.proof("POST", HTU, now, Some(&tok)),
                    key.proof("POST", HTU, now, Some(&tok)),
                ],
                "dpop_repeated",
            ),
            (
                "wrong typ",
                vec![header_with("typ", json!("JWT"))],
                "dpop_bad_typ",
            ),
            (
                "alg none",
                vec![format!("{}AAAA", proofs::unsigned(&none, &good()))],
                "dpop_bad_alg",
            ),
            (
                "HS256",
                vec![proofs::hs256(&hs, &good(), b"secret")],
                "dpop_bad_alg",
            ),
            (
                "private key in jwk",
                vec![key.sign(&private, &good())],
                "dpop_private_key",
            ),
            (
                "wrong thumbprint",
                vec![other.proof("POST", HTU, now, Some(&tok))],
                "dpop_jkt",
            ),
            (
                "wrong htm",
                vec![key.proof("GET", HTU, now, Some(&tok))],
                "dpop_htm",
            ),
            (
                "wrong htu",
                vec![key.proof("POST", "http://127.0.0.1/other", now, Some(&tok))],
                "dpop_htu",
            ),
            (
                "stale iat",
                vec![key.proof("POST", HTU, now - 301, Some(&tok))],
                "dpop_iat_stale",
            ),
            (
                "future iat",
                vec![key.proof("POST", HTU, now + 301, Some(&tok))],
                "dpop_iat_future",
            ),
            (
                "missing ath",
                vec![key.sign(&key.header(), &no_ath)],
                "dpop_ath_missing",
            ),
            (
                "wrong ath",
                vec![with("ath", json!(proofs::ath("another token")))],
                "dpop_ath",
            ),
        ];
        env.take_audit();
        for (what, ps, label) in cases {
            let refs: Vec<&str> = ps.iter().map(String::as_str).collect();
            let r = env.send(post(&env, "DPoP", &tok, &refs, Some(&sid), &call_body(2)));
            assert_dpop_401(&r, "invalid_dpop_proof", what);
            let rec = refused_record(&env, what);
            assert_eq!(
                rec.reason.as_deref(),
                Some(format!("DPoP proof invalid ({label})").as_str()),
                "{what}"
            );
            assert_eq!(rec.blame, Some("agent"), "{what}");
            assert!(
                env.upstreams[0].tool_calls().is_empty(),
                "{what}: forwarded"
            );
        }
    }
}

#[test]
fn a_replayed_proof_is_refused_on_the_same_shard_and_on_another() {
    let key = DpopKey::es256();
    let env = start("");
    let tok = bound_token(&env, &key);
    let sid = session(&env, &key, &tok);
    let p = key.proof("POST", HTU, env.now_secs(), Some(&tok));
    let r = env.send(post(&env, "DPoP", &tok, &[&p], Some(&sid), &call_body(1)));
    assert_eq!(r.status, 200, "{}", r.text());
    env.take_audit();
    // The same proof again, on shard 0, then on shard 1 (its own token cache, so the token
    // is verified afresh there; the replay set is the process's).
    for shard in [0, 1] {
        let r = env.send_on(
            shard,
            post(&env, "DPoP", &tok, &[&p], Some(&sid), &call_body(2)),
        );
        assert_dpop_401(
            &r,
            "invalid_dpop_proof",
            &format!("replay on shard {shard}"),
        );
        let rec = refused_record(&env, "replay");
        assert_eq!(
            rec.reason.as_deref(),
            Some("DPoP proof invalid (dpop_replay)")
        );
    }
    assert_eq!(env.upstreams[0].tool_calls().len(), 1);
    // A proof first used on shard 1 is refused on shard 0 too.
    let p = key.proof("POST", HTU, env.now_secs(), Some(&tok));
    let r = env.send_on(
        1,
        post(&env, "DPoP", &tok, &[&p], Some(&sid), &call_body(3)),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = env.send_on(
        0,
        post(&env, "DPoP", &tok, &[&p], Some(&sid), &call_body(4)),
    );
    assert_dpop_401(
        &r,
        "invalid_dpop_proof",
        "replay of a shard-1 proof on shard 0",
    );
    assert_eq!(env.upstreams[0].tool_calls().len(), 2);
}

#[test]
fn a_bound_token_sent_as_bearer_is_refused() {
    let key = DpopKey::ed25519();
    let env = start("");
    let tok = bound_token(&env, &key);
    let sid = session(&env, &key, &tok);
    env.take_audit();
    // Even with a valid proof alongside: the scheme says "bearer", and a bearer token that
    // works without its key is what DPoP exists to prevent.
    let p = key.proof("POST", HTU, env.now_secs(), Some(&tok));
    let r = env.send(post(&env, "Bearer", &tok, &[&p], Some(&sid), &call_body(1)));
    assert_eq!(r.status, 401, "{}", r.text());
    let ch = challenges(&r);
    assert!(
        ch.iter()
            .any(|c| c.starts_with("Bearer error=\"invalid_token\"")),
        "{ch:?}"
    );
    assert!(
        ch.iter()
            .any(|c| c.starts_with("DPoP algs=\"ES256 EdDSA\"")),
        "{ch:?}"
    );
    let rec = refused_record(&env, "bound as bearer");
    assert_eq!(
        rec.reason.as_deref(),
        Some("bearer token invalid (dpop_bound_token_as_bearer)")
    );
    assert!(env.upstreams[0].tool_calls().is_empty());
}

#[test]
fn an_unbound_token_under_the_dpop_scheme_is_refused() {
    let key = DpopKey::es256();
    let env = start("");
    let tok = env.token("carol");
    let p = key.proof("POST", HTU, env.now_secs(), Some(&tok));
    let r = env.send(post(&env, "DPoP", &tok, &[&p], None, &initialize_body()));
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        challenges(&r)
            .iter()
            .any(|c| c.starts_with("Bearer error=\"invalid_token\""))
    );
}

#[test]
fn dpop_required_refuses_bearer_tokens_and_off_refuses_bound_ones() {
    let env = start("    dpop: required\n");
    let tok = env.token("dave");
    let r = env.post(Some(&tok), None, &initialize_body());
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        challenges(&r).iter().any(|c| c.starts_with("DPoP algs=")),
        "{:?}",
        challenges(&r)
    );
    // A bound token with its proof works there.
    let key = DpopKey::es256();
    let bound = bound_token(&env, &key);
    session(&env, &key, &bound);
    let prm = env
        .send(HttpRequest::new(
            "GET",
            "/.well-known/oauth-protected-resource/mcp",
        ))
        .json();
    assert_eq!(prm["dpop_bound_access_tokens_required"], true);
    assert_eq!(
        prm["dpop_signing_alg_values_supported"],
        json!(["ES256", "EdDSA"])
    );

    let env = start("    dpop: \"off\"\n");
    let bound = bound_token(&env, &key);
    let p = key.proof("POST", HTU, env.now_secs(), Some(&bound));
    let r = env.send(post(&env, "DPoP", &bound, &[&p], None, &initialize_body()));
    assert_eq!(r.status, 401, "{}", r.text());
    // With DPoP off everywhere, nothing advertises it.
    assert!(
        challenges(&r).iter().all(|c| !c.starts_with("DPoP")),
        "{:?}",
        challenges(&r)
    );
    let prm = env
        .send(HttpRequest::new(
            "GET",
            "/.well-known/oauth-protected-resource/mcp",
        ))
        .json();
    assert_eq!(prm.get("dpop_signing_alg_values_supported"), None);
    // Plain bearer tokens still work there.
    env.session(&env.token("erin"));
}

#[test]
fn optional_mode_advertises_dpop_without_requiring_it() {
    let env = start("");
    let prm = env
        .send(HttpRequest::new(
            "GET",
            "/.well-known/oauth-protected-resource/mcp",
        ))
        .json();
    assert_eq!(prm["dpop_bound_access_tokens_required"], false);
    assert_eq!(
        prm["dpop_signing_alg_values_supported"],
        json!(["ES256", "EdDSA"])
    );
    let r = env.post(None, None, &initialize_body());
    assert_eq!(r.status, 401);
    let ch = challenges(&r);
    assert_eq!(ch.len(), 2, "{ch:?}");
    assert!(ch[0].starts_with("Bearer resource_metadata="), "{ch:?}");
    assert!(
        ch[1].starts_with("DPoP algs=\"ES256 EdDSA\", resource_metadata="),
        "{ch:?}"
    );
}

#[test]
fn the_algorithm_allow_list_is_per_issuer() {
    let env = start("    dpop_algorithms: [ES256]\n");
    let key = DpopKey::ed25519();
    let tok = bound_token(&env, &key);
    let p = key.proof("POST", HTU, env.now_secs(), Some(&tok));
    let r = env.send(post(&env, "DPoP", &tok, &[&p], None, &initialize_body()));
    assert_eq!(r.status, 401);
    assert!(
        challenges(&r)
            .iter()
            .any(|c| c.contains("error=\"invalid_dpop_proof\"") && c.contains("algs=\"ES256\""))
    );
}

#[test]
fn nonces_when_required_missing_expired_and_honoured() {
    let env = start("    dpop_nonce: true\n    dpop_nonce_lifetime: 60s\n");
    let key = DpopKey::es256();
    let tok = bound_token(&env, &key);
    let init = initialize_body();
    // No nonce: 401 use_dpop_nonce with a DPoP-Nonce to retry with; nothing else happens.
    let p = key.proof("POST", HTU, env.now_secs(), Some(&tok));
    let r = env.send(post(&env, "DPoP", &tok, &[&p], None, &init));
    assert_dpop_401(&r, "use_dpop_nonce", "no nonce");
    let nonce = r.header("dpop-nonce").expect("a DPoP-Nonce").to_owned();
    // A nonce the gateway never issued.
    let p = key.proof_with_nonce("POST", HTU, env.now_secs(), Some(&tok), "made-up");
    let r = env.send(post(&env, "DPoP", &tok, &[&p], None, &init));
    assert_dpop_401(&r, "use_dpop_nonce", "foreign nonce");
    // The issued one works.
    let p = key.proof_with_nonce("POST", HTU, env.now_secs(), Some(&tok), &nonce);
    let r = env.send(post(&env, "DPoP", &tok, &[&p], None, &init));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("dpop-nonce"),
        None,
        "a young nonce is not replaced"
    );
    let sid = r.header("mcp-session-id").unwrap().to_owned();
    // Past half its lifetime, a 2xx hands out the next one (RFC 9449 §8.2).
    env.advance(Duration::from_secs(40));
    let p = key.proof_with_nonce("POST", HTU, env.now_secs(), Some(&tok), &nonce);
    let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
    let r = env.send(post(&env, "DPoP", &tok, &[&p], Some(&sid), &note));
    assert_eq!(r.status, 202, "{}", r.text());
    let next = r.header("dpop-nonce").expect("a fresh nonce").to_owned();
    assert_ne!(next, nonce);
    // Expired: refused with a new nonce; the call is on record and was not forwarded.
    env.advance(Duration::from_secs(30));
    env.take_audit();
    let p = key.proof_with_nonce("POST", HTU, env.now_secs(), Some(&tok), &nonce);
    let r = env.send(post(&env, "DPoP", &tok, &[&p], Some(&sid), &call_body(5)));
    assert_dpop_401(&r, "use_dpop_nonce", "expired nonce");
    assert!(r.header("dpop-nonce").is_some());
    let rec = refused_record(&env, "expired nonce");
    assert_eq!(
        rec.reason.as_deref(),
        Some("DPoP proof without a current server nonce (dpop_nonce)")
    );
    assert!(env.upstreams[0].tool_calls().is_empty());
    // The newer nonce still works.
    let p = key.proof_with_nonce("POST", HTU, env.now_secs(), Some(&tok), &next);
    let r = env.send(post(&env, "DPoP", &tok, &[&p], Some(&sid), &call_body(6)));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.upstreams[0].tool_calls().len(), 1);
}

#[test]
fn htu_may_name_the_public_url_or_the_admitted_host_the_request_came_by() {
    let env = Env::start_edited(
        1,
        UpstreamOptions::default(),
        "  allowed_hosts: [\"127.0.0.1\", \"gw.internal:8080\"]\n",
        |y| y,
    );
    let key = DpopKey::es256();
    let tok = bound_token(&env, &key);
    // Normalised: scheme and host case, the default port, query and fragment.
    let p = key.proof(
        "POST",
        "HTTP://127.0.0.1:80/mcp?q=1#f",
        env.now_secs(),
        Some(&tok),
    );
    let r = env.send(post(&env, "DPoP", &tok, &[&p], None, &initialize_body()));
    assert_eq!(r.status, 200, "{}", r.text());
    // Sent by another admitted Host: that URI is the request's too.
    let internal = "http://gw.internal:8080/mcp";
    let p = key.proof("POST", internal, env.now_secs(), Some(&tok));
    let r = env.send(
        post(&env, "DPoP", &tok, &[&p], None, &initialize_body())
            .header("host", "gw.internal:8080"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // But not when the request came by the public Host.
    let p = key.proof("POST", internal, env.now_secs(), Some(&tok));
    let r = env.send(post(&env, "DPoP", &tok, &[&p], None, &initialize_body()));
    assert_dpop_401(&r, "invalid_dpop_proof", "htu of another host");
}
