//! Administrative actions during a run, made the way the Kubernetes operator
//! makes them: membership changes one server at a time (add a new member as
//! a learner, promote it once it has caught up, remove a voter), and
//! leadership transfers.
//!
//! The rules keep a cluster of `n` configured members between `n` and `n + 1`
//! voters, so it can always make progress once everything heals: grow by one
//! (add a learner, promote it), then shrink back by one (remove a random
//! voter; when that is the leader, hand leadership away first and remove it
//! on a later turn, because a leader cannot remove itself). A learner that
//! does not catch up may be removed instead. New members get fresh ids, as
//! new pods of a StatefulSet that was scaled down and up do not reuse state.

use kuberaft_node::raft::{ConfChange, Membership, NodeId, ProposeError, Suffrage};
use rand::RngExt;

use super::checker::Violation;
use super::cluster::{Cluster, member};
use super::disk::Disk;
use super::trace::Event;

pub struct Operator {
    /// The configured cluster size.
    size: usize,
    next_id: NodeId,
    /// New members started so far, and at most.
    added: u32,
    max_added: u32,
}

impl Operator {
    pub fn new(size: usize, max_added: u32) -> Operator {
        Operator {
            size,
            next_id: size as NodeId + 1,
            added: 0,
            max_added,
        }
    }

    /// Takes the next step of the membership plan on the current leader.
    pub fn change_membership(&mut self, c: &mut Cluster) -> Result<(), Violation> {
        let Some(leader) = c.leader().filter(|l| c.is_responsive(*l)) else {
            return Ok(());
        };
        let membership = c.nodes[&leader].raw().expect("up").membership().clone();
        let voters: Vec<NodeId> = membership.voters().collect();
        let learner = membership
            .members
            .values()
            .find(|m| m.suffrage == Suffrage::Learner)
            .map(|m| m.id);
        let change = if let Some(id) = learner {
            if c.rng.random_bool(0.85) {
                ConfChange::PromoteLearner { id }
            } else {
                ConfChange::RemoveMember { id }
            }
        } else if voters.len() > self.size {
            let id = voters[c.rng.random_range(0..voters.len())];
            if id == leader {
                let others: Vec<NodeId> = voters.iter().copied().filter(|v| *v != leader).collect();
                let to = others[c.rng.random_range(0..others.len())];
                return self.transfer(c, leader, to);
            }
            ConfChange::RemoveMember { id }
        } else if self.added < self.max_added {
            ConfChange::AddLearner(member(self.next_id, Suffrage::Learner))
        } else {
            return Ok(());
        };
        let node = c.nodes.get_mut(&leader).expect("leader");
        match node.propose_conf_change(change.clone(), &mut c.ck)? {
            Ok(_) => {
                if let ConfChange::AddLearner(m) = change {
                    // The pod starts with an empty disk; it learns the
                    // configuration from the leader.
                    self.next_id += 1;
                    self.added += 1;
                    c.add_node(m.id, Disk::new(Membership::default()))?;
                    c.ck.event(Event::MemberStarted { node: m.id });
                }
            }
            Err(
                ProposeError::ConfChangePending { .. }
                | ProposeError::LearnerNotCaughtUp { .. }
                | ProposeError::TransferInProgress { .. }
                | ProposeError::NotLeader { .. },
            ) => {}
            Err(e) => {
                return Err(Violation(format!(
                    "leader {leader} refuses \"{change}\", which the operator's rules allow: {e}"
                )));
            }
        }
        Ok(())
    }

    /// Hands leadership from the current leader to a random other voter.
    pub fn transfer_leadership(&mut self, c: &mut Cluster) -> Result<(), Violation> {
        let Some(leader) = c.leader().filter(|l| c.is_responsive(*l)) else {
            return Ok(());
        };
        let voters: Vec<NodeId> = c.nodes[&leader]
            .raw()
            .expect("up")
            .membership()
            .voters()
            .filter(|v| *v != leader)
            .collect();
        if voters.is_empty() {
            return Ok(());
        }
        let to = voters[c.rng.random_range(0..voters.len())];
        self.transfer(c, leader, to)
    }

    fn transfer(&mut self, c: &mut Cluster, leader: NodeId, to: NodeId) -> Result<(), Violation> {
        let node = c.nodes.get_mut(&leader).expect("leader");
        match node.transfer_leader(to, &mut c.ck)? {
            Ok(()) | Err(ProposeError::NotLeader { .. }) => Ok(()),
            Err(e) => Err(Violation(format!(
                "leader {leader} refuses to hand leadership to voter {to}: {e}"
            ))),
        }
    }
}
