//! Server→client streams on the harness: a 2026-07-28 `subscriptions/listen` ends with its
//! graceful final result when the gateway drains, and only then.

use std::sync::atomic::Ordering;
use std::time::Duration;

use controlplane::testing::Harness;
use serde_json::{Value, json};

use crate::env::{AUD, Env, Open};

const MODERN: &str = "2026-07-28";

/// A `subscriptions/listen` for tool changes, as a conforming client sends it.
fn listen(h: &Harness, token: &str, id: &str) -> Vec<u8> {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "subscriptions/listen", "params": {
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                  "io.modelcontextprotocol/clientCapabilities": {}},
        "notifications": {"toolsListChanged": true}}});
    h.mcp("POST")
        .header("host", h.host())
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "subscriptions/listen")
        .bearer(token)
        .json(&body)
        .to_bytes()
}

fn messages(o: &Open) -> Vec<Value> {
    let r = o.response();
    assert_eq!(r.status, 200, "{}", o.text());
    assert!(r.is_sse(), "{}", o.text());
    (r.events().iter())
        .filter_map(|e| serde_json::from_str(&e.data).ok())
        .collect()
}

fn acknowledged(t: &str) -> bool {
    t.contains("notifications/subscriptions/acknowledged")
}

#[test]
fn a_subscription_gets_its_final_result_when_the_gateway_drains() {
    let env = Env::start(1);
    let shard = env.shard();
    // A subscription whose token expires ends without a result: the final result is the
    // drain's, not every end's.
    let mut c = env.issuer.claims("alice", AUD, "mcp:tools");
    c["exp"] = json!(env.now_secs() + 30);
    let short = env.issuer.mint(&c);
    let expired = env.block_on(async {
        let mut o = Open::start(&shard, listen(&env, &short, "sub-0")).await;
        o.read(Duration::from_secs(5), acknowledged).await;
        assert!(acknowledged(&o.text()), "{}", o.text());
        env.advance(Duration::from_secs(31));
        o.read(Duration::from_secs(5), |_| false).await;
        o
    });
    let m = messages(&expired);
    assert_eq!(m.len(), 1, "only the acknowledgment: {m:?}");
    assert_eq!(m[0]["method"], "notifications/subscriptions/acknowledged");

    let tok = env.token("alice");
    let drained = env.block_on(async {
        let mut o = Open::start(&shard, listen(&env, &tok, "sub-1")).await;
        o.read(Duration::from_secs(5), acknowledged).await;
        assert!(acknowledged(&o.text()), "{}", o.text());
        // Open and quiet: nothing ends it.
        o.read(Duration::from_millis(600), |_| false).await;
        assert!(!o.closed(), "ended before the drain: {}", o.text());
        shard.shared.stopping.store(true, Ordering::SeqCst);
        o.read(Duration::from_secs(5), |_| false).await;
        o
    });
    let m = messages(&drained);
    assert_eq!(m.len(), 2, "the acknowledgment and the final result: {m:?}");
    assert_eq!(m[0]["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(
        m[1],
        json!({"jsonrpc": "2.0", "id": "sub-1", "result": {"resultType": "complete",
            "_meta": {"io.modelcontextprotocol/subscriptionId": "sub-1"}}}),
        "the long-lived request's own answer"
    );
}
