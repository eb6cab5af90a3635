//! MCP sessions: random ids bound to the token's issuer and subject, shared by all shards.
//!
//! Connections land on shards at random, so every shard must serve every session.
//! The store is a `DashMap` (the one place cross-shard state is unavoidable: DELETE
//! must end a session everywhere at once). Entries hold only what later requests
//! need: the bound identity, the negotiated version, the per-upstream session ids
//! and the in-flight id map used to route `notifications/cancelled`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;

/// One client session.
pub struct Session {
    /// SHA-256 of `iss` + NUL + `sub`: the identity this session is bound to.
    pub owner: [u8; 32],
    pub protocol_version: String,
    /// The client's `initialize` params, replayed to upstreams when their session is opened.
    pub client_init: Option<String>,
    /// Upstream id → the upstream's own `Mcp-Session-Id` (empty string when it issued none).
    pub upstream_sessions: DashMap<u32, UpstreamSession>,
    /// Client request id (raw JSON) → (upstream id, upstream request id), for cancellation.
    pub inflight: DashMap<String, (u32, u64)>,
    /// Unix seconds of last use, for idle expiry.
    pub last_seen: AtomicI64,
}

/// The gateway's session with one upstream on behalf of one client session.
#[derive(Clone)]
pub struct UpstreamSession {
    pub session_id: Option<String>,
    pub protocol_version: String,
}

impl fmt::Debug for UpstreamSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamSession")
            .field("session_id", &self.session_id.as_ref().map(|_| "..."))
            .field("protocol_version", &self.protocol_version)
            .finish()
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("protocol_version", &self.protocol_version)
            .field("upstreams", &self.upstream_sessions.len())
            .finish_non_exhaustive()
    }
}

/// Hash of the identity a session is bound to.
pub fn owner_of(iss: &str, sub: &str) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(iss.as_bytes());
    ctx.update(&[0]);
    ctx.update(sub.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The cross-shard session table.
#[derive(Debug, Default)]
pub struct SessionStore {
    map: DashMap<String, Arc<Session>>,
}

/// Why a session id was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// Unknown, ended, expired, or bound to another user: all answered 404, alike.
    NotFound,
}

impl SessionStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Create a session; returns its id (256 random bits, base64url: visible ASCII).
    pub fn create(
        &self,
        owner: [u8; 32],
        protocol_version: String,
        client_init: Option<String>,
        now: i64,
    ) -> String {
        let mut bytes = [0u8; 32];
        if aws_lc_rs::rand::fill(&mut bytes).is_err() {
            // The system RNG failing is not recoverable in a sane way; an all-zero id must
            // never be issued, so fall back to a second source (time + address entropy is
            // not acceptable either): abort the process rather than mint a guessable id.
            std::process::abort();
        }
        let id = URL_SAFE_NO_PAD.encode(bytes);
        let s = Session {
            owner,
            protocol_version,
            client_init,
            upstream_sessions: DashMap::new(),
            inflight: DashMap::new(),
            last_seen: AtomicI64::new(now),
        };
        self.map.insert(id.clone(), Arc::new(s));
        id
    }

    /// Look up a session for `owner`. Another user's session is indistinguishable from an unknown one.
    pub fn get(
        &self,
        id: &str,
        owner: &[u8; 32],
        now: i64,
        idle_timeout_secs: i64,
    ) -> Result<Arc<Session>, SessionError> {
        let s = self
            .map
            .get(id)
            .map(|e| e.value().clone())
            .ok_or(SessionError::NotFound)?;
        if !constant_time_eq(&s.owner, owner) {
            return Err(SessionError::NotFound);
        }
        if now - s.last_seen.load(Ordering::Relaxed) > idle_timeout_secs {
            self.map.remove(id);
            return Err(SessionError::NotFound);
        }
        s.last_seen.store(now, Ordering::Relaxed);
        Ok(s)
    }

    /// End a session (DELETE). Returns it so upstream sessions can be closed too.
    pub fn remove(&self, id: &str, owner: &[u8; 32]) -> Result<Arc<Session>, SessionError> {
        let s = self
            .map
            .get(id)
            .map(|e| e.value().clone())
            .ok_or(SessionError::NotFound)?;
        if !constant_time_eq(&s.owner, owner) {
            return Err(SessionError::NotFound);
        }
        self.map.remove(id);
        Ok(s)
    }

    /// Drop sessions idle for longer than `idle_timeout_secs` (called by the control plane).
    pub fn expire(&self, now: i64, idle_timeout_secs: i64) -> usize {
        let before = self.map.len();
        self.map
            .retain(|_, s| now - s.last_seen.load(Ordering::Relaxed) <= idle_timeout_secs);
        before - self.map.len()
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bound_and_end() {
        let store = SessionStore::new();
        let alice = owner_of("iss", "alice");
        let bob = owner_of("iss", "bob");
        let id = store.create(alice, "2025-06-18".into(), None, 100);
        assert_eq!(id.len(), 43);
        assert!(id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        assert!(store.get(&id, &alice, 101, 3600).is_ok());
        assert_eq!(
            store.get(&id, &bob, 101, 3600).unwrap_err(),
            SessionError::NotFound
        );
        assert_eq!(store.remove(&id, &bob).unwrap_err(), SessionError::NotFound);
        assert!(store.remove(&id, &alice).is_ok());
        assert_eq!(
            store.get(&id, &alice, 102, 3600).unwrap_err(),
            SessionError::NotFound
        );
        // Issuer and subject are separated: ("ab","c") is not ("a","bc").
        assert_ne!(owner_of("ab", "c"), owner_of("a", "bc"));
    }

    #[test]
    fn idle_sessions_expire() {
        let store = SessionStore::new();
        let o = owner_of("i", "s");
        let id = store.create(o, "2025-06-18".into(), None, 0);
        assert!(store.get(&id, &o, 10, 100).is_ok());
        assert_eq!(
            store.get(&id, &o, 200, 100).unwrap_err(),
            SessionError::NotFound
        );
        let _ = store.create(o, "2025-06-18".into(), None, 0);
        assert_eq!(store.expire(1000, 100), 1);
        assert!(store.is_empty());
    }
}
