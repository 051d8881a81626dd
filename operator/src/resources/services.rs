//! The three Services of a cluster: peers (headless, for pod DNS), client, and leader.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{
    CLIENT_PORT, PEER_PORT, ROLE_LABEL, ROLE_LEADER, client_service_name, leader_service_name,
    object_meta, peers_service_name, selector_labels,
};
use crate::crd::RaftCluster;

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port,
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

/// `<name>-peers`: headless, and publishing pods before they are ready, because members must
/// resolve each other to elect the leader that makes them ready.
pub fn peers_service(rc: &RaftCluster) -> Service {
    let cluster = rc.name_any();
    Service {
        metadata: object_meta(rc, peers_service_name(&cluster)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&cluster)),
            ports: Some(vec![port("peer", PEER_PORT), port("client", CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// `<name>`: the client port of every ready member (followers forward to the leader).
pub fn client_service(rc: &RaftCluster) -> Service {
    let cluster = rc.name_any();
    Service {
        metadata: object_meta(rc, client_service_name(&cluster)),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&cluster)),
            ports: Some(vec![port("client", CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// `<name>-leader`: the pod the operator labels `kuberaft.io/role=leader`.
pub fn leader_service(rc: &RaftCluster) -> Service {
    let cluster = rc.name_any();
    let mut selector = selector_labels(&cluster);
    selector.insert(ROLE_LABEL.to_string(), ROLE_LEADER.to_string());
    Service {
        metadata: object_meta(rc, leader_service_name(&cluster)),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![port("client", CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}
