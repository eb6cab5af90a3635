//! Server→client streams on the harness: a 2026-07-28 `subscriptions/listen` ends with its
//! graceful final result when the gateway drains, and only then; a 2025 session's GET stream
//! carries its upstream sessions' resource updates, log messages and requests outside a call,
//! and the client's answers go back to the upstream session they came from; a 2026-07-28
//! subscription's `resourceSubscriptions` are decided and audited one by one and their
//! updates told from both eras of upstream.

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

/// A `subscriptions/listen` for resource updates only.
fn listen_resources(h: &Harness, token: &str, id: &str, uris: &[&str]) -> Vec<u8> {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "subscriptions/listen", "params": {
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                  "io.modelcontextprotocol/clientCapabilities": {}},
        "notifications": {"resourceSubscriptions": uris}}});
    h.mcp("POST")
        .header("host", h.host())
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "subscriptions/listen")
        .bearer(token)
        .json(&body)
        .to_bytes()
}

#[test]
fn a_subscriptions_resources_are_decided_one_by_one_and_their_updates_told_from_both_eras() {
    // up0 speaks 2025 (resources/subscribe in the user's upstream session, updates on its GET
    // stream), up1 2026-07-28 (a listen of the gateway's own); up0's secret is hidden by policy.
    let agg = crate::aggregate::start();
    let env = &agg.env;
    let (up0, up1) = (&env.upstreams[0], &env.upstreams[1]);
    let (readme0, readme1) = (
        "warden://up0/mem://doc/readme",
        "warden://up1/mem://doc/readme",
    );
    let (secret0, unknown) = (
        "warden://up0/mem://doc/secret",
        "warden://up9/mem://doc/readme",
    );
    let secret1 = "warden://up1/mem://doc/secret";
    let update = |uri: &str| json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri": uri}});
    up1.notify_listeners(update("mem://doc/readme"));
    up1.notify_listeners(update("mem://doc/other"));
    let tok = env.token("alice");
    let shard = env.shard();
    let asked = [readme0, secret0, readme1, unknown];
    let sub = env.block_on(async {
        let mut o = Open::start(&shard, listen_resources(env, &tok, "sub-r", &asked)).await;
        o.read(Duration::from_secs(5), acknowledged).await;
        // The subscribe opened alice's upstream session with up0: its GET stream is read next.
        let held = up0.sessions();
        assert_eq!(held.len(), 1, "{held:?}");
        for m in [
            update("mem://doc/readme"),
            update("mem://doc/secret"),
            json!({"jsonrpc":"2.0","id":5,"method":"sampling/createMessage","params":{"messages":[],"maxTokens":1}}),
            json!({"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}),
        ] {
            up0.notify(&held[0], m);
        }
        o.read(Duration::from_secs(5), |t| t.contains(readme0) && t.matches(readme1).count() > 1)
            .await;
        o
    });
    // The stream stays open: its events so far.
    let m: Vec<Value> = (sub.text().lines())
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let tag = json!({"io.modelcontextprotocol/subscriptionId": "sub-r"});
    // Only what policy allowed is acknowledged, in the client's naming and the order asked.
    assert_eq!(
        m[0]["method"], "notifications/subscriptions/acknowledged",
        "{m:?}"
    );
    assert_eq!(
        m[0]["params"]["notifications"],
        json!({"resourceSubscriptions": [readme0, readme1]}),
        "{m:?}"
    );
    let updates: Vec<&Value> = (m.iter())
        .filter(|x| x["method"] == "notifications/resources/updated")
        .collect();
    let mut told: Vec<&str> = (updates.iter())
        .filter_map(|u| u["params"]["uri"].as_str())
        .collect();
    told.sort_unstable();
    assert_eq!(told, [readme0, readme1], "{m:?}");
    assert!(
        updates.iter().all(|u| u["params"]["_meta"] == tag),
        "{updates:?}"
    );
    // Nothing else: no other resource, no log message, no request (declined to up0).
    assert_eq!(m.len(), 3, "{m:?}");
    assert!(!sub.text().contains(secret0) && !sub.text().contains(secret1));
    let declined = (up0.requests().into_iter())
        .filter(|r| r.body.get("method").is_none() && r.body["id"] == 5)
        .map(|r| r.body["error"]["code"].clone())
        .collect::<Vec<Value>>();
    assert_eq!(declined, [json!(-32601)]);
    // up0 was asked to subscribe to the allowed resource only; up1, a 2026-07-28 upstream,
    // got no resources/subscribe but one listen naming its own URI.
    let subscribes = |up: &testkit::MemUpstream| -> Vec<Value> {
        (up.requests().into_iter())
            .filter(|r| r.body["method"] == "resources/subscribe")
            .map(|r| r.body["params"]["uri"].clone())
            .collect()
    };
    assert_eq!(subscribes(up0), [json!("mem://doc/readme")]);
    assert!(subscribes(up1).is_empty());
    let listens: Vec<Value> = (up1.requests().into_iter())
        .filter(|r| r.body["method"] == "subscriptions/listen")
        .map(|r| r.body["params"]["notifications"].clone())
        .collect();
    assert!(!listens.is_empty());
    assert!(
        (listens.iter()).all(|n| *n == json!({"resourceSubscriptions": ["mem://doc/readme"]})),
        "{listens:?}"
    );
    // One record per URI asked for, as the resources/subscribe each replaces.
    let recs = env.take_audit();
    let subs: Vec<_> = (recs.iter())
        .filter(|r| r.method == "resources/subscribe")
        .collect();
    assert_eq!(subs.len(), 4, "{subs:#?}");
    let allowed: Vec<_> = (subs.iter())
        .filter(|r| r.decision == dataplane::audit::Outcome::Allow)
        .map(|r| (r.tool.as_deref(), r.upstream.as_deref()))
        .collect();
    assert_eq!(
        allowed,
        [(Some(readme0), Some("up0")), (Some(readme1), Some("up1"))]
    );
    assert!(subs.iter().all(|r| r.protocol.as_deref() == Some(MODERN)));
}

#[test]
fn a_sessions_subscription_to_a_modern_upstreams_resource_is_a_listen_its_get_stream_holds() {
    // up1 speaks 2026-07-28, which has no resources/subscribe: the 2025 session's subscribe is
    // decided and answered by the gateway, and its GET stream holds a listen with up1.
    let agg = crate::aggregate::start();
    let env = &agg.env;
    let up1 = &env.upstreams[1];
    let readme1 = "warden://up1/mem://doc/readme";
    let update = |uri: &str| json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri": uri}});
    let tok = env.token("alice");
    let sid = env.session(&tok);
    subscribe(env, &tok, &sid, readme1);
    up1.notify_listeners(update("mem://doc/readme"));
    let listens = || -> Vec<Value> {
        (up1.requests().into_iter())
            .filter(|r| r.body["method"] == "subscriptions/listen")
            .map(|r| r.body["params"]["notifications"].clone())
            .collect()
    };
    let shard = env.shard();
    let (told, after_unsubscribe, later) = env.block_on(async {
        let mut o = Open::start(&shard, get_stream(env, &tok, &sid)).await;
        o.read(Duration::from_secs(5), |t| t.contains(readme1)).await;
        let told = o.text();
        let body = json!({"jsonrpc":"2.0","id":"u","method":"resources/unsubscribe","params":{"uri": readme1}});
        let post = (env.mcp("POST").header("host", env.host()))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &sid)
            .header("mcp-protocol-version", "2025-06-18")
            .bearer(&tok)
            .json(&body)
            .to_bytes();
        let mut u = Open::start(&shard, post).await;
        u.read(Duration::from_secs(5), |_| false).await;
        assert_eq!(u.response().json()["result"], json!({}), "{}", u.text());
        o.read(Duration::from_millis(600), |_| false).await;
        let after = listens().len();
        up1.notify_listeners(update("mem://doc/readme"));
        o.read(Duration::from_millis(1500), |_| false).await;
        (told, after, (listens().len(), o.text()))
    });
    // The update reached the session in the gateway's naming, without the listen's own id.
    let updated: Vec<Value> = (told.lines())
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|m| m["method"] == "notifications/resources/updated")
        .collect();
    assert_eq!(
        updated,
        [
            json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri": readme1}})
        ],
        "{told}"
    );
    // up1 got no resources/subscribe, only listens naming its own URI.
    assert!(
        (up1.requests().iter()).all(|r| r.body["method"] != "resources/subscribe"
            && r.body["method"] != "resources/unsubscribe")
    );
    let all = listens();
    assert!(!all.is_empty());
    assert!(
        (all.iter()).all(|n| *n == json!({"resourceSubscriptions": ["mem://doc/readme"]})),
        "{all:?}"
    );
    // After the unsubscribe no listen is opened again, and nothing more is told.
    assert_eq!(
        later.0, after_unsubscribe,
        "a listen was opened after the unsubscribe"
    );
    assert_eq!(later.1.matches(readme1).count(), 1, "{}", later.1);
}
