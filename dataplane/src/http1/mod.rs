//! A strict HTTP/1.1 server codec: request parsing, framing, responses and chunked streaming.
//!
//! Why not monoio-http's codec: see `docs/architecture.md` ("HTTP/1.1"). In short,
//! its streamed-body encoder holds SSE events back in an 8 KiB buffer, and the crate
//! pulls a second TLS stack (rustls 0.21 + ring) into the build. Parsing itself is
//! `httparse`, the same tokenizer monoio-http uses; the framing rules are ours.

pub mod conn;
pub mod parse;

pub use parse::{BodyFraming, ChunkedDecoder, Head, Method};

/// An error that ends the current request with a status, and usually the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HTTP {status}: {reason}")]
pub struct HttpError {
    pub status: u16,
    pub reason: &'static str,
}

impl HttpError {
    pub fn new(status: u16, reason: &'static str) -> Self {
        HttpError { status, reason }
    }
    pub fn bad_request(reason: &'static str) -> Self {
        Self::new(400, reason)
    }
    pub fn header_too_large() -> Self {
        Self::new(431, "request header fields too large")
    }
    pub fn payload_too_large() -> Self {
        Self::new(413, "request body too large")
    }
    pub fn not_implemented(reason: &'static str) -> Self {
        Self::new(501, reason)
    }
    pub fn version_not_supported() -> Self {
        Self::new(505, "HTTP version not supported")
    }
}

/// A complete response, written with `Content-Length`.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Response {
            status,
            headers: vec![("content-type", "application/json".into())],
            body,
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Response {
            status,
            headers: vec![("content-type", "text/plain; charset=utf-8".into())],
            body: body.as_bytes().to_vec(),
        }
    }
}

/// The reason phrase for the statuses Warden sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Serialize a response head. `length` is `Some(n)` for Content-Length framing,
/// `None` for chunked.
pub fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&'static str, String)],
    length: Option<usize>,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (n, v) in headers {
        // Header values we emit never contain CR/LF; strip defensively so an upstream
        // value can never split the response.
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend(v.bytes().filter(|b| *b != b'\r' && *b != b'\n'));
        out.extend_from_slice(b"\r\n");
    }
    match length {
        Some(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Frame one chunk of a chunked body.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}
