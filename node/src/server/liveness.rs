//! Whether the member is alive in the sense that matters: its Raft event loop still turns. A
//! process whose gRPC server answers while the event loop is stuck (a deadlock, a disk that
//! never returns) is of no use to its cluster, and only a restart can help it; a member that
//! merely has no quorum is alive, and restarting it would not bring the quorum back.
//!
//! The ticker sees the event loop take each tick (it clears the pending flag): the time of the
//! last tick taken is the pulse.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How long the event loop may go without taking a tick before the member counts as stuck:
/// far beyond any fsync or snapshot write a working disk takes, so a slow moment never costs a
/// restart (the liveness probe adds its own failures on top).
pub const STALL_LIMIT: Duration = Duration::from_secs(15);

/// The time the event loop last took a tick, as milliseconds since the pulse was made.
#[derive(Clone, Debug)]
pub struct Pulse {
    origin: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Pulse {
    fn default() -> Self {
        Pulse {
            origin: Instant::now(),
            last_ms: Arc::default(),
        }
    }
}

impl Pulse {
    /// The event loop took a tick now.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    fn beat_at(&self, now: Instant) {
        let ms = u64::try_from(now.duration_since(self.origin).as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// How long since the last tick was taken.
    pub fn silent_for(&self) -> Duration {
        self.silent_at(Instant::now())
    }

    fn silent_at(&self, now: Instant) -> Duration {
        let last = self.origin + Duration::from_millis(self.last_ms.load(Ordering::Acquire));
        now.saturating_duration_since(last)
    }

    /// Why the member is not alive, if it is not.
    pub fn stuck(&self) -> Option<String> {
        let silent = self.silent_for();
        (silent >= STALL_LIMIT).then(|| {
            format!(
                "the Raft event loop has not turned for {:.0?} (limit {STALL_LIMIT:?}); the member is stuck",
                silent
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_takes_ticks_is_alive_and_one_that_stops_is_stuck_after_the_limit() {
        let pulse = Pulse::default();
        let t0 = pulse.origin;
        pulse.beat_at(t0 + Duration::from_secs(100));
        assert_eq!(
            pulse.silent_at(t0 + Duration::from_secs(101)),
            Duration::from_secs(1)
        );
        // A beat from the past (threads racing) never moves the pulse back.
        pulse.beat_at(t0 + Duration::from_secs(50));
        assert_eq!(
            pulse.silent_at(t0 + Duration::from_secs(101)),
            Duration::from_secs(1)
        );
        assert!(pulse.silent_at(t0 + Duration::from_secs(100) + STALL_LIMIT) >= STALL_LIMIT);
    }

    #[test]
    fn a_fresh_pulse_is_alive() {
        assert!(Pulse::default().stuck().is_none());
    }
}
