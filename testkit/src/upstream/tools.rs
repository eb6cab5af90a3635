//! The upstream's tools: the `tools/list` catalogue with pagination and the built-in `tools/call` handlers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Shared, rpc_error, rpc_result};
use crate::util::sleep_unless_stopped;

/// The built-in tools, in list order: (name, description, input properties).
fn builtins() -> [(&'static str, &'static str, Value); 5] {
    [
        (
            "echo",
            "Returns its arguments as text and structuredContent.",
            json!({}),
        ),
        (
            "whoami",
            "Returns the Authorization header the upstream received (or \"none\").",
            json!({}),
        ),
        (
            "slow",
            "Sleeps `ms` milliseconds (default 5000), then echoes.",
            json!({ "ms": { "type": "integer" } }),
        ),
        (
            "ticks",
            "Streams `count` progress notifications `interval_ms` apart over SSE, then \"done\". With `grow_to`, first lists that many extra tools and says so on this stream only.",
            json!({ "count": { "type": "integer" }, "interval_ms": { "type": "integer" } }),
        ),
        (
            "cut",
            "Streams one progress notification over SSE, then closes without a result.",
            json!({}),
        ),
    ]
}

fn tool_json(name: &str, description: &str, properties: Value) -> Value {
    json!({
        "name": name,
        "description": description,
        "inputSchema": { "type": "object", "properties": properties },
    })
}

pub(crate) fn encode_cursor(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("offset:{offset}"))
}

pub(crate) fn decode_cursor(cursor: &str) -> Option<usize> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    std::str::from_utf8(&raw)
        .ok()?
        .strip_prefix("offset:")?
        .parse()
        .ok()
}

/// `tools/list`: built-ins then `tool_i`, paged by `page_size` with an opaque `nextCursor`.
pub(super) fn list(shared: &Shared, id: &Value, params: &Value) -> Response {
    match list_result(shared.tools(), shared.page_size, params) {
        Ok(result) => rpc_result(id, &result),
        Err(message) => rpc_error(id, -32602, message),
    }
}

/// The `tools/list` result for `params`: built-ins then `extra` tools `tool_i`, `page_size`
/// at a time (0 = one page). Also the in-memory upstream's.
pub(crate) fn list_result(
    extra: usize,
    page_size: usize,
    params: &Value,
) -> Result<Value, &'static str> {
    let builtins = builtins();
    let total = builtins.len() + extra;
    let start = match params.get("cursor") {
        None | Some(Value::Null) => 0,
        Some(c) => match c.as_str().and_then(decode_cursor) {
            Some(n) if n <= total => n,
            _ => return Err("invalid cursor"),
        },
    };
    let end = if page_size == 0 {
        total
    } else {
        total.min(start.saturating_add(page_size))
    };
    let tools: Vec<Value> = (start..end)
        .map(|i| match builtins.get(i) {
            Some((name, desc, props)) => tool_json(name, desc, props.clone()),
            None => {
                let n = i - builtins.len();
                tool_json(
                    &format!("tool_{n}"),
                    &format!("Extra tool number {n}."),
                    json!({}),
                )
            }
        })
        .collect();
    let mut result = json!({ "tools": tools });
    if end < total {
        result["nextCursor"] = Value::String(encode_cursor(end));
    }
    Ok(result)
}

pub(crate) fn text_result(text: String) -> Value {
    json!({ "content": [ { "type": "text", "text": text } ] })
}

pub(crate) fn echo_result(args: &Value) -> Value {
    let text = serde_json::to_string(args).unwrap_or_default();
    json!({ "content": [ { "type": "text", "text": text } ], "structuredContent": args })
}

pub(crate) fn u64_arg(args: &Value, name: &str, default: u64) -> u64 {
    args.get(name).and_then(Value::as_u64).unwrap_or(default)
}

/// `tools/call`: dispatches on `params.name`.
pub(super) async fn call(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    id: Value,
    params: &Value,
) -> Response {
    let name = params.get("name").and_then(Value::as_str).unwrap_or("");
    let args = match params.get("arguments") {
        Some(v @ Value::Object(_)) => v.clone(),
        _ => json!({}),
    };
    match name {
        "echo" => rpc_result(&id, &echo_result(&args)),
        "whoami" => {
            let auth = headers
                .get(header::AUTHORIZATION)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_else(|| "none".to_owned());
            rpc_result(&id, &text_result(auth))
        }
        "slow" => {
            let ms = u64_arg(&args, "ms", 5000);
            sleep_unless_stopped(Duration::from_millis(ms), &shared.shutdown).await;
            rpc_result(&id, &echo_result(&args))
        }
        "ticks" => {
            let token = progress_token(params);
            let count = u64_arg(&args, "count", 3);
            let interval = Duration::from_millis(u64_arg(&args, "interval_ms", 300));
            // The list changes, told on this call's stream and nowhere else.
            let grow = args.get("grow_to").and_then(Value::as_u64);
            if let Some(n) = grow {
                (shared.tools).store(n as usize, std::sync::atomic::Ordering::Relaxed);
            }
            ticks(shared, id, token, count, interval, grow.is_some())
        }
        "cut" => cut(shared, progress_token(params)),
        _ => match name
            .strip_prefix("tool_")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) if n < shared.tools() && name == format!("tool_{n}") => {
                rpc_result(&id, &text_result(format!("{name} called")))
            }
            _ => rpc_error(&id, -32602, &format!("unknown tool: {name}")),
        },
    }
}

pub(crate) fn progress_token(params: &Value) -> Option<Value> {
    params
        .get("_meta")
        .and_then(|m| m.get("progressToken"))
        .filter(|t| !t.is_null())
        .cloned()
}

pub(crate) fn progress(token: &Value, i: u64, total: u64) -> Value {
    json!({
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": { "progressToken": token, "progress": i, "total": total },
    })
}

fn sse_event(n: u64, data: &Value) -> Bytes {
    Bytes::from(sse_text(n, data))
}

/// One SSE event block carrying `data` as JSON.
pub(crate) fn sse_text(n: u64, data: &Value) -> String {
    let json = serde_json::to_string(data).unwrap_or_default();
    format!("event: message\nid: {n}\ndata: {json}\n\n")
}

/// A session's GET stream: `notifications/tools/list_changed` after every change of the list,
/// and every message [`super::TestUpstream::notify`] sends, until the upstream stops.
pub(super) fn change_stream(shared: &Arc<Shared>) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let mut changes = shared.changes.subscribe();
    let mut notes = shared.notes.subscribe();
    let mut stop = shared.shutdown.clone();
    tokio::spawn(async move {
        let changed = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
        let mut n = 0;
        loop {
            let note = tokio::select! {
                c = changes.changed() => match c {
                    Ok(()) => changed.clone(),
                    Err(_) => return,
                },
                m = notes.recv() => match m {
                    Ok(m) => m,
                    Err(_) => return,
                },
                _ = stop.changed() => return,
                () = tx.closed() => return,
            };
            n += 1;
            if tx.send(Bytes::from(sse_text(n, &note))).await.is_err() {
                return;
            }
        }
    });
    sse_response(shared, rx, false)
}

/// A `text/event-stream` response whose events come from `rx`, each written as soon as it arrives.
fn sse_response(shared: &Arc<Shared>, rx: mpsc::Receiver<Bytes>, note_ticks: bool) -> Response {
    let shared = Arc::clone(shared);
    let stream = futures_util::stream::unfold(rx, move |mut rx| {
        let shared = Arc::clone(&shared);
        async move {
            let chunk = rx.recv().await?;
            if note_ticks {
                shared.note_tick();
            }
            Some((Ok::<_, Infallible>(chunk), rx))
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn ticks(
    shared: &Arc<Shared>,
    id: Value,
    token: Option<Value>,
    count: u64,
    interval: Duration,
    announce: bool,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let stop = shared.shutdown.clone();
    tokio::spawn(async move {
        let mut n = 0;
        if announce {
            n += 1;
            let note = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
            if tx.send(sse_event(n, &note)).await.is_err() {
                return;
            }
        }
        if let Some(token) = token {
            for i in 1..=count {
                if i > 1 && !sleep_unless_stopped(interval, &stop).await {
                    return;
                }
                n += 1;
                if tx
                    .send(sse_event(n, &progress(&token, i, count)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if !sleep_unless_stopped(interval, &stop).await {
                return;
            }
        }
        let done = json!({ "jsonrpc": "2.0", "id": id, "result": text_result("done".to_owned()) });
        let _ = tx.send(sse_event(n + 1, &done)).await;
    });
    sse_response(shared, rx, true)
}

fn cut(shared: &Arc<Shared>, token: Option<Value>) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let token = token.unwrap_or_else(|| Value::String("cut".to_owned()));
    // The channel has room for the one event; dropping `tx` then ends the stream with no result.
    let _ = tx.try_send(sse_event(1, &progress(&token, 1, 2)));
    drop(tx);
    sse_response(shared, rx, false)
}
