//! Resolves the upstream's base URL from `servers[0]` and the configured override.

use serde_json::Value;

use crate::BridgeError;

/// Returns the base URL (no trailing slash) and its path (`""` or `/v3`).
///
/// With a configured `base_url`: an absolute `servers[0].url` is replaced by it, and a
/// relative one is resolved against it the RFC 3986 way (`/v3` replaces the path, `v3`
/// is appended). Without one, `servers[0].url` must itself be absolute http(s).
pub(crate) fn resolve(
    doc: &Value,
    configured: Option<&str>,
) -> Result<(String, String), BridgeError> {
    let server = doc.pointer("/servers/0");
    let server_url = server
        .and_then(|s| s.get("url"))
        .and_then(Value::as_str)
        .map(|u| substitute(u, server));
    let url = match (configured, server_url) {
        (Some(base), Some(rel)) if !is_absolute(&rel) => {
            let (origin, path) = split(base)?;
            if rel.starts_with('/') {
                format!("{origin}{rel}")
            } else {
                let rel = rel.trim_start_matches("./");
                format!("{origin}{}/{rel}", path.trim_end_matches('/'))
            }
        }
        (Some(base), _) => base.to_owned(),
        (None, Some(url)) if is_absolute(&url) => url,
        (None, Some(url)) => {
            return Err(BridgeError::BaseUrl(format!(
                "servers[0].url {url:?} is relative and no base_url is configured"
            )));
        }
        (None, None) => {
            return Err(BridgeError::BaseUrl(
                "the document has no servers and no base_url is configured".into(),
            ));
        }
    };
    let (origin, path) = split(&url)?;
    let path = path.trim_end_matches('/').to_owned();
    Ok((format!("{origin}{path}"), path))
}

/// `{variable}`s in a server URL take their `default`.
fn substitute(url: &str, server: Option<&Value>) -> String {
    let mut out = url.to_owned();
    let vars = server
        .and_then(|s| s.get("variables"))
        .and_then(Value::as_object);
    for (name, var) in vars.into_iter().flatten() {
        if let Some(default) = var.get("default").and_then(Value::as_str) {
            out = out.replace(&format!("{{{name}}}"), default);
        }
    }
    out
}

fn is_absolute(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// `https://host:8443/api` → (`https://host:8443`, `/api`), refusing anything but a
/// plain absolute http(s) URL: no credentials, query, fragment or whitespace.
fn split(url: &str) -> Result<(String, &str), BridgeError> {
    let bad = |why: &str| BridgeError::BaseUrl(format!("{url:?} {why}"));
    let lower = url.to_ascii_lowercase();
    let scheme_len = if lower.starts_with("https://") {
        8
    } else if lower.starts_with("http://") {
        7
    } else {
        return Err(bad("is not an absolute http(s) URL"));
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control())
        || url.contains(['?', '#', '{', '}'])
    {
        return Err(bad(
            "has whitespace, a query, a fragment or an unresolved variable",
        ));
    }
    let rest = &url[scheme_len..];
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() {
        return Err(bad("has no host"));
    }
    if authority.contains('@') {
        return Err(bad(
            "carries credentials; configure them as delegation instead",
        ));
    }
    Ok((format!("{}{authority}", &lower[..scheme_len]), path))
}
