//! HTTP/1.1 client for upstream MCP servers: per-shard connection pool, JSON and SSE bodies.
//!
//! Addresses arrive resolved in the snapshot (no DNS on a shard). Every exchange is
//! bounded by the upstream's timeout; a response body is bounded in size.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use monoio::buf::SliceMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio_rustls::ClientTlsStream;

use crate::deadline::Deadline;
use crate::http1::ChunkedDecoder;
use crate::snapshot::Upstream;

/// Why an upstream exchange failed; each maps to a JSON-RPC error for the agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpError {
    #[error("upstream refused the connection")]
    Connect,
    #[error("upstream timed out")]
    Timeout,
    #[error("upstream closed the connection")]
    Closed,
    /// Closed (or reset) after the request was written, before one byte of an answer: the
    /// upstream may have run it, so it is reported and never sent again.
    #[error(
        "upstream closed the connection without answering; the request may have run, so it was not sent again"
    )]
    Unanswered,
    #[error("upstream sent an invalid HTTP response")]
    BadResponse,
    #[error("upstream response too large")]
    TooLarge,
    #[error("no gateway credential could be obtained for the upstream")]
    Credential,
    /// The call's own delegation token expired before (re)sending it, e.g. while a forgotten
    /// upstream session was reopened; an expired token is never sent.
    #[error("the call's delegation token expired before it could be sent; nothing was sent")]
    CredentialExpired,
    #[error("TLS handshake with the upstream failed")]
    Tls,
    /// The upstream's `initialize` answer names a revision Warden does not speak; nothing of
    /// the call was sent.
    #[error(
        "upstream answered initialize with a protocol version Warden does not speak (it speaks 2025-11-25, 2025-06-18, 2025-03-26, 2024-11-05); nothing was sent"
    )]
    UnsupportedVersion,
}

/// An upstream connection: plain TCP, or TLS (rustls + aws-lc-rs) over TCP (with the
/// socket's descriptor, which the TLS stream does not expose, for [`Conn::is_idle_open`]).
#[derive(Debug)]
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream<TcpStream>>, RawFd),
    /// An in-memory connection to a fake upstream (`testing::MemNet`); not in production builds.
    #[cfg(feature = "testing")]
    Mem(crate::testing::MemStream),
}

impl Conn {
    /// Whether an idle pooled connection still looks usable: nothing to read yet. One
    /// non-blocking `recv(MSG_PEEK)` (no io_uring round trip): `0` means the upstream closed
    /// it (FIN), bytes mean data nobody asked for, an error means a reset; all are dropped.
    /// This makes the stale-connection case rare; it cannot rule out a FIN still in flight,
    /// which is why `send_to` never resends what may have been executed.
    fn is_idle_open(&self) -> bool {
        use nix::errno::Errno;
        use nix::sys::socket::{MsgFlags, recv};
        let fd = match self {
            Conn::Plain(s) => s.as_raw_fd(),
            Conn::Tls(_, fd) => *fd,
            #[cfg(feature = "testing")]
            Conn::Mem(s) => return s.is_idle_open(),
        };
        let mut probe = [0u8; 1];
        matches!(
            recv(fd, &mut probe, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT),
            Err(Errno::EAGAIN)
        )
    }

    async fn read<T: monoio::buf::IoBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s, _) => s.read(buf).await,
            #[cfg(feature = "testing")]
            Conn::Mem(s) => s.read(buf).await,
        }
    }

    async fn write_all<T: monoio::buf::IoBuf + 'static>(
        &mut self,
        buf: T,
    ) -> monoio::BufResult<usize, T> {
        match self {
            Conn::Plain(s) => s.write_all(buf).await,
            Conn::Tls(s, _) => s.write_all(buf).await,
            #[cfg(feature = "testing")]
            Conn::Mem(s) => s.write_all(buf).await,
        }
    }
}

/// Idle connections per upstream, owned by one shard.
#[derive(Debug, Default)]
pub struct Pool {
    idle: RefCell<HashMap<u32, Vec<Conn>>>,
    /// Where new connections go instead of TCP, in socket-free tests.
    #[cfg(feature = "testing")]
    net: Option<crate::testing::MemNet>,
}

const MAX_IDLE_PER_UPSTREAM: usize = 256;

impl Pool {
    /// A pool whose new connections go to the fake upstreams of `net`, never to a socket.
    #[cfg(feature = "testing")]
    pub fn with_net(net: crate::testing::MemNet) -> Pool {
        Pool {
            idle: RefCell::default(),
            net: Some(net),
        }
    }

    /// An idle connection to `id` that still looks open; stale ones are dropped on the way.
    fn take(&self, id: u32) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        let v = idle.get_mut(&id)?;
        while let Some(c) = v.pop() {
            if c.is_idle_open() {
                return Some(c);
            }
            metrics::counter!("warden_upstream_stale_connections_total").increment(1);
        }
        None
    }

    fn put(&self, id: u32, c: Conn) {
        let mut idle = self.idle.borrow_mut();
        let v = idle.entry(id).or_default();
        if v.len() < MAX_IDLE_PER_UPSTREAM {
            v.push(c);
        }
    }
}

/// A response from upstream, body either whole or an SSE stream.
#[derive(Debug)]
pub struct UpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: UpBody,
}

impl UpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
pub enum UpBody {
    Full(Vec<u8>),
    Sse(SseStream),
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

/// One SSE event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<String>,
}

/// An SSE body being read from an upstream connection.
#[derive(Debug)]
pub struct SseStream {
    conn: Option<Conn>,
    raw: Vec<u8>,
    decoded: Vec<u8>,
    framing: Framing,
    chunked: ChunkedDecoder,
    remaining: usize,
    /// The request's deadline, which also bounds the stream.
    deadline: Deadline,
    max_bytes: usize,
    total: usize,
    eof: bool,
    /// The upstream did not ask to close the connection.
    reusable: bool,
}

async fn read_into(
    conn: &mut Conn,
    buf: Vec<u8>,
    deadline: &mut Deadline,
) -> Result<(usize, Vec<u8>), UpError> {
    let mut buf = buf;
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(buf.capacity().max(4096));
    }
    let (len, cap) = (buf.len(), buf.capacity());
    match deadline.run(conn.read(SliceMut::new(buf, len, cap))).await {
        Ok((Ok(n), s)) => Ok((n, s.into_inner())),
        Ok((Err(_), _)) => Err(UpError::Closed),
        Err(_) => Err(UpError::Timeout),
    }
}

/// Parse one SSE event off the front of `buf`, if a whole one is there.
pub fn take_event(buf: &mut Vec<u8>) -> Option<SseEvent> {
    let mut ev = SseEvent::default();
    let mut pos = 0;
    let mut has_data = false;
    loop {
        let rest = &buf[pos..];
        let nl = rest.iter().position(|b| *b == b'\n' || *b == b'\r')?;
        let line = &rest[..nl];
        let mut next = pos + nl + 1;
        if rest[nl] == b'\r' {
            match rest.get(nl + 1) {
                Some(b'\n') => next += 1,
                Some(_) => {}
                None => return None, // Could be CRLF split across reads.
            }
        }
        if line.is_empty() {
            buf.drain(..next);
            if !has_data && ev.id.is_none() && ev.event.is_none() && ev.retry.is_none() {
                pos = 0;
                continue; // Blank line without an event: skip.
            }
            return Some(ev);
        }
        let text = String::from_utf8_lossy(line);
        if !text.starts_with(':') {
            let (field, value) = match text.split_once(':') {
                Some((f, v)) => (f.to_owned(), v.strip_prefix(' ').unwrap_or(v).to_owned()),
                None => (text.to_string(), String::new()),
            };
            match field.as_str() {
                "data" => {
                    if has_data {
                        ev.data.push('\n');
                    }
                    ev.data.push_str(&value);
                    has_data = true;
                }
                "id" => ev.id = Some(value),
                "event" => ev.event = Some(value),
                "retry" => ev.retry = Some(value),
                _ => {}
            }
        }
        pos = next;
    }
}

impl SseStream {
    /// The next event, `Ok(None)` at a clean end of stream.
    pub async fn next_event(&mut self) -> Result<Option<SseEvent>, UpError> {
        loop {
            if let Some(ev) = take_event(&mut self.decoded) {
                return Ok(Some(ev));
            }
            if self.eof {
                return Ok(None);
            }
            // Move raw bytes into decoded according to framing.
            if !self.raw.is_empty() {
                match self.framing {
                    Framing::Chunked => {
                        let used = self
                            .chunked
                            .decode(&self.raw, &mut self.decoded, self.max_bytes)
                            .map_err(|_| UpError::BadResponse)?;
                        self.raw.drain(..used);
                        if self.chunked.is_done() {
                            self.eof = true;
                            continue;
                        }
                    }
                    Framing::Length(_) => {
                        let take = self.raw.len().min(self.remaining);
                        self.decoded.extend_from_slice(&self.raw[..take]);
                        self.raw.drain(..take);
                        self.remaining -= take;
                        if self.remaining == 0 {
                            self.eof = true;
                            continue;
                        }
                    }
                    Framing::Close => {
                        self.decoded.append(&mut self.raw);
                    }
                }
                if take_event_ready(&self.decoded) {
                    continue;
                }
            }
            let Some(conn) = self.conn.as_mut() else {
                return Ok(None);
            };
            let raw = std::mem::take(&mut self.raw);
            let (n, raw) = read_into(conn, raw, &mut self.deadline).await?;
            self.raw = raw;
            if n == 0 {
                self.conn = None;
                self.eof = true;
                if matches!(self.framing, Framing::Close) {
                    continue;
                }
                return Err(UpError::Closed);
            }
            self.total += n;
            if self.total > self.max_bytes {
                return Err(UpError::TooLarge);
            }
        }
    }

    /// Return the connection to the pool if the stream ended cleanly.
    pub fn finish(mut self, pool: &Pool, upstream: u32) {
        if self.eof
            && self.reusable
            && self.raw.is_empty()
            && !matches!(self.framing, Framing::Close)
            && let Some(c) = self.conn.take()
        {
            pool.put(upstream, c);
        }
    }
}

fn take_event_ready(buf: &[u8]) -> bool {
    memchr::memmem::find(buf, b"\n\n").is_some() || memchr::memmem::find(buf, b"\r\n\r\n").is_some()
}

async fn connect(pool: &Pool, up: &Upstream, deadline: &mut Deadline) -> Result<Conn, UpError> {
    #[cfg(feature = "testing")]
    if let Some(net) = &pool.net {
        return net.connect(up).map(Conn::Mem);
    }
    #[cfg(not(feature = "testing"))]
    let _ = pool;
    let tcp = connect_tcp(up, deadline).await?;
    let fd = tcp.as_raw_fd();
    match &up.tls {
        None => Ok(Conn::Plain(tcp)),
        Some(t) => match deadline
            .run(t.connector.connect(t.server_name.clone(), tcp))
            .await
        {
            Ok(Ok(s)) => Ok(Conn::Tls(Box::new(s), fd)),
            Ok(Err(e)) => {
                tracing::warn!(upstream = %up.name, error = %e, "TLS handshake with the upstream failed");
                Err(UpError::Tls)
            }
            Err(_) => Err(UpError::Timeout),
        },
    }
}

async fn connect_tcp(up: &Upstream, deadline: &mut Deadline) -> Result<TcpStream, UpError> {
    for addr in &up.addrs {
        match deadline.run(TcpStream::connect(addr)).await {
            Ok(Ok(c)) => {
                let _ = c.set_nodelay(true);
                return Ok(c);
            }
            Ok(Err(_)) => continue,
            Err(_) => return Err(UpError::Timeout),
        }
    }
    Err(UpError::Connect)
}

/// Whether a request may be sent a second time when its reused connection closes unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// It may have effects (`tools/call`, `initialize`, notifications, client responses,
    /// bridged REST calls, anything not known to be read-only): sent at most once.
    Never,
    /// Without effects: the MCP listings and `ping` (read-only by the spec) and HTTP `DELETE`
    /// of a session (idempotent, RFC 9110 §9.2.2).
    Safe,
}

impl Replay {
    /// The replay class of a JSON-RPC method sent upstream. `initialize` is `Never`: a second
    /// one opens a second upstream session, and "known to be safe" is the bar, not "probably".
    pub fn of_method(method: &str) -> Replay {
        match method {
            "ping"
            | "tools/list"
            | "resources/list"
            | "resources/templates/list"
            | "prompts/list" => Replay::Safe,
            _ => Replay::Never,
        }
    }
}

/// Send one POST/DELETE/GET to `up`'s endpoint path and read the response head (and body unless SSE).
pub async fn send(
    pool: &Pool,
    up: &Upstream,
    method: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
    replay: Replay,
) -> Result<UpResponse, UpError> {
    let path = &up.path;
    let req = Outgoing {
        method,
        path,
        headers,
        body,
        timeout,
        replay,
    };
    send_to(pool, up, &req).await
}

/// One request to an upstream, by its parts.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub method: &'a str,
    /// Path and query, e.g. `/mcp` or an OpenAPI operation's `/pets/7?x=1`.
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    /// For the whole exchange, connect to the last byte of the answer's head (and body).
    pub timeout: Duration,
    pub replay: Replay,
}

/// Send one request to an explicit path on `up` (the OpenAPI bridge's requests).
pub async fn send_to(
    pool: &Pool,
    up: &Upstream,
    out: &Outgoing<'_>,
) -> Result<UpResponse, UpError> {
    let Outgoing {
        method,
        path,
        headers,
        body,
        timeout,
        replay,
    } = *out;
    // One timer for the whole exchange, carried into an SSE body it returns (the slot is
    // empty only once an SSE response took it, which ends the exchange).
    let mut deadline = Some(Deadline::after(timeout));
    let mut req = encode_request(method, path, &up.authority, headers, body);

    // At most once (docs/security.md, "Faults"): a request that may have reached the upstream
    // is never sent again. It is resent once, on a fresh connection, only when the connection
    // was reused from the idle pool (a fresh one is never retried) and either
    //  1. writing the request failed: the kernel took at most a prefix of it, so the upstream
    //     holds an incomplete message (short of its Content-Length) that it cannot act on; or
    //  2. the request is `Replay::Safe` and the connection closed or reset before one byte of
    //     an answer. For anything else this case is `UpError::Unanswered`: a stale idle
    //     connection and an upstream that ran the request and then dropped the connection
    //     look the same from here, so a `tools/call` is never sent twice.
    // Any response byte, a timeout, or a failure on a fresh connection is reported as is.
    let mut reuse = true;
    loop {
        let idle = if reuse { pool.take(up.id) } else { None };
        let d = deadline.as_mut().ok_or(UpError::Timeout)?;
        let (mut conn, pooled) = match idle {
            Some(c) => (c, true),
            None => (connect(pool, up, d).await?, false),
        };
        reuse = false;
        let (res, back) = match d.run(conn.write_all(req)).await {
            Ok(r) => r,
            Err(_) => return Err(UpError::Timeout),
        };
        req = back;
        if res.is_err() {
            if pooled {
                continue;
            }
            return Err(UpError::Closed);
        }
        match read_response(conn, up, &mut deadline).await {
            Err(UpError::Unanswered) if pooled && replay == Replay::Safe => continue,
            Ok((resp, Some(conn))) => {
                pool.put(up.id, conn);
                return Ok(resp);
            }
            Ok((resp, None)) => return Ok(resp),
            Err(e) => return Err(e),
        }
    }
}

/// The bytes of one HTTP/1.1 request. A header value never carries CR or LF (no header
/// injection from anything that reached a value); the common case is one copy per value.
fn encode_request(
    method: &str,
    path: &str,
    authority: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut req = Vec::with_capacity(256 + body.len());
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(path.as_bytes());
    req.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    req.extend_from_slice(authority.as_bytes());
    req.extend_from_slice(b"\r\n");
    for (n, v) in headers {
        req.extend_from_slice(n.as_bytes());
        req.extend_from_slice(b": ");
        if memchr::memchr2(b'\r', b'\n', v.as_bytes()).is_none() {
            req.extend_from_slice(v.as_bytes());
        } else {
            req.extend(v.bytes().filter(|b| *b != b'\r' && *b != b'\n'));
        }
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"content-length: ");
    req.extend_from_slice(body.len().to_string().as_bytes());
    req.extend_from_slice(b"\r\n\r\n");
    req.extend_from_slice(body);
    req
}

/// Read the response on `conn`. An SSE response takes the deadline along (leaving `None`).
async fn read_response(
    mut conn: Conn,
    up: &Upstream,
    deadline_slot: &mut Option<Deadline>,
) -> Result<(UpResponse, Option<Conn>), UpError> {
    let deadline = deadline_slot.as_mut().ok_or(UpError::Timeout)?;
    let mut buf = Vec::with_capacity(4096);
    let mut answered = false;
    let (status, headers, consumed) = loop {
        let (n, b) = match read_into(&mut conn, buf, deadline).await {
            // A reset before the first byte of an answer: no different from a close.
            Err(UpError::Closed) if !answered => return Err(UpError::Unanswered),
            r => r?,
        };
        buf = b;
        if n == 0 {
            return Err(if answered {
                UpError::Closed
            } else {
                UpError::Unanswered
            });
        }
        answered = true;
        let mut hdrs = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut hdrs);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(used)) => {
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
                if (100..200).contains(&status) {
                    buf.drain(..used);
                    continue;
                }
                break (status, headers, used);
            }
            Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => continue,
            _ => return Err(UpError::BadResponse),
        }
    };
    buf.drain(..consumed);
    let get = |name: &str| {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    let te = get("transfer-encoding");
    let cl = get("content-length");
    let framing = match (te.as_slice(), cl.as_slice()) {
        ([t], []) if t.trim().eq_ignore_ascii_case("chunked") => Framing::Chunked,
        ([], [l]) => Framing::Length(
            l.trim()
                .parse::<usize>()
                .map_err(|_| UpError::BadResponse)?,
        ),
        ([], []) if status == 204 || status == 304 => Framing::Length(0),
        ([], []) => Framing::Close,
        _ => return Err(UpError::BadResponse),
    };
    let keep = !get("connection")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("close"));
    let is_sse = get("content-type").first().is_some_and(|v| {
        v.trim_start()
            .to_ascii_lowercase()
            .starts_with("text/event-stream")
    });
    if is_sse {
        let remaining = if let Framing::Length(n) = framing {
            n
        } else {
            0
        };
        let s = SseStream {
            conn: Some(conn),
            raw: buf,
            decoded: Vec::new(),
            framing,
            chunked: ChunkedDecoder::default(),
            remaining,
            deadline: deadline_slot.take().ok_or(UpError::Timeout)?,
            max_bytes: up.max_response_bytes,
            total: 0,
            eof: matches!(framing, Framing::Length(0)),
            reusable: keep,
        };
        return Ok((
            UpResponse {
                status,
                headers,
                body: UpBody::Sse(s),
            },
            None,
        ));
    }
    let mut body = Vec::new();
    let reusable;
    match framing {
        Framing::Length(n) => {
            if n > up.max_response_bytes {
                return Err(UpError::TooLarge);
            }
            while buf.len() < n {
                let (k, b) = read_into(&mut conn, buf, deadline).await?;
                buf = b;
                if k == 0 {
                    return Err(UpError::Closed);
                }
            }
            body.extend_from_slice(&buf[..n]);
            reusable = keep && buf.len() == n;
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::default();
            loop {
                let used = dec
                    .decode(&buf, &mut body, up.max_response_bytes)
                    .map_err(|e| {
                        if e.status == 413 {
                            UpError::TooLarge
                        } else {
                            UpError::BadResponse
                        }
                    })?;
                buf.drain(..used);
                if dec.is_done() {
                    break;
                }
                let (k, b) = read_into(&mut conn, buf, deadline).await?;
                buf = b;
                if k == 0 {
                    return Err(UpError::Closed);
                }
            }
            reusable = keep && buf.is_empty();
        }
        Framing::Close => {
            loop {
                let (k, b) = read_into(&mut conn, buf, deadline).await?;
                buf = b;
                if k == 0 {
                    break;
                }
                if buf.len() > up.max_response_bytes {
                    return Err(UpError::TooLarge);
                }
            }
            body = buf;
            reusable = false;
        }
    }
    Ok((
        UpResponse {
            status,
            headers,
            body: UpBody::Full(body),
        },
        if reusable { Some(conn) } else { None },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sse_events() {
        let mut b = b"id: 1\nevent: message\ndata: {\"a\":1}\n\n: comment\n\ndata: x\r\ndata: y\r\n\r\ndata: partial".to_vec();
        let e = take_event(&mut b).unwrap();
        assert_eq!(e.id.as_deref(), Some("1"));
        assert_eq!(e.data, "{\"a\":1}");
        let e = take_event(&mut b).unwrap();
        assert_eq!(e.data, "x\ny");
        assert!(take_event(&mut b).is_none());
        assert_eq!(b, b"data: partial");
    }

    #[test]
    fn priming_event_with_only_an_id() {
        let mut b = b"id: abc\nretry: 500\ndata: \n\n".to_vec();
        let e = take_event(&mut b).unwrap();
        assert_eq!(e.id.as_deref(), Some("abc"));
        assert_eq!(e.retry.as_deref(), Some("500"));
        assert_eq!(e.data, "");
    }

    #[test]
    fn request_bytes_and_no_header_injection() {
        let req = encode_request(
            "POST",
            "/mcp",
            "up.test:80",
            &[
                ("authorization", "Bearer abc"),
                ("x-evil", "a\r\nx-injected: 1\nb"),
            ],
            b"{}",
        );
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "POST /mcp HTTP/1.1\r\nhost: up.test:80\r\nauthorization: Bearer abc\r\n\
             x-evil: ax-injected: 1b\r\ncontent-length: 2\r\n\r\n{}"
        );
    }
}
