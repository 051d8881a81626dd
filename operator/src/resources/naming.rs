//! Names and addresses derived from the StatefulSet's naming: pod `<cluster>-<i>` is Raft member
//! `i + 1` (0 means "nobody" on the wire), reachable at
//! `<cluster>-<i>.<cluster>-peers.<namespace>.svc.<cluster-domain>`.

use super::{ADMIN_PORT, CLIENT_PORT, PEER_PORT};

/// The headless Service that gives each pod its DNS name.
pub fn peers_service_name(cluster: &str) -> String {
    format!("{cluster}-peers")
}

/// The Service over all ready members, for clients.
pub fn client_service_name(cluster: &str) -> String {
    cluster.to_string()
}

/// The Service that selects the leader's pod.
pub fn leader_service_name(cluster: &str) -> String {
    format!("{cluster}-leader")
}

/// The StatefulSet's name (and so the pods' name prefix).
pub fn statefulset_name(cluster: &str) -> String {
    cluster.to_string()
}

/// Pod name of the member at `ordinal`.
pub fn pod_name(cluster: &str, ordinal: i32) -> String {
    format!("{cluster}-{ordinal}")
}

/// Raft member id of the pod at `ordinal`.
pub fn member_id(ordinal: i32) -> u64 {
    u64::try_from(ordinal).map_or(0, |o| o + 1)
}

/// The ordinal of the pod whose member id is `id`, if any.
pub fn ordinal_of(id: u64) -> Option<i32> {
    id.checked_sub(1).and_then(|o| i32::try_from(o).ok())
}

/// The ordinal at the end of a pod name of this cluster (`demo-2` → 2).
pub fn ordinal_of_pod(cluster: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(cluster)?.strip_prefix('-')?.parse().ok()
}

/// The fully qualified DNS name of the pod at `ordinal`.
pub fn pod_host(cluster: &str, namespace: &str, cluster_domain: &str, ordinal: i32) -> String {
    format!(
        "{}.{}.{namespace}.svc.{cluster_domain}",
        pod_name(cluster, ordinal),
        peers_service_name(cluster)
    )
}

/// The Secret with the cluster CA the operator makes when TLS is on without `secretName`.
pub fn ca_secret_name(cluster: &str) -> String {
    format!("{cluster}-ca")
}

/// The Secret with the member certificate the operator makes (same condition).
pub fn tls_secret_name(cluster: &str) -> String {
    format!("{cluster}-tls")
}

/// `host:7000`, the member's peer address.
pub fn peer_addr(cluster: &str, namespace: &str, cluster_domain: &str, ordinal: i32) -> String {
    format!(
        "{}:{PEER_PORT}",
        pod_host(cluster, namespace, cluster_domain, ordinal)
    )
}

/// `host:7001`, the member's client address.
pub fn client_addr(cluster: &str, namespace: &str, cluster_domain: &str, ordinal: i32) -> String {
    format!(
        "{}:{CLIENT_PORT}",
        pod_host(cluster, namespace, cluster_domain, ordinal)
    )
}

/// `host:7003`, the member's admin address, where the operator talks to it.
pub fn admin_addr(cluster: &str, namespace: &str, cluster_domain: &str, ordinal: i32) -> String {
    format!(
        "{}:{ADMIN_PORT}",
        pod_host(cluster, namespace, cluster_domain, ordinal)
    )
}

/// The `KUBERAFT_INITIAL_MEMBERS` value for a cluster bootstrapped with `replicas` members:
/// `ID=NAME@HOST:PEER_PORT/CLIENT_PORT,…`.
pub fn initial_members(
    cluster: &str,
    namespace: &str,
    cluster_domain: &str,
    replicas: i32,
) -> String {
    (0..replicas)
        .map(|ordinal| {
            format!(
                "{}={}@{}:{PEER_PORT}/{CLIENT_PORT}",
                member_id(ordinal),
                pod_name(cluster, ordinal),
                pod_host(cluster, namespace, cluster_domain, ordinal)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The smallest number of voters that is a majority of `voters`.
pub fn quorum(voters: i32) -> i32 {
    voters / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_ordinals_plus_one() {
        assert_eq!(member_id(0), 1);
        assert_eq!(member_id(8), 9);
        assert_eq!(ordinal_of(1), Some(0));
        assert_eq!(ordinal_of(0), None);
        assert_eq!(ordinal_of_pod("demo", "demo-2"), Some(2));
        assert_eq!(ordinal_of_pod("demo", "demo-x"), None);
        assert_eq!(ordinal_of_pod("demo", "demos-1"), None);
    }

    #[test]
    fn initial_members_follow_the_node_contract() {
        assert_eq!(
            initial_members("demo", "default", "cluster.local", 2),
            "1=demo-0@demo-0.demo-peers.default.svc.cluster.local:7000/7001,\
             2=demo-1@demo-1.demo-peers.default.svc.cluster.local:7000/7001"
        );
    }

    #[test]
    fn quorum_is_a_majority() {
        assert_eq!(
            [1, 2, 3, 4, 5, 9].map(quorum),
            [1, 2, 2, 3, 3, 5],
            "quorum of 1,2,3,4,5,9 voters"
        );
    }
}
