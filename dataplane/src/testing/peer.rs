//! Fake upstreams without sockets: an in-process handler behind an in-memory connection.
//!
//! [`MemNet`] is the upstream transport of a test shard: `upstream::connect` asks it for a
//! connection to an upstream (by name) instead of dialling TCP. Each connection gets a
//! [`duplex`] pair; the far end is served by the gateway's own HTTP/1.1 server loop
//! (`http1::conn::serve`) around a [`FakeUpstream`]. So the real client code runs unchanged
//! on the near end — request framing, keep-alive, the idle pool, at-most-once resending,
//! JSON and SSE bodies — and the gateway's strict parser reads what it sent.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use monoio::io::AsyncWriteRent;
use serde_json::Value;

use super::duplex::{MemStream, duplex};
use crate::http1::conn::{self, ConnLimits, Handler, Request, Responder};
use crate::http1::{Method, Response};
use crate::snapshot::Upstream;
use crate::upstream::UpError;

/// One HTTP request as a fake upstream receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// In arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl PeerRequest {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, `Value::Null` when empty or not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn of(req: Request) -> PeerRequest {
        let method = match req.head.method {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Head => "HEAD",
            Method::Other => "OTHER",
        };
        PeerRequest {
            method: method.to_owned(),
            path: req.head.path,
            query: req.head.query,
            headers: req
                .head
                .headers
                .into_iter()
                .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
                .collect(),
            body: req.body,
        }
    }
}

/// How a fake upstream answers one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerReply {
    /// A whole response, framed with `Content-Length`.
    Full {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// A chunked `text/event-stream`, one chunk per event (each a complete `data: …\n\n`
    /// block). `complete: false` closes the connection after the last event without the
    /// final chunk: an upstream that died mid-stream.
    Sse {
        status: u16,
        headers: Vec<(&'static str, String)>,
        events: Vec<Vec<u8>>,
        complete: bool,
    },
    /// Read the request, then close without a byte of answer (ran it, then crashed).
    HangUp,
    /// Write these bytes verbatim, then close (a broken HTTP implementation).
    Raw(Vec<u8>),
    /// Answer after a real-time delay (the upstream timeout is real time too).
    After(Duration, Box<PeerReply>),
}

impl PeerReply {
    /// `status` with a JSON body.
    pub fn json(status: u16, body: &Value) -> PeerReply {
        PeerReply::Full {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// `status` with no body.
    pub fn status(status: u16) -> PeerReply {
        PeerReply::Full {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Add a header to a `Full` or `Sse` reply (others are returned unchanged).
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> PeerReply {
        if let PeerReply::Full { headers, .. } | PeerReply::Sse { headers, .. } = &mut self {
            headers.push((name, value.into()));
        }
        self
    }
}

/// An in-process upstream: one request in, one reply out.
pub trait FakeUpstream {
    fn handle(&self, req: &PeerRequest) -> PeerReply;
}

impl<F: Fn(&PeerRequest) -> PeerReply> FakeUpstream for F {
    fn handle(&self, req: &PeerRequest) -> PeerReply {
        self(req)
    }
}

/// Limits of the fake upstreams' server loop: generous, so only the gateway's own limits
/// and timeouts are under test.
const PEER_LIMITS: ConnLimits = ConnLimits {
    max_header_bytes: 64 * 1024,
    max_body_bytes: 64 * 1024 * 1024,
    header_timeout: Duration::from_secs(60),
    body_timeout: Duration::from_secs(60),
    idle_timeout: Duration::from_secs(300),
};

#[derive(Default)]
struct NetInner {
    peers: HashMap<String, Rc<dyn FakeUpstream>>,
    connections: HashMap<String, usize>,
}

/// The upstream transport of a test shard: upstream name → fake upstream. An upstream with
/// no fake refuses connections (`UpError::Connect`), like a port nobody listens on.
#[derive(Clone, Default)]
pub struct MemNet {
    inner: Rc<RefCell<NetInner>>,
}

impl std::fmt::Debug for MemNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.borrow();
        let mut names: Vec<&String> = inner.peers.keys().collect();
        names.sort();
        f.debug_struct("MemNet").field("peers", &names).finish()
    }
}

impl MemNet {
    pub fn new() -> MemNet {
        MemNet::default()
    }

    /// Serve upstream `name` (its `name:` in the configuration) with `peer`, from the next
    /// connection on; pooled connections stay with the peer they were opened to.
    pub fn serve(&self, name: &str, peer: Rc<dyn FakeUpstream>) {
        self.inner.borrow_mut().peers.insert(name.to_owned(), peer);
    }

    /// Refuse new connections to `name` from now on.
    pub fn unplug(&self, name: &str) {
        self.inner.borrow_mut().peers.remove(name);
    }

    /// Connections opened to `name` so far (pooling shows as fewer connections than requests).
    pub fn connections(&self, name: &str) -> usize {
        self.inner
            .borrow()
            .connections
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// A new connection to `up`: its far end served on this thread by the upstream's fake.
    pub(crate) fn connect(&self, up: &Upstream) -> Result<MemStream, UpError> {
        let peer = {
            let mut inner = self.inner.borrow_mut();
            let peer = inner.peers.get(&up.name).cloned().ok_or(UpError::Connect)?;
            *inner.connections.entry(up.name.clone()).or_default() += 1;
            peer
        };
        let (near, far) = duplex();
        monoio::spawn(async move {
            conn::serve(far, &PeerHandler { peer }, PEER_LIMITS).await;
        });
        Ok(near)
    }
}

/// The far end of a fake connection: the gateway's server loop calls the fake per request.
struct PeerHandler {
    peer: Rc<dyn FakeUpstream>,
}

impl Handler for PeerHandler {
    async fn handle<S: AsyncWriteRent>(&self, req: Request, out: &mut Responder<'_, S>) {
        let mut reply = self.peer.handle(&PeerRequest::of(req));
        while let PeerReply::After(delay, next) = reply {
            monoio::time::sleep(delay).await;
            reply = *next;
        }
        match reply {
            PeerReply::Full {
                status,
                headers,
                body,
            } => {
                let _ = out
                    .send(Response {
                        status,
                        headers,
                        body,
                    })
                    .await;
            }
            PeerReply::Sse {
                status,
                mut headers,
                events,
                complete,
            } => {
                if !headers.iter().any(|(n, _)| *n == "content-type") {
                    headers.push(("content-type", "text/event-stream".into()));
                }
                if out.start_stream(status, &headers).await.is_err() {
                    return;
                }
                for e in &events {
                    if out.send_chunk(e).await.is_err() {
                        return;
                    }
                }
                if complete {
                    let _ = out.end_stream().await;
                }
                // Otherwise the loop sees a stream left open and closes the connection.
            }
            PeerReply::HangUp => out.hang_up(),
            PeerReply::Raw(bytes) => out.send_raw(bytes).await,
            PeerReply::After(..) => {}
        }
    }
}
