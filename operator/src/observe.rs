//! What the operator observed of one cluster, and what it means in Raft's terms: who leads, in
//! which term, and which configuration (voters and learners) is in force. Pure: the inputs are
//! already-fetched Kubernetes objects and the members' last Statuses.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kuberaft_proto::admin::{Role, StatusResponse};
use kuberaft_proto::raft::Suffrage;

use crate::members::watch::ClusterView;
use crate::resources::{ROLE_LABEL, ROLE_LEADER, ordinal_of, ordinal_of_pod};

/// The StatefulSet as observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatefulSetState {
    /// `spec.replicas`: the pods that exist or are being created.
    pub replicas: i32,
    pub ready_replicas: i32,
    /// The bootstrap membership its pods were given, read back from the pod template.
    pub initial_members: Option<String>,
    /// The revision of its current pod template (`status.updateRevision`), once the StatefulSet
    /// controller has seen the latest spec; None while it has not (a revision read then could
    /// be the previous template's).
    pub update_revision: Option<String>,
}

/// One pod of the cluster as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct PodState {
    pub name: String,
    pub ordinal: i32,
    pub ready: bool,
    /// Carries `kuberaft.io/role=leader`.
    pub leader_label: bool,
    /// Why its container cannot run, when the kubelet says so (`ImagePullBackOff: …`).
    pub problem: Option<String>,
    /// The pod's uid: a restart deletes exactly this pod, never a replacement of the same name.
    pub uid: Option<String>,
    /// The StatefulSet revision it was made from (label `controller-revision-hash`).
    pub revision: Option<String>,
    /// It is being deleted.
    pub terminating: bool,
    /// When it was made.
    pub created: Option<Timestamp>,
}

/// Everything the operator read for one reconcile.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub statefulset: Option<StatefulSetState>,
    pub pods: Vec<PodState>,
    pub members: ClusterView,
}

/// A member of the configuration in force, as the leader reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfMember {
    pub id: u64,
    pub ordinal: i32,
    pub voter: bool,
    pub match_index: u64,
    pub recent_active: bool,
}

/// The cluster in Raft's terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RaftView {
    /// The highest term any reachable member reported.
    pub term: u64,
    /// Pod name and ordinal of the leader of `term`, if one is known.
    pub leader: Option<(String, i32)>,
    /// The leader's own Status.
    pub leader_status: Option<StatusResponse>,
    /// The configuration, as the leader reports it (None without a reachable leader).
    pub configuration: Option<Vec<ConfMember>>,
    /// Ordinals of members the leader refuses because they came back with another data dir
    /// (their votes and log are gone): they must be removed and added back as new members.
    pub lost_data: Vec<i32>,
}

impl RaftView {
    pub fn from_members(view: &ClusterView) -> Self {
        let reachable = || {
            view.values()
                .filter(|o| o.reachable)
                .filter_map(|o| o.status.as_ref())
        };
        let term = reachable().map(|s| s.term).max().unwrap_or(0);
        // The leader of the highest term reports itself; a stale leader of an older term (cut
        // off, not yet stepped down) is ignored.
        let leader_status = reachable()
            .filter(|s| s.term == term && s.role == Role::Leader as i32)
            .max_by_key(|s| s.member_id)
            .cloned();
        let leader = match &leader_status {
            Some(s) => ordinal_of(s.member_id).map(|o| (s.name.clone(), o)),
            // Followers of the current term that name a leader the operator cannot reach.
            None => reachable()
                .filter(|s| s.term == term && s.leader_id != 0 && !s.leader_name.is_empty())
                .find_map(|s| ordinal_of(s.leader_id).map(|o| (s.leader_name.clone(), o))),
        };
        let configuration = leader_status.as_ref().map(|s| {
            s.members
                .iter()
                .filter_map(|m| {
                    let member = m.member.as_ref()?;
                    Some(ConfMember {
                        id: member.id,
                        ordinal: ordinal_of(member.id)?,
                        voter: member.suffrage != Suffrage::Learner as i32,
                        match_index: if member.id == s.member_id {
                            s.last_index
                        } else {
                            m.match_index
                        },
                        recent_active: m.recent_active || member.id == s.member_id,
                    })
                })
                .collect()
        });
        let lost_data = leader_status
            .iter()
            .flat_map(|s| &s.lost_data_members)
            .filter_map(|id| ordinal_of(*id))
            .collect();
        RaftView {
            term,
            leader,
            leader_status,
            configuration,
            lost_data,
        }
    }

    /// The leader's commit index (0 without a leader).
    pub fn commit_index(&self) -> u64 {
        self.leader_status.as_ref().map_or(0, |s| s.commit_index)
    }
}

/// A member's role as status shows it.
pub fn role_name(role: i32) -> &'static str {
    match Role::try_from(role) {
        Ok(Role::Leader) => "Leader",
        Ok(Role::Follower) => "Follower",
        Ok(Role::Candidate) => "Candidate",
        Ok(Role::PreCandidate) => "PreCandidate",
        Ok(Role::Unspecified) | Err(_) => "Unknown",
    }
}

/// A member's suffrage as status shows it.
pub fn suffrage_name(suffrage: i32) -> &'static str {
    match Suffrage::try_from(suffrage) {
        Ok(Suffrage::Voter) => "Voter",
        Ok(Suffrage::Learner) => "Learner",
        Ok(Suffrage::Unspecified) | Err(_) => "",
    }
}

/// The parts of a StatefulSet the operator decides from.
pub fn statefulset_state(sts: &StatefulSet) -> StatefulSetState {
    let spec = sts.spec.as_ref();
    StatefulSetState {
        replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
        ready_replicas: sts
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
        initial_members: spec
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.env.as_ref())
            .and_then(|env| env.iter().find(|e| e.name == "KUBERAFT_INITIAL_MEMBERS"))
            .and_then(|e| e.value.clone()),
        update_revision: sts
            .status
            .as_ref()
            .filter(|s| s.observed_generation >= sts.metadata.generation)
            .and_then(|s| s.update_revision.clone()),
    }
}

/// A pod of `cluster`, or None for a pod that is not one of its members.
pub fn pod_state(cluster: &str, pod: &Pod) -> Option<PodState> {
    let name = pod.name_any();
    let ordinal = ordinal_of_pod(cluster, &name)?;
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let leader_label = pod.labels().get(ROLE_LABEL).map(String::as_str) == Some(ROLE_LEADER);
    Some(PodState {
        name,
        ordinal,
        ready,
        leader_label,
        problem: container_problem(pod),
        uid: pod.metadata.uid.clone(),
        revision: pod.labels().get(REVISION_LABEL).cloned(),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
    })
}

/// The label the StatefulSet controller puts on each pod: the revision it was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// Waiting reasons that mean the container will not start without someone's help.
const STUCK: [&str; 6] = [
    "ErrImagePull",
    "ErrImageNeverPull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
];

fn container_problem(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .find(|w| w.reason.as_deref().is_some_and(|r| STUCK.contains(&r)))
        .map(|w| {
            let reason = w.reason.clone().unwrap_or_default();
            match &w.message {
                Some(m) => format!("{reason}: {m}"),
                None => reason,
            }
        })
}
