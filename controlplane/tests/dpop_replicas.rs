//! DPoP across replicas: two `warden` processes on one PostgreSQL database refuse a proof
//! already used at the other (the store's `INSERT … ON CONFLICT` decides), and accept each
//! other's nonces (sealed by the key ring they share through the store).
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(
    clippy::disallowed_methods,
    reason = "proofs carry the real now (the replicas run on the real clock)"
)]

mod common;

use std::path::Path;

use common::process::{WardenProc, free_port};
use serde_json::{Value, json};
use testkit::{DpopKey, TestIssuer, TestUpstream};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// One config for every replica but its audit directory.
fn replica_yaml(base: &str, dir: &Path, i: usize) -> String {
    let line = base
        .lines()
        .find(|l| l.trim_start().starts_with("dir: "))
        .unwrap();
    base.replace(
        line,
        &format!("  dir: {}", dir.join(format!("audit-{i}")).display()),
    )
}

/// POST `body` with `Authorization: DPoP` and `proof`; status, body, `DPoP-Nonce`, challenges.
async fn post(
    url: &str,
    token: &str,
    proof: &str,
    sid: Option<&str>,
    body: &Value,
) -> (u16, String, Option<String>, Vec<String>) {
    let mut r = reqwest::Client::new()
        .post(url)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", proof)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    if let Some(s) = sid {
        r = r
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", "2025-06-18");
    }
    let r = r.send().await.unwrap();
    let h = r.headers();
    let nonce = h.get("dpop-nonce").map(|v| v.to_str().unwrap().to_owned());
    let ch = h
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let sid = h
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, sid.unwrap_or(text), nonce, ch)
}

fn init() -> Value {
    json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})
}

fn echo(id: i64) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"up0_echo","arguments":{"id":id}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_used_at_one_replica_is_refused_at_the_other_and_nonces_travel() {
    let pg = tokio::task::spawn_blocking(testkit::postgres::Postgres::start)
        .await
        .unwrap();
    let db = pg.create_database("warden");
    let issuer = TestIssuer::start().await;
    let up = TestUpstream::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "{}state:\n  url: {db}\n",
        common::config_yaml(&issuer.issuer(), &[("up0".into(), up.url())], "").replace(
            "    jwks_min_refetch_interval: 2s\n",
            "    jwks_min_refetch_interval: 2s\n    dpop_nonce: true\n",
        )
    );
    let mut replicas = Vec::new();
    for i in 0..2 {
        let d = dir.path().join(format!("r{i}"));
        std::fs::create_dir_all(&d).unwrap();
        let y = replica_yaml(&base, dir.path(), i);
        replicas.push(WardenProc::start(&d, &y, free_port(), free_port()).await);
    }
    let (a, b) = (replicas[0].url(), replicas[1].url());
    let key = DpopKey::es256();
    let mut c = issuer.claims("alice", common::AUD, "mcp:tools");
    c["cnf"] = json!({"jkt": key.thumbprint()});
    let tok = issuer.mint(&c);
    let htu = common::AUD;

    // Replica A asks for a nonce; replica B accepts it (one key ring, from the store).
    let (s, _, nonce, ch) = post(
        &a,
        &tok,
        &key.proof("POST", htu, now(), Some(&tok)),
        None,
        &init(),
    )
    .await;
    assert_eq!(s, 401);
    assert!(
        ch.iter()
            .any(|c| c.starts_with("DPoP error=\"use_dpop_nonce\"")),
        "{ch:?}"
    );
    let nonce = nonce.expect("a DPoP-Nonce from replica A");
    let proof = |n: &str| key.proof_with_nonce("POST", htu, now(), Some(&tok), n);
    let (s, sid, _, _) = post(&b, &tok, &proof(&nonce), None, &init()).await;
    assert_eq!(s, 200, "{sid}");
    let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
    assert_eq!(
        post(&a, &tok, &proof(&nonce), Some(&sid), &note).await.0,
        202
    );

    // A proof used at A, replayed at B (whose own process never saw it): refused there.
    let p = proof(&nonce);
    let (s, body, _, _) = post(&a, &tok, &p, Some(&sid), &echo(1)).await;
    assert_eq!(s, 200, "{body}");
    let (s, body, _, ch) = post(&b, &tok, &p, Some(&sid), &echo(2)).await;
    assert_eq!(s, 401, "{body}");
    assert!(
        ch.iter()
            .any(|c| c.starts_with("DPoP error=\"invalid_dpop_proof\"")),
        "{ch:?}"
    );
    // And the other way round.
    let p = proof(&nonce);
    assert_eq!(post(&b, &tok, &p, Some(&sid), &echo(3)).await.0, 200);
    assert_eq!(post(&a, &tok, &p, Some(&sid), &echo(4)).await.0, 401);
    // Each call ran once: the two replays never reached the upstream.
    let ids: Vec<Value> = up
        .tool_calls()
        .iter()
        .map(|r| r.body["params"]["arguments"]["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(1), json!(3)]);
    drop(replicas);
    drop(pg);
}
