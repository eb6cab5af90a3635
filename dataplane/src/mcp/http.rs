//! HTTP-level vocabulary of the MCP endpoint: versions, challenges, CORS, Origin/Host rules,
//! metric labels. Used by the steps; imports none of them.

use crate::http1::{Method, Response};
use crate::snapshot::Settings;

/// Protocol revisions served (stateful Streamable HTTP), newest first.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// The revision Warden asks a 2025-era upstream for when it opens a session: the newest it
/// serves. The upstream may answer an older one; any of [`SUPPORTED_VERSIONS`] is accepted.
pub const UPSTREAM_VERSION: &str = SUPPORTED_VERSIONS[0];

/// Whether an upstream's answer to `initialize` names a revision Warden speaks.
pub fn speaks(version: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&version)
}

/// The version to answer `initialize` with: the client's if supported, else the newest.
pub fn negotiate_version(requested: Option<&str>) -> &'static str {
    requested
        .and_then(|r| SUPPORTED_VERSIONS.iter().find(|v| **v == r).copied())
        .unwrap_or(SUPPORTED_VERSIONS[0])
}

/// `{"error": code, "error_description": text}` (RFC 6749 §5.2 shape) with a status.
pub fn error_json(status: u16, code: &str, description: &str) -> Response {
    let body = serde_json::json!({"error": code, "error_description": description});
    Response::json(status, serde_json::to_vec(&body).unwrap_or_default())
}

/// A 401 with the RFC 6750 / RFC 9728 challenge MCP clients follow.
pub fn challenge(st: &Settings, error: Option<&str>) -> Response {
    let mut v = String::from("Bearer ");
    if let Some(e) = error {
        v.push_str(&format!("error=\"{e}\", "));
    }
    v.push_str(&format!(
        "resource_metadata=\"{}\"",
        st.resource_metadata_url
    ));
    if !st.challenge_scope.is_empty() {
        v.push_str(&format!(", scope=\"{}\"", st.challenge_scope));
    }
    let desc = if error.is_some() {
        "the access token is invalid"
    } else {
        "authentication required"
    };
    let mut r = error_json(401, error.unwrap_or("unauthorized"), desc);
    r.headers.push(("www-authenticate", v));
    // RFC 9449 §7.1: a resource server that takes DPoP says so, with the algorithms.
    if let Some(algs) = &st.dpop_algs {
        r.headers.push((
            "www-authenticate",
            format!(
                "DPoP algs=\"{algs}\", resource_metadata=\"{}\"",
                st.resource_metadata_url
            ),
        ));
    }
    r
}

/// A 401 for a DPoP request (RFC 9449 §7.1): the `DPoP` challenge with `error`
/// (`invalid_dpop_proof`, `use_dpop_nonce`), its description and `algs`, then the Bearer
/// challenge with `resource_metadata` for clients that need discovery.
pub fn dpop_challenge(st: &Settings, error: &str, description: &str) -> Response {
    let algs = st.dpop_algs.as_deref().unwrap_or("ES256");
    let mut r = error_json(401, error, description);
    r.headers.push((
        "www-authenticate",
        format!(
            "DPoP error=\"{error}\", error_description=\"{description}\", algs=\"{algs}\", resource_metadata=\"{}\"",
            st.resource_metadata_url
        ),
    ));
    let mut bearer = format!("Bearer resource_metadata=\"{}\"", st.resource_metadata_url);
    if !st.challenge_scope.is_empty() {
        bearer.push_str(&format!(", scope=\"{}\"", st.challenge_scope));
    }
    r.headers.push(("www-authenticate", bearer));
    r
}

/// A 403 step-up challenge (RFC 6750 §3.1, MCP step-up): the scopes are the user's current
/// ones plus those needed, since clients replace their scope set with the challenged one.
pub fn step_up(st: &Settings, scopes: &[String]) -> Response {
    let v = format!(
        "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{}\"",
        scopes.join(" "),
        st.resource_metadata_url
    );
    let mut r = error_json(
        403,
        "insufficient_scope",
        "this call needs scopes the token does not carry",
    );
    r.headers.push(("www-authenticate", v));
    r
}

/// How an `Authorization` header presents its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// RFC 6750.
    Bearer,
    /// RFC 9449 §7.1: a DPoP-bound token, with a proof in the `DPoP` header.
    Dpop,
}

/// The scheme and token of an `Authorization: Bearer|DPoP <token>` value (scheme case-insensitive).
pub fn credentials(v: &str) -> Option<(Scheme, &str)> {
    let (scheme, rest) = v.split_once(' ')?;
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return None;
    };
    let t = rest.trim_matches(' ');
    (!t.is_empty() && !t.contains(' ')).then_some((scheme, t))
}

/// The paths of the protected resource metadata: the root form and the path-suffixed one.
pub fn is_prm_path(st: &Settings, path: &str) -> bool {
    const BASE: &str = "/.well-known/oauth-protected-resource";
    match path.strip_prefix(BASE) {
        Some("") => true,
        Some(rest) => rest == st.mcp_path,
        None => false,
    }
}

/// The Origin to echo in CORS headers, if the request's Origin is allowed.
pub fn cors_origin(st: &Settings, origin: Option<&str>) -> Option<String> {
    let o = origin?;
    let lower = o.to_ascii_lowercase();
    st.allowed_origins
        .iter()
        .any(|a| *a == lower || a == "*")
        .then(|| o.to_owned())
}

/// Whether the Host header names this gateway (DNS-rebinding defence).
pub fn host_allowed(st: &Settings, host: Option<&str>) -> bool {
    if st.allowed_hosts.is_empty() || st.allowed_hosts.iter().any(|h| h == "*") {
        return true;
    }
    let Some(h) = host else { return false };
    let h = h.to_ascii_lowercase();
    st.allowed_hosts.contains(&h)
}

/// CORS preflight answer.
pub fn preflight() -> Response {
    Response::new(204)
        .header("access-control-allow-methods", "GET, POST, DELETE, OPTIONS")
        .header("access-control-allow-headers", "Authorization, DPoP, Content-Type, Accept, Mcp-Session-Id, Mcp-Protocol-Version, Last-Event-ID")
        .header("access-control-max-age", "600")
}

/// Add CORS response headers for an allowed Origin. Never `*`; no credentials (bearer tokens travel in headers).
/// The headers of every event stream the gateway sends: proxies in front must pass events
/// on as they come (`X-Accel-Buffering: no`).
pub fn sse_headers(cors: Option<&str>) -> Vec<(&'static str, String)> {
    let mut h: Vec<(&'static str, String)> = vec![
        ("content-type", "text/event-stream".into()),
        ("cache-control", "no-cache".into()),
        ("x-accel-buffering", "no".into()),
    ];
    add_cors(&mut h, cors);
    h
}

pub fn add_cors(headers: &mut Vec<(&'static str, String)>, origin: Option<&str>) {
    if let Some(o) = origin {
        headers.push(("access-control-allow-origin", o.to_owned()));
        headers.push((
            "access-control-expose-headers",
            "Mcp-Session-Id, WWW-Authenticate, DPoP-Nonce".into(),
        ));
        headers.push(("vary", "Origin".into()));
    }
}

/// The `method` label of `warden_http_requests_total`.
pub fn method_label(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Delete => "DELETE",
        Method::Options => "OPTIONS",
        Method::Head => "HEAD",
        Method::Other => "other",
    }
}

/// The `status` label of `warden_http_requests_total` (bounded).
pub fn status_label(s: u16) -> &'static str {
    match s {
        200 => "200",
        202 => "202",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        406 => "406",
        413 => "413",
        415 => "415",
        429 => "429",
        503 => "503",
        _ if s < 300 => "2xx",
        _ if s < 500 => "4xx",
        _ => "5xx",
    }
}
