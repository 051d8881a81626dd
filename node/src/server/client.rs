//! Requests from clients and administrators to the event loop, and what the
//! loop answers.

use bytes::Bytes;
use kuberaft_proto::kv as kvpb;
use tokio::sync::oneshot;

use crate::raft::{ConfChange, Index, Membership, NodeId, ProposeError};

/// Where the answer to a request goes.
pub type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

pub enum ClientRequest {
    /// A write (a `kv.v1.Command`), answered once it is applied.
    Write {
        command: kvpb::Command,
        reply: Reply<(WriteResult, kvpb::ResponseHeader)>,
    },
    /// A read; linearizable ones wait for ReadIndex (thesis §6.4).
    Read {
        query: ReadQuery,
        linearizable: bool,
        reply: Reply<(ReadResult, kvpb::ResponseHeader)>,
    },
    /// A single-server membership change, answered once it is committed.
    ChangeMembership {
        change: ConfChange,
        reply: Reply<Membership>,
    },
    /// Hands leadership to `to`, or to the most caught-up voter when `None`;
    /// answered once another member leads (or the attempt timed out).
    TransferLeadership {
        to: Option<NodeId>,
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
            ClientError::FailedPrecondition(m) => tonic::Status::failed_precondition(m.clone()),
            ClientError::InvalidArgument(m) => tonic::Status::invalid_argument(m.clone()),
            ClientError::Internal(m) => tonic::Status::internal(m.clone()),
        }
    }
}
