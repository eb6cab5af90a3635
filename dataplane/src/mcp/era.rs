//! The two eras of MCP on one endpoint. A request whose `_meta` carries
//! `io.modelcontextprotocol/protocolVersion` is *modern* (2026-07-28: stateless, served per
//! request); anything else is *legacy* (2025-xx: `initialize` opens a session). This module
//! tells them apart, checks a modern request's mirrored headers against its body (`-32020`,
//! before anything is decided on them), and holds the revision's vocabulary.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::refusal::Refusal;
use crate::http1::Head;
use crate::jsonrpc::Message;
use crate::snapshot::{ParamHeader, ToolTable};

/// Modern revisions served, newest first.
pub const MODERN_VERSIONS: [&str; 1] = ["2026-07-28"];
/// The per-request `_meta` keys of the modern revision.
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_CLIENT: &str = "io.modelcontextprotocol/clientInfo";
pub const META_SERVER: &str = "io.modelcontextprotocol/serverInfo";
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";

/// Whether `v` is a modern revision this gateway serves.
pub fn is_modern(v: &str) -> bool {
    MODERN_VERSIONS.contains(&v)
}

/// Every revision served, modern first (`server/discover`, `-32022`'s `data.supported`).
pub fn supported_versions() -> Vec<&'static str> {
    let mut v = MODERN_VERSIONS.to_vec();
    v.extend_from_slice(&super::http::SUPPORTED_VERSIONS);
    v
}

/// What a modern request says of its client, from its `_meta`.
#[derive(Debug, Clone)]
pub struct Modern {
    pub version: String,
    /// `io.modelcontextprotocol/clientCapabilities` (an object).
    pub capabilities: Value,
    pub client_info: Option<Value>,
}

/// The modern metadata of a request: `Ok(None)` for a legacy request (no
/// `_meta.io.modelcontextprotocol/protocolVersion`), a refusal for a malformed or
/// unsupported modern one (HTTP 400). `header` is the request's `MCP-Protocol-Version`:
/// it must be present and equal the body's version (`-32020`) before the version itself is
/// judged (`-32022`), so a client whose header and body disagree learns that first.
pub(crate) fn detect(
    params: Option<&RawValue>,
    header: Option<&str>,
) -> Result<Option<Modern>, Refusal> {
    #[derive(serde::Deserialize)]
    struct Params<'a> {
        #[serde(borrow, rename = "_meta")]
        meta: Option<&'a RawValue>,
    }
    let Some(p) = params else { return Ok(None) };
    // Params that are not an object, or a `_meta` that is not one, are not modern.
    let Ok(Params { meta: Some(meta) }) = serde_json::from_str::<Params<'_>>(p.get()) else {
        return Ok(None);
    };
    let Ok(mut meta) = serde_json::from_str::<Map<String, Value>>(meta.get()) else {
        return Ok(None);
    };
    let Some(v) = meta.remove(META_VERSION) else {
        return Ok(None);
    };
    let Value::String(version) = v else {
        return Err(Refusal::modern_meta_invalid(format!(
            "_meta[\"{META_VERSION}\"] must be a string"
        )));
    };
    match header.map(str::trim) {
        None => {
            return Err(Refusal::header_mismatch(
                "MCP-Protocol-Version header is required",
            ));
        }
        Some(h) if h != version => {
            return Err(Refusal::header_mismatch(format!(
                "MCP-Protocol-Version header value '{}' does not match body value '{}'",
                clip(h),
                clip(&version)
            )));
        }
        Some(_) => {}
    }
    let capabilities = match meta.remove(META_CAPABILITIES) {
        Some(c @ Value::Object(_)) => c,
        Some(_) => {
            return Err(Refusal::modern_meta_invalid(format!(
                "_meta[\"{META_CAPABILITIES}\"] must be an object"
            )));
        }
        None => {
            return Err(Refusal::modern_meta_invalid(format!(
                "_meta[\"{META_CAPABILITIES}\"] is required"
            )));
        }
    };
    if !is_modern(&version) {
        return Err(Refusal::unsupported_version(&version));
    }
    Ok(Some(Modern {
        version,
        capabilities,
        client_info: meta.remove(META_CLIENT),
    }))
}

/// The body field `Mcp-Name` mirrors, for the methods that require it.
pub fn name_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// Check a modern request's headers against its body (2026-07-28 "Server Validation"):
/// `MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name` and, for a tool that declares
/// `x-mcp-header` parameters, each `Mcp-Param-*` — missing, repeated, undecodable or
/// different from the body: `-32020`, HTTP 400, and nothing is forwarded.
pub(crate) fn check_headers(
    head: &Head,
    msg: &Message<'_>,
    modern: &Modern,
    tools: &ToolTable,
) -> Result<(), Refusal> {
    let version = single(head, "mcp-protocol-version", "MCP-Protocol-Version")?
        .ok_or_else(|| Refusal::header_mismatch("MCP-Protocol-Version header is required"))?;
    if version != modern.version {
        return Err(Refusal::header_mismatch(format!(
            "MCP-Protocol-Version header value '{}' does not match body value '{}'",
            clip(version),
            modern.version
        )));
    }
    let method = msg.method.as_deref().unwrap_or("");
    let header_method = single(head, "mcp-method", "Mcp-Method")?
        .ok_or_else(|| Refusal::header_mismatch("Mcp-Method header is required"))?;
    if header_method != method {
        return Err(Refusal::header_mismatch(format!(
            "Mcp-Method header value '{}' does not match body value '{}'",
            clip(header_method),
            clip(method)
        )));
    }
    let params: Map<String, Value> = msg
        .params
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or_default();
    if let Some(field) = name_field(method) {
        let raw = single(head, "mcp-name", "Mcp-Name")?
            .ok_or_else(|| Refusal::header_mismatch("Mcp-Name header is required"))?;
        let header = decode_value(raw, "Mcp-Name")?;
        let body = params.get(field).and_then(Value::as_str).unwrap_or("");
        if header != body {
            return Err(Refusal::header_mismatch(format!(
                "Mcp-Name header value '{}' does not match body value '{}'",
                clip(&header),
                clip(body)
            )));
        }
        if method == "tools/call"
            && let Some(route) = tools.routes.get(body)
        {
            let args = params.get("arguments").unwrap_or(&Value::Null);
            for p in &route.param_headers {
                check_param(head, p, args)?;
            }
        }
    }
    Ok(())
}

/// One declared `x-mcp-header` parameter: present in the body ⇔ present in the headers,
/// and equal (integers compared as numbers).
fn check_param(head: &Head, p: &ParamHeader, args: &Value) -> Result<(), Refusal> {
    let key = format!("mcp-param-{}", p.lower);
    let shown = format!("Mcp-Param-{}", p.name);
    let header = single(head, &key, &shown)?;
    let body = p.path.iter().try_fold(args, |v, k| v.get(k));
    match (header, body.filter(|v| !v.is_null())) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(Refusal::header_mismatch(format!(
            "{shown} header is required: the argument is present in the body"
        ))),
        (Some(_), None) => Err(Refusal::header_mismatch(format!(
            "{shown} header is present but the argument is not"
        ))),
        (Some(raw), Some(v)) => {
            let h = decode_value(raw, &shown)?;
            let same = match v {
                Value::String(s) => *s == h,
                Value::Bool(b) => h == if *b { "true" } else { "false" },
                Value::Number(n) => match (n.as_f64(), h.trim().parse::<f64>()) {
                    (Some(a), Ok(b)) => a == b,
                    _ => false,
                },
                _ => false,
            };
            if same {
                Ok(())
            } else {
                Err(Refusal::header_mismatch(format!(
                    "{shown} header value '{}' does not match the body",
                    clip(&h)
                )))
            }
        }
    }
}

/// A header's only value as text; repeated or not visible ASCII is a mismatch.
fn single<'h>(head: &'h Head, key: &str, shown: &str) -> Result<Option<&'h str>, Refusal> {
    if head.count(key) > 1 {
        return Err(Refusal::header_mismatch(format!("repeated {shown} header")));
    }
    let Some((_, v)) = head.headers.iter().find(|(n, _)| n == key) else {
        return Ok(None);
    };
    if !v.iter().all(|b| *b == b'\t' || (0x20..0x7f).contains(b)) {
        return Err(Refusal::header_mismatch(format!(
            "{shown} header contains invalid characters"
        )));
    }
    Ok(std::str::from_utf8(v).ok())
}

/// A mirrored value as sent: plain, or `=?base64?…?=` (UTF-8 inside).
pub(crate) fn decode_value(raw: &str, shown: &str) -> Result<String, Refusal> {
    let Some(inner) = raw
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    else {
        return Ok(raw.to_owned());
    };
    STANDARD
        .decode(inner)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            Refusal::header_mismatch(format!("{shown} header has invalid Base64 encoding"))
        })
}

/// A value as a header carries it: plain when it is header-safe, `=?base64?…?=` otherwise.
pub fn encode_value(v: &str) -> String {
    let sentinel = v.starts_with("=?base64?") && v.ends_with("?=");
    let padded = v.starts_with(' ') || v.ends_with(' ');
    let visible = v.bytes().all(|b| (0x20..0x7f).contains(&b));
    let safe = !v.is_empty() && visible && !padded && !sentinel;
    if safe {
        v.to_owned()
    } else {
        format!("=?base64?{}?=", STANDARD.encode(v))
    }
}

/// The `Mcp-Param-*` headers for a modern upstream, from the call's (checked) arguments.
pub(crate) fn param_headers(params: &[ParamHeader], args: &Value) -> Vec<(String, String)> {
    params
        .iter()
        .filter_map(|p| {
            let v = p.path.iter().try_fold(args, |v, k| v.get(k))?;
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                _ => return None,
            };
            Some((format!("mcp-param-{}", p.lower), encode_value(&text)))
        })
        .collect()
}

/// Untrusted text echoed in an error: at most 64 characters.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
#[path = "era_tests.rs"]
mod tests;
