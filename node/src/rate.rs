//! A byte-rate limit for bulk snapshot I/O (streaming a snapshot to a
//! follower, writing a snapshot file), so that it does not crowd out the
//! members' log fsyncs and client traffic on the same disk and network.
//!
//! Why a limit rather than only a lower priority: measured with
//! `cargo bench -p kuberaft-tests --bench lifecycle` on 2026-11-26, writes
//! while a 114 MB snapshot was taken, sent and installed stayed at 69–76% of
//! the steady rate with nice 10 or the idle I/O class for the snapshot
//! threads, rose to 78–90% with the stream limited to 100–200 MB/s, and to
//! 85–91% with the snapshot file written at 150 MB/s too.
//! TiKV limits snapshot I/O the same way (`snap-io-max-bytes-per-sec`).

use std::time::{Duration, Instant};

/// Paces a blocking writer or reader to at most `bytes_per_second`,
/// measured from when the limit is made (just before the first byte);
/// 0 means no limit.
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_second: u64,
    started: Instant,
}

impl RateLimit {
    pub fn new(bytes_per_second: u64) -> RateLimit {
        RateLimit {
            bytes_per_second,
            started: Instant::now(),
        }
    }

    /// How long to wait before going past `done` bytes in all (zero when
    /// the limit allows it now).
    pub fn delay(&self, done: u64) -> Duration {
        if self.bytes_per_second == 0 {
            return Duration::ZERO;
        }
        let due = Duration::from_secs_f64(done as f64 / self.bytes_per_second as f64);
        due.saturating_sub(self.started.elapsed())
    }

    /// Blocks the calling thread until `done` bytes are allowed. For
    /// blocking threads only, never for an async task.
    pub fn wait_blocking(&self, done: u64) {
        let wait = self.delay(done);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_limit_never_waits() {
        let r = RateLimit::new(0);
        assert_eq!(r.delay(u64::MAX), Duration::ZERO);
    }

    #[test]
    fn the_delay_is_what_the_rate_allows() {
        let r = RateLimit::new(1_000_000);
        // One second's worth of bytes is due one second after the limit was
        // made, minus the little time this test took.
        let d = r.delay(1_000_000);
        assert!(
            d > Duration::from_millis(500) && d <= Duration::from_secs(1),
            "{d:?}"
        );
        assert_eq!(r.delay(0), Duration::ZERO);
    }

    #[test]
    fn waiting_takes_at_least_the_rated_time() {
        let started = Instant::now();
        let r = RateLimit::new(10_000_000);
        r.wait_blocking(0);
        r.wait_blocking(1_000_000);
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(r.delay(1_000_000), Duration::ZERO);
    }
}
