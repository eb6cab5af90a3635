//! The revision Warden speaks to 2025-era upstreams: it asks for the newest 2025 one
//! (2025-11-25) whatever its client speaks, adopts the upstream's answer when it is a revision
//! Warden speaks and sends it as `MCP-Protocol-Version` from then on, and refuses any other
//! answer: at discovery (the upstream is not served) and when it opens a user's upstream
//! session (the call fails with a clear error and is never sent).

use std::rc::Rc;

use controlplane::testing::Harness;
use serde_json::{Value, json};
use testkit::{MemIssuer, MemUpstream};

use crate::env::{Env, ISSUER, config_yaml, listed_tools};

/// Two upstreams, `up1` answering `initialize` with `up1_answers` from the start.
fn start(up1_answers: &str) -> Env {
    let issuer = Rc::new(MemIssuer::new(ISSUER));
    let (up0, up1) = (
        Rc::new(MemUpstream::default()),
        Rc::new(MemUpstream::default()),
    );
    up1.answer_protocol(up1_answers);
    let h = Harness::builder(&config_yaml(&[ISSUER], &["up0", "up1"], ""))
        .issuer(&issuer)
        .upstream("up0", up0.clone())
        .upstream("up1", up1.clone())
        .build()
        .expect("harness");
    Env {
        h,
        issuer,
        upstreams: vec![up0, up1],
    }
}

/// The `protocolVersion` of every `initialize` an upstream was sent.
fn asked(up: &MemUpstream) -> Vec<Value> {
    (up.requests().into_iter())
        .filter(|r| r.rpc_method() == Some("initialize"))
        .map(|r| r.body["params"]["protocolVersion"].clone())
        .collect()
}

/// The `MCP-Protocol-Version` of the requests of `method` an upstream was sent.
fn sent_version(up: &MemUpstream, method: &str) -> Vec<String> {
    (up.requests().into_iter())
        .filter(|r| r.rpc_method() == Some(method))
        .map(|r| {
            r.header("mcp-protocol-version")
                .unwrap_or("none")
                .to_owned()
        })
        .collect()
}

#[test]
fn upstream_sessions_ask_for_the_newest_2025_revision_and_speak_the_one_answered() {
    // up0 speaks 2025-11-25 (and older); up1 only 2025-06-18.
    let env = start("2025-06-18");
    let tok = env.token("alice");
    // A 2025-06-18 client: what it speaks does not decide what the upstreams are asked.
    let sid = env.session(&tok);
    let v = env.call(&tok, &sid, json!(1), "up0_echo", json!({"x": 1}));
    assert!(v.get("result").is_some(), "{v}");
    let v = env.call(&tok, &sid, json!(2), "up1_echo", json!({"x": 2}));
    assert!(v.get("result").is_some(), "{v}");
    for up in &env.upstreams {
        // Discovery's session and alice's: both ask for the newest 2025 revision.
        assert_eq!(asked(up), [json!("2025-11-25"), json!("2025-11-25")]);
    }
    let (up0, up1) = (&env.upstreams[0], &env.upstreams[1]);
    // Afterwards each upstream is spoken to in the revision it answered.
    assert_eq!(sent_version(up0, "tools/call"), ["2025-11-25"]);
    assert_eq!(sent_version(up1, "tools/call"), ["2025-06-18"]);
    assert_eq!(sent_version(up1, "tools/list"), ["2025-06-18"]);
    assert!(
        sent_version(up1, "notifications/initialized")
            .iter()
            .all(|v| v == "2025-06-18"),
        "{:?}",
        sent_version(up1, "notifications/initialized")
    );
}

#[test]
fn an_answer_in_a_revision_warden_does_not_speak_is_refused() {
    // At discovery: up1's tools are not served, and its discovery session is ended.
    let env = start("2099-01-01");
    let tok = env.token("alice");
    let sid = env.session(&tok);
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
    let v = env.post(Some(&tok), Some(&sid), &body).json();
    let names = listed_tools(&v);
    assert!(names.contains(&"up0_echo"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("up1_")), "{names:?}");
    let up1 = &env.upstreams[1];
    assert_eq!(up1.count("tools/list"), 0);
    assert_eq!(up1.count("DELETE"), 1, "the refused session is ended");

    // When a user's upstream session is opened: the call fails, saying why, and is not sent.
    let up0 = &env.upstreams[0];
    up0.answer_protocol("2099-01-01");
    let v = env.call(&tok, &sid, json!(2), "up0_echo", json!({"x": 1}));
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("up0") && msg.contains("protocol version Warden does not speak"),
        "{v}"
    );
    assert!(up0.tool_calls().is_empty(), "{:?}", up0.tool_calls());
    assert_eq!(
        up0.count("notifications/initialized"),
        1,
        "discovery's only"
    );
    assert_eq!(up0.count("DELETE"), 2, "discovery's and the refused one");
    // The refusal is audited like any upstream failure.
    let recs = env.take_audit();
    let call = recs
        .iter()
        .find(|r| r.method == "tools/call")
        .expect("a record");
    assert_eq!(call.upstream.as_deref(), Some("up0"), "{call:?}");
}
