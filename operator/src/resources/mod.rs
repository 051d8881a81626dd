//! Pure builders: a `RaftCluster` (plus what the operator decided) in, Kubernetes objects out.
//! Nothing here talks to a cluster, so every object can be tested as a plain function.

mod naming;
mod pdb;
mod services;
mod statefulset;

pub use naming::*;
pub use pdb::pod_disruption_budget;
pub use services::{client_service, leader_service, peers_service};
pub use statefulset::statefulset;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::RaftCluster;

/// Settings of the operator that shape every cluster's objects.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildConfig {
    /// The Kubernetes cluster's DNS domain (`cluster.local` by default).
    pub cluster_domain: String,
    /// Image used when `spec.image` is unset.
    pub default_image: String,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            cluster_domain: "cluster.local".to_string(),
            default_image: format!("kuberaft-node:{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// The owner reference that makes Kubernetes delete an object with its RaftCluster.
pub fn owner_reference(rc: &RaftCluster) -> Option<OwnerReference> {
    rc.controller_owner_ref(&())
}

/// Metadata shared by every object the operator makes for `rc`.
pub(crate) fn object_meta(rc: &RaftCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: rc.namespace(),
        labels: Some(labels(&rc.name_any())),
        owner_references: owner_reference(rc).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// Labels of every object made for the cluster: the selector labels plus who manages it.
pub fn labels(cluster: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster);
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        FIELD_MANAGER.to_string(),
    );
    labels.insert(
        "app.kubernetes.io/component".to_string(),
        "raft-member".to_string(),
    );
    labels
}

/// The labels that select the cluster's pods.
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "kuberaft".to_string()),
        (INSTANCE_LABEL.to_string(), cluster.to_string()),
    ])
}

/// The label naming the RaftCluster an object belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// `key=value,…` form of [`selector_labels`], for list calls and the scale subresource.
pub fn selector_string(cluster: &str) -> String {
    selector_labels(cluster)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "kuberaft-operator";

/// The label the operator puts on the leader's pod, selected by the `<name>-leader` Service.
pub const ROLE_LABEL: &str = "kuberaft.io/role";
/// Its value on the leader's pod.
pub const ROLE_LEADER: &str = "leader";

/// The largest `spec.replicas` the CRD allows.
pub const MAX_REPLICAS: i32 = 9;

/// Where the TLS Secret is mounted in each member.
pub const TLS_DIR: &str = "/etc/kuberaft/tls";

/// The Secret holding the members' `ca.crt`, `tls.crt` and `tls.key` when TLS is on.
pub fn member_tls_secret(rc: &RaftCluster) -> Option<String> {
    let tls = rc.spec.tls_enabled()?;
    Some(
        tls.secret_name
            .clone()
            .unwrap_or_else(|| tls_secret_name(&rc.name_any())),
    )
}

/// Port of `kuberaft.raft.v1` between members.
pub const PEER_PORT: i32 = 7000;
/// Port of the key-value API, the admin API's reads (Status) and grpc.health.v1.
pub const CLIENT_PORT: i32 = 7001;
/// Port of the whole admin API (membership changes, transfers, snapshots): only the members and
/// the operator reach it (the NetworkPolicy), with TLS only with the cluster CA's certificate.
pub const ADMIN_PORT: i32 = 7003;
/// Port of /metrics.
pub const HTTP_PORT: i32 = 7002;
/// Where each member's PersistentVolumeClaim is mounted.
pub const DATA_DIR: &str = "/var/lib/kuberaft";

/// The image for `rc`.
pub fn image(rc: &RaftCluster, cfg: &BuildConfig) -> String {
    rc.spec
        .image
        .clone()
        .unwrap_or_else(|| cfg.default_image.clone())
}
