//! The `RaftCluster` resource (`kuberaft.io/v1alpha1`): what a user asks for (spec) and what the
//! operator observed (status).
//!
//! Validation lives here too, in the schema the API server enforces: OpenAPI ranges on each field
//! and CEL rules whose messages name the field, so `kubectl apply` of a bad spec fails at once.
//! Integers are signed (`int32`/`int64`): Kubernetes schemas have no unsigned types.

// kube's derive repeats keys such as `type_` across printcolumn(...) groups; clippy reads them
// as one attribute list.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::crd::CustomResourceExt;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The API group of every kuberaft resource and label.
pub const GROUP: &str = "kuberaft.io";

/// A Raft cluster of `replicas` members, run as a StatefulSet.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kuberaft.io",
    version = "v1alpha1",
    kind = "RaftCluster",
    plural = "raftclusters",
    singular = "raftcluster",
    shortname = "raft",
    shortname = "rafts",
    category = "kuberaft",
    namespaced,
    doc = "A Raft consensus cluster run by the kuberaft operator",
    status = "RaftClusterStatus",
    derive = "PartialEq",
    // Rejected at `kubectl apply`, not later in a condition: the name becomes Service names
    // (a DNS-1035 label) and the StatefulSet's; its pods' controller-revision-hash label is the
    // name, '-' and a 10-character hash, and a label value holds at most 63 characters.
    validation = Rule::new("size(self.metadata.name) <= 52 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be at most 52 characters of lower-case letters, digits and '-', starting with a letter and ending with a letter or digit (it names the cluster's Services and StatefulSet)"),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.ready",
        description = "Ready members / desired members"
    ),
    printcolumn(
        name = "Leader",
        type_ = "string",
        json_path = ".status.leader",
        description = "The pod of the current Raft leader"
    ),
    printcolumn(
        name = "Term",
        type_ = "integer",
        json_path = ".status.term",
        description = "The current Raft term"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("(has(self.tls) && self.tls.enabled) == (has(oldSelf.tls) && oldSelf.tls.enabled)")
        .message("spec.tls.enabled cannot change on an existing cluster: during the rolling restart members with and without TLS cannot talk to each other; create a new RaftCluster to switch")
)]
pub struct RaftClusterSpec {
    /// Number of Raft members (voters), 1 to 9. Odd numbers are recommended: an even number
    /// tolerates no more failures than the odd number below it.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,

    /// Container image of kuberaft-node; the operator's default (its own version) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,

    /// When the kubelet pulls the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// The persistent volume each member keeps its log and snapshots on.
    #[serde(default)]
    pub storage: Storage,

    /// CPU and memory of each member's container. Unset: requests of 100m CPU and 128Mi memory
    /// and no limits (Burstable, so members are not the first pods a node evicts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Raft timing and log compaction.
    #[serde(default)]
    pub raft: RaftSettings,

    /// Scheduling and metadata of the members' pods.
    #[serde(default)]
    pub pod: PodSettings,

    /// Freezes the operator for this cluster: no object it owns is changed and no membership
    /// change is made while true; status is still reported.
    #[serde(default)]
    pub paused: bool,

    /// TLS on the members' peer and client ports. Off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// TLS between members (mutual) and for clients.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Turns TLS on for the peer and client ports.
    #[serde(default)]
    pub enabled: bool,

    /// A Secret in the cluster's namespace with `ca.crt`, `tls.crt` and `tls.key` (for example
    /// made by cert-manager); its certificate must name every member's DNS name
    /// (`<name>-<i>.<name>-peers.<namespace>.svc.<domain>`) and serve as both server and client
    /// certificate. When unset, the operator makes a cluster CA (`<name>-ca`) and the member
    /// certificate (`<name>-tls`) itself and renews the certificate before it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub secret_name: Option<String>,

    /// Clients of the client port must present a certificate signed by the cluster's CA.
    #[serde(default)]
    pub client_cert_auth: bool,
}

impl RaftClusterSpec {
    /// The TLS settings when TLS is on.
    pub fn tls_enabled(&self) -> Option<&TlsSpec> {
        self.tls.as_ref().filter(|t| t.enabled)
    }
}

fn default_replicas() -> i32 {
    3
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// Each member's PersistentVolumeClaim.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)")
        .message("spec.storage.storageClassName is immutable: a StatefulSet's volumeClaimTemplates cannot change; create a new RaftCluster to move storage"),
    validation = Rule::new("self.size == oldSelf.size")
        .message("spec.storage.size is immutable: a StatefulSet's volumeClaimTemplates cannot change; resize the PersistentVolumeClaims directly if the storage class allows expansion")
)]
pub struct Storage {
    /// Size of each member's volume, e.g. `1Gi`.
    #[serde(default = "default_storage_size")]
    pub size: Quantity,

    /// StorageClass of the volumes; the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,

    /// What happens to the members' PersistentVolumeClaims; both default to `Retain`, so data is
    /// only deleted when asked for.
    #[serde(default)]
    pub retention: VolumeRetention,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            size: default_storage_size(),
            storage_class_name: None,
            retention: VolumeRetention::default(),
        }
    }
}

fn default_storage_size() -> Quantity {
    Quantity("1Gi".to_string())
}

/// Maps onto the StatefulSet's `persistentVolumeClaimRetentionPolicy`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRetention {
    /// When the RaftCluster is deleted.
    #[serde(default)]
    pub when_deleted: RetentionPolicy,
    /// When a member is removed by scaling down.
    #[serde(default)]
    pub when_scaled: RetentionPolicy,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum RetentionPolicy {
    /// Keep the PersistentVolumeClaim (and so the data).
    #[default]
    Retain,
    /// Delete the PersistentVolumeClaim with its pod.
    Delete,
}

impl RetentionPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionPolicy::Retain => "Retain",
            RetentionPolicy::Delete => "Delete",
        }
    }
}

/// Raft timing (the article's 150–300 ms randomized election timeout and 50 ms heartbeats).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("self.electionTimeoutMinMs < self.electionTimeoutMaxMs")
        .message("spec.raft.electionTimeoutMinMs must be less than spec.raft.electionTimeoutMaxMs"),
    validation = Rule::new("self.heartbeatIntervalMs < self.electionTimeoutMinMs")
        .message("spec.raft.heartbeatIntervalMs must be less than spec.raft.electionTimeoutMinMs, or followers start elections while the leader is healthy")
)]
pub struct RaftSettings {
    /// Lower bound of the randomized election timeout, in milliseconds.
    #[serde(default = "default_election_timeout_min_ms")]
    #[schemars(range(min = 10, max = 60000))]
    pub election_timeout_min_ms: i32,

    /// Upper bound of the randomized election timeout, in milliseconds.
    #[serde(default = "default_election_timeout_max_ms")]
    #[schemars(range(min = 11, max = 120000))]
    pub election_timeout_max_ms: i32,

    /// How often the leader sends heartbeats, in milliseconds.
    #[serde(default = "default_heartbeat_interval_ms")]
    #[schemars(range(min = 1, max = 30000))]
    pub heartbeat_interval_ms: i32,

    /// Applied entries after which a member snapshots its state machine and compacts its log;
    /// the node's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub snapshot_threshold_entries: Option<i64>,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            election_timeout_min_ms: default_election_timeout_min_ms(),
            election_timeout_max_ms: default_election_timeout_max_ms(),
            heartbeat_interval_ms: default_heartbeat_interval_ms(),
            snapshot_threshold_entries: None,
        }
    }
}

fn default_election_timeout_min_ms() -> i32 {
    150
}
fn default_election_timeout_max_ms() -> i32 {
    300
}
fn default_heartbeat_interval_ms() -> i32 {
    50
}

/// Metadata and scheduling of the members' pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSettings {
    /// Extra labels on each pod (the operator's own labels win on a clash).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on each pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Replaces the default, which prefers one member per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Replaces the default, which spreads members evenly over zones
    /// (`topology.kubernetes.io/zone`, maxSkew 1, ScheduleAnyway), so that losing a zone costs
    /// as few members as the zones allow. An empty list turns spreading off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// What the operator last observed of the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RaftClusterStatus {
    /// A one-word summary for people; conditions are what tools should read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The StatefulSet's replicas: pods that exist or are being created (for the scale subresource).
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are ready (in the quorum and caught up).
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods that run the StatefulSet's current pod template; fewer than `replicas` while a
    /// rolling update is under way (absent until the StatefulSet says which template is current).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
    /// `readyReplicas/spec.replicas`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Label selector of the members' pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Pod name of the current leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The highest term any member reported.
    #[serde(default)]
    pub term: i64,
    /// When a new leader was last elected (as reported by the members).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_leader_change: Option<Time>,
    /// Each member as it reports itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberState>,
    /// The membership the cluster was bootstrapped with, decided once at creation; the pods'
    /// `KUBERAFT_INITIAL_MEMBERS` never changes after that (scaling goes through the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Bootstrap>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Keyed by type (one condition of each type; server-side apply merges them by type).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Phase {
    /// Members are starting; no leader yet.
    Creating,
    /// A leader, a quorum, and the desired number of voters.
    Running,
    /// A member is being added or removed.
    Scaling,
    /// Members are being restarted, one at a time, to run a changed pod template.
    Updating,
    /// Something is wrong; see the `Degraded` condition.
    Degraded,
    /// `spec.paused` is true.
    Paused,
}

/// One member, as it last reported itself through the admin API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberState {
    /// Pod name.
    pub name: String,
    /// Raft member id (pod ordinal + 1).
    pub id: i64,
    /// `Leader`, `Follower`, `Candidate`, `PreCandidate`, or `Unknown` when unreachable.
    pub role: String,
    /// `Voter` or `Learner` (empty when not in the configuration).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub suffrage: String,
    pub term: i64,
    pub commit_index: i64,
    /// Reachable, and serving (knows a leader and has caught up).
    pub healthy: bool,
}

/// The bootstrap membership, recorded once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bootstrap {
    /// Number of members the cluster was created with.
    pub replicas: i32,
    /// The exact `KUBERAFT_INITIAL_MEMBERS` value the pods were given.
    pub initial_members: String,
}

/// The CRD as YAML, as `kuberaft-operator crd` prints it and `deploy/crds/` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&RaftCluster::crd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_empty_spec_takes_the_documented_defaults() {
        let spec: RaftClusterSpec = serde_json::from_value(json!({})).expect("empty spec parses");
        assert_eq!(spec.replicas, 3);
        assert_eq!(spec.raft.election_timeout_min_ms, 150);
        assert_eq!(spec.raft.election_timeout_max_ms, 300);
        assert_eq!(spec.raft.heartbeat_interval_ms, 50);
        assert_eq!(spec.storage.size.0, "1Gi");
        assert_eq!(spec.storage.retention.when_deleted, RetentionPolicy::Retain);
        assert_eq!(spec.storage.retention.when_scaled, RetentionPolicy::Retain);
        assert!(!spec.paused);
    }

    #[test]
    fn cel_rejects_a_minimum_election_timeout_above_the_maximum() {
        let bad = json!({"electionTimeoutMinMs": 300, "electionTimeoutMaxMs": 150, "heartbeatIntervalMs": 50});
        let err = RaftSettings::validate_cel(&bad, None).expect_err("min > max must be rejected");
        assert!(
            format!("{err:?}").contains("spec.raft.electionTimeoutMinMs"),
            "{err:?}"
        );
        let ok = json!({"electionTimeoutMinMs": 150, "electionTimeoutMaxMs": 300, "heartbeatIntervalMs": 50});
        RaftSettings::validate_cel(&ok, None).expect("defaults are valid");
    }

    #[test]
    fn cel_rejects_a_heartbeat_not_below_the_election_timeout() {
        let bad = json!({"electionTimeoutMinMs": 150, "electionTimeoutMaxMs": 300, "heartbeatIntervalMs": 150});
        let err =
            RaftSettings::validate_cel(&bad, None).expect_err("heartbeat >= min must be rejected");
        assert!(
            format!("{err:?}").contains("spec.raft.heartbeatIntervalMs"),
            "{err:?}"
        );
    }

    #[test]
    fn cel_keeps_tls_on_or_off_for_the_life_of_a_cluster() {
        let off = json!({"replicas": 3});
        let on = json!({"replicas": 3, "tls": {"enabled": true, "clientCertAuth": false}});
        let err = RaftClusterSpec::validate_cel(&on, Some(&off)).expect_err("turning TLS on");
        assert!(format!("{err:?}").contains("spec.tls.enabled"), "{err:?}");
        RaftClusterSpec::validate_cel(&off, Some(&on)).expect_err("turning TLS off");
        let other = json!({"replicas": 5, "tls": {"enabled": true, "clientCertAuth": true}});
        RaftClusterSpec::validate_cel(&other, Some(&on)).expect("other changes are fine");
        RaftClusterSpec::validate_cel(&on, None).expect("creation is fine");
    }

    #[test]
    fn cel_keeps_the_storage_class_and_size_immutable() {
        let old = json!({"size": "1Gi", "storageClassName": "fast", "retention": {}});
        let changed_class = json!({"size": "1Gi", "storageClassName": "slow", "retention": {}});
        let err = Storage::validate_cel(&changed_class, Some(&old)).expect_err("class change");
        assert!(
            format!("{err:?}").contains("spec.storage.storageClassName"),
            "{err:?}"
        );
        let dropped_class = json!({"size": "1Gi", "retention": {}});
        Storage::validate_cel(&dropped_class, Some(&old)).expect_err("class removal");
        let changed_size = json!({"size": "2Gi", "storageClassName": "fast", "retention": {}});
        let err = Storage::validate_cel(&changed_size, Some(&old)).expect_err("size change");
        assert!(format!("{err:?}").contains("spec.storage.size"), "{err:?}");
        Storage::validate_cel(&old, Some(&old)).expect("no change is fine");
        Storage::validate_cel(&old, None).expect("creation is fine");
    }
}
