//! A deadline as one runtime timer, armed once and raced against each I/O step of a phase.
//!
//! Why not `Instant::now() + d` and `timeout_at` per read: the deadline is for a real timer,
//! not a reading of the time, so it is the timer itself (`monoio::time::sleep`) that carries
//! it — the injected [`crate::clock::Clock`] is not involved, and nothing here reads a clock.
//! It also arms one timer per phase rather than one per read.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use monoio::time::Sleep;

/// The deadline passed before the step finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline passed")]
pub struct Elapsed;

/// A deadline `d` after its creation, on the shard runtime's timer.
#[derive(Debug)]
pub struct Deadline(Pin<Box<Sleep>>);

impl Deadline {
    /// A deadline `d` from now (must be called on a monoio runtime with timers enabled).
    pub fn after(d: Duration) -> Deadline {
        Deadline(Box::pin(monoio::time::sleep(d)))
    }

    /// Run `fut` unless the deadline passes first (then `fut` is dropped). Like
    /// `timeout_at`, `fut` is polled first, so a step that is ready wins a tie.
    pub async fn run<F: Future>(&mut self, fut: F) -> Result<F::Output, Elapsed> {
        let mut fut = pin!(fut);
        let mut timer = self.0.as_mut();
        poll_fn(move |cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            timer.as_mut().poll(cx).map(|()| Err(Elapsed))
        })
        .await
    }
}

/// Run `f` on a fresh single-threaded runtime with timers (the module tests' shard).
#[cfg(test)]
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_that_is_ready_wins() {
        block_on(async {
            let mut d = Deadline::after(Duration::from_secs(60));
            assert_eq!(d.run(async { 7 }).await, Ok(7));
            // The same deadline serves every step of the phase.
            assert_eq!(d.run(async { 8 }).await, Ok(8));
        });
    }

    #[test]
    fn a_slow_step_is_cut_off_and_the_deadline_stays_passed() {
        block_on(async {
            let mut d = Deadline::after(Duration::from_millis(10));
            let slow = monoio::time::sleep(Duration::from_secs(60));
            assert_eq!(d.run(slow).await, Err(Elapsed));
            let slow = monoio::time::sleep(Duration::from_secs(60));
            assert_eq!(d.run(slow).await, Err(Elapsed));
            // Even after the deadline, a step that is ready at once still completes.
            assert_eq!(d.run(async { 1 }).await, Ok(1));
        });
    }
}
