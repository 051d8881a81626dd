//! The PodDisruptionBudget that keeps a quorum through voluntary disruptions (drains, evictions).

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{object_meta, quorum, selector_labels};
use crate::crd::RaftCluster;

/// At least a quorum of the current `voters` stays available: while 5 voters shrink to 3 the
/// quorum is still 3 until members are removed, whatever spec.replicas says already. A single
/// voter has no quorum to keep through a disruption, and a budget of 1 would block every drain
/// for ever, so it allows the eviction. Pods that are not ready may always be evicted: they do
/// not count towards the quorum anyway, and keeping them only blocks drains.
pub fn pod_disruption_budget(rc: &RaftCluster, voters: i32) -> PodDisruptionBudget {
    let cluster = rc.name_any();
    let min_available = if voters <= 1 { 0 } else { quorum(voters) };
    PodDisruptionBudget {
        metadata: object_meta(rc, cluster.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(min_available)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&cluster)),
                ..LabelSelector::default()
            }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_string()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}
