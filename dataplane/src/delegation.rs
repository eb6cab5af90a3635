//! The per-shard delegation-token cache: one entry per everything that shapes a token,
//! single-flight on a miss, refresh ahead of expiry for hot keys, never an expired token.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::oneshot;

use crate::clock::Clock;
use crate::control::{ControlHandle, Delegated, DelegationError, Subject};

/// Everything that shapes a delegation token. Two users, clients, upstreams, tools or
/// scope sets never share an entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub issuer: String,
    pub subject: String,
    pub client: String,
    /// The inbound token's `act`, serialized (it is nested into ours).
    pub act: String,
    pub upstream: u32,
    pub tool: String,
    pub scopes: Vec<String>,
}

/// Where a token came from, for audit and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Fresh,
}

type Waiters = Vec<oneshot::Sender<Result<Delegated, DelegationError>>>;

/// Per-shard state (`!Send`).
#[derive(Debug)]
pub struct DelegationCache {
    map: RefCell<HashMap<Key, Delegated>>,
    in_flight: RefCell<HashMap<Key, Waiters>>,
    clock: Clock,
}

/// How long before `exp` a cached token stops being handed out: a fifth of the TTL,
/// at least one second, so it never expires on its way to the upstream.
fn margin_ms(ttl_secs: i64) -> i64 {
    (ttl_secs * 1000 / 5).max(1000)
}

const MAX_ENTRIES: usize = 100_000;

impl DelegationCache {
    /// An empty cache that judges expiry by `clock` (the shard's).
    pub fn new(clock: Clock) -> Self {
        DelegationCache {
            map: RefCell::default(),
            in_flight: RefCell::default(),
            clock,
        }
    }

    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.borrow().is_empty()
    }

    /// A usable cached token, or `None`. Also says whether a refresh-ahead is due.
    fn lookup(&self, key: &Key, now_ms: i64, ttl_secs: i64) -> Option<(Delegated, bool)> {
        let map = self.map.borrow();
        let d = map.get(key)?;
        let left = d.exp * 1000 - now_ms;
        if left <= margin_ms(ttl_secs) {
            return None;
        }
        Some((d.clone(), left < ttl_secs * 1000 / 2))
    }

    fn store(&self, key: Key, d: Delegated, now_ms: i64) {
        let mut map = self.map.borrow_mut();
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, v| v.exp * 1000 > now_ms);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, d);
    }

    /// Get a token for `key`: from the cache, by joining an exchange already under way
    /// for the same key, or by asking the control plane.
    pub async fn obtain(
        self: &Rc<Self>,
        control: &ControlHandle,
        key: Key,
        subject: Subject,
        audience: &str,
        ttl_secs: i64,
        wait: Duration,
    ) -> Result<(Delegated, Source), DelegationError> {
        if let Some((d, refresh)) = self.lookup(&key, self.clock.unix_ms(), ttl_secs) {
            if refresh && !self.in_flight.borrow().contains_key(&key) {
                // Hot key past half its life: fetch the next token in the background.
                self.in_flight.borrow_mut().insert(key.clone(), Vec::new());
                let this = self.clone();
                let control = control.clone();
                let audience = audience.to_owned();
                monoio::spawn(async move {
                    let r = control
                        .delegate(subject, audience, key.scopes.clone(), ttl_secs, wait)
                        .await;
                    let now = this.clock.unix_ms();
                    this.finish(key, r, now);
                });
            }
            return Ok((d, Source::Cache));
        }
        let joined = {
            let mut inflight = self.in_flight.borrow_mut();
            match inflight.get_mut(&key) {
                Some(waiters) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(tx);
                    Some(rx)
                }
                None => {
                    inflight.insert(key.clone(), Vec::new());
                    None
                }
            }
        };
        if let Some(rx) = joined {
            return match monoio::time::timeout(wait, rx).await {
                Ok(Ok(r)) => r.map(|d| (d, Source::Fresh)),
                Ok(Err(_)) => Err(DelegationError::Unavailable),
                Err(_) => Err(DelegationError::Timeout),
            };
        }
        let r = control
            .delegate(
                subject,
                audience.to_owned(),
                key.scopes.clone(),
                ttl_secs,
                wait,
            )
            .await;
        let out = r.clone();
        self.finish(key, r, self.clock.unix_ms());
        out.map(|d| (d, Source::Fresh))
    }

    /// Record an exchange's outcome and wake everyone who waited on it.
    fn finish(&self, key: Key, r: Result<Delegated, DelegationError>, now_ms: i64) {
        let waiters = self.in_flight.borrow_mut().remove(&key).unwrap_or_default();
        if let Ok(d) = &r {
            self.store(key, d.clone(), now_ms);
        }
        for w in waiters {
            let _ = w.send(r.clone());
        }
    }
}

#[cfg(test)]
#[path = "delegation_tests.rs"]
mod tests;
