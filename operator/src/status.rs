//! The RaftCluster's status, computed (purely) from what was observed: phase, leader, term,
//! members, and the conditions `Ready` (the summary tools wait for), `Available`,
//! `LeaderElected`, `Progressing`, `Degraded` and `ReconciliationPaused`, each with a PascalCase reason and a message for people.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::crd::{Bootstrap, MemberState, Phase, RaftCluster, RaftClusterStatus};
use crate::members::watch::Observation;
use crate::observe::{Observed, RaftView, role_name, suffrage_name};
use crate::resources::{member_id, pod_name, quorum, selector_string};
use crate::rollout::Rollout;
use crate::scaling::Step;

pub const READY: &str = "Ready";
pub const AVAILABLE: &str = "Available";
pub const LEADER_ELECTED: &str = "LeaderElected";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const RECONCILIATION_PAUSED: &str = "ReconciliationPaused";

/// Why the last reconcile failed, for the `Degraded` condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

/// Everything the status is computed from.
pub struct StatusInput<'a> {
    pub rc: &'a RaftCluster,
    pub observed: &'a Observed,
    pub raft: &'a RaftView,
    pub step: &'a Step,
    /// The rolling update's next step (`UpToDate` when none is under way).
    pub rollout: &'a Rollout,
    /// Pods on the StatefulSet's current template.
    pub updated_replicas: Option<i32>,
    pub bootstrap: Option<&'a Bootstrap>,
    pub failure: Option<&'a Failure>,
    pub now: Timestamp,
}

/// A member counts as healthy when its stream is up and it reports serving (it knows a
/// leader and has caught up).
pub fn is_healthy(observation: Option<&Observation>) -> bool {
    observation.is_some_and(|o| o.reachable && o.status.as_ref().is_some_and(|s| s.serving))
}

pub fn compute(input: &StatusInput<'_>) -> RaftClusterStatus {
    let rc = input.rc;
    let cluster = rc.name_any();
    let old = rc.status.clone().unwrap_or_default();
    // A paused cluster's spec is not acted on: its generation is not observed until it is
    // resumed (kstatus, Flux and Argo CD read a lagging observedGeneration as "in progress").
    let generation = if rc.spec.paused {
        old.observed_generation
    } else {
        rc.metadata.generation
    };
    let raft = input.raft;
    let replicas = input
        .observed
        .statefulset
        .as_ref()
        .map_or(0, |s| s.replicas);
    let ready_replicas = input
        .observed
        .statefulset
        .as_ref()
        .map_or(0, |s| s.ready_replicas);

    let members = member_states(&cluster, input);
    let voters: Vec<&MemberState> = members.iter().filter(|m| m.suffrage == "Voter").collect();
    let healthy_voters = voters.iter().filter(|m| m.healthy).count();
    let leader = raft.leader.as_ref().map(|(name, _)| name.clone());
    let term = if raft.term > 0 {
        i64::try_from(raft.term).unwrap_or(i64::MAX)
    } else {
        old.term
    };

    let last_leader_change = if leader.is_some() && (leader != old.leader || term != old.term) {
        let reported = raft
            .leader_status
            .as_ref()
            .map(|s| s.leader_changed_unix_ms)
            .filter(|ms| *ms > 0)
            .and_then(|ms| i64::try_from(ms).ok())
            .and_then(|ms| Timestamp::from_millisecond(ms).ok());
        Some(Time(reported.unwrap_or(input.now)))
    } else {
        old.last_leader_change.clone()
    };

    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        condition(
            &old.conditions,
            type_,
            status,
            reason,
            message,
            generation,
            input.now,
        )
    };

    let quorum_needed = quorum(i32::try_from(voters.len()).unwrap_or(i32::MAX));
    let healthy_count = i32::try_from(healthy_voters).unwrap_or(i32::MAX);
    let available = match &leader {
        Some(l) if healthy_count >= quorum_needed => condition(
            AVAILABLE,
            true,
            "QuorumAvailable",
            format!(
                "{healthy_voters} of {} voters healthy; {l} leads",
                voters.len()
            ),
        ),
        Some(_) => condition(
            AVAILABLE,
            false,
            "QuorumLost",
            format!(
                "{healthy_voters} of {} voters healthy; a quorum needs {quorum_needed}",
                voters.len()
            ),
        ),
        None => condition(
            AVAILABLE,
            false,
            "NoLeader",
            "no member reports a leader, so no request can commit".to_string(),
        ),
    };
    let leader_elected = match &leader {
        Some(l) => condition(
            LEADER_ELECTED,
            true,
            "LeaderElected",
            format!("{l} is the leader in term {term}"),
        ),
        None => condition(
            LEADER_ELECTED,
            false,
            "NoLeader",
            format!("no member reports a leader in term {term}"),
        ),
    };
    let ever_led = leader.is_some() || old.last_leader_change.is_some();
    let (progressing_reason, progressing_message) = match input.rollout {
        Rollout::UpToDate => progress(&cluster, input.step, ever_led),
        rollout => rolling(&cluster, rollout, input.updated_replicas, replicas),
    };
    let progressing = condition(
        PROGRESSING,
        progressing_reason != "Reconciled",
        progressing_reason,
        progressing_message,
    );
    // A pod that is not (yet, or any more) in the configuration is being added or removed;
    // only configured members that fail to serve make the cluster degraded.
    let configured = raft.configuration.is_some();
    let unhealthy: Vec<String> = members
        .iter()
        .filter(|m| !m.healthy && (!configured || !m.suffrage.is_empty()))
        .map(|m| m.name.clone())
        .collect();
    let failing_pods: Vec<String> = input
        .observed
        .pods
        .iter()
        .filter_map(|p| p.problem.as_ref().map(|why| format!("{}: {why}", p.name)))
        .collect();
    let degraded = if let Some(f) = input.failure {
        condition(DEGRADED, true, f.reason, f.message.clone())
    } else if let Rollout::Stalled { ordinal, why } = input.rollout {
        condition(
            DEGRADED,
            true,
            "UpdateStalled",
            format!(
                "the rolling update stopped at {}, which runs the new pod template and does not serve: {why}; fix the spec (spec.image, spec.pod…) and the operator rolls on, or revert it",
                pod_name(&cluster, *ordinal)
            ),
        )
    } else if !failing_pods.is_empty() {
        condition(
            DEGRADED,
            true,
            "PodFailing",
            format!(
                "{}; check spec.image and the pods' events",
                failing_pods.join("; ")
            ),
        )
    } else if let Step::Blocked {
        ordinal,
        healthy,
        needed,
    } = input.step
    {
        condition(
            DEGRADED,
            true,
            "ScalingBlocked",
            format!(
                "changing member {} now would leave {healthy} healthy voters where {needed} are needed; waiting for members to recover",
                pod_name(&cluster, *ordinal)
            ),
        )
    } else if ever_led && leader.is_none() {
        condition(
            DEGRADED,
            true,
            "NoLeader",
            "the cluster had a leader and has none now".to_string(),
        )
    } else if ever_led && !unhealthy.is_empty() {
        condition(
            DEGRADED,
            true,
            "MemberUnhealthy",
            format!(
                "not serving: {}; see each member in status.members and the pods' events",
                unhealthy.join(", ")
            ),
        )
    } else {
        condition(
            DEGRADED,
            false,
            "AllMembersHealthy",
            "every member is reachable and serving".to_string(),
        )
    };
    let paused = if rc.spec.paused {
        condition(
            RECONCILIATION_PAUSED,
            true,
            "Paused",
            "spec.paused is true: the operator changes no object and no membership of this cluster; status is still reported".to_string(),
        )
    } else {
        condition(
            RECONCILIATION_PAUSED,
            false,
            "NotPaused",
            "the operator reconciles this cluster".to_string(),
        )
    };

    // What `kubectl wait --for=condition=Ready`, kstatus, Flux and Argo CD look for: serving,
    // done changing, nothing wrong.
    let ready = if available.status != "True" {
        condition(READY, false, &available.reason, available.message.clone())
    } else if degraded.status == "True" {
        condition(READY, false, &degraded.reason, degraded.message.clone())
    } else if progressing.status == "True" {
        condition(
            READY,
            false,
            &progressing.reason,
            progressing.message.clone(),
        )
    } else {
        condition(
            READY,
            true,
            "Ready",
            format!(
                "{}; every member serving, nothing in progress",
                available.message
            ),
        )
    };

    let phase = if rc.spec.paused {
        Phase::Paused
    } else if degraded.status == "True" {
        Phase::Degraded
    } else if !ever_led {
        Phase::Creating
    } else if input.step.is_scaling() {
        Phase::Scaling
    } else if input.rollout.in_progress() {
        Phase::Updating
    } else {
        Phase::Running
    };

    RaftClusterStatus {
        phase: Some(phase),
        replicas,
        ready_replicas,
        updated_replicas: input.updated_replicas,
        ready: Some(format!("{ready_replicas}/{}", rc.spec.replicas)),
        selector: Some(selector_string(&cluster)),
        leader,
        term,
        last_leader_change,
        members,
        bootstrap: input.bootstrap.cloned().or(old.bootstrap),
        observed_generation: generation,
        conditions: vec![
            ready,
            available,
            leader_elected,
            progressing,
            degraded,
            paused,
        ],
    }
}

/// The `Progressing` reason and message of a rolling update under way.
fn rolling(
    cluster: &str,
    rollout: &Rollout,
    updated: Option<i32>,
    replicas: i32,
) -> (&'static str, String) {
    let pod = |o: &i32| pod_name(cluster, *o);
    let done = format!("{} of {replicas} pods updated", updated.unwrap_or(0));
    let message = match rollout {
        Rollout::UpToDate => return ("Reconciled", done),
        Rollout::Pending => {
            return (
                "RollingUpdate",
                "the StatefulSet controller has not yet seen the new pod template".to_string(),
            );
        }
        Rollout::Restart { ordinal, .. } => format!("{done}; restarting {}", pod(ordinal)),
        Rollout::RestartAll(ordinals) => format!(
            "{done}; restarting {}, none of which can serve on the old template",
            ordinals.iter().map(pod).collect::<Vec<_>>().join(", ")
        ),
        Rollout::TransferLeadership { from, to } => format!(
            "{done}; moving leadership from {} to {} before restarting it",
            pod(from),
            pod(to)
        ),
        Rollout::WaitForMember { ordinal, why } => {
            format!("{done}; waiting for {}: {why}", pod(ordinal))
        }
        Rollout::Stalled { ordinal, why } => {
            format!("{done}; stopped at {}: {why}", pod(ordinal))
        }
    };
    ("RollingUpdate", message)
}

/// The `Progressing` reason and message for a step.
fn progress(cluster: &str, step: &Step, ever_led: bool) -> (&'static str, String) {
    let pod = |o: &i32| pod_name(cluster, *o);
    match step {
        Step::Steady => ("Reconciled", "voters match spec.replicas".to_string()),
        Step::WaitForLeader if !ever_led => (
            "Creating",
            "members are starting and electing a leader".to_string(),
        ),
        Step::WaitForLeader => (
            "WaitingForLeader",
            "membership changes wait until a leader is known".to_string(),
        ),
        Step::SetReplicas(n) => (
            "ScalingStatefulSet",
            format!("setting the StatefulSet to {n} pods"),
        ),
        Step::AddLearner(o) => (
            "ScalingUp",
            format!("adding {} (member {}) as a learner", pod(o), member_id(*o)),
        ),
        Step::WaitForCatchUp { ordinal, behind } => (
            "ScalingUp",
            format!(
                "learner {} is catching up ({behind} entries behind the commit index)",
                pod(ordinal)
            ),
        ),
        Step::Promote(o) => ("ScalingUp", format!("promoting {} to voter", pod(o))),
        Step::TransferLeadership { from, to } => (
            "ScalingDown",
            format!(
                "moving leadership from {} to {} before removing it",
                pod(from),
                pod(to)
            ),
        ),
        Step::Replace(o) => (
            "ReplacingMember",
            format!(
                "{} came back without its data (a new incarnation, refused by the leader): removing it, to add it back as a new member",
                pod(o)
            ),
        ),
        Step::Remove(o) => (
            "ScalingDown",
            format!("removing {} from the configuration", pod(o)),
        ),
        Step::Blocked { ordinal, .. } => (
            "ScalingBlocked",
            format!("changing {} waits for a healthy quorum", pod(ordinal)),
        ),
    }
}

fn member_states(cluster: &str, input: &StatusInput<'_>) -> Vec<MemberState> {
    let replicas = input
        .observed
        .statefulset
        .as_ref()
        .map_or(0, |s| s.replicas);
    let configured = input.raft.configuration.as_deref().unwrap_or_default();
    let top = configured
        .iter()
        .map(|m| m.ordinal + 1)
        .chain([replicas])
        .max()
        .unwrap_or(0);
    (0..top)
        .map(|ordinal| {
            let name = pod_name(cluster, ordinal);
            let observation = input.observed.members.get(&name);
            let status = observation
                .filter(|o| o.reachable)
                .and_then(|o| o.status.as_ref());
            let suffrage = match configured.iter().find(|m| m.ordinal == ordinal) {
                Some(m) if m.voter => "Voter",
                Some(_) => "Learner",
                None if input.raft.configuration.is_some() => "",
                None => status.map_or("", |s| suffrage_name(s.suffrage)),
            };
            MemberState {
                id: i64::try_from(member_id(ordinal)).unwrap_or(0),
                role: status.map_or("Unknown", |s| role_name(s.role)).to_string(),
                suffrage: suffrage.to_string(),
                term: status.map_or(0, |s| i64::try_from(s.term).unwrap_or(i64::MAX)),
                commit_index: status
                    .map_or(0, |s| i64::try_from(s.commit_index).unwrap_or(i64::MAX)),
                healthy: is_healthy(observation),
                name,
            }
        })
        .collect()
}

/// A condition whose `lastTransitionTime` only moves when its status flips.
pub fn condition(
    old: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// The Event note of a leader change.
pub fn leader_event_note(leader: &str, term: i64) -> String {
    format!("{leader} elected leader in term {term}")
}
