//! Reads one OpenAPI operation into a request plan and the JSON Schema of its arguments.

use serde_json::{Map, Value, json};

use crate::BridgeError;
use crate::openapi::{Resolver, escape_token};
use crate::schema::convert;

/// Headers an argument may never set: credentials, hop-by-hop and framing headers, and
/// the ones the gateway itself sets. OpenAPI also says `Accept`, `Content-Type` and
/// `Authorization` header parameters are ignored.
const FORBIDDEN_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-type",
    "accept",
    "expect",
    "forwarded",
    "x-real-ip",
];

/// Where a parameter goes in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Location {
    Path,
    Query,
    Header,
}

impl Location {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Location::Path => "path",
            Location::Query => "query",
            Location::Header => "header",
        }
    }
}

/// OpenAPI serialization styles the bridge supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Simple,
    Form,
    SpaceDelimited,
    PipeDelimited,
    DeepObject,
}

#[derive(Debug, Clone)]
pub(crate) struct Param {
    pub name: String,
    pub location: Location,
    pub style: Style,
    pub explode: bool,
    /// `content: application/json` parameters are sent as one JSON text.
    pub json: bool,
    pub required: bool,
    pub description: String,
}

/// How the `body` argument is serialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Media {
    Json,
    Form,
    Text,
}

#[derive(Debug, Clone)]
pub(crate) struct Body {
    pub media: Media,
    pub content_type: String,
    pub required: bool,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathPart {
    Literal(String),
    Var(String),
}

/// Everything needed to turn validated arguments into one request.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub method: &'static str,
    pub path: String,
    pub template: Vec<PathPart>,
    pub params: Vec<Param>,
    pub body: Option<Body>,
}

/// What reading an operation gives: a plan and its input schema, or a reason to skip it.
pub(crate) enum Outcome {
    Ready {
        plan: Box<Plan>,
        input_schema: Value,
        notes: Vec<String>,
    },
    Skip(String),
}

/// Names of `apiKey` security schemes' header and query parameters: credentials that
/// the gateway (delegation) supplies, never the agent.
pub(crate) struct Credentials {
    pub headers: Vec<String>,
    pub query: Vec<String>,
}

impl Credentials {
    pub(crate) fn from_doc(doc: &Value) -> Self {
        let mut c = Credentials {
            headers: Vec::new(),
            query: Vec::new(),
        };
        let schemes = doc
            .pointer("/components/securitySchemes")
            .and_then(Value::as_object);
        for scheme in schemes.into_iter().flat_map(|s| s.values()) {
            if scheme.get("type").and_then(Value::as_str) != Some("apiKey") {
                continue;
            }
            let Some(name) = scheme.get("name").and_then(Value::as_str) else {
                continue;
            };
            match scheme.get("in").and_then(Value::as_str) {
                Some("header") => c.headers.push(name.to_ascii_lowercase()),
                Some("query") => c.query.push(name.to_owned()),
                _ => {}
            }
        }
        c
    }
}

pub(crate) struct OperationRef<'a> {
    pub path: &'a str,
    pub method: &'static str,
    pub pointer: String,
    pub item_params: Option<&'a Value>,
    pub op: &'a Value,
}

pub(crate) fn read(
    doc: &Value,
    o: &OperationRef<'_>,
    creds: &Credentials,
) -> Result<Outcome, BridgeError> {
    let mut resolver = Resolver::new(doc);
    let mut notes = Vec::new();
    let mut params: Vec<Param> = Vec::new();
    let mut properties = Map::new();

    // Path-item parameters first; an operation parameter with the same name and
    // location replaces it.
    let mut raw: Vec<(Value, String)> = Vec::new();
    let item_ptr = o.pointer.rsplit_once('/').map_or("", |(p, _)| p).to_owned();
    for (list, ptr) in [
        (o.item_params, format!("{item_ptr}/parameters")),
        (o.op.get("parameters"), format!("{}/parameters", o.pointer)),
    ] {
        for (i, p) in list
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("{ptr}/{i}");
            let p = resolver.resolve(p, &at)?;
            let key = |v: &Value| (v.get("name").cloned(), v.get("in").cloned());
            raw.retain(|(q, _)| key(q) != key(&p));
            raw.push((p, at));
        }
    }

    for (p, at) in &raw {
        let (Some(name), Some(location)) = (
            p.get("name").and_then(Value::as_str),
            p.get("in").and_then(Value::as_str),
        ) else {
            return Err(crate::openapi::invalid(
                at,
                "parameter without name or in".into(),
            ));
        };
        let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
        let location = match location {
            "path" => Location::Path,
            "query" => Location::Query,
            "header" => Location::Header,
            "cookie" if required => {
                return Ok(Outcome::Skip(format!(
                    "required cookie parameter `{name}` is not supported"
                )));
            }
            "cookie" => {
                notes.push(format!("cookie parameter `{name}` dropped"));
                continue;
            }
            other => {
                return Err(crate::openapi::invalid(
                    at,
                    format!("unknown parameter location {other:?}"),
                ));
            }
        };
        if location == Location::Header {
            let lower = name.to_ascii_lowercase();
            let reason = if FORBIDDEN_HEADERS.contains(&lower.as_str())
                || lower.starts_with("x-forwarded-")
                || lower.starts_with("proxy-")
            {
                Some("is set by the gateway")
            } else if creds.headers.contains(&lower) {
                Some("is an API-key credential the gateway supplies")
            } else if name.is_empty() || !name.bytes().all(is_token_byte) {
                Some("is not a valid header name")
            } else {
                None
            };
            if let Some(reason) = reason {
                notes.push(format!(
                    "header parameter `{name}` {reason}; not accepted as an argument"
                ));
                continue;
            }
        }
        if location == Location::Query && creds.query.iter().any(|c| c == name) {
            notes.push(format!(
                "query parameter `{name}` is an API-key credential the gateway supplies; not accepted as an argument"
            ));
            continue;
        }
        let default_style = match location {
            Location::Query => Style::Form,
            _ => Style::Simple,
        };
        let style = match p.get("style").and_then(Value::as_str) {
            None => default_style,
            Some("simple") if location != Location::Query => Style::Simple,
            Some("form") if location == Location::Query => Style::Form,
            Some("spaceDelimited") if location == Location::Query => Style::SpaceDelimited,
            Some("pipeDelimited") if location == Location::Query => Style::PipeDelimited,
            Some("deepObject") if location == Location::Query => Style::DeepObject,
            Some(other) => {
                return Ok(Outcome::Skip(format!(
                    "parameter `{name}`: style {other:?} in {} is not supported",
                    location.as_str()
                )));
            }
        };
        let explode = p
            .get("explode")
            .and_then(Value::as_bool)
            .unwrap_or(style == Style::Form);
        let (schema, json) = match (p.get("schema"), p.get("content").and_then(Value::as_object)) {
            (Some(s), _) => (convert(s), false),
            (None, Some(content)) => match content.iter().next() {
                Some((media, m)) if is_json(media) => (
                    m.get("schema").map(convert).unwrap_or_else(|| json!({})),
                    true,
                ),
                Some((media, _)) => {
                    return Ok(Outcome::Skip(format!(
                        "parameter `{name}`: media type {media:?} is not supported"
                    )));
                }
                None => (json!({}), false),
            },
            (None, None) => (json!({}), false),
        };
        if properties.contains_key(name) {
            return Ok(Outcome::Skip(format!(
                "parameter name `{name}` is used in two locations; tool arguments need unique names"
            )));
        }
        let description = text(p, "description");
        properties.insert(name.to_owned(), with_description(schema, &description));
        params.push(Param {
            name: name.to_owned(),
            location,
            style,
            explode,
            json,
            // OpenAPI requires path parameters; an absent one could only empty a segment.
            required: required || location == Location::Path,
            description,
        });
    }

    let template = match parse_template(o.path) {
        Ok(t) => t,
        Err(reason) => return Ok(Outcome::Skip(reason)),
    };
    for part in &template {
        if let PathPart::Var(v) = part
            && !params
                .iter()
                .any(|p| p.location == Location::Path && &p.name == v)
        {
            return Ok(Outcome::Skip(format!(
                "path template variable {{{v}}} has no path parameter"
            )));
        }
    }
    params.retain(|p| {
        let used =
            p.location != Location::Path || template.contains(&PathPart::Var(p.name.clone()));
        if !used {
            notes.push(format!(
                "path parameter `{}` is not in the path; dropped",
                p.name
            ));
            properties.remove(&p.name);
        }
        used
    });

    let body = match o.op.get("requestBody") {
        None => None,
        Some(rb) => {
            let at = format!("{}/requestBody", o.pointer);
            let rb = resolver.resolve(rb, &at)?;
            let content = rb.get("content").and_then(Value::as_object);
            let pick = |want: fn(&str) -> bool| {
                content.and_then(|c| c.iter().find(|(media, _)| want(media)))
            };
            let chosen = pick(is_json)
                .map(|m| (m, Media::Json))
                .or_else(|| {
                    pick(|m| m == "application/x-www-form-urlencoded").map(|m| (m, Media::Form))
                })
                .or_else(|| pick(|m| m.starts_with("text/plain")).map(|m| (m, Media::Text)));
            let Some(((media, m), kind)) = chosen else {
                let offered: Vec<&str> = content
                    .map(|c| c.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                return Ok(Outcome::Skip(format!(
                    "request body media types {offered:?} are not supported (JSON, form or text/plain)"
                )));
            };
            if properties.contains_key("body") {
                return Ok(Outcome::Skip(
                    "a parameter named `body` clashes with the request body argument".into(),
                ));
            }
            let description = text(&rb, "description");
            let schema = m.get("schema").map(convert).unwrap_or_else(|| json!({}));
            properties.insert("body".into(), with_description(schema, &description));
            Some(Body {
                media: kind,
                content_type: media.clone(),
                required: rb.get("required").and_then(Value::as_bool).unwrap_or(false),
                description,
            })
        }
    };

    let mut required: Vec<Value> = params
        .iter()
        .filter(|p| p.required)
        .map(|p| Value::String(p.name.clone()))
        .collect();
    if body.as_ref().is_some_and(|b| b.required) {
        required.push(Value::String("body".into()));
    }
    let mut input_schema = json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    });
    if !required.is_empty() {
        input_schema["required"] = Value::Array(required);
    }
    Ok(Outcome::Ready {
        plan: Box::new(Plan {
            method: o.method,
            path: o.path.to_owned(),
            template,
            params,
            body,
        }),
        input_schema,
        notes,
    })
}

/// `/pet/{petId}/x` → literals and variables. Template text comes from the spec, which
/// the operator trusts; only argument values are encoded.
fn parse_template(path: &str) -> Result<Vec<PathPart>, String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} does not start with '/'"));
    }
    let mut parts = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("path {path:?} has an unclosed '{{'"));
        };
        if open > 0 {
            parts.push(PathPart::Literal(rest[..open].to_owned()));
        }
        let name = &rest[open + 1..open + close];
        if name.is_empty() || name.contains('{') {
            return Err(format!("path {path:?} has a malformed variable"));
        }
        parts.push(PathPart::Var(name.to_owned()));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(PathPart::Literal(rest.to_owned()));
    }
    Ok(parts)
}

pub(crate) fn is_json(media: &str) -> bool {
    let essence = media
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// The parameter's description wins over its schema's: it is the more specific one.
fn with_description(mut schema: Value, description: &str) -> Value {
    if !description.is_empty()
        && let Value::Object(obj) = &mut schema
    {
        obj.insert("description".into(), Value::String(description.to_owned()));
    }
    schema
}

/// `#/paths/~1pet~1{petId}/get`
pub(crate) fn pointer(path: &str, method: &str) -> String {
    format!("#/paths/{}/{}", escape_token(path), method)
}
