//! Per-user and per-(user, tool) rate limits: GCRA token buckets, one atomic `u64` each, in
//! a map shared by every shard of the process, with idle buckets evicted and a hard size cap.
//!
//! GCRA ("generic cell rate algorithm") is a token bucket stored as one number: the
//! theoretical arrival time (TAT) of the next request. A bucket whose TAT is not in the
//! future is full, so a full bucket is the same as no bucket and evicting it loses nothing.
//! The decision is sans-IO: the caller passes the time (from the shard's injected clock),
//! so the logic is tested with plain numbers. Why not the `governor` crate: its keyed
//! limiter reads its own clock, has one quota per limiter and no bound on the number of keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use crate::clock::Clock;

/// JSON-RPC error code of a rate-limited request (implementation-defined server error range;
/// the last digits echo HTTP 429).
pub const JSONRPC_CODE: i64 = -32029;

/// Default hard cap on the number of buckets (about 60 bytes each, so a few MiB).
pub const DEFAULT_MAX_BUCKETS: usize = 100_000;

/// A rate: `per_second` tokens a second, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    per_second: f64,
    burst: u32,
    /// Microseconds per token (the GCRA emission interval), at least 1.
    interval_us: u64,
    /// `interval_us * burst`: how far the TAT may run ahead of now.
    tolerance_us: u64,
}

impl Quota {
    /// `None` unless `per_second` is a positive finite number and `burst` is at least 1.
    pub fn new(per_second: f64, burst: u32) -> Option<Quota> {
        if !(per_second.is_finite() && per_second > 0.0) || burst == 0 {
            return None;
        }
        // `as` saturates: a vanishing rate becomes "one token, then practically never".
        let interval_us = ((1_000_000.0 / per_second).round() as u64).max(1);
        Some(Quota {
            per_second,
            burst,
            interval_us,
            tolerance_us: interval_us.saturating_mul(u64::from(burst)),
        })
    }

    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }
}

/// Which bucket: a user (first 128 bits of the SHA-256 owner hash of `iss` and `sub`, never the
/// raw id) and a scope: 0 for the per-user bucket, a tool's [`tool_key`] for a per-tool one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    user: [u8; 16],
    scope: u64,
}

impl Key {
    pub fn user(owner: &[u8; 32]) -> Key {
        Key::new(owner, 0)
    }

    pub fn tool(owner: &[u8; 32], tool: u64) -> Key {
        Key::new(owner, tool)
    }

    fn new(owner: &[u8; 32], scope: u64) -> Key {
        let mut user = [0u8; 16];
        user.copy_from_slice(&owner[..16]);
        Key { user, scope }
    }
}

/// The scope of a tool's buckets: 64 bits of SHA-256 of its namespaced name, never 0. Stable
/// across reloads, so a reload that keeps a tool's limit keeps its buckets.
pub fn tool_key(name: &str) -> u64 {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    u64::from_le_bytes(b).max(1)
}

/// A configured per-tool limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToolLimit {
    pub key: u64,
    pub quota: Quota,
}

/// The limits of one snapshot generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub per_user: Option<Quota>,
    /// Namespaced tool name (as clients see it) → its per-(user, tool) limit.
    pub per_tool: HashMap<String, ToolLimit>,
    /// Hard cap on the number of buckets.
    pub max_buckets: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_user: None,
            per_tool: HashMap::new(),
            max_buckets: DEFAULT_MAX_BUCKETS,
        }
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Over the limit; a token is available again after this many microseconds.
    Limited {
        retry_after_us: u64,
    },
}

impl Decision {
    /// Seconds to put in `Retry-After`: rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Decision::Allowed => 0,
            Decision::Limited { retry_after_us } => retry_after_us.div_ceil(1_000_000).max(1),
        }
    }
}

/// The shared bucket map.
///
/// When the map is full, a key without a bucket shares one overflow bucket per scope (its
/// quota applies to all such users together). That is the fail-safe choice: the admitted rate
/// stays bounded by the configured quotas whatever the number of identities, yet users who
/// arrive while the map is full are slowed rather than all refused.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: DashMap<Key, AtomicU64>,
    /// Buckets in `buckets` (kept here: `DashMap::len` locks every shard of the map).
    len: AtomicUsize,
    /// Scope → the bucket shared by keys that found the map full.
    overflow: DashMap<u64, AtomicU64>,
    /// The zero of the microsecond timeline every shard's clock is read on.
    base: quanta::Instant,
}

impl RateLimiter {
    /// An empty map whose timeline starts at `base`. Nothing evicts its buckets but
    /// [`RateLimiter::sweep`]; [`RateLimiter::start`] also runs the sweeper.
    pub fn new(base: quanta::Instant) -> RateLimiter {
        RateLimiter {
            buckets: DashMap::new(),
            len: AtomicUsize::new(0),
            overflow: DashMap::new(),
            base,
        }
    }

    /// A limiter on `clock`'s timeline (the shards'), with a sweeper thread that evicts full
    /// buckets every second of real time; the thread ends when the limiter is dropped. (Not a
    /// shard: a sweep of a large map takes milliseconds.)
    pub fn start(clock: Clock) -> Arc<RateLimiter> {
        let limiter = Arc::new(RateLimiter::new(clock.now()));
        let weak: Weak<RateLimiter> = Arc::downgrade(&limiter);
        let spawned = std::thread::Builder::new()
            .name("warden-ratelimit".into())
            .spawn(move || {
                let buckets = metrics::gauge!("warden_ratelimit_buckets");
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    let Some(l) = weak.upgrade() else { return };
                    l.sweep(l.micros(clock.now()));
                    buckets.set(l.len() as f64);
                }
            });
        if let Err(e) = spawned {
            // Without the sweeper the cap still bounds the map; idle users then share overflow.
            tracing::error!(error = %e, "Could not start the rate-limit sweeper");
        }
        limiter
    }

    /// Microseconds on this limiter's timeline for an instant of a shard's clock.
    pub fn micros(&self, at: quanta::Instant) -> u64 {
        at.saturating_duration_since(self.base).as_micros() as u64
    }

    /// Buckets held (overflow buckets not counted).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Take one token from `key`'s bucket at time `now_us`, creating the bucket if there is
    /// room for it among `max_buckets`.
    pub fn check(&self, key: Key, quota: Quota, now_us: u64, max_buckets: usize) -> Decision {
        if let Some(b) = self.buckets.get(&key) {
            return take(&b, quota, now_us);
        }
        if self.len.load(Ordering::Relaxed) < max_buckets {
            match self.buckets.entry(key) {
                Entry::Occupied(o) => return take(o.get(), quota, now_us),
                Entry::Vacant(v) => {
                    // Count first so concurrent inserts on other map shards cannot overshoot.
                    if self.len.fetch_add(1, Ordering::AcqRel) < max_buckets {
                        let b = v.insert(AtomicU64::new(0));
                        return take(&b, quota, now_us);
                    }
                    self.len.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        metrics::counter!("warden_ratelimit_overflow_total").increment(1);
        let shared = self
            .overflow
            .entry(key.scope)
            .or_insert_with(|| AtomicU64::new(0))
            .downgrade();
        take(&shared, quota, now_us)
    }

    /// Evict every full bucket (its TAT is not after `now_us`): lossless, since a full bucket
    /// answers exactly like a missing one. Returns how many were evicted.
    pub fn sweep(&self, now_us: u64) -> usize {
        let mut evicted = 0;
        // `retain` holds each map shard's write lock while it looks, so no `take` runs on a
        // bucket between the look and the removal.
        self.buckets.retain(|_, b| {
            let keep = b.load(Ordering::Acquire) > now_us;
            if !keep {
                evicted += 1;
            }
            keep
        });
        self.overflow
            .retain(|_, b| b.load(Ordering::Acquire) > now_us);
        self.len.fetch_sub(evicted, Ordering::AcqRel);
        // Give the memory of a past flood back once it has drained.
        if self.buckets.capacity() > 4 * self.len() + 4096 {
            self.buckets.shrink_to_fit();
        }
        evicted
    }

    /// Slots allocated by the map (for memory tests and sizing).
    pub fn capacity(&self) -> usize {
        self.buckets.capacity()
    }
}

/// GCRA: allow if, after adding one interval to `max(TAT, now)`, the TAT is at most
/// `tolerance` ahead of now. Lock-free: a compare-and-swap loop on the one `u64`.
fn take(tat: &AtomicU64, q: Quota, now: u64) -> Decision {
    let mut cur = tat.load(Ordering::Acquire);
    loop {
        let next = cur.max(now).saturating_add(q.interval_us);
        let ahead = next - now;
        if ahead > q.tolerance_us {
            return Decision::Limited {
                retry_after_us: ahead - q.tolerance_us,
            };
        }
        match tat.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Decision::Allowed,
            Err(seen) => cur = seen,
        }
    }
}

#[cfg(test)]
#[path = "ratelimit_tests.rs"]
mod tests;
