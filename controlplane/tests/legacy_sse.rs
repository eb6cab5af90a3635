//! The 2024-11-05 HTTP+SSE transport with the real `warden` binary over TCP: `GET /sse`
//! names the endpoint, messages posted there are answered on the stream with the same
//! policy, delegation of the upstream's credentials and audit as on `/mcp`; another user
//! cannot post to the stream; a reload that changes what the user may see is told on it;
//! closing the stream ends the session; off unless configured.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(
    clippy::disallowed_methods,
    reason = "waits for real streams with real deadlines"
)]

mod common;

use std::time::Duration;

use common::process::{WardenProc, free_port};
use serde_json::{Value, json};
use testkit::{TestIssuer, TestUpstream};

const DENY: &str = "@id(\"no-ticks\")\n@reason(\"ticks are off\")\nforbid (principal, action == Action::\"tools/call\", resource == Tool::\"up0_ticks\");\n";

/// `GET /sse`: the open stream and what it sent so far.
struct Stream {
    resp: reqwest::Response,
    buf: String,
}

impl Stream {
    /// The next `(event, data)`, skipping comments.
    async fn next(&mut self, wait: Duration) -> Option<(String, String)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut data) = (String::from("message"), String::new());
                let mut any = false;
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                        any = true;
                    }
                }
                if any {
                    return Some((event, data));
                }
                continue;
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Ok(Ok(Some(b))) => self.buf.push_str(&String::from_utf8_lossy(&b)),
                _ => return None,
            }
        }
    }

    async fn answer(&mut self) -> Value {
        let (event, data) = self.next(Duration::from_secs(10)).await.expect("an answer");
        assert_eq!(event, "message");
        serde_json::from_str(&data).unwrap()
    }
}

async fn open(c: &reqwest::Client, base: &str, tok: &str) -> (Stream, String) {
    let resp = c
        .get(format!("{base}/sse"))
        .bearer_auth(tok)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut s = Stream {
        resp,
        buf: String::new(),
    };
    let (event, endpoint) = s.next(Duration::from_secs(5)).await.expect("endpoint");
    assert_eq!(event, "endpoint");
    assert!(endpoint.starts_with("/messages?sessionId="), "{endpoint}");
    (s, format!("{base}{endpoint}"))
}

async fn post(c: &reqwest::Client, url: &str, tok: &str, body: Value) -> u16 {
    c.post(url)
        .bearer_auth(tok)
        .header("content-type", "application/json")
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn base_of(w: &WardenProc) -> String {
    w.url().trim_end_matches("/mcp").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_client_is_served_over_http_and_sse_with_the_same_policy() {
    let issuer = TestIssuer::start().await;
    let up = TestUpstream::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("tools.cedar");
    std::fs::write(&policy, DENY).unwrap();
    let yaml = common::config_yaml(
        &issuer.issuer(),
        &[("up0".into(), up.url())],
        "  legacy_sse_transport: true\n",
    )
    .replace(
        "policy:\n  default: allow\n",
        &format!(
            "policy:\n  default: allow\n  files: [{}]\n",
            policy.display()
        ),
    );
    let w = WardenProc::start(dir.path(), &yaml, free_port(), free_port()).await;
    let c = reqwest::Client::new();
    let tok = issuer.mint(&issuer.claims("alice", common::AUD, "mcp:tools"));
    let base = base_of(&w);

    // Unauthenticated: the same 401 challenge as the MCP endpoint.
    let r = c.get(format!("{base}/sse")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));

    let (mut s, messages) = open(&c, &base, &tok).await;
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"old","version":"1"}}});
    assert_eq!(post(&c, &messages, &tok, init).await, 202);
    let v = s.answer().await;
    assert_eq!(v["id"], 0);
    assert_eq!(v["result"]["protocolVersion"], "2024-11-05", "{v}");
    let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
    assert_eq!(post(&c, &messages, &tok, note).await, 202);
    // The list is filtered by policy, the call is forwarded, the denial explained.
    let list = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
    assert_eq!(post(&c, &messages, &tok, list).await, 202);
    let v = s.answer().await;
    let names: Vec<&str> = (v["result"]["tools"].as_array().unwrap().iter())
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"up0_echo") && !names.contains(&"up0_ticks"),
        "{names:?}"
    );
    let call = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"up0_echo","arguments":{"x":1}}});
    assert_eq!(post(&c, &messages, &tok, call).await, 202);
    let v = s.answer().await;
    assert_eq!(
        (
            v["id"].clone(),
            v["result"]["structuredContent"]["x"].clone()
        ),
        (json!(2), json!(1)),
        "{v}"
    );
    let denied = json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"up0_ticks","arguments":{}}});
    assert_eq!(post(&c, &messages, &tok, denied).await, 202);
    let v = s.answer().await;
    assert_eq!(v["result"]["isError"], true, "{v}");
    assert_eq!(v["result"]["content"][0]["text"], "ticks are off");
    assert_eq!(
        up.tool_calls().len(),
        1,
        "the denied call reached the upstream"
    );

    // Another user cannot post to alice's stream: as unknown as a made-up id.
    let bob = issuer.mint(&issuer.claims("bob", common::AUD, "mcp:tools"));
    let call = json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"up0_echo","arguments":{}}});
    assert_eq!(post(&c, &messages, &bob, call.clone()).await, 404);
    let made_up = format!("{base}/messages?sessionId=00112233445566778899aabbccddeeff");
    assert_eq!(post(&c, &made_up, &tok, call.clone()).await, 404);
    assert_eq!(up.tool_calls().len(), 1);

    // Every call is on the audit trail: the two served with the transport's revision, and
    // the two refused posts too.
    let dir = common::audit_dir_of(&yaml);
    let mut calls = Vec::new();
    for _ in 0..30 {
        calls = audit_calls(&dir);
        if calls.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(calls.len(), 4, "{calls:?}");
    let decisions: Vec<&str> = calls
        .iter()
        .map(|r| r["decision"].as_str().unwrap())
        .collect();
    assert_eq!(
        decisions,
        ["allow", "deny", "rejected", "rejected"],
        "{calls:?}"
    );
    assert!(
        calls[..2].iter().all(|r| r["protocol"] == "2024-11-05"),
        "{calls:?}"
    );
    assert_eq!(calls[2]["sub"], "bob");

    // A reload that hides a tool from alice is told on her stream, as on a session's GET
    // stream.
    let hide = format!(
        "{DENY}@id(\"no-echo\")\nforbid (principal, action == Action::\"tools/call\", resource == Tool::\"up0_echo\");\n"
    );
    std::fs::write(&policy, hide).unwrap();
    let r = c.post(w.admin("/admin/reload")).send().await.unwrap();
    assert!(r.status().is_success(), "reload: {}", r.status());
    let mut told = None;
    while let Some((event, data)) = s.next(Duration::from_secs(5)).await {
        if data.contains("list_changed") {
            told = Some((event, data));
            break;
        }
    }
    let (event, data) = told.expect("notifications/tools/list_changed on the stream");
    assert_eq!(event, "message");
    assert_eq!(
        serde_json::from_str::<Value>(&data).unwrap(),
        json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"})
    );

    // Closing the stream ends the session: its channel is gone (probed with a local answer,
    // so no tool runs for a client that left).
    drop(s);
    let probe = json!({"jsonrpc":"2.0","id":5,"method":"tools/list"});
    let mut gone = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if post(&c, &messages, &tok, probe.clone()).await == 404 {
            gone = true;
            break;
        }
    }
    assert!(gone, "the channel outlived its stream");
}

/// `tools/call` records in the audit directory.
fn audit_calls(dir: &std::path::Path) -> Vec<Value> {
    let mut out = Vec::new();
    // Not there yet: the writer creates it with the first record.
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line)
                && v["method"] == "tools/call"
            {
                out.push(v);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_transport_is_off_unless_configured() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = common::config_yaml(&issuer.issuer(), &[], "");
    let w = WardenProc::start(dir.path(), &yaml, free_port(), free_port()).await;
    let c = reqwest::Client::new();
    let tok = issuer.mint(&issuer.claims("alice", common::AUD, "mcp:tools"));
    let r = c
        .get(format!("{}/sse", base_of(&w)))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
