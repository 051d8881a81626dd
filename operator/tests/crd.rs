//! The committed CRD is the generated one.

use kuberaft_operator::crd::crd_yaml;

#[test]
fn the_committed_crd_is_the_generated_one() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/crds/raftclusters.kuberaft.io.yaml"
    );
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = crd_yaml().expect("the CRD serializes");
    assert!(
        committed == generated,
        "{path} differs from the generated CRD; regenerate it with\n  cargo run -p kuberaft-operator -- crd > deploy/crds/raftclusters.kuberaft.io.yaml"
    );
}

#[test]
fn the_crd_has_printer_columns_short_names_scale_and_cel_rules() {
    let yaml = crd_yaml().expect("the CRD serializes");
    for needle in [
        "name: Ready",
        "name: Leader",
        "name: Term",
        "name: Phase",
        "name: Age",
        "- raft",
        "specReplicasPath: .spec.replicas",
        "statusReplicasPath: .status.replicas",
        "labelSelectorPath: .status.selector",
        "rule: self.electionTimeoutMinMs < self.electionTimeoutMaxMs",
        "rule: self.heartbeatIntervalMs < self.electionTimeoutMinMs",
        "rule: self.size == oldSelf.size",
    ] {
        assert!(yaml.contains(needle), "the CRD lacks {needle:?}");
    }
    assert!(
        !yaml.contains("uint"),
        "the schema uses signed integers only"
    );
}
