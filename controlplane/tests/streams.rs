//! Server→client streams with the real `warden` binary over TCP: a 2025-11-25 session's GET
//! stream and a 2026-07-28 `subscriptions/listen` stream hear `notifications/tools/list_changed`
//! when a policy reload changes what the caller may see — and only then, and only if asked;
//! a reconnect with `Last-Event-ID` learns of a change it missed; DELETE ends the stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(
    clippy::disallowed_methods,
    reason = "waits for real streams with real deadlines"
)]

mod common;

use std::time::Duration;

use common::client::{rpc, session};
use common::process::{WardenProc, free_port};
use serde_json::{Value, json};
use testkit::{TestIssuer, TestUpstream};

const V1: &str = "@id(\"no-ticks\")\n@reason(\"ticks are off\")\nforbid (principal, action == Action::\"tools/call\", resource == Tool::\"up0_ticks\");\n";
const V2: &str = "@id(\"no-echo\")\n@reason(\"echo is switched off\")\nforbid (principal, action == Action::\"tools/call\", resource == Tool::\"up0_echo\");\n";

/// An open SSE response and what it has sent so far.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    /// The next event's `(id, data)`, skipping comments; `None` when the stream ended or
    /// nothing came within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<(Option<String>, String)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut data, mut any) = (None, String::new(), false);
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                        any = true;
                    }
                }
                if any {
                    return Some((id, data));
                }
                continue; // a comment (keep-alive)
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk()).await;
            match chunk {
                Ok(Ok(Some(b))) => self.buf.push_str(&String::from_utf8_lossy(&b)),
                _ => return None,
            }
        }
    }

    /// The next event that is a JSON-RPC message, parsed.
    async fn message(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let (_, data) = self.next(wait).await?;
            if !data.is_empty() {
                return serde_json::from_str(&data).ok();
            }
        }
    }
}

async fn get_stream(
    c: &reqwest::Client,
    url: &str,
    tok: &str,
    sid: &str,
    last: Option<&str>,
) -> Sse {
    let mut rb = c
        .get(url)
        .bearer_auth(tok)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-06-18");
    if let Some(l) = last {
        rb = rb.header("last-event-id", l);
    }
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    Sse {
        resp,
        buf: String::new(),
    }
}

async fn listen(c: &reqwest::Client, url: &str, tok: &str, id: i64, filter: Value) -> Sse {
    let body = json!({"jsonrpc":"2.0","id":id,"method":"subscriptions/listen","params":{
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}},
        "notifications": filter}});
    let resp = c
        .post(url)
        .bearer_auth(tok)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "subscriptions/listen")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    Sse {
        resp,
        buf: String::new(),
    }
}

fn is_list_changed(v: &Value) -> bool {
    v["method"] == "notifications/tools/list_changed"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_streams_and_subscriptions_hear_of_a_policy_reload() {
    let issuer = TestIssuer::start().await;
    let up = TestUpstream::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("tools.cedar");
    std::fs::write(&policy, V1).unwrap();
    let yaml = common::config_yaml(&issuer.issuer(), &[("up0".into(), up.url())], "").replace(
        "policy:\n  default: allow\n",
        &format!(
            "policy:\n  default: allow\n  files: [{}]\n",
            policy.display()
        ),
    );
    let w = WardenProc::start(dir.path(), &yaml, free_port(), free_port()).await;
    let c = reqwest::Client::new();
    let tok = issuer.mint(&issuer.claims("alice", common::AUD, "mcp:tools"));
    let url = w.url();
    let sid = session(&c, &url, &tok).await;

    // The session's stream opens with a priming event: an id to resume from, no message.
    let mut s = get_stream(&c, &url, &tok, &sid, None).await;
    let (primed, data) = s.next(Duration::from_secs(5)).await.expect("priming event");
    let primed = primed.expect("an event id");
    assert!(data.is_empty(), "{data}");
    // A subscription asking for tool changes is acknowledged first, with its id.
    let mut sub = listen(&c, &url, &tok, 9, json!({"toolsListChanged": true})).await;
    let ack = sub.message(Duration::from_secs(5)).await.expect("ack");
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        9
    );
    assert_eq!(
        ack["params"]["notifications"],
        json!({"toolsListChanged": true})
    );
    // One that asks only for prompt changes (and for a kind this gateway does not tell) is
    // told it gets the prompt changes only.
    let filter = json!({"promptsListChanged": true, "somethingElse": true});
    let mut prompts_only = listen(&c, &url, &tok, 10, filter).await;
    let ack = prompts_only
        .message(Duration::from_secs(5))
        .await
        .expect("ack");
    assert_eq!(
        ack["params"]["notifications"],
        json!({"promptsListChanged": true}),
        "{ack}"
    );
    // Nothing is said while nothing changes.
    assert!(s.message(Duration::from_millis(800)).await.is_none());

    // The policy changes what alice may see: both streams that asked hear of it.
    std::fs::write(&policy, V2).unwrap();
    let r = c.post(w.admin("/admin/reload")).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let (changed_id, data) = s.next(Duration::from_secs(10)).await.expect("an event");
    let v: Value = serde_json::from_str(&data).unwrap();
    assert!(is_list_changed(&v), "{v}");
    let changed_id = changed_id.expect("an event id");
    assert_ne!(changed_id, primed);
    let v = sub
        .message(Duration::from_secs(10))
        .await
        .expect("a change");
    assert!(is_list_changed(&v), "{v}");
    assert_eq!(
        v["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        9
    );
    // The subscription that did not ask hears nothing.
    let leaked = prompts_only.message(Duration::from_millis(1500)).await;
    assert!(leaked.is_none(), "{leaked:?}");

    // Resuming from before the change: told at once. From after it: only primed.
    let mut again = get_stream(&c, &url, &tok, &sid, Some(&primed)).await;
    let (_, data) = again.next(Duration::from_secs(5)).await.unwrap();
    assert!(
        is_list_changed(&serde_json::from_str(&data).unwrap()),
        "{data}"
    );
    let mut again = get_stream(&c, &url, &tok, &sid, Some(&changed_id)).await;
    let (id, data) = again.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (id.as_deref(), data.as_str()),
        (Some(changed_id.as_str()), "")
    );
    // Another session's event id says nothing about this session: ignored.
    let other = session(&c, &url, &tok).await;
    let mut foreign = get_stream(&c, &url, &tok, &other, Some(&primed)).await;
    let (_, data) = foreign.next(Duration::from_secs(5)).await.unwrap();
    assert!(data.is_empty(), "{data}");

    // A reload that changes nothing alice sees is not told.
    let r = c.post(w.admin("/admin/reload")).send().await.unwrap();
    assert!(r.status().is_success());
    assert!(s.message(Duration::from_millis(1000)).await.is_none());

    // DELETE ends the session, and its stream with it.
    let r = c
        .delete(&url)
        .bearer_auth(&tok)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let mut ended = false;
    for _ in 0..40 {
        match tokio::time::timeout(Duration::from_millis(250), s.resp.chunk()).await {
            Ok(Ok(None)) | Ok(Err(_)) => {
                ended = true;
                break;
            }
            _ => {}
        }
    }
    assert!(ended, "the stream outlived its session");
    // Someone else's session: the stream is refused as the session is.
    let bob = issuer.mint(&issuer.claims("bob", common::AUD, "mcp:tools"));
    let r = c
        .get(&url)
        .bearer_auth(&bob)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// Prompt and resource list changes: told on the GET stream of a 2025 session and on a
/// subscription that asked for that kind, only to the caller whose visible list changed, and
/// only the kind that changed; a reconnect learns of each kind it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_and_resource_list_changes_are_told_to_the_callers_they_concern() {
    const NO_SECRET_PROMPT: &str = "@id(\"no-secret-prompt\")\nforbid (principal, action == Action::\"prompts/get\", resource == Upstream::\"up0\") when { principal.sub == \"alice\" && context has item && context.item == \"up0_secret\" };\n";
    const NO_SECRET_DOC: &str = "@id(\"no-secret-doc\")\nforbid (principal, action == Action::\"resources/read\", resource == Upstream::\"up0\") when { principal.sub == \"alice\" && context has item && context.item == \"mem://doc/secret\" };\n";
    let issuer = TestIssuer::start().await;
    let up = TestUpstream::start(testkit::UpstreamOptions {
        items: true,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("items.cedar");
    std::fs::write(&policy, V1).unwrap();
    let yaml = common::config_yaml(&issuer.issuer(), &[("up0".into(), up.url())], "").replace(
        "policy:\n  default: allow\n",
        &format!(
            "policy:\n  default: allow\n  files: [{}]\n",
            policy.display()
        ),
    );
    let w = WardenProc::start(dir.path(), &yaml, free_port(), free_port()).await;
    let c = reqwest::Client::new();
    let (url, quiet) = (w.url(), Duration::from_millis(1500));
    let alice = issuer.mint(&issuer.claims("alice", common::AUD, "mcp:tools"));
    let bob = issuer.mint(&issuer.claims("bob", common::AUD, "mcp:tools"));
    let sid = session(&c, &url, &alice).await;
    let bob_sid = session(&c, &url, &bob).await;
    let mut s = get_stream(&c, &url, &alice, &sid, None).await;
    let (primed, _) = s.next(Duration::from_secs(5)).await.expect("priming event");
    let primed = primed.expect("an event id");
    let mut bob_s = get_stream(&c, &url, &bob, &bob_sid, None).await;
    bob_s
        .next(Duration::from_secs(5))
        .await
        .expect("priming event");
    let mut prompts = listen(&c, &url, &alice, 1, json!({"promptsListChanged": true})).await;
    let mut resources = listen(
        &c,
        &url,
        &alice,
        2,
        json!({"resourcesListChanged": true, "toolsListChanged": true}),
    )
    .await;
    for (sub, asked) in [
        (&mut prompts, json!({"promptsListChanged": true})),
        (
            &mut resources,
            json!({"resourcesListChanged": true, "toolsListChanged": true}),
        ),
    ] {
        let ack = sub.message(Duration::from_secs(5)).await.expect("ack");
        assert_eq!(ack["params"]["notifications"], asked, "{ack}");
    }
    let reload = async |text: String| {
        std::fs::write(&policy, text).unwrap();
        let r = c.post(w.admin("/admin/reload")).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    };

    // Alice may no longer get the secret prompt: her prompt list changed, nothing else.
    reload(format!("{V1}{NO_SECRET_PROMPT}")).await;
    let v = s.message(Duration::from_secs(10)).await.expect("a change");
    assert_eq!(v["method"], "notifications/prompts/list_changed", "{v}");
    let v = prompts
        .message(Duration::from_secs(10))
        .await
        .expect("a change");
    assert_eq!(v["method"], "notifications/prompts/list_changed", "{v}");
    assert_eq!(
        v["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        1
    );
    assert!(s.message(quiet).await.is_none(), "only the prompts");
    assert!(resources.message(quiet).await.is_none(), "not asked");
    assert!(bob_s.message(quiet).await.is_none(), "bob sees what he saw");
    let (_, v, _) = rpc(
        &c,
        &url,
        &alice,
        Some(&sid),
        json!({"jsonrpc":"2.0","id":5,"method":"prompts/list"}),
    )
    .await;
    let names: Vec<&str> = (v["result"]["prompts"].as_array().unwrap().iter())
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["up0_greet"], "{v}");

    // Nor read the secret document: her resource list changed.
    reload(format!("{V1}{NO_SECRET_PROMPT}{NO_SECRET_DOC}")).await;
    let (after, data) = s.next(Duration::from_secs(10)).await.expect("a change");
    let v: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(v["method"], "notifications/resources/list_changed", "{v}");
    let v = resources
        .message(Duration::from_secs(10))
        .await
        .expect("a change");
    assert_eq!(v["method"], "notifications/resources/list_changed", "{v}");
    assert!(prompts.message(quiet).await.is_none(), "not asked");
    assert!(bob_s.message(quiet).await.is_none());

    // A reconnect from before both changes hears of both kinds, and of the tools not at all;
    // from after them, of nothing.
    let mut again = get_stream(&c, &url, &alice, &sid, Some(&primed)).await;
    let mut told = Vec::new();
    for _ in 0..2 {
        told.push(
            again
                .message(Duration::from_secs(5))
                .await
                .expect("a change")["method"]
                .clone(),
        );
    }
    assert_eq!(
        told,
        [
            "notifications/prompts/list_changed",
            "notifications/resources/list_changed"
        ]
    );
    assert!(again.message(quiet).await.is_none());
    let mut again = get_stream(&c, &url, &alice, &sid, after.as_deref()).await;
    let (id, data) = again.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!((id, data.as_str()), (after, ""));
}

/// Over real sockets: a resource update the upstream sends outside a call, on the GET
/// stream of alice's upstream session, reaches alice's GET stream at the gateway — also after
/// the upstream stream reached its request timeout (2 s here) and was reopened — and not
/// bob's, who holds no session with the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_resource_update_outside_a_call_reaches_the_subscribed_session() {
    let issuer = TestIssuer::start().await;
    let up = TestUpstream::start(testkit::UpstreamOptions {
        items: true,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = common::config_yaml(&issuer.issuer(), &[("up0".into(), up.url())], "");
    let w = WardenProc::start(dir.path(), &yaml, free_port(), free_port()).await;
    let c = reqwest::Client::new();
    let url = w.url();
    let alice = issuer.mint(&issuer.claims("alice", common::AUD, "mcp:tools"));
    let bob = issuer.mint(&issuer.claims("bob", common::AUD, "mcp:tools"));
    let (sid, bob_sid) = (
        session(&c, &url, &alice).await,
        session(&c, &url, &bob).await,
    );
    let sub = json!({"jsonrpc":"2.0","id":2,"method":"resources/subscribe","params":{"uri":"mem://doc/readme"}});
    let (_, v, _) = rpc(&c, &url, &alice, Some(&sid), sub).await;
    assert_eq!(v["result"], json!({}), "{v}");
    let mut s = get_stream(&c, &url, &alice, &sid, None).await;
    s.next(Duration::from_secs(5)).await.expect("priming event");
    let mut bob_s = get_stream(&c, &url, &bob, &bob_sid, None).await;
    bob_s
        .next(Duration::from_secs(5))
        .await
        .expect("priming event");
    // The upstream GETs of alice's upstream session (the gateway's watcher has its own).
    let alice_up = (up.requests().iter())
        .find(|r| r.rpc_method() == Some("resources/subscribe"))
        .and_then(|r| r.header("mcp-session-id").map(str::to_owned))
        .expect("alice's upstream session");
    let opened = || {
        (up.requests().iter())
            .filter(|r| r.method == "GET" && r.header("mcp-session-id") == Some(&alice_up))
            .count()
    };
    let wait_opened = async |n: usize| {
        for _ in 0..100 {
            if opened() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the gateway opened alice's upstream stream {} times",
            opened()
        );
    };
    let update = json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"mem://doc/readme"}});
    for round in 1..=2 {
        wait_opened(opened().max(round)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        up.notify(update.clone());
        let v = s.message(Duration::from_secs(5)).await.expect("the update");
        assert_eq!(v, update, "round {round}");
        // Let the upstream stream reach its 2 s request timeout; it is reopened.
        let before = opened();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        wait_opened(before + 1).await;
    }
    assert!(bob_s.message(Duration::from_millis(500)).await.is_none());
}

/// The tool names alice sees through the gateway.
async fn tool_names(c: &reqwest::Client, url: &str, tok: &str, sid: &str) -> Vec<String> {
    let (_, v, _) = rpc(
        c,
        url,
        tok,
        Some(sid),
        json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}),
    )
    .await;
    (v["result"]["tools"].as_array().unwrap().iter())
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn start_plain() -> (TestIssuer, TestUpstream, tempfile::TempDir, WardenProc) {
    let issuer = TestIssuer::start().await;
    let up = TestUpstream::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = common::config_yaml(&issuer.issuer(), &[("up0".into(), up.url())], "");
    let w = WardenProc::start(dir.path(), &yaml, free_port(), free_port()).await;
    (issuer, up, dir, w)
}

/// Wait (up to 5 s) until the gateway's listener has opened the upstream's GET stream.
async fn wait_listening(up: &TestUpstream) {
    for _ in 0..50 {
        if up.requests().iter().any(|r| r.method == "GET") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway never opened the upstream's GET stream");
}

/// The gateway listens to an upstream that declares `tools.listChanged` (its own session and
/// GET stream): when the upstream says its list changed, the gateway rediscovers it and every
/// client stream whose visible list changed is told; `tools/list` shows the new tools.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstreams_list_change_is_rediscovered_and_told_to_clients() {
    let (issuer, up, _dir, w) = start_plain().await;
    let c = reqwest::Client::new();
    let tok = issuer.mint(&issuer.claims("alice", common::AUD, "mcp:tools"));
    let url = w.url();
    let sid = session(&c, &url, &tok).await;
    assert!(
        !tool_names(&c, &url, &tok, &sid)
            .await
            .contains(&"up0_tool_1".to_owned())
    );
    let mut s = get_stream(&c, &url, &tok, &sid, None).await;
    s.next(Duration::from_secs(5)).await.expect("priming event");
    // The gateway's listener is open on the upstream (one GET of its own session).
    wait_listening(&up).await;
    up.set_tools(2);
    let v = s.message(Duration::from_secs(10)).await.expect("a change");
    assert!(is_list_changed(&v), "{v}");
    let names = tool_names(&c, &url, &tok, &sid).await;
    assert!(names.contains(&"up0_tool_1".to_owned()), "{names:?}");
}

/// A list change an upstream announces on a call's own stream is not relayed to the caller
/// (the upstream's names are not the gateway's), but the gateway rediscovers the upstream and
/// tells the client on its stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_change_on_a_call_stream_is_rediscovered_not_relayed() {
    let (issuer, _up, _dir, w) = start_plain().await;
    let c = reqwest::Client::new();
    let tok = issuer.mint(&issuer.claims("alice", common::AUD, "mcp:tools"));
    let url = w.url();
    let sid = session(&c, &url, &tok).await;
    let mut s = get_stream(&c, &url, &tok, &sid, None).await;
    s.next(Duration::from_secs(5)).await.expect("priming event");
    let body = json!({"jsonrpc":"2.0","id":"g","method":"tools/call","params":{
        "name":"up0_ticks","arguments":{"count":1,"interval_ms":10,"grow_to":3},
        "_meta":{"progressToken":"p"}}});
    let r = c
        .post(&url)
        .bearer_auth(&tok)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-06-18")
        .json(&body)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("\"done\""), "{text}");
    assert!(!text.contains("list_changed"), "relayed: {text}");
    let v = s.message(Duration::from_secs(10)).await.expect("a change");
    assert!(is_list_changed(&v), "{v}");
    let names = tool_names(&c, &url, &tok, &sid).await;
    assert!(names.contains(&"up0_tool_2".to_owned()), "{names:?}");
}

/// A stream lives no longer than the token that opened it: when it expires the gateway ends
/// the stream, and the client must come back with a fresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_token_expires() {
    let (issuer, _up, _dir, w) = start_plain().await;
    let c = reqwest::Client::new();
    let mut claims = issuer.claims("alice", common::AUD, "mcp:tools");
    claims["exp"] = json!(testkit::issuer::now_secs() + 3);
    let tok = issuer.mint(&claims);
    let url = w.url();
    let sid = session(&c, &url, &tok).await;
    let mut s = get_stream(&c, &url, &tok, &sid, None).await;
    s.next(Duration::from_secs(2)).await.expect("priming event");
    let mut ended = false;
    for _ in 0..40 {
        match tokio::time::timeout(Duration::from_millis(250), s.resp.chunk()).await {
            Ok(Ok(None)) | Ok(Err(_)) => {
                ended = true;
                break;
            }
            _ => {}
        }
    }
    assert!(ended, "the stream outlived its token");
}

/// However often an upstream says its list changed, the control loop rediscovers it at most
/// once a second (each rediscovery is one `tools/list` at the upstream), and the last change
/// is not lost: the gateway ends up listing the upstream's final tools.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_list_changes_is_rediscovered_at_most_once_a_second() {
    let (issuer, up, _dir, w) = start_plain().await;
    let c = reqwest::Client::new();
    let tok = issuer.mint(&issuer.claims("alice", common::AUD, "mcp:tools"));
    let url = w.url();
    let sid = session(&c, &url, &tok).await;
    wait_listening(&up).await;
    let lists = || {
        (up.requests().iter())
            .filter(|r| r.rpc_method() == Some("tools/list"))
            .count()
    };
    let before = lists();
    // Twenty changes, each told on the listener's stream, over about a second.
    let clock = dataplane::clock::Clock::new();
    let t0 = clock.now();
    for n in 1..=20 {
        up.set_tools(n);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let burst = clock.since(t0);
    let mut names = Vec::new();
    for _ in 0..50 {
        names = tool_names(&c, &url, &tok, &sid).await;
        if names.contains(&"up0_tool_19".to_owned()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        names.contains(&"up0_tool_19".to_owned()),
        "the last change was lost: {names:?}"
    );
    // Whatever was still waiting has had its turn.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let rediscoveries = lists() - before;
    let most = burst.as_secs() as usize + 3;
    assert!(
        (1..=most).contains(&rediscoveries),
        "{rediscoveries} rediscoveries for 20 changes in {burst:?} (at most {most})"
    );
}
