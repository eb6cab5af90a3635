//! How often the control loop rediscovers an upstream whose lists changed: at once, then at
//! most once per [`REDISCOVER_EVERY`] however many signals arrive (its listener's events and
//! the shards' `Command::UpstreamChanged` alike). A signal that comes sooner is kept and
//! served at the next tick, so the last change is never lost.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use dataplane::clock::{Clock, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// The shortest interval between two rediscoveries of one upstream.
pub(crate) const REDISCOVER_EVERY: Duration = Duration::from_secs(1);

/// Upstream change listeners and the rediscoveries they (or the shards) ask for.
#[derive(Default)]
pub(crate) struct Rediscovery {
    pub listeners: crate::upstream_watch::Watchers,
    /// Where listeners report; set when the control loop runs.
    pub tx: Option<UnboundedSender<u32>>,
    /// When each upstream was last rediscovered (the process clock's instant).
    last: HashMap<u32, Instant>,
    pending: HashSet<u32>,
}

impl Rediscovery {
    /// `id` says its lists changed: whether to rediscover it now (it then counts as
    /// rediscovered now). If not, it waits for [`Rediscovery::due`].
    pub fn signal(&mut self, id: u32, clock: &Clock) -> bool {
        let recent = (self.last.get(&id)).is_some_and(|t| clock.since(*t) < REDISCOVER_EVERY);
        if recent {
            self.pending.insert(id);
        } else {
            self.begin(id, clock);
        }
        !recent
    }

    /// The waiting upstreams whose interval has passed, each counted as rediscovered now.
    pub fn due(&mut self, clock: &Clock) -> Vec<u32> {
        let due: Vec<u32> = (self.pending.iter().copied())
            .filter(|id| (self.last.get(id)).is_none_or(|t| clock.since(*t) >= REDISCOVER_EVERY))
            .collect();
        for &id in &due {
            self.begin(id, clock);
        }
        due
    }

    fn begin(&mut self, id: u32, clock: &Clock) {
        self.pending.remove(&id);
        self.last.insert(id, clock.now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of signals (a listener's events and the shards' commands together) is one
    /// rediscovery now and one at the next tick a second later; then nothing until the
    /// next signal.
    #[test]
    fn an_upstream_is_rediscovered_at_most_once_a_second() {
        let (clock, time) = Clock::mock();
        let mut r = Rediscovery::default();
        assert!(r.signal(1, &clock), "the first signal is served at once");
        for _ in 0..100 {
            assert!(!r.signal(1, &clock));
            time.advance(Duration::from_millis(5));
        }
        // Another upstream is not held back by the first one's interval.
        assert!(r.signal(2, &clock));
        // Ticks within the second: nothing is due.
        assert!(r.due(&clock).is_empty());
        time.advance(Duration::from_millis(499));
        assert!(r.due(&clock).is_empty());
        // A second after the first: the waiting signals are one rediscovery.
        time.advance(Duration::from_millis(1));
        assert_eq!(r.due(&clock), [1]);
        assert!(r.due(&clock).is_empty(), "served once");
        // Which restarts the interval.
        assert!(!r.signal(1, &clock));
        time.advance(Duration::from_millis(999));
        assert!(r.due(&clock).is_empty());
        time.advance(Duration::from_millis(1));
        assert_eq!(r.due(&clock), [1]);
        // Quiet for longer than the interval: the next signal is served at once again.
        time.advance(Duration::from_secs(5));
        assert!(r.due(&clock).is_empty());
        assert!(r.signal(1, &clock));
    }
}
