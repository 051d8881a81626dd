//! Who is in the cluster, and how that changes (Chapter 4 of Ongaro's thesis).
//!
//! kuberaft changes membership one server at a time (§4.1), not by joint
//! consensus (§4.3): when the voter sets of two successive configurations
//! differ by at most one member, any majority of the old and any majority of
//! the new overlap, so no two leaders can be elected from them in one term.
//! This needs no intermediate joint configuration, and every change the
//! operator makes (add one pod, remove one pod) is already a single-server
//! change. A new member first joins as a learner, which receives the log but
//! does not vote, and is promoted only once it has caught up, so adding it
//! never leaves the cluster waiting on a member that is far behind (§4.2.1).
//!
//! A new member starts with an empty disk and no configuration. The
//! founding configuration lives only in the bootstrap snapshot (index 0), not
//! in any log entry, so the new member must not build its configuration from
//! entries alone: it refuses AppendEntries until the leader's snapshot — the
//! bootstrap one if the leader has not compacted yet — gives it one.
//!
//! A configuration takes effect on each member as soon as its entry is in that
//! member's log, committed or not (§4.1). Two rules keep this safe: a leader
//! proposes a change only when the previous one is committed, and only once it
//! has committed an entry of its own term (the fix for the bug described in
//! Ongaro's raft-dev post of 2015, "bug in single-server membership changes").

use std::collections::BTreeMap;
use std::fmt;

use super::types::NodeId;

/// Whether a member counts towards majorities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Suffrage {
    Voter,
    Learner,
}

/// One member of the cluster. The core only needs `id` and `suffrage`; names
/// and addresses ride along so every member learns how to reach a new one
/// from the same log entry that adds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub name: String,
    pub peer_addr: String,
    pub client_addr: String,
    pub suffrage: Suffrage,
}

/// A configuration: the members and which of them vote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub members: BTreeMap<NodeId, Member>,
}

/// A single-server membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfChange {
    /// Adds a non-voting member that starts receiving the log.
    AddLearner(Member),
    /// Makes a caught-up learner a voter.
    PromoteLearner { id: NodeId },
    /// Removes a voter or a learner.
    RemoveMember { id: NodeId },
}

/// Why a membership change cannot be applied to a configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    #[error("member {0} is already in the cluster")]
    AlreadyMember(NodeId),
    #[error("member id 0 is reserved; pick an id of 1 or more")]
    ZeroId,
    #[error("member {0} is not in the cluster")]
    NotMember(NodeId),
    #[error("member {0} is already a voter")]
    AlreadyVoter(NodeId),
    #[error("removing member {0} would leave the cluster without voters")]
    LastVoter(NodeId),
}

impl Membership {
    pub fn new(members: impl IntoIterator<Item = Member>) -> Membership {
        Membership {
            members: members.into_iter().map(|m| (m.id, m)).collect(),
        }
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.members
            .get(&id)
            .is_some_and(|m| m.suffrage == Suffrage::Voter)
    }

    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .values()
            .filter(|m| m.suffrage == Suffrage::Voter)
            .map(|m| m.id)
    }

    pub fn voter_count(&self) -> usize {
        self.voters().count()
    }

    /// The size of a majority of the voters (§5.2).
    pub fn quorum(&self) -> usize {
        self.voter_count() / 2 + 1
    }

    /// The configuration that results from `change`, or why there is none.
    pub fn apply(&self, change: &ConfChange) -> Result<Membership, ConfChangeError> {
        let mut next = self.clone();
        match change {
            ConfChange::AddLearner(m) => {
                if m.id == 0 {
                    return Err(ConfChangeError::ZeroId);
                }
                if self.contains(m.id) {
                    return Err(ConfChangeError::AlreadyMember(m.id));
                }
                let mut m = m.clone();
                m.suffrage = Suffrage::Learner;
                next.members.insert(m.id, m);
            }
            ConfChange::PromoteLearner { id } => match next.members.get_mut(id) {
                None => return Err(ConfChangeError::NotMember(*id)),
                Some(m) if m.suffrage == Suffrage::Voter => {
                    return Err(ConfChangeError::AlreadyVoter(*id));
                }
                Some(m) => m.suffrage = Suffrage::Voter,
            },
            ConfChange::RemoveMember { id } => {
                if !self.contains(*id) {
                    return Err(ConfChangeError::NotMember(*id));
                }
                if self.is_voter(*id) && self.voter_count() == 1 {
                    return Err(ConfChangeError::LastVoter(*id));
                }
                next.members.remove(id);
            }
        }
        Ok(next)
    }
}

impl fmt::Display for ConfChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfChange::AddLearner(m) => write!(f, "add learner {} ({})", m.id, m.name),
            ConfChange::PromoteLearner { id } => write!(f, "promote learner {id}"),
            ConfChange::RemoveMember { id } => write!(f, "remove member {id}"),
        }
    }
}
