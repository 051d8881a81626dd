//! The chart and `deploy/` checked with the real tools, when they are here:
//!
//! - helm (`HELM`, else `helm` on PATH): `helm lint --strict` of every chart, `helm template`
//!   with the default values and with each `charts/kuberaft-operator/ci/*.yaml` (and lint with
//!   each); every rendered document parses and names itself, the RBAC is exactly the operator's
//!   API calls, the default render is `deploy/operator/`, the rendered CRD is `deploy/crds/`, and
//!   the Grafana dashboard and PrometheusRule render exactly when switched on, naming only the
//!   metrics the programs export, each alert with a runbook in README.md
//!   (`kuberaft_tests::monitoring`).
//! - a kube-apiserver and etcd (`KUBEBUILDER_ASSETS`, the envtest convention), with RBAC
//!   authorization on: a server-side dry-run apply of every rendered object, of `deploy/` and of
//!   every example RaftCluster; each bad spec under `deploy/examples/invalid/` rejected with the
//!   message its `# expect:` line names; and the installed RBAC asked (SubjectAccessReview)
//!   whether the operator's ServiceAccount may make each call it makes, and no others.
//!
//! A missing tool is reported as SKIPPED with the reason (a failure with `KUBERAFT_NO_SKIP=1`,
//! as in CI); nothing passes silently. The harness
//! is its own `main` so that the report is always printed.

// The operator's real-API tier starts the server; its helper is shared, not copied.
#[allow(dead_code)]
#[path = "../../operator/tests/support/envtest.rs"]
mod envtest;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope as KubeScope};
use kuberaft_tests::manifests::{
    Grant, Scope, expected_rejection, file_documents, grants, identity, repo_root, required_grants,
    str_at, yaml_files,
};
use serde_json::Value as Json;
use serde_yaml::Value;

/// The version helm renders for: the API server the operator's real-API tier was measured on.
/// (A helm built without release flags would otherwise assume 1.20, below the chart's minimum.)
const KUBE_VERSION: &str = "1.32.0";
const RELEASE: &str = "kuberaft-operator";
const NAMESPACE: &str = "kuberaft-system";
const FIELD_MANAGER: &str = "kuberaft-chart-tools";

/// One rendering of the chart: which values, and the objects.
struct Render {
    values: String,
    objects: Vec<Value>,
}

struct Report {
    passed: usize,
    failed: Vec<String>,
}

impl Report {
    /// A tier that could not run: a failure where skips are failures (CI).
    fn skipped(&mut self, what: &str) {
        if kuberaft_tests::skip::skips_are_failures() {
            println!("chart tools: {what} ... FAILED: skipped, and KUBERAFT_NO_SKIP=1");
            self.failed.push(format!("{what} (skipped)"));
        }
    }

    fn check(&mut self, name: &str, result: Result<String, String>) {
        match result {
            Ok(detail) => {
                self.passed += 1;
                println!("chart tools: {name} ... ok {detail}");
            }
            Err(why) => {
                println!("chart tools: {name} ... FAILED\n{why}");
                self.failed.push(name.to_string());
            }
        }
    }
}

fn main() -> ExitCode {
    let mut report = Report {
        passed: 0,
        failed: Vec::new(),
    };
    let renders = match helm() {
        Ok(helm) => Some(helm_tier(&helm, &mut report)),
        Err(why) => {
            eprintln!(
                "chart tools: helm tier SKIPPED: {why}; see README.md, \"Chart and manifest checks\""
            );
            println!("chart tools: helm tier SKIPPED: {why}");
            report.skipped("the helm tier");
            None
        }
    };
    match envtest::assets() {
        Ok(assets) => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(apiserver_tier(&assets, renders.as_deref(), &mut report)),
            Err(e) => report.check("a tokio runtime", Err(e.to_string())),
        },
        Err(why) => {
            eprintln!(
                "chart tools: API-server tier SKIPPED: {why}; see README.md, \"Chart and manifest checks\""
            );
            println!("chart tools: API-server tier SKIPPED: {why}");
            report.skipped("the API-server tier");
        }
    }
    println!(
        "chart tools: {} passed, {} failed",
        report.passed,
        report.failed.len()
    );
    if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The helm binary: `HELM`, else `helm` on PATH.
fn helm() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("HELM") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("HELM={} is not a file", path.display()))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("helm"))
        .find(|p| p.is_file())
        .ok_or_else(|| "helm not found (set HELM=/path/to/helm or put helm on PATH)".to_string())
}

fn run(command: &mut Command) -> Result<String, String> {
    let out = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{command:?} failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn chart() -> PathBuf {
    repo_root().join("charts").join("kuberaft-operator")
}

fn helm_tier(helm: &Path, report: &mut Report) -> Vec<Render> {
    let charts: Vec<PathBuf> = std::fs::read_dir(repo_root().join("charts"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Chart.yaml").is_file())
        .collect();
    for dir in &charts {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        report.check(
            &format!("helm lint --strict {name}"),
            run(Command::new(helm).args(["lint", "--strict"]).arg(dir)).map(|_| String::new()),
        );
    }
    // Linted with each ci/ file too: templates behind a switch (the dashboard, the alerts) are
    // only linted when it is on.
    for file in yaml_files(&chart().join("ci")) {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        report.check(
            &format!("helm lint --strict --values ci/{name}"),
            run(Command::new(helm)
                .args(["lint", "--strict"])
                .arg(chart())
                .arg("--values")
                .arg(&file))
            .map(|_| String::new()),
        );
    }
    let exported = kuberaft_tests::monitoring::Exported::of_programs();
    if let Err(e) = &exported {
        report.check("the metrics the programs export", Err(e.clone()));
    }
    let mut monitoring_checked = false;
    let mut policies_checked = 0;

    let mut value_files: Vec<Option<PathBuf>> = vec![None];
    value_files.extend(yaml_files(&chart().join("ci")).into_iter().map(Some));
    let mut renders = Vec::new();
    for file in value_files {
        let label = file
            .as_ref()
            .and_then(|f| f.file_name())
            .map_or("default values".to_string(), |f| {
                f.to_string_lossy().into_owned()
            });
        let mut command = Command::new(helm);
        command.args(["template", RELEASE]).arg(chart()).args([
            "--namespace",
            NAMESPACE,
            "--kube-version",
            KUBE_VERSION,
        ]);
        if let Some(f) = &file {
            command.arg("--values").arg(f);
        }
        let rendered = run(&mut command).and_then(|text| {
            kuberaft_tests::manifests::documents(&text)
                .map_err(|e| format!("the rendered chart does not parse: {e}"))
        });
        let objects = match rendered {
            Ok(objects) => objects,
            Err(why) => {
                report.check(&format!("helm template ({label})"), Err(why));
                continue;
            }
        };
        let values = file
            .as_ref()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default());
        report.check(
            &format!("helm template ({label}): objects and RBAC"),
            check_render(&objects, values.as_deref().unwrap_or("")),
        );
        let policies = kuberaft_tests::network_policy::check(&objects);
        policies_checked += policies.as_ref().map_or(0, |n| *n);
        report.check(
            &format!("helm template ({label}): the admin port only for members and the operator"),
            policies.map(|n| format!("({n} NetworkPolicies)")),
        );
        if let Ok(exported) = &exported {
            let kinds: BTreeSet<&str> = objects.iter().map(kind_of).collect();
            monitoring_checked |= kinds.contains("PrometheusRule") && kinds.contains("ConfigMap");
            report.check(
                &format!("helm template ({label}): dashboard and alerts"),
                kuberaft_tests::monitoring::check_rendered(
                    &objects,
                    values.as_deref().unwrap_or(""),
                    exported,
                ),
            );
        }
        renders.push(Render {
            values: label,
            objects,
        });
    }
    report.check(
        "a ci/ values file renders the dashboard and the alerts",
        if monitoring_checked {
            Ok(String::new())
        } else {
            Err("no render had both; turn them on in ci/monitoring-values.yaml".to_string())
        },
    );
    report.check(
        "a ci/ values file renders NetworkPolicies",
        if policies_checked > 0 {
            Ok(String::new())
        } else {
            Err("no render had one; turn them on in ci/networkpolicy-values.yaml".to_string())
        },
    );
    report.check(
        "deploy/networkpolicy/: the admin port only for members and the operator",
        deploy_objects(&repo_root().join("deploy").join("networkpolicy")).and_then(|objects| {
            match kuberaft_tests::network_policy::check(&objects)? {
                0 => Err("no NetworkPolicy in deploy/networkpolicy/".to_string()),
                n => Ok(format!("({n} NetworkPolicies)")),
            }
        }),
    );
    if let Some(default) = renders.first() {
        report.check(
            "deploy/operator/ is the default render",
            same_as_deploy_operator(&default.objects),
        );
        report.check(
            "the rendered CRD is deploy/crds/",
            rendered_crd_is_deploys(&default.objects),
        );
    }
    renders
}

fn kind_of(doc: &Value) -> &str {
    str_at(doc, &["kind"]).unwrap_or("")
}

fn rules_of(objects: &[Value], kind: &str) -> Vec<BTreeSet<Grant>> {
    objects
        .iter()
        .filter(|d| kind_of(d) == kind)
        .filter_map(|d| d.get("rules").map(grants))
        .collect()
}

/// Every object names itself; the RBAC (when rendered) is exactly what the operator calls; the
/// leader-election Role exists exactly when leader election is on.
fn check_render(objects: &[Value], values: &str) -> Result<String, String> {
    let mut names = BTreeSet::new();
    for doc in objects {
        let id = identity(doc).map_err(|e| format!("a rendered object: {e}: {doc:?}"))?;
        let namespace = str_at(doc, &["metadata", "namespace"])
            .unwrap_or("")
            .to_string();
        if !names.insert((id.1.clone(), namespace, id.2.clone())) {
            return Err(format!("{} {} is rendered twice", id.1, id.2));
        }
    }
    // The switches as the values file sets them (the defaults: RBAC on, leader election off).
    let values: Value = serde_yaml::from_str(values).unwrap_or(Value::Null);
    let switch = |path: &[&str]| {
        let mut v = &values;
        for key in path {
            match v.get(*key) {
                Some(next) => v = next,
                None => return None,
            }
        }
        v.as_bool()
    };
    let rbac_off = switch(&["rbac", "create"]) == Some(false);
    let le_on = switch(&["leaderElection", "enabled"]) == Some(true);
    let cluster_roles = rules_of(objects, "ClusterRole");
    if rbac_off {
        if !cluster_roles.is_empty() {
            return Err("rbac.create=false still renders a ClusterRole".to_string());
        }
    } else {
        let needed = required_grants(Scope::AllNamespaces);
        if cluster_roles != vec![needed.clone()] {
            return Err(format!(
                "the ClusterRole grants {cluster_roles:?}, the operator needs {needed:?}"
            ));
        }
    }
    let roles = rules_of(objects, "Role");
    match (le_on && !rbac_off, roles.as_slice()) {
        (true, [role]) if *role == required_grants(Scope::OperatorNamespace) => {}
        (false, []) => {}
        (on, found) => {
            return Err(format!(
                "leader election {on}: Roles {found:?} (the Lease needs {:?})",
                required_grants(Scope::OperatorNamespace)
            ));
        }
    }
    Ok(format!("({} objects)", objects.len()))
}

/// An object without the labels that say who applied it (helm or kubectl).
fn without_tool_labels(doc: &Value) -> Json {
    let mut json = serde_json::to_value(doc).unwrap_or_default();
    if let Some(labels) = json
        .pointer_mut("/metadata/labels")
        .and_then(Json::as_object_mut)
    {
        labels.remove("helm.sh/chart");
        labels.remove("app.kubernetes.io/managed-by");
    }
    json
}

fn deploy_objects(dir: &Path) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for path in yaml_files(dir) {
        out.extend(file_documents(&path)?);
    }
    Ok(out)
}

fn same_as_deploy_operator(rendered: &[Value]) -> Result<String, String> {
    let deploy = deploy_objects(&repo_root().join("deploy").join("operator"))?;
    let mut compared = 0;
    for doc in rendered
        .iter()
        .filter(|d| kind_of(d) != "CustomResourceDefinition")
    {
        let (_, kind, name) = identity(doc)?;
        let Some(mine) = deploy
            .iter()
            .find(|d| identity(d).is_ok_and(|(_, k, n)| k == kind && n == name))
        else {
            return Err(format!("deploy/operator/ has no {kind} {name}"));
        };
        if without_tool_labels(doc) != without_tool_labels(mine) {
            return Err(format!(
                "deploy/operator/'s {kind} {name} differs from the chart's; render it again:\n  helm template {RELEASE} charts/kuberaft-operator -n {NAMESPACE}"
            ));
        }
        compared += 1;
    }
    Ok(format!("({compared} objects)"))
}

/// JSON with every number as a float: helm's YAML round trip turns `9.0` into `9`.
fn numbers_as_floats(v: Json) -> Json {
    match v {
        Json::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Json::Null, Json::Number),
        Json::Array(a) => Json::Array(a.into_iter().map(numbers_as_floats).collect()),
        Json::Object(o) => Json::Object(
            o.into_iter()
                .map(|(k, v)| (k, numbers_as_floats(v)))
                .collect(),
        ),
        other => other,
    }
}

fn rendered_crd_is_deploys(rendered: &[Value]) -> Result<String, String> {
    let crd = rendered
        .iter()
        .find(|d| kind_of(d) == "CustomResourceDefinition")
        .ok_or("the default render has no CRD")?;
    let deploy = file_documents(
        &repo_root()
            .join("deploy")
            .join("crds")
            .join("raftclusters.kuberaft.io.yaml"),
    )?;
    let spec =
        |d: &Value| numbers_as_floats(serde_json::to_value(d.get("spec")).unwrap_or_default());
    if spec(crd) != spec(&deploy[0]) {
        return Err("the chart's rendered CRD spec differs from deploy/crds/".to_string());
    }
    let keep = str_at(crd, &["metadata", "annotations", "helm.sh/resource-policy"]);
    if keep != Some("keep") {
        return Err(format!(
            "the CRD's helm.sh/resource-policy is {keep:?}, not keep"
        ));
    }
    Ok(String::new())
}

// ---------------------------------------------------------------------------------------------
// The API-server tier.

async fn apiserver_tier(assets: &Path, renders: Option<&[Render]>, report: &mut Report) {
    let started = Instant::now();
    let server = envtest::TestApiServer::start_with_authorization(assets, "RBAC").await;
    println!(
        "chart tools: kube-apiserver and etcd up with RBAC authorization in {:.1?}",
        started.elapsed()
    );
    let client = server.client.clone();
    report.check(
        "namespaces and the CRD installed",
        install_basics(&client).await,
    );
    let discovery = match Discovery::new(client.clone()).run().await {
        Ok(d) => d,
        Err(e) => {
            report.check("API discovery", Err(e.to_string()));
            return;
        }
    };
    match renders {
        Some(renders) => {
            for render in renders {
                report.check(
                    &format!("server-side dry run of the chart ({})", render.values),
                    dry_run_all(&client, &discovery, &render.objects).await,
                );
            }
        }
        None => {
            println!(
                "chart tools: dry run of the rendered chart SKIPPED: helm not found (set HELM=...)"
            );
            report.skipped("the dry run of the rendered chart");
        }
    }
    for (what, dir) in [
        (
            "deploy/operator",
            repo_root().join("deploy").join("operator"),
        ),
        ("deploy/crds", repo_root().join("deploy").join("crds")),
        (
            "deploy/networkpolicy",
            repo_root().join("deploy").join("networkpolicy"),
        ),
    ] {
        let result = match deploy_objects(&dir) {
            Ok(objects) => dry_run_all(&client, &discovery, &objects).await,
            Err(e) => Err(e),
        };
        report.check(&format!("server-side dry run of {what}/"), result);
    }
    let examples: Vec<PathBuf> = yaml_files(&repo_root().join("deploy").join("examples"))
        .into_iter()
        .filter(|p| !p.components().any(|c| c.as_os_str() == "invalid"))
        .collect();
    for path in examples {
        let result = match file_documents(&path) {
            Ok(objects) => dry_run_all(&client, &discovery, &objects).await,
            Err(e) => Err(e),
        };
        report.check(&format!("server-side dry run of {}", short(&path)), result);
    }
    for path in yaml_files(&repo_root().join("deploy").join("examples").join("invalid")) {
        report.check(
            &format!("{} is rejected as its comment says", short(&path)),
            rejected_as_expected(&client, &discovery, &path).await,
        );
    }
    let leader_election = renders.and_then(|r| {
        r.iter()
            .find(|r| r.values.starts_with("leader-election"))
            .map(|r| r.objects.as_slice())
    });
    report.check(
        "the operator's ServiceAccount may make exactly its calls (SubjectAccessReview)",
        rbac_allows_exactly_the_calls(&client, &discovery, leader_election).await,
    );
    drop(server);
}

fn short(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

async fn install_basics(client: &Client) -> Result<String, String> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for name in [NAMESPACE, "raft"] {
        let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        namespaces
            .patch(name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&ns))
            .await
            .map_err(|e| format!("namespace {name}: {e}"))?;
    }
    let crd_docs = file_documents(
        &repo_root()
            .join("deploy")
            .join("crds")
            .join("raftclusters.kuberaft.io.yaml"),
    )?;
    let crd = serde_json::to_value(&crd_docs[0]).map_err(|e| e.to_string())?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "raftclusters.kuberaft.io",
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(&crd),
    )
    .await
    .map_err(|e| format!("the CRD: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let established = crds
            .get("raftclusters.kuberaft.io")
            .await
            .ok()
            .and_then(|c| c.status)
            .and_then(|s| s.conditions)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if established {
            return Ok(String::new());
        }
        if Instant::now() > deadline {
            return Err("the CRD was not Established within 30 s".to_string());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Api for `doc`'s kind, in its namespace (`default` when it names none), or None when the
/// server does not serve the kind.
fn api_for(
    client: &Client,
    discovery: &Discovery,
    doc: &Value,
) -> Result<Option<Api<DynamicObject>>, String> {
    let (api_version, kind, _) = identity(doc)?;
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.clone()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, &kind);
    let Some((resource, caps)) = discovery.resolve_gvk(&gvk) else {
        return Ok(None);
    };
    Ok(Some(match caps.scope {
        KubeScope::Cluster => Api::all_with(client.clone(), &resource),
        KubeScope::Namespaced => {
            let ns = str_at(doc, &["metadata", "namespace"]).unwrap_or("default");
            Api::namespaced_with(client.clone(), ns, &resource)
        }
    }))
}

async fn dry_run(client: &Client, discovery: &Discovery, doc: &Value) -> Result<bool, String> {
    let Some(api) = api_for(client, discovery, doc)? else {
        return Ok(false);
    };
    let (_, _, name) = identity(doc)?;
    let body = serde_json::to_value(doc).map_err(|e| e.to_string())?;
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).dry_run(),
        &Patch::Apply(&body),
    )
    .await
    .map(|_| true)
    .map_err(|e| format!("{e}"))
}

/// Dry-runs every object; kinds the server does not serve (the Prometheus Operator's) are named
/// in the result, not hidden.
async fn dry_run_all(
    client: &Client,
    discovery: &Discovery,
    objects: &[Value],
) -> Result<String, String> {
    let mut checked = 0;
    let mut unserved = BTreeSet::new();
    for doc in objects {
        match dry_run(client, discovery, doc).await {
            Ok(true) => checked += 1,
            Ok(false) => {
                unserved.insert(kind_of(doc).to_string());
            }
            Err(e) => {
                let id = identity(doc)
                    .map(|(_, k, n)| format!("{k} {n}"))
                    .unwrap_or_default();
                return Err(format!("{id} is rejected: {e}"));
            }
        }
    }
    if unserved.is_empty() {
        Ok(format!("({checked} objects)"))
    } else {
        Ok(format!(
            "({checked} objects; not served here, so not checked: {unserved:?})"
        ))
    }
}

async fn rejected_as_expected(
    client: &Client,
    discovery: &Discovery,
    path: &Path,
) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let expected = expected_rejection(&text).ok_or("no `# expect:` line")?;
    let docs = file_documents(path)?;
    let doc = docs.first().ok_or("no object")?;
    match dry_run(client, discovery, doc).await {
        Ok(_) => Err(format!("accepted; expected: {expected}")),
        Err(message) if message.contains(&expected) => Ok(String::new()),
        Err(message) => Err(format!("rejected with {message:?}; expected {expected:?}")),
    }
}

/// Installs `deploy/operator/` (and the chart's leader-election Role, when rendered) for real
/// and asks the API server's authorizer what the operator's ServiceAccount may do.
async fn rbac_allows_exactly_the_calls(
    client: &Client,
    discovery: &Discovery,
    leader_election: Option<&[Value]>,
) -> Result<String, String> {
    let mut objects = deploy_objects(&repo_root().join("deploy").join("operator"))?;
    if let Some(rendered) = leader_election {
        objects.extend(
            rendered
                .iter()
                .filter(|d| matches!(kind_of(d), "Role" | "RoleBinding"))
                .cloned(),
        );
    }
    for doc in objects
        .iter()
        .filter(|d| !matches!(kind_of(d), "Deployment"))
    {
        let Some(api) = api_for(client, discovery, doc)? else {
            continue;
        };
        let (_, kind, name) = identity(doc)?;
        let body = serde_json::to_value(doc).map_err(|e| e.to_string())?;
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| format!("installing {kind} {name}: {e}"))?;
    }
    let lease_name = leader_election
        .into_iter()
        .flatten()
        .filter(|d| kind_of(d) == "Role")
        .find_map(|d| {
            d.get("rules")?
                .as_sequence()?
                .iter()
                .find_map(|r| r.get("resourceNames")?.as_sequence()?.first()?.as_str())
                .map(str::to_string)
        });

    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    let may = |grant: Grant, namespace: &str, name: Option<String>| {
        let reviews = reviews.clone();
        let namespace = namespace.to_string();
        async move {
            let (resource, subresource) = match grant.resource.split_once('/') {
                Some((r, s)) => (r.to_string(), Some(s.to_string())),
                None => (grant.resource.clone(), None),
            };
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(format!("system:serviceaccount:{NAMESPACE}:{RELEASE}")),
                    groups: Some(vec![
                        "system:serviceaccounts".to_string(),
                        format!("system:serviceaccounts:{NAMESPACE}"),
                        "system:authenticated".to_string(),
                    ]),
                    resource_attributes: Some(ResourceAttributes {
                        group: Some(grant.group.clone()),
                        resource: Some(resource),
                        subresource,
                        verb: Some(grant.verb.clone()),
                        namespace: Some(namespace),
                        name,
                        ..ResourceAttributes::default()
                    }),
                    ..SubjectAccessReviewSpec::default()
                },
                ..SubjectAccessReview::default()
            };
            reviews
                .create(&PostParams::default(), &review)
                .await
                .map(|r| r.status.is_some_and(|s| s.allowed))
                .map_err(|e| format!("SubjectAccessReview of {grant}: {e}"))
        }
    };
    let mut checked = 0;
    for grant in required_grants(Scope::AllNamespaces) {
        if !may(grant.clone(), "raft", None).await? {
            return Err(format!("the operator may not {grant} in namespace raft"));
        }
        checked += 1;
    }
    if let Some(lease) = &lease_name {
        for grant in required_grants(Scope::OperatorNamespace) {
            let name = (grant.verb != "create").then(|| lease.clone());
            if !may(grant.clone(), NAMESPACE, name).await? {
                return Err(format!(
                    "the operator may not {grant} {lease} in {NAMESPACE}"
                ));
            }
            if may(grant.clone(), "raft", None).await? {
                return Err(format!("the operator may {grant} outside its namespace"));
            }
            checked += 1;
        }
    }
    // Calls the operator never makes must be refused: it deletes nothing but member pods in a
    // rolling update or a replacement (garbage collection deletes what it owns; volumes are
    // never its to delete), reads only the Secrets it names (spec.tls: get, never list or watch, so it cannot
    // read every Secret of a namespace by listing), and never changes a RaftCluster's spec.
    for (group, resource, verb) in [
        ("apps", "statefulsets", "delete"),
        ("", "secrets", "list"),
        ("", "secrets", "watch"),
        ("", "secrets", "delete"),
        ("", "persistentvolumeclaims", "delete"),
        ("kuberaft.io", "raftclusters", "update"),
        ("kuberaft.io", "raftclusters", "delete"),
        ("rbac.authorization.k8s.io", "clusterroles", "create"),
    ] {
        let grant = Grant {
            group: group.to_string(),
            resource: resource.to_string(),
            verb: verb.to_string(),
        };
        if may(grant.clone(), "raft", None).await? {
            return Err(format!("the operator may {grant}, which it never does"));
        }
        checked += 1;
    }
    let lease_note = if lease_name.is_some() {
        ""
    } else {
        "; the Lease Role not checked (helm not found)"
    };
    Ok(format!("({checked} reviews{lease_note})"))
}
