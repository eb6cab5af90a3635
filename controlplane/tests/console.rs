//! The operator console through a real gateway: denies and errors counted apart, a record's
//! delegation chain and its re-check on disk, access control (open on loopback; otherwise
//! an admin-scope token from a trusted issuer or the static credential), and the page in
//! Debian's headless Chromium (tests/run-all.sh installs it; tests/console/run.sh drives the
//! full console under load).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{AUD, Env};
use serde_json::{Value, json};
use testkit::{TestIssuer, UpstreamMode, UpstreamOptions};

async fn get(env: &Env, path: &str, auth: Option<&str>) -> (u16, Value) {
    let mut r = env
        .client
        .get(format!("http://{}{path}", env.gw.admin_addr));
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Poll until the console holds `n` decisions.
async fn decisions(env: &Env, n: usize, auth: Option<&str>) -> Vec<Value> {
    for _ in 0..200 {
        let (_, v) = get(env, "/console/decisions.json", auth).await;
        if let Some(d) = v["decisions"].as_array()
            && d.len() >= n
        {
            return d.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the console did not see {n} decisions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denies_and_errors_apart_and_each_record_with_its_chain() {
    let env = Env::start_edited(2, UpstreamOptions::default(), "", |y| {
        y.replace(
            "policy:\n  default: allow\n",
            "policy:\n  default: allow\n  rules:\n    - tools: [up0_whoami]\n      require_scopes: [admin:read]\n",
        )
    })
    .await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    env.upstreams[1].set_mode(UpstreamMode::Refuse);
    env.call(&tok, &sid, json!(1), "up0_echo", json!({})).await;
    for i in 0..2 {
        // Policy denials are denies (policy working), not errors.
        env.call(&tok, &sid, json!(10 + i), "up0_whoami", json!({}))
            .await;
    }
    // An unknown tool is denied too, before routing.
    env.call(&tok, &sid, json!(12), "up0_missing_tool", json!({}))
        .await;
    // up1 answers 503: an error.
    env.call(&tok, &sid, json!(20), "up1_echo", json!({})).await;
    let rows = decisions(&env, 5, None).await;
    let (status, s) = get(&env, "/console/state.json", None).await;
    assert_eq!(status, 200, "loopback: no credential needed");
    assert_eq!(
        s["last_minute"],
        json!({"allow": 1, "deny": 3, "error": 1}),
        "{s}"
    );
    let edge = |to: &str| {
        s["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["to"] == to)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        (
            edge("upstream:up0")["deny"].as_u64(),
            edge("upstream:up0")["error"].as_u64()
        ),
        (Some(2), Some(0)),
        "policy denials on the upstream's edge, no errors"
    );
    assert_eq!(edge("upstream:(not routed)")["deny"], 1);
    assert_eq!(edge("upstream:up1")["error"], 1);
    // The filter by class, and the detail of the allowed call.
    let (_, denied) = get(&env, "/console/decisions.json?decision=deny", None).await;
    assert_eq!(denied["decisions"].as_array().unwrap().len(), 3);
    let allowed = rows.iter().find(|r| r["decision"] == "allow").unwrap();
    let (status, d) = get(&env, &format!("/console/decision/{}", allowed["seq"]), None).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["record"]["sub"], "alice");
    assert_eq!(
        d["record"]["scopes"],
        json!(["mcp:tools"]),
        "format 2: inbound scopes"
    );
    assert!(d["record"]["upstream_ms"].as_f64().unwrap() > 0.0, "{d}");
    assert!(
        d["record"]["trace_id"]
            .as_str()
            .is_some_and(|t| t.len() == 32)
    );
    assert_eq!(d["chain"]["on_disk_ok"], true, "{d}");
    let file = d["chain"]["file"].as_str().unwrap().to_owned();
    // Alter the record on disk: the console's re-check says so.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("\"alice\"", "\"mallet\"", 1)).unwrap();
    let (_, d) = get(
        &env,
        &format!("/console/decision/{}", rows.last().unwrap()["seq"]),
        None,
    )
    .await;
    assert_eq!(d["chain"]["on_disk_ok"], false, "{d}");
    assert!(
        d["chain"]["on_disk_problem"]
            .as_str()
            .unwrap()
            .contains("altered")
    );
    let (status, _) = get(&env, "/console/decision/999999", None).await;
    assert_eq!(status, 404);
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_rules_token_with_admin_scope_or_static_credential() {
    let dir = tempfile::tempdir().unwrap();
    let cred_path = dir.path().join("console-credential");
    let cred = "c0ns0le-credential-0123456789abcdefghij";
    std::fs::write(&cred_path, format!("{cred}\n")).unwrap();
    // `require_auth` applies the non-loopback rule on a loopback test listener.
    let block = format!(
        "admin:\n  listen: 127.0.0.1:0\n  console:\n    require_auth: true\n    credential_file: {}\n",
        cred_path.display()
    );
    let env = Env::start_edited(1, UpstreamOptions::default(), "", |y| {
        y.replace("admin:\n  listen: 127.0.0.1:0\n", &block)
    })
    .await;
    let bearer = |t: &str| format!("Bearer {t}");
    let admin = env
        .issuer
        .mint(&env.issuer.claims("ops", AUD, "mcp:tools warden:admin"));
    let user = env.token("alice");
    let foreign = TestIssuer::start().await;
    let forged = foreign.mint(&foreign.claims("ops", AUD, "warden:admin"));
    for path in [
        "/console/state.json",
        "/console/decisions.json",
        "/live/state.json",
    ] {
        let (s, body) = get(&env, path, None).await;
        assert_eq!(s, 401, "{path} without credentials: {body}");
        assert_eq!(
            get(&env, path, Some(&bearer(cred))).await.0,
            200,
            "{path} static credential"
        );
        assert_eq!(
            get(&env, path, Some(&bearer(&admin))).await.0,
            200,
            "{path} admin token"
        );
        assert_eq!(
            get(&env, path, Some(&bearer(&user))).await.0,
            403,
            "{path} no admin scope"
        );
        assert_eq!(
            get(&env, path, Some(&bearer(&forged))).await.0,
            401,
            "{path} untrusted issuer"
        );
        assert_eq!(
            get(&env, path, Some(&bearer(&format!("{cred}x")))).await.0,
            401
        );
        assert_eq!(get(&env, path, Some(&format!("Basic {cred}"))).await.0, 401);
    }
    let r = env
        .client
        .get(format!("http://{}/console/state.json", env.gw.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"warden-console\""
    );
    // The page shell and the chart library carry no data and load without credentials.
    for path in ["/console", "/live", "/console/uplot.js"] {
        let r = env
            .client
            .get(format!("http://{}{path}", env.gw.admin_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_console_credential_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c");
    std::fs::write(&p, "short").unwrap();
    let issuer = TestIssuer::start().await;
    let yaml = common::config_yaml(&issuer.issuer(), &[], "").replace(
        "admin:\n  listen: 127.0.0.1:0\n",
        &format!(
            "admin:\n  listen: 127.0.0.1:0\n  console:\n    credential_file: {}\n",
            p.display()
        ),
    );
    let cfg = controlplane::Config::parse(&yaml, "t.yaml").unwrap();
    let e = controlplane::start_with(cfg, controlplane::StartOptions::default())
        .await
        .expect_err("refused");
    assert!(e.to_string().contains("shorter than 32"), "{e}");
}

fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find(|b| {
            Command::new("which")
                .arg(b)
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|s| s.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_page_renders_topology_and_decisions_in_chromium() {
    let browser = chromium().expect(
        "headless Chromium is required for this test (tests/run-all.sh installs Debian's chromium)",
    );
    let env = Env::start(2).await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    env.call(&tok, &sid, json!(1), "up1_echo", json!({})).await;
    env.call(&tok, &sid, json!(2), "up0_missing_tool", json!({}))
        .await;
    // A caller-chosen tool name is rendered as text, never as markup.
    env.call(&tok, &sid, json!(3), "<img id=pwn src=x>", json!({}))
        .await;
    decisions(&env, 3, None).await;
    let url = format!("http://{}/console", env.gw.admin_addr);
    let profile = tempfile::tempdir().unwrap();
    let args = [
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--window-size=1200,800".into(),
        "--virtual-time-budget=3000".into(),
        format!("--user-data-dir={}", profile.path().display()),
        "--dump-dom".into(),
        url,
    ];
    let out = std::thread::spawn(move || Command::new(browser).args(args).output().unwrap())
        .join()
        .unwrap();
    let html = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(html.contains("operator console"), "{html}");
    for id in [
        "gateway",
        "client:test-client",
        "upstream:up0",
        "upstream:up1",
        "audit",
    ] {
        assert!(
            html.contains(&format!("data-id=\"{id}\"")),
            "node {id}: {html}"
        );
    }
    assert!(
        html.contains("data-decision=\"allow\"") && html.contains("data-decision=\"deny\""),
        "both decisions listed: {html}"
    );
    assert!(html.contains("up0_missing_tool") && html.contains("alice"));
    assert!(
        html.contains("&lt;img id=pwn src=x&gt;") && !html.contains("<img id=\"pwn\""),
        "untrusted tool name escaped: {html}"
    );
    env.gw.shutdown().await;
}
