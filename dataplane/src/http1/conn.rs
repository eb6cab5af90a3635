//! The per-connection loop: read a head within its deadline, read the body within
//! its limit, hand the request to the handler, keep the connection alive or close it.

use std::future::Future;
use std::io;
use std::time::Duration;

use monoio::buf::SliceMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use super::parse::{BodyFraming, ChunkedDecoder, Head, parse_head};
use super::{HttpError, Response, write_chunk, write_head};
use crate::deadline::Deadline;

/// Limits applied to every request on a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    /// Time allowed for a whole request head once its first byte arrived.
    pub header_timeout: Duration,
    /// Time allowed to receive the whole body.
    pub body_timeout: Duration,
    /// Time an idle keep-alive connection is kept open.
    pub idle_timeout: Duration,
}

/// A request with its whole body read.
#[derive(Debug)]
pub struct Request {
    pub head: Head,
    pub body: Vec<u8>,
}

/// What the connection loop calls for each request.
pub trait Handler {
    fn handle<S: AsyncWriteRent>(
        &self,
        req: Request,
        out: &mut Responder<'_, S>,
    ) -> impl Future<Output = ()>;

    /// A request whose head was read but whose body was refused unread (`error`: 413, 408);
    /// the connection answers it. Called once, before the answer, so the handler can put the
    /// request on record (every request has one). `Some` replaces the connection's answer:
    /// the handler could not put the request on record and says so instead.
    fn refused(&self, _head: &Head, _error: &HttpError) -> impl Future<Output = Option<Response>> {
        std::future::ready(None)
    }
}

/// Writes one response, either whole or as a chunked stream.
#[derive(Debug)]
pub struct Responder<'a, S> {
    stream: &'a mut S,
    buf: Vec<u8>,
    close: bool,
    state: RespState,
    head_only: bool,
    /// Headers added to whatever response is sent (e.g. `x-request-id`).
    extra: Vec<(&'static str, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RespState {
    Pending,
    Streaming,
    Done,
    Broken,
}

impl<'a, S: AsyncWriteRent> Responder<'a, S> {
    /// Add a header to the response this responder will send.
    pub fn add_header(&mut self, name: &'static str, value: String) {
        self.extra.push((name, value));
    }

    /// Mark the connection to be closed after this response.
    pub fn close_after(&mut self) {
        self.close = true;
    }

    async fn flush(&mut self) -> io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        let (res, mut buf) = self.stream.write_all(buf).await;
        buf.clear();
        self.buf = buf;
        if res.is_err() {
            self.state = RespState::Broken;
        }
        res.map(|_| ())
    }

    /// Send a complete response.
    pub async fn send(&mut self, resp: Response) -> io::Result<()> {
        if self.state != RespState::Pending {
            return Ok(());
        }
        if resp.status >= 400
            && resp.status != 401
            && resp.status != 403
            && resp.status != 404
            && resp.status != 405
        {
            // Keep the connection for the common auth and routing answers; close on the rest
            // (framing errors, overload), where the peer may be out of step with us.
            if matches!(resp.status, 400 | 408 | 413 | 431 | 501 | 505) {
                self.close = true;
            }
        }
        let mut headers = resp.headers;
        headers.append(&mut self.extra);
        write_head(
            &mut self.buf,
            resp.status,
            &headers,
            Some(resp.body.len()),
            self.close,
        );
        if !self.head_only {
            self.buf.extend_from_slice(&resp.body);
        }
        self.state = RespState::Done;
        self.flush().await
    }

    /// Start a chunked response (used for `text/event-stream`).
    pub async fn start_stream(
        &mut self,
        status: u16,
        headers: &[(&'static str, String)],
    ) -> io::Result<()> {
        if self.state != RespState::Pending {
            return Ok(());
        }
        let mut all = headers.to_vec();
        all.append(&mut self.extra);
        write_head(&mut self.buf, status, &all, None, self.close);
        self.state = RespState::Streaming;
        self.flush().await
    }

    /// Write one chunk now: SSE events must reach the client when they are produced.
    pub async fn send_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        if self.state != RespState::Streaming {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "stream not open"));
        }
        write_chunk(&mut self.buf, data);
        self.flush().await
    }

    /// Finish a chunked response.
    pub async fn end_stream(&mut self) -> io::Result<()> {
        if self.state != RespState::Streaming {
            return Ok(());
        }
        self.buf.extend_from_slice(b"0\r\n\r\n");
        self.state = RespState::Done;
        self.flush().await
    }

    /// Close the connection without answering (fake upstreams that crash mid-request).
    #[cfg(feature = "testing")]
    pub fn hang_up(&mut self) {
        self.state = RespState::Broken;
    }

    /// Write `bytes` verbatim as the answer, then close (fake upstreams that break HTTP).
    #[cfg(feature = "testing")]
    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        if self.state == RespState::Pending {
            self.buf = bytes;
            let _ = self.flush().await;
        }
        self.state = RespState::Broken;
    }
}

/// Read more bytes into `buf`, growing it when full. Returns 0 at EOF.
async fn read_more<S: AsyncReadRent>(
    stream: &mut S,
    buf: Vec<u8>,
    deadline: &mut Deadline,
) -> (io::Result<usize>, Option<Vec<u8>>) {
    let mut buf = buf;
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(8192);
    }
    let len = buf.len();
    let cap = buf.capacity();
    let slice = SliceMut::new(buf, len, cap);
    match deadline.run(stream.read(slice)).await {
        Ok((res, slice)) => (res, Some(slice.into_inner())),
        Err(_) => (
            Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out")),
            None,
        ),
    }
}

/// How long, and how many bytes, a connection refused mid-request is drained after its answer.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;

/// Close a connection whose request body was left unread without losing the answer just
/// written: closing a socket with unread input makes the kernel send a reset, and a reset can
/// destroy the answer in the client's receive buffer before the client reads it (the client
/// is typically still sending the body). So: half-close (the client sees the answer end),
/// then read and discard what the client still sends, up to [`LINGER`] / [`LINGER_BYTES`].
async fn linger<S: AsyncReadRent + AsyncWriteRent>(stream: &mut S, buf: Vec<u8>) {
    let _ = stream.shutdown().await;
    let mut deadline = Deadline::after(LINGER);
    let mut drained = 0usize;
    let mut buf = buf;
    while drained < LINGER_BYTES {
        buf.clear();
        match read_more(stream, buf, &mut deadline).await {
            (Ok(n), Some(b)) if n > 0 => {
                drained += n;
                buf = b;
            }
            _ => return,
        }
    }
}

fn error_response(e: &HttpError) -> Response {
    let body = format!(
        "{{\"error\":\"invalid_request\",\"error_description\":\"{}\"}}",
        e.reason
    );
    Response::json(e.status, body.into_bytes())
}

/// Serve HTTP/1.1 requests on `stream` until it closes, errs, or times out.
pub async fn serve<S, H>(mut stream: S, handler: &H, limits: ConnLimits)
where
    S: AsyncReadRent + AsyncWriteRent,
    H: Handler,
{
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut first = true;
    loop {
        // 1. Read a head. The idle deadline applies until the first byte, then the head deadline.
        // (Each timer is armed when first needed: a request already in the buffer arms none.)
        let idle_for = if first {
            limits.header_timeout
        } else {
            limits.idle_timeout
        };
        let mut idle_deadline: Option<Deadline> = None;
        let mut head_deadline: Option<Deadline> = None;
        let parsed = loop {
            if !buf.is_empty() {
                match parse_head(&buf, limits.max_header_bytes) {
                    Ok(Some(h)) => break Ok(h),
                    Ok(None) => {}
                    Err(e) => break Err(e),
                }
                if head_deadline.is_none() {
                    head_deadline = Some(Deadline::after(limits.header_timeout));
                }
            }
            let deadline = match &mut head_deadline {
                Some(d) => d,
                None => idle_deadline.get_or_insert_with(|| Deadline::after(idle_for)),
            };
            let (res, b) = read_more(&mut stream, buf, deadline).await;
            match (res, b) {
                (Ok(0), _) | (Err(_), _) | (_, None) => {
                    // EOF, error, or timeout. A timeout mid-head gets a best-effort 408.
                    // (The buffer is gone with a timed-out read, so nothing else to do.)
                    if head_deadline.is_some() {
                        let mut r = Responder {
                            stream: &mut stream,
                            buf: Vec::new(),
                            close: true,
                            state: RespState::Pending,
                            head_only: false,
                            extra: Vec::new(),
                        };
                        let _ = r
                            .send(error_response(&HttpError::new(
                                408,
                                "request head not received in time",
                            )))
                            .await;
                    }
                    return;
                }
                (Ok(_), Some(b)) => buf = b,
            }
        };
        first = false;
        let (head, consumed) = match parsed {
            Ok(h) => h,
            Err(e) => {
                let mut r = Responder {
                    stream: &mut stream,
                    buf: Vec::new(),
                    close: true,
                    state: RespState::Pending,
                    head_only: false,
                    extra: Vec::new(),
                };
                let _ = r.send(error_response(&e)).await;
                return;
            }
        };
        buf.drain(..consumed);

        // 2. Read the body, refusing oversize bodies before reading them.
        // The body's timer is armed at its first read (a body already buffered arms none).
        let mut body_deadline: Option<Deadline> = None;
        let body_for = limits.body_timeout;
        let mut body = Vec::new();
        let mut close_after = !head.keep_alive;
        let body_result: Result<(), HttpError> = match head.framing {
            BodyFraming::None => Ok(()),
            BodyFraming::Length(n) if n > limits.max_body_bytes as u64 => {
                Err(HttpError::payload_too_large())
            }
            BodyFraming::Length(n) => {
                let n = n as usize;
                if head.expect_continue && buf.is_empty() {
                    let (r, b) = stream
                        .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
                        .await;
                    drop(b);
                    if r.is_err() {
                        return;
                    }
                }
                loop {
                    if buf.len() >= n {
                        body = buf.drain(..n).collect();
                        break Ok(());
                    }
                    let (res, b) = read_more(
                        &mut stream,
                        buf,
                        body_deadline.get_or_insert_with(|| Deadline::after(body_for)),
                    )
                    .await;
                    match (res, b) {
                        (Ok(k), Some(b)) if k > 0 => buf = b,
                        (Err(e), _) if e.kind() == io::ErrorKind::TimedOut => {
                            buf = Vec::new();
                            break Err(HttpError::new(408, "request body not received in time"));
                        }
                        _ => return,
                    }
                }
            }
            BodyFraming::Chunked => {
                if head.expect_continue && buf.is_empty() {
                    let (r, _) = stream
                        .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
                        .await;
                    if r.is_err() {
                        return;
                    }
                }
                let mut dec = ChunkedDecoder::default();
                loop {
                    match dec.decode(&buf, &mut body, limits.max_body_bytes) {
                        Ok(used) => {
                            buf.drain(..used);
                        }
                        Err(e) => break Err(e),
                    }
                    if dec.is_done() {
                        break Ok(());
                    }
                    let (res, b) = read_more(
                        &mut stream,
                        buf,
                        body_deadline.get_or_insert_with(|| Deadline::after(body_for)),
                    )
                    .await;
                    match (res, b) {
                        (Ok(k), Some(b)) if k > 0 => buf = b,
                        (Err(e), _) if e.kind() == io::ErrorKind::TimedOut => {
                            buf = Vec::new();
                            break Err(HttpError::new(408, "request body not received in time"));
                        }
                        _ => return,
                    }
                }
            }
        };
        if let Err(e) = body_result {
            let answer = handler
                .refused(&head, &e)
                .await
                .unwrap_or_else(|| error_response(&e));
            let mut r = Responder {
                stream: &mut stream,
                buf: Vec::new(),
                close: true,
                state: RespState::Pending,
                head_only: false,
                extra: Vec::new(),
            };
            if r.send(answer).await.is_ok() {
                linger(&mut stream, buf).await;
            }
            return;
        }

        // 3. Handle.
        let head_only = head.method == super::Method::Head;
        let mut responder = Responder {
            stream: &mut stream,
            buf: Vec::new(),
            close: close_after,
            state: RespState::Pending,
            head_only,
            extra: Vec::new(),
        };
        handler.handle(Request { head, body }, &mut responder).await;
        if responder.state == RespState::Pending {
            let _ = responder.send(Response::text(500, "no response")).await;
        }
        if responder.state == RespState::Streaming {
            // The handler gave up mid-stream: the client cannot know where the body ends.
            responder.close = true;
        }
        close_after = responder.close || responder.state != RespState::Done;
        if close_after {
            return;
        }
    }
}
