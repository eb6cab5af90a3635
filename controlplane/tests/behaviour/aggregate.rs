//! Resources, prompts and completions aggregated over two upstreams (`up0` speaks 2025-xx,
//! `up1` 2026-07-28; both serve the same items, so only namespacing tells them apart):
//! merged, namespaced lists; reads, gets and completions routed by exact lookup to the right
//! upstream with its own names; URIs in answers rewritten; each item decided by policy
//! (`context.item`), a hidden item answered like an unknown one; the same for a 2026-07-28
//! client; audit records that name the route.

use std::rc::Rc;

use controlplane::testing::Harness;
use dataplane::audit::{Outcome, Record};
use dataplane::testing::HttpResponse;
use serde_json::{Value, json};
use testkit::{MemIssuer, MemUpstream, UpstreamOptions};

use crate::env::{Env, ISSUER, config_yaml};

const MODERN: &str = "2026-07-28";

/// Default deny; everything permitted but `up0`'s secret resource and prompt (hidden: no
/// policy explains them), and `up1_secret` forbidden with a reason.
const CEDAR: &str = r#"
@id("agg:allow")
permit (
  principal,
  action in [Action::"tools/call", Action::"resources/read", Action::"prompts/get", Action::"completion/complete"],
  resource
)
unless { context has item && (context.item == "warden://up0/mem://doc/secret" || context.item == "up0_secret") };

@id("agg:no-secret-prompt")
@reason("The secret prompt is off.")
forbid (principal, action == Action::"prompts/get", resource == Upstream::"up1")
when { context has item && context.item == "up1_secret" };
"#;

pub(crate) struct Agg {
    pub(crate) env: Env,
    _dir: tempfile::TempDir,
}

pub(crate) fn start() -> Agg {
    let dir = tempfile::tempdir().unwrap();
    let cedar = dir.path().join("agg.cedar");
    std::fs::write(&cedar, CEDAR).unwrap();
    let issuer = Rc::new(MemIssuer::new(ISSUER));
    let opts = |modern| UpstreamOptions {
        items: true,
        modern,
        ..Default::default()
    };
    let legacy = Rc::new(MemUpstream::new(opts(false)));
    let modern = Rc::new(MemUpstream::new(opts(true)));
    let yaml = config_yaml(&[ISSUER], &["up0", "up1"], "").replace(
        "policy:\n  default: allow\n",
        &format!("policy:\n  default: deny\n  files: [{}]\n", cedar.display()),
    );
    let h = Harness::builder(&yaml)
        .issuer(&issuer)
        .upstream("up0", legacy.clone())
        .upstream("up1", modern.clone())
        .build()
        .expect("harness");
    Agg {
        env: Env {
            h,
            issuer,
            upstreams: vec![legacy, modern],
        },
        _dir: dir,
    }
}

/// One request in a 2025-era session.
fn rpc(env: &Env, tok: &str, sid: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc":"2.0","id":"a","method":method,"params":params});
    let r = env.post(Some(tok), Some(sid), &body);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// One stateless 2026-07-28 request with the headers a conforming client sends.
fn modern(env: &Env, tok: &str, method: &str, mut params: Value) -> HttpResponse {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "agg-test", "version": "1"},
    });
    let body = json!({"jsonrpc":"2.0","id":7,"method":method,"params":params});
    let mut r = env
        .mcp("POST")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", method)
        .bearer(tok)
        .json(&body);
    let name = body["params"].get("name").or(body["params"].get("uri"));
    if let Some(n) = name.and_then(Value::as_str) {
        r = r.header("mcp-name", n);
    }
    env.send(r)
}

fn names<'a>(v: &'a Value, list: &str, field: &str) -> Vec<&'a str> {
    v["result"][list]
        .as_array()
        .unwrap_or_else(|| panic!("a {list} array in {v}"))
        .iter()
        .map(|e| e[field].as_str().unwrap())
        .collect()
}

/// The requests of `method` an upstream received, by their params (without the `_meta` a
/// 2026-07-28 upstream is sent).
fn received(up: &MemUpstream, method: &str) -> Vec<Value> {
    (up.requests().into_iter())
        .filter(|r| r.rpc_method() == Some(method))
        .map(|r| {
            let mut p = r.body["params"].clone();
            if let Some(o) = p.as_object_mut() {
                o.remove("_meta");
            }
            p
        })
        .collect()
}

const LISTED_RESOURCES: [&str; 3] = [
    "warden://up0/mem://doc/readme",
    "warden://up1/mem://doc/readme",
    "warden://up1/mem://doc/secret",
];
const LISTED_TEMPLATES: [&str; 2] = [
    "warden://up0/mem://doc/{name}",
    "warden://up1/mem://doc/{name}",
];

#[test]
fn two_upstreams_items_are_merged_namespaced_routed_and_decided_by_policy() {
    let agg = start();
    let env = &agg.env;
    let tok = env.token("alice");
    let sid = env.session(&tok);
    let init = env.post(
        Some(&tok),
        None,
        &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}),
    );
    let caps = &init.json()["result"]["capabilities"];
    for k in ["tools", "resources", "prompts", "completions"] {
        assert!(caps.get(k).is_some(), "{k} in {caps}");
    }
    assert_eq!(caps["resources"]["subscribe"], true, "{caps}");
    let v = rpc(
        env,
        &tok,
        &sid,
        "resources/subscribe",
        json!({"uri": "warden://up0/mem://doc/readme"}),
    );
    assert_eq!(v["result"], json!({}), "{v}");
    assert_eq!(
        received(&env.upstreams[0], "resources/subscribe"),
        [json!({"uri": "mem://doc/readme"})]
    );

    // Lists: merged, namespaced, filtered by the decision a read or get would get.
    let v = rpc(env, &tok, &sid, "prompts/list", json!({}));
    assert_eq!(
        names(&v, "prompts", "name"),
        ["up0_greet", "up1_greet"],
        "{v}"
    );
    let v = rpc(env, &tok, &sid, "resources/list", json!({}));
    assert_eq!(names(&v, "resources", "uri"), LISTED_RESOURCES, "{v}");
    let v = rpc(env, &tok, &sid, "resources/templates/list", json!({}));
    assert_eq!(
        names(&v, "resourceTemplates", "uriTemplate"),
        LISTED_TEMPLATES,
        "{v}"
    );
    // The lists are the catalog's: no client list reached an upstream after discovery.
    let listed = |u: &MemUpstream| u.count("prompts/list") + u.count("resources/list");
    let before = (listed(&env.upstreams[0]), listed(&env.upstreams[1]));

    // A read goes to the upstream its prefix names, with the upstream's own URI; the URI
    // in the answer is the client's.
    let v = rpc(
        env,
        &tok,
        &sid,
        "resources/read",
        json!({"uri": "warden://up1/mem://doc/readme"}),
    );
    assert_eq!(
        v["result"]["contents"][0]["uri"], LISTED_RESOURCES[1],
        "{v}"
    );
    assert_eq!(v["result"]["contents"][0]["text"], "doc readme");
    assert_eq!(
        received(&env.upstreams[1], "resources/read"),
        [json!({"uri": "mem://doc/readme"})]
    );
    assert!(received(&env.upstreams[0], "resources/read").is_empty());
    // A URI from a template keeps the prefix and is routed the same way.
    let v = rpc(
        env,
        &tok,
        &sid,
        "resources/read",
        json!({"uri": "warden://up0/mem://doc/other"}),
    );
    assert_eq!(
        v["result"]["contents"][0]["uri"],
        "warden://up0/mem://doc/other"
    );
    assert_eq!(v["result"]["contents"][0]["text"], "doc other");
    assert_eq!(
        received(&env.upstreams[0], "resources/read"),
        [json!({"uri": "mem://doc/other"})]
    );

    // prompts/get by namespaced name; the embedded resource's URI is the client's.
    let v = rpc(
        env,
        &tok,
        &sid,
        "prompts/get",
        json!({"name": "up1_greet", "arguments": {"who": "bob"}}),
    );
    let msgs = &v["result"]["messages"];
    assert_eq!(msgs[0]["content"]["text"], "Hello, bob", "{v}");
    assert_eq!(msgs[1]["content"]["resource"]["uri"], LISTED_RESOURCES[1]);
    assert_eq!(
        received(&env.upstreams[1], "prompts/get"),
        [json!({"name": "greet", "arguments": {"who": "bob"}})]
    );

    // Completions: a prompt reference and a template reference, each to its upstream.
    let v = rpc(
        env,
        &tok,
        &sid,
        "completion/complete",
        json!({"ref": {"type": "ref/prompt", "name": "up0_greet"}, "argument": {"name": "who", "value": "a"}}),
    );
    assert_eq!(v["result"]["completion"]["values"], json!(["alice"]), "{v}");
    assert_eq!(
        received(&env.upstreams[0], "completion/complete")[0]["ref"],
        json!({"type": "ref/prompt", "name": "greet"})
    );
    let v = rpc(
        env,
        &tok,
        &sid,
        "completion/complete",
        json!({"ref": {"type": "ref/resource", "uri": LISTED_TEMPLATES[1]}, "argument": {"name": "name", "value": "s"}}),
    );
    assert_eq!(
        v["result"]["completion"]["values"],
        json!(["secret"]),
        "{v}"
    );
    assert_eq!(
        received(&env.upstreams[1], "completion/complete")[0]["ref"]["uri"],
        "mem://doc/{name}"
    );

    // A resource link in a tool result carries the client's URI too.
    let v = env.call(&tok, &sid, json!(3), "up0_link", json!({}));
    assert_eq!(v["result"]["content"][0]["uri"], LISTED_RESOURCES[0], "{v}");

    // Denied by a policy with a reason: the reason, and nothing forwarded.
    let v = rpc(
        env,
        &tok,
        &sid,
        "prompts/get",
        json!({"name": "up1_secret"}),
    );
    assert_eq!(v["error"]["code"], -32602, "{v}");
    assert_eq!(v["error"]["message"], "The secret prompt is off.");
    // Hidden (no policy permits it) = unknown: the same answer, byte for byte.
    let hidden = rpc(
        env,
        &tok,
        &sid,
        "prompts/get",
        json!({"name": "up0_secret"}),
    );
    let unknown = rpc(env, &tok, &sid, "prompts/get", json!({"name": "up0_nope"}));
    assert_eq!(hidden, unknown);
    assert_eq!(hidden["error"]["code"], -32602, "{hidden}");
    let hidden = rpc(
        env,
        &tok,
        &sid,
        "resources/read",
        json!({"uri": "warden://up0/mem://doc/secret"}),
    );
    let unknown = rpc(
        env,
        &tok,
        &sid,
        "resources/read",
        json!({"uri": "warden://up9/mem://doc/secret"}),
    );
    assert_eq!(hidden, unknown);
    let bare = rpc(
        env,
        &tok,
        &sid,
        "resources/read",
        json!({"uri": "mem://doc/secret"}),
    );
    assert_eq!(
        hidden, bare,
        "an unprefixed URI is unknown with two resource upstreams"
    );
    for up in &env.upstreams {
        let gets = received(up, "prompts/get");
        assert!(
            gets.iter().all(|p| p["name"] != "secret"),
            "a hidden or denied prompt was forwarded: {gets:?}"
        );
    }
    assert_eq!(received(&env.upstreams[0], "resources/read").len(), 1);
    assert_eq!(
        (listed(&env.upstreams[0]), listed(&env.upstreams[1])),
        before
    );

    // Audit: one record per routed request, naming the upstream and its own name for the
    // item beside the client's; lists are local and not recorded, like tools/list.
    let recs = env.take_audit();
    let of = |m: &str| -> Vec<&Record> { recs.iter().filter(|r| r.method == m).collect() };
    assert!(of("prompts/list").is_empty() && of("resources/list").is_empty());
    let reads = of("resources/read");
    assert_eq!(reads.len(), 5, "{reads:#?}");
    let (served, refused): (Vec<&Record>, Vec<&Record>) =
        reads.iter().partition(|r| r.decision == Outcome::Allow);
    assert_eq!(served.len(), 2);
    // Hidden and unknown reads are on record as refused, without a route (as tools are).
    assert!(
        refused
            .iter()
            .all(|r| r.decision == Outcome::Deny && r.upstream.is_none())
    );
    let r = served[0];
    assert_eq!(r.upstream.as_deref(), Some("up1"));
    assert_eq!(r.tool.as_deref(), Some(LISTED_RESOURCES[1]));
    assert_eq!(r.upstream_tool.as_deref(), Some("mem://doc/readme"));
    assert_eq!(r.decision, Outcome::Allow);
    assert_eq!(r.policy_ids, ["agg:allow"]);
    assert_eq!(r.upstream_protocol.as_deref(), Some(MODERN));
    let gets = of("prompts/get");
    let denied: Vec<_> = gets
        .iter()
        .filter(|r| r.decision == Outcome::Deny)
        .collect();
    assert_eq!(denied.len(), 3, "{gets:#?}");
    let d = denied
        .iter()
        .find(|r| r.tool.as_deref() == Some("up1_secret"))
        .unwrap();
    assert_eq!(d.upstream.as_deref(), Some("up1"));
    assert_eq!(d.upstream_tool.as_deref(), Some("secret"));
    assert_eq!(d.policy_ids, ["agg:no-secret-prompt"]);
    // A denial names both revisions too.
    assert_eq!(d.protocol.as_deref(), Some("2025-06-18"));
    assert_eq!(d.upstream_protocol.as_deref(), Some(MODERN));
    let completes = of("completion/complete");
    assert_eq!(completes[0].upstream.as_deref(), Some("up0"));
    assert_eq!(completes[0].upstream_tool.as_deref(), Some("greet"));
}

#[test]
fn a_modern_client_sees_the_same_items() {
    let agg = start();
    let env = &agg.env;
    let tok = env.token("alice");
    let r = modern(env, &tok, "prompts/list", json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        names(&v, "prompts", "name"),
        ["up0_greet", "up1_greet"],
        "{v}"
    );
    assert_eq!(v["result"]["cacheScope"], "private");
    assert_eq!(v["result"]["resultType"], "complete");
    let v = modern(env, &tok, "resources/list", json!({})).json();
    assert_eq!(names(&v, "resources", "uri"), LISTED_RESOURCES, "{v}");
    let v = modern(env, &tok, "resources/templates/list", json!({})).json();
    assert_eq!(
        names(&v, "resourceTemplates", "uriTemplate"),
        LISTED_TEMPLATES
    );
    // A read of each upstream: the 2026 one is sent its own URI in Mcp-Name too.
    for (i, up) in env.upstreams.iter().enumerate() {
        let uri = format!("warden://up{i}/mem://doc/readme");
        let r = modern(env, &tok, "resources/read", json!({"uri": uri}));
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["result"]["contents"][0]["uri"], uri.as_str(), "{v}");
        assert_eq!(v["result"]["resultType"], "complete");
        assert_eq!(
            received(up, "resources/read")
                .last()
                .map(|p| p["uri"].clone()),
            Some(json!("mem://doc/readme"))
        );
    }
    let sent = env.upstreams[1]
        .requests()
        .into_iter()
        .rfind(|r| r.rpc_method() == Some("resources/read"))
        .unwrap();
    assert_eq!(sent.header("mcp-name"), Some("mem://doc/readme"));
    let v = modern(
        env,
        &tok,
        "prompts/get",
        json!({"name": "up0_greet", "arguments": {"who": "eve"}}),
    )
    .json();
    assert_eq!(
        v["result"]["messages"][0]["content"]["text"], "Hello, eve",
        "{v}"
    );
    assert_eq!(
        v["result"]["messages"][1]["content"]["resource"]["uri"],
        LISTED_RESOURCES[0]
    );
    // Denied with its reason; hidden = unknown; never -32002 to a modern client.
    let v = modern(env, &tok, "prompts/get", json!({"name": "up1_secret"})).json();
    assert_eq!(v["error"]["code"], -32602, "{v}");
    assert_eq!(v["error"]["message"], "The secret prompt is off.");
    let hidden = modern(
        env,
        &tok,
        "resources/read",
        json!({"uri": "warden://up0/mem://doc/secret"}),
    );
    let unknown = modern(
        env,
        &tok,
        "resources/read",
        json!({"uri": "warden://up7/x"}),
    );
    assert_eq!(hidden.status, unknown.status);
    assert_eq!(hidden.json()["error"], unknown.json()["error"]);
    assert_eq!(hidden.json()["error"]["code"], -32602);
    let recs = env.take_audit();
    let read = recs
        .iter()
        .find(|r| r.method == "resources/read" && r.upstream.as_deref() == Some("up0"))
        .unwrap();
    assert_eq!(read.protocol.as_deref(), Some(MODERN));
    assert_eq!(read.upstream_tool.as_deref(), Some("mem://doc/readme"));
}

#[test]
fn one_resource_upstream_keeps_its_uris_verbatim() {
    let env = Env::start_with(
        1,
        UpstreamOptions {
            items: true,
            ..Default::default()
        },
        "",
    );
    let tok = env.token("alice");
    let sid = env.session(&tok);
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
        json!({"uri": "mem://doc/secret"}),
    );
    assert_eq!(v["result"]["contents"][0]["uri"], "mem://doc/secret", "{v}");
    let v = rpc(&env, &tok, &sid, "prompts/list", json!({}));
    assert_eq!(names(&v, "prompts", "name"), ["up0_greet", "up0_secret"]);
    // Not a prefixed URI with one resource upstream: passed on as it is.
    let v = rpc(
        &env,
        &tok,
        &sid,
        "resources/read",
        json!({"uri": "warden://up0/mem://doc/secret"}),
    );
    assert_eq!(
        v["error"]["code"], -32002,
        "the upstream's own not-found: {v}"
    );
    let reads = received(&env.upstreams[0], "resources/read");
    assert_eq!(reads[1]["uri"], "warden://up0/mem://doc/secret");
}
