//! Several `warden` processes with one session key ring behind Debian's nginx (round-robin):
//! any replica serves any session, a restarted replica keeps serving the sessions it issued,
//! the audit trail of each replica is complete and verifies.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(
    clippy::disallowed_methods,
    reason = "measures real elapsed time across replica processes"
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::balancer::Nginx;
use common::client::{call, rpc, session};
use common::process::{WardenProc, free_port};
use serde_json::{Value, json};
use testkit::{TestIssuer, TestUpstream};

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

/// Records of allowed `up0_echo` calls in a replica's audit trail, once its chain verifies.
fn allowed_echo_records(dir: &Path) -> usize {
    use controlplane::audit::{Verified, chain_files, verify};
    match verify(dir) {
        Ok(Verified::Ok { .. }) => {}
        other => panic!("audit chain of {}: {other:?}", dir.display()),
    }
    chain_files(dir)
        .unwrap()
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .filter(|r| r["tool"] == "up0_echo" && r["decision"] == "allow")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_replica_serves_any_session_behind_a_round_robin_balancer() {
    let issuer = TestIssuer::start().await;
    let up = TestUpstream::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = shared_keys(dir.path());
    let base = format!(
        "{}sessions:\n  keys_file: {}\n",
        common::config_yaml(&issuer.issuer(), &[("up0".into(), up.url())], ""),
        keys.display()
    );
    let mut replicas = Vec::new();
    for i in 0..3 {
        let d = dir.path().join(format!("r{i}"));
        std::fs::create_dir_all(&d).unwrap();
        let y = replica_yaml(&base, dir.path(), i);
        replicas.push(WardenProc::start(&d, &y, free_port(), free_port()).await);
    }
    let c = reqwest::Client::new();
    let alice = issuer.mint(&issuer.claims("alice", common::AUD, "mcp:tools"));
    let bob = issuer.mint(&issuer.claims("bob", common::AUD, "mcp:tools"));

    // initialize on replica 0; every following request on the others.
    let sid = session(&c, &replicas[0].url(), &alice).await;
    let mut calls = 0;
    for r in &replicas[1..] {
        let (s, v, _) = rpc(
            &c,
            &r.url(),
            &alice,
            Some(&sid),
            json!({"jsonrpc":"2.0","id":"L","method":"tools/list"}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert!(v["result"]["tools"].as_array().unwrap().len() > 1);
        let v = call(
            &c,
            &r.url(),
            &alice,
            &sid,
            "up0_echo",
            json!({"on": r.port}),
        )
        .await;
        assert_eq!(v["result"]["structuredContent"]["on"], r.port, "{v}");
        calls += 1;
        // Another user's token with this id: the same 404 as an unknown id, on any replica.
        let (s, _, _) = rpc(
            &c,
            &r.url(),
            &bob,
            Some(&sid),
            json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
        )
        .await;
        assert_eq!(s, 404);
    }

    // Through the balancer: every request goes to the next replica, all succeed.
    let lb = Nginx::start(
        dir.path(),
        &replicas.iter().map(|r| r.port).collect::<Vec<_>>(),
    )
    .await;
    let sid2 = session(&c, &lb.url(), &alice).await;
    for k in 0..12 {
        let v = call(&c, &lb.url(), &alice, &sid2, "up0_echo", json!({"k": k})).await;
        assert_eq!(v["result"]["structuredContent"]["k"], k, "{v}");
        calls += 1;
    }
    // Each call ran exactly once upstream, and every replica served some of them.
    assert_eq!(up.tool_calls().len(), calls);
    let t0 = Instant::now();
    let per_replica = loop {
        let n: Vec<usize> = (0..3)
            .map(|i| allowed_echo_records(&dir.path().join(format!("audit-{i}"))))
            .collect();
        if n.iter().sum::<usize>() == calls || t0.elapsed() > Duration::from_secs(5) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        per_replica.iter().sum::<usize>(),
        calls,
        "one audit record per call: {per_replica:?}"
    );
    assert!(
        per_replica.iter().all(|n| *n > 0),
        "round-robin reached every replica: {per_replica:?}"
    );

    // A replica killed and started again serves the sessions issued before (same key ring).
    let (port, admin, cfg) = (
        replicas[1].port,
        replicas[1].admin_port,
        replicas[1].config.clone(),
    );
    replicas[1].kill();
    let restarted = WardenProc::spawn(cfg, port, admin, &[]).await;
    let v = call(
        &c,
        &restarted.url(),
        &alice,
        &sid,
        "up0_echo",
        json!({"after": "restart"}),
    )
    .await;
    assert_eq!(v["result"]["structuredContent"]["after"], "restart", "{v}");

    // DELETE ends the session on the replica that serves it.
    let r = c
        .delete(replicas[0].url())
        .bearer_auth(&alice)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, _, _) = rpc(
        &c,
        &replicas[0].url(),
        &alice,
        Some(&sid),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}),
    )
    .await;
    assert_eq!(s, 404);
}

/// `tools/list` on `url` with `sid` until it answers `want` (at most 5 s); the last status.
async fn list_status_until(url: &str, token: &str, sid: &str, want: u16) -> u16 {
    let c = reqwest::Client::new();
    let t0 = Instant::now();
    loop {
        let (s, _, _) = rpc(
            &c,
            url,
            token,
            Some(sid),
            json!({"jsonrpc":"2.0","id":"s","method":"tools/list"}),
        )
        .await;
        if s == want || t0.elapsed() > Duration::from_secs(5) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn delete_session(url: &str, token: &str, sid: &str) -> u16 {
    reqwest::Client::new()
        .delete(url)
        .bearer_auth(token)
        .header("mcp-session-id", sid)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn shared_keys(dir: &Path) -> std::path::PathBuf {
    let keys = dir.join("session-keys");
    let k = dataplane::session::SessionKeys::new_key_text().unwrap();
    std::fs::write(&keys, format!("k1:{k}\n")).unwrap();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_replicas_share_the_stored_key_ring_and_a_deleted_session_is_refused_on_all()
{
    let pg = tokio::task::spawn_blocking(testkit::postgres::Postgres::start)
        .await
        .unwrap();
    let db = pg.create_database("warden");
    let issuer = TestIssuer::start().await;
    let up = TestUpstream::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // No key ring configured: the replicas adopt the one stored in the shared database.
    let base = format!(
        "{}state:\n  url: {db}\n",
        common::config_yaml(&issuer.issuer(), &[("up0".into(), up.url())], "")
    );
    let mut replicas = Vec::new();
    for i in 0..3 {
        let d = dir.path().join(format!("r{i}"));
        std::fs::create_dir_all(&d).unwrap();
        let y = replica_yaml(&base, dir.path(), i);
        replicas.push(WardenProc::start(&d, &y, free_port(), free_port()).await);
    }
    let c = reqwest::Client::new();
    let alice = issuer.mint(&issuer.claims("alice", common::AUD, "mcp:tools"));
    let sid = session(&c, &replicas[0].url(), &alice).await;
    // Every replica serves (and so has cached) the session before it ends.
    for r in &replicas {
        assert_eq!(list_status_until(&r.url(), &alice, &sid, 200).await, 200);
    }
    assert_eq!(delete_session(&replicas[1].url(), &alice, &sid).await, 200);
    for r in &replicas {
        assert_eq!(
            list_status_until(&r.url(), &alice, &sid, 404).await,
            404,
            "replica {} still serves a deleted session",
            r.port
        );
    }
    // A new session of the same user is unaffected, and a restarted replica still refuses
    // the deleted id (it reads the set from the database before serving).
    let sid2 = session(&c, &replicas[2].url(), &alice).await;
    let (port, admin, cfg) = (
        replicas[0].port,
        replicas[0].admin_port,
        replicas[0].config.clone(),
    );
    replicas[0].kill();
    let restarted = WardenProc::spawn(cfg, port, admin, &[]).await;
    assert_eq!(
        list_status_until(&restarted.url(), &alice, &sid2, 200).await,
        200
    );
    let (s, _, _) = rpc(
        &c,
        &restarted.url(),
        &alice,
        Some(&sid),
        json!({"jsonrpc":"2.0","id":"r","method":"tools/list"}),
    )
    .await;
    assert_eq!(
        s, 404,
        "a restarted replica must not revive a deleted session"
    );
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_key_ring_configured_sessions_survive_a_restart_and_deleted_ones_stay_ended() {
    // No `sessions` block: the ring is made once and kept in the default SQLite state store.
    let issuer = TestIssuer::start().await;
    let up = TestUpstream::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let y = common::config_yaml(&issuer.issuer(), &[("up0".into(), up.url())], "");
    let mut w = WardenProc::start(dir.path(), &y, free_port(), free_port()).await;
    let c = reqwest::Client::new();
    let alice = issuer.mint(&issuer.claims("alice", common::AUD, "mcp:tools"));
    let (kept, ended) = (
        session(&c, &w.url(), &alice).await,
        session(&c, &w.url(), &alice).await,
    );
    assert_eq!(delete_session(&w.url(), &alice, &ended).await, 200);
    // The record is written by the control plane shortly after the answer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (port, admin, cfg) = (w.port, w.admin_port, w.config.clone());
    w.kill();
    let w = WardenProc::spawn(cfg, port, admin, &[]).await;
    assert!(
        dir.path().join("data/warden.db").exists(),
        "state in --data-dir"
    );
    assert_eq!(list_status_until(&w.url(), &alice, &kept, 200).await, 200);
    let (s, _, _) = rpc(
        &c,
        &w.url(),
        &alice,
        Some(&ended),
        json!({"jsonrpc":"2.0","id":"e","method":"tools/list"}),
    )
    .await;
    assert_eq!(s, 404, "a restart must not revive a deleted session");
}
