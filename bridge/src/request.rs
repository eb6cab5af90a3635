//! Builds the one HTTP request a validated tool call stands for, encoding every argument.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use crate::CallError;
use crate::operation::{Location, Media, Param, PathPart, Plan, Style};

/// Everything but RFC 3986 unreserved characters is encoded, so a value can never
/// introduce `/`, `?`, `#`, `%`, `;`, whitespace or CR/LF into the request target.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One HTTP request for the shard to send. The shard adds `Host`, `Content-Length` and
/// the delegation token; nothing here carries the caller's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    /// Starts with `/` and includes the base path of the server URL.
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub content_type: Option<String>,
}

pub(crate) fn build(
    plan: &Plan,
    base_path: &str,
    args: &serde_json::Map<String, Value>,
) -> Result<HttpRequest, CallError> {
    let mut path = String::from(base_path);
    for part in &plan.template {
        match part {
            PathPart::Literal(l) => path.push_str(l),
            PathPart::Var(name) => {
                let value = args.get(name).unwrap_or(&Value::Null);
                path.push_str(&path_value(name, value)?);
            }
        }
    }
    if path.is_empty() {
        path.push('/');
    }

    let mut query: Vec<String> = Vec::new();
    let mut headers: Vec<(String, String)> = vec![("accept".into(), "application/json".into())];
    for p in &plan.params {
        let Some(value) = args.get(&p.name).filter(|v| !v.is_null()) else {
            continue;
        };
        match p.location {
            Location::Path => {}
            Location::Query => query_pairs(p, value, &mut query),
            Location::Header => headers.push((p.name.clone(), header_value(p, value)?)),
        }
    }
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }

    let (body, content_type) = match (&plan.body, args.get("body")) {
        (Some(b), Some(value)) => {
            let bytes = match b.media {
                Media::Json => serde_json::to_vec(value).map_err(|e| {
                    CallError::InvalidArguments(format!("`body`: cannot serialize: {e}"))
                })?,
                Media::Form => form_body(value)?.into_bytes(),
                Media::Text => scalar(value).into_bytes(),
            };
            (Some(bytes), Some(b.content_type.clone()))
        }
        _ => (None, None),
    };

    Ok(HttpRequest {
        method: plan.method.to_owned(),
        path_and_query: path,
        headers,
        body,
        content_type,
    })
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// A path value in `simple` style, always inside one segment. A value made only of dots
/// has its dots encoded too, so `.` and `..` can never become dot-segments that a server
/// or proxy would normalize away.
fn path_value(name: &str, value: &Value) -> Result<String, CallError> {
    let encoded = match value {
        Value::Null => {
            return Err(CallError::InvalidArguments(format!(
                "`{name}`: path parameter is required"
            )));
        }
        Value::Array(items) => items
            .iter()
            .map(|i| encode(&scalar(i)))
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(obj) => obj
            .iter()
            .map(|(k, v)| format!("{},{}", encode(k), encode(&scalar(v))))
            .collect::<Vec<_>>()
            .join(","),
        other => {
            let s = scalar(other);
            if !s.is_empty() && s.bytes().all(|b| b == b'.') {
                "%2E".repeat(s.len())
            } else {
                encode(&s)
            }
        }
    };
    if encoded.is_empty() {
        return Err(CallError::InvalidArguments(format!(
            "`{name}`: path parameter must not be empty"
        )));
    }
    Ok(encoded)
}

/// Query pairs per OpenAPI `style`/`explode` (form + explode is the default).
fn query_pairs(p: &Param, value: &Value, out: &mut Vec<String>) {
    let name = encode(&p.name);
    if p.json {
        out.push(format!("{name}={}", encode(&value.to_string())));
        return;
    }
    match (value, p.style) {
        (Value::Array(items), Style::Form) if p.explode => {
            out.extend(
                items
                    .iter()
                    .map(|i| format!("{name}={}", encode(&scalar(i)))),
            );
        }
        (Value::Array(items), style) => {
            let sep = match style {
                Style::SpaceDelimited => "%20",
                Style::PipeDelimited => "|",
                _ => ",",
            };
            let joined: Vec<String> = items.iter().map(|i| encode(&scalar(i))).collect();
            out.push(format!("{name}={}", joined.join(sep)));
        }
        (Value::Object(obj), Style::DeepObject) => {
            out.extend(
                obj.iter()
                    .map(|(k, v)| format!("{name}%5B{}%5D={}", encode(k), encode(&scalar(v)))),
            );
        }
        (Value::Object(obj), _) if p.explode => {
            out.extend(
                obj.iter()
                    .map(|(k, v)| format!("{}={}", encode(k), encode(&scalar(v)))),
            );
        }
        (Value::Object(obj), _) => {
            let flat: Vec<String> = obj
                .iter()
                .map(|(k, v)| format!("{},{}", encode(k), encode(&scalar(v))))
                .collect();
            out.push(format!("{name}={}", flat.join(",")));
        }
        (other, _) => out.push(format!("{name}={}", encode(&scalar(other)))),
    }
}

/// A header value in `simple` style. Only printable ASCII and tab are allowed: CR, LF
/// and other controls would let an argument inject headers or split the request.
fn header_value(p: &Param, value: &Value) -> Result<String, CallError> {
    let text = if p.json {
        value.to_string()
    } else {
        match value {
            Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(","),
            Value::Object(obj) => obj
                .iter()
                .map(|(k, v)| {
                    if p.explode {
                        format!("{k}={}", scalar(v))
                    } else {
                        format!("{k},{}", scalar(v))
                    }
                })
                .collect::<Vec<_>>()
                .join(","),
            other => scalar(other),
        }
    };
    if let Some(bad) = text
        .chars()
        .find(|c| !(*c == '\t' || (' '..='~').contains(c)))
    {
        return Err(CallError::InvalidArguments(format!(
            "`{}`: header value may only contain printable ASCII (found {:?})",
            p.name, bad
        )));
    }
    Ok(text)
}

/// `application/x-www-form-urlencoded` body from an object; arrays repeat the key.
fn form_body(value: &Value) -> Result<String, CallError> {
    let Value::Object(obj) = value else {
        return Err(CallError::InvalidArguments(
            "`body`: a form body must be an object".into(),
        ));
    };
    let mut pairs = Vec::new();
    for (k, v) in obj {
        match v {
            Value::Null => {}
            Value::Array(items) => {
                pairs.extend(
                    items
                        .iter()
                        .map(|i| format!("{}={}", encode(k), encode(&scalar(i)))),
                );
            }
            other => pairs.push(format!("{}={}", encode(k), encode(&scalar(other)))),
        }
    }
    Ok(pairs.join("&"))
}

/// Strings as they are, everything else as its JSON text.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
