//! The listener against real local upstreams: one that offers no change stream (HTTP 404,
//! 405, `-32601`) is asked once and never again; any other failure is retried with a
//! doubling backoff.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;
use dataplane::clock::Clock;

/// What the fake upstream answers a request: `(HTTP method, body)` to the raw response.
type Answer = fn(&str, &str) -> String;

/// A request the fake upstream read: HTTP method, JSON-RPC method, and when.
#[derive(Debug)]
struct Seen {
    method: String,
    rpc: Option<String>,
    at: Duration,
}

/// What the listener asked, in order: HTTP method and JSON-RPC method.
fn asked(seen: &[Seen]) -> Vec<(&str, Option<&str>)> {
    seen.iter()
        .map(|s| (s.method.as_str(), s.rpc.as_deref()))
        .collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An upstream on `127.0.0.1:0` answering every request with `answer` (one request per
/// connection); its URL and what it saw, in order.
async fn upstream(answer: Answer) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", l.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    let clock = Clock::new();
    let t0 = clock.now();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (tx, clock) = (tx.clone(), clock.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = find(&buf, b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let len = (head.lines())
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
                let method = head.split(' ').next().unwrap_or("").to_owned();
                let rpc = (serde_json::from_str::<Value>(&body).ok())
                    .and_then(|v| v["method"].as_str().map(str::to_owned));
                let _ = tx.send(Seen {
                    method: method.clone(),
                    rpc,
                    at: clock.since(t0),
                });
                let _ = s.write_all(answer(&method, &body).as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (url, rx)
}

fn reply(status: u16, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} X\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn rpc_error(code: i64) -> String {
    let body = json!({"jsonrpc": "2.0", "id": "warden-watch",
        "error": {"code": code, "message": "no"}});
    reply(200, "content-type: application/json\r\n", &body.to_string())
}

fn target(url: &str, version: &str) -> Target {
    Target {
        id: 7,
        name: "up".into(),
        url: url.to_owned(),
        http: reqwest::Client::new(),
        auth: Auth::Fixed(None),
        version: version.to_owned(),
    }
}

/// Run a listener against `answer` until it stops by itself (it must, within 5 s: a retry
/// would come only after a backoff, and a listener that stops never comes back); what the
/// upstream saw.
async fn runs_once(version: &str, answer: Answer) -> Vec<Seen> {
    let (url, mut seen) = upstream(answer).await;
    let (tx, mut changed) = mpsc::unbounded_channel();
    let task = tokio::spawn(listen_forever(target(&url, version), tx));
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the listener kept trying an upstream with no change stream")
        .unwrap();
    assert!(changed.try_recv().is_err(), "no rediscovery was asked for");
    let mut all = Vec::new();
    while let Ok(s) = seen.try_recv() {
        all.push(s);
    }
    all
}

const MODERN: &str = "2026-07-28";
const LEGACY: &str = "2025-06-18";

#[tokio::test]
async fn a_modern_upstream_without_a_change_stream_is_asked_once() {
    let answers: [(&str, Answer); 4] = [
        ("404", |_, _| reply(404, "", "")),
        ("405", |_, _| reply(405, "", "")),
        ("-32601", |_, _| rpc_error(-32601)),
        ("-32601 on HTTP 400", |_, _| {
            rpc_error(-32601).replacen("200 X", "400 X", 1)
        }),
    ];
    for (what, answer) in answers {
        let seen = runs_once(MODERN, answer).await;
        let asked = asked(&seen);
        assert_eq!(
            asked,
            [("POST", Some("subscriptions/listen"))],
            "{what}: {seen:?}"
        );
    }
}

#[tokio::test]
async fn a_2025_upstream_refusing_the_get_stream_is_asked_once_and_its_session_ended() {
    let answers: [(&str, Answer); 2] = [
        ("405", |m, body| legacy(m, body, reply(405, "", ""))),
        ("404", |m, body| legacy(m, body, reply(404, "", ""))),
    ];
    for (what, answer) in answers {
        let seen = runs_once(LEGACY, answer).await;
        let asked = asked(&seen);
        assert_eq!(
            asked,
            [
                ("POST", Some("initialize")),
                ("POST", Some("notifications/initialized")),
                ("GET", None),
                ("DELETE", None),
            ],
            "{what}: {seen:?}"
        );
    }
}

/// A 2025-era upstream that opens sessions and answers the GET stream with `get`.
fn legacy(method: &str, body: &str, get: String) -> String {
    match method {
        "POST" if body.contains("\"initialize\"") => {
            let init = json!({"jsonrpc": "2.0", "id": 1, "result": {
                "protocolVersion": LEGACY, "capabilities": {"tools": {"listChanged": true}},
                "serverInfo": {"name": "legacy", "version": "1"}}});
            reply(
                200,
                "content-type: application/json\r\nmcp-session-id: s-1\r\n",
                &init.to_string(),
            )
        }
        "POST" => reply(202, "", ""),
        "GET" => get,
        _ => reply(200, "", ""),
    }
}

/// Every other failure is tried again, later each time: 1 s, then 2 s.
#[tokio::test]
async fn other_failures_are_retried_with_a_doubling_backoff() {
    let answers: [(&str, &str, Answer); 4] = [
        ("HTTP 500", MODERN, |_, _| reply(500, "", "")),
        ("-32603", MODERN, |_, _| rpc_error(-32603)),
        ("a JSON answer, no stream", MODERN, |_, _| {
            reply(
                200,
                "content-type: application/json\r\n",
                r#"{"jsonrpc":"2.0","id":"warden-watch","result":{}}"#,
            )
        }),
        ("2025: GET stream HTTP 503", LEGACY, |m, body| {
            legacy(m, body, reply(503, "", ""))
        }),
    ];
    let runs = answers.map(|(what, version, answer)| async move {
        let (url, mut seen) = upstream(answer).await;
        let (tx, mut changed) = mpsc::unbounded_channel();
        let task = tokio::spawn(listen_forever(target(&url, version), tx));
        // The attempts: the request that opens the stream (a modern POST, a 2025 GET).
        let opens =
            |s: &Seen| s.method == "GET" || s.rpc.as_deref() == Some("subscriptions/listen");
        let mut at = Vec::new();
        while at.len() < 3 {
            let s = tokio::time::timeout(Duration::from_secs(6), seen.recv())
                .await
                .unwrap_or_else(|_| panic!("{what}: not retried; attempts at {at:?}"))
                .unwrap();
            if opens(&s) {
                at.push(s.at);
            }
        }
        assert!(!task.is_finished(), "{what}: the listener gave up");
        task.abort();
        assert!(
            changed.try_recv().is_err(),
            "{what}: nothing opened, nothing to rediscover"
        );
        let (first, second) = (at[1] - at[0], at[2] - at[1]);
        assert!(
            first >= BACKOFF_MIN - Duration::from_millis(50),
            "{what}: retried after {first:?}"
        );
        assert!(
            second >= 2 * BACKOFF_MIN - Duration::from_millis(50),
            "{what}: the backoff did not double: {first:?}, then {second:?}"
        );
    });
    let [a, b, c, d] = runs;
    tokio::join!(a, b, c, d);
}

#[test]
fn only_list_changes_are_announcements_and_an_error_ends_the_listener() {
    let t = target("http://127.0.0.1:9/mcp", MODERN);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut announces = |raw: &str| {
        let mut buf = raw.to_owned();
        while let Some(data) = Framing::Sse.next_message(&mut buf) {
            assert!(heard(&t, &tx, &data).is_none(), "{raw}");
        }
        rx.try_recv().is_ok()
    };
    let ev = |m: &str| format!("id: 3\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"{m}\"}}\n\n");
    assert!(announces(&ev("notifications/tools/list_changed")));
    assert!(announces(&ev("notifications/prompts/list_changed")));
    assert!(announces(&ev("notifications/resources/list_changed")));
    assert!(!announces(&ev("notifications/message")));
    assert!(!announces(&ev("notifications/resources/updated")));
    assert!(!announces(": keep-alive\n\n"));
    assert!(!announces("data: not json\n\n"));
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = |code: i64| json!({"jsonrpc": "2.0", "id": 1, "error": {"code": code}}).to_string();
    assert!(matches!(
        heard(&t, &tx, &err(-32601)),
        Some(Ended::Unsupported(_))
    ));
    assert!(matches!(
        heard(&t, &tx, &err(-32603)),
        Some(Ended::Failed(_))
    ));
}

#[tokio::test]
async fn a_listen_answered_with_json_lines_is_read_line_by_line() {
    // The conformance suite's reference server answers `subscriptions/listen` with one JSON
    // message per line of an `application/json` body instead of SSE events.
    let (url, _seen) = upstream(|_, _| {
        let ack = json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
            "params": {"notifications": {"toolsListChanged": true}}});
        let changed = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
        reply(
            200,
            "content-type: application/json\r\n",
            &format!("{ack}\n{changed}\n"),
        )
    })
    .await;
    let (tx, mut changed) = mpsc::unbounded_channel();
    let task = tokio::spawn(listen_forever(target(&url, MODERN), tx));
    let got = tokio::time::timeout(Duration::from_secs(5), changed.recv()).await;
    task.abort();
    assert_eq!(got.expect("no rediscovery asked for"), Some(7));
}

#[test]
fn each_framing_yields_whole_messages_only() {
    let mut sse = String::from("event: message\ndata: {\"a\":1}\n\ndata: {\"b\"");
    assert_eq!(
        Framing::Sse.next_message(&mut sse).as_deref(),
        Some("{\"a\":1}")
    );
    assert_eq!(Framing::Sse.next_message(&mut sse), None);
    let mut lines = String::from("{\"a\":1}\r\n{\"b\"");
    assert_eq!(
        Framing::Lines.next_message(&mut lines).as_deref(),
        Some("{\"a\":1}")
    );
    assert_eq!(Framing::Lines.next_message(&mut lines), None);
    assert_eq!(lines, "{\"b\"");
}
