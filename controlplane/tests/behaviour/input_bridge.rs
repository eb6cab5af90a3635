//! A 2026-07-28 upstream's `input_required` bridged to a 2025-xx session client as requests
//! on the call's stream (`dataplane/src/mcp/input_bridge.rs`), and the bridge's bounds: at
//! most `MAX_ROUNDS` (8) rounds of input, each answered within `ANSWER_WAIT` (5 minutes).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use controlplane::testing::{Harness, PROTOCOL_VERSION, PeerReply, PeerRequest};
use dataplane::testing::FakeUpstream;
use serde_json::{Value, json};
use testkit::{MemIssuer, MemUpstream, UpstreamOptions};

use crate::env::{Env, ISSUER, Open, config_yaml};

/// A modern upstream whose `ask` asks for a name again at every round, however it is
/// answered; the params of every `ask` it was called with.
struct AlwaysAsks {
    inner: MemUpstream,
    asks: RefCell<Vec<Value>>,
}

impl FakeUpstream for AlwaysAsks {
    fn handle(&self, req: &PeerRequest) -> PeerReply {
        let v: Value = serde_json::from_slice(&req.body).unwrap_or_default();
        if v["method"] != "tools/call" || v["params"]["name"] != "ask" {
            return self.inner.handle(req);
        }
        self.asks.borrow_mut().push(v["params"].clone());
        PeerReply::json(
            200,
            &json!({"jsonrpc": "2.0", "id": v["id"], "result": {
                "resultType": "input_required",
                "inputRequests": {"who": {"method": "elicitation/create", "params": {
                    "mode": "form", "message": "Your name?",
                    "requestedSchema": {"type": "object",
                        "properties": {"name": {"type": "string"}}}}}},
                "requestState": "again"}}),
        )
    }
}

fn start() -> (Env, Rc<AlwaysAsks>) {
    let issuer = Rc::new(MemIssuer::new(ISSUER));
    let up = Rc::new(AlwaysAsks {
        inner: MemUpstream::new(UpstreamOptions {
            modern: true,
            ..Default::default()
        }),
        asks: RefCell::default(),
    });
    let h = Harness::builder(&config_yaml(&[ISSUER], &["up0"], ""))
        .issuer(&issuer)
        .upstream("up0", up.clone())
        .build()
        .expect("harness");
    let env = Env {
        h,
        issuer,
        upstreams: Vec::new(),
    };
    (env, up)
}

/// A 2025-era session whose client can answer elicitations.
fn eliciting_session(env: &Env, token: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL_VERSION, "capabilities": {"elicitation": {}},
        "clientInfo": {"name": "t", "version": "1"}}});
    let r = env.post(Some(token), None, &init);
    assert_eq!(r.status, 200, "{}", r.text());
    let sid = r.header("mcp-session-id").unwrap().to_owned();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(env.post(Some(token), Some(&sid), &note).status, 202);
    sid
}

fn call_ask(env: &Env, token: &str, sid: &str) -> Vec<u8> {
    let body = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "up0_ask", "arguments": {}}});
    env.mcp("POST")
        .header("host", env.host())
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", PROTOCOL_VERSION)
        .bearer(token)
        .json(&body)
        .to_bytes()
}

/// The ids of the gateway's input requests in what the stream wrote, in order.
fn input_ids(text: &str) -> Vec<String> {
    let mark = "\"id\":\"warden-input-";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(mark) {
        let start = i + "\"id\":\"".len();
        let len = rest[start..].find('"').unwrap();
        out.push(rest[start..start + len].to_owned());
        rest = &rest[start + len..];
    }
    out
}

/// The final message on the call's stream.
fn last_message(o: &Open) -> Value {
    let r = o.response();
    assert!(r.is_sse(), "{}", o.text());
    r.message()
}

#[test]
fn an_upstream_asking_for_ever_gets_eight_rounds_and_the_client_an_error() {
    let (env, up) = start();
    let tok = env.token("alice");
    let sid = eliciting_session(&env, &tok);
    let shard = env.shard();
    let (call, answered) = env.block_on(async {
        let mut o = Open::start(&shard, call_ask(&env, &tok, &sid)).await;
        let mut answered = 0;
        // Every request for input is answered, until the call ends (or 20 s pass: a bug).
        for _ in 0..2000 {
            o.read(Duration::from_secs(5), |t| input_ids(t).len() > answered)
                .await;
            let ids = input_ids(&o.text());
            if o.closed() && ids.len() == answered {
                break;
            }
            for id in &ids[answered..] {
                let a = json!({"jsonrpc": "2.0", "id": id,
                    "result": {"action": "accept", "content": {"name": "Ada"}}});
                let req = env
                    .mcp("POST")
                    .header("host", env.host())
                    .header("accept", "application/json, text/event-stream")
                    .header("mcp-session-id", sid.as_str())
                    .header("mcp-protocol-version", PROTOCOL_VERSION)
                    .bearer(&tok)
                    .json(&a)
                    .to_bytes();
                let r = dataplane::testing::exchange(&shard, &req).await;
                assert!(
                    String::from_utf8_lossy(&r).starts_with("HTTP/1.1 202"),
                    "{}",
                    String::from_utf8_lossy(&r)
                );
                answered += 1;
            }
        }
        (o, answered)
    });
    assert_eq!(answered, 8, "rounds of input asked of the client");
    let asks = up.asks.borrow();
    assert_eq!(asks.len(), 9, "the call and its eight continuations");
    assert_eq!(asks[8]["requestState"], "again");
    assert_eq!(
        asks[8]["inputResponses"]["who"]["content"]["name"], "Ada",
        "{}",
        asks[8]
    );
    // The ninth request for input is not bridged: the client is told, in its revision.
    let v = last_message(&call);
    assert_eq!(v["id"], 5, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("input_required"), "{v}");
}

#[test]
fn a_round_not_answered_within_five_minutes_ends_the_call() {
    let (env, up) = start();
    // A token that outlives the wait (the default lives 5 minutes).
    let mut c = env.issuer.claims("alice", crate::env::AUD, "mcp:tools");
    c["exp"] = json!(env.now_secs() + 3600);
    let tok = env.issuer.mint(&c);
    let sid = eliciting_session(&env, &tok);
    let shard = env.shard();
    let call = env.block_on(async {
        let mut o = Open::start(&shard, call_ask(&env, &tok, &sid)).await;
        o.read(Duration::from_secs(5), |t| !input_ids(t).is_empty())
            .await;
        assert_eq!(input_ids(&o.text()).len(), 1, "{}", o.text());
        // A person may take their time: just under the limit, the call still waits.
        env.advance(Duration::from_secs(299));
        o.read(Duration::from_millis(600), |_| false).await;
        assert!(!o.closed(), "gave up early: {}", o.text());
        env.advance(Duration::from_secs(2));
        o.read(Duration::from_secs(5), |_| false).await;
        o
    });
    assert_eq!(up.asks.borrow().len(), 1, "nothing more was sent upstream");
    let v = last_message(&call);
    assert_eq!(v["id"], 5, "{v}");
    let text = v.to_string();
    assert!(text.contains("did not answer"), "{v}");
}
