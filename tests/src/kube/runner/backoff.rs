//! CrashLoopBackOff as a kubelet computes it: the first restart is immediate; each later one
//! waits until the previous restart is `current` old, and `current` doubles up to `max`; a
//! container that has not needed a restart for twice `max` starts over.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Option<Duration>,
    last_restart: Option<Instant>,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            current: None,
            last_restart: None,
        }
    }

    /// How long to wait, from `now`, before restarting a container that just exited.
    pub fn delay(&mut self, now: Instant) -> Duration {
        if self
            .last_restart
            .is_some_and(|last| now.saturating_duration_since(last) > self.max * 2)
        {
            self.current = None;
        }
        let wait = match (self.current, self.last_restart) {
            (Some(current), Some(last)) => (last + current).saturating_duration_since(now),
            _ => Duration::ZERO,
        };
        self.current = Some(match self.current {
            None => self.initial,
            Some(c) => (c * 2).min(self.max),
        });
        self.last_restart = Some(now + wait);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn restarts_wait_longer_each_time_up_to_the_cap_and_start_over_after_a_quiet_spell() {
        let mut b = Backoff::new(10 * S, 40 * S);
        let t0 = Instant::now();
        assert_eq!(
            b.delay(t0),
            Duration::ZERO,
            "the first restart is immediate"
        );
        // Exits 1 s after that restart: waits until the restart is 10 s old.
        assert_eq!(b.delay(t0 + S), 9 * S);
        // The restart happened at 10 s; an exit at 11 s waits for 20 s after it.
        assert_eq!(b.delay(t0 + 11 * S), 19 * S);
        // Restarted at 30 s; then 40 s (the cap), and it stays there.
        assert_eq!(b.delay(t0 + 30 * S), 40 * S);
        assert_eq!(b.delay(t0 + 70 * S), 40 * S);
        // A container that ran for more than twice the cap restarts at once again.
        assert_eq!(b.delay(t0 + 200 * S), Duration::ZERO);
        assert_eq!(b.delay(t0 + 201 * S), 9 * S);
    }

    #[test]
    fn a_container_that_ran_longer_than_the_wait_restarts_at_once() {
        let mut b = Backoff::new(S, 5 * S);
        let t0 = Instant::now();
        assert_eq!(b.delay(t0), Duration::ZERO);
        assert_eq!(b.delay(t0 + 3 * S), Duration::ZERO);
        assert_eq!(b.delay(t0 + 4 * S), S);
    }
}
