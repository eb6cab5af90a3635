//! Sans-IO HTTP/1.1 request-head parsing and RFC 9112 §6 framing decisions.
//!
//! Everything here takes bytes and returns a decision; the connection loop in
//! `http1::conn` owns the socket. Any message whose framing is ambiguous is an
//! error that closes the connection: a gateway must never guess where one
//! request ends and the next begins (request smuggling).

use super::HttpError;

/// Maximum number of header fields accepted in one request head.
pub const MAX_HEADERS: usize = 96;

/// HTTP request methods Warden serves; anything else is answered 405/501 by the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
    Options,
    Head,
    Other,
}

impl Method {
    fn from_bytes(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "HEAD" => Method::Head,
            _ => Method::Other,
        }
    }
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head. Header names are lower-cased; values are raw bytes.
/// `Debug` prints values as text, credential headers (`Authorization`, `Cookie`) as a
/// [`Secret`](crate::secret::Secret).
#[derive(Clone)]
pub struct Head {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub minor_version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    pub framing: BodyFraming,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

impl std::fmt::Debug for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::secret::{Secret, is_credential_header};
        struct Value<'a>(&'a str, &'a [u8]);
        impl std::fmt::Debug for Value<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                if is_credential_header(self.0) {
                    Secret::new(self.1).fmt(f)
                } else {
                    String::from_utf8_lossy(self.1).fmt(f)
                }
            }
        }
        let headers: Vec<(&str, Value<'_>)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), Value(n, v)))
            .collect();
        f.debug_struct("Head")
            .field("method", &self.method)
            .field("path", &self.path)
            // `?access_token=` is refused, but the head holding it may still be printed.
            .field(
                "query",
                &self
                    .query
                    .as_deref()
                    .map(|q| if q.contains("access_token") { "***" } else { q }),
            )
            .field("minor_version", &self.minor_version)
            .field("headers", &headers)
            .field("framing", &self.framing)
            .field("keep_alive", &self.keep_alive)
            .field("expect_continue", &self.expect_continue)
            .finish()
    }
}

impl Head {
    /// The only value of a header, `Ok(None)` when absent, an error when repeated.
    pub fn single(&self, name: &str) -> Result<Option<&[u8]>, HttpError> {
        let mut found = None;
        for (n, v) in &self.headers {
            if n == name {
                if found.is_some() {
                    return Err(HttpError::bad_request("duplicate header field"));
                }
                found = Some(v.as_slice());
            }
        }
        Ok(found)
    }

    /// First value of a header as UTF-8 text, if present and valid.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Number of header fields with this name.
    pub fn count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n == name).count()
    }
}

/// Try to parse a request head from `buf`. `Ok(None)` means more bytes are needed.
/// On success returns the head and the number of bytes it occupied.
pub fn parse_head(buf: &[u8], max_header_bytes: usize) -> Result<Option<(Head, usize)>, HttpError> {
    // Skip at most one leading CRLF, as RFC 9112 §2.2 allows between messages.
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::header_too_large()),
        Err(httparse::Error::Version) => return Err(HttpError::version_not_supported()),
        Err(_) => return Err(HttpError::bad_request("malformed request head")),
    };
    let consumed = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            if buf.len() >= max_header_bytes {
                return Err(HttpError::header_too_large());
            }
            return Ok(None);
        }
    };
    if consumed > max_header_bytes {
        return Err(HttpError::header_too_large());
    }
    let method = Method::from_bytes(req.method.unwrap_or(""));
    let minor_version = req.version.unwrap_or(1);
    let target = req.path.unwrap_or("");
    // Origin-form only (RFC 9112 §3.2.1); asterisk-form only for OPTIONS.
    if !(target.starts_with('/') || (target == "*" && method == Method::Options)) {
        return Err(HttpError::bad_request(
            "request target must be in origin-form",
        ));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    let mut out_headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        out_headers.push((h.name.to_ascii_lowercase(), h.value.to_vec()));
    }
    let mut head = Head {
        method,
        path,
        query,
        minor_version,
        headers: out_headers,
        framing: BodyFraming::None,
        keep_alive: minor_version == 1,
        expect_continue: false,
    };
    decide_framing(&mut head)?;
    Ok(Some((head, consumed)))
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// RFC 9112 §6.3: decide how the body is delimited, refusing every ambiguity.
fn decide_framing(head: &mut Head) -> Result<(), HttpError> {
    let te_count = head.count("transfer-encoding");
    let cl_count = head.count("content-length");
    if head.minor_version == 1 && head.count("host") != 1 {
        return Err(HttpError::bad_request(
            "exactly one Host header is required",
        ));
    }
    if te_count > 0 && cl_count > 0 {
        return Err(HttpError::bad_request(
            "both Transfer-Encoding and Content-Length",
        ));
    }
    if te_count > 0 {
        if head.minor_version == 0 {
            return Err(HttpError::bad_request(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if te_count > 1 {
            return Err(HttpError::bad_request("repeated Transfer-Encoding"));
        }
        let v = head.single("transfer-encoding")?.unwrap_or_default();
        let mut codings = v.split(|b| *b == b',').map(trim);
        let last = codings.next_back().unwrap_or_default();
        // RFC 9112 §6.3 (4): chunked not the final coding → the length cannot be known:
        // 400, and the connection closes (every head error closes it).
        if !last.eq_ignore_ascii_case(b"chunked") {
            return Err(HttpError::bad_request(
                "Transfer-Encoding does not end in chunked",
            ));
        }
        // Framed, but with a coding before chunked that Warden does not decode (§6.1: 501).
        if codings.next().is_some() {
            return Err(HttpError::not_implemented(
                "only Transfer-Encoding: chunked is supported",
            ));
        }
        head.framing = BodyFraming::Chunked;
    } else if cl_count > 0 {
        if cl_count > 1 {
            return Err(HttpError::bad_request("repeated Content-Length"));
        }
        let v = trim(head.single("content-length")?.unwrap_or_default());
        if v.is_empty() || v.len() > 15 || !v.iter().all(u8::is_ascii_digit) {
            return Err(HttpError::bad_request("invalid Content-Length"));
        }
        let n = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| HttpError::bad_request("invalid Content-Length"))?;
        head.framing = if n == 0 {
            BodyFraming::None
        } else {
            BodyFraming::Length(n)
        };
    }
    // Connection semantics: HTTP/1.1 defaults to keep-alive, 1.0 to close.
    let mut keep_alive = head.minor_version == 1;
    for (n, v) in &head.headers {
        if n == "connection" {
            for tok in v.split(|b| *b == b',') {
                let tok = trim(tok);
                if tok.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if tok.eq_ignore_ascii_case(b"keep-alive") && head.minor_version == 0 {
                    keep_alive = true;
                }
            }
        }
    }
    head.keep_alive = keep_alive;
    if let Some(v) = head.single("expect")? {
        if trim(v).eq_ignore_ascii_case(b"100-continue") {
            head.expect_continue = head.minor_version == 1;
        } else {
            return Err(HttpError::new(417, "unsupported Expect value"));
        }
    }
    Ok(())
}

/// Incremental chunked-body decoder (RFC 9112 §7.1). Strict: CRLF only, hex sizes
/// of bounded length, chunk extensions and trailers bounded and discarded.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// Bytes of chunk-size lines and trailers seen, to bound them.
    meta_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataCrLf,
    Trailers,
    Done,
}

/// Upper bound on chunk-size lines plus trailers, in bytes.
const MAX_CHUNK_META: usize = 16 * 1024;

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            meta_bytes: 0,
        }
    }
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consume bytes from `input`, appending body data to `out`. Returns the number
    /// of input bytes consumed; fewer than `input.len()` means more input is needed
    /// (a partial line) or the body is done.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_body: usize,
    ) -> Result<usize, HttpError> {
        let mut pos = 0;
        loop {
            match self.state {
                ChunkState::Done => return Ok(pos),
                ChunkState::Size | ChunkState::Trailers => {
                    let rest = &input[pos..];
                    let Some(nl) = memchr::memchr(b'\n', rest) else {
                        if self.meta_bytes + rest.len() > MAX_CHUNK_META {
                            return Err(HttpError::bad_request("chunk metadata too long"));
                        }
                        return Ok(pos);
                    };
                    if nl == 0 || rest[nl - 1] != b'\r' {
                        return Err(HttpError::bad_request("bare LF in chunked framing"));
                    }
                    let line = &rest[..nl - 1];
                    self.meta_bytes += nl + 1;
                    if self.meta_bytes > MAX_CHUNK_META {
                        return Err(HttpError::bad_request("chunk metadata too long"));
                    }
                    pos += nl + 1;
                    if self.state == ChunkState::Trailers {
                        if line.is_empty() {
                            self.state = ChunkState::Done;
                        } else if line.contains(&b'\r') || !line.contains(&b':') {
                            return Err(HttpError::bad_request("malformed trailer field"));
                        }
                        continue;
                    }
                    let size_part = match memchr::memchr(b';', line) {
                        Some(i) => &line[..i],
                        None => line,
                    };
                    if size_part.is_empty()
                        || size_part.len() > 15
                        || !size_part.iter().all(u8::is_ascii_hexdigit)
                    {
                        return Err(HttpError::bad_request("invalid chunk size"));
                    }
                    let size =
                        u64::from_str_radix(std::str::from_utf8(size_part).unwrap_or("x"), 16)
                            .map_err(|_| HttpError::bad_request("invalid chunk size"))?;
                    if size == 0 {
                        self.state = ChunkState::Trailers;
                    } else {
                        if out.len() as u64 + size > max_body as u64 {
                            return Err(HttpError::payload_too_large());
                        }
                        self.state = ChunkState::Data(size);
                    }
                }
                ChunkState::Data(left) => {
                    let avail = (input.len() - pos) as u64;
                    if avail == 0 {
                        return Ok(pos);
                    }
                    let take = avail.min(left) as usize;
                    out.extend_from_slice(&input[pos..pos + take]);
                    pos += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCrLf
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataCrLf => {
                    if input.len() - pos < 2 {
                        return Ok(pos);
                    }
                    if &input[pos..pos + 2] != b"\r\n" {
                        return Err(HttpError::bad_request("chunk data not followed by CRLF"));
                    }
                    pos += 2;
                    self.state = ChunkState::Size;
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
