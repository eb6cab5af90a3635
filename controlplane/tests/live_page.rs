//! The admin port's live page, rendered by headless Chromium: the upstreams and a decision
//! made during the test must appear. Needs Debian's `chromium` (tests/run-all.sh installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::Env;
use serde_json::json;

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
async fn live_page_shows_topology_and_decisions() {
    let browser = chromium().expect(
        "headless Chromium is required for this test (tests/run-all.sh installs Debian's chromium)",
    );
    let env = Env::start(2).await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    env.call(&tok, &sid, json!(1), "up1_echo", json!({})).await;
    env.call(&tok, &sid, json!(2), "up0_missing_tool", json!({}))
        .await;
    // The state behind the page.
    let url = format!("http://{}/live", env.gw.admin_addr);
    let mut state = serde_json::Value::Null;
    for _ in 0..100 {
        state = env
            .client
            .get(format!("{url}/state.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if state["recent"].as_array().is_some_and(|r| r.len() >= 2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(state["recent"].as_array().unwrap().len(), 2, "{state}");

    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&out_dir).unwrap();
    let shot = out_dir.join("live-page.png");
    let profile = tempfile::tempdir().unwrap();
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,800",
        "--virtual-time-budget=3000",
    ];
    let run = |extra: &[String]| {
        let b = browser.clone();
        let mut args: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.extend(extra.iter().cloned());
        args.push(url.clone());
        std::thread::spawn(move || Command::new(b).args(args).output().unwrap())
            .join()
            .unwrap()
    };
    let dom = run(&["--dump-dom".to_string()]);
    let html = String::from_utf8_lossy(&dom.stdout).to_string();
    assert!(html.contains("Warden gateway"), "{html}");
    assert!(
        html.contains("up0") && html.contains("up1"),
        "upstreams rendered: {html}"
    );
    assert!(
        html.contains("up1_echo") && html.contains(">allow<"),
        "the allowed call rendered: {html}"
    );
    assert!(
        html.contains("up0_missing_tool") && html.contains(">deny<"),
        "the denied call rendered: {html}"
    );
    assert!(html.contains("alice"));
    let _ = run(&[format!("--screenshot={}", shot.display())]);
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 1000)
            .unwrap_or(false),
        "screenshot saved at {}",
        shot.display()
    );
    env.gw.shutdown().await;
}
