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
