//! Sign-in throttling per user name and per client address: after a few failures each attempt
//! waits exponentially longer, then attempts are refused with 429 and `Retry-After`. Unknown
//! user names are throttled exactly like known ones, so throttling reveals nothing.

use std::time::Duration;

use dashmap::DashMap;
use dataplane::clock::{Clock, Instant};
use serde::Deserialize;

/// `authorization_server.login_throttle`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Failures before attempts are delayed.
    #[serde(default = "d_free")]
    pub free_failures: u32,
    /// Failures after which attempts are refused (429) for `lockout`.
    #[serde(default = "d_max")]
    pub max_failures: u32,
    /// The first delay; it doubles with every further failure, up to `max_delay`.
    #[serde(default = "d_base", with = "humantime_serde")]
    pub base_delay: Duration,
    #[serde(default = "d_max_delay", with = "humantime_serde")]
    pub max_delay: Duration,
    #[serde(default = "d_lockout", with = "humantime_serde")]
    pub lockout: Duration,
    /// Failures older than this are forgotten.
    #[serde(default = "d_window", with = "humantime_serde")]
    pub window: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            free_failures: d_free(),
            max_failures: d_max(),
            base_delay: d_base(),
            max_delay: d_max_delay(),
            lockout: d_lockout(),
            window: d_window(),
        }
    }
}

fn d_free() -> u32 {
    3
}
fn d_max() -> u32 {
    10
}
fn d_base() -> Duration {
    Duration::from_millis(250)
}
fn d_max_delay() -> Duration {
    Duration::from_secs(4)
}
fn d_lockout() -> Duration {
    Duration::from_secs(300)
}
fn d_window() -> Duration {
    Duration::from_secs(900)
}

/// Most tracked keys; beyond it, forgotten entries are pruned first, then new keys are not
/// tracked (the per-request failure limit still applies).
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
}

/// What to do with a sign-in attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead after waiting this long.
    Allow(Duration),
    /// Refuse; the client may retry after this many seconds.
    Refuse(u64),
}

/// The throttle's counters (per replica, in memory).
#[derive(Debug)]
pub struct Throttle {
    cfg: ThrottleConfig,
    clock: Clock,
    map: DashMap<String, Entry>,
}

impl Throttle {
    pub fn new(cfg: ThrottleConfig, clock: Clock) -> Throttle {
        Throttle {
            cfg,
            clock,
            map: DashMap::new(),
        }
    }

    fn live(&self, key: &str) -> Option<Entry> {
        let e = *self.map.get(key)?;
        (self.clock.since(e.last) < self.cfg.window).then_some(e)
    }

    /// The verdict for an attempt on behalf of every key (the strictest one wins).
    pub fn check(&self, keys: &[&str]) -> Verdict {
        let mut delay = Duration::ZERO;
        for k in keys {
            let Some(e) = self.live(k) else { continue };
            if e.failures >= self.cfg.max_failures {
                let left = self.cfg.lockout.saturating_sub(self.clock.since(e.last));
                if !left.is_zero() {
                    return Verdict::Refuse(left.as_secs().max(1));
                }
                delay = delay.max(self.cfg.max_delay);
                continue;
            }
            if e.failures >= self.cfg.free_failures {
                let n = (e.failures - self.cfg.free_failures).min(16);
                let d = self.cfg.base_delay.saturating_mul(1 << n);
                delay = delay.max(d.min(self.cfg.max_delay));
            }
        }
        Verdict::Allow(delay)
    }

    /// Count a failure for every key; the highest count.
    pub fn failure(&self, keys: &[&str]) -> u32 {
        let now = self.clock.now();
        if self.map.len() >= MAX_KEYS {
            let window = self.cfg.window.max(self.cfg.lockout);
            self.map.retain(|_, e| self.clock.since(e.last) < window);
        }
        let mut most = 0;
        for k in keys {
            let fresh = self.live(k).is_none();
            if fresh && self.map.len() >= MAX_KEYS {
                continue;
            }
            let mut e = self.map.entry((*k).to_owned()).or_insert(Entry {
                failures: 0,
                last: now,
            });
            if fresh {
                e.failures = 0;
            }
            e.failures = e.failures.saturating_add(1);
            e.last = now;
            most = most.max(e.failures);
        }
        most
    }

    /// A successful sign-in clears the user's counter (not the address's).
    pub fn success(&self, key: &str) {
        self.map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_then_refuse_then_expire() {
        let (clock, mock) = Clock::mock();
        let t = Throttle::new(
            ThrottleConfig {
                free_failures: 2,
                max_failures: 5,
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_millis(300),
                lockout: Duration::from_secs(60),
                window: Duration::from_secs(600),
            },
            clock,
        );
        let k = ["u:alice", "a:10.0.0.1"];
        assert_eq!(t.check(&k), Verdict::Allow(Duration::ZERO));
        let delays: Vec<Verdict> = (0..5)
            .map(|_| {
                t.failure(&k);
                t.check(&k)
            })
            .collect();
        assert_eq!(
            delays,
            vec![
                Verdict::Allow(Duration::ZERO),
                Verdict::Allow(Duration::from_millis(100)),
                Verdict::Allow(Duration::from_millis(200)),
                Verdict::Allow(Duration::from_millis(300)),
                Verdict::Refuse(60),
            ]
        );
        // Another user from another address is unaffected.
        assert_eq!(
            t.check(&["u:bob", "a:10.0.0.2"]),
            Verdict::Allow(Duration::ZERO)
        );
        mock.advance(Duration::from_secs(61));
        assert_eq!(t.check(&k), Verdict::Allow(Duration::from_millis(300)));
        t.success("u:alice");
        assert_eq!(t.check(&["u:alice"]), Verdict::Allow(Duration::ZERO));
    }
}
