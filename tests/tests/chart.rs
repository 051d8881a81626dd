//! The Helm chart and the manifests under `deploy/`, checked without helm or a cluster:
//! values against the values schema, the chart's CRD against the generated one, every manifest
//! parsed, the examples read as the operator's own `RaftCluster` type and validated by the CRD's
//! schema and CEL rules, and the RBAC against the list of API calls the operator makes
//! (`kuberaft_tests::manifests::OPERATOR_API_CALLS`), and the Grafana dashboard's queries against
//! the metrics the programs export (`kuberaft_tests::monitoring`). `chart_tools.rs` does the same
//! through the real helm and kube-apiserver when they are available, alerts included.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kuberaft_operator::crd::{RaftCluster, RaftSettings, Storage, crd_yaml};
use kuberaft_tests::manifests::{
    IMPLIED_GRANTS, OPERATOR_API_CALLS, Scope, api_types_in_operator_source, documents,
    expected_rejection, file_documents, grants, identity, repo_root, required_grants, str_at,
    template_literal_parts, yaml_files,
};
use kuberaft_tests::monitoring::{Exported, check_dashboard};
use serde_json::{Value as Json, json};
use serde_yaml::Value;

fn chart() -> PathBuf {
    repo_root().join("charts").join("kuberaft-operator")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn yaml_to_json(v: &Value) -> Json {
    serde_json::to_value(v).expect("YAML values convert to JSON")
}

fn values_validator() -> jsonschema::Validator {
    let schema: Json = serde_json::from_str(&read(&chart().join("values.schema.json")))
        .expect("values.schema.json is JSON");
    jsonschema::validator_for(&schema).expect("values.schema.json is a valid JSON Schema")
}

fn default_values() -> Json {
    let docs = file_documents(&chart().join("values.yaml")).expect("values.yaml parses");
    yaml_to_json(docs.first().expect("values.yaml has a document"))
}

/// Helm's merge of a values file over the defaults: maps merge key by key, anything else is
/// replaced.
fn merged(mut base: Json, over: &Json) -> Json {
    match (base.as_object_mut(), over.as_object()) {
        (Some(b), Some(o)) => {
            for (k, v) in o {
                let merged_value = match b.remove(k) {
                    Some(old) => merged(old, v),
                    None => v.clone(),
                };
                b.insert(k.clone(), merged_value);
            }
            base
        }
        _ => over.clone(),
    }
}

fn schema_errors(values: &Json) -> Vec<String> {
    values_validator()
        .iter_errors(values)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn default_values_and_every_ci_values_file_meet_the_schema() {
    let defaults = default_values();
    let errors = schema_errors(&defaults);
    assert!(errors.is_empty(), "values.yaml: {errors:#?}");
    let ci = yaml_files(&chart().join("ci"));
    assert!(
        ci.len() >= 4,
        "charts/kuberaft-operator/ci/ has example values files"
    );
    for path in ci {
        let docs = file_documents(&path).expect("a ci values file parses");
        let over = yaml_to_json(docs.first().expect("one document"));
        let errors = schema_errors(&merged(defaults.clone(), &over));
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    }
}

#[test]
fn the_schema_rejects_bad_values() {
    let defaults = default_values();
    let cases = [
        (
            "two replicas without leader election",
            json!({"replicaCount": 2}),
        ),
        ("zero replicas", json!({"replicaCount": 0})),
        ("a misspelt key", json!({"replicas": 1})),
        (
            "an unknown pull policy",
            json!({"image": {"pullPolicy": "Sometimes"}}),
        ),
        (
            "an unknown log format",
            json!({"operator": {"logFormat": "xml"}}),
        ),
        (
            "a port number as a string",
            json!({"operator": {"httpPort": "8080"}}),
        ),
        (
            "a ServiceMonitor without the metrics Service",
            json!({"metrics": {"service": {"enabled": false}, "serviceMonitor": {"enabled": true}}}),
        ),
        (
            "an example of 10 members",
            json!({"exampleCluster": {"replicas": 10}}),
        ),
        (
            "an empty NetworkPolicy peer (it would allow everything)",
            json!({"networkPolicy": {"clientFrom": [{}]}}),
        ),
        (
            "a cluster name that is not a DNS label",
            json!({"networkPolicy": {"clusters": [{"name": "Demo_1"}]}}),
        ),
        (
            "a misspelt dashboard switch",
            json!({"grafanaDashboard": {"enable": true}}),
        ),
        (
            "an fsync threshold with a unit",
            json!({"prometheusRule": {"fsyncP99Seconds": "100ms"}}),
        ),
        (
            "a runbook URL with an anchor of its own (each alert adds one)",
            json!({"prometheusRule": {"runbookBaseUrl": "https://example.com/README.md#runbooks"}}),
        ),
        (
            "a job label that would end the PromQL string",
            json!({"prometheusRule": {"memberJob": "raft/\"members"}}),
        ),
    ];
    for (what, over) in cases {
        let errors = schema_errors(&merged(defaults.clone(), &over));
        assert!(!errors.is_empty(), "the schema accepts {what}: {over}");
    }
    let fine = merged(
        defaults,
        &json!({"replicaCount": 2, "leaderElection": {"enabled": true}}),
    );
    assert!(
        schema_errors(&fine).is_empty(),
        "two replicas with leader election are fine"
    );
}

#[test]
fn the_charts_crd_is_deploys_crd_and_the_generated_one() {
    let in_chart = read(&chart().join("files").join("raftclusters.kuberaft.io.yaml"));
    let in_deploy = read(
        &repo_root()
            .join("deploy")
            .join("crds")
            .join("raftclusters.kuberaft.io.yaml"),
    );
    let generated = crd_yaml().expect("the CRD serializes");
    assert!(
        in_chart == in_deploy,
        "charts/kuberaft-operator/files/raftclusters.kuberaft.io.yaml differs from deploy/crds/; copy it:\n  cp deploy/crds/raftclusters.kuberaft.io.yaml charts/kuberaft-operator/files/"
    );
    assert!(
        in_deploy == generated,
        "deploy/crds/ differs from the generated CRD; regenerate it:\n  cargo run -p kuberaft-operator -- crd > deploy/crds/raftclusters.kuberaft.io.yaml"
    );
    let template = read(&chart().join("templates").join("crd.yaml"));
    assert!(
        template.contains(".Files.Get \"files/raftclusters.kuberaft.io.yaml\"")
            && template.contains("helm.sh/resource-policy"),
        "templates/crd.yaml renders files/ with the keep policy"
    );
}

#[test]
fn every_manifest_under_deploy_parses_and_names_itself() {
    let files = yaml_files(&repo_root().join("deploy"));
    assert!(files.len() >= 10, "deploy/ has manifests: {files:?}");
    let mut objects = 0;
    for path in files {
        let docs = file_documents(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!docs.is_empty(), "{} has no document", path.display());
        for doc in docs {
            objects += 1;
            let kind_config =
                str_at(&doc, &["apiVersion"]).is_some_and(|v| v.starts_with("kind.x-k8s.io/"));
            if kind_config {
                // kind's own config names itself at the top level, not in metadata.
                assert!(
                    str_at(&doc, &["name"]).is_some(),
                    "{}: no name",
                    path.display()
                );
                continue;
            }
            if let Err(e) = identity(&doc) {
                panic!("{}: {e}", path.display());
            }
        }
    }
    println!("{objects} objects under deploy/ parse and name themselves");
}

/// The CRD's OpenAPI schema of a RaftCluster, as a JSON Schema validator (the keywords the
/// ranges and enums use are the same in both; Kubernetes' own extensions are ignored).
fn crd_schema_validator() -> jsonschema::Validator {
    let docs = file_documents(
        &repo_root()
            .join("deploy")
            .join("crds")
            .join("raftclusters.kuberaft.io.yaml"),
    )
    .expect("the CRD parses");
    let crd = yaml_to_json(&docs[0]);
    let schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    assert!(schema.is_object(), "the CRD has an openAPIV3Schema");
    jsonschema::validator_for(&schema).expect("the CRD's schema compiles")
}

/// Why the API server would reject `doc`, judged locally: the schema's ranges and enums, then
/// the operator's own type, then the CEL rules (evaluated by kube's `cel` feature).
fn local_rejection(validator: &jsonschema::Validator, doc: &Value) -> Option<String> {
    let json = yaml_to_json(doc);
    let schema_errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if !schema_errors.is_empty() {
        return Some(schema_errors.join("; "));
    }
    let rc: RaftCluster = match serde_json::from_value(json) {
        Ok(rc) => rc,
        Err(e) => return Some(format!("not a RaftCluster: {e}")),
    };
    // Defaults filled in, as the API server does before it runs the rules.
    let raft = serde_json::to_value(&rc.spec.raft).expect("settings serialize");
    if let Err(e) = RaftSettings::validate_cel(&raft, None) {
        return Some(e.to_string());
    }
    let storage = serde_json::to_value(&rc.spec.storage).expect("storage serializes");
    if let Err(e) = Storage::validate_cel(&storage, None) {
        return Some(e.to_string());
    }
    None
}

fn examples() -> Vec<PathBuf> {
    yaml_files(&repo_root().join("deploy").join("examples"))
        .into_iter()
        .filter(|p| !p.components().any(|c| c.as_os_str() == "invalid"))
        .collect()
}

fn invalid_examples() -> Vec<PathBuf> {
    yaml_files(&repo_root().join("deploy").join("examples").join("invalid"))
}

#[test]
fn the_examples_are_valid_raft_clusters() {
    let validator = crd_schema_validator();
    let examples = examples();
    assert!(
        examples.len() >= 2,
        "deploy/examples/ has the 3- and 5-member clusters"
    );
    let mut sizes = BTreeSet::new();
    for path in examples {
        for doc in file_documents(&path).unwrap_or_else(|e| panic!("{e}")) {
            let rc: RaftCluster = serde_yaml::from_value(doc.clone())
                .unwrap_or_else(|e| panic!("{} is not a RaftCluster: {e}", path.display()));
            if let Some(why) = local_rejection(&validator, &doc) {
                panic!("{} would be rejected: {why}", path.display());
            }
            sizes.insert(rc.spec.replicas);
            if rc.spec.replicas == 5 {
                assert!(
                    rc.spec.storage.storage_class_name.is_some() && rc.spec.resources.is_some(),
                    "{}: the 5-member example sets a storage class and resources",
                    path.display()
                );
            }
        }
    }
    assert!(sizes.contains(&3) && sizes.contains(&5), "sizes: {sizes:?}");
}

#[test]
fn every_invalid_example_names_its_rejection_and_is_rejected() {
    let validator = crd_schema_validator();
    let files = invalid_examples();
    assert!(files.len() >= 5, "deploy/examples/invalid/ has bad specs");
    for path in files {
        let text = read(&path);
        let expected = expected_rejection(&text).unwrap_or_else(|| {
            panic!(
                "{} has no `# expect: <API server message>` line",
                path.display()
            )
        });
        let docs = documents(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(docs.len(), 1, "{}: one object per file", path.display());
        let why = local_rejection(&validator, &docs[0])
            .unwrap_or_else(|| panic!("{} is accepted locally", path.display()));
        // CEL messages are the operator's own, so they must match exactly; schema messages are
        // worded differently here and by the API server (chart_tools.rs checks those there).
        if expected.starts_with("spec.raft.") && expected.contains("must be less than") {
            assert!(
                why.contains(&expected),
                "{}: expected {expected:?}, got {why:?}",
                path.display()
            );
        }
    }
}

/// The `rules:` of a chart template, read from its literal YAML.
fn template_rules(template: &str) -> Vec<Value> {
    let text = read(&chart().join("templates").join(template));
    let docs = documents(&template_literal_parts(&text))
        .unwrap_or_else(|e| panic!("the literal parts of {template} parse: {e}"));
    docs.iter()
        .filter_map(|d| d.get("rules").cloned())
        .collect()
}

#[test]
fn every_api_type_in_the_operators_code_is_in_the_list_of_calls() {
    let in_code = api_types_in_operator_source();
    let listed: BTreeSet<(String, String)> = OPERATOR_API_CALLS
        .iter()
        .map(|c| (c.file.to_string(), c.api_type.to_string()))
        .collect();
    assert!(!in_code.is_empty(), "operator/src was read");
    assert_eq!(
        in_code, listed,
        "operator/src's Api<T> uses (left) differ from OPERATOR_API_CALLS in tests/src/manifests.rs (right): \
         list each new call with the verbs it needs, then update the chart's RBAC"
    );
    for (file, needle, _, _) in IMPLIED_GRANTS {
        let text = read(&repo_root().join("operator").join("src").join(file));
        assert!(
            text.contains(needle),
            "operator/src/{file} no longer uses {needle}; revisit IMPLIED_GRANTS"
        );
    }
}

#[test]
fn the_charts_rbac_grants_exactly_the_operators_api_calls() {
    let cluster_rules = template_rules("clusterrole.yaml");
    assert_eq!(cluster_rules.len(), 1, "one ClusterRole");
    let granted = grants(&cluster_rules[0]);
    let needed = required_grants(Scope::AllNamespaces);
    let missing: Vec<String> = needed.difference(&granted).map(|g| g.to_string()).collect();
    let extra: Vec<String> = granted.difference(&needed).map(|g| g.to_string()).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "ClusterRole: missing {missing:?}, not needed {extra:?}"
    );

    let role_text = read(&chart().join("templates").join("role.yaml"));
    let role_rules = template_rules("role.yaml");
    assert_eq!(
        role_rules.len(),
        1,
        "one Role (the RoleBinding has no rules)"
    );
    assert_eq!(
        grants(&role_rules[0]),
        required_grants(Scope::OperatorNamespace),
        "the leader-election Role"
    );
    assert!(
        role_text.contains(".Values.leaderElection.enabled"),
        "the Role exists only with leader election"
    );
}

#[test]
fn deploys_operator_manifests_are_the_charts_objects() {
    let dir = repo_root().join("deploy").join("operator");
    let mut objects = Vec::new();
    for path in yaml_files(&dir) {
        objects.extend(file_documents(&path).unwrap_or_else(|e| panic!("{e}")));
    }
    let kinds: BTreeSet<String> = objects
        .iter()
        .filter_map(|d| str_at(d, &["kind"]).map(str::to_string))
        .collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.contains(kind), "deploy/operator/ has a {kind}");
    }
    let role = objects
        .iter()
        .find(|d| str_at(d, &["kind"]) == Some("ClusterRole"))
        .expect("a ClusterRole");
    assert_eq!(
        role.get("rules"),
        template_rules("clusterrole.yaml").first(),
        "deploy/operator's ClusterRole rules are the chart's"
    );

    let deployment = objects
        .iter()
        .find(|d| str_at(d, &["kind"]) == Some("Deployment"))
        .expect("a Deployment");
    let deployment = yaml_to_json(deployment);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], json!(true));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        json!("RuntimeDefault")
    );
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], json!(true));
    assert_eq!(sc["allowPrivilegeEscalation"], json!(false));
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["port"],
            json!("http"),
            "{probe}"
        );
    }
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"],
        json!("/readyz")
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"],
        json!("/livez")
    );

    // The image tags follow the chart's appVersion, which is the operator's version.
    let chart_yaml = read(&chart().join("Chart.yaml"));
    let app_version = format!("\"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(
        chart_yaml.contains(&format!("appVersion: {app_version}")),
        "Chart.yaml's appVersion is the crates' version {app_version}"
    );
    assert_eq!(
        container["image"],
        json!(format!("kuberaft-operator:{}", env!("CARGO_PKG_VERSION")))
    );
}

#[test]
fn every_environment_variable_the_operator_gets_is_one_it_reads() {
    let main = read(&repo_root().join("operator").join("src").join("main.rs"));
    let known = |name: &str| name == "RUST_LOG" || main.contains(&format!("env = \"{name}\""));
    let template = read(&chart().join("templates").join("deployment.yaml"));
    let deployment = read(
        &repo_root()
            .join("deploy")
            .join("operator")
            .join("40-deployment.yaml"),
    );
    for text in [&template, &deployment] {
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- name: "))
            .filter(|n| n.starts_with("KUBERAFT_") || *n == "RUST_LOG")
            .collect();
        assert!(
            names.len() >= 6,
            "the operator gets its settings: {names:?}"
        );
        for name in names {
            assert!(
                known(name),
                "{name} is not a flag's environment variable in operator/src/main.rs"
            );
        }
    }
}

fn exported() -> Exported {
    Exported::of_programs().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_dashboard_reads_only_what_the_programs_export() {
    let text = read(&chart().join("dashboards").join("kuberaft.json"));
    if let Err(e) = check_dashboard(&text, &exported()) {
        panic!("charts/kuberaft-operator/dashboards/kuberaft.json: {e}");
    }
}

/// The check the dashboard and the alerts pass is one that fails on a wrong name.
#[test]
fn the_metric_check_catches_names_the_programs_do_not_export() {
    let exported = exported();
    for good in [
        r#"sum by (namespace, app_kubernetes_io_instance) (kuberaft_role{role="leader"})"#,
        "rate(kuberaft_leader_changes_total[5m])",
        "histogram_quantile(0.99, sum by (le) (rate(kuberaft_operator_reconcile_duration_seconds_bucket[5m])))",
        r#"kuberaft_snapshots_total{kind=~"sent|installed"}"#,
        r#"up{job="raft/members"} == 0"#,
        "sum by (reason) (kuberaft_operator_reconcile_errors_total)",
    ] {
        let problems = exported.problems(good);
        assert!(problems.is_empty(), "{good}: {problems:?}");
    }
    for (what, bad) in [
        (
            "a misspelt metric",
            "rate(kuberaft_leader_change_total[5m])",
        ),
        (
            "a counter without _total",
            "rate(kuberaft_leader_changes[5m])",
        ),
        (
            "a histogram without _bucket",
            "histogram_quantile(0.99, rate(kuberaft_fsync_seconds[5m]))",
        ),
        (
            "an operator metric without its prefix",
            "kuberaft_reconciles_total",
        ),
        ("a misspelt label", r#"kuberaft_role{rol="leader"}"#),
        (
            "a misspelt grouping label",
            "sum by (namespaces) (kuberaft_term)",
        ),
        (
            "a role no member reports",
            r#"kuberaft_role{role="leaders"}"#,
        ),
        (
            "a snapshot kind never counted",
            r#"kuberaft_snapshots_total{kind=~"sent|received"}"#,
        ),
        (
            "a misspelt function",
            "histogram_quantle(0.5, kuberaft_fsync_seconds_bucket)",
        ),
        ("unbalanced parentheses", "sum(kuberaft_term"),
    ] {
        assert!(
            !exported.problems(bad).is_empty(),
            "{what} passes the check: {bad}"
        );
    }
}
