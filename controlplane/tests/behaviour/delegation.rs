//! Per-call delegation and the shard's delegation cache, with the real engine minting from
//! an in-memory STS on the fake clock (moved from `tests/delegation.rs`, which keeps the
//! end-to-end happy path against the STS JWKS on the admin port).

use std::rc::Rc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use controlplane::testing::Harness;
use dataplane::audit::Outcome;
use serde_json::{Value, json};
use testkit::{MemIssuer, MemUpstream, UpstreamOptions};

use crate::env::{AUD, Env, ISSUER, config_yaml};

const UP_AUD: &str = "https://up0.example/";

fn start() -> Env {
    let issuer = Rc::new(MemIssuer::new(ISSUER));
    let up = Rc::new(MemUpstream::new(UpstreamOptions {
        tools: 1,
        ..Default::default()
    }));
    let yaml = format!(
        "{}delegation:\n  client_id: warden-gw\n  issuer: http://sts.warden.test\n",
        config_yaml(&[ISSUER], &[], "")
    )
    .replace(
        "upstreams:\n  []\n",
        &format!(
            "upstreams:\n  - name: up0\n    url: http://up0.test/mcp\n    timeout: 2s\n    token_exchange:\n      type: delegation\n      idp: warden\n      audience: {UP_AUD}\n      tools:\n        - name: echo\n          ttl: 5s\n          scopes:\n            - name: up:echo\n        - name: whoami\n          ttl: 5s\n          scopes: [up:whoami, up:read]\n        - name: tool_0\n          ttl: 2s\n          scopes: [up:t0]\n"
        ),
    );
    let h = Harness::builder(&yaml)
        .issuer(&issuer)
        .upstream("up0", up.clone())
        .build()
        .expect("harness");
    Env {
        h,
        issuer,
        upstreams: vec![up],
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

#[test]
fn the_minted_token_verifies_and_sessions_use_the_service_token() {
    let env = start();
    let alice = env.token("alice");
    let sid = env.session(&alice);
    let v = env.call(&alice, &sid, json!(1), "up0_echo", json!({"a": 1}));
    assert_eq!(v["result"]["structuredContent"]["a"], 1, "{v}");
    let tok = bearer_of(&env.upstreams[0].tool_calls()[0]);
    assert_ne!(tok, alice, "never the user's token");
    let c = part(&tok, 1);
    assert_eq!(
        (c["sub"].as_str(), c["aud"].as_str(), c["scope"].as_str()),
        (Some("alice"), Some(UP_AUD), Some("up:echo"))
    );
    assert_eq!(c["act"], json!({"sub": "warden-gw"}));
    // It verifies against the STS's published keys, at the shard's time.
    let jwks = env.sts_jwks().unwrap().to_string();
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
    let sub = dataplane::auth::jwt::verify(&d, &keys, &policy, env.now_secs())
        .unwrap()
        .sub;
    assert_eq!(sub, "alice");
    // Sessions and discovery used the gateway's own service token: sub = the gateway, no act.
    for init in
        (env.upstreams[0].requests().into_iter()).filter(|r| r.rpc_method() == Some("initialize"))
    {
        let s = part(&bearer_of(&init), 1);
        assert_eq!(s["sub"], "warden-gw");
        assert!(s.get("act").is_none());
        assert_eq!(s["aud"], UP_AUD);
    }
    for r in env.upstreams[0].requests() {
        assert!(!r.headers.iter().any(|(_, v)| v.contains(&alice)));
    }
}

#[test]
fn tokens_are_reused_within_ttl_renewed_after_and_never_shared() {
    let env = start();
    let alice = env.token("alice");
    let bob = env.token("bob");
    let sa = env.session(&alice);
    let sb = env.session(&bob);
    env.call(&alice, &sa, json!(1), "up0_tool_0", json!({}));
    env.call(&alice, &sa, json!(2), "up0_tool_0", json!({}));
    env.call(&bob, &sb, json!(3), "up0_tool_0", json!({}));
    let calls = env.upstreams[0].tool_calls();
    let (t1, t2, t3) = (
        bearer_of(&calls[0]),
        bearer_of(&calls[1]),
        bearer_of(&calls[2]),
    );
    assert_eq!(t1, t2, "a second call within the TTL reuses the token");
    assert_ne!(t1, t3, "two users never share a token");
    assert_eq!(part(&t3, 1)["sub"], "bob");
    // tool_0 has a 2 s TTL: after 1.2 s it is too close to expiry to reuse.
    env.advance(Duration::from_millis(1200));
    env.call(&alice, &sa, json!(4), "up0_tool_0", json!({}));
    let t4 = bearer_of(&env.upstreams[0].tool_calls()[3]);
    assert_ne!(t1, t4, "a fresh token after the reuse window");
    let (c1, c4) = (part(&t1, 1), part(&t4, 1));
    assert_ne!(c1["jti"], c4["jti"]);
    let now = env.now_secs();
    for rec in env.upstreams[0].tool_calls() {
        let c = part(&bearer_of(&rec), 1);
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 2);
        assert!(
            c["exp"].as_i64().unwrap() >= now - 2,
            "never an expired token"
        );
    }
    // Another tool gets its own token with only its scopes.
    env.call(&alice, &sa, json!(5), "up0_whoami", json!({}));
    let t5 = bearer_of(env.upstreams[0].tool_calls().last().unwrap());
    assert_eq!(part(&t5, 1)["scope"], "up:whoami up:read");
}

#[test]
fn act_chains_nest_and_undelegated_tools_fail_closed() {
    let env = start();
    let mut claims = env.issuer.claims("carol", AUD, "mcp:tools");
    claims["act"] = json!({"sub": "agent-7"});
    let carol = env.issuer.mint(&claims);
    let sid = env.session(&carol);
    env.call(&carol, &sid, json!(1), "up0_echo", json!({}));
    let c = part(&bearer_of(&env.upstreams[0].tool_calls()[0]), 1);
    assert_eq!(
        c["act"],
        json!({"sub": "warden-gw", "act": {"sub": "agent-7"}})
    );
    // `slow` has no delegation settings: refused before anything is sent.
    let v = env.call(&carol, &sid, json!("s"), "up0_slow", json!({"ms": 1}));
    assert_eq!(v["id"], "s");
    assert_eq!(v["error"]["code"], -32004, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("not sent"));
    assert_eq!(env.upstreams[0].tool_calls().len(), 1);
    // On record as the operator's doing: the tool has no delegation settings.
    assert_eq!(refusal_blame(&env), [Some("operator")]);
}

/// The `blame` of each record of a failed exchange.
fn refusal_blame(env: &Env) -> Vec<Option<&'static str>> {
    env.h
        .take_audit()
        .iter()
        .filter(|r| r.decision == Outcome::ExchangeFailed)
        .map(|r| r.blame)
        .collect()
}

#[test]
fn an_unavailable_token_service_fails_the_call_closed() {
    let issuer = Rc::new(MemIssuer::new(ISSUER));
    let up = Rc::new(MemUpstream::default());
    let yaml = config_yaml(&[ISSUER], &[], "").replace(
        "upstreams:\n  []\n",
        &format!(
            "upstreams:\n  - name: up0\n    url: http://up0.test/mcp\n    token_exchange:\n      type: delegation\n      idp: x\n      audience: {UP_AUD}\n      tools:\n        - name: echo\n          ttl: 5s\n          scopes: [up:echo]\n"
        ),
    ) + "delegation:\n  client_id: warden-gw\n  issuer: http://sts.warden.test\n";
    let h = Harness::builder(&yaml)
        .issuer(&issuer)
        .upstream("up0", up.clone())
        .delegation(|_| Err(dataplane::control::DelegationError::Unavailable))
        .build()
        .expect("harness");
    let env = Env {
        h,
        issuer,
        upstreams: vec![up],
    };
    let tok = env.token("alice");
    let sid = env.session(&tok);
    let v = env.call(&tok, &sid, json!(7), "up0_echo", json!({}));
    assert_eq!(v["id"], 7);
    assert!(v["error"].is_object(), "{v}");
    assert!(env.upstreams[0].tool_calls().is_empty(), "nothing was sent");
    assert_eq!(refusal_blame(&env), [Some("token_service")]);
}
