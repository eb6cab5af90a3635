//! MCP sessions: sealed ids bound to the token's issuer and subject, served by any shard of
//! any replica.
//!
//! The id carries what a replica needs (owner, version, the client's `initialize`, issue
//! time; see `seal.rs`), so connections may land anywhere. Each replica keeps, in a `DashMap`
//! shared by its shards, what it learnt while serving an id (its own upstream sessions, the
//! in-flight id map used to route `notifications/cancelled`) and the ids ended by DELETE,
//! here or on another replica through the shared store.

pub mod seal;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;

pub use seal::{KeyRingError, Sealed, SessionKeys};

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
    /// The gateway's own requests for input to this client (raw JSON id) → the call waiting
    /// for the answer (a 2026-07-28 upstream's `input_required`, see `mcp::input_bridge`).
    pub pending_inputs: DashMap<String, futures_channel::oneshot::Sender<String>>,
    /// This client's `resources/subscribe`s of a 2026-07-28 upstream's resources (which has
    /// no such method): its URI → (upstream id, the upstream's URI). Its GET stream holds
    /// them as a `subscriptions/listen` of the gateway's own (`mcp::stream_relay`).
    pub modern_subscriptions: DashMap<String, (u32, String)>,
    /// The level of the client's `logging/setLevel`, for upstreams that take it per request
    /// (2026-07-28: `_meta["io.modelcontextprotocol/logLevel"]`).
    pub log_level: arc_swap::ArcSwapOption<String>,
    /// Unix seconds of the sealed issue time (absolute lifetime).
    pub issued_at: i64,
    /// SHA-256 of the id (the revocation key).
    pub id_hash: [u8; 32],
    /// Unix seconds of last use on this replica, for idle expiry.
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

/// How long sessions live: idle (per replica, from the last request it served) and absolute
/// (from the sealed issue time, on every replica).
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub idle_secs: i64,
    pub max_secs: i64,
}

/// This replica's sessions: what it has learnt about each sealed id (its upstream sessions,
/// in-flight ids), and the ids ended by DELETE here or (via the shared store) elsewhere.
/// The sealed id itself is the source of truth; an id this replica never saw is opened and
/// adopted on first use, so no sticky routing is needed.
#[derive(Debug, Default)]
pub struct SessionStore {
    map: DashMap<String, Arc<Session>>,
    /// SHA-256 of an ended id → the Unix second after which it could not be used anyway.
    revoked: DashMap<[u8; 32], i64>,
    /// Open 2024-11-05 HTTP+SSE streams by channel id (see `mcp::sse_legacy`).
    pub legacy: DashMap<String, LegacyChannel>,
}

/// One open HTTP+SSE stream: whose it is, where its answers go, and the session its
/// `initialize` opened.
pub struct LegacyChannel {
    pub owner: [u8; 32],
    pub tx: futures_channel::mpsc::UnboundedSender<Vec<u8>>,
    pub session_id: Option<String>,
}

impl fmt::Debug for LegacyChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LegacyChannel")
            .field("session", &self.session_id.as_ref().map(|_| "..."))
            .finish_non_exhaustive()
    }
}

/// Why a session id was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// Unknown, forged, ended, expired, or bound to another user: all answered 404, alike.
    NotFound,
    /// The system RNG failed while sealing a new id (the gateway's fault).
    Seal,
}

/// SHA-256 of a session id: the form in which ended ids are kept and shared.
pub fn id_hash(id: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl SessionStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sessions this replica holds state for.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Create a session: its id is sealed with the ring's current key.
    pub fn create(
        &self,
        keys: &SessionKeys,
        owner: [u8; 32],
        protocol_version: String,
        client_init: Option<String>,
        now: i64,
    ) -> Result<String, SessionError> {
        let sealed = Sealed {
            owner,
            issued_at: now,
            protocol_version,
            client_init,
        };
        let id = keys.seal(&sealed).map_err(|_| SessionError::Seal)?;
        self.map
            .insert(id.clone(), Arc::new(Session::adopt(&id, sealed, now)));
        Ok(id)
    }

    /// The session `id` for `owner`. Another user's session is indistinguishable from an
    /// unknown one; an id sealed elsewhere (another shard or replica) is adopted.
    pub fn get(
        &self,
        keys: &SessionKeys,
        id: &str,
        owner: &[u8; 32],
        now: i64,
        life: Lifetimes,
    ) -> Result<Arc<Session>, SessionError> {
        let s = match self.map.get(id).map(|e| e.value().clone()) {
            Some(s) => s,
            None => {
                let sealed = keys.open(id).ok_or(SessionError::NotFound)?;
                if !constant_time_eq(&sealed.owner, owner) {
                    return Err(SessionError::NotFound);
                }
                let s = Arc::new(Session::adopt(id, sealed, now));
                if !self.revoked.is_empty() && self.revoked.contains_key(&s.id_hash) {
                    return Err(SessionError::NotFound);
                }
                if now - s.issued_at > life.max_secs {
                    return Err(SessionError::NotFound);
                }
                self.map.entry(id.to_owned()).or_insert(s).value().clone()
            }
        };
        if !constant_time_eq(&s.owner, owner) {
            return Err(SessionError::NotFound);
        }
        let ended = !self.revoked.is_empty() && self.revoked.contains_key(&s.id_hash);
        if ended
            || now - s.last_seen.load(Ordering::Relaxed) > life.idle_secs
            || now - s.issued_at > life.max_secs
        {
            self.map.remove(id);
            return Err(SessionError::NotFound);
        }
        s.last_seen.store(now, Ordering::Relaxed);
        Ok(s)
    }

    /// End a session (DELETE): refused for another user's id, like `get`. Returns the
    /// session (so its upstream sessions can be closed) and the hash to share with other
    /// replicas, with the time after which the id could not be used anyway.
    pub fn remove(
        &self,
        keys: &SessionKeys,
        id: &str,
        owner: &[u8; 32],
        now: i64,
        life: Lifetimes,
    ) -> Result<(Arc<Session>, [u8; 32], i64), SessionError> {
        let s = self.get(keys, id, owner, now, life)?;
        let until = s.issued_at.saturating_add(life.max_secs);
        let hash = s.id_hash;
        self.revoked.insert(hash, until);
        self.map.remove(id);
        Ok((s, hash, until))
    }

    /// An id ended on another replica (from the shared store).
    pub fn revoke_hash(&self, hash: [u8; 32], until: i64) {
        self.revoked.insert(hash, until);
    }

    /// Ended ids still remembered.
    pub fn revoked_len(&self) -> usize {
        self.revoked.len()
    }

    /// Forget sessions idle for longer than the idle timeout, and ended ids that could no
    /// longer be used anyway (called by the control plane).
    pub fn expire(&self, now: i64, life: Lifetimes) -> usize {
        let before = self.map.len();
        self.map.retain(|_, s| {
            now - s.last_seen.load(Ordering::Relaxed) <= life.idle_secs
                && now - s.issued_at <= life.max_secs
        });
        self.revoked.retain(|_, until| *until >= now);
        before - self.map.len()
    }
}

impl Session {
    /// A session the gateway holds itself, for a stateless (2026-07-28) caller: no id, so
    /// nothing to revoke; it holds the upstream sessions opened on that user's behalf.
    pub fn owned(
        owner: [u8; 32],
        protocol_version: &str,
        client_init: String,
        now: i64,
    ) -> Session {
        Session {
            owner,
            protocol_version: protocol_version.to_owned(),
            client_init: Some(client_init),
            issued_at: now,
            id_hash: [0; 32],
            upstream_sessions: per_session(),
            inflight: per_session(),
            pending_inputs: per_session(),
            modern_subscriptions: per_session(),
            log_level: arc_swap::ArcSwapOption::empty(),
            last_seen: AtomicI64::new(now),
        }
    }

    fn adopt(id: &str, s: Sealed, now: i64) -> Session {
        Session {
            owner: s.owner,
            protocol_version: s.protocol_version,
            client_init: s.client_init,
            issued_at: s.issued_at,
            id_hash: id_hash(id),
            upstream_sessions: per_session(),
            inflight: per_session(),
            pending_inputs: per_session(),
            modern_subscriptions: per_session(),
            log_level: arc_swap::ArcSwapOption::empty(),
            last_seen: AtomicI64::new(now),
        }
    }
}

/// Shards of a map inside one session: the fewest `DashMap` takes. Its default is four per
/// core of the process's CPU set, each shard a 128-byte cache line: 512 bytes per map pinned to
/// one core, 8 KiB on 16 cores, and a session has four maps (32 KiB per session on 16 cores).
/// One session's requests rarely race for its maps, so two shards lose nothing; a lookup
/// costs the same.
const SESSION_MAP_SHARDS: usize = 2;

fn per_session<K: Eq + std::hash::Hash, V>() -> DashMap<K, V> {
    DashMap::with_shard_amount(SESSION_MAP_SHARDS)
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
