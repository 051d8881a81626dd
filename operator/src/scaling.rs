//! The scaling state machine: which one membership step to take next, decided from what is
//! observed, never from remembered progress, so a restarted operator picks up where it was.
//!
//! Scaling is a Raft membership change first and a StatefulSet change second, one member at a
//! time (single-server changes, thesis §4.1):
//! - grow: StatefulSet +1 → AddMember(learner) → wait until it has caught up → PromoteMember;
//! - shrink: move leadership away from the highest ordinal if it leads → RemoveMember → StatefulSet −1.
//!
//! The desired size is always `spec.replicas`. A step that would leave the configuration without
//! a healthy quorum is not taken.

use std::collections::BTreeSet;

use crate::observe::{ConfMember, RaftView};
use crate::resources::quorum;

/// A learner is caught up when its log is at most this many entries behind the commit index.
pub const CATCH_UP_SLACK: u64 = 64;

/// The next thing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Voters are exactly the pods `0..spec.replicas`.
    Steady,
    /// No leader is known, so no membership change can be made; wait.
    WaitForLeader,
    /// Set the StatefulSet's replicas.
    SetReplicas(i32),
    /// Add the pod at this ordinal as a learner.
    AddLearner(i32),
    /// The learner at this ordinal is still catching up.
    WaitForCatchUp { ordinal: i32, behind: u64 },
    /// Make the caught-up learner at this ordinal a voter.
    Promote(i32),
    /// The leader (`from`) is the member to be removed: hand leadership to `to`, the most
    /// caught-up healthy voter that stays, first.
    TransferLeadership { from: i32, to: i32 },
    /// Remove the member at this ordinal from the configuration.
    Remove(i32),
    /// The member at this ordinal came back without its data (a new incarnation, refused by
    /// the leader): remove it, restart its pod, and let the grow steps add it back as a new
    /// learner, then voter.
    Replace(i32),
    /// Removing or promoting would leave no healthy quorum; wait for members to recover.
    Blocked {
        ordinal: i32,
        healthy: i32,
        needed: i32,
    },
}

impl Step {
    /// Whether this step means the cluster is changing size.
    pub fn is_scaling(&self) -> bool {
        !matches!(self, Step::Steady | Step::WaitForLeader)
    }
}

/// Decides the next step for `desired` voters, with the StatefulSet at `replicas` pods and the
/// members' view in `raft`. `healthy(ordinal)` tells whether that member is reachable and serving.
pub fn next_step(
    desired: i32,
    replicas: i32,
    raft: &RaftView,
    healthy: impl Fn(i32) -> bool,
) -> Step {
    let Some(configuration) = raft.configuration.as_ref() else {
        return Step::WaitForLeader;
    };
    let member = |ordinal: i32| configuration.iter().find(|m| m.ordinal == ordinal);
    let leader = raft.leader.as_ref().map(|(_, o)| *o);

    // A member that lost its data first: it is down (refused) until it is replaced.
    if let Some(lost) = configuration
        .iter()
        .find(|m| raft.lost_data.contains(&m.ordinal) && Some(m.ordinal) != leader)
    {
        let remaining: Vec<&ConfMember> = configuration
            .iter()
            .filter(|c| c.voter && c.ordinal != lost.ordinal)
            .collect();
        let healthy_remaining = count(remaining.iter().filter(|c| healthy(c.ordinal)).count());
        let needed = quorum(count(remaining.len()));
        if lost.voter && healthy_remaining < needed {
            return Step::Blocked {
                ordinal: lost.ordinal,
                healthy: healthy_remaining,
                needed,
            };
        }
        return Step::Replace(lost.ordinal);
    }

    // Shrink first: members at or above `desired`, highest ordinal first, so that the
    // StatefulSet (which removes its highest ordinal) can follow.
    let extra: BTreeSet<i32> = configuration
        .iter()
        .map(|m| m.ordinal)
        .chain(0..replicas)
        .filter(|o| *o >= desired)
        .collect();
    if let Some(&highest) = extra.iter().next_back() {
        return match member(highest) {
            Some(_) if leader == Some(highest) => {
                // The successor must stay: a voter below `desired`, healthy, most caught up.
                let successor = configuration
                    .iter()
                    .filter(|c| c.voter && c.ordinal < desired && healthy(c.ordinal))
                    .max_by_key(|c| (c.match_index, -c.ordinal))
                    .map(|c| c.ordinal);
                match successor {
                    Some(to) => Step::TransferLeadership { from: highest, to },
                    None => Step::Blocked {
                        ordinal: highest,
                        healthy: 0,
                        needed: 1,
                    },
                }
            }
            Some(m) => {
                let remaining: Vec<&ConfMember> = configuration
                    .iter()
                    .filter(|c| c.voter && c.ordinal != highest)
                    .collect();
                let healthy_remaining =
                    count(remaining.iter().filter(|c| healthy(c.ordinal)).count());
                let needed = quorum(count(remaining.len()));
                if m.voter && healthy_remaining < needed {
                    Step::Blocked {
                        ordinal: highest,
                        healthy: healthy_remaining,
                        needed,
                    }
                } else {
                    Step::Remove(highest)
                }
            }
            None if highest < replicas => Step::SetReplicas(highest),
            None => Step::Steady,
        };
    }

    // Grow: every pod below `replicas` (and `desired`) must be a voter before the next one.
    for ordinal in 0..replicas.min(desired) {
        match member(ordinal) {
            None => return Step::AddLearner(ordinal),
            Some(m) if !m.voter => {
                let behind = raft.commit_index().saturating_sub(m.match_index);
                if !m.recent_active || behind > CATCH_UP_SLACK {
                    return Step::WaitForCatchUp { ordinal, behind };
                }
                let voters: Vec<&ConfMember> = configuration.iter().filter(|c| c.voter).collect();
                let healthy_after = count(voters.iter().filter(|c| healthy(c.ordinal)).count()) + 1;
                let needed = quorum(count(voters.len()) + 1);
                if healthy_after < needed {
                    return Step::Blocked {
                        ordinal,
                        healthy: healthy_after,
                        needed,
                    };
                }
                return Step::Promote(ordinal);
            }
            Some(_) => {}
        }
    }
    if replicas < desired {
        return Step::SetReplicas(replicas + 1);
    }
    Step::Steady
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(leader: i32, members: &[(i32, bool, u64)], commit: u64) -> RaftView {
        let configuration = members
            .iter()
            .map(|&(ordinal, voter, match_index)| ConfMember {
                id: crate::resources::member_id(ordinal),
                ordinal,
                voter,
                match_index,
                recent_active: true,
            })
            .collect();
        RaftView {
            term: 2,
            leader: Some((format!("demo-{leader}"), leader)),
            leader_status: Some(kuberaft_proto::admin::StatusResponse {
                commit_index: commit,
                ..Default::default()
            }),
            configuration: Some(configuration),
            lost_data: Vec::new(),
        }
    }

    fn all_healthy(_: i32) -> bool {
        true
    }

    #[test]
    fn a_steady_cluster_needs_nothing() {
        let v = view(0, &[(0, true, 10), (1, true, 10), (2, true, 10)], 10);
        assert_eq!(next_step(3, 3, &v, all_healthy), Step::Steady);
    }

    #[test]
    fn without_a_leader_nothing_is_changed() {
        assert_eq!(
            next_step(5, 3, &RaftView::default(), all_healthy),
            Step::WaitForLeader
        );
    }

    #[test]
    fn growing_from_three_to_four_goes_statefulset_learner_catch_up_promote() {
        let voters = [(0, true, 10), (1, true, 10), (2, true, 10)];
        assert_eq!(
            next_step(4, 3, &view(0, &voters, 10), all_healthy),
            Step::SetReplicas(4)
        );
        assert_eq!(
            next_step(4, 4, &view(0, &voters, 10), all_healthy),
            Step::AddLearner(3)
        );
        let with_learner = [
            (0, true, 500),
            (1, true, 500),
            (2, true, 500),
            (3, false, 5),
        ];
        assert_eq!(
            next_step(4, 4, &view(0, &with_learner, 500), all_healthy),
            Step::WaitForCatchUp {
                ordinal: 3,
                behind: 495
            }
        );
        let caught_up = [
            (0, true, 500),
            (1, true, 500),
            (2, true, 500),
            (3, false, 490),
        ];
        assert_eq!(
            next_step(4, 4, &view(0, &caught_up, 500), all_healthy),
            Step::Promote(3)
        );
        let done = [
            (0, true, 500),
            (1, true, 500),
            (2, true, 500),
            (3, true, 500),
        ];
        assert_eq!(
            next_step(4, 4, &view(0, &done, 500), all_healthy),
            Step::Steady
        );
    }

    #[test]
    fn shrinking_moves_leadership_off_the_removed_member_then_removes_then_shrinks() {
        let five = [
            (0, true, 9),
            (1, true, 9),
            (2, true, 9),
            (3, true, 9),
            (4, true, 9),
        ];
        assert_eq!(
            next_step(3, 5, &view(4, &five, 9), all_healthy),
            Step::TransferLeadership { from: 4, to: 0 }
        );
        assert_eq!(
            next_step(3, 5, &view(1, &five, 9), all_healthy),
            Step::Remove(4)
        );
        let four = [(0, true, 9), (1, true, 9), (2, true, 9), (3, true, 9)];
        assert_eq!(
            next_step(3, 5, &view(1, &four, 9), all_healthy),
            Step::SetReplicas(4),
            "member 4 is out of the configuration: its pod goes before the next removal"
        );
        assert_eq!(
            next_step(3, 4, &view(1, &four, 9), all_healthy),
            Step::Remove(3)
        );
        let three = [(0, true, 9), (1, true, 9), (2, true, 9)];
        assert_eq!(
            next_step(3, 4, &view(1, &three, 9), all_healthy),
            Step::SetReplicas(3)
        );
        assert_eq!(
            next_step(3, 3, &view(1, &three, 9), all_healthy),
            Step::Steady
        );
    }

    #[test]
    fn leadership_goes_to_the_most_caught_up_member_that_stays() {
        // Shrinking 5 → 3 with demo-4 leading: demo-3 leaves next, so it must not lead; demo-1
        // is the most caught up of those that stay.
        let five = [
            (0, true, 7),
            (1, true, 9),
            (2, true, 8),
            (3, true, 9),
            (4, true, 9),
        ];
        assert_eq!(
            next_step(3, 5, &view(4, &five, 9), all_healthy),
            Step::TransferLeadership { from: 4, to: 1 }
        );
        assert_eq!(
            next_step(3, 5, &view(4, &five, 9), |o| o != 1),
            Step::TransferLeadership { from: 4, to: 2 },
            "an unhealthy member is not a successor"
        );
    }

    #[test]
    fn a_removal_that_would_lose_the_quorum_is_blocked() {
        // 5 voters, 0 and 1 down: removing healthy 4 leaves 2 healthy of 4 (quorum 3).
        let five = [
            (0, true, 9),
            (1, true, 9),
            (2, true, 9),
            (3, true, 9),
            (4, true, 9),
        ];
        let step = next_step(3, 5, &view(2, &five, 9), |o| o >= 2);
        assert_eq!(
            step,
            Step::Blocked {
                ordinal: 4,
                healthy: 2,
                needed: 3
            }
        );
    }

    #[test]
    fn a_member_that_lost_its_data_is_removed_then_added_back_as_a_learner() {
        let mut v = view(0, &[(0, true, 9), (1, true, 9), (2, true, 0)], 9);
        v.lost_data = vec![2];
        assert_eq!(next_step(3, 3, &v, |o| o != 2), Step::Replace(2));
        // With demo-1 down too, removing demo-2 would leave 1 healthy voter of 2.
        assert_eq!(
            next_step(3, 3, &v, |o| o == 0),
            Step::Blocked {
                ordinal: 2,
                healthy: 1,
                needed: 2
            }
        );
        // Removed (the leader forgot its incarnation): the grow steps add it back.
        let removed = view(0, &[(0, true, 9), (1, true, 9)], 9);
        assert_eq!(next_step(3, 3, &removed, |o| o != 2), Step::AddLearner(2));
    }

    #[test]
    fn a_learner_left_over_above_the_desired_size_is_removed() {
        let v = view(
            0,
            &[(0, true, 9), (1, true, 9), (2, true, 9), (3, false, 0)],
            9,
        );
        assert_eq!(next_step(3, 4, &v, |o| o < 3), Step::Remove(3));
    }
}
