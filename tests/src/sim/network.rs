//! The simulated network: messages in flight, ordered by delivery time, and
//! the faults a real network commits — loss, duplication, delay (and so
//! reordering), and partitions that cut links in one or both directions.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use kuberaft_node::raft::{MessageBody, NodeId};
use rand::RngExt;
use rand::rngs::SmallRng;

use super::node::Envelope;

/// How badly the network behaves right now.
#[derive(Clone, Debug, PartialEq)]
pub struct NetFaults {
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Delays are uniform in `delay_min..=delay_max` ms...
    pub delay_min: u64,
    pub delay_max: u64,
    /// ...except for this fraction, which lingers up to `slow_max` ms.
    pub slow: f64,
    pub slow_max: u64,
}

impl NetFaults {
    /// Every message arrives once, after exactly `delay` ms.
    pub fn perfect(delay: u64) -> NetFaults {
        NetFaults {
            drop: 0.0,
            duplicate: 0.0,
            delay_min: delay,
            delay_max: delay,
            slow: 0.0,
            slow_max: delay,
        }
    }
}

/// Something the network does at a point in time.
#[derive(Debug)]
pub enum InFlight {
    /// `reports`: on delivery (or loss at delivery), the sender of this
    /// InstallSnapshot learns the outcome; false for a duplicate's copy.
    Message {
        env: Envelope,
        sender_incarnation: u32,
        reports: bool,
    },
    /// The transport tells a leader how streaming a snapshot ended, so it can
    /// call `report_snapshot`. `incarnation` is the sender's at sending time.
    SnapshotReport {
        leader: NodeId,
        incarnation: u32,
        to: NodeId,
        ok: bool,
    },
}

struct Scheduled {
    at: u64,
    seq: u64,
    what: InFlight,
}

// Earliest first; among equals, first scheduled first (deterministic).
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}

pub struct Network {
    pub faults: NetFaults,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    /// Directed links cut by partitions, with how many partitions cut each.
    cut: BTreeMap<(NodeId, NodeId), u32>,
}

impl Network {
    pub fn new(faults: NetFaults) -> Network {
        Network {
            faults,
            queue: BinaryHeap::new(),
            seq: 0,
            cut: BTreeMap::new(),
        }
    }

    pub fn schedule(&mut self, at: u64, what: InFlight) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            what,
        });
    }

    fn delay(&self, rng: &mut SmallRng) -> u64 {
        let f = &self.faults;
        if f.slow > 0.0 && rng.random_bool(f.slow) {
            rng.random_range(f.delay_min..=f.slow_max.max(f.delay_min))
        } else {
            rng.random_range(f.delay_min..=f.delay_max.max(f.delay_min))
        }
    }

    /// Hands a message to the network at `now`. A lost InstallSnapshot is
    /// reported to its sender as failed when it would have arrived.
    pub fn send(&mut self, now: u64, env: Envelope, incarnation: u32, rng: &mut SmallRng) {
        let is_snapshot = matches!(env.msg.body, MessageBody::InstallSnapshot { .. });
        let delay = self.delay(rng);
        if self.faults.drop > 0.0 && rng.random_bool(self.faults.drop) {
            if is_snapshot {
                let report = InFlight::SnapshotReport {
                    leader: env.msg.from,
                    incarnation,
                    to: env.msg.to,
                    ok: false,
                };
                self.schedule(now + delay, report);
            }
            return;
        }
        let twice = self.faults.duplicate > 0.0 && rng.random_bool(self.faults.duplicate);
        if twice {
            // One transfer, one report: the copy reports nothing.
            let copy = InFlight::Message {
                env: env.clone(),
                sender_incarnation: incarnation,
                reports: false,
            };
            let delay2 = self.delay(rng);
            self.schedule(now + delay2, copy);
        }
        let original = InFlight::Message {
            env,
            sender_incarnation: incarnation,
            reports: is_snapshot,
        };
        self.schedule(now + delay, original);
    }

    /// Stops the snapshot streams from `leader` to `to` in flight: their data
    /// never arrives and their outcome is never reported, as when a
    /// transport aborts the stream. Returns how many stopped.
    pub fn cancel_snapshots(&mut self, leader: NodeId, to: NodeId) -> u64 {
        let before = self.queue.len();
        self.queue.retain(|s| match &s.what {
            InFlight::Message { env, .. } => {
                !(env.msg.from == leader
                    && env.msg.to == to
                    && matches!(env.msg.body, MessageBody::InstallSnapshot { .. }))
            }
            InFlight::SnapshotReport {
                leader: l, to: t, ..
            } => !(*l == leader && *t == to),
        });
        (before - self.queue.len()) as u64
    }

    /// The next thing due at or before `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<InFlight> {
        if self.queue.peek().is_some_and(|s| s.at <= now) {
            self.queue.pop().map(|s| s.what)
        } else {
            None
        }
    }

    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// What is in flight, by kind of message and route, most common first.
    pub fn census(&self) -> Vec<(String, usize)> {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for s in &self.queue {
            if let InFlight::Message { env, .. } = &s.what {
                let key = format!("{} {}->{}", env.msg.body.name(), env.msg.from, env.msg.to);
                *counts.entry(key).or_insert(0) += 1;
            }
        }
        let mut v: Vec<(String, usize)> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains_key(&(from, to))
    }

    pub fn cut_links(&mut self, links: &[(NodeId, NodeId)]) {
        for l in links {
            *self.cut.entry(*l).or_insert(0) += 1;
        }
    }

    pub fn restore_links(&mut self, links: &[(NodeId, NodeId)]) {
        for l in links {
            if let Some(n) = self.cut.get_mut(l) {
                *n -= 1;
                if *n == 0 {
                    self.cut.remove(l);
                }
            }
        }
    }

    pub fn heal_all(&mut self) {
        self.cut.clear();
    }
}
