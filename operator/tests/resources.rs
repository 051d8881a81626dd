//! Builder tests: every object made from a RaftCluster, as plain functions over YAML fixtures.
//! The full objects are insta snapshots (`tests/snapshots/`); the assertions name the properties
//! that matter and why.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kuberaft_operator::crd::RaftCluster;
use kuberaft_operator::resources::{
    self, BuildConfig, client_service, leader_service, peers_service, pod_disruption_budget,
};

fn fixture(name: &str) -> RaftCluster {
    let path = format!("{}/tests/fixtures/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture exists");
    serde_yaml::from_str(&text).expect("fixture is a valid RaftCluster")
}

fn statefulset(rc: &RaftCluster, replicas: i32) -> StatefulSet {
    let bootstrap = resources::initial_members(
        &rc.metadata.name.clone().unwrap_or_default(),
        rc.metadata.namespace.as_deref().unwrap_or_default(),
        "cluster.local",
        rc.spec.replicas,
    );
    resources::statefulset(rc, &BuildConfig::default(), replicas, &bootstrap)
}

fn container(sts: &StatefulSet) -> Container {
    sts.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
        .containers[0]
        .clone()
}

fn env(c: &Container, name: &str) -> Option<String> {
    c.env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

#[test]
fn snapshots_of_every_object() {
    for name in ["demo", "tuned", "secure"] {
        let rc = fixture(name);
        let replicas = rc.spec.replicas;
        insta::assert_yaml_snapshot!(format!("{name}-statefulset"), statefulset(&rc, replicas));
        insta::assert_yaml_snapshot!(format!("{name}-peers-service"), peers_service(&rc));
        insta::assert_yaml_snapshot!(format!("{name}-client-service"), client_service(&rc));
        insta::assert_yaml_snapshot!(format!("{name}-leader-service"), leader_service(&rc));
        insta::assert_yaml_snapshot!(
            format!("{name}-pdb"),
            pod_disruption_budget(&rc, rc.spec.replicas)
        );
    }
}

#[test]
fn every_object_is_owned_by_the_cluster_so_deleting_it_deletes_them() {
    let rc = fixture("demo");
    let owners = [
        statefulset(&rc, 3).metadata.owner_references,
        peers_service(&rc).metadata.owner_references,
        client_service(&rc).metadata.owner_references,
        leader_service(&rc).metadata.owner_references,
        pod_disruption_budget(&rc, rc.spec.replicas)
            .metadata
            .owner_references,
    ];
    for refs in owners {
        let refs = refs.expect("owner references");
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].kind, "RaftCluster");
        assert_eq!(refs[0].name, "demo");
        assert_eq!(refs[0].controller, Some(true));
    }
}

#[test]
fn the_statefulset_gives_each_pod_what_the_node_contract_asks_for() {
    let rc = fixture("demo");
    let sts = statefulset(&rc, 3);
    let spec = sts.spec.as_ref().expect("spec");
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(spec.service_name.as_deref(), Some("demo-peers"));
    assert_eq!(spec.replicas, Some(3));
    let c = container(&sts);
    assert_eq!(c.image.as_deref(), Some("kuberaft-node:0.1.0"));
    assert_eq!(env(&c, "KUBERAFT_CLUSTER").as_deref(), Some("demo"));
    assert_eq!(
        env(&c, "KUBERAFT_DATA_DIR").as_deref(),
        Some("/var/lib/kuberaft")
    );
    assert_eq!(
        env(&c, "KUBERAFT_INITIAL_MEMBERS").as_deref(),
        Some(
            "1=demo-0@demo-0.demo-peers.default.svc.cluster.local:7000/7001,\
             2=demo-1@demo-1.demo-peers.default.svc.cluster.local:7000/7001,\
             3=demo-2@demo-2.demo-peers.default.svc.cluster.local:7000/7001"
        )
    );
    assert_eq!(
        env(&c, "KUBERAFT_ELECTION_TIMEOUT_MIN_MS").as_deref(),
        Some("150")
    );
    assert_eq!(
        env(&c, "KUBERAFT_ELECTION_TIMEOUT_MAX_MS").as_deref(),
        Some("300")
    );
    assert_eq!(
        env(&c, "KUBERAFT_HEARTBEAT_INTERVAL_MS").as_deref(),
        Some("50")
    );
    assert_eq!(env(&c, "KUBERAFT_SNAPSHOT_THRESHOLD_ENTRIES"), None);
    let downward: Vec<_> = c
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let path = e
                .value_from
                .as_ref()?
                .field_ref
                .as_ref()?
                .field_path
                .clone();
            Some((e.name.clone(), path))
        })
        .collect();
    assert_eq!(
        downward,
        [
            ("KUBERAFT_NAME".to_string(), "metadata.name".to_string()),
            (
                "KUBERAFT_NAMESPACE".to_string(),
                "metadata.namespace".to_string()
            )
        ]
    );
    let readiness = c
        .readiness_probe
        .as_ref()
        .and_then(|p| p.grpc.as_ref())
        .expect("grpc readiness");
    assert_eq!(readiness.port, 7001);
    let liveness = c
        .liveness_probe
        .as_ref()
        .and_then(|p| p.grpc.as_ref())
        .expect("grpc liveness");
    assert_eq!(liveness.port, 7001);
    let security = c.security_context.as_ref().expect("securityContext");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert!(
        pod.termination_grace_period_seconds.unwrap_or(0) >= 10,
        "time for the leadership handover"
    );
    assert_eq!(
        pod.security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        Some(true)
    );
    let retention = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .expect("retention");
    assert_eq!(
        retention.when_deleted.as_deref(),
        Some("Retain"),
        "data is kept unless asked"
    );
    assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
    let anti = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .expect("default spread");
    assert!(
        anti.preferred_during_scheduling_ignored_during_execution
            .is_some()
    );
}

#[test]
fn the_replicas_come_from_the_scaling_step_and_the_bootstrap_never_changes() {
    let mut rc = fixture("demo");
    let before = container(&statefulset(&rc, 3));
    rc.spec.replicas = 5;
    let recorded = resources::initial_members("demo", "default", "cluster.local", 3);
    let sts = resources::statefulset(&rc, &BuildConfig::default(), 4, &recorded);
    assert_eq!(sts.spec.as_ref().and_then(|s| s.replicas), Some(4));
    assert_eq!(
        container(&sts).env,
        before.env,
        "growing changes no pod env, so no member restarts"
    );
}

#[test]
fn user_settings_reach_the_pods_but_never_break_the_selector() {
    let rc = fixture("tuned");
    let sts = statefulset(&rc, 5);
    let spec = sts.spec.as_ref().expect("spec");
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("labels");
    assert_eq!(labels.get("team").map(String::as_str), Some("payments"));
    assert_eq!(
        labels.get("app.kubernetes.io/name").map(String::as_str),
        Some("kuberaft")
    );
    let c = container(&sts);
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example/kuberaft-node:0.1.0")
    );
    assert_eq!(
        env(&c, "KUBERAFT_SNAPSHOT_THRESHOLD_ENTRIES").as_deref(),
        Some("100000")
    );
    assert_eq!(
        env(&c, "KUBERAFT_ELECTION_TIMEOUT_MIN_MS").as_deref(),
        Some("300")
    );
    let pvc = &spec.volume_claim_templates.as_ref().expect("claims")[0];
    assert_eq!(
        pvc.spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref()),
        Some("fast-ssd")
    );
    let retention = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .expect("retention");
    assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
    let pod = spec.template.spec.as_ref().expect("pod");
    let anti = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .expect("affinity");
    assert!(
        anti.required_during_scheduling_ignored_during_execution
            .is_some(),
        "the user's affinity replaces the default"
    );
}

#[test]
fn services_peers_resolve_before_ready_and_leader_selects_the_labelled_pod() {
    let rc = fixture("demo");
    let peers = peers_service(&rc).spec.expect("spec");
    assert_eq!(peers.cluster_ip.as_deref(), Some("None"));
    assert_eq!(peers.publish_not_ready_addresses, Some(true));
    let leader = leader_service(&rc).spec.expect("spec");
    assert_eq!(
        leader
            .selector
            .expect("selector")
            .get("kuberaft.io/role")
            .map(String::as_str),
        Some("leader")
    );
}

#[test]
fn the_disruption_budget_keeps_a_quorum_of_the_current_voters() {
    // A lone voter has no quorum to keep through an eviction: its budget must not block drains.
    for (voters, min_available) in [(1, 0), (2, 2), (3, 2), (4, 3), (5, 3), (9, 5)] {
        // spec.replicas says 3 throughout: while 5 voters shrink to 3, the quorum is still 3.
        let rc = fixture("demo");
        let pdb = pod_disruption_budget(&rc, voters).spec.expect("spec");
        assert_eq!(
            pdb.min_available,
            Some(IntOrString::Int(min_available)),
            "{voters} voters"
        );
    }
}

fn probe_path(
    p: Option<&k8s_openapi::api::core::v1::Probe>,
) -> (Option<String>, Option<IntOrString>) {
    let get = p.and_then(|p| p.http_get.clone());
    (
        get.as_ref().and_then(|g| g.path.clone()),
        get.map(|g| g.port),
    )
}

#[test]
fn a_tls_cluster_mounts_its_secret_passes_the_flags_and_probes_over_plain_http() {
    let rc = fixture("secure");
    let sts = statefulset(&rc, 3);
    let c = container(&sts);
    for (var, file) in [
        ("KUBERAFT_PEER_CERT_FILE", "tls.crt"),
        ("KUBERAFT_PEER_KEY_FILE", "tls.key"),
        ("KUBERAFT_PEER_TRUSTED_CA_FILE", "ca.crt"),
        ("KUBERAFT_CLIENT_CERT_FILE", "tls.crt"),
        ("KUBERAFT_CLIENT_KEY_FILE", "tls.key"),
        ("KUBERAFT_CLIENT_TRUSTED_CA_FILE", "ca.crt"),
    ] {
        assert_eq!(
            env(&c, var),
            Some(format!("/etc/kuberaft/tls/{file}")),
            "{var}"
        );
    }
    assert_eq!(
        env(&c, "KUBERAFT_CLIENT_CERT_AUTH").as_deref(),
        Some("true")
    );
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/etc/kuberaft/tls")
        .expect("the TLS Secret is mounted");
    assert_eq!(mount.read_only, Some(true));
    let pod = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod spec");
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .expect("the TLS volume");
    assert_eq!(
        volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref()),
        Some("secure-tls")
    );
    // The kubelet cannot probe gRPC over TLS: HTTP on the plaintext port instead.
    assert!(c.readiness_probe.as_ref().is_some_and(|p| p.grpc.is_none()));
    assert_eq!(
        probe_path(c.readiness_probe.as_ref()),
        (Some("/readyz".to_string()), Some(IntOrString::Int(7002)))
    );
    assert_eq!(
        probe_path(c.liveness_probe.as_ref()),
        (Some("/livez".to_string()), Some(IntOrString::Int(7002)))
    );
}

#[test]
fn a_user_secret_is_mounted_and_tls_off_mounts_nothing() {
    let mut rc = fixture("secure");
    if let Some(tls) = rc.spec.tls.as_mut() {
        tls.secret_name = Some("from-cert-manager".to_string());
        tls.client_cert_auth = false;
    }
    let sts = statefulset(&rc, 3);
    let c = container(&sts);
    assert_eq!(env(&c, "KUBERAFT_CLIENT_CERT_AUTH"), None);
    assert_eq!(
        resources::member_tls_secret(&rc).as_deref(),
        Some("from-cert-manager")
    );
    let c = container(&statefulset(&fixture("demo"), 3));
    assert_eq!(env(&c, "KUBERAFT_PEER_CERT_FILE"), None);
    assert!(c.readiness_probe.as_ref().is_some_and(|p| p.grpc.is_some()));
    assert_eq!(c.volume_mounts.iter().flatten().count(), 2);
}
