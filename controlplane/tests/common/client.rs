//! A minimal MCP client for tests that talk to a gateway by URL (real binaries, balancers).

use std::time::Duration;

use serde_json::{Value, json};

/// POST one JSON-RPC message to `url`; status, the (last) message, the session id header.
pub async fn rpc(
    c: &reqwest::Client,
    url: &str,
    tok: &str,
    sid: Option<&str>,
    body: Value,
) -> (u16, Value, Option<String>) {
    let mut rb = c
        .post(url)
        .bearer_auth(tok)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .timeout(Duration::from_secs(10));
    if let Some(s) = sid {
        rb = rb
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", "2025-06-18");
    }
    let r = rb.body(body.to_string()).send().await.unwrap();
    let status = r.status().as_u16();
    let sid = r
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = r.text().await.unwrap();
    let v = if ct.starts_with("text/event-stream") {
        super::last_sse_message(&text)
    } else {
        serde_json::from_str(&text).unwrap_or(Value::Null)
    };
    (status, v, sid)
}

/// `initialize` on `url`; the session id.
pub async fn session(c: &reqwest::Client, url: &str, tok: &str) -> String {
    let (s, _, sid) = rpc(c, url, tok, None, json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})).await;
    assert_eq!(s, 200);
    sid.unwrap()
}

/// `tools/call`, expecting HTTP 200.
pub async fn call(
    c: &reqwest::Client,
    url: &str,
    tok: &str,
    sid: &str,
    tool: &str,
    args: Value,
) -> Value {
    let (s, v, _) = rpc(c, url, tok, Some(sid), json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":tool,"arguments":args}})).await;
    assert_eq!(s, 200, "{v}");
    v
}
