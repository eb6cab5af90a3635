//! Reload without restart, with the real `warden` binary: policy edits, a policy that does not
//! compile, SIGHUP with a new upstream, settings that need a restart, certificate renewal, the
//! delegation block.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(
    clippy::disallowed_methods,
    reason = "measures how soon a real reload is seen"
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::client::{call, rpc, session};
use common::process::{WardenProc, free_port};
use serde_json::{Value, json};
use testkit::{TestIssuer, TestUpstream};

const V1: &str = "@id(\"no-ticks\")\n@reason(\"ticks are off\")\nforbid (principal, action == Action::\"tools/call\", resource == Tool::\"up0_ticks\");\n";
const V2: &str = "@id(\"no-echo\")\n@reason(\"echo is switched off\")\nforbid (principal, action == Action::\"tools/call\", resource == Tool::\"up0_echo\");\n";

fn yaml_with_policy(issuer: &TestIssuer, ups: &[&TestUpstream], dir: &Path) -> String {
    let list: Vec<(String, String)> = ups
        .iter()
        .enumerate()
        .map(|(i, u)| (format!("up{i}"), u.url()))
        .collect();
    let policy = dir.join("tools.cedar");
    common::config_yaml(&issuer.issuer(), &list, "").replace(
        "policy:\n  default: allow\n",
        &format!(
            "policy:\n  default: allow\n  files: [{}]\n",
            policy.display()
        ),
    )
}

fn denied(v: &Value) -> bool {
    v["result"]["isError"] == true
}

async fn admin_config(c: &reqwest::Client, w: &WardenProc) -> Value {
    c.get(w.admin("/admin/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_edits_take_effect_without_restart_and_bad_ones_are_refused() {
    let issuer = TestIssuer::start().await;
    let up = TestUpstream::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tools.cedar"), V1).unwrap();
    let yaml = yaml_with_policy(&issuer, &[&up], dir.path());
    let w = WardenProc::start(dir.path(), &yaml, free_port(), free_port()).await;
    let c = reqwest::Client::new();
    let tok = issuer.mint(&issuer.claims("alice", common::AUD, "mcp:tools"));
    let url = w.url();
    let sid = session(&c, &url, &tok).await;
    assert!(!denied(
        &call(&c, &url, &tok, &sid, "up0_echo", json!({"a": 1})).await
    ));
    assert!(denied(
        &call(&c, &url, &tok, &sid, "up0_ticks", json!({"count": 1})).await
    ));
    let before = admin_config(&c, &w).await;

    // A call in flight across the change finishes on the policy it started with.
    let slow = {
        let (c, url, tok, sid) = (c.clone(), url.clone(), tok.clone(), sid.clone());
        tokio::spawn(
            async move { call(&c, &url, &tok, &sid, "up0_slow", json!({"ms": 1500})).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(dir.path().join("tools.cedar"), V2).unwrap();
    let edited = Instant::now();
    let mut flipped = None;
    while edited.elapsed() < Duration::from_secs(5) {
        let v = call(&c, &url, &tok, &sid, "up0_echo", json!({"a": 2})).await;
        if denied(&v) {
            assert!(v.to_string().contains("echo is switched off"), "{v}");
            flipped = Some(edited.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = flipped.expect("the edited policy took effect");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // The other rule is gone with the old file; the in-flight call succeeded.
    assert!(!denied(
        &call(&c, &url, &tok, &sid, "up0_ticks", json!({"count": 1})).await
    ));
    let v = slow.await.unwrap();
    assert!(v["result"].is_object() && !denied(&v), "{v}");
    let after = admin_config(&c, &w).await;
    assert_eq!(
        after["config_generation"].as_u64(),
        Some(before["config_generation"].as_u64().unwrap() + 1),
        "{after}"
    );
    assert!(after["last_error"].is_null());

    // A policy that does not compile: refused, the running one stays, the error is shown.
    std::fs::write(
        dir.path().join("tools.cedar"),
        "forbid (principal, action, resource) when { nonsense };",
    )
    .unwrap();
    let t0 = Instant::now();
    let err = loop {
        let st = admin_config(&c, &w).await;
        if let Some(e) = st["last_error"].as_str() {
            break e.to_owned();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no error reported: {st}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(err.contains("tools.cedar"), "names the file: {err}");
    assert!(
        denied(&call(&c, &url, &tok, &sid, "up0_echo", json!({})).await),
        "V2 still in force"
    );
    assert!(!denied(
        &call(&c, &url, &tok, &sid, "up0_ticks", json!({"count": 1})).await
    ));
    let metrics = c
        .get(w.admin("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("warden_config_reload_total{result=\"invalid\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("warden_config_reload_total{result=\"ok\"} 1"));
    // The session survived everything.
    let (s, _, _) = rpc(
        &c,
        &url,
        &tok,
        Some(&sid),
        json!({"jsonrpc":"2.0","id":5,"method":"tools/list"}),
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_an_upstream_and_restart_only_changes_are_refused() {
    let issuer = TestIssuer::start().await;
    let up0 = TestUpstream::start(Default::default()).await;
    let up1 = TestUpstream::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tools.cedar"), V1).unwrap();
    let yaml = yaml_with_policy(&issuer, &[&up0], dir.path());
    let w = WardenProc::start(dir.path(), &yaml, free_port(), free_port()).await;
    let c = reqwest::Client::new();
    let tok = issuer.mint(&issuer.claims("alice", common::AUD, "mcp:tools"));
    let url = w.url();
    let sid = session(&c, &url, &tok).await;
    let names = |v: &Value| -> Vec<String> {
        v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, v, _) = rpc(
        &c,
        &url,
        &tok,
        Some(&sid),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}),
    )
    .await;
    assert!(!names(&v).iter().any(|n| n.starts_with("up1_")));

    // Add an upstream; the watcher may pick the write up too, SIGHUP makes it explicit.
    let two = yaml_with_policy(&issuer, &[&up0, &up1], dir.path());
    let two = common::process::with_ports(&two, w.port, w.admin_port);
    // Keep the same audit directory (the audit block needs a restart to change).
    let audit_line = |y: &str| {
        y.lines()
            .find(|l| l.trim_start().starts_with("dir: "))
            .unwrap()
            .to_owned()
    };
    let running = std::fs::read_to_string(&w.config).unwrap();
    let two = two.replace(&audit_line(&two), &audit_line(&running));
    std::fs::write(&w.config, &two).unwrap();
    w.signal("HUP");
    let t0 = Instant::now();
    loop {
        let (_, v, _) = rpc(
            &c,
            &url,
            &tok,
            Some(&sid),
            json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}),
        )
        .await;
        if names(&v).iter().any(|n| n == "up1_echo") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "up1 never appeared: {v}\n{}",
            w.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = call(&c, &url, &tok, &sid, "up1_echo", json!({"via": "new"})).await;
    assert_eq!(v["result"]["structuredContent"]["via"], "new", "{v}");
    assert_eq!(up1.tool_calls().len(), 1);
    // The old upstream kept its state: still served on the same session.
    assert!(!denied(
        &call(&c, &url, &tok, &sid, "up0_echo", json!({})).await
    ));

    // A change only a restart can apply: refused with that message, nothing else changes.
    let shards = two.replace("shards: 2", "shards: 1");
    std::fs::write(&w.config, &shards).unwrap();
    let r = c.post(w.admin("/admin/reload")).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("restart needed to change gateway.shards"),
        "{body}"
    );
    let st = admin_config(&c, &w).await;
    assert!(
        st["last_error"]
            .as_str()
            .unwrap()
            .contains("gateway.shards"),
        "{st}"
    );
    // Put it back: the next explicit reload succeeds and clears the error.
    std::fs::write(&w.config, &two).unwrap();
    let r = c.post(w.admin("/admin/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(admin_config(&c, &w).await["last_error"].is_null());
}

fn self_signed(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl");
    (cert, key)
}

fn served_cert(r: &reqwest::Response) -> Vec<u8> {
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .expect("TLS info")
        .to_vec()
}

fn der_of(pem: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_file(pem)
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_to_new_connections_and_old_ones_stay() {
    let issuer = TestIssuer::start().await;
    let up = TestUpstream::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "live");
    let (cert_b, key_b) = self_signed(dir.path(), "renewed");
    let first = der_of(&cert);
    std::fs::write(dir.path().join("tools.cedar"), V1).unwrap();
    let yaml = yaml_with_policy(&issuer, &[&up], dir.path()).replace(
        "  shards: 2\n",
        &format!(
            "  shards: 2\n  tls:\n    cert: {}\n    key: {}\n",
            cert.display(),
            key.display()
        ),
    );
    let port = free_port();
    let w = WardenProc::start(dir.path(), &yaml, port, free_port()).await;
    let tls_client = || {
        reqwest::Client::builder()
            .tls_info(true)
            .danger_accept_invalid_certs(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    };
    let url = format!("https://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp");
    let old = tls_client();
    let r = old.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(served_cert(&r), first);
    let _ = r.bytes().await;

    // Renew: the files are replaced (as cert-manager or a Secret update would), then reload.
    std::fs::copy(&cert_b, &cert).unwrap();
    std::fs::copy(&key_b, &key).unwrap();
    let c = reqwest::Client::new();
    let r = c.post(w.admin("/admin/reload")).send().await.unwrap();
    // The watcher may have reloaded first; then this reload finds nothing wrong either.
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = tls_client().get(&url).send().await.unwrap();
    assert_eq!(
        served_cert(&r),
        der_of(&cert_b),
        "new connections get the renewed certificate"
    );
    // The connection opened before the renewal was not dropped: it still serves requests.
    let r = old.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        served_cert(&r),
        first,
        "the pooled connection is the old one, still open"
    );

    // A key that does not match its certificate is refused; the renewed pair stays.
    let (_, other_key) = self_signed(dir.path(), "other");
    std::fs::copy(&other_key, &key).unwrap();
    let r = c.post(w.admin("/admin/reload")).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let r = tls_client().get(&url).send().await.unwrap();
    assert_eq!(served_cert(&r), der_of(&cert_b));
}

/// `y` with the running process's ports and audit directory (which need a restart to change).
fn as_running(w: &WardenProc, y: &str) -> String {
    let y = common::process::with_ports(y, w.port, w.admin_port);
    let running = std::fs::read_to_string(&w.config).unwrap();
    let line = |t: &str| {
        t.lines()
            .find(|l| l.trim_start().starts_with("dir: "))
            .unwrap()
            .to_owned()
    };
    y.replace(&line(&y), &line(&running))
}

/// The `act.sub` of the delegation token the upstream received with its last `tools/call`.
fn last_actor(up: &TestUpstream) -> Value {
    use base64::Engine as _;
    let calls = up.tool_calls();
    let auth = calls
        .last()
        .unwrap()
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone())
        .unwrap();
    let payload = auth
        .trim_start_matches("Bearer ")
        .split('.')
        .nth(1)
        .unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["act"]["sub"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delegation_block_reloads_and_what_the_sts_owns_needs_a_restart() {
    let issuer = TestIssuer::start().await;
    let up = TestUpstream::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let with = |client: &str, sts: &str| {
        common::config_yaml(&issuer.issuer(), &[("up0".into(), up.url())], "")
            .replace(
                "    timeout: 2s\n",
                "    timeout: 2s\n    token_exchange:\n      type: delegation\n      audience: http://up0.test\n      tools:\n        - name: echo\n          ttl: 30s\n          scopes: [up:echo]\n",
            )
            + &format!("delegation:\n  client_id: {client}\n  issuer: {sts}\n")
    };
    let w = WardenProc::start(
        dir.path(),
        &with("warden-gw", "http://sts.warden.test"),
        free_port(),
        free_port(),
    )
    .await;
    let c = reqwest::Client::new();
    let tok = issuer.mint(&issuer.claims("alice", common::AUD, "mcp:tools"));
    let sid = session(&c, &w.url(), &tok).await;
    let v = call(&c, &w.url(), &tok, &sid, "up0_echo", json!({"n": 1})).await;
    assert_eq!(v["result"]["structuredContent"]["n"], 1, "{v}");
    assert_eq!(last_actor(&up), "warden-gw");

    // A new client id: the next call's token names it, although the old token (30 s) would
    // still be cached — the upstream was keyed anew with the delegation block.
    let edit = |y: String| as_running(&w, &y);
    std::fs::write(
        &w.config,
        edit(with("warden-gw-2", "http://sts.warden.test")),
    )
    .unwrap();
    let r = c.post(w.admin("/admin/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let t0 = Instant::now();
    loop {
        let v = call(&c, &w.url(), &tok, &sid, "up0_echo", json!({"n": 2})).await;
        assert_eq!(v["result"]["structuredContent"]["n"], 2, "{v}");
        if last_actor(&up) == "warden-gw-2" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "the reloaded client id is not used"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(admin_config(&c, &w).await["last_error"], Value::Null);

    // The STS's issuer is fixed at start: refused with a restart message, nothing changes.
    std::fs::write(
        &w.config,
        edit(with("warden-gw-3", "http://other-sts.warden.test")),
    )
    .unwrap();
    let r = c.post(w.admin("/admin/reload")).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("restart") && body.contains("delegation.issuer"),
        "{body}"
    );
    let v = call(&c, &w.url(), &tok, &sid, "up0_echo", json!({"n": 3})).await;
    assert_eq!(v["result"]["structuredContent"]["n"], 3, "{v}");
    assert_eq!(last_actor(&up), "warden-gw-2");
}

async fn init_status(c: &reqwest::Client, w: &WardenProc, tok: &str) -> (u16, Option<String>) {
    let (s, _, sid) = rpc(
        c,
        &w.url(),
        tok,
        None,
        json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}),
    )
    .await;
    (s, sid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuers_and_rate_limits_reload() {
    let (a, b) = (TestIssuer::start().await, TestIssuer::start().await);
    let up = TestUpstream::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let one = common::config_yaml(&a.issuer(), &[("up0".into(), up.url())], "");
    let w = WardenProc::start(dir.path(), &one, free_port(), free_port()).await;
    let c = reqwest::Client::new();
    let alice = a.mint(&a.claims("alice", common::AUD, "mcp:tools"));
    let bob = b.mint(&b.claims("bob", common::AUD, "mcp:tools"));
    assert_eq!(
        init_status(&c, &w, &bob).await.0,
        401,
        "issuer b is not trusted yet"
    );

    // Trust issuer b and limit every user to 3 requests (then 1 per 10 s).
    let two = one.replacen(
        "\nupstreams:\n",
        &format!("\n  - issuer: {}\nupstreams:\n", b.issuer()),
        1,
    ) + "rate_limits:\n  per_user: { per_second: 0.1, burst: 3 }\n";
    std::fs::write(&w.config, as_running(&w, &two)).unwrap();
    let r = c.post(w.admin("/admin/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (s, sid) = init_status(&c, &w, &bob).await;
    assert_eq!(s, 200, "issuer b's keys were fetched before the swap");
    let sid = sid.unwrap();
    let list = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(rpc(&c, &w.url(), &bob, Some(&sid), list.clone()).await.0);
    }
    assert_eq!(
        statuses,
        [200, 200, 429],
        "initialize + 2 lists use bob's burst of 3"
    );
    // Alice has a bucket of her own.
    assert_eq!(init_status(&c, &w, &alice).await.0, 200);

    // Remove issuer b and the limit: b's tokens are refused at once, alice is unlimited.
    std::fs::write(&w.config, as_running(&w, &one)).unwrap();
    let r = c.post(w.admin("/admin/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        rpc(&c, &w.url(), &bob, Some(&sid), list.clone()).await.0,
        401
    );
    let (s, sid) = init_status(&c, &w, &alice).await;
    assert_eq!(s, 200);
    let sid = sid.unwrap();
    for _ in 0..5 {
        assert_eq!(
            rpc(&c, &w.url(), &alice, Some(&sid), list.clone()).await.0,
            200
        );
    }
}
