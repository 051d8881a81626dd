//! The core's whole API: inputs in, `Ready` out, `advance` back.

use bytes::Bytes;

use super::config::Config;
use super::errors::{ProposeError, StepError};
use super::membership::{ConfChange, Membership};
use super::progress::ReplicationState;
use super::raft::{Raft, RestoredState};
use super::types::{
    Entry, HardState, Index, Message, MessageBody, NodeId, ReadState, Role, SnapshotMeta,
    SoftState, Term,
};

/// Most committed-entry bytes handed out in one `Ready`, so a member that
/// restarts far behind applies in bounded steps.
const MAX_APPLY_BYTES: usize = 64 << 20;

/// Everything the caller must do after a turn, in this order:
///
/// 0. **Send** `leader_messages` — at once, even before step 1. They are a
///    leader's AppendEntries, heartbeats, snapshots and TimeoutNow, which
///    promise nothing about the leader's own disk, so the leader's write and
///    the followers' writes overlap (thesis §10.2.1); the leader counts itself
///    towards a majority only once its write is done (`advance`).
/// 1. **Persist** `snapshot` (install its data; it replaces the whole stored
///    log, whose entries do not match it), then truncate the stored log at
///    `entries[0].index` and write `entries`, then `hard_state` — and make
///    it durable (fsync) if [`Ready::must_sync`] says so.
/// 2. **Send** `messages`. Votes and append answers among them promise that
///    step 1 is on disk, which is why they wait for it.
/// 3. **Apply** `committed_entries` to the state machine, in order.
/// 4. **Answer** `read_states` once the state machine has applied their index.
/// 5. Call [`RawNode::advance`] before stepping the node again.
///
/// Before step 0, stop streaming a snapshot to each of `cancelled_snapshots`
/// (a stopped stream is not reported). Before, not after: a new snapshot for
/// the same follower may be among this `Ready`'s messages.
#[derive(Debug, Default)]
pub struct Ready {
    /// Set when the role or the known leader changed.
    pub soft_state: Option<SoftState>,
    pub hard_state: Option<HardState>,
    pub snapshot: Option<SnapshotMeta>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    /// A leader's requests that may leave before step 1 (see above). Empty
    /// when this `Ready` changes the term or the vote: a leader's term must
    /// be durable before it acts in it.
    pub leader_messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    /// Followers that caught up through entries while a snapshot was being
    /// streamed to them: the stream may stop, and need not be reported with
    /// [`RawNode::report_snapshot`] any more.
    pub cancelled_snapshots: Vec<NodeId>,
    must_sync: bool,
}

impl Ready {
    /// Whether step 1 must reach the disk before step 2: true when entries, a
    /// snapshot, the term or the vote changed. A commit index alone can be
    /// learned again after a crash, so it needs no fsync.
    pub fn must_sync(&self) -> bool {
        self.must_sync
    }
}

/// What a `Ready` handed out, so `advance` can record it as done.
#[derive(Debug, Default)]
struct Handed {
    last_entry: Option<(Index, Term)>,
    last_committed: Option<Index>,
    snapshot: Option<Index>,
    hard_state: Option<HardState>,
    soft_state: Option<SoftState>,
}

/// One Raft member as a deterministic state machine.
pub struct RawNode {
    raft: Raft,
    prev_soft: SoftState,
    prev_hard: HardState,
    handed: Option<Handed>,
}

/// The replication progress of one member, as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressStatus {
    pub id: NodeId,
    pub match_index: Index,
    pub next_index: Index,
    pub state: ReplicationState,
    pub recent_active: bool,
}

/// A snapshot of a member's state for status reports and tests.
#[derive(Clone, Debug)]
pub struct Status {
    pub id: NodeId,
    pub hard_state: HardState,
    pub soft_state: SoftState,
    pub applied_index: Index,
    pub last_index: Index,
    pub last_term: Term,
    pub snapshot_index: Index,
    pub membership: Membership,
    /// Leader only; the leader itself included.
    pub progress: Vec<ProgressStatus>,
    pub lead_transferee: NodeId,
    pub election_elapsed: u32,
    pub randomized_election_timeout: u32,
    pub pending_reads: usize,
}

impl RawNode {
    pub fn new(cfg: Config, restored: RestoredState) -> Result<RawNode, String> {
        let raft = Raft::new(cfg, restored)?;
        let prev_hard = raft.hard_state();
        let prev_soft = raft.soft_state();
        Ok(RawNode {
            raft,
            prev_soft,
            prev_hard,
            handed: None,
        })
    }

    pub fn id(&self) -> NodeId {
        self.raft.id
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Feeds a message from another member. An `Err` means it was dropped and
    /// changed nothing; the caller logs it.
    pub fn step(&mut self, m: Message) -> Result<(), StepError> {
        self.raft.step(m)
    }

    /// Steps a request from a peer (RequestVote, AppendEntries,
    /// InstallSnapshot) and takes the core's answer to it out of the outgoing
    /// messages, so a transport can return it as the RPC's response. The
    /// answer may promise durable state (a vote, appended entries): return it
    /// only after the next `Ready` has been persisted.
    pub fn step_request(&mut self, m: Message) -> Result<Option<Message>, StepError> {
        let from = m.from;
        let before = self.raft.msgs.len();
        self.raft.step(m)?;
        let answer = self.raft.msgs[before..].iter().rposition(|x| {
            x.to == from
                && matches!(
                    x.body,
                    MessageBody::RequestVoteResponse { .. }
                        | MessageBody::AppendEntriesResponse { .. }
                )
        });
        Ok(answer.map(|i| self.raft.msgs.remove(before + i)))
    }

    /// Proposes a command; on success it will appear at the returned index
    /// (in the current term) if it commits.
    pub fn propose(&mut self, data: Bytes) -> Result<Index, ProposeError> {
        self.raft.propose(data)
    }

    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<Index, ProposeError> {
        self.raft.propose_conf_change(change)
    }

    /// Requests a linearizable read; `ctx` returns in a `ReadState`.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        self.raft.read_index(ctx)
    }

    /// Starts handing leadership to `to` (§3.10 of the thesis).
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        self.raft.transfer_leader(to)
    }

    pub fn most_caught_up_voter(&self) -> Option<NodeId> {
        self.raft.most_caught_up_voter()
    }

    /// The transport finished (`ok`) or abandoned streaming a snapshot to `to`.
    /// Every InstallSnapshot sent must be reported once, or the leader waits
    /// for that follower until it steps down.
    pub fn report_snapshot(&mut self, to: NodeId, ok: bool) {
        self.raft.report_snapshot(to, ok)
    }

    /// Describes a snapshot of the state machine at applied index `index`.
    pub fn snapshot_meta_at(&self, index: Index) -> Option<SnapshotMeta> {
        self.raft.snapshot_meta_at(index)
    }

    /// Discards the log up to a snapshot the caller has stored durably.
    pub fn compact(&mut self, meta: SnapshotMeta) {
        self.raft.compact(meta)
    }

    pub fn membership(&self) -> &Membership {
        &self.raft.membership
    }

    pub fn role(&self) -> Role {
        self.raft.role
    }

    pub fn term(&self) -> Term {
        self.raft.term
    }

    pub fn leader_id(&self) -> NodeId {
        self.raft.leader_id
    }

    /// The election timer: ticks since its last reset, and the randomized
    /// timeout (in ticks) it fires at. Cheaper than [`RawNode::status`].
    pub fn election_timer(&self) -> (u32, u32) {
        (
            self.raft.election_elapsed,
            self.raft.randomized_election_timeout,
        )
    }

    pub fn voted_for(&self) -> NodeId {
        self.raft.voted_for
    }

    pub fn commit_index(&self) -> Index {
        self.raft.log.committed
    }

    pub fn last_index(&self) -> Index {
        self.raft.log.last_index()
    }

    /// The entry at `index`, if the in-memory log still holds it.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.raft.log.entry(index)
    }

    pub fn status(&self) -> Status {
        let r = &self.raft;
        Status {
            id: r.id,
            hard_state: r.hard_state(),
            soft_state: r.soft_state(),
            applied_index: r.log.applied,
            last_index: r.log.last_index(),
            last_term: r.log.last_term(),
            snapshot_index: r.log.snapshot().last_included_index,
            membership: r.membership.clone(),
            progress: r
                .progress
                .iter()
                .map(|(id, p)| ProgressStatus {
                    id: *id,
                    match_index: p.match_index,
                    next_index: p.next_index,
                    state: p.state,
                    recent_active: p.recent_active,
                })
                .collect(),
            lead_transferee: r.lead_transferee,
            election_elapsed: r.election_elapsed,
            randomized_election_timeout: r.randomized_election_timeout,
            pending_reads: r.reads.pending(),
        }
    }

    /// Whether `ready` would return anything.
    pub fn has_ready(&mut self) -> bool {
        self.raft.flush();
        let r = &self.raft;
        !r.msgs.is_empty()
            || r.log.has_unstable()
            || r.log.has_next_committed()
            || r.log.pending_snapshot().is_some()
            || !r.read_states.is_empty()
            || !r.cancelled_snapshots.is_empty()
            || r.hard_state() != self.prev_hard
            || r.soft_state() != self.prev_soft
    }

    /// Collects the work of this turn. Handle it (see [`Ready`]) and call
    /// [`RawNode::advance`] before the next `step`, `tick` or `propose`.
    pub fn ready(&mut self) -> Ready {
        self.raft.flush();
        let r = &mut self.raft;
        let hard = r.hard_state();
        let soft = r.soft_state();
        let snapshot = r.log.pending_snapshot().cloned();
        let entries = r.log.unstable();
        let committed_entries = r.log.next_committed(MAX_APPLY_BYTES);
        let hard_state = (hard != self.prev_hard).then_some(hard);
        let must_sync = !entries.is_empty()
            || snapshot.is_some()
            || hard.current_term != self.prev_hard.current_term
            || hard.voted_for != self.prev_hard.voted_for;
        self.handed = Some(Handed {
            last_entry: entries.last().map(|e| (e.index, e.term)),
            last_committed: committed_entries.last().map(|e| e.index),
            snapshot: snapshot.as_ref().map(|s| s.last_included_index),
            hard_state: Some(hard),
            soft_state: Some(soft),
        });
        let mut messages = std::mem::take(&mut r.msgs);
        let term_or_vote_changed = hard.current_term != self.prev_hard.current_term
            || hard.voted_for != self.prev_hard.voted_for;
        let leader_messages =
            if r.role == Role::Leader && !term_or_vote_changed && snapshot.is_none() {
                let (early, late) = messages.into_iter().partition(|m| {
                    matches!(
                        m.body,
                        MessageBody::AppendEntries { .. }
                            | MessageBody::InstallSnapshot { .. }
                            | MessageBody::TimeoutNow
                    )
                });
                messages = late;
                early
            } else {
                Vec::new()
            };
        Ready {
            soft_state: (soft != self.prev_soft).then_some(soft),
            hard_state,
            snapshot,
            entries,
            messages,
            leader_messages,
            committed_entries,
            read_states: std::mem::take(&mut r.read_states),
            cancelled_snapshots: std::mem::take(&mut r.cancelled_snapshots),
            must_sync,
        }
    }

    /// Records that the last `Ready` was handled: its entries are durable and
    /// its committed entries applied.
    pub fn advance(&mut self) {
        let Some(h) = self.handed.take() else {
            return;
        };
        if let Some(hard) = h.hard_state {
            self.prev_hard = hard;
        }
        if let Some(soft) = h.soft_state {
            self.prev_soft = soft;
        }
        let r = &mut self.raft;
        if let Some(index) = h.snapshot {
            r.log.snapshot_persisted(index);
        }
        if let Some((index, term)) = h.last_entry {
            r.log.stable_to(index, term);
        }
        if r.role == Role::Leader {
            let stable = r.log.stable_index();
            r.leader_persisted(stable);
        }
        if let Some(index) = h.last_committed {
            r.log.applied_to(index);
        }
    }
}
