//! HTML pages (login, consent, error) and small HTTP helpers: form parsing, cookies, redirects.

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub const SESSION_COOKIE: &str = "warden_authz_session";

/// Escape text for HTML element content and double-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A form the client sent that cannot be read unambiguously (the client's error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter {0} repeated")]
pub struct RepeatedParameter(pub String);

/// Parse an `application/x-www-form-urlencoded` body or query; a repeated parameter is an error.
pub fn parse_form(bytes: &[u8]) -> Result<HashMap<String, String>, RepeatedParameter> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(bytes) {
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(RepeatedParameter(k.into_owned()));
        }
    }
    Ok(out)
}

/// Empty values count as absent (RFC 6749 §3.1).
pub fn param<'a>(p: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    p.get(k).map(String::as_str).filter(|v| !v.is_empty())
}

/// The value of our session cookie, if the request carries one.
pub fn session_cookie(h: &HeaderMap) -> Option<String> {
    for v in h.get_all(header::COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for part in s.split(';') {
            if let Some((k, v)) = part.trim().split_once('=')
                && k == SESSION_COOKIE
                && !v.is_empty()
            {
                return Some(v.to_owned());
            }
        }
    }
    None
}

pub fn set_cookie_value(value: &str, secure: bool, max_age: i64) -> String {
    let mut c =
        format!("{SESSION_COOKIE}={value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age}");
    if secure {
        c.push_str("; Secure");
    }
    c
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <style>body{{font-family:sans-serif;max-width:32em;margin:3em auto}}label{{display:block;margin:.5em 0}}</style>\
         </head><body><h1>{t}</h1>\n{body}\n</body></html>\n",
        t = esc(title)
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// An error that cannot be sent back to the client (unknown client, bad redirect URI).
pub fn error_page(status: StatusCode, msg: &str) -> Response {
    page(
        status,
        "Authorization error",
        &format!("<p>{}</p>", esc(msg)),
    )
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        esc(name),
        esc(value)
    )
}

/// An upstream IdP as the login page shows it.
pub struct Idp {
    pub id: String,
    pub name: String,
    /// Set when the IdP is unreachable: the page says so and offers no button.
    pub down: bool,
}

/// The login form; posts `username`, `password`, `request_id`, `csrf_token` to `/login`
/// (when `local`), and one `/federate` form per upstream IdP.
pub fn login_page(
    status: StatusCode,
    client: &str,
    request_id: &str,
    csrf: &str,
    err: Option<&str>,
    local: bool,
    idps: &[Idp],
) -> Response {
    let err = err
        .map(|e| format!("<p role=\"alert\"><strong>{}</strong></p>", esc(e)))
        .unwrap_or_default();
    let rid = hidden("request_id", request_id);
    let csrf = hidden("csrf_token", csrf);
    let mut fed = String::new();
    for i in idps {
        if i.down {
            fed.push_str(&format!(
                "<p class=\"idp-down\" data-connector=\"{id}\"><strong>{name}</strong> is unavailable right now.</p>\n",
                id = esc(&i.id),
                name = esc(&i.name)
            ));
        } else {
            fed.push_str(&format!(
                "<form method=\"post\" action=\"/federate\" class=\"idp\">{rid}{csrf}{conn}\
                 <button type=\"submit\">Sign in with {name}</button></form>\n",
                conn = hidden("connector", &i.id),
                name = esc(&i.name)
            ));
        }
    }
    let form = if local {
        format!(
            "<form method=\"post\" action=\"/login\">\n{rid}\n{csrf}\n\
             <label>Username <input type=\"text\" name=\"username\" autocomplete=\"username\" required autofocus></label>\n\
             <label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label>\n\
             <button type=\"submit\">Sign in</button>\n</form>"
        )
    } else {
        String::new()
    };
    let body = format!(
        "<p>Sign in to authorize <strong>{client}</strong>.</p>{err}\n{form}\n{fed}",
        client = esc(client),
    );
    page(status, "Sign in", &body)
}

/// The consent form; posts `decision` = `approve` | `deny` to `/consent`.
pub fn consent_page(
    user: &str,
    client: &str,
    scopes: &[String],
    resource: &str,
    request_id: &str,
    csrf: &str,
) -> Response {
    let list = if scopes.is_empty() {
        "<li><em>no scopes</em></li>".to_owned()
    } else {
        scopes
            .iter()
            .map(|s| format!("<li><code>{}</code></li>", esc(s)))
            .collect::<Vec<_>>()
            .join("")
    };
    let body = format!(
        "<p>Signed in as <strong>{user}</strong>.</p>\n\
         <p><strong>{client}</strong> asks for access to <code>{resource}</code> with these scopes:</p>\n\
         <ul id=\"scopes\">{list}</ul>\n\
         <form method=\"post\" action=\"/consent\">\n{rid}\n{csrf}\n\
         <button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\n\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button>\n</form>",
        user = esc(user),
        client = esc(client),
        resource = esc(resource),
        rid = hidden("request_id", request_id),
        csrf = hidden("csrf_token", csrf),
    );
    page(StatusCode::OK, "Authorize access", &body)
}

/// 302 to `redirect_uri` with `params` added to its query (RFC 6749 §4.1.2), plus `iss` (RFC 9207).
pub fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let Ok(mut u) = url::Url::parse(redirect_uri) else {
        return error_page(StatusCode::BAD_REQUEST, "invalid redirect URI");
    };
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    let Ok(loc) = HeaderValue::from_str(u.as_str()) else {
        return error_page(StatusCode::BAD_REQUEST, "invalid redirect URI");
    };
    let mut r = StatusCode::FOUND.into_response();
    r.headers_mut().insert(header::LOCATION, loc);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
