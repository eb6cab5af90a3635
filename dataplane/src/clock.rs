//! The one clock every cache, shard and control-plane task reads: real, or driven by a test.
//!
//! A leaf module (nothing from this crate): the data plane and the control plane both take a
//! [`Clock`] and never read the system clocks themselves — `clippy.toml` bans
//! `SystemTime::now` and every `Instant::now` outside this file. Timers (`monoio::time::sleep`,
//! `tokio::time::timeout`) stay on the runtimes' own clocks: a mock clock changes what the
//! gateway *reads* as the time, not how long it waits.

use std::sync::Arc;
use std::time::Duration;

/// The monotonic instant [`Clock::now`] returns.
pub use quanta::Instant;

/// Monotonic instants and wall time. Cheap to clone; clones read the same time (a mock's
/// clones all follow its [`MockClock`]).
///
/// The real clock reads the system's wall clock at every [`Clock::unix_ms`]: token `exp`/`nbf`
/// checks and record times must be real time, and a wall time derived from the monotonic
/// clock drifts from it (suspend, NTP slewing, TSC calibration). A mock derives its wall time
/// from its own monotonic reading, so advancing it moves both together.
#[derive(Debug, Clone)]
pub struct Clock {
    q: quanta::Clock,
    wall: Wall,
}

/// Where a [`Clock`]'s wall time comes from.
#[derive(Debug, Clone)]
enum Wall {
    /// The system's wall clock, read at each call.
    System,
    /// `base_unix_ms` at `base`, moving with the (mock) monotonic clock.
    Derived { base: Instant, base_unix_ms: i64 },
}

/// Moves a mock [`Clock`] (and every clone of it) forward.
#[derive(Debug, Clone)]
pub struct MockClock(Arc<quanta::Mock>);

impl Clock {
    /// The real clock (quanta's TSC-backed monotonic clock, ~12 ns a reading).
    #[expect(
        clippy::new_without_default,
        reason = "no silent default clock: whoever holds one is handed it"
    )]
    pub fn new() -> Clock {
        #[expect(
            clippy::disallowed_methods,
            reason = "the one real monotonic clock of the process (clippy.toml)"
        )]
        let q = quanta::Clock::new();
        Clock {
            q,
            wall: Wall::System,
        }
    }

    /// A clock that stands still until its [`MockClock`] advances it, starting at the real
    /// wall time (so tokens minted by real-time test issuers are current for it).
    pub fn mock() -> (Clock, MockClock) {
        Self::mock_at(system_unix_ms())
    }

    /// A clock that stands still at `unix_ms` until its [`MockClock`] advances it.
    pub fn mock_at(unix_ms: i64) -> (Clock, MockClock) {
        let (q, mock) = quanta::Clock::mock();
        let base = q.now();
        (
            Clock {
                q,
                wall: Wall::Derived {
                    base,
                    base_unix_ms: unix_ms,
                },
            },
            MockClock(mock),
        )
    }

    /// A monotonic instant, for durations and deadlines.
    pub fn now(&self) -> Instant {
        self.q.now()
    }

    /// Time since `earlier` (zero if `earlier` is later).
    pub fn since(&self, earlier: Instant) -> Duration {
        self.now().saturating_duration_since(earlier)
    }

    /// Wall time, milliseconds since the Unix epoch.
    pub fn unix_ms(&self) -> i64 {
        match &self.wall {
            Wall::System => system_unix_ms(),
            Wall::Derived { base, base_unix_ms } => {
                base_unix_ms + self.since(*base).as_millis() as i64
            }
        }
    }

    /// Wall time, seconds since the Unix epoch (JWT `iat`/`exp`, record expiry).
    pub fn unix_secs(&self) -> i64 {
        self.unix_ms().div_euclid(1000)
    }
}

impl MockClock {
    /// Move the clock (monotonic and wall readings alike) forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.increment(d);
    }
}

/// The system's wall clock: read here only.
#[expect(
    clippy::disallowed_methods,
    reason = "the one place Warden reads the system wall clock (clippy.toml)"
)]
fn system_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mock_stands_still_until_advanced() {
        let (c, _m) = Clock::mock_at(1_700_000_000_500);
        let t = c.now();
        assert_eq!(c.unix_ms(), 1_700_000_000_500);
        assert_eq!(c.unix_secs(), 1_700_000_000);
        assert_eq!(c.since(t), Duration::ZERO);
        assert_eq!(c.now(), t);
    }

    #[test]
    fn advancing_moves_both_readings_together() {
        let (c, m) = Clock::mock_at(1_000_000);
        let t = c.now();
        m.advance(Duration::from_millis(2_250));
        assert_eq!(c.since(t), Duration::from_millis(2_250));
        assert_eq!(c.unix_ms(), 1_002_250);
        assert_eq!(c.unix_secs(), 1_002);
        m.advance(Duration::from_secs(3600));
        assert_eq!(c.since(t), Duration::from_millis(3_602_250));
        assert_eq!(c.unix_secs(), 1_002 + 3600);
    }

    #[test]
    fn clones_share_the_mock() {
        let (c, m) = Clock::mock_at(0);
        let c2 = c.clone();
        let m2 = m.clone();
        let from_another_thread = std::thread::spawn(move || {
            m2.advance(Duration::from_secs(5));
            c2.unix_secs()
        })
        .join()
        .unwrap();
        assert_eq!(from_another_thread, 5);
        assert_eq!(c.unix_secs(), 5);
        m.advance(Duration::from_secs(1));
        assert_eq!(c.unix_secs(), 6);
    }

    #[test]
    fn separate_mocks_are_independent() {
        let (a, ma) = Clock::mock_at(0);
        let (b, _mb) = Clock::mock_at(0);
        ma.advance(Duration::from_secs(9));
        assert_eq!(a.unix_secs(), 9);
        assert_eq!(b.unix_secs(), 0);
    }

    #[test]
    fn the_real_clock_is_near_the_system_clock_and_monotonic() {
        let c = Clock::new();
        let t = c.now();
        assert!((c.unix_ms() - system_unix_ms()).abs() < 5_000);
        assert!(c.now() >= t);
    }

    /// A soak found it: wall time derived from the monotonic clock drifted from real time, and
    /// token expiry was judged by the drifted value. Real wall time must not follow the
    /// monotonic clock: here it runs an hour ahead, and `unix_ms` stays the system's.
    #[test]
    fn real_wall_time_does_not_follow_the_monotonic_clock() {
        let (q, mock) = quanta::Clock::mock();
        let c = Clock {
            q,
            wall: Wall::System,
        };
        let t = c.now();
        mock.increment(Duration::from_secs(3600));
        assert_eq!(c.since(t), Duration::from_secs(3600));
        assert!((c.unix_ms() - system_unix_ms()).abs() < 1_000);
    }

    #[test]
    fn clock_is_send_and_sync() {
        fn check<T: Send + Sync + Clone + std::fmt::Debug>() {}
        check::<Clock>();
        check::<MockClock>();
    }
}
