//! JSON-RPC rewriting between the agent's view and an upstream's: tool names and ids.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::jsonrpc::{self, Message};
use crate::snapshot::{ToolRoute, ToolTable};

/// The merged `tools/list` result, from the snapshot's table.
pub fn tools_list(
    id: &RawValue,
    table: &ToolTable,
    mut visible: impl FnMut(&str) -> bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + table.order.len() * 256);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id.get().as_bytes());
    out.extend_from_slice(br#","result":{"tools":["#);
    let mut first = true;
    for name in &table.order {
        if let Some(r) = table.routes.get(name)
            && visible(name)
        {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(r.definition.get().as_bytes());
        }
    }
    out.extend_from_slice(b"]}}");
    out
}

/// Route a `tools/call` by exact name and rewrite `params.name` to the upstream's name.
pub fn tools_call_params<'t>(
    params: Option<&RawValue>,
    table: &'t ToolTable,
) -> Option<(&'t ToolRoute, String)> {
    route_call(params, table).map(|r| (r.route, r.params))
}

/// A routed `tools/call`, from one parse of its params.
#[derive(Debug)]
pub struct RoutedCall<'t> {
    /// The namespaced name (the routing table's key).
    pub name: &'t str,
    pub route: &'t ToolRoute,
    /// The params with `name` rewritten to the upstream's tool name.
    pub params: String,
    /// The raw `arguments`, for policies that read them.
    pub arguments: Option<Box<RawValue>>,
}

/// Route a `tools/call` by exact name, parsing its params once.
pub fn route_call<'t>(params: Option<&RawValue>, table: &'t ToolTable) -> Option<RoutedCall<'t>> {
    let params = params?;
    let mut map: BTreeMap<Cow<'_, str>, &RawValue> = serde_json::from_str(params.get()).ok()?;
    let name_raw = map.get("name")?;
    let name: Cow<'_, str> = serde_json::from_str(name_raw.get()).ok()?;
    let (key, route) = table.routes.get_key_value(name.as_ref())?;
    let arguments = map.get("arguments").map(|a| (*a).to_owned());
    let new_name = serde_json::value::to_raw_value(&route.upstream_name).ok()?;
    map.insert(Cow::Borrowed("name"), &new_name);
    let s = serde_json::to_string(&map).ok()?;
    Some(RoutedCall {
        name: key,
        route,
        params: s,
        arguments,
    })
}

#[derive(Serialize)]
struct Out<'a> {
    jsonrpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a RawValue>,
}

/// Re-serialize a message with another id (and optionally other params).
pub fn reframe(msg: &Message<'_>, id: Option<&RawValue>, params: Option<&RawValue>) -> Vec<u8> {
    let o = Out {
        jsonrpc: "2.0",
        id,
        method: msg.method.as_deref(),
        params: params.or(msg.params),
        result: msg.result,
        error: msg.error,
    };
    serde_json::to_vec(&o).unwrap_or_default()
}

/// A request to the upstream with a gateway-assigned id.
pub fn upstream_request(gid: u64, method: &str, params: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(64 + params.len());
    v.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    v.extend_from_slice(gid.to_string().as_bytes());
    v.extend_from_slice(br#","method":"#);
    v.extend_from_slice(serde_json::to_string(method).unwrap_or_default().as_bytes());
    v.extend_from_slice(br#","params":"#);
    v.extend_from_slice(params.as_bytes());
    v.push(b'}');
    v
}

/// The `name` of a `tools/call`'s params, if it is a string (for records; routing is exact).
pub fn tool_name(params: Option<&RawValue>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct P {
        name: Option<String>,
    }
    let p: P = serde_json::from_str(params?.get()).ok()?;
    p.name.map(|n| n.chars().take(128).collect())
}

/// Server→client request ids are made unique across upstreams: `"w<upstream>:<original JSON id>"`.
pub fn wrap_server_id(upstream: u32, id: &RawValue) -> Box<RawValue> {
    let s = format!("w{upstream}:{}", id.get());
    jsonrpc::raw(serde_json::to_string(&s).unwrap_or_default()).unwrap_or_default()
}

/// Undo `wrap_server_id`: the upstream and its original id.
pub fn unwrap_server_id(id: &RawValue) -> Option<(u32, Box<RawValue>)> {
    let s: String = serde_json::from_str(id.get()).ok()?;
    let rest = s.strip_prefix('w')?;
    let (u, orig) = rest.split_once(':')?;
    let u: u32 = u.parse().ok()?;
    let raw = jsonrpc::raw(orig.to_owned())?;
    Some((u, raw))
}

/// The numeric id of a response, if it is one of ours.
pub fn gateway_id(id: Option<&RawValue>) -> Option<u64> {
    id.and_then(|i| i.get().parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_round_trip() {
        for orig in ["5", "\"abc\"", "\"w1:x\""] {
            let raw = RawValue::from_string(orig.into()).unwrap();
            let w = wrap_server_id(3, &raw);
            let (u, back) = unwrap_server_id(&w).unwrap();
            assert_eq!(u, 3);
            assert_eq!(back.get(), orig);
        }
        assert!(unwrap_server_id(&RawValue::from_string("7".into()).unwrap()).is_none());
    }

    #[test]
    fn tools_call_is_routed_exactly_and_renamed() {
        let mut t = ToolTable::default();
        t.routes.insert(
            "ns_echo".into(),
            ToolRoute {
                upstream: 0,
                upstream_name: "echo".into(),
                definition: RawValue::from_string("{}".into()).unwrap(),
                param_headers: Vec::new(),
            },
        );
        let p = RawValue::from_string(
            r#"{"name":"ns_echo","arguments":{"a":1},"_meta":{"progressToken":7}}"#.into(),
        )
        .unwrap();
        let (r, s) = tools_call_params(Some(&p), &t).unwrap();
        assert_eq!(r.upstream_name, "echo");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["name"], "echo");
        assert_eq!(v["arguments"]["a"], 1);
        assert_eq!(v["_meta"]["progressToken"], 7);
        for bad in [
            r#"{"name":"ns_ech"}"#,
            r#"{"name":"NS_echo"}"#,
            r#"{"name":"ns_echo "}"#,
            r#"{"name":1}"#,
            r#"{}"#,
        ] {
            let p = RawValue::from_string(bad.into()).unwrap();
            assert!(tools_call_params(Some(&p), &t).is_none(), "{bad}");
        }
    }
}
