//! [`MemUpstream`]'s resources, resource templates, prompts and completions
//! (`UpstreamOptions::items`), the same in both eras and on every upstream, so that two of
//! them collide unless the gateway namespaces them: resources `mem://doc/readme` and
//! `mem://doc/secret`, the template `mem://doc/{name}`, prompts `greet` (argument `who`,
//! with an embedded `mem://doc/readme`) and `secret`, completions of both, and a `link` tool
//! whose result is a `resource_link` to `mem://doc/readme`.

use serde_json::{Value, json};

/// The resources served.
pub const RESOURCES: [&str; 2] = ["mem://doc/readme", "mem://doc/secret"];
/// The one resource template.
pub const TEMPLATE: &str = "mem://doc/{name}";
/// The prompts served.
pub const PROMPTS: [&str; 2] = ["greet", "secret"];

/// The capabilities announced beside `tools`.
pub(crate) fn capabilities(caps: &mut Value) {
    caps["resources"] = json!({"subscribe": true});
    caps["prompts"] = json!({});
    caps["completions"] = json!({});
}

/// The `link` tool's definition, listed after the others (in memory only).
#[cfg(feature = "mem")]
pub(crate) fn link_tool() -> Value {
    json!({"name": "link", "description": "Links the readme.", "inputSchema": {"type": "object"}})
}

/// The `link` tool's result.
#[cfg(feature = "mem")]
pub(crate) fn link_result() -> Value {
    json!({"content": [{"type": "resource_link", "uri": RESOURCES[0], "name": "readme"}]})
}

fn doc(uri: &str) -> Option<&str> {
    uri.strip_prefix("mem://doc/").filter(|n| !n.is_empty())
}

/// The answer to one item method: `Some(Ok(result))`, `Some(Err((code, message)))` (the
/// 2025 codes: -32002 for an unknown resource), or `None` when `method` is not one. The
/// three lists are served `page_size` entries at a time with an opaque `nextCursor`
/// (0: one page), like `tools/list`.
pub(crate) fn answer(
    method: &str,
    params: &Value,
    page_size: usize,
) -> Option<Result<Value, (i64, String)>> {
    let key = match method {
        "resources/list" => "resources",
        "resources/templates/list" => "resourceTemplates",
        "prompts/list" => "prompts",
        _ => return whole(method, params),
    };
    let r = whole(method, params)?;
    Some(r.and_then(|r| page(r, key, page_size, params)))
}

/// One page of the list under `key` in `r`, from `params.cursor`.
fn page(mut r: Value, key: &str, page_size: usize, params: &Value) -> Result<Value, (i64, String)> {
    let all = r[key].as_array().cloned().unwrap_or_default();
    let start = match params.get("cursor") {
        None | Some(Value::Null) => 0,
        Some(c) => match c.as_str().and_then(crate::upstream::tools::decode_cursor) {
            Some(n) if n <= all.len() => n,
            _ => return Err((-32602, "invalid cursor".into())),
        },
    };
    let end = match page_size {
        0 => all.len(),
        n => all.len().min(start + n),
    };
    r[key] = Value::Array(all[start..end].to_vec());
    if end < all.len() {
        r["nextCursor"] = Value::String(crate::upstream::tools::encode_cursor(end));
    }
    Ok(r)
}

fn whole(method: &str, params: &Value) -> Option<Result<Value, (i64, String)>> {
    let s = |p: &str| params.pointer(p).and_then(Value::as_str).unwrap_or("");
    let r = match method {
        "resources/list" => Ok(json!({"resources": RESOURCES.iter().map(|u| json!({
            "uri": u, "name": doc(u), "mimeType": "text/plain"})).collect::<Vec<_>>()})),
        "resources/templates/list" => Ok(json!({"resourceTemplates": [
            {"uriTemplate": TEMPLATE, "name": "doc", "mimeType": "text/plain"}]})),
        "resources/read" => match doc(s("/uri")) {
            Some(n) => Ok(
                json!({"contents": [{"uri": s("/uri"), "mimeType": "text/plain",
                "text": format!("doc {n}")}]}),
            ),
            None => Err((-32002, format!("Resource not found: {}", s("/uri")))),
        },
        "resources/subscribe" | "resources/unsubscribe" => Ok(json!({})),
        "prompts/list" => Ok(json!({"prompts": [
            {"name": "greet", "description": "Greets someone.", "arguments": [{"name": "who", "required": true}]},
            {"name": "secret", "description": "Not for everyone."}]})),
        "prompts/get" => match s("/name") {
            "greet" => Ok(json!({"messages": [
                {"role": "user", "content": {"type": "text", "text": format!("Hello, {}", s("/arguments/who"))}},
                {"role": "user", "content": {"type": "resource", "resource": {
                    "uri": RESOURCES[0], "mimeType": "text/plain", "text": "doc readme"}}}]})),
            "secret" => Ok(json!({"messages": [
                {"role": "user", "content": {"type": "text", "text": "secret prompt"}}]})),
            other => Err((-32602, format!("unknown prompt: {other}"))),
        },
        "completion/complete" => {
            let values: &[&str] = match (s("/ref/type"), s("/ref/name"), s("/ref/uri")) {
                ("ref/prompt", "greet", _) => &["alice", "bob"],
                ("ref/resource", _, TEMPLATE) => &["readme", "secret"],
                _ => return Some(Err((-32602, "unknown completion reference".into()))),
            };
            let typed = s("/argument/value");
            let v: Vec<&str> = values
                .iter()
                .copied()
                .filter(|v| v.starts_with(typed))
                .collect();
            Ok(json!({"completion": {"values": v, "total": v.len(), "hasMore": false}}))
        }
        _ => return None,
    };
    Some(r)
}
