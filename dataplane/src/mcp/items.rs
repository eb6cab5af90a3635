//! Resources, prompts and completions over every upstream: the naming scheme that makes them
//! unambiguous, the exact-lookup table the control plane builds (`ItemTable`), the merged
//! lists, and the rewriting of URIs in what an upstream answers.
//!
//! Prompts are namespaced like tools: `<namespace><name>`, looked up exactly. Resource URIs
//! (and URI templates) are kept verbatim while one upstream serves resources; with several,
//! each upstream's are prefixed `warden://<upstream name>/` and routed by that exact name:
//! the prefix has no template syntax, so an expanded template keeps it, and stripping it gives
//! the upstream's URI back unchanged. URIs an upstream returns (read contents, resource links
//! and embedded resources, `notifications/resources/updated`) get the same prefix.

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The scheme of a gateway-made resource URI.
pub const URI_SCHEME: &str = "warden://";

/// Where a namespaced prompt goes.
#[derive(Debug)]
pub struct PromptRoute {
    pub upstream: usize,
    /// The prompt's name at its upstream.
    pub upstream_name: String,
    /// The definition with the namespaced name, as served in `prompts/list`.
    pub definition: Box<RawValue>,
}

/// One listed resource or resource template, as the client sees it.
#[derive(Debug)]
pub struct ListedResource {
    pub upstream: usize,
    /// The gateway-facing `uri` (or `uriTemplate`): the policy's `context.item`.
    pub uri: String,
    /// The definition with that URI, as served in the list.
    pub definition: Box<RawValue>,
}

/// How resource URIs are named.
#[derive(Debug, Default)]
pub enum UriNaming {
    /// No upstream serves resources.
    #[default]
    Unserved,
    /// One upstream serves resources: its URIs, verbatim.
    Verbatim(usize),
    /// Several: `warden://<upstream name>/<uri>`.
    Prefixed {
        /// Upstream name → its index.
        by_name: HashMap<String, usize>,
        /// Upstream index → its prefix.
        prefixes: HashMap<usize, String>,
    },
}

/// The merged, namespaced resources, templates and prompts of one generation.
#[derive(Debug, Default)]
pub struct ItemTable {
    pub prompts: HashMap<String, PromptRoute>,
    /// Namespaced prompt names in list order.
    pub prompt_order: Vec<String>,
    pub resources: Vec<ListedResource>,
    pub templates: Vec<ListedResource>,
    pub naming: UriNaming,
}

/// The prefix of an upstream's resource URIs when several upstreams serve resources.
pub fn prefix_for(upstream_name: &str) -> String {
    format!("{URI_SCHEME}{upstream_name}/")
}

/// Whether an upstream name can stand in a URI's authority unescaped (else its resources
/// cannot be prefixed, and are not served while several upstreams serve resources).
pub fn valid_prefix_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl ItemTable {
    /// The upstream a gateway-facing URI routes to, and the URI it knows: by exact upstream
    /// name in the prefix (or the one resource upstream). `None`: unknown.
    pub fn route_uri(&self, uri: &str) -> Option<(usize, String)> {
        match &self.naming {
            UriNaming::Unserved => None,
            UriNaming::Verbatim(u) => Some((*u, uri.to_owned())),
            UriNaming::Prefixed { by_name, .. } => {
                let (name, rest) = uri.strip_prefix(URI_SCHEME)?.split_once('/')?;
                let u = by_name.get(name)?;
                (!rest.is_empty()).then(|| (*u, rest.to_owned()))
            }
        }
    }

    /// The prefix this upstream's URIs get, when they get one.
    pub fn uri_prefix(&self, upstream: usize) -> Option<&str> {
        match &self.naming {
            UriNaming::Prefixed { prefixes, .. } => prefixes.get(&upstream).map(String::as_str),
            _ => None,
        }
    }
}

/// A merged list result: `{"<key>":[…]}` from the entries `visible` lets through.
pub fn list_result<'a>(
    id: &RawValue,
    key: &str,
    entries: impl Iterator<Item = &'a RawValue>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id.get().as_bytes());
    out.extend_from_slice(br#","result":{""#);
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(br#"":["#);
    for (i, e) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e.get().as_bytes());
    }
    out.extend_from_slice(b"]}}");
    out
}

/// Put `prefix` on every resource URI in one upstream answer (a response or a notification,
/// already reframed for the client). The body is returned unchanged when it is not JSON.
pub fn outbound(prefix: Option<&str>, body: Vec<u8>) -> Vec<u8> {
    let Some(prefix) = prefix else { return body };
    let Ok(mut v) = serde_json::from_slice::<Map<String, Value>>(&body) else {
        return body;
    };
    if v.get("method").and_then(Value::as_str) == Some("notifications/resources/updated") {
        if let Some(p) = v.get_mut("params") {
            prefix_field(p, "uri", prefix);
        }
    } else if let Some(r) = v.get_mut("result") {
        if let Some(Value::Array(contents)) = r.get_mut("contents") {
            for c in contents {
                prefix_field(c, "uri", prefix);
            }
        }
        prefix_links(r, prefix, 0);
    }
    serde_json::to_vec(&v).unwrap_or(body)
}

fn prefix_field(v: &mut Value, field: &str, prefix: &str) {
    if let Some(Value::String(u)) = v.get_mut(field) {
        *u = format!("{prefix}{u}");
    }
}

/// Resource links and embedded resources anywhere in a result (tool content, prompt
/// messages), to a bounded depth.
fn prefix_links(v: &mut Value, prefix: &str, depth: usize) {
    if depth > 16 {
        return;
    }
    match v {
        Value::Object(o) => {
            match o.get("type").and_then(Value::as_str) {
                Some("resource_link") => {
                    if let Some(Value::String(u)) = o.get_mut("uri") {
                        *u = format!("{prefix}{u}");
                    }
                }
                Some("resource") => {
                    if let Some(r) = o.get_mut("resource") {
                        prefix_field(r, "uri", prefix);
                    }
                }
                _ => {}
            }
            for (k, child) in o.iter_mut() {
                if k != "resource" && (child.is_object() || child.is_array()) {
                    prefix_links(child, prefix, depth + 1);
                }
            }
        }
        Value::Array(a) => {
            for child in a {
                prefix_links(child, prefix, depth + 1);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixed() -> ItemTable {
        ItemTable {
            naming: UriNaming::Prefixed {
                by_name: HashMap::from([("a".into(), 0), ("b".into(), 1)]),
                prefixes: HashMap::from([(0, prefix_for("a")), (1, prefix_for("b"))]),
            },
            ..Default::default()
        }
    }

    #[test]
    fn prefixed_uris_route_by_exact_upstream_name() {
        let t = prefixed();
        assert_eq!(
            t.route_uri("warden://b/file:///x/{y}"),
            Some((1, "file:///x/{y}".into()))
        );
        assert_eq!(
            t.route_uri("warden://a/warden://b/z"),
            Some((0, "warden://b/z".into()))
        );
        for unknown in [
            "warden://c/x",
            "warden://A/x",
            "warden://a/",
            "warden://a",
            "file:///x",
            "",
        ] {
            assert_eq!(t.route_uri(unknown), None, "{unknown}");
        }
        let one = ItemTable {
            naming: UriNaming::Verbatim(3),
            ..Default::default()
        };
        assert_eq!(one.route_uri("mem://x"), Some((3, "mem://x".into())));
        assert_eq!(ItemTable::default().route_uri("mem://x"), None);
    }

    #[test]
    fn upstream_uris_in_answers_get_the_prefix() {
        let body = serde_json::json!({"jsonrpc":"2.0","id":1,"result":{
            "contents":[{"uri":"mem://a","text":"t"}],
            "content":[{"type":"resource_link","uri":"mem://l","name":"l"},
                       {"type":"resource","resource":{"uri":"mem://e","text":"x"}},
                       {"type":"text","text":"mem://not-a-uri-field"}],
            "messages":[{"role":"user","content":{"type":"resource","resource":{"uri":"mem://m"}}}]}});
        let out = outbound(Some("warden://u/"), serde_json::to_vec(&body).unwrap());
        let v: Value = serde_json::from_slice(&out).unwrap();
        let r = &v["result"];
        assert_eq!(r["contents"][0]["uri"], "warden://u/mem://a");
        assert_eq!(r["content"][0]["uri"], "warden://u/mem://l");
        assert_eq!(r["content"][1]["resource"]["uri"], "warden://u/mem://e");
        assert_eq!(r["content"][2]["text"], "mem://not-a-uri-field");
        assert_eq!(
            r["messages"][0]["content"]["resource"]["uri"],
            "warden://u/mem://m"
        );
        let note = br#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"mem://a"}}"#;
        let v: Value =
            serde_json::from_slice(&outbound(Some("warden://u/"), note.to_vec())).unwrap();
        assert_eq!(v["params"]["uri"], "warden://u/mem://a");
        // Verbatim naming leaves the bytes alone.
        assert_eq!(outbound(None, note.to_vec()), note.to_vec());
    }
}
