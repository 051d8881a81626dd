//! The client's deadline, so a member never works on, or waits for, an answer nobody is
//! waiting for any more — and never proposes a write whose client already gave up.
//!
//! It is set where a request enters the cluster, from gRPC's `grpc-timeout` (relative), and a
//! member that forwards the request passes it on as an absolute time
//! ([`DEADLINE_HEADER`]). A relative timeout is not enough for that: a forwarded request that
//! sat in a stalled TCP connection would arrive with a fresh countdown, and the leader would
//! propose a write whose client had been told DEADLINE_EXCEEDED seconds before. The absolute
//! time is read by the receiving member's clock, so the bound holds up to the clock skew
//! between members ([`MAX_CLOCK_SKEW`], assumed: pods of one cluster are NTP-synced to
//! milliseconds).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tonic::Request;

use super::kv_service::DEFAULT_DEADLINE;

/// Metadata key set on requests a follower forwards to the leader; a member
/// that is not the leader answers them itself instead of forwarding again.
pub const FORWARDED: &str = "kuberaft-forwarded";

/// Metadata key of a forwarded request's deadline: milliseconds since the Unix epoch, by the
/// forwarding member's clock.
pub const DEADLINE_HEADER: &str = "kuberaft-deadline-unix-ms";

/// The clock skew between members that the deadline's guarantee allows for: a forwarded
/// request is proposed no later than its deadline plus the skew between the two members'
/// clocks, which this bound is stated for (kv.proto says what a client may conclude).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_millis(500);

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Clone, Copy, Debug)]
pub struct Deadline(Instant);

impl Deadline {
    /// The deadline of `request`: the sooner of its `grpc-timeout` (or the default) and, for a
    /// forwarded request, the absolute deadline it carries.
    pub fn of<T>(request: &Request<T>) -> Deadline {
        let metadata = request.metadata();
        let mut timeout = metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .unwrap_or(DEFAULT_DEADLINE);
        if let Some(at) = metadata
            .get(DEADLINE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            timeout = timeout.min(Duration::from_millis(at.saturating_sub(unix_ms_now())));
        }
        Deadline(Instant::now() + timeout)
    }

    /// Whether the client no longer waits.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
    }

    /// The deadline as milliseconds since the Unix epoch, by this member's clock.
    pub fn unix_ms(&self) -> u64 {
        let remaining = u64::try_from(self.remaining().as_millis()).unwrap_or(u64::MAX);
        unix_ms_now().saturating_add(remaining)
    }

    pub fn after(d: Duration) -> Deadline {
        Deadline(Instant::now() + d)
    }

    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    pub fn instant(&self) -> Instant {
        self.0
    }
}

/// `grpc-timeout` is an integer of at most 8 digits and a unit
/// (H, M, S, m, u, n), per the gRPC over HTTP/2 protocol description.
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_deadline_is_the_absolute_one_it_carries() {
        let mut r = Request::new(());
        r.set_timeout(Duration::from_secs(5));
        let past = unix_ms_now() - 2_000;
        r.metadata_mut()
            .insert(DEADLINE_HEADER, past.to_string().parse().expect("ascii"));
        assert!(
            Deadline::of(&r).passed(),
            "a request that waited past its deadline in transit has no time left, whatever its grpc-timeout says"
        );

        let mut r = Request::new(());
        r.set_timeout(Duration::from_secs(5));
        let soon = Deadline::after(Duration::from_millis(1_500)).unix_ms();
        r.metadata_mut()
            .insert(DEADLINE_HEADER, soon.to_string().parse().expect("ascii"));
        let left = Deadline::of(&r).remaining();
        assert!(
            left <= Duration::from_millis(1_500) && left > Duration::from_millis(1_000),
            "{left:?}"
        );

        let mut r = Request::new(());
        r.set_timeout(Duration::from_millis(300));
        let later = Deadline::after(Duration::from_secs(60)).unix_ms();
        r.metadata_mut()
            .insert(DEADLINE_HEADER, later.to_string().parse().expect("ascii"));
        assert!(Deadline::of(&r).remaining() <= Duration::from_millis(300));
    }

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("12x"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
    }
}
