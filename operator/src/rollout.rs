//! Raft-aware rolling updates: which one pod to restart next when the StatefulSet's pod template
//! changed (image, timeouts, TLS, resources…), decided from what is observed, never from
//! remembered progress, so a restarted operator carries on where the last one was.
//!
//! The StatefulSet's update strategy is `OnDelete`: its controller makes a deleted pod again from
//! the new template, and the operator decides which pod goes and when. The StatefulSet's own
//! `RollingUpdate` on a `Parallel` StatefulSet does not wait for a restarted member to serve
//! again and may restart the leader first, once per member: up to N−1 elections. Here:
//! - one member at a time, and only while every voter serves and has caught up with the commit
//!   index, so a restart never costs the quorum more than the member restarted;
//! - followers first (highest ordinal first, as the StatefulSet would);
//! - the leader last, after the operator hands leadership to the most caught-up updated voter:
//!   one leadership change for the whole update instead of an election per restarted leader;
//! - a member on the new revision that does not serve again stops the update, and says why.
//!
//! Members that are not serving anyway (crash-looping on a bad image the user has since fixed,
//! say) are restarted without waiting: that costs the quorum nothing, and it is how a fix reaches
//! a cluster that a bad template broke.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::observe::{ConfMember, PodState, RaftView, StatefulSetState};
use crate::scaling::CATCH_UP_SLACK;

/// A member on the new revision that has not served for this long since its pod was made stops
/// the update with `Degraded`/`UpdateStalled` (a container that cannot start says so at once).
/// Longer than the startup probe's allowance for opening a data dir, plus a catch-up.
pub const STALL_AFTER: Duration = Duration::from_secs(10 * 60);

/// The next thing a rolling update needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// Every pod runs the StatefulSet's current template (or there is no pod yet).
    UpToDate,
    /// The StatefulSet controller has not yet seen the latest template, so which pods are out
    /// of date is not known yet.
    Pending,
    /// Delete this pod; the StatefulSet makes it again from the new template. `serving`: it was
    /// a serving member (false for one that was down anyway).
    Restart { ordinal: i32, serving: bool },
    /// Restart every one of these pods at once: no member serves, and these cannot start (or
    /// have not come up for long) on the old template.
    RestartAll(Vec<i32>),
    /// The leader is the last member on the old template: hand leadership to `to` first.
    TransferLeadership { from: i32, to: i32 },
    /// Wait until this member serves and has caught up before the next restart.
    WaitForMember { ordinal: i32, why: String },
    /// A member on the new template does not serve: the update stops here until it does (or
    /// until the template changes again).
    Stalled { ordinal: i32, why: String },
}

impl Rollout {
    /// Whether an update is under way.
    pub fn in_progress(&self) -> bool {
        *self != Rollout::UpToDate
    }
}

/// What the decision is made from.
pub struct RolloutInput<'a> {
    pub statefulset: Option<&'a StatefulSetState>,
    pub pods: &'a [PodState],
    pub raft: &'a RaftView,
    /// Whether the member at this ordinal is reachable and serving.
    pub healthy: &'a (dyn Fn(i32) -> bool + Sync),
    pub now: Timestamp,
}

/// How many of the StatefulSet's pods run its current template (None until it says which).
pub fn updated_pods(statefulset: Option<&StatefulSetState>, pods: &[PodState]) -> Option<i32> {
    let sts = statefulset?;
    let revision = sts.update_revision.as_deref()?;
    let n = pods
        .iter()
        .filter(|p| p.ordinal < sts.replicas && p.revision.as_deref() == Some(revision))
        .count();
    Some(i32::try_from(n).unwrap_or(i32::MAX))
}

/// Decides the next step of the rolling update. Call it only when no membership change is
/// under way: scaling goes first, and its new pods are made from the new template anyway.
pub fn next_rollout(input: &RolloutInput<'_>) -> Rollout {
    let Some(sts) = input.statefulset else {
        return Rollout::UpToDate;
    };
    let replicas = sts.replicas;
    let Some(revision) = sts.update_revision.as_deref() else {
        // A template the StatefulSet controller has not seen yet: pods may be out of date.
        if input.pods.is_empty() {
            return Rollout::UpToDate;
        }
        return Rollout::Pending;
    };
    let pods: Vec<&PodState> = input.pods.iter().filter(|p| p.ordinal < replicas).collect();
    let updated = |p: &PodState| p.revision.as_deref() == Some(revision);
    let serving = |p: &PodState| p.ready && (input.healthy)(p.ordinal);
    let outdated: Vec<&PodState> = pods.iter().copied().filter(|p| !updated(p)).collect();
    if outdated.is_empty() {
        return Rollout::UpToDate;
    }
    if let Some(p) = pods.iter().find(|p| p.terminating) {
        return wait(p.ordinal, "its pod is being deleted");
    }
    // Missing pods are being made by the StatefulSet controller (from the new template).
    if let Some(o) = (0..replicas).find(|o| !pods.iter().any(|p| p.ordinal == *o)) {
        return wait(o, "its pod is being made");
    }

    // Nothing serves: there is no quorum to protect, and a fix of the template must reach the
    // members that cannot start (or never come up) on the old one. Members merely between two
    // leaders are not touched: an election takes a second, not a restart.
    if !pods.iter().any(|p| serving(p)) {
        let stuck: Vec<i32> = outdated
            .iter()
            .filter(|p| !p.ready && (p.problem.is_some() || age(p, input.now) >= STALL_AFTER))
            .map(|p| p.ordinal)
            .collect();
        if stuck.is_empty() {
            return wait(outdated[0].ordinal, "no member serves yet");
        }
        return Rollout::RestartAll(stuck);
    }

    // A member already on the new template that does not serve: the new template may be bad.
    // Nothing more is restarted until it serves.
    if let Some(p) = pods.iter().find(|p| updated(p) && !serving(p)) {
        return stalled_or_waiting(p, input.now);
    }

    // Down anyway on the old template (e.g. crash-looping on a bad image since fixed).
    if let Some(p) = outdated.iter().rev().find(|p| !serving(p)) {
        return Rollout::Restart {
            ordinal: p.ordinal,
            serving: false,
        };
    }

    let Some(configuration) = input.raft.configuration.as_deref() else {
        return wait(outdated[0].ordinal, "no leader is known");
    };
    let commit = input.raft.commit_index();
    if let Some((m, behind)) = configuration
        .iter()
        .filter(|m| m.voter)
        .map(|m| (m, commit.saturating_sub(m.match_index)))
        .find(|(m, behind)| !m.recent_active || *behind > CATCH_UP_SLACK)
    {
        return wait(
            m.ordinal,
            &format!("it is {behind} entries behind the commit index {commit}"),
        );
    }
    let leader = input.raft.leader.as_ref().map(|(_, o)| *o);

    // Followers first, the highest ordinal first.
    if let Some(p) = outdated.iter().rev().find(|p| Some(p.ordinal) != leader) {
        return Rollout::Restart {
            ordinal: p.ordinal,
            serving: true,
        };
    }
    // Only the leader is left on the old template.
    let Some(from) = leader else {
        return wait(outdated[0].ordinal, "no leader is known");
    };
    match successor(configuration, from, &pods, &updated) {
        Some(to) => Rollout::TransferLeadership { from, to },
        // A lone voter has no one to hand over to: its restart is the update.
        None if configuration.iter().filter(|m| m.voter).count() <= 1 => Rollout::Restart {
            ordinal: from,
            serving: true,
        },
        None => wait(
            from,
            "no voter on the new template can take over leadership",
        ),
    }
}

/// The voter on the new template with the most of the log (lowest ordinal on a tie).
fn successor(
    configuration: &[ConfMember],
    leader: i32,
    pods: &[&PodState],
    updated: &dyn Fn(&PodState) -> bool,
) -> Option<i32> {
    configuration
        .iter()
        .filter(|m| m.voter && m.ordinal != leader)
        .filter(|m| {
            pods.iter()
                .any(|p| p.ordinal == m.ordinal && updated(p) && p.ready)
        })
        .max_by_key(|m| (m.match_index, -m.ordinal))
        .map(|m| m.ordinal)
}

fn wait(ordinal: i32, why: &str) -> Rollout {
    Rollout::WaitForMember {
        ordinal,
        why: why.to_string(),
    }
}

fn stalled_or_waiting(p: &PodState, now: Timestamp) -> Rollout {
    if let Some(problem) = &p.problem {
        return Rollout::Stalled {
            ordinal: p.ordinal,
            why: problem.clone(),
        };
    }
    let age = age(p, now);
    if age >= STALL_AFTER {
        return Rollout::Stalled {
            ordinal: p.ordinal,
            why: format!(
                "it has not served in the {} minutes since its pod was made",
                age.as_secs() / 60
            ),
        };
    }
    wait(
        p.ordinal,
        if p.ready {
            "it has not caught up with the leader yet"
        } else {
            "its pod is not ready yet"
        },
    )
}

/// How long ago the pod was made (zero if unknown or in the future).
fn age(p: &PodState, now: Timestamp) -> Duration {
    p.created
        .and_then(|c| Duration::try_from(now.duration_since(c)).ok())
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::ConfMember;

    const NEW: &str = "demo-7c9";
    const OLD: &str = "demo-5b1";

    fn pod(ordinal: i32, revision: &str) -> PodState {
        PodState {
            name: format!("demo-{ordinal}"),
            ordinal,
            ready: true,
            leader_label: false,
            problem: None,
            uid: Some(format!("uid-{ordinal}")),
            revision: Some(revision.to_string()),
            terminating: false,
            created: Some(Timestamp::UNIX_EPOCH),
        }
    }

    fn sts(replicas: i32) -> StatefulSetState {
        StatefulSetState {
            replicas,
            update_revision: Some(NEW.to_string()),
            ..StatefulSetState::default()
        }
    }

    /// A leader at `leader` with voters `0..n` at the given match indexes.
    fn raft(leader: i32, matched: &[u64], commit: u64) -> RaftView {
        RaftView {
            term: 4,
            leader: Some((format!("demo-{leader}"), leader)),
            leader_status: Some(kuberaft_proto::admin::StatusResponse {
                commit_index: commit,
                ..Default::default()
            }),
            lost_data: Vec::new(),
            configuration: Some(
                matched
                    .iter()
                    .zip(0..)
                    .map(|(&match_index, ordinal)| ConfMember {
                        id: crate::resources::member_id(ordinal),
                        ordinal,
                        voter: true,
                        match_index,
                        recent_active: true,
                    })
                    .collect(),
            ),
        }
    }

    fn decide(
        sts: &StatefulSetState,
        pods: &[PodState],
        raft: &RaftView,
        healthy: impl Fn(i32) -> bool + Sync,
    ) -> Rollout {
        next_rollout(&RolloutInput {
            statefulset: Some(sts),
            pods,
            raft,
            healthy: &healthy,
            now: Timestamp::UNIX_EPOCH,
        })
    }

    fn all(_: i32) -> bool {
        true
    }

    #[test]
    fn followers_go_first_highest_ordinal_first_and_the_leader_last_after_a_transfer() {
        let r = raft(1, &[9, 9, 9], 9);
        let s = sts(3);
        let mut pods = vec![pod(0, OLD), pod(1, OLD), pod(2, OLD)];
        let mut taken = Vec::new();
        loop {
            let step = decide(&s, &pods, &r, all);
            match &step {
                Rollout::Restart { ordinal, serving } => {
                    assert!(serving);
                    pods[*ordinal as usize] = pod(*ordinal, NEW);
                }
                Rollout::TransferLeadership { .. } => {
                    taken.push(step);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
            taken.push(step);
        }
        assert_eq!(
            taken,
            vec![
                Rollout::Restart {
                    ordinal: 2,
                    serving: true
                },
                Rollout::Restart {
                    ordinal: 0,
                    serving: true
                },
                Rollout::TransferLeadership { from: 1, to: 0 },
            ]
        );
        // Leadership moved to demo-0: the old leader is now a follower on the old template.
        assert_eq!(
            decide(&s, &pods, &raft(0, &[9, 9, 9], 9), all),
            Rollout::Restart {
                ordinal: 1,
                serving: true
            }
        );
        pods[1] = pod(1, NEW);
        assert_eq!(
            decide(&s, &pods, &raft(0, &[9, 9, 9], 9), all),
            Rollout::UpToDate
        );
    }

    #[test]
    fn leadership_goes_to_the_updated_voter_with_the_most_of_the_log() {
        let pods = [pod(0, NEW), pod(1, NEW), pod(2, OLD)];
        assert_eq!(
            decide(&sts(3), &pods, &raft(2, &[40, 41, 41], 41), all),
            Rollout::TransferLeadership { from: 2, to: 1 }
        );
    }

    #[test]
    fn a_restarted_member_must_serve_and_catch_up_before_the_next_restart() {
        let s = sts(3);
        let pods = [pod(0, OLD), pod(1, OLD), pod(2, NEW)];
        // demo-2 is back but not serving yet.
        assert_eq!(
            decide(&s, &pods, &raft(0, &[9, 9, 9], 9), |o| o != 2),
            Rollout::WaitForMember {
                ordinal: 2,
                why: "it has not caught up with the leader yet".into()
            }
        );
        // Serving by its own account, but the leader sees it far behind.
        let step = decide(&s, &pods, &raft(0, &[500, 500, 100], 500), all);
        assert!(
            matches!(step, Rollout::WaitForMember { ordinal: 2, .. }),
            "{step:?}"
        );
        assert_eq!(
            decide(&s, &pods, &raft(0, &[500, 500, 480], 500), all),
            Rollout::Restart {
                ordinal: 1,
                serving: true
            }
        );
    }

    #[test]
    fn an_updated_member_that_cannot_start_stops_the_update_and_says_why() {
        let s = sts(3);
        let mut broken = pod(2, NEW);
        broken.ready = false;
        broken.problem = Some("CrashLoopBackOff: back-off 40s".into());
        let pods = [pod(0, OLD), pod(1, OLD), broken];
        assert_eq!(
            decide(&s, &pods, &raft(0, &[9, 9, 0], 9), |o| o != 2),
            Rollout::Stalled {
                ordinal: 2,
                why: "CrashLoopBackOff: back-off 40s".into()
            }
        );
        // No problem reported, but not serving for longer than STALL_AFTER.
        let mut slow = pod(2, NEW);
        slow.ready = false;
        let pods = [pod(0, OLD), pod(1, OLD), slow];
        let later = Timestamp::UNIX_EPOCH + STALL_AFTER;
        let step = next_rollout(&RolloutInput {
            statefulset: Some(&s),
            pods: &pods,
            raft: &raft(0, &[9, 9, 0], 9),
            healthy: &|o| o != 2,
            now: later,
        });
        assert!(
            matches!(step, Rollout::Stalled { ordinal: 2, .. }),
            "{step:?}"
        );
    }

    #[test]
    fn a_fixed_template_reaches_a_member_that_was_down_on_the_old_one_at_once() {
        // demo-2 crash-loops on a bad image; the user fixed spec.image, so it is outdated now.
        let mut broken = pod(2, OLD);
        broken.ready = false;
        broken.problem = Some("CrashLoopBackOff".into());
        let pods = [pod(0, OLD), pod(1, OLD), broken];
        assert_eq!(
            decide(&sts(3), &pods, &raft(0, &[9, 9, 0], 9), |o| o != 2),
            Rollout::Restart {
                ordinal: 2,
                serving: false
            }
        );
    }

    #[test]
    fn when_no_member_serves_only_members_that_cannot_start_are_restarted() {
        let no_leader = RaftView::default();
        // Between two leaders: nobody serves for a moment; nobody is restarted.
        let pods = [pod(0, OLD), pod(1, OLD), pod(2, OLD)];
        let step = decide(&sts(3), &pods, &no_leader, |_| false);
        assert!(matches!(step, Rollout::WaitForMember { .. }), "{step:?}");
        // A cluster created with a bad image: every pod crash-loops; the fix goes to all.
        let crashing: Vec<PodState> = (0..3)
            .map(|o| PodState {
                ready: false,
                problem: Some("CrashLoopBackOff".into()),
                ..pod(o, OLD)
            })
            .collect();
        assert_eq!(
            decide(&sts(3), &crashing, &no_leader, |_| false),
            Rollout::RestartAll(vec![0, 1, 2])
        );
    }

    #[test]
    fn nothing_is_restarted_while_a_pod_is_terminating_or_missing_or_a_voter_lags() {
        let s = sts(3);
        let r = raft(0, &[9, 9, 9], 9);
        let mut going = pod(2, OLD);
        going.terminating = true;
        let step = decide(&s, &[pod(0, OLD), pod(1, OLD), going], &r, all);
        assert!(
            matches!(step, Rollout::WaitForMember { ordinal: 2, .. }),
            "{step:?}"
        );
        let step = decide(&s, &[pod(0, OLD), pod(1, OLD)], &r, all);
        assert!(
            matches!(step, Rollout::WaitForMember { ordinal: 2, .. }),
            "{step:?}"
        );
        let mut lagging = raft(0, &[9, 9, 9], 9);
        if let Some(c) = lagging.configuration.as_mut() {
            c[1].recent_active = false;
        }
        let step = decide(&s, &[pod(0, OLD), pod(1, OLD), pod(2, OLD)], &lagging, all);
        assert!(
            matches!(step, Rollout::WaitForMember { ordinal: 1, .. }),
            "{step:?}"
        );
    }

    #[test]
    fn a_lone_voter_is_simply_restarted_and_an_unobserved_template_is_pending() {
        assert_eq!(
            decide(&sts(1), &[pod(0, OLD)], &raft(0, &[9], 9), all),
            Rollout::Restart {
                ordinal: 0,
                serving: true
            }
        );
        let unobserved = StatefulSetState {
            update_revision: None,
            ..sts(3)
        };
        assert_eq!(
            decide(
                &unobserved,
                &[pod(0, OLD), pod(1, OLD), pod(2, OLD)],
                &raft(0, &[9, 9, 9], 9),
                all
            ),
            Rollout::Pending,
            "not known to be up to date: not Ready either"
        );
        assert_eq!(
            decide(&unobserved, &[], &RaftView::default(), all),
            Rollout::UpToDate,
            "a new cluster's first pods"
        );
    }
}
