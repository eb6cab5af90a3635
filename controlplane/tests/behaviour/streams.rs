//! Server→client streams on the harness: a 2026-07-28 `subscriptions/listen` ends with its
//! graceful final result when the gateway drains, and only then; a 2025 session's GET stream
//! carries its upstream sessions' resource updates, log messages and requests outside a call,
//! and the client's answers go back to the upstream session they came from.

use std::sync::atomic::Ordering;
use std::time::Duration;

use controlplane::testing::Harness;
use serde_json::{Value, json};
use testkit::UpstreamOptions;

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

/// A 2025 session's GET stream, as a conforming client opens it.
fn get_stream(h: &Harness, token: &str, sid: &str) -> Vec<u8> {
    h.mcp("GET")
        .header("host", h.host())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-06-18")
        .bearer(token)
        .to_bytes()
}

/// `resources/subscribe` in a 2025 session (which opens the user's upstream session).
fn subscribe(env: &Env, tok: &str, sid: &str, uri: &str) {
    let body =
        json!({"jsonrpc":"2.0","id":"s","method":"resources/subscribe","params":{"uri": uri}});
    let r = env.post(Some(tok), Some(sid), &body);
    assert_eq!(r.json()["result"], json!({}), "{}", r.text());
}

#[test]
fn upstream_messages_outside_a_call_reach_the_session_they_belong_to_in_the_gateways_names() {
    let opts = UpstreamOptions {
        items: true,
        ..Default::default()
    };
    let env = Env::start_with(2, opts, "");
    let up0 = &env.upstreams[0];
    let (alice, bob) = (env.token("alice"), env.token("bob"));
    let (alice_sid, bob_sid) = (env.session(&alice), env.session(&bob));
    subscribe(&env, &alice, &alice_sid, "warden://up0/mem://doc/readme");
    // Alice's upstream session is the one up0 holds (discovery's was ended).
    let held = up0.sessions();
    assert_eq!(held.len(), 1, "{held:?}");
    subscribe(&env, &bob, &bob_sid, "warden://up0/mem://doc/readme");
    for m in [
        json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"mem://doc/readme"}}),
        json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"}),
        json!({"jsonrpc":"2.0","id":5,"method":"sampling/createMessage","params":{"messages":[],"maxTokens":1}}),
        json!({"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","logger":"db","data":"reindexed"}}),
    ] {
        up0.notify(&held[0], m);
    }
    let shard = env.shard();
    let (alice_s, bob_s) = env.block_on(async {
        let mut a = Open::start(&shard, get_stream(&env, &alice, &alice_sid)).await;
        let mut b = Open::start(&shard, get_stream(&env, &bob, &bob_sid)).await;
        a.read(Duration::from_secs(5), |t| t.contains("reindexed"))
            .await;
        b.read(Duration::from_millis(1500), |_| false).await;
        (a.text(), b.text())
    });
    // The update names the resource as alice subscribed to it; the log message is hers.
    assert!(
        alice_s.contains("notifications/resources/updated")
            && alice_s.contains(r#""uri":"warden://up0/mem://doc/readme""#),
        "{alice_s}"
    );
    assert!(alice_s.contains("notifications/message"), "{alice_s}");
    // The upstream's list change is not relayed in its own names but rediscovered.
    assert!(!alice_s.contains("tools/list_changed"), "{alice_s}");
    assert!(env.upstreams_changed().contains(&0));
    // Its request reaches alice with an id of the gateway's, and her answer goes back to her
    // upstream session with the upstream's own id; nothing was declined.
    let asked = (alice_s.lines())
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|m| m["method"] == "sampling/createMessage")
        .unwrap_or_else(|| panic!("the request was not relayed: {alice_s}"));
    assert_eq!(asked["params"]["maxTokens"], 1, "{asked}");
    let gid = asked["id"].clone();
    assert!(gid.is_string() && gid != json!(5), "{gid}");
    let answer = json!({"jsonrpc":"2.0","id": gid,"result":{"role":"assistant",
        "content":{"type":"text","text":"four"},"model":"m"}});
    let r = env.post(Some(&alice), Some(&alice_sid), &answer);
    assert_eq!(r.status, 202, "{}", r.text());
    // Bob posting the same id in his session reaches only his own upstream session.
    let forged = json!({"jsonrpc":"2.0","id": gid,"result":{"role":"assistant",
        "content":{"type":"text","text":"forged"},"model":"m"}});
    let r = env.post(Some(&bob), Some(&bob_sid), &forged);
    assert_eq!(r.status, 202, "{}", r.text());
    let answers = (up0.requests().into_iter())
        .filter(|r| r.body.get("method").is_none() && r.body["id"] == 5)
        .map(|r| {
            let sid = r.header("mcp-session-id").unwrap_or_default().to_owned();
            (
                sid,
                r.body["result"]["content"]["text"].clone(),
                r.body.get("error").cloned(),
            )
        })
        .collect::<Vec<_>>();
    let alices = (answers.iter())
        .filter(|a| a.0 == held[0])
        .collect::<Vec<_>>();
    assert_eq!(alices.len(), 1, "{answers:?}");
    assert_eq!(
        (&alices[0].1, &alices[0].2),
        (&json!("four"), &None),
        "{answers:?}"
    );
    assert!(
        (answers.iter()).all(|a| a.0 == held[0] || a.1 == json!("forged")),
        "bob's answer reached only bob's upstream session: {answers:?}"
    );
    // Bob's stream carries nothing of alice's session.
    assert!(
        !bob_s.contains("updated") && !bob_s.contains("reindexed"),
        "{bob_s}"
    );
    assert!(
        (up0.requests().iter()).any(|r| r.method == "GET"),
        "the upstream streams were opened"
    );
}
