//! Why the core refused an input. Nothing that is refused changes any state.

use super::membership::ConfChangeError;
use super::types::{Index, NodeId};

/// A message the core dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("message addressed to member {to} arrived at member {id}")]
    WrongRecipient { to: NodeId, id: NodeId },
    #[error("message claims to come from member {from}, which cannot send it")]
    BadSender { from: NodeId },
    #[error("vote or answer from {from}, which is not a member of this cluster's configuration")]
    UnknownSender { from: NodeId },
    #[error(
        "vote request from {from} ignored: leader {leader_id} was heard from within the minimum election timeout"
    )]
    InLease { from: NodeId, leader_id: NodeId },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("AppendEntries from {from} conflicts with committed entry {index}; refusing it")]
    ConflictsWithCommitted { from: NodeId, index: Index },
}

impl StepError {
    /// Whether the drop is part of normal operation (worth a debug line) or a
    /// sign of a bug or a forged message (worth a warning).
    pub fn is_routine(&self) -> bool {
        matches!(
            self,
            StepError::InLease { .. } | StepError::UnknownSender { .. }
        )
    }
}

/// Why a proposal, read, membership change or transfer was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("this member is not the leader (leader: {})", leader_hint(*.leader_id))]
    NotLeader { leader_id: NodeId },
    #[error("leadership is being transferred to member {to}; retry shortly")]
    TransferInProgress { to: NodeId },
    #[error("a membership change (entry {index}) is not committed yet; one change at a time")]
    ConfChangePending { index: Index },
    #[error("the leader cannot remove itself; transfer leadership first")]
    LeaderRemoval,
    #[error(
        "learner {id} has not caught up (match index {match_index}, commit index {commit_index}); retry later"
    )]
    LearnerNotCaughtUp {
        id: NodeId,
        match_index: Index,
        commit_index: Index,
    },
    #[error("member {id} is not a voter")]
    NotVoter { id: NodeId },
    #[error("{0}")]
    InvalidConfChange(ConfChangeError),
}

fn leader_hint(id: NodeId) -> String {
    if id == 0 {
        "unknown".to_string()
    } else {
        id.to_string()
    }
}
