//! Issue 22: a write whose client gave up must not take effect long after it did. What clients can
//! see of that, and so what the fault run checks: a key written once, whose put timed out at its
//! deadline D, that a linearizable scan sent after D + bound did not see, but that exists at the
//! end, took effect after D + bound (the scan was served at some point after it was sent, and
//! nothing deletes such keys).
//!
//! The bound is kv.proto's: a member proposes nothing after its deadline plus the clock skew
//! (500 ms), and an entry proposed in time is committed, if ever, once a leader holding it is
//! elected — within a few election timeouts while a majority of the members can reach each
//! other. While they cannot (every member killed at once), no deadline bounds it: such rounds
//! are excused.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::linearizability::Recorder;
use crate::workload::scan_all;

/// A linearizable scan of the keys written once: when it was sent (the recorder's clock, ns) and
/// what it saw.
#[derive(Clone, Debug)]
pub struct Scan {
    pub sent_at: u64,
    pub keys: HashSet<String>,
}

/// A put of a key written once whose outcome the client does not know (it gave up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedOut {
    pub key: String,
    pub sent_at: u64,
    /// When the client stopped waiting (the gRPC deadline it set).
    pub deadline: u64,
}

/// A write seen taking effect later than its deadline plus the bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Late {
    pub key: String,
    pub deadline: u64,
    /// A scan sent this long after the deadline (ns) did not see it yet.
    pub absent_after: u64,
}

impl std::fmt::Display for Late {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: its put timed out at {:.3} s, yet a linearizable scan sent {:.3} s after that did \
             not see it, and it exists at the end",
            self.key,
            self.deadline as f64 / 1e9,
            self.absent_after as f64 / 1e9
        )
    }
}

/// For each timed-out write present at the end: how long after its deadline a scan still did
/// not see it (0 if none did), unless its time overlaps an excused window (start, end).
pub fn absences(
    timed_out: &[TimedOut],
    scans: &[Scan],
    present: &HashSet<String>,
    excused: &[(u64, u64)],
    bound: u64,
) -> Vec<Late> {
    timed_out
        .iter()
        .filter(|w| present.contains(&w.key))
        .filter(|w| {
            !excused
                .iter()
                .any(|(start, end)| *start <= w.deadline + bound && *end >= w.sent_at)
        })
        .map(|w| Late {
            key: w.key.clone(),
            deadline: w.deadline,
            absent_after: scans
                .iter()
                .filter(|s| s.sent_at > w.deadline && !s.keys.contains(&w.key))
                .map(|s| s.sent_at - w.deadline)
                .max()
                .unwrap_or(0),
        })
        .collect()
}

/// The writes that took effect later than their deadline plus `bound` (ns).
pub fn late_writes(
    timed_out: &[TimedOut],
    scans: &[Scan],
    present: &HashSet<String>,
    excused: &[(u64, u64)],
    bound: u64,
) -> Vec<Late> {
    absences(timed_out, scans, present, excused, bound)
        .into_iter()
        .filter(|l| l.absent_after > bound)
        .collect()
}

/// Scans the keys with `prefix` linearizably every `every` until `until`, through the members in
/// turn; a scan that fails or takes longer than `patience` is dropped (a member cut off).
pub async fn poll(
    addrs: Vec<String>,
    prefix: &'static str,
    every: Duration,
    patience: Duration,
    until: Instant,
    recorder: Arc<Recorder>,
) -> Vec<Scan> {
    let mut scans = Vec::new();
    let mut turn = 0usize;
    while Instant::now() < until {
        let addr = &addrs[turn % addrs.len()];
        turn += 1;
        let sent_at = recorder.now();
        if let Ok(Ok(keys)) = tokio::time::timeout(patience, scan_all(addr, prefix)).await {
            scans.push(Scan {
                sent_at,
                keys: keys.into_iter().collect(),
            });
        }
        tokio::time::sleep(every).await;
    }
    scans
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn scan(at: u64, keys: &[&str]) -> Scan {
        Scan {
            sent_at: at,
            keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn timed_out(key: &str, deadline: u64) -> TimedOut {
        TimedOut {
            key: key.into(),
            sent_at: deadline - S,
            deadline,
        }
    }

    fn present(keys: &[&str]) -> HashSet<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn a_write_absent_long_after_its_deadline_and_present_at_the_end_is_late() {
        let w = [timed_out("a", 10 * S)];
        let scans = [scan(11 * S, &[]), scan(17 * S, &[]), scan(18 * S, &["a"])];
        let late = late_writes(&w, &scans, &present(&["a"]), &[], 5 * S);
        assert_eq!(
            late,
            vec![Late {
                key: "a".into(),
                deadline: 10 * S,
                absent_after: 7 * S
            }]
        );
    }

    #[test]
    fn within_the_bound_absent_at_the_end_or_excused_is_not_late() {
        let w = [timed_out("a", 10 * S)];
        let scans = [scan(14 * S, &[]), scan(16 * S, &["a"])];
        assert!(late_writes(&w, &scans, &present(&["a"]), &[], 5 * S).is_empty());
        // Never applied: absent throughout, absent at the end.
        let scans = [scan(30 * S, &[])];
        assert!(late_writes(&w, &scans, &present(&[]), &[], 5 * S).is_empty());
        // Every member was down in between: no bound holds.
        let excused = [(12 * S, 25 * S)];
        assert!(late_writes(&w, &scans, &present(&["a"]), &excused, 5 * S).is_empty());
        // A window before the write does not excuse it.
        let excused = [(S, 5 * S)];
        assert_eq!(
            late_writes(&w, &scans, &present(&["a"]), &excused, 5 * S).len(),
            1
        );
    }
}
