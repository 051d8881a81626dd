//! The StatefulSet that runs the members.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    GRPCAction, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{
    ADMIN_PORT, BuildConfig, CLIENT_PORT, DATA_DIR, HTTP_PORT, PEER_PORT, TLS_DIR, image, labels,
    member_tls_secret, object_meta, peers_service_name, selector_labels, statefulset_name,
};
use crate::crd::RaftCluster;

/// The container's name, also used by `kubectl exec -c`.
pub const CONTAINER: &str = "kuberaft-node";
/// The volumeClaimTemplate's name; PVCs are `data-<pod>`.
pub const DATA_VOLUME: &str = "data";
/// Seconds a pod gets after SIGTERM: a leader hands leadership over first, which takes a few
/// election timeouts at most; the rest is margin for a slow disk.
pub const TERMINATION_GRACE_SECONDS: i64 = 30;
/// The volume of the TLS Secret.
pub const TLS_VOLUME: &str = "tls";
/// The non-root user and group the node runs as (distroless's `nonroot`).
const RUN_AS: i64 = 65532;

/// The StatefulSet for `rc` with `replicas` pods. `replicas` is what the scaling steps decided,
/// not `spec.replicas`; `initial_members` is the recorded bootstrap membership, which never
/// changes after creation (changing the pod template restarts every member).
pub fn statefulset(
    rc: &RaftCluster,
    cfg: &BuildConfig,
    replicas: i32,
    initial_members: &str,
) -> StatefulSet {
    let cluster = rc.name_any();
    let retention = &rc.spec.storage.retention;
    StatefulSet {
        metadata: object_meta(rc, statefulset_name(&cluster)),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(peers_service_name(&cluster)),
            // Members must all start to elect a leader; ordered start would deadlock readiness.
            pod_management_policy: Some("Parallel".to_string()),
            // The operator rolls template changes itself, one member at a time, followers
            // first and the leader last after a leadership transfer (rollout.rs); the
            // StatefulSet only makes a deleted pod again from the current template.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_string()),
                rolling_update: None,
            }),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&cluster)),
                ..LabelSelector::default()
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(retention.when_deleted.as_str().to_string()),
                    when_scaled: Some(retention.when_scaled.as_str().to_string()),
                },
            ),
            volume_claim_templates: Some(vec![volume_claim_template(rc)]),
            template: pod_template(rc, cfg, initial_members),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

fn volume_claim_template(rc: &RaftCluster) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_string()),
            labels: Some(selector_labels(&rc.name_any())),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: rc.spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    rc.spec.storage.size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

fn pod_template(rc: &RaftCluster, cfg: &BuildConfig, initial_members: &str) -> PodTemplateSpec {
    let cluster = rc.name_any();
    let pod = &rc.spec.pod;
    // The user's labels first, so that ours win on a clash (the selector must keep matching).
    let mut pod_labels = pod.labels.clone();
    pod_labels.extend(labels(&cluster));
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: (!pod.annotations.is_empty()).then(|| pod.annotations.clone()),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container(rc, cfg, initial_members)],
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
            // Service links add an env var per Service in the namespace; the node needs none.
            enable_service_links: Some(false),
            automount_service_account_token: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                fs_group: Some(RUN_AS),
                fs_group_change_policy: Some("OnRootMismatch".to_string()),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_string(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            node_selector: (!pod.node_selector.is_empty()).then(|| pod.node_selector.clone()),
            tolerations: (!pod.tolerations.is_empty()).then(|| pod.tolerations.clone()),
            affinity: Some(
                pod.affinity
                    .clone()
                    .unwrap_or_else(|| spread_across_nodes(&cluster)),
            ),
            topology_spread_constraints: match &pod.topology_spread_constraints {
                Some(c) if c.is_empty() => None,
                Some(c) => Some(c.clone()),
                None => Some(spread_across_zones(&cluster)),
            },
            priority_class_name: pod.priority_class_name.clone(),
            volumes: Some(volumes(rc)),
            ..PodSpec::default()
        }),
    }
}

fn volumes(rc: &RaftCluster) -> Vec<Volume> {
    let mut volumes = vec![Volume {
        name: "tmp".to_string(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    if let Some(secret) = member_tls_secret(rc) {
        volumes.push(Volume {
            name: TLS_VOLUME.to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                // Readable by the node's group (fsGroup) only.
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    volumes
}

/// The gRPC service whose health is the member's liveness.
const ADMIN_SERVICE: &str = "kuberaft.admin.v1.Admin";

/// Startup probes (every 2 s) a member may fail before it is restarted: 5 minutes to open its
/// data dir.
const STARTUP_FAILURES: i32 = 150;

/// Requests without limits: a pod with no requests is BestEffort, the first a node under
/// memory pressure evicts — a Raft member is the last thing to evict.
fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".to_string())),
            ("memory".to_string(), Quantity("128Mi".to_string())),
        ])),
        ..ResourceRequirements::default()
    }
}

/// The default spread: evenly over zones, so that a zone's outage costs as few members as the
/// zones allow. ScheduleAnyway: a cluster without zones (kind, one zone) still runs.
fn spread_across_zones(cluster: &str) -> Vec<TopologySpreadConstraint> {
    vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "topology.kubernetes.io/zone".to_string(),
        when_unsatisfiable: "ScheduleAnyway".to_string(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(cluster)),
            ..LabelSelector::default()
        }),
        ..TopologySpreadConstraint::default()
    }]
}

/// The default affinity: prefer one member per node, so that losing a node costs one member.
/// Preferred, not required, so that a one-node cluster (kind, a laptop) still runs.
fn spread_across_nodes(cluster: &str) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".to_string(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(cluster)),
                            ..LabelSelector::default()
                        }),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn env_from_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn grpc_probe(service: Option<&str>, period: i32, failures: i32) -> Probe {
    Probe {
        grpc: Some(GRPCAction {
            port: CLIENT_PORT,
            service: service.map(str::to_string),
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// An HTTP probe on the plaintext HTTP port: the kubelet cannot do gRPC over TLS.
fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(HTTP_PORT),
            scheme: Some("HTTP".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    }
}

fn container(rc: &RaftCluster, cfg: &BuildConfig, initial_members: &str) -> Container {
    let raft = &rc.spec.raft;
    let mut vars = vec![
        env("KUBERAFT_CLUSTER", rc.name_any()),
        env_from_field("KUBERAFT_NAME", "metadata.name"),
        env_from_field("KUBERAFT_NAMESPACE", "metadata.namespace"),
        env("KUBERAFT_DATA_DIR", DATA_DIR),
        env("KUBERAFT_PEER_LISTEN", format!("0.0.0.0:{PEER_PORT}")),
        env("KUBERAFT_CLIENT_LISTEN", format!("0.0.0.0:{CLIENT_PORT}")),
        env("KUBERAFT_ADMIN_LISTEN", format!("0.0.0.0:{ADMIN_PORT}")),
        env("KUBERAFT_HTTP_LISTEN", format!("0.0.0.0:{HTTP_PORT}")),
        env("KUBERAFT_INITIAL_MEMBERS", initial_members),
        env(
            "KUBERAFT_ELECTION_TIMEOUT_MIN_MS",
            raft.election_timeout_min_ms.to_string(),
        ),
        env(
            "KUBERAFT_ELECTION_TIMEOUT_MAX_MS",
            raft.election_timeout_max_ms.to_string(),
        ),
        env(
            "KUBERAFT_HEARTBEAT_INTERVAL_MS",
            raft.heartbeat_interval_ms.to_string(),
        ),
        env("KUBERAFT_LOG_FORMAT", "json"),
    ];
    if let Some(threshold) = raft.snapshot_threshold_entries {
        vars.push(env(
            "KUBERAFT_SNAPSHOT_THRESHOLD_ENTRIES",
            threshold.to_string(),
        ));
    }
    let tls = rc.spec.tls_enabled();
    let mut mounts = vec![
        VolumeMount {
            name: DATA_VOLUME.to_string(),
            mount_path: DATA_DIR.to_string(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".to_string(),
            mount_path: "/tmp".to_string(),
            ..VolumeMount::default()
        },
    ];
    if let Some(tls) = tls {
        // Peer and client ports share the member certificate and the cluster CA.
        let ca = format!("{TLS_DIR}/ca.crt");
        let cert = format!("{TLS_DIR}/tls.crt");
        let key = format!("{TLS_DIR}/tls.key");
        vars.push(env("KUBERAFT_PEER_CERT_FILE", cert.clone()));
        vars.push(env("KUBERAFT_PEER_KEY_FILE", key.clone()));
        vars.push(env("KUBERAFT_PEER_TRUSTED_CA_FILE", ca.clone()));
        vars.push(env("KUBERAFT_CLIENT_CERT_FILE", cert));
        vars.push(env("KUBERAFT_CLIENT_KEY_FILE", key));
        vars.push(env("KUBERAFT_CLIENT_TRUSTED_CA_FILE", ca));
        if tls.client_cert_auth {
            vars.push(env("KUBERAFT_CLIENT_CERT_AUTH", "true"));
        }
        mounts.push(VolumeMount {
            name: TLS_VOLUME.to_string(),
            mount_path: TLS_DIR.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let (readiness, liveness, startup) = if tls.is_some() {
        // Same meaning as the gRPC probes below, on the plaintext HTTP port.
        (
            http_probe("/readyz", 2, 3),
            http_probe("/livez", 10, 6),
            http_probe("/livez", 2, STARTUP_FAILURES),
        )
    } else {
        // Ready = grpc.health.v1 overall status SERVING: a leader is known and this member has
        // caught up, so rolling updates wait for each member to rejoin the quorum.
        // Alive = the admin service is SERVING: the process answers and its Raft event loop
        // turns (a loop stuck for 15 s turns it NOT_SERVING); a member without a quorum is not
        // ready but alive, and restarting it would not bring the quorum back.
        // Started = alive once: until then liveness waits, so opening a large data dir (and
        // replaying its log) is not cut short by a restart.
        (
            grpc_probe(None, 2, 3),
            grpc_probe(Some(ADMIN_SERVICE), 10, 6),
            grpc_probe(Some(ADMIN_SERVICE), 2, STARTUP_FAILURES),
        )
    };
    Container {
        name: CONTAINER.to_string(),
        image: Some(image(rc, cfg)),
        image_pull_policy: rc.spec.image_pull_policy.map(|p| p.as_str().to_string()),
        env: Some(vars),
        ports: Some(vec![
            container_port("peer", PEER_PORT),
            container_port("client", CLIENT_PORT),
            container_port("http", HTTP_PORT),
            container_port("admin", ADMIN_PORT),
        ]),
        readiness_probe: Some(readiness),
        liveness_probe: Some(liveness),
        startup_probe: Some(startup),
        resources: Some(rc.spec.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}
