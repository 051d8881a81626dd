//! Requests from clients and administrators to the event loop, and what the
//! loop answers.

use bytes::Bytes;
use kuberaft_proto::kv as kvpb;
use tokio::sync::{mpsc, oneshot};

use super::deadline::Deadline;
use super::event::Event;
use crate::raft::{ConfChange, Index, Membership, NodeId, ProposeError};

/// Where the answer to a request goes.
pub type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

/// Whether nobody waits for this answer any more: the client's deadline passed, or the
/// request's caller hung up (its gRPC call was cancelled). Such a request is never proposed.
pub fn abandoned<T>(reply: &Reply<T>, deadline: &Deadline) -> bool {
    reply.is_closed() || deadline.passed()
}

/// What a client is told when its deadline passed after the event loop had its request: it
/// may have been carried out.
pub const DEADLINE_MESSAGE: &str =
    "deadline exceeded before the member answered; the outcome is unknown";
/// What a client is told when its deadline passed before its request was proposed (or read):
/// it was not carried out, and never will be.
pub const NOT_CARRIED_OUT: &str =
    "deadline exceeded before the request was carried out; it was not, and will not be";

/// Hands a request to the event loop and waits for the answer until the client's deadline.
/// The event loop alone decides whether a request is still wanted (`abandoned`), so one place
/// refuses late requests and counts them.
pub async fn ask<T>(
    events: &mpsc::UnboundedSender<Event>,
    deadline: Deadline,
    make: impl FnOnce(Reply<T>) -> ClientRequest,
) -> Result<T, ClientError> {
    let (tx, rx) = oneshot::channel();
    events.send(Event::Client(make(tx))).map_err(|_| {
        ClientError::Unavailable("member is shutting down; use another member".into())
    })?;
    match tokio::time::timeout(deadline.remaining(), rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(ClientError::Unavailable(
            "member stopped before answering; the outcome is unknown".into(),
        )),
        Err(_) => Err(ClientError::DeadlineExceeded(DEADLINE_MESSAGE.into())),
    }
}

pub enum ClientRequest {
    /// A write (a `kv.v1.Command`), answered once it is applied.
    Write {
        command: kvpb::Command,
        deadline: Deadline,
        reply: Reply<(WriteResult, kvpb::ResponseHeader)>,
    },
    /// A read; linearizable ones wait for ReadIndex (thesis §6.4).
    Read {
        query: ReadQuery,
        linearizable: bool,
        deadline: Deadline,
        reply: Reply<(ReadResult, kvpb::ResponseHeader)>,
    },
    /// A single-server membership change, answered once it is committed.
    ChangeMembership {
        change: ConfChange,
        deadline: Deadline,
        reply: Reply<Membership>,
    },
    /// Hands leadership to `to`, or to the most caught-up voter when `None`;
    /// answered once another member leads (or the attempt timed out).
    TransferLeadership {
        to: Option<NodeId>,
        deadline: Deadline,
        reply: Reply<(NodeId, u64)>,
    },
    /// Takes a snapshot now and compacts the log.
    Snapshot {
        reply: Reply<kuberaft_proto::admin::SnapshotResponse>,
    },
}

pub enum ReadQuery {
    Get {
        key: Bytes,
    },
    Scan {
        prefix: Bytes,
        start_after: Bytes,
        limit: usize,
    },
}

pub enum ReadResult {
    Get(Option<kvpb::KeyValue>),
    Scan {
        kvs: Vec<kvpb::KeyValue>,
        more: bool,
    },
}

/// The outcome of an applied write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteResult {
    Put {
        index: Index,
    },
    Delete {
        index: Index,
        existed: bool,
    },
    CompareAndSwap {
        index: Index,
        succeeded: bool,
        current: Option<Bytes>,
    },
}

/// Why a request was not carried out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Not the leader; the request should go to `leader_addr` (client port)
    /// if one is known.
    #[error("member is not the leader")]
    NotLeader {
        leader_id: NodeId,
        leader_addr: Option<String>,
    },
    #[error("{0}")]
    Unavailable(String),
    /// The client's deadline passed.
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Internal(String),
}

impl ClientError {
    /// Maps the core's refusal; `leader_addr` resolves a leader id to its
    /// client address.
    pub fn from_propose(
        e: ProposeError,
        leader_addr: impl Fn(NodeId) -> Option<String>,
    ) -> ClientError {
        match e {
            ProposeError::NotLeader { leader_id } => ClientError::NotLeader {
                leader_id,
                leader_addr: leader_addr(leader_id),
            },
            ProposeError::TransferInProgress { .. } => ClientError::Unavailable(e.to_string()),
            ProposeError::ConfChangePending { .. } | ProposeError::LearnerNotCaughtUp { .. } => {
                ClientError::Unavailable(e.to_string())
            }
            ProposeError::LeaderRemoval
            | ProposeError::NotVoter { .. }
            | ProposeError::InvalidConfChange(_) => ClientError::FailedPrecondition(e.to_string()),
        }
    }

    pub fn to_status(&self) -> tonic::Status {
        match self {
            ClientError::NotLeader { leader_id: 0, .. } => tonic::Status::unavailable(
                "no leader: the cluster is electing one or has lost its majority; retry shortly",
            ),
            ClientError::NotLeader { leader_id, .. } => tonic::Status::unavailable(format!(
                "member is not the leader (leader: member {leader_id}) and cannot forward this request; send it to the leader"
            )),
            ClientError::Unavailable(m) => tonic::Status::unavailable(m.clone()),
            ClientError::DeadlineExceeded(m) => tonic::Status::deadline_exceeded(m.clone()),
            ClientError::FailedPrecondition(m) => tonic::Status::failed_precondition(m.clone()),
            ClientError::InvalidArgument(m) => tonic::Status::invalid_argument(m.clone()),
            ClientError::Internal(m) => tonic::Status::internal(m.clone()),
        }
    }
}
