//! ReadIndex (§6.4 of the thesis): linearizable reads without writing to the
//! log. The leader notes its commit index when a read arrives, confirms with
//! a round of heartbeats that a majority still follows it, and the read may be
//! served once the state machine has applied that index.
//!
//! Rounds are numbered: every AppendEntries carries the leader's current
//! round (`seq`) and every answer echoes it, so ordinary replication traffic
//! confirms reads as well as heartbeats do. A read registered in round `s` is
//! confirmed once a majority has answered a message of round `s` or later —
//! messages that, because a `Ready` is sent only after the turn that created
//! it, all left after the read arrived.

use std::collections::{BTreeMap, VecDeque};

use super::errors::ProposeError;
use super::raft::Raft;
use super::types::{Index, NodeId, Role};

#[derive(Debug, Default)]
pub struct ReadOnly {
    seq: u64,
    round_requested: bool,
    /// Highest round each voter has answered in this term.
    acks: BTreeMap<NodeId, u64>,
    /// Reads waiting for their round to be confirmed: (ctx, index, round).
    queue: VecDeque<(u64, Index, u64)>,
    /// Reads that arrived before this leader committed an entry of its term
    /// and so does not yet know the commit index (§6.4 step 1).
    awaiting_commit: Vec<u64>,
}

impl ReadOnly {
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The round a read registered now belongs to; starts one if none is
    /// waiting to be broadcast.
    fn start_round(&mut self) -> u64 {
        if !self.round_requested {
            self.seq += 1;
            self.round_requested = true;
        }
        self.seq
    }

    /// Whether a heartbeat round must be broadcast now (clears the request).
    pub fn take_round_request(&mut self) -> bool {
        std::mem::take(&mut self.round_requested)
    }

    pub fn ack(&mut self, from: NodeId, seq: u64) {
        let e = self.acks.entry(from).or_insert(0);
        *e = (*e).max(seq);
    }

    pub fn pending(&self) -> usize {
        self.queue.len() + self.awaiting_commit.len()
    }

    /// Forgets every pending read; the caller fails them (leadership lost).
    pub fn clear(&mut self) {
        self.round_requested = false;
        self.acks.clear();
        self.queue.clear();
        self.awaiting_commit.clear();
    }
}

impl Raft {
    /// Asks for a linearizable read; `ctx` comes back in a `ReadState`.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_id: self.leader_id,
            });
        }
        if self.committed_in_current_term() {
            self.register_read(ctx);
        } else {
            self.reads.awaiting_commit.push(ctx);
        }
        Ok(())
    }

    fn register_read(&mut self, ctx: u64) {
        let index = self.log.committed;
        if self.quorum() == 1 && self.membership.is_voter(self.id) {
            self.read_ready(ctx, index);
            return;
        }
        let seq = self.reads.start_round();
        self.reads.queue.push_back((ctx, index, seq));
    }

    /// Releases every read whose round a majority has confirmed.
    pub(super) fn release_reads(&mut self) {
        if self.reads.queue.is_empty() {
            return;
        }
        let mut rounds: Vec<u64> = self
            .membership
            .voters()
            .map(|v| {
                if v == self.id {
                    u64::MAX
                } else {
                    self.reads.acks.get(&v).copied().unwrap_or(0)
                }
            })
            .collect();
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = rounds.get(self.quorum() - 1).copied().unwrap_or(0);
        while let Some(&(ctx, index, seq)) = self.reads.queue.front() {
            if seq > confirmed {
                break;
            }
            self.reads.queue.pop_front();
            self.read_ready(ctx, index);
        }
    }

    /// Called when the leader's commit index moved.
    pub(super) fn on_commit_advanced(&mut self) {
        if self.role == Role::Leader
            && !self.reads.awaiting_commit.is_empty()
            && self.committed_in_current_term()
        {
            for ctx in std::mem::take(&mut self.reads.awaiting_commit) {
                self.register_read(ctx);
            }
        }
    }
}
