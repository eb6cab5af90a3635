//! The audit trail through the real gateway: one record per outcome, nothing secret in it,
//! a verifiable chain, and refusal rather than unaudited calls when the sink fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::Env;
use serde_json::{Value, json};

async fn start(extra_audit: &str) -> (Env, std::path::PathBuf) {
    let mut dir = std::path::PathBuf::new();
    let env = Env::start_edited(1, Default::default(), "", |y| {
        let y = y.replacen("  sink: file\n", &format!("  sink: file\n{extra_audit}"), 1);
        dir = common::audit_dir_of(&y);
        y
    })
    .await;
    (env, dir)
}

fn records(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for f in controlplane::audit::chain_files(dir).unwrap_or_default() {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            out.push(serde_json::from_str(line).unwrap());
        }
    }
    out
}

async fn wait_for(dir: &Path, n: usize) -> Vec<Value> {
    for _ in 0..300 {
        let r = records(dir);
        if r.len() >= n {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    records(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_record_per_outcome_and_no_secrets() {
    let (env, dir) = start("").await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    // allow
    env.call(&tok, &sid, json!(1), "up0_echo", json!({"k": "v"}))
        .await;
    // unknown tool → deny
    env.call(&tok, &sid, json!(2), "up0_nope", json!({})).await;
    // upstream error
    env.call(&tok, &sid, json!(3), "up0_slow", json!({"ms": 5000}))
        .await;
    // unauthenticated
    let r = env
        .post(
            Some("not-a-token"),
            Some(&sid),
            &json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"up0_echo"}}),
        )
        .await;
    assert_eq!(r.status(), 401);
    // A token in the query string: 400, and recorded as what it was (not "token missing").
    let r = env
        .client
        .post(format!("{}?access_token={tok}", env.url()))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(
            json!({"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"up0_echo"}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // rejected input
    let r = env
        .post(
            Some(&tok),
            Some(&sid),
            &json!({"jsonrpc":"1.0","id":5,"method":"tools/call"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    // Not upstream-bound: no record.
    env.post(
        Some(&tok),
        Some(&sid),
        &json!({"jsonrpc":"2.0","id":6,"method":"ping"}),
    )
    .await;
    env.post(
        Some(&tok),
        Some(&sid),
        &json!({"jsonrpc":"2.0","id":7,"method":"tools/list"}),
    )
    .await;

    let recs = wait_for(&dir, 6).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let recs = if recs.len() == 6 { records(&dir) } else { recs };
    let decisions: Vec<&str> = recs
        .iter()
        .map(|r| r["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions.len(), 6, "{recs:#?}");
    for (d, n) in [
        ("allow", 1),
        ("deny", 1),
        ("upstream_error", 1),
        ("unauthenticated", 2),
        ("rejected", 1),
    ] {
        assert_eq!(
            decisions.iter().filter(|x| **x == d).count(),
            n,
            "{n} {d} record(s): {decisions:?}"
        );
    }
    // Each refusal's record says why and who caused it; a served call blames no one.
    fn reason_blame(r: &Value) -> (&str, Option<&str>) {
        (r["reason"].as_str().unwrap_or(""), r["blame"].as_str())
    }
    let mut refused: Vec<(&str, Option<&str>)> = recs
        .iter()
        .filter(|r| r["decision"] != "allow")
        .map(reason_blame)
        .collect();
    refused.sort();
    assert_eq!(
        refused,
        [
            ("bearer token invalid (malformed)", Some("agent")),
            ("not a valid JSON-RPC message", Some("agent")),
            ("tokens in the query string are not accepted", Some("agent")),
            ("unknown or hidden tool", Some("agent")),
            ("upstream timed out", Some("upstream")),
        ]
        .to_vec(),
        "{recs:#?}"
    );
    assert!(
        recs.iter()
            .any(|r| r["decision"] == "allow" && r.get("blame").is_none())
    );
    let allow = recs.iter().find(|r| r["decision"] == "allow").unwrap();
    assert_eq!(allow["sub"], "alice");
    assert_eq!(allow["tool"], "up0_echo");
    assert_eq!(allow["upstream_tool"], "echo");
    assert_eq!(allow["upstream"], "up0");
    assert_eq!(allow["upstream_status"], 200);
    assert_eq!(allow["session"].as_str().unwrap().len(), 32);
    assert!(allow["jti_hash"].as_str().is_some());
    // Nothing secret: no token, no raw session id.
    let all = std::fs::read_to_string(&controlplane::audit::chain_files(&dir).unwrap()[0]).unwrap();
    assert!(!all.contains(&tok));
    assert!(!all.contains(tok.split('.').nth(1).unwrap()));
    assert!(!all.contains(&sid));
    env.gw.shutdown().await;
    assert!(matches!(
        controlplane::audit::verify(&dir).unwrap(),
        controlplane::audit::Verified::Ok { records: 6, .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_refuses_calls_and_recovers() {
    let (env, dir) = start("  max_file_bytes: 1\n").await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    let v = env.call(&tok, &sid, json!(1), "up0_echo", json!({})).await;
    assert!(v["result"].is_object());
    wait_for(&dir, 1).await;

    // The directory disappears and a file takes its place: every rotation now fails.
    let moved = dir.with_extension("moved");
    std::fs::rename(&dir, &moved).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    // This call was accepted with a reserved slot; its record waits in the writer.
    let v = env.call(&tok, &sid, json!(2), "up0_echo", json!({})).await;
    assert!(v["result"].is_object(), "{v}");
    // Once the writer has failed, calls are refused with a clear error, and counted.
    let mut refused = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let v = env.call(&tok, &sid, json!(3), "up0_echo", json!({})).await;
        if v.get("error").is_some() {
            refused = Some(v);
            break;
        }
    }
    let refused = refused.expect("calls are refused while the sink fails");
    assert_eq!(refused["error"]["code"], -32003);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("audit")
    );
    let calls_before = env.upstreams[0].tool_calls().len();
    let m = env
        .client
        .get(format!("http://{}/metrics", env.gw.admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.lines()
            .any(|l| l.starts_with("warden_audit_refusals_total") && !l.ends_with(" 0")),
        "{m}"
    );

    // Recovery: the directory comes back; calls proceed and the chain is whole.
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&moved, &dir).unwrap();
    let mut ok = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let v = env.call(&tok, &sid, json!(4), "up0_echo", json!({})).await;
        if v["result"].is_object() {
            ok = true;
            break;
        }
    }
    assert!(ok, "calls proceed after recovery");
    assert_eq!(
        env.upstreams[0].tool_calls().len(),
        calls_before + 1,
        "refused calls never reached the upstream"
    );
    env.gw.shutdown().await;
    let recs = records(&dir);
    let allows = recs.iter().filter(|r| r["decision"] == "allow").count();
    assert_eq!(
        allows,
        env.upstreams[0].tool_calls().len(),
        "one record per forwarded call"
    );
    assert!(matches!(
        controlplane::audit::verify(&dir).unwrap(),
        controlplane::audit::Verified::Ok { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_reaches_the_upstream_and_the_record() {
    let (env, dir) = start("").await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = env
        .client
        .post(env.url())
        .bearer_auth(&tok)
        .header("content-type", "application/json")
        .header("mcp-session-id", &sid)
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .body(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"up0_echo","arguments":{}}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let call = env.upstreams[0].tool_calls().pop().unwrap();
    let tp = call
        .header("traceparent")
        .expect("traceparent sent upstream")
        .to_owned();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[1], trace, "same trace");
    assert_ne!(parts[2], "00f067aa0ba902b7", "a new span");
    // Without one, a trace is started.
    env.call(&tok, &sid, json!(2), "up0_echo", json!({})).await;
    let tp2 = env.upstreams[0]
        .tool_calls()
        .pop()
        .unwrap()
        .header("traceparent")
        .unwrap()
        .to_owned();
    assert!(tp2.starts_with("00-") && !tp2.contains(trace));
    let recs = wait_for(&dir, 2).await;
    assert_eq!(recs[0]["trace_id"], trace);
    assert_eq!(
        recs[0]["request_id"],
        request_id.as_str(),
        "the response's x-request-id names its record"
    );
    assert_eq!(
        recs[1]["trace_id"].as_str().unwrap(),
        tp2.split('-').nth(1).unwrap()
    );
    env.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_when_configured() {
    use std::sync::Arc;
    // A collector that keeps what it receives.
    let got: Arc<tokio::sync::Mutex<Vec<Value>>> = Arc::default();
    let g2 = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let g = g2.clone();
            async move {
                g.lock().await.push(v);
                "{}"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}/v1/traces", l.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    let issuer = testkit::TestIssuer::start().await;
    let up = testkit::TestUpstream::start(Default::default()).await;
    let yaml = format!(
        "telemetry:\n  otlp_endpoint: {collector}\n  service_name: warden-test\n{}",
        common::config_yaml(&issuer.issuer(), &[("up0".into(), up.url())], "")
    );
    let gw = controlplane::start(
        controlplane::Config::parse(&yaml, "otlp.yaml").unwrap(),
        None,
    )
    .await
    .unwrap();
    let env = Env {
        issuer,
        upstreams: vec![up],
        gw,
        client: reqwest::Client::new(),
    };
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let r = env
        .client
        .post(env.url())
        .bearer_auth(&tok)
        .header("content-type", "application/json")
        .header("mcp-session-id", &sid)
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .body(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"up0_echo","arguments":{}}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let upstream_parent = env.upstreams[0].tool_calls()[0]
        .header("traceparent")
        .unwrap()
        .split('-')
        .nth(2)
        .unwrap()
        .to_owned();
    let mut span = None;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let bodies = got.lock().await.clone();
        span = bodies
            .iter()
            .flat_map(|b| {
                b["resourceSpans"][0]["scopeSpans"][0]["spans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .find(|s| s["traceId"] == trace);
        if span.is_some() {
            let b = &bodies[0];
            assert_eq!(
                b["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
                "warden-test"
            );
            break;
        }
    }
    let span = span.expect("the span reached the collector");
    assert_eq!(
        span["parentSpanId"], "b7ad6b7169203331",
        "the caller's span is the parent"
    );
    assert_eq!(
        span["spanId"],
        upstream_parent.as_str(),
        "the upstream's parent is the exported span"
    );
    assert_eq!(span["name"], "tools/call up0_echo");
    assert_eq!(span["kind"], 2);
    assert!(span.to_string().contains("\"warden.decision\""));
    assert!(!span.to_string().contains(&tok));
    env.gw.shutdown().await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_members_are_refused_and_recorded() {
    // `params.name` twice: last-wins would route and decide on one name while the audit
    // reader refuses the body; it is refused whole, forwarded nowhere, and recorded.
    let (env, dir) = start("").await;
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"up0_slow","name":"up0_echo","arguments":{}}}"#;
    let r = env
        .client
        .post(env.url())
        .bearer_auth(&tok)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-06-18")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32600, "{v}");
    assert!(
        env.upstreams[0].tool_calls().is_empty(),
        "nothing forwarded"
    );
    let recs = wait_for(&dir, 1).await;
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!(recs[0]["decision"], "rejected", "{recs:#?}");
    env.gw.shutdown().await;
    assert!(matches!(
        controlplane::audit::verify(&dir).unwrap(),
        controlplane::audit::Verified::Ok { records: 1, .. }
    ));
}

/// A soak found it: request ids were the shard and a per-shard counter only, so every replica
/// (and every restart) answered the same ids — `x-request-id` could not name one audit record
/// among replicas. Two gateways of one shard each now never share an id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_differ_between_gateways() {
    let mut ids = Vec::new();
    for _ in 0..2 {
        let env = Env::start_edited(1, Default::default(), "", |y| {
            y.replace("  shards: 2\n", "  shards: 1\n")
        })
        .await;
        let tok = env.token("alice");
        let mut mine = std::collections::HashSet::new();
        for _ in 0..3 {
            let r = env
                .client
                .post(env.url())
                .bearer_auth(&tok)
                .header("content-type", "application/json")
                .body("{not json")
                .send()
                .await
                .unwrap();
            mine.insert(r.headers()["x-request-id"].to_str().unwrap().to_owned());
        }
        assert_eq!(mine.len(), 3, "{mine:?}");
        ids.push(mine);
        env.gw.shutdown().await;
    }
    assert!(ids[0].is_disjoint(&ids[1]), "{ids:?}");
}

/// One stateless (2026-07-28) `tools/call` of `up0_echo`; the JSON-RPC answer, or `None` when
/// nothing answered.
async fn modern_call(url: &str, tok: &str) -> Option<Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "up0_echo", "arguments": {"k": 1},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}}});
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth(tok)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "up0_echo")
        .timeout(Duration::from_secs(5))
        .body(body.to_string())
        .send()
        .await
        .ok()?;
    let text = r.text().await.ok()?;
    if text.trim_start().starts_with('{') {
        serde_json::from_str(&text).ok()
    } else {
        Some(common::last_sse_message(&text))
    }
}

/// A soak found it: a file-size limit (RLIMIT_FSIZE, `ulimit -f`) below the audit file's size
/// killed the gateway (SIGXFSZ's default action: exit by signal 25) instead of failing the
/// write. The process must live on and keep answering, and serve calls once it is lifted.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_size_limit_does_not_kill_the_gateway() {
    use common::process::{WardenProc, free_port};
    let issuer = testkit::TestIssuer::start().await;
    let up = testkit::TestUpstream::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = common::config_yaml(&issuer.issuer(), &[("up0".into(), up.url())], "");
    let mut w = WardenProc::start(dir.path(), &yaml, free_port(), free_port()).await;
    let tok = issuer.mint(&issuer.claims("alice", common::AUD, "mcp:tools"));
    let ok = |v: &Option<Value>| {
        v.as_ref()
            .is_some_and(|v| v["result"].is_object() && v["result"]["isError"] != true)
    };
    let first = modern_call(&w.url(), &tok).await;
    assert!(ok(&first), "served before the limit: {first:?}");
    let pid = w.child.id().to_string();
    let prlimit = |limit: &str| {
        let st = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--fsize={limit}")])
            .status()
            .expect("prlimit (util-linux)");
        assert!(st.success(), "prlimit --fsize={limit}");
    };
    prlimit("1:");
    for _ in 0..20 {
        let v = modern_call(&w.url(), &tok).await;
        assert!(
            w.child.try_wait().unwrap().is_none(),
            "the gateway died under a file-size limit: {:?}",
            w.child.try_wait()
        );
        assert!(v.is_some(), "the gateway answers while writes fail");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    prlimit("unlimited:");
    let mut served = false;
    for _ in 0..50 {
        if ok(&modern_call(&w.url(), &tok).await) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "served once the limit is lifted");
    w.kill();
}

/// How the stuck call is made: each is answered by a different path of the pipeline.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// 2026-07-28, stateless: the answer is sent after the pipeline returns it.
    Modern,
    /// A 2025 session, the upstream's JSON answer relayed.
    SessionJson,
    /// A 2025 session, the upstream's SSE answer relayed event by event.
    SessionSse,
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_waits_until_its_record_is_written() {
    answer_waits_for_its_record(Via::Modern).await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_answer_waits_until_its_record_is_written() {
    answer_waits_for_its_record(Via::SessionJson).await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_stream_ends_only_once_its_record_is_written() {
    answer_waits_for_its_record(Via::SessionSse).await;
}

/// An answer leaves only once its record is written. The `stdout` sink writes to a pipe the
/// test does not read: once the pipe is full the writer blocks in `write(2)`, and the next call,
/// executed by the upstream, must not be answered while its record sits unwritten; reading the
/// pipe lets the record through, then the answer, and the record is in what was read.
#[cfg(target_os = "linux")]
async fn answer_waits_for_its_record(via: Via) {
    use common::process::{WardenProc, free_port};
    use std::io::Read;
    let issuer = testkit::TestIssuer::start().await;
    let up = testkit::TestUpstream::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = common::config_yaml(&issuer.issuer(), &[("up0".into(), up.url())], "");
    let audit_dir = common::audit_dir_of(&yaml).display().to_string();
    let yaml = yaml.replacen(
        &format!("  sink: file\n  dir: {audit_dir}\n"),
        "  sink: stdout\n  answer_wait: 60s\n",
        1,
    );
    assert!(yaml.contains("answer_wait: 60s"), "{yaml}");
    let mut w = WardenProc::start_piped(dir.path(), &yaml, free_port(), free_port()).await;
    let mut pipe = w.child.stdout.take().unwrap();
    let tok = issuer.mint(&issuer.claims("alice", common::AUD, "mcp:tools"));
    let url = w.url();
    let sid = match via {
        Via::Modern => None,
        _ => Some(common::client::session(&reqwest::Client::new(), &url, &tok).await),
    };
    // Calls until one is not answered within 2 s: its record is stuck behind the full pipe.
    let mut stuck = None;
    for i in 0..3000 {
        let (u, t, s) = (url.clone(), tok.clone(), sid.clone());
        let mut call =
            tokio::spawn(async move { call_for(&u, &t, s.as_deref(), via, i, 120).await });
        match tokio::time::timeout(Duration::from_secs(2), &mut call).await {
            Ok(answer) => assert!(answer.unwrap().is_some(), "call {i} answered"),
            Err(_) => {
                stuck = Some((i, call));
                break;
            }
        }
    }
    let (i, call) = stuck.expect("with the audit pipe full, an answer waited for its record");
    assert!(i > 10, "the first calls were answered at once ({i})");
    // The upstream ran the call; only the answer waits.
    let id = format!("wait-{i}");
    assert!(
        up.tool_calls()
            .iter()
            .any(|r| r.body["params"]["arguments"]["call_id"] == id.as_str()),
        "the stuck call reached the upstream"
    );
    // Read the pipe: the writer goes on, and the answer follows its record.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let (rid, answer) = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("answered once the pipe was read")
        .unwrap()
        .expect("an answer");
    assert!(answer["result"].is_object(), "{answer}");
    w.signal("TERM");
    let _ = w.child.wait();
    let text = reader.join().unwrap();
    let rec: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["request_id"] == rid.as_str())
        .collect();
    assert_eq!(rec.len(), 1, "the stuck call's one record, {rid}");
    assert_eq!(rec[0]["decision"], "allow");
}

/// One `tools/call` with `call_id` `wait-<i>` and a timeout of `secs`: the request id and the
/// (last) message of the answer, or `None` when nothing answered.
async fn call_for(
    url: &str,
    tok: &str,
    sid: Option<&str>,
    via: Via,
    i: usize,
    secs: u64,
) -> Option<(String, Value)> {
    let args = json!({"call_id": format!("wait-{i}"), "count": 1, "interval_ms": 1});
    let tool = match via {
        Via::SessionSse => "up0_ticks",
        _ => "up0_echo",
    };
    let mut params = json!({"name": tool, "arguments": args});
    let rb = reqwest::Client::new()
        .post(url)
        .bearer_auth(tok)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .timeout(Duration::from_secs(secs));
    let rb = match sid {
        Some(s) => rb
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", "2025-06-18"),
        None => {
            params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}});
            rb.header("mcp-protocol-version", "2026-07-28")
                .header("mcp-method", "tools/call")
                .header("mcp-name", tool)
        }
    };
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params});
    let r = rb.body(body.to_string()).send().await.ok()?;
    let rid = r.headers().get("x-request-id")?.to_str().ok()?.to_owned();
    let sse = r
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    assert_eq!(sse, matches!(via, Via::SessionSse), "the answer's framing");
    let text = r.text().await.ok()?;
    let v = if sse {
        common::last_sse_message(&text)
    } else {
        serde_json::from_str(&text).ok()?
    };
    Some((rid, v))
}
