//! The client's side of a test exchange: requests as bytes, and the bytes read back as responses.

use serde_json::Value;

use crate::http1::ChunkedDecoder;
use crate::upstream::{SseEvent, take_event};

/// A request to write to the gateway; [`HttpRequest::to_bytes`] frames it with `Content-Length`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    /// Path and query, e.g. `/mcp?a=1`.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn new(method: &str, target: &str) -> HttpRequest {
        HttpRequest {
            method: method.to_owned(),
            target: target.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Add a header (repeats are kept: duplicate headers are a test case).
    pub fn header(mut self, name: &str, value: impl Into<String>) -> HttpRequest {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> HttpRequest {
        self.header("authorization", format!("Bearer {token}"))
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> HttpRequest {
        self.body = body.into();
        self
    }

    /// A JSON body with `content-type: application/json`.
    pub fn json(self, v: &Value) -> HttpRequest {
        self.header("content-type", "application/json")
            .body(v.to_string())
    }

    /// The request on the wire. `Content-Length` is added unless given, for any request
    /// with a body and for every POST.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        let has_length = self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        if !has_length && (!self.body.is_empty() || self.method == "POST") {
            out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// Why bytes read back are not a sequence of responses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable response at byte {at}: {why}")]
pub struct ResponseError {
    pub at: usize,
    pub why: &'static str,
}

/// One response as the client read it, the body's chunked framing removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// In order, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// False when the connection ended before the body did.
    pub complete: bool,
}

impl HttpResponse {
    /// Every response in `bytes`, in order (`100 Continue` interim responses skipped). A
    /// response cut short ends the list with `complete: false`. Responses to `HEAD` are
    /// not supported (their `Content-Length` announces a body that is not there).
    pub fn parse_all(bytes: &[u8]) -> Result<Vec<HttpResponse>, ResponseError> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let (resp, used) = parse_one(&bytes[at..]).map_err(|why| ResponseError { at, why })?;
            at += used;
            if resp.status == 100 {
                continue;
            }
            let done = !resp.complete;
            out.push(resp);
            if done {
                break;
            }
        }
        Ok(out)
    }

    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; `Value::Null` when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn is_sse(&self) -> bool {
        self.header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream"))
    }

    /// The SSE events of the body, in order.
    pub fn events(&self) -> Vec<SseEvent> {
        let mut buf = self.body.clone();
        std::iter::from_fn(|| take_event(&mut buf)).collect()
    }

    /// The JSON-RPC answer: the JSON body, or the last JSON message of an SSE body.
    pub fn message(&self) -> Value {
        if !self.is_sse() {
            return self.json();
        }
        self.events()
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
            .next_back()
            .unwrap_or(Value::Null)
    }
}

fn parse_one(bytes: &[u8]) -> Result<(HttpResponse, usize), &'static str> {
    let mut hdrs = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut hdrs);
    let head = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("response head cut short"),
        Err(_) => return Err("malformed response head"),
    };
    let status = resp.code.unwrap_or(0);
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let rest = &bytes[head..];
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
    };
    let mut out = HttpResponse {
        status,
        headers: headers.clone(),
        body: Vec::new(),
        complete: true,
    };
    if status == 100 || status == 204 || status == 304 {
        return Ok((out, head));
    }
    if find("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        let mut dec = ChunkedDecoder::default();
        let used = dec
            .decode(rest, &mut out.body, usize::MAX)
            .map_err(|_| "malformed chunked body")?;
        out.complete = dec.is_done();
        return Ok((out, head + used));
    }
    let len = match find("content-length") {
        Some(l) => l.parse::<usize>().map_err(|_| "bad content-length")?,
        // Delimited by the end of the connection.
        None => rest.len(),
    };
    let take = len.min(rest.len());
    out.body = rest[..take].to_vec();
    out.complete = take == len;
    Ok((out, head + take))
}
