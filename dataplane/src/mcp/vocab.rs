//! The request path's shared vocabulary — who is calling, the request's ids, what goes on an
//! upstream call, and the context every step receives. A leaf: it imports no step, so steps
//! never import upward.

use std::cell::OnceCell;
use std::rc::Rc;
use std::sync::Arc;

use crate::auth::jwt::Claims;
use crate::http1::Head;
use crate::secret::Secret;
use crate::shard::Shard;
use crate::snapshot::Snapshot;

/// Who is calling, after authentication.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub claims: Option<Rc<Claims>>,
    pub owner: [u8; 32],
    /// The inbound token, kept only for external RFC 8693 exchange; never forwarded or logged.
    pub token: Option<Secret<Arc<str>>>,
    /// A fresh DPoP nonce to hand the client with the answer (RFC 9449 §8.2), when its own
    /// is past half its lifetime.
    pub next_nonce: Option<String>,
}

/// Per-request identifiers, made when the request arrives.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub request_id: String,
    pub trace_id: Option<String>,
    /// The gateway's span for this request: the parent of the upstream's.
    pub span_id: String,
    /// The caller's span, from its `traceparent`.
    pub parent_span_id: Option<String>,
    /// The request's `Mcp-Session-Id`, kept to be hashed only if its session's own hash is
    /// not learnt first ([`Meta::know_session`]).
    session_id: Option<Secret<Box<str>>>,
    /// Short hash of the `Mcp-Session-Id`, never the id itself ([`Meta::session`]).
    session: OnceCell<Option<String>>,
}

impl Meta {
    /// Continue the caller's W3C trace, or start one: the audit record, the exported span and
    /// the upstream's `traceparent` carry the same trace id; the gateway's span is the
    /// upstream's parent.
    pub fn of(shard: &Shard, head: &Head) -> Meta {
        let incoming = head.get_str("traceparent").and_then(trace_context_of);
        Meta {
            request_id: shard.next_request_id(),
            trace_id: Some(incoming.map(|(t, _)| t.to_owned()).unwrap_or_else(|| {
                format!("{:016x}{:016x}", shard.trace_bits(), shard.trace_bits())
            })),
            span_id: format!("{:016x}", shard.trace_bits() | 1),
            parent_span_id: incoming.map(|(_, p)| p.to_owned()),
            session_id: (head.get_str("mcp-session-id")).map(|id| Secret::new(id.into())),
            session: OnceCell::new(),
        }
    }

    /// Short hash of the `Mcp-Session-Id`, never the id itself: the session's own (hashed
    /// once, when the process first saw it) once the request's session is known, else
    /// hashed here.
    pub fn session(&self) -> Option<&str> {
        let hashed = || (self.session_id.as_ref()).map(|id| crate::audit::short_hash(id.expose()));
        self.session.get_or_init(hashed).as_deref()
    }

    /// The request's session was found: its hash is the one records and policy use.
    pub fn know_session(&self, session: &crate::session::Session) {
        if self.session_id.is_some() {
            let _ = self
                .session
                .set(Some(crate::audit::hex(&session.id_hash[..16])));
        }
    }

    /// The extras of an upstream call: its credential and a `traceparent` continuing the
    /// caller's trace, with the gateway's span as parent.
    pub fn outbound(&self, auth: Option<Secret<String>>) -> Outbound {
        Outbound {
            auth,
            auth_exp: None,
            traceparent: Some(format!(
                "00-{}-{}-01",
                self.trace_id
                    .as_deref()
                    .unwrap_or("00000000000000000000000000000001"),
                self.span_id
            )),
        }
    }
}

/// Trace id and parent span id of a W3C `traceparent` header
/// (`00-<32 hex>-<16 hex>-<2 hex>`), if well formed.
fn trace_context_of(tp: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = tp.trim().split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1] != "0".repeat(32)
        && parts[2] != "0".repeat(16))
    .then_some((parts[1], parts[2]))
}

/// What goes on an upstream call besides the message: the per-call credential (a
/// delegation token; `None` = the session credential) and the W3C trace context.
#[derive(Debug, Default)]
pub struct Outbound {
    pub auth: Option<Secret<String>>,
    /// When `auth` is a delegation token: its `exp` (Unix seconds), from which on it is
    /// not sent (not once, not on a resend).
    pub auth_exp: Option<i64>,
    pub traceparent: Option<String>,
}

/// A modern (2026-07-28) request's own: what its `_meta` said, and what an MRTR state it
/// receives is bound to (for `tools/call`, `prompts/get`, `resources/read`).
#[derive(Debug)]
pub(crate) struct ModernCall {
    pub m: super::era::Modern,
    pub binding: Option<super::mrtr::Binding>,
}

/// What every step after authentication receives: the shard, one snapshot for the whole
/// request, the request's ids, the caller, the CORS origin to echo, and — for a stateless
/// 2026-07-28 request — its per-request metadata (`None`: a 2025-era session's request).
#[derive(Clone, Copy)]
pub(crate) struct Cx<'a> {
    pub shard: &'a Rc<Shard>,
    pub snap: &'a Arc<Snapshot>,
    pub meta: &'a Meta,
    pub caller: &'a Caller,
    pub cors: Option<&'a str>,
    pub modern: Option<&'a ModernCall>,
}
