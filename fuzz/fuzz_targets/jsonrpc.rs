//! The JSON-RPC envelope (`jsonrpc::Message::parse`) and the `tools/call` routing rewrite
//! (`mcp::tools_call_params`) on arbitrary bytes.
//!
//! Differential: a `tools/call` the gateway accepts and routes must be rewritten to params
//! that are the same JSON object but for `name`, which is the upstream's tool name, and the
//! upstream-bound message built from them must itself be an acceptable message.
#![no_main]

use std::sync::OnceLock;

use dataplane::jsonrpc::{Kind, Message};
use dataplane::mcp::tools_call_params;
use dataplane::snapshot::{ToolRoute, ToolTable};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

fn table() -> &'static ToolTable {
    static T: OnceLock<ToolTable> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = ToolTable::default();
        for (i, (ns, up)) in [("ns_echo", "echo"), ("ns_a\"b", "a\\b\u{1F600}"), ("x", "")]
            .into_iter()
            .enumerate()
        {
            t.routes.insert(
                ns.to_owned(),
                ToolRoute {
                    upstream: i,
                    upstream_name: up.to_owned(),
                    definition: RawValue::from_string("{}".to_owned()).expect("valid JSON"),
                    param_headers: Vec::new(),
                },
            );
            t.order.push(ns.to_owned());
        }
        t
    })
}

fuzz_target!(|data: &[u8]| {
    let t = table();
    // The routing rewrite on arbitrary params, not only those of an accepted envelope.
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(raw) = serde_json::from_str::<&RawValue>(s)
    {
        let _ = tools_call_params(Some(raw), t);
    }
    let Ok(m) = Message::parse(data) else {
        return;
    };
    assert_eq!(m.jsonrpc, Some("2.0"));
    match m.kind() {
        Kind::Request | Kind::Notification => assert!(m.result.is_none() && m.error.is_none()),
        Kind::Response => assert!(m.id.is_some() && (m.result.is_some() || m.error.is_some())),
    }
    if m.method.as_deref() != Some("tools/call") {
        return;
    }
    let Some((route, params)) = tools_call_params(m.params, t) else {
        return;
    };
    let mut before: Map<String, Value> = match m.params.map(|p| serde_json::from_str(p.get())) {
        Some(Ok(v)) => v,
        // A number serde_json cannot hold as a Value (e.g. 1e999) is still relayed raw.
        _ => return,
    };
    let after: Map<String, Value> =
        serde_json::from_str(&params).expect("rewritten params are a JSON object");
    assert_eq!(
        after.get("name"),
        Some(&Value::String(route.upstream_name.clone()))
    );
    before.insert(
        "name".to_owned(),
        Value::String(route.upstream_name.clone()),
    );
    assert_eq!(before, after, "params changed beyond name");
    let upstream = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{params}}}"#);
    let m2 = Message::parse(upstream.as_bytes())
        .unwrap_or_else(|e| panic!("upstream-bound message refused: {e:?}: {upstream}"));
    assert_eq!(m2.kind(), Kind::Request);
});
