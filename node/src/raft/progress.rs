//! What a leader knows about each follower's log (Figure 2, "Volatile state on
//! leaders": nextIndex and matchIndex) and how it paces replication to it.

use std::collections::VecDeque;

use super::types::Index;

/// How the leader currently sends to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// Where the follower's log matches is not known: send one AppendEntries
    /// at a time and move `next_index` back on each rejection (§5.3).
    Probe,
    /// The follower's log matches up to `match_index`: stream entries without
    /// waiting for each answer, up to a window of messages in flight.
    Replicate,
    /// The follower needs entries that were compacted; a snapshot of index
    /// `pending` is on its way (§7).
    Snapshot { pending: Index },
}

impl ReplicationState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationState::Probe => "probe",
            ReplicationState::Replicate => "replicate",
            ReplicationState::Snapshot { .. } => "snapshot",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to be replicated on the follower.
    pub match_index: Index,
    /// Index of the next entry to send.
    pub next_index: Index,
    pub state: ReplicationState,
    /// In Probe: an AppendEntries was sent and neither an answer nor the next
    /// heartbeat has come since.
    pub probe_sent: bool,
    /// In Replicate: the last index of each AppendEntries in flight, oldest
    /// first.
    inflight: VecDeque<Index>,
    max_inflight: usize,
    /// Heard from in the current CheckQuorum period (§6.2 of the thesis).
    pub recent_active: bool,
    /// `match_index` at the previous heartbeat, to notice a stalled pipeline
    /// (lost messages while replicating).
    pub match_at_last_heartbeat: Index,
    /// Consecutive heartbeats during which a non-empty pipeline made no progress.
    pub stalled_heartbeats: u32,
}

impl Progress {
    pub fn new(next_index: Index, max_inflight: usize) -> Progress {
        Progress {
            match_index: 0,
            next_index: next_index.max(1),
            state: ReplicationState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            max_inflight,
            recent_active: false,
            match_at_last_heartbeat: 0,
            stalled_heartbeats: 0,
        }
    }

    pub fn become_probe(&mut self, next_index: Index) {
        self.state = ReplicationState::Probe;
        self.next_index = next_index.max(self.match_index + 1);
        self.probe_sent = false;
        self.inflight.clear();
    }

    pub fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflight.clear();
    }

    pub fn become_snapshot(&mut self, pending: Index) {
        self.state = ReplicationState::Snapshot { pending };
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Records an acknowledgement; false if it told nothing new (stale or
    /// duplicate).
    pub fn maybe_update(&mut self, match_index: Index) -> bool {
        if match_index <= self.match_index {
            return false;
        }
        self.match_index = match_index;
        self.next_index = self.next_index.max(match_index + 1);
        while self.inflight.front().is_some_and(|&i| i <= match_index) {
            self.inflight.pop_front();
        }
        true
    }

    /// Whether the leader may send this follower more entries now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ReplicationState::Probe => self.probe_sent,
            ReplicationState::Replicate => self.inflight.len() >= self.max_inflight,
            ReplicationState::Snapshot { .. } => true,
        }
    }

    /// Notes that an AppendEntries ending at `last_index` was sent.
    pub fn sent(&mut self, last_index: Index) {
        match self.state {
            ReplicationState::Probe => self.probe_sent = true,
            ReplicationState::Replicate => {
                self.next_index = last_index + 1;
                self.inflight.push_back(last_index);
            }
            ReplicationState::Snapshot { .. } => {}
        }
    }

    pub fn inflight_count(&self) -> usize {
        self.inflight.len()
    }
}
