//! Steps 1–2 of the request path: admission. The in-flight cap (in the pipeline), then
//! Origin and Host (DNS-rebinding defences), the public documents, the endpoint's path and
//! method; for a POST, its media headers.

use super::http;
use super::refusal::Refusal;
use crate::http1::conn::Request;
use crate::http1::{Method, Response};
use crate::snapshot::Settings;

/// What an admitted request is for.
pub(super) enum Endpoint {
    /// A public answer (RFC 9728 metadata, CORS preflight), sent without authentication.
    Public(Response),
    /// The MCP endpoint: authenticate next.
    Mcp,
    /// The 2024-11-05 HTTP+SSE transport's stream or messages (when enabled): authenticate next.
    Legacy(super::sse_legacy::LegacyPath),
}

/// Admit a request to the endpoint it names, or refuse it before authentication.
pub(super) fn endpoint(
    st: &Settings,
    req: &Request,
    origin_sent: bool,
    cors: Option<&str>,
) -> Result<Endpoint, Refusal> {
    // A browser-supplied Origin must be allowed; Host must be ours.
    if origin_sent && cors.is_none() {
        return Err(Refusal::origin_not_allowed());
    }
    if !http::host_allowed(st, req.head.get_str("host")) {
        return Err(Refusal::host_not_allowed());
    }
    let path = req.head.path.as_str();
    if http::is_prm_path(st, path) {
        return match req.head.method {
            Method::Get | Method::Head => Ok(Endpoint::Public(
                Response::json(200, st.resource_metadata_json.clone())
                    .header("cache-control", "max-age=300"),
            )),
            Method::Options => Ok(Endpoint::Public(http::preflight())),
            _ => Err(Refusal::method_not_allowed("GET, HEAD, OPTIONS")),
        };
    }
    if path != st.mcp_path {
        if st.legacy_sse
            && let Some(p) = super::sse_legacy::route(path)
        {
            return match req.head.method {
                Method::Options => Ok(Endpoint::Public(http::preflight())),
                _ => Ok(Endpoint::Legacy(p)),
            };
        }
        return Err(Refusal::no_such_endpoint());
    }
    match req.head.method {
        Method::Options => Ok(Endpoint::Public(http::preflight())),
        _ => Ok(Endpoint::Mcp),
    }
}

/// The Accept of a GET (the session's stream): it must allow `text/event-stream`.
pub(super) fn get_headers(req: &Request) -> Result<(), Refusal> {
    let a = req
        .head
        .get_str("accept")
        .unwrap_or("")
        .to_ascii_lowercase();
    if a.contains("text/event-stream") || a.contains("*/*") {
        return Ok(());
    }
    Err(Refusal::unsupported_media(
        406,
        "Accept must allow text/event-stream (GET opens the session's event stream)",
    ))
}

/// Content-Type, Accept and MCP-Protocol-Version of a POST.
pub(super) fn post_headers(req: &Request) -> Result<(), Refusal> {
    let ct = req.head.get_str("content-type").unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(Refusal::unsupported_media(
            415,
            "Content-Type must be application/json",
        ));
    }
    if let Some(accept) = req.head.get_str("accept") {
        let a = accept.to_ascii_lowercase();
        if !(a.contains("application/json") || a.contains("text/event-stream") || a.contains("*/*"))
        {
            return Err(Refusal::unsupported_media(
                406,
                "Accept must allow application/json and text/event-stream",
            ));
        }
    }
    // A repeated header is refused: with two values, which one applies would be a guess.
    if req.head.count("mcp-protocol-version") > 1 {
        return Err(Refusal::unsupported_media(
            400,
            "repeated MCP-Protocol-Version",
        ));
    }
    // An unknown version gets the 2026-07-28 `-32022` with what is served, which modern
    // clients recognise (and retry with) and legacy ones read as a 400.
    if let Some(v) = req.head.get_str("mcp-protocol-version")
        && !http::SUPPORTED_VERSIONS.contains(&v.trim())
        && !super::era::is_modern(v.trim())
    {
        return Err(Refusal::unsupported_version(v.trim()));
    }
    Ok(())
}
