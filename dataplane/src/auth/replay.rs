//! The process-wide set of DPoP proofs already used, shared by every shard (RFC 9449 §11.1).
//!
//! A per-shard cache would let a replay through on another shard, so the set is one
//! `DashMap` for the process (as the rate limiter's buckets are): an insert locks one of its
//! internal shards for a few hundred nanoseconds and never waits on I/O. Replicas share their
//! proofs through the state store instead (the control plane's `DpopJti` command), checked
//! after this set; see `docs/security.md`, "DPoP".

use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

/// Proofs one process remembers at once (about 100 bytes each): each is kept until its `iat`
/// plus the window, so at the default 5 minutes about 6,600 proofs a second sustained.
pub const PROCESS_CAPACITY: usize = 2_000_000;

/// Why a proof could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Seen before, and still within its `iat` window: the agent's replay.
    #[error("DPoP proof already used")]
    Replayed,
    /// The set holds `capacity` live proofs: refused rather than forgotten (fail closed; Warden's).
    #[error("DPoP replay set full")]
    Full,
}

/// Proofs seen, by replay key, with the time after which their `iat` check fails anyway.
#[derive(Debug)]
pub struct ReplaySet {
    seen: DashMap<[u8; 32], i64>,
    /// Entries in `seen` (kept here: `DashMap::len` locks every shard of the map).
    len: AtomicUsize,
    capacity: usize,
}

impl ReplaySet {
    pub fn new(capacity: usize) -> ReplaySet {
        ReplaySet {
            seen: DashMap::new(),
            len: AtomicUsize::new(0),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Record a proof's first use at `now`; it stays recorded until `until`. Exactly one of
    /// several concurrent callers with the same key (on any shard) gets `Ok`.
    pub fn first_use(&self, key: [u8; 32], until: i64, now: i64) -> Result<(), ReplayError> {
        for attempt in 0..2 {
            match self.seen.entry(key) {
                Entry::Occupied(mut e) => {
                    if *e.get() >= now {
                        return Err(ReplayError::Replayed);
                    }
                    // Expired: a proof this old fails its iat check before reaching here,
                    // so this is a new proof with a colliding key; take the slot over.
                    e.insert(until);
                    return Ok(());
                }
                Entry::Vacant(v) => {
                    if self.len() < self.capacity {
                        v.insert(until);
                        self.len.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    if attempt == 1 {
                        return Err(ReplayError::Full);
                    }
                }
            }
            // Full: drop expired entries (the entry's lock is released first) and try again.
            self.sweep(now);
        }
        Err(ReplayError::Full)
    }

    /// Drop every entry past its window.
    pub fn sweep(&self, now: i64) {
        let mut dropped = 0;
        self.seen.retain(|_, until| {
            let keep = *until >= now;
            if !keep {
                dropped += 1;
            }
            keep
        });
        self.len.fetch_sub(dropped, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_key_is_accepted_once_until_it_expires() {
        let s = ReplaySet::new(10);
        assert_eq!(s.first_use([1; 32], 100, 50), Ok(()));
        assert_eq!(s.first_use([1; 32], 100, 60), Err(ReplayError::Replayed));
        assert_eq!(s.first_use([1; 32], 100, 100), Err(ReplayError::Replayed));
        assert_eq!(s.first_use([2; 32], 100, 60), Ok(()));
        assert_eq!(s.first_use([1; 32], 200, 101), Ok(()));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn full_set_sweeps_then_refuses() {
        let s = ReplaySet::new(2);
        s.first_use([1; 32], 10, 0).unwrap();
        s.first_use([2; 32], 20, 0).unwrap();
        assert_eq!(s.first_use([3; 32], 30, 5), Err(ReplayError::Full));
        // At 11 the first entry is past its window and swept.
        assert_eq!(s.first_use([3; 32], 30, 11), Ok(()));
        assert_eq!(s.len(), 2);
        // The swept key is not "forgotten" into a false accept of a live one.
        assert_eq!(s.first_use([2; 32], 20, 12), Err(ReplayError::Replayed));
    }

    #[test]
    fn one_winner_among_threads() {
        let s = Arc::new(ReplaySet::new(1000));
        let wins: usize = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    let s = s.clone();
                    sc.spawn(move || usize::from(s.first_use([7; 32], 100, 1).is_ok()))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(wins, 1);
    }
}
