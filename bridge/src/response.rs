//! Maps an upstream HTTP response onto an MCP `tools/call` result.

use serde_json::{Value, json};

use crate::operation::is_json;

/// Largest response body mapped. The shard should stop reading at this size and pass
/// what it has; a longer body is answered with an error result, never parsed.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Longest text rendering handed to the model; the structured content is not cut.
pub const MAX_TEXT_BYTES: usize = 64 << 10;
/// Longest error message taken from an error response.
const MAX_MESSAGE_CHARS: usize = 500;

pub(crate) fn map(status: u16, content_type: Option<&str>, body: &[u8]) -> Value {
    if body.len() > MAX_RESPONSE_BYTES {
        return error(
            status,
            &format!("response body is over the {MAX_RESPONSE_BYTES}-byte limit"),
        );
    }
    let json_body = content_type
        .filter(|ct| is_json(ct))
        .and_then(|_| serde_json::from_slice::<Value>(body).ok());
    if !(200..300).contains(&status) {
        let message = json_body
            .as_ref()
            .and_then(error_message)
            .unwrap_or_else(|| body_start(body));
        let message = if message.is_empty() {
            reason(status).to_owned()
        } else {
            message
        };
        return error(status, &message);
    }
    if let Some(v) = json_body {
        let pretty = serde_json::to_string_pretty(&v).unwrap_or_default();
        let structured = if v.is_object() {
            v
        } else {
            json!({ "result": v })
        };
        return json!({
            "content": [{"type": "text", "text": truncate(pretty)}],
            "structuredContent": structured,
        });
    }
    let text = if body.is_empty() {
        format!("HTTP {status}: {}", reason(status))
    } else {
        match std::str::from_utf8(body) {
            Ok(s) => truncate(s.to_owned()),
            Err(_) => format!(
                "(binary response: {} bytes of {})",
                body.len(),
                content_type.unwrap_or("unknown type")
            ),
        }
    };
    json!({ "content": [{"type": "text", "text": text}] })
}

fn error(status: u16, message: &str) -> Value {
    json!({
        "content": [{"type": "text", "text": format!("HTTP {status}: {message}")}],
        "isError": true,
    })
}

/// The usual places APIs put a human-readable error: `message`, `error` (a string or an
/// object with `message`), `error_description`, RFC 9457 `detail`/`title`.
fn error_message(v: &Value) -> Option<String> {
    let obj = v.as_object()?;
    let pick = |key: &str| obj.get(key).and_then(Value::as_str).map(str::to_owned);
    let nested = obj
        .get("error")
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let message = pick("message")
        .or(nested)
        .or_else(|| pick("error_description"))
        .or_else(|| pick("detail"))
        .or_else(|| pick("error"))
        .or_else(|| pick("title"))?;
    Some(clean(&message))
}

/// The first characters of a body, on one line, for errors without a JSON message.
fn body_start(body: &[u8]) -> String {
    clean(&String::from_utf8_lossy(
        &body[..body.len().min(4 * MAX_MESSAGE_CHARS)],
    ))
}

/// One line, no control characters, bounded length.
fn clean(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let words: Vec<&str> = one_line.split_whitespace().collect();
    let joined = words.join(" ");
    if joined.chars().count() > MAX_MESSAGE_CHARS {
        let cut: String = joined.chars().take(MAX_MESSAGE_CHARS).collect();
        format!("{cut}...")
    } else {
        joined
    }
}

fn truncate(mut s: String) -> String {
    if s.len() <= MAX_TEXT_BYTES {
        return s;
    }
    let total = s.len();
    let mut cut = MAX_TEXT_BYTES;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push_str(&format!(
        "\n... [truncated: first {cut} of {total} bytes shown]"
    ));
    s
}

fn reason(status: u16) -> &'static str {
    match status {
        204 => "No Content",
        301 | 302 | 303 | 307 | 308 => "redirect (not followed)",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "no message",
    }
}
