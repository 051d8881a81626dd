//! The nouns of Raft (Figure 2 of the paper): terms, indexes, log entries, the
//! persistent state, and the messages members exchange.

use bytes::Bytes;

use super::membership::{ConfChange, Membership};

/// A member's identity. `0` is never a member: it means "nobody" on the wire.
pub type NodeId = u64;
/// §5.1: a logical clock; each term begins with an election.
pub type Term = u64;
/// Position of an entry in the log; the first entry has index 1.
pub type Index = u64;

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Opaque data for the state machine. Empty data is the no-op a new leader
    /// appends (§5.4.2, §8) and is not handed to the state machine as a command.
    Normal,
    /// A membership change; it takes effect as soon as it is in the log (§4.1
    /// of Ongaro's thesis), whether committed or not.
    ConfChange(ConfChange),
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub kind: EntryKind,
    pub data: Bytes,
}

impl Entry {
    pub fn normal(term: Term, index: Index, data: Bytes) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data,
        }
    }

    /// A rough size for batching and flow control.
    pub fn size(&self) -> usize {
        self.data.len() + 24
    }
}

/// The state every member keeps on stable storage before it answers any RPC
/// (Figure 2, "Persistent state on all servers"), plus the commit index so a
/// restart does not have to rediscover it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub current_term: Term,
    /// Whom this member voted for in `current_term`; 0 if nobody.
    pub voted_for: NodeId,
    pub commit_index: Index,
}

/// A member's role (§5.1, Figure 4). `PreCandidate` is the PreVote phase of
/// §9.6 of Ongaro's thesis: a follower checking it could win before it
/// disturbs anyone with a new term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// What a member may tell others but need not persist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    /// The leader this member knows of in its current term; 0 if none.
    pub leader_id: NodeId,
}

/// Describes a snapshot: the last entry it replaces and the membership in
/// force at that entry (§7). The snapshot's data is the caller's business.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub last_included_index: Index,
    pub last_included_term: Term,
    pub membership: Membership,
}

/// A linearizable read that may now be served: once the state machine has
/// applied `index`, reading it returns a value at least as new as any write
/// acknowledged before [`super::RawNode::read_index`] was called (§6.4 of the
/// thesis).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub index: Index,
    pub ctx: u64,
}

/// A message between members. `term` is the sender's current term; a higher
/// term always wins (§5.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

/// The RPCs of Figure 2 and their answers, plus the extensions of Ongaro's
/// thesis: PreVote (§9.6), leadership transfer (§3.10) and InstallSnapshot (§7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// Invoked by candidates to gather votes (§5.2). The candidate is `from`.
    RequestVote {
        last_log_index: Index,
        last_log_term: Term,
        /// A PreVote asks "would you vote for me in `term`?" and changes no
        /// state on either side.
        pre_vote: bool,
        /// Set when the election was started by TimeoutNow: voters then
        /// ignore their leader lease, because the leader asked for this.
        leader_transfer: bool,
    },
    RequestVoteResponse {
        vote_granted: bool,
        pre_vote: bool,
    },
    /// Invoked by the leader to replicate entries (§5.3) and as heartbeat (§5.2).
    AppendEntries {
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
        /// The leader's heartbeat round, echoed in the answer; ReadIndex uses
        /// it to learn that a majority still follows this leader.
        seq: u64,
    },
    AppendEntriesResponse {
        success: bool,
        /// On success, the last index known to match the leader's log.
        match_index: Index,
        /// On failure, the `prev_log_index` that failed the consistency check.
        reject_index: Index,
        /// On failure, the hint for fast backtracking (§5.3, end): the term of
        /// the follower's entry at `reject_index` (0 if it has none) and the
        /// first index it holds of that term (or its last index + 1). Both 0:
        /// the follower holds no configuration yet (it joined with an empty
        /// disk) and needs the leader's snapshot before any entry.
        conflict_term: Term,
        conflict_index: Index,
        /// The follower's last log index, for the leader's view of progress.
        last_log_index: Index,
        seq: u64,
    },
    /// Invoked by the leader to send a snapshot to a follower that needs
    /// entries it has already compacted (§7). The data travels beside the
    /// message (the transport streams it); the core sees the description.
    InstallSnapshot {
        snapshot: SnapshotMeta,
    },
    /// Tells a caught-up follower to start an election at once (§3.10).
    TimeoutNow,
}

impl MessageBody {
    /// The largest term or index the body carries.
    pub fn highest_number(&self) -> u64 {
        match self {
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => (*last_log_index).max(*last_log_term),
            MessageBody::RequestVoteResponse { .. } | MessageBody::TimeoutNow => 0,
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                ..
            } => entries.iter().map(|e| e.index.max(e.term)).fold(
                (*prev_log_index).max(*prev_log_term).max(*leader_commit),
                u64::max,
            ),
            MessageBody::AppendEntriesResponse {
                match_index,
                reject_index,
                conflict_term,
                conflict_index,
                last_log_index,
                ..
            } => [
                *match_index,
                *reject_index,
                *conflict_term,
                *conflict_index,
                *last_log_index,
            ]
            .into_iter()
            .fold(0, u64::max),
            MessageBody::InstallSnapshot { snapshot } => snapshot
                .last_included_index
                .max(snapshot.last_included_term),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::RequestVote { pre_vote: true, .. } => "PreVote",
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::RequestVoteResponse { pre_vote: true, .. } => "PreVoteResponse",
            MessageBody::RequestVoteResponse { .. } => "RequestVoteResponse",
            MessageBody::AppendEntries { .. } => "AppendEntries",
            MessageBody::AppendEntriesResponse { .. } => "AppendEntriesResponse",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::TimeoutNow => "TimeoutNow",
        }
    }
}
