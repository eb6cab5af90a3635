//! Requests from shards to the control plane, over a lock-free MPSC queue with oneshot replies.
//!
//! futures-channel's queue is lock-free and runtime-agnostic; with monoio's `sync`
//! feature a reply sent from a tokio thread wakes the waiting shard task directly.

use std::time::Duration;

use futures_channel::{mpsc, oneshot};

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
}

/// The shards' end of the command queue.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl ControlHandle {
    pub fn new() -> (ControlHandle, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded();
        (ControlHandle { tx }, rx)
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
}
