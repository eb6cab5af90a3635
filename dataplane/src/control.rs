//! Requests from shards to the control plane, over lock-free MPSC queues with oneshot replies.
//!
//! futures-channel's queue is lock-free and runtime-agnostic; with monoio's `sync`
//! feature a reply sent from a tokio thread wakes the waiting shard task directly.
//! Delegation requests have a queue of their own so a slow JWKS fetch never delays them.

use std::fmt;
use std::sync::Arc;

use crate::secret::Secret;
use std::time::Duration;

use futures_channel::{mpsc, oneshot};
use serde_json::Value;

/// A command a shard sends to the control plane.
#[derive(Debug)]
pub enum Command {
    /// A token named an unknown `kid`: refetch this issuer's JWKS (debounced, rate-limited,
    /// shared by all shards). The reply comes once the new snapshot is published or the
    /// refetch was refused.
    RefreshJwks {
        issuer: usize,
        done: oneshot::Sender<()>,
    },
    /// A session ended by DELETE on this replica: record it in the shared store so other
    /// replicas refuse the id too (`until`: when the id would have expired anyway).
    SessionEnded { id_hash: [u8; 32], until: i64 },
    /// An upstream said (on a stream relayed to a client) that its tools, prompts or
    /// resources changed: rediscover it (debounced by the control plane).
    UpstreamChanged { upstream: u32 },
    /// A DPoP proof passed this process's replay set: record its first use in the state
    /// store shared by the replicas (`key`: SHA-256 of thumbprint and `jti`; kept until `until`).
    DpopProof {
        key: [u8; 32],
        until: i64,
        reply: oneshot::Sender<ProofUse>,
    },
}

/// What the shared store says of a DPoP proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofUse {
    /// Recorded now: no replica saw it before.
    First,
    /// Already recorded by some replica: a replay.
    Replayed,
    /// The store did not answer: the request is refused (fail closed).
    Unavailable,
}

/// Who the delegated token is for.
#[derive(Clone)]
pub enum Subject {
    /// A user, from a validated inbound token.
    User {
        sub: String,
        email: Option<String>,
        /// The inbound token's own `act`, nested inside the gateway's.
        act: Option<Value>,
        /// The inbound token itself, only for external RFC 8693 exchange (never logged).
        subject_token: Option<Secret<Arc<str>>>,
    },
    /// The gateway itself (upstream sessions and discovery): no user, no `act`.
    Gateway,
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::User { sub, .. } => f
                .debug_struct("User")
                .field("sub", sub)
                .finish_non_exhaustive(),
            Subject::Gateway => f.write_str("Gateway"),
        }
    }
}

/// A request for a token scoped to one upstream (and one tool).
#[derive(Debug)]
pub struct DelegateRequest {
    pub subject: Subject,
    pub audience: String,
    pub scopes: Vec<String>,
    pub ttl_secs: i64,
    pub reply: oneshot::Sender<Result<Delegated, DelegationError>>,
}

/// A token obtained for one upstream.
#[derive(Clone)]
pub struct Delegated {
    pub token: Secret<Arc<str>>,
    pub jti: Option<String>,
    pub exp: i64,
    pub scope: String,
}

impl fmt::Debug for Delegated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delegated")
            .field("token", &"...")
            .field("exp", &self.exp)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Why no token could be obtained. The call fails; nothing goes upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DelegationError {
    #[error("the token service is unavailable")]
    Unavailable,
    #[error("the authorization server refused the exchange: {0}")]
    Refused(String),
    #[error("the authorization server returned an unacceptable token: {0}")]
    BadToken(String),
    #[error("token exchange timed out")]
    Timeout,
}

/// The shards' end of the command queues.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    tx: mpsc::UnboundedSender<Command>,
    delegate_tx: mpsc::UnboundedSender<DelegateRequest>,
}

impl ControlHandle {
    pub fn new() -> (
        ControlHandle,
        mpsc::UnboundedReceiver<Command>,
        mpsc::UnboundedReceiver<DelegateRequest>,
    ) {
        let (tx, rx) = mpsc::unbounded();
        let (delegate_tx, drx) = mpsc::unbounded();
        (ControlHandle { tx, delegate_tx }, rx, drx)
    }

    /// Ask for a JWKS refresh and wait (bounded) for it to be done.
    pub async fn refresh_jwks(&self, issuer: usize, wait: Duration) -> bool {
        let (done, rx) = oneshot::channel();
        if self
            .tx
            .unbounded_send(Command::RefreshJwks { issuer, done })
            .is_err()
        {
            return false;
        }
        matches!(monoio::time::timeout(wait, rx).await, Ok(Ok(())))
    }

    /// Tell the control plane a session ended (fire and forget: the local refusal is
    /// already in place; sharing it is the control plane's job).
    pub fn session_ended(&self, id_hash: [u8; 32], until: i64) {
        let _ = self
            .tx
            .unbounded_send(Command::SessionEnded { id_hash, until });
    }

    /// Tell the control plane an upstream's lists changed (fire and forget).
    pub fn upstream_changed(&self, upstream: u32) {
        let _ = self
            .tx
            .unbounded_send(Command::UpstreamChanged { upstream });
    }

    /// Record a DPoP proof's first use in the replicas' shared store and wait (bounded) for
    /// the verdict; no answer in time is `Unavailable`.
    pub async fn dpop_proof(&self, key: [u8; 32], until: i64, wait: Duration) -> ProofUse {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .unbounded_send(Command::DpopProof { key, until, reply })
            .is_err()
        {
            return ProofUse::Unavailable;
        }
        match monoio::time::timeout(wait, rx).await {
            Ok(Ok(v)) => v,
            _ => ProofUse::Unavailable,
        }
    }

    /// Ask the control plane for a delegation token and wait (bounded) for it.
    pub async fn delegate(
        &self,
        subject: Subject,
        audience: String,
        scopes: Vec<String>,
        ttl_secs: i64,
        wait: Duration,
    ) -> Result<Delegated, DelegationError> {
        let (reply, rx) = oneshot::channel();
        let req = DelegateRequest {
            subject,
            audience,
            scopes,
            ttl_secs,
            reply,
        };
        if self.delegate_tx.unbounded_send(req).is_err() {
            return Err(DelegationError::Unavailable);
        }
        match monoio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(DelegationError::Unavailable),
            Err(_) => Err(DelegationError::Timeout),
        }
    }
}
