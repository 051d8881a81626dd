//! The Raft consensus core: a deterministic state machine with no I/O.
//!
//! Nothing here touches a socket, a disk, a clock or a global random source,
//! so the same code runs in the server and, under thousands of seeded fault
//! schedules, in the simulator (`tests/tests/simulation.rs`).
//!
//! # Driving it: the `Ready` contract
//!
//! A caller owns one [`RawNode`] and feeds it four kinds of input:
//! [`RawNode::tick`] (time passes), [`RawNode::step`] (a message from a peer),
//! [`RawNode::propose`] (a client command) and [`RawNode::read_index`] (a
//! linearizable read). After each batch of inputs it calls
//! [`RawNode::ready`] and handles the result strictly in this order:
//!
//! 1. **persist** the snapshot, entries and hard state (one fsync for all);
//! 2. **send** the messages;
//! 3. **apply** the committed entries to the state machine;
//! 4. **answer** the read states whose index is applied;
//!
//! and then calls [`RawNode::advance`]. Because every message of a `Ready` is
//! sent only after its persistent state is durable, a granted vote or an
//! acknowledged append is never forgotten by a crash (Figure 2: "respond to
//! RPCs only after updating stable storage").
//!
//! # Where kuberaft departs from the paper, and why
//!
//! - **PreVote and CheckQuorum** (thesis §9.6, §6.2) are on by default. A
//!   member first asks whether it could win before it increments its term;
//!   members that heard from a leader within the minimum election timeout
//!   refuse (thesis §4.2.3), and a leader that has not heard from a majority
//!   for an election timeout steps down. A member that was cut off therefore
//!   never disrupts a working cluster when it returns.
//! - **Heartbeats** are AppendEntries without entries whose consistency check
//!   is at the follower's known match index (index 0 when that is compacted),
//!   so they never fail on a healthy follower and carry `min(leader_commit,
//!   match)` of commitment. A follower still being probed gets its next probe
//!   in place of a heartbeat.
//! - **Replication is pipelined**: once a follower's log is known to match,
//!   the leader streams AppendEntries without waiting for answers, up to
//!   `max_inflight_appends`. A pipeline that makes no progress for two
//!   heartbeats falls back to probing one message at a time (lost messages).
//! - **Fast backtracking**: a rejection carries the conflicting term and its
//!   first index (the optimisation sketched at the end of §5.3), so the leader
//!   skips a whole term per round trip instead of one entry.
//! - **Committed prefixes are trusted**: an AppendEntries whose
//!   `prev_log_index` lies below the follower's commit index is checked from
//!   the commit index on, because committed entries are in every later
//!   leader's log (Leader Completeness).
//! - **ReadIndex** (thesis §6.4) numbers heartbeat rounds; any answer to an
//!   AppendEntries of a later round confirms a read, so replication traffic
//!   confirms reads as well as heartbeats do.
//! - **Membership** changes one server at a time (thesis §4.1), with learners;
//!   see [`membership`] for why not joint consensus. Requests from a sender
//!   outside the receiver's configuration are processed, as thesis §4.1
//!   says: AppendEntries (a term has at most one leader) and RequestVote
//!   too, because the receiver may be behind on membership — a member with
//!   an empty disk knows no one at all. Refusing such vote requests once left
//!   a configuration without a quorum of willing voters, leaderless for good
//!   (simulator seed 92385). A stranger's vote request is still refused while
//!   a leader is heard from (CheckQuorum's lease) and by the log comparison;
//!   votes from outside the candidate's own voters are never counted, and
//!   answers (vote and append responses) from non-members are dropped.
//! - **A learner is promoted** only once it has stored the configuration in
//!   force (its match index covers the last configuration change) and is
//!   within `max_promotion_lag` entries of the commit index.
//! - **The leader cannot remove itself**: removing the leader is a transfer of
//!   leadership (§3.10) followed by the removal, proposed by the new leader.
//! - **The log since the last snapshot is kept in memory**, as etcd's
//!   MemoryStorage does; snapshots bound it.
//! - A leader sends its AppendEntries before its own entries are durable
//!   (`Ready::leader_messages`, thesis §10.2.1) so its disk write overlaps
//!   the followers'; it counts itself towards a majority only once its write
//!   is done. Everything else a member sends waits for its disk.
//! - **A snapshot that entries overtake is stopped**: when AppendEntries
//!   that were in flight before the leader chose to send a snapshot bring
//!   the follower past it, the leader goes back to replicating and names the
//!   follower in `Ready::cancelled_snapshots`, so the transport stops
//!   streaming data the follower already holds (a stopped stream is not
//!   reported). The simulator stops such streams in flight the same way.

pub mod config;
mod election;
pub mod errors;
pub mod log;
pub mod membership;
pub mod progress;
#[allow(clippy::module_inception)]
mod raft;
mod raw_node;
mod read_only;
mod replication;
pub mod types;

pub use config::Config;
pub use errors::{ProposeError, StepError};
pub use membership::{ConfChange, ConfChangeError, Member, Membership, Suffrage};
pub use progress::ReplicationState;
pub use raft::RestoredState;
pub use raw_node::{ProgressStatus, RawNode, Ready, Status};
pub use types::{
    Entry, EntryKind, HardState, Index, Message, MessageBody, NodeId, ReadState, Role,
    SnapshotMeta, SoftState, Term,
};

#[cfg(test)]
mod tests;
