//! One Raft member's state (Figure 2) and its role changes (Figure 4).
//!
//! `step` is the single entry point for messages; it settles the term first
//! (§5.1: a higher term always demotes, a lower one is stale) and then hands
//! the message to the handler of the current role. Elections live in
//! `election.rs`, replication in `replication.rs`, ReadIndex in `read_only.rs`.

use std::collections::BTreeMap;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::config::Config;
use super::errors::{ProposeError, StepError};
use super::log::RaftLog;
use super::membership::{ConfChange, Membership};
use super::progress::{Progress, ReplicationState};
use super::read_only::ReadOnly;
use super::types::{
    Entry, EntryKind, HardState, Index, Message, MessageBody, NodeId, ReadState, Role,
    SnapshotMeta, SoftState, Term,
};

/// No term or index of a real cluster gets near 2^63 (at a million entries
/// a second that takes 290,000 years). Messages that carry larger numbers
/// are refused, which leaves room for every `+ 1` of the protocol: a forged
/// number cannot make one overflow.
const MAX_NUMBER: u64 = 1 << 63;

pub struct Raft {
    pub(super) id: NodeId,
    pub(super) cfg: Config,

    // Persistent state (Figure 2); persisted through `Ready::hard_state`.
    pub(super) term: Term,
    pub(super) voted_for: NodeId,
    pub(super) log: RaftLog,

    pub(super) role: Role,
    pub(super) leader_id: NodeId,

    /// The configuration in force: the latest one in the log (§4.1).
    pub(super) membership: Membership,
    /// Configurations of the membership entries after the snapshot, oldest
    /// first, so a truncated log can fall back to the one before.
    pub(super) membership_log: Vec<(Index, Membership)>,

    /// Leader only: replication progress of every member, itself included.
    pub(super) progress: BTreeMap<NodeId, Progress>,
    /// Candidate only: the answers received in this election.
    pub(super) votes: BTreeMap<NodeId, bool>,

    /// Ticks since the last reset of the election timer (followers and
    /// candidates) or since the last CheckQuorum (leaders).
    pub(super) election_elapsed: u32,
    pub(super) heartbeat_elapsed: u32,
    pub(super) randomized_election_timeout: u32,
    rng: SmallRng,

    /// Messages waiting for the next `Ready`.
    pub(super) msgs: Vec<Message>,
    pub(super) reads: ReadOnly,
    pub(super) read_states: Vec<ReadState>,
    /// Leader only: followers whose snapshot stream is no longer needed,
    /// waiting for the next `Ready`.
    pub(super) cancelled_snapshots: Vec<NodeId>,

    /// Leader only: the member leadership is being handed to (§3.10), or 0.
    pub(super) lead_transferee: NodeId,
    pub(super) transfer_elapsed: u32,
    /// Leader only: index of the latest membership entry (or of this term's
    /// no-op). A new change waits until it is committed.
    pub(super) pending_conf_index: Index,
    /// Leader only: entries were appended since the last broadcast.
    pub(super) need_broadcast: bool,
}

/// What a member starts from: what it persisted before it stopped, or, on
/// first boot, a snapshot of index 0 that holds the initial membership.
#[derive(Clone, Debug, Default)]
pub struct RestoredState {
    pub hard_state: HardState,
    pub snapshot: SnapshotMeta,
    /// The persisted entries after the snapshot, in order.
    pub entries: Vec<Entry>,
    /// The state machine's applied index (at least the snapshot's).
    pub applied: Index,
}

/// Which kind of election to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Campaign {
    PreElection,
    Election,
    /// Started by TimeoutNow: skips PreVote and overrides leader leases.
    Transfer,
}

impl Raft {
    pub fn new(cfg: Config, restored: RestoredState) -> Result<Raft, String> {
        cfg.validate()?;
        let RestoredState {
            hard_state,
            snapshot,
            entries,
            applied,
        } = restored;
        let mut prev = snapshot.last_included_index;
        for e in &entries {
            if e.index != prev + 1 && e.index > snapshot.last_included_index {
                return Err(format!(
                    "the stored log has a gap: entry {} follows entry {}",
                    e.index, prev
                ));
            }
            prev = prev.max(e.index);
        }
        let membership = snapshot.membership.clone();
        let log = RaftLog::restore(snapshot, entries, hard_state.commit_index, applied);
        let mut raft = Raft {
            id: cfg.id,
            rng: SmallRng::seed_from_u64(cfg.seed ^ cfg.id.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            cfg,
            term: hard_state.current_term,
            voted_for: hard_state.voted_for,
            log,
            role: Role::Follower,
            leader_id: 0,
            membership,
            membership_log: Vec::new(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            msgs: Vec::new(),
            reads: ReadOnly::default(),
            read_states: Vec::new(),
            cancelled_snapshots: Vec::new(),
            lead_transferee: 0,
            transfer_elapsed: 0,
            pending_conf_index: 0,
            need_broadcast: false,
        };
        let first = raft.log.first_index();
        let last = raft.log.last_index();
        raft.note_membership_entries(first, last);
        raft.reset_election_timer();
        Ok(raft)
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            current_term: self.term,
            voted_for: self.voted_for,
            commit_index: self.log.committed,
        }
    }

    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader_id: self.leader_id,
        }
    }

    /// Whether this member may stand for election: only voters do (learners
    /// and removed members never disturb the cluster).
    pub(super) fn promotable(&self) -> bool {
        self.membership.is_voter(self.id)
    }

    /// Whether this member has a configuration at all. One that joined with
    /// an empty disk has none until the leader's snapshot gives it one.
    pub(super) fn has_configuration(&self) -> bool {
        !self.membership.members.is_empty()
    }

    pub(super) fn quorum(&self) -> usize {
        self.membership.quorum()
    }

    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.randomized_election_timeout = self
            .rng
            .random_range(self.cfg.election_tick_min..self.cfg.election_tick_max);
    }

    /// §4.2.3 of the thesis: a member that heard from a leader within the
    /// minimum election timeout ignores requests to start a new term, so a
    /// member that was cut off cannot depose a working leader.
    pub(super) fn in_lease(&self) -> bool {
        self.cfg.check_quorum
            && self.leader_id != 0
            && self.election_elapsed < self.cfg.election_tick_min
    }

    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body);
    }

    pub(super) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        self.msgs.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    // ---------------------------------------------------------------- roles

    /// Figure 4: discovers a current leader or a new term.
    pub(super) fn become_follower(&mut self, term: Term, leader_id: NodeId) {
        if term > self.term {
            self.term = term;
            self.voted_for = 0;
        }
        if self.role == Role::Leader {
            self.reads.clear();
        }
        self.role = Role::Follower;
        self.leader_id = leader_id;
        self.progress.clear();
        self.votes.clear();
        self.lead_transferee = 0;
        self.need_broadcast = false;
        self.heartbeat_elapsed = 0;
        self.reset_election_timer();
    }

    pub(super) fn become_pre_candidate(&mut self) {
        // PreVote changes neither term nor vote: a member that cannot win
        // leaves no trace.
        self.role = Role::PreCandidate;
        self.leader_id = 0;
        self.votes.clear();
        self.reset_election_timer();
    }

    /// §5.2: increment currentTerm, vote for self, reset the election timer.
    pub(super) fn become_candidate(&mut self) {
        self.term += 1;
        self.voted_for = self.id;
        self.role = Role::Candidate;
        self.leader_id = 0;
        self.votes.clear();
        self.reset_election_timer();
    }

    /// §5.2, §8: a new leader sends heartbeats and appends a no-op, so entries
    /// of earlier terms get committed by the commit of one of its own.
    pub(super) fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader_id = self.id;
        self.votes.clear();
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.lead_transferee = 0;
        self.reads.clear();
        let last = self.log.last_index();
        self.progress.clear();
        let ids: Vec<NodeId> = self.membership.members.keys().copied().collect();
        for id in ids {
            self.progress
                .insert(id, Progress::new(last + 1, self.cfg.max_inflight_appends));
        }
        let stable = self.log.stable_index();
        let own = self.own_progress();
        own.match_index = stable;
        own.become_replicate();
        own.recent_active = true;
        let noop = Entry::normal(self.term, last + 1, Bytes::new());
        self.log.append(noop);
        // §4.1 + the single-server bug fix: no membership change until an
        // entry of this term is committed.
        self.pending_conf_index = last + 1;
        self.need_broadcast = true;
        if self.quorum() == 1 && self.membership.is_voter(self.id) {
            // Nothing to wait for but our own disk: `advance` commits.
        }
    }

    /// The leader's own progress; it always exists while leading because the
    /// leader is a member of the configuration it leads.
    fn own_progress(&mut self) -> &mut Progress {
        let id = self.id;
        let max = self.cfg.max_inflight_appends;
        let next = self.log.last_index() + 1;
        self.progress
            .entry(id)
            .or_insert_with(|| Progress::new(next, max))
    }

    // ----------------------------------------------------------------- tick

    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            // §5.2: a follower that hears nothing for an election timeout
            // becomes a candidate; so does a candidate whose election failed.
            let kind = if self.cfg.pre_vote {
                Campaign::PreElection
            } else {
                Campaign::Election
            };
            self.campaign(kind);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.lead_transferee != 0 {
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.cfg.election_tick_max {
                // The target did not take over in time; keep leading.
                self.lead_transferee = 0;
            }
        }
        if self.election_elapsed >= self.cfg.election_tick_min {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.quorum_recently_active() {
                // §6.2 of the thesis: a leader cut off from a majority steps
                // down, so clients go looking for the real leader.
                self.become_follower(self.term, 0);
                return;
            }
            let id = self.id;
            for (pid, pr) in self.progress.iter_mut() {
                pr.recent_active = *pid == id;
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    fn quorum_recently_active(&self) -> bool {
        let active = self
            .membership
            .voters()
            .filter(|id| *id == self.id || self.progress.get(id).is_some_and(|p| p.recent_active))
            .count();
        active >= self.quorum()
    }

    // ----------------------------------------------------------------- step

    pub fn step(&mut self, m: Message) -> Result<(), StepError> {
        self.validate(&m)?;

        if m.term > self.term {
            match &m.body {
                MessageBody::RequestVote {
                    pre_vote,
                    leader_transfer,
                    ..
                } => {
                    if !leader_transfer && self.in_lease() {
                        return Err(StepError::InLease {
                            from: m.from,
                            leader_id: self.leader_id,
                        });
                    }
                    if !pre_vote {
                        self.become_follower(m.term, 0);
                    }
                }
                // A granted PreVote carries the term the candidate would
                // use; it is not a term anyone is in yet.
                MessageBody::RequestVoteResponse {
                    pre_vote: true,
                    vote_granted: true,
                } => {}
                MessageBody::AppendEntries { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::TimeoutNow => self.become_follower(m.term, m.from),
                _ => self.become_follower(m.term, 0),
            }
        } else if m.term < self.term {
            self.answer_stale(&m);
            return Ok(());
        }

        match m.body {
            MessageBody::RequestVote { .. } => {
                self.handle_request_vote(m);
                Ok(())
            }
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
    }

    /// Figure 2: a request from an older term is refused with our term, which
    /// tells the stale leader or candidate to step down. Answers from older
    /// terms are simply dropped.
    fn answer_stale(&mut self, m: &Message) {
        match &m.body {
            MessageBody::AppendEntries {
                prev_log_index,
                seq,
                ..
            } => {
                let last = self.log.last_index();
                self.send(
                    m.from,
                    MessageBody::AppendEntriesResponse {
                        success: false,
                        match_index: 0,
                        reject_index: *prev_log_index,
                        conflict_term: 0,
                        conflict_index: 0,
                        last_log_index: last,
                        seq: *seq,
                    },
                );
            }
            MessageBody::InstallSnapshot { snapshot } => {
                let last = self.log.last_index();
                self.send(
                    m.from,
                    MessageBody::AppendEntriesResponse {
                        success: false,
                        match_index: 0,
                        reject_index: snapshot.last_included_index,
                        conflict_term: 0,
                        conflict_index: 0,
                        last_log_index: last,
                        seq: 0,
                    },
                );
            }
            MessageBody::RequestVote { pre_vote, .. } => {
                let pre_vote = *pre_vote;
                self.send(
                    m.from,
                    MessageBody::RequestVoteResponse {
                        vote_granted: false,
                        pre_vote,
                    },
                );
            }
            _ => {}
        }
    }

    /// Refuses messages that no correct member sends; they change nothing.
    fn validate(&self, m: &Message) -> Result<(), StepError> {
        if m.to != self.id {
            return Err(StepError::WrongRecipient {
                to: m.to,
                id: self.id,
            });
        }
        if m.from == 0 || m.from == self.id {
            return Err(StepError::BadSender { from: m.from });
        }
        if m.term > MAX_NUMBER || m.body.highest_number() > MAX_NUMBER {
            return Err(StepError::Malformed(format!(
                "{} from {} carries a term or index above 2^63",
                m.body.name(),
                m.from
            )));
        }
        match &m.body {
            MessageBody::RequestVote { .. }
            | MessageBody::RequestVoteResponse { .. }
            | MessageBody::AppendEntriesResponse { .. } => {
                // Answers only count from members. Vote requests are
                // answered whoever asks, like leader traffic (AppendEntries,
                // InstallSnapshot): this member may be behind on membership
                // (an empty disk knows no members at all), and refusing a
                // candidate of a newer configuration can leave that
                // configuration without a quorum of willing voters. The
                // candidate counts only the votes of its own voters, and
                // PreVote, CheckQuorum and the log comparison keep a removed
                // member from disrupting anyone.
                if !matches!(m.body, MessageBody::RequestVote { .. })
                    && !self.membership.contains(m.from)
                {
                    return Err(StepError::UnknownSender { from: m.from });
                }
                // A candidate's log holds no entry of a term it has not
                // reached; believing otherwise would give it every vote.
                if let MessageBody::RequestVote { last_log_term, .. } = &m.body
                    && *last_log_term > m.term
                {
                    return Err(StepError::Malformed(format!(
                        "vote request from {} claims a log of term {} in term {}",
                        m.from, last_log_term, m.term
                    )));
                }
            }
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                ..
            } => {
                if *prev_log_term > m.term {
                    return Err(StepError::Malformed(format!(
                        "AppendEntries from {} has prev_log_term {} above its term {}",
                        m.from, prev_log_term, m.term
                    )));
                }
                let mut expect = *prev_log_index;
                let mut last_term = *prev_log_term;
                for e in entries {
                    expect = expect.checked_add(1).ok_or_else(|| {
                        StepError::Malformed(format!(
                            "AppendEntries from {} overflows the index",
                            m.from
                        ))
                    })?;
                    if e.index != expect {
                        return Err(StepError::Malformed(format!(
                            "AppendEntries from {}: entry index {} where {} was expected",
                            m.from, e.index, expect
                        )));
                    }
                    if e.term < last_term || e.term > m.term {
                        return Err(StepError::Malformed(format!(
                            "AppendEntries from {}: entry {} has term {} (previous {}, message term {})",
                            m.from, e.index, e.term, last_term, m.term
                        )));
                    }
                    last_term = e.term;
                }
            }
            MessageBody::InstallSnapshot { snapshot } => {
                if snapshot.last_included_term > m.term || snapshot.membership.voter_count() == 0 {
                    return Err(StepError::Malformed(format!(
                        "InstallSnapshot from {}: snapshot term {} (message term {}) with {} voters",
                        m.from,
                        snapshot.last_included_term,
                        m.term,
                        snapshot.membership.voter_count()
                    )));
                }
            }
            MessageBody::TimeoutNow => {}
        }
        Ok(())
    }

    fn step_follower(&mut self, m: Message) -> Result<(), StepError> {
        match m.body {
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                seq,
            } => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_append_entries(
                    m.from,
                    prev_log_index,
                    prev_log_term,
                    &entries,
                    leader_commit,
                    seq,
                )
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_install_snapshot(m.from, snapshot);
                Ok(())
            }
            MessageBody::TimeoutNow => {
                if m.from == self.leader_id && self.promotable() {
                    // §3.10: the leader asks us to take over now.
                    self.campaign(Campaign::Transfer);
                }
                Ok(())
            }
            // Answers to a candidacy or leadership this member no longer holds.
            _ => Ok(()),
        }
    }

    fn step_candidate(&mut self, m: Message) -> Result<(), StepError> {
        match m.body {
            MessageBody::AppendEntries { .. } | MessageBody::InstallSnapshot { .. } => {
                // §5.2: another server has established itself as leader of
                // this term (or, for a pre-candidate, of the current term).
                self.become_follower(m.term, m.from);
                self.step_follower(m)
            }
            MessageBody::RequestVoteResponse {
                vote_granted,
                pre_vote,
            } => {
                if pre_vote == (self.role == Role::PreCandidate) {
                    self.handle_vote_response(m.from, vote_granted);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    // ------------------------------------------------------------ proposals

    pub(super) fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_id: self.leader_id,
            });
        }
        if self.lead_transferee != 0 {
            return Err(ProposeError::TransferInProgress {
                to: self.lead_transferee,
            });
        }
        Ok(())
    }

    /// Appends a command to the leader's log (§5.3); it is sent with the next
    /// `Ready`, batched with every other proposal of the same turn.
    pub fn propose(&mut self, data: Bytes) -> Result<Index, ProposeError> {
        self.check_can_propose()?;
        let index = self.log.last_index() + 1;
        self.log.append(Entry::normal(self.term, index, data));
        self.need_broadcast = true;
        Ok(index)
    }

    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<Index, ProposeError> {
        self.check_can_propose()?;
        if self.pending_conf_index > self.log.committed {
            return Err(ProposeError::ConfChangePending {
                index: self.pending_conf_index,
            });
        }
        match &change {
            ConfChange::RemoveMember { id } if *id == self.id => {
                return Err(ProposeError::LeaderRemoval);
            }
            ConfChange::PromoteLearner { id }
                if self.membership.contains(*id) && !self.membership.is_voter(*id) =>
            {
                // Caught up: it holds the configuration that made it a
                // learner (the last change, committed, since none is
                // pending) and is within the allowed lag of the commit
                // index. Counting only the lag once promoted a learner that
                // had stored nothing at all.
                let caught_up = self.progress.get(id).is_some_and(|p| {
                    !matches!(p.state, ReplicationState::Snapshot { .. })
                        && p.match_index >= self.pending_conf_index
                        && p.match_index + self.cfg.max_promotion_lag >= self.log.committed
                });
                if !caught_up {
                    return Err(ProposeError::LearnerNotCaughtUp {
                        id: *id,
                        match_index: self.progress.get(id).map_or(0, |p| p.match_index),
                        commit_index: self.log.committed,
                    });
                }
            }
            _ => {}
        }
        self.membership
            .apply(&change)
            .map_err(ProposeError::InvalidConfChange)?;
        let index = self.log.last_index() + 1;
        self.log.append(Entry {
            term: self.term,
            index,
            kind: EntryKind::ConfChange(change),
            data: Bytes::new(),
        });
        self.pending_conf_index = index;
        self.note_membership_entries(index, index);
        self.need_broadcast = true;
        Ok(index)
    }

    /// §3.10: hands leadership to `to` once it is caught up.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_id: self.leader_id,
            });
        }
        if to == self.id {
            return Ok(());
        }
        if !self.membership.is_voter(to) {
            return Err(ProposeError::NotVoter { id: to });
        }
        if self.lead_transferee == to {
            return Ok(());
        }
        self.lead_transferee = to;
        self.transfer_elapsed = 0;
        let last = self.log.last_index();
        if self
            .progress
            .get(&to)
            .is_some_and(|p| p.match_index == last)
        {
            self.send(to, MessageBody::TimeoutNow);
        } else {
            self.send_append(to);
        }
        Ok(())
    }

    /// The voter (other than the leader) whose log is longest and that was
    /// heard from recently: the best target for a leadership transfer.
    pub fn most_caught_up_voter(&self) -> Option<NodeId> {
        self.membership
            .voters()
            .filter(|id| *id != self.id)
            .filter_map(|id| self.progress.get(&id).map(|p| (id, p)))
            .max_by_key(|(id, p)| (p.recent_active, p.match_index, std::cmp::Reverse(*id)))
            .map(|(id, _)| id)
    }

    // ----------------------------------------------------------- membership

    /// Brings the configuration up to date with membership entries in
    /// `from..=to` that were just added to the log.
    pub(super) fn note_membership_entries(&mut self, from: Index, to: Index) {
        for index in from..=to {
            let Some(Entry {
                kind: EntryKind::ConfChange(change),
                ..
            }) = self.log.entry(index)
            else {
                continue;
            };
            // Every member applies the same changes to the same prefix, so a
            // change that does not apply is skipped identically everywhere.
            match self.membership.apply(change) {
                Ok(next) => {
                    self.membership_log.push((index, next.clone()));
                    self.membership = next;
                }
                Err(e) => {
                    tracing::warn!(member = self.id, index, error = %e, "membership entry does not apply; skipping it");
                }
            }
        }
        self.sync_progress_with_membership();
    }

    /// A truncated log loses its membership entries from `from` on; the
    /// configuration falls back to the last one that remains (§4.1).
    pub(super) fn forget_membership_from(&mut self, from: Index) {
        if self.membership_log.iter().any(|(i, _)| *i >= from) {
            self.membership_log.retain(|(i, _)| *i < from);
            self.membership = self.membership_log.last().map_or_else(
                || self.log.snapshot().membership.clone(),
                |(_, m)| m.clone(),
            );
            if self.pending_conf_index >= from {
                self.pending_conf_index = 0;
            }
        }
    }

    /// The configuration in force at `index` (which must not be compacted).
    pub fn membership_at(&self, index: Index) -> Membership {
        self.membership_log
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or_else(
                || self.log.snapshot().membership.clone(),
                |(_, m)| m.clone(),
            )
    }

    fn sync_progress_with_membership(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let next = self.log.last_index() + 1;
        let max = self.cfg.max_inflight_appends;
        let members: Vec<NodeId> = self.membership.members.keys().copied().collect();
        self.progress.retain(|id, _| members.contains(id));
        for id in members {
            self.progress.entry(id).or_insert_with(|| {
                let mut p = Progress::new(next, max);
                p.recent_active = true;
                p
            });
        }
        if self.lead_transferee != 0 && !self.membership.is_voter(self.lead_transferee) {
            self.lead_transferee = 0;
        }
        // Fewer voters can mean a smaller majority is already there.
        self.maybe_commit();
    }

    // ------------------------------------------------------------ snapshots

    /// Describes a snapshot of the state machine taken at `index` (applied).
    pub fn snapshot_meta_at(&self, index: Index) -> Option<SnapshotMeta> {
        if index > self.log.applied {
            return None;
        }
        let term = self.log.term(index)?;
        Some(SnapshotMeta {
            last_included_index: index,
            last_included_term: term,
            membership: self.membership_at(index),
        })
    }

    /// Drops the log up to a snapshot the caller has made durable.
    pub fn compact(&mut self, meta: SnapshotMeta) {
        let index = meta.last_included_index;
        if index <= self.log.snapshot().last_included_index || index > self.log.applied {
            return;
        }
        self.membership_log.retain(|(i, _)| *i > index);
        self.log.compact(meta);
    }

    /// The transport finished (or gave up) streaming a snapshot to `to`.
    pub fn report_snapshot(&mut self, to: NodeId, ok: bool) {
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        if let ReplicationState::Snapshot { pending } = pr.state {
            if ok {
                pr.become_probe(pending + 1);
            } else {
                pr.become_probe(pr.match_index + 1);
            }
            // Wait for the follower's answer or the next heartbeat before
            // probing again, so a failing stream is not retried in a loop.
            pr.probe_sent = true;
        }
    }

    pub(super) fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.committed) == Some(self.term)
    }

    pub(super) fn read_ready(&mut self, ctx: u64, index: Index) {
        self.read_states.push(ReadState { index, ctx });
    }

    /// Leader: entries that were appended but not yet sent go out now, and so
    /// does a heartbeat round that new ReadIndex requests wait for.
    pub(super) fn flush(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        if self.need_broadcast {
            self.need_broadcast = false;
            self.broadcast_append();
        }
        if self.reads.take_round_request() {
            self.broadcast_heartbeat_only();
        }
    }
}
