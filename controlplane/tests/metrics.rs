//! The Prometheus exposition: valid per `promtool check metrics`, and the key series move.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::Env;
use serde_json::json;

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposition_is_valid_and_series_move() {
    let env = Env::start(1).await;
    let scrape = || async {
        env.client
            .get(format!("http://{}/metrics", env.gw.admin_addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    env.call(&tok, &sid, json!(1), "up0_echo", json!({})).await;
    let before = scrape().await;
    env.call(&tok, &sid, json!(2), "up0_echo", json!({})).await;
    env.call(&tok, &sid, json!(3), "up0_nope", json!({})).await;
    let _ = env
        .post(
            Some("bad"),
            Some(&sid),
            &json!({"jsonrpc":"2.0","id":4,"method":"tools/call"}),
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let after = scrape().await;

    for (series, min_delta) in [
        (
            "warden_http_requests_total{method=\"POST\",status=\"200\"}",
            2.0,
        ),
        (
            "warden_tool_calls_total{upstream=\"up0\",tool=\"up0_echo\",decision=\"allow\"}",
            1.0,
        ),
        (
            "warden_tool_calls_total{upstream=\"\",tool=\"\",decision=\"deny\"}",
            1.0,
        ),
        ("warden_auth_failures_total", 1.0),
        // Every refusal by reason and blame: the unknown tool and the bad token.
        (
            "warden_refusals_total{reason=\"unknown_tool\",blame=\"agent\"}",
            1.0,
        ),
        (
            "warden_refusals_total{reason=\"token_invalid\",blame=\"agent\"}",
            1.0,
        ),
        ("warden_token_cache_lookups_total{result=\"hit\"}", 2.0),
        ("warden_upstream_request_duration_seconds_count", 1.0),
        ("warden_audit_records_written_total", 2.0),
    ] {
        let d = value(&after, series) - value(&before, series);
        assert!(
            d >= min_delta,
            "{series} moved by {d}, expected ≥ {min_delta}\n{after}"
        );
    }
    for present in [
        "warden_jwks_keys",
        "warden_jwks_fetches_total",
        "warden_connections_open",
        "warden_snapshot_generation",
        "warden_audit_queue_depth",
    ] {
        assert!(after.contains(present), "{present} missing");
    }
    // Labels never carry a user, session or token.
    assert!(!after.contains("alice") && !after.contains(&sid) && !after.contains(&tok));

    let promtool = Command::new("promtool").arg("--version").output();
    assert!(
        promtool.is_ok(),
        "promtool is required (Debian's prometheus package; tests/run-all.sh installs it)"
    );
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(after.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{report}"
    );
    env.gw.shutdown().await;
}
