//! What the event loop is asked to do. Everything that touches the Raft core
//! arrives here as an `Event`, through one channel, so the loop is the core's
//! only owner and needs no locks.

use std::path::PathBuf;

use tokio::sync::oneshot;

use crate::raft::{self, NodeId, Term};

/// The answer to a peer's request: the core's answer message (none for
/// TimeoutNow) and the term at the time, or a refusal.
pub type PeerAnswer = Result<(Option<raft::Message>, Term), tonic::Status>;

pub enum Event {
    /// Time passes (one tick of the core).
    Tick,
    /// A request from a peer. The answer is sent after the state it promises
    /// (a vote, appended entries) is durable.
    PeerRequest {
        msg: raft::Message,
        reply: oneshot::Sender<PeerAnswer>,
    },
    /// An answer to one of our own requests.
    PeerMessage(raft::Message),
    /// A snapshot arrived completely from the leader and is in `file`.
    SnapshotReceived {
        msg: raft::Message,
        file: PathBuf,
        reply: oneshot::Sender<PeerAnswer>,
    },
    /// Streaming a snapshot to `to` finished or failed.
    SnapshotSent { to: NodeId, ok: bool },
    /// A snapshot of our own state machine was written (in the background).
    SnapshotWritten {
        meta: raft::SnapshotMeta,
        result: Result<crate::kv::snapshot_file::SnapshotFile, String>,
    },
    /// First sight of a peer's incarnation (to remember durably), or `None`
    /// to forget a peer that left.
    PeerIncarnation {
        peer: NodeId,
        incarnation: Option<u64>,
    },
    /// A peer refused us: our data dir is not the one it knew. Stop.
    Fenced(String),
    /// Work from a client or administrator.
    Client(super::client::ClientRequest),
    /// SIGTERM: hand leadership over, then stop.
    Shutdown,
    /// Cut this member off from its peers (true) or heal it (false): peer
    /// traffic is dropped both ways. Only reachable with `--ui-actions`.
    Isolate(bool),
}
