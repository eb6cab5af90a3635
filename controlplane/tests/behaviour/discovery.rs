//! What discovery finds: every page of an upstream's `tools/list`, `resources/list`,
//! `resources/templates/list` and `prompts/list` (following `nextCursor`), and an upstream
//! that serves resources and prompts but lists no tool, whose items are decided by policy
//! like any other's (default allow or deny, rules, `.cedar` files).

use std::rc::Rc;

use controlplane::testing::Harness;
use serde_json::{Value, json};
use testkit::{MemIssuer, MemUpstream, UpstreamOptions};

use crate::env::{Env, ISSUER, config_yaml, listed_tools};

/// One request in a 2025-era session: its JSON-RPC answer.
fn rpc(env: &Env, tok: &str, sid: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc":"2.0","id":"d","method":method,"params":params});
    let r = env.post(Some(tok), Some(sid), &body);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn names(v: &Value, list: &str, field: &str) -> Vec<String> {
    v["result"][list]
        .as_array()
        .unwrap_or_else(|| panic!("a {list} array in {v}"))
        .iter()
        .map(|e| e[field].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_page_of_every_list_is_discovered() {
    // One entry per page: 5 built-in tools and 3 extra (`link` ends the last page); 2
    // resources, 1 template, 2 prompts.
    let opts = UpstreamOptions {
        items: true,
        tools: 3,
        page_size: 1,
        ..Default::default()
    };
    let env = Env::start_with(1, opts, "");
    let up = &env.upstreams[0];
    assert_eq!(up.count("tools/list"), 8, "one request per page");
    assert_eq!(up.count("resources/list"), 2);
    assert_eq!(up.count("resources/templates/list"), 1);
    assert_eq!(up.count("prompts/list"), 2);
    // Each page after the first asked with the cursor the previous one gave.
    let cursors: Vec<Value> = (up.requests().into_iter())
        .filter(|r| r.rpc_method() == Some("prompts/list"))
        .map(|r| r.body["params"]["cursor"].clone())
        .collect();
    assert_eq!(cursors[0], Value::Null);
    assert!(cursors[1].is_string(), "{cursors:?}");

    let tok = env.token("alice");
    let sid = env.session(&tok);
    let v = rpc(&env, &tok, &sid, "tools/list", json!({}));
    let tools = listed_tools(&v);
    assert_eq!(tools.len(), 9, "{tools:?}");
    for t in ["up0_echo", "up0_tool_0", "up0_tool_2", "up0_link"] {
        assert!(tools.contains(&t), "{t} in {tools:?}");
    }
    let v = rpc(&env, &tok, &sid, "resources/list", json!({}));
    assert_eq!(
        names(&v, "resources", "uri"),
        ["mem://doc/readme", "mem://doc/secret"]
    );
    let v = rpc(&env, &tok, &sid, "resources/templates/list", json!({}));
    assert_eq!(
        names(&v, "resourceTemplates", "uriTemplate"),
        ["mem://doc/{name}"]
    );
    let v = rpc(&env, &tok, &sid, "prompts/list", json!({}));
    assert_eq!(names(&v, "prompts", "name"), ["up0_greet", "up0_secret"]);
    // The paged items are served, not only listed.
    let v = rpc(
        &env,
        &tok,
        &sid,
        "prompts/get",
        json!({"name": "up0_secret"}),
    );
    assert!(v["result"]["messages"].is_array(), "{v}");
}

/// `up0` with tools and nothing else, `up1` with resources and prompts and no tool, under
/// `policy` (the YAML `policy:` section).
fn items_only(policy: &str, cedar: Option<&str>) -> (Env, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut section = policy.to_owned();
    if let Some(text) = cedar {
        let f = dir.path().join("items.cedar");
        std::fs::write(&f, text).unwrap();
        section.push_str(&format!("  files: [{}]\n", f.display()));
    }
    let issuer = Rc::new(MemIssuer::new(ISSUER));
    let tools = Rc::new(MemUpstream::default());
    let items = Rc::new(MemUpstream::new(UpstreamOptions {
        items: true,
        items_only: true,
        ..Default::default()
    }));
    let yaml = config_yaml(&[ISSUER], &["up0", "up1"], "")
        .replace("policy:\n  default: allow\n", &section);
    let h = Harness::builder(&yaml)
        .issuer(&issuer)
        .upstream("up0", tools.clone())
        .upstream("up1", items.clone())
        .build()
        .expect("harness");
    let env = Env {
        h,
        issuer,
        upstreams: vec![tools, items],
    };
    (env, dir)
}

#[test]
fn an_upstream_with_items_and_no_tools_is_decided_by_policy() {
    // Default allow: its items are listed and served like any upstream's.
    let (env, _dir) = items_only("policy:\n  default: allow\n", None);
    let up1 = &env.upstreams[1];
    assert_eq!(up1.count("tools/list"), 0, "it announced no tools");
    let tok = env.token("alice");
    let sid = env.session(&tok);
    let v = rpc(&env, &tok, &sid, "tools/list", json!({}));
    assert!(
        listed_tools(&v).iter().all(|t| t.starts_with("up0_")),
        "{v}"
    );
    let v = rpc(&env, &tok, &sid, "prompts/list", json!({}));
    assert_eq!(names(&v, "prompts", "name"), ["up1_greet", "up1_secret"]);
    let v = rpc(&env, &tok, &sid, "resources/list", json!({}));
    assert_eq!(
        names(&v, "resources", "uri"),
        ["mem://doc/readme", "mem://doc/secret"]
    );
    let v = rpc(
        &env,
        &tok,
        &sid,
        "resources/read",
        json!({"uri": "mem://doc/readme"}),
    );
    assert_eq!(v["result"]["contents"][0]["text"], "doc readme", "{v}");
    let recs = env.take_audit();
    let read = recs.iter().find(|r| r.method == "resources/read").unwrap();
    assert_eq!(read.upstream.as_deref(), Some("up1"));
    assert!(
        read.policy_ids.contains(&"default-allow".to_owned()),
        "{read:?}"
    );

    // Default deny with one permit: exactly what it permits, the rest hidden.
    let cedar = r#"
@id("greet-only")
permit (principal, action == Action::"prompts/get", resource == Upstream::"up1")
when { context has item && context.item == "up1_greet" };
"#;
    let (env, _dir) = items_only("policy:\n  default: deny\n", Some(cedar));
    let tok = env.token("alice");
    let sid = env.session(&tok);
    let v = rpc(&env, &tok, &sid, "prompts/list", json!({}));
    assert_eq!(names(&v, "prompts", "name"), ["up1_greet"]);
    let v = rpc(&env, &tok, &sid, "resources/list", json!({}));
    assert!(names(&v, "resources", "uri").is_empty(), "{v}");
    let v = rpc(
        &env,
        &tok,
        &sid,
        "prompts/get",
        json!({"name": "up1_greet", "arguments": {"who": "bob"}}),
    );
    assert_eq!(
        v["result"]["messages"][0]["content"]["text"], "Hello, bob",
        "{v}"
    );
    let v = rpc(
        &env,
        &tok,
        &sid,
        "resources/read",
        json!({"uri": "mem://doc/readme"}),
    );
    assert_eq!(
        v["error"]["code"], -32602,
        "hidden like an unknown one: {v}"
    );
    assert_eq!(env.upstreams[1].count("resources/read"), 0);
}
