//! The checker's own model of cluster configurations, independent of the
//! core's `Membership`, and the question membership safety comes down to:
//! can two majorities be disjoint?
//!
//! # What the simulator checks about membership, and why it is enough
//!
//! Raft's safety rests on one fact: any two majorities that decide something
//! (elect a leader, commit an entry) share a member, and that member carries
//! what the first decided into the second. With a fixed membership that is
//! arithmetic. With membership changes it holds only if the configurations
//! used for decisions stay close to each other. kuberaft changes one server
//! at a time (§4.1 of Ongaro's thesis): voter sets that differ by one member
//! always have overlapping majorities ([`majorities_always_intersect`]; if
//! `B = A + {x}`, a majority of B holds at least `|A|/2` members of A, and a
//! majority of A holds more than `|A|/2`, so together they need more than `|A|`
//! members of A). Voter sets two changes apart may not: `{1,2,3,4} + {5}`
//! and `{1,2,3,4} - {4}` have the disjoint majorities `{3,4,5}` and `{1,2}`.
//! That is the bug of single-server changes Ongaro described on raft-dev in
//! 2015: a leader that changes the configuration before committing an entry
//! of its own term can decide with a majority that misses a concurrent
//! leader's.
//!
//! So the checker tracks `G`, the configuration of the latest committed
//! membership entry (committed entries are final, so `G` is well defined),
//! and asserts, at every decision:
//!
//! - **M1, elections**: a new leader's configuration is the one its own log
//!   defines (the core agrees with this model), its log holds at most one
//!   membership entry above the commit index, and so its voters differ from
//!   `G`'s by at most one member.
//! - **M2, commits**: whenever a leader advances its commit index, every
//!   majority of its voters intersects every majority of `G`'s voters (taken
//!   before that commit). In the 2015 bug, the stale leader's commit under
//!   `G + {5}` after `G - {4}` was committed is exactly what M2 rejects.
//! - **M3, proposals**: a leader appends a membership entry only when the
//!   previous one in its log is committed and an entry of its own term is
//!   committed (the 2015 fix).
//!
//! Why this implies that no two disjoint majorities decide: by M3, `G`
//! changes one server at a time, and each change is made by a leader that had
//! already committed in its term, which means a majority of the configuration
//! before the change had accepted that leader's term and so refuses any older
//! leader from then on. By M1 and M2, every election and every commit is made
//! by a majority that overlaps every majority of `G` at that moment. A
//! decision of term `T1` and a later election of term `T2` therefore either
//! see the same `G` (their majorities both overlap `G`'s and the member in
//! common with the deciding majority has moved to a later term or holds the
//! decision), or `G` moved in between, and each single step moved it through
//! a majority that already held term `T1`'s decision. The direct properties
//! (Leader Completeness, State Machine Safety) are checked as well, so a
//! violation that slipped past this reasoning would still be caught; these
//! checks name the cause.

use std::collections::BTreeSet;

use kuberaft_node::raft::{ConfChange, Membership, NodeId, Suffrage};

/// Who votes and who only listens, as the checker understands it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigModel {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

impl ConfigModel {
    pub fn of(m: &Membership) -> ConfigModel {
        let mut c = ConfigModel::default();
        for (id, member) in &m.members {
            match member.suffrage {
                Suffrage::Voter => c.voters.insert(*id),
                Suffrage::Learner => c.learners.insert(*id),
            };
        }
        c
    }

    /// The configuration after `change`, or `None` when the change does not
    /// apply (every member then skips it alike).
    pub fn apply(&self, change: &ConfChange) -> Option<ConfigModel> {
        let mut next = self.clone();
        match change {
            ConfChange::AddLearner(m) => {
                if m.id == 0 || self.contains(m.id) {
                    return None;
                }
                next.learners.insert(m.id);
            }
            ConfChange::PromoteLearner { id } => {
                if !next.learners.remove(id) {
                    return None;
                }
                next.voters.insert(*id);
            }
            ConfChange::RemoveMember { id } => {
                if self.voters.contains(id) && self.voters.len() == 1 {
                    return None;
                }
                if !next.voters.remove(id) && !next.learners.remove(id) {
                    return None;
                }
            }
        }
        Some(next)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }
}

fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// Whether every majority of `a` shares a member with every majority of `b`.
/// Two majorities avoid each other best by taking members outside the other
/// set first; they must intersect when what each is forced to take from the
/// common part does not fit in it side by side.
pub fn majorities_always_intersect(a: &BTreeSet<NodeId>, b: &BTreeSet<NodeId>) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    let common = a.intersection(b).count();
    let only_a = a.len() - common;
    let only_b = b.len() - common;
    let forced_a = majority(a.len()).saturating_sub(only_a);
    let forced_b = majority(b.len()).saturating_sub(only_b);
    forced_a + forced_b > common
}

/// How many voters are in one set but not the other.
pub fn voter_distance(a: &BTreeSet<NodeId>, b: &BTreeSet<NodeId>) -> usize {
    a.symmetric_difference(b).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn one_server_apart_always_overlaps() {
        for n in 1..=9u64 {
            let a: BTreeSet<NodeId> = (1..=n).collect();
            let mut plus = a.clone();
            plus.insert(100);
            assert!(majorities_always_intersect(&a, &plus), "n={n} add");
            if n > 1 {
                let mut minus = a.clone();
                minus.remove(&1);
                assert!(majorities_always_intersect(&a, &minus), "n={n} remove");
            }
        }
    }

    #[test]
    fn the_single_server_bug_configurations_can_be_disjoint() {
        // Ongaro, raft-dev 2015: {1,2,3,4} + {5} versus {1,2,3,4} - {4}.
        assert!(!majorities_always_intersect(
            &set(&[1, 2, 3, 4, 5]),
            &set(&[1, 2, 3])
        ));
        assert!(!majorities_always_intersect(&set(&[1, 2]), &set(&[3, 4])));
        assert!(majorities_always_intersect(
            &set(&[1, 2, 3]),
            &set(&[1, 2, 3])
        ));
    }
}
