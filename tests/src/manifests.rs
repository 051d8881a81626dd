//! What the chart and manifest tests share: the repository's YAML files read as documents, the
//! RBAC grants of a rule list, and [`OPERATOR_API_CALLS`] — the one list of every Kubernetes API
//! call that kuberaft-operator makes, which the chart's and `deploy/`'s RBAC must match exactly.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Every `.yaml`/`.yml` file under `dir`, sorted, recursively.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The documents of a (multi-document) YAML text; empty documents (a lone `---`, comments only)
/// are left out, as kubectl and helm do.
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        let value = serde::Deserialize::deserialize(de).map_err(|e| e.to_string())?;
        if !matches!(value, Value::Null) {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// The documents of a file, with the file named in the error.
pub fn file_documents(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    documents(&text).map_err(|e| format!("{} does not parse as YAML: {e}", path.display()))
}

/// `doc.a.b.c` as a string, if it is one.
pub fn str_at<'a>(doc: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = doc;
    for key in path {
        v = v.get(*key)?;
    }
    v.as_str()
}

/// apiVersion, kind and metadata.name of a Kubernetes object, or what is missing.
pub fn identity(doc: &Value) -> Result<(String, String, String), String> {
    let api_version = str_at(doc, &["apiVersion"]).ok_or("no apiVersion")?;
    let kind = str_at(doc, &["kind"]).ok_or("no kind")?;
    let name = str_at(doc, &["metadata", "name"]).ok_or("no metadata.name")?;
    if name.is_empty() {
        return Err("an empty metadata.name".to_string());
    }
    Ok((api_version.to_string(), kind.to_string(), name.to_string()))
}

/// One permission: a verb on a resource (or `resource/subresource`) of an API group. Rules
/// limited to named objects (`resourceNames`) flatten to the same grants; the API-server tier
/// checks the names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub group: String,
    pub resource: String,
    pub verb: String,
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {}/{}", self.verb, group, self.resource)
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_sequence)
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The grants of a `rules:` list (a PolicyRule sequence), flattened. A wildcard is kept as
/// `*`, so that it shows up in a comparison instead of silently matching.
pub fn grants(rules: &Value) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in rules.as_sequence().into_iter().flatten() {
        for group in strings(rule.get("apiGroups")) {
            for resource in strings(rule.get("resources")) {
                for verb in strings(rule.get("verbs")) {
                    out.insert(Grant {
                        group: group.clone(),
                        resource: resource.clone(),
                        verb,
                    });
                }
            }
        }
    }
    out
}

/// Where a grant applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (a ClusterRole): RaftClusters may live in any.
    AllNamespaces,
    /// The operator's own namespace (a Role): the leader-election Lease.
    OperatorNamespace,
}

/// One place in `operator/src` that builds an `Api<T>`, and the calls made through it.
pub struct ApiCall {
    /// The file under `operator/src`.
    pub file: &'static str,
    /// `T` of `Api<T>` as the code spells it (`K` for the generic owned-object helpers).
    pub api_type: &'static str,
    /// What the calls are, in the code's terms.
    pub calls: &'static str,
    /// (API group, resource, verbs) that the calls need.
    pub needs: &'static [(&'static str, &'static str, &'static [&'static str])],
    pub scope: Scope,
}

/// Every Kubernetes API call kuberaft-operator makes, read from `operator/src`. The chart's
/// ClusterRole and Role, and `deploy/operator/`, must grant exactly these; a test also checks
/// that every `Api<T>` in the operator's code is listed here, so a new call cannot go unlisted.
///
/// Two rules of the API server shape the verbs: a server-side apply that creates an object is
/// also authorized as `create`; a status apply never creates, so it needs `patch` only.
pub const OPERATOR_API_CALLS: &[ApiCall] = &[
    ApiCall {
        file: "controller.rs",
        api_type: "RaftCluster",
        calls: "watcher(Api::<RaftCluster>::all(..)): list, then watch",
        needs: &[("kuberaft.io", "raftclusters", &["list", "watch"])],
        scope: Scope::AllNamespaces,
    },
    ApiCall {
        file: "controller.rs",
        api_type: "K",
        calls: "owned::<K>(): watcher(Api::<K>::all(..)) by the managed-by label, for StatefulSet, Service, PodDisruptionBudget, Pod",
        needs: &[
            ("apps", "statefulsets", &["list", "watch"]),
            ("", "services", &["list", "watch"]),
            ("policy", "poddisruptionbudgets", &["list", "watch"]),
            ("", "pods", &["list", "watch"]),
        ],
        scope: Scope::AllNamespaces,
    },
    ApiCall {
        file: "reconcile.rs",
        api_type: "StatefulSet",
        calls: "read(): statefulsets.get_opt(..)",
        needs: &[("apps", "statefulsets", &["get"])],
        scope: Scope::AllNamespaces,
    },
    ApiCall {
        file: "reconcile.rs",
        api_type: "Pod",
        calls: "read(): pods.list(selector); label_leader(): pods.patch(Patch::Merge); delete_pod(): pods.delete(&pod.name, &params)",
        needs: &[("", "pods", &["list", "patch", "delete"])],
        scope: Scope::AllNamespaces,
    },
    ApiCall {
        file: "reconcile.rs",
        api_type: "K",
        calls: "apply::<K>(): api.patch(Patch::Apply) of the Services, StatefulSet and PodDisruptionBudget",
        needs: &[
            ("apps", "statefulsets", &["patch", "create"]),
            ("", "services", &["patch", "create"]),
            ("policy", "poddisruptionbudgets", &["patch", "create"]),
        ],
        scope: Scope::AllNamespaces,
    },
    ApiCall {
        file: "reconcile.rs",
        api_type: "RaftCluster",
        calls: "write_status(): api.patch_status(Patch::Apply)",
        needs: &[("kuberaft.io", "raftclusters/status", &["patch"])],
        scope: Scope::AllNamespaces,
    },
    ApiCall {
        file: "tls.rs",
        api_type: "Secret",
        calls: "ensure(): api.get_opt(..) of the TLS Secrets; save(): api.patch(Patch::Apply) of the cluster CA and member certificate (only with spec.tls)",
        needs: &[("", "secrets", &["get", "patch", "create"])],
        scope: Scope::AllNamespaces,
    },
    ApiCall {
        file: "events.rs",
        api_type: "Event",
        calls: "publish_event(): events.k8s.io/v1 api.create(..)",
        needs: &[("events.k8s.io", "events", &["create"])],
        scope: Scope::AllNamespaces,
    },
    ApiCall {
        file: "lease.rs",
        api_type: "Lease",
        calls: "try_take(): api.get_opt, api.create, api.replace (only with --leader-election)",
        needs: &[(
            "coordination.k8s.io",
            "leases",
            &["get", "create", "update"],
        )],
        scope: Scope::OperatorNamespace,
    },
];

/// Grants the operator needs without an `Api<T>` call of its own: every owned object carries a
/// controller owner reference with `blockOwnerDeletion: true` (`controller_owner_ref` in
/// `resources/mod.rs`), which the OwnerReferencesPermissionEnforcement admission plugin allows
/// only to whoever may update the owner's finalizers.
pub const IMPLIED_GRANTS: &[(&str, &str, &str, &str)] = &[(
    "resources/mod.rs",
    "controller_owner_ref",
    "kuberaft.io",
    "raftclusters/finalizers",
)];

/// The grants the operator needs in `scope`.
pub fn required_grants(scope: Scope) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for call in OPERATOR_API_CALLS.iter().filter(|c| c.scope == scope) {
        for (group, resource, verbs) in call.needs {
            for verb in *verbs {
                out.insert(Grant {
                    group: group.to_string(),
                    resource: resource.to_string(),
                    verb: verb.to_string(),
                });
            }
        }
    }
    if scope == Scope::AllNamespaces {
        for (_, _, group, resource) in IMPLIED_GRANTS {
            out.insert(Grant {
                group: group.to_string(),
                resource: resource.to_string(),
                verb: "update".to_string(),
            });
        }
    }
    out
}

/// Every `(file, T)` for which the operator's non-test code names `Api<T>` or `Api::<T>`; files
/// are relative to `operator/src`. Code after `#[cfg(test)]` is unit tests and is left out.
pub fn api_types_in_operator_source() -> BTreeSet<(String, String)> {
    let src = repo_root().join("operator").join("src");
    let mut out = BTreeSet::new();
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let file = path
                .strip_prefix(&src)
                .map(|p| p.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            for t in api_type_arguments(code) {
                out.insert((file.clone(), t));
            }
        }
    }
    out
}

/// The `T` of each `Api<T>` and `Api::<T>` in `code`.
fn api_type_arguments(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("Api") {
        // A whole word: not `MyApi<..>` nor `ApiResource`.
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + 3..];
        let rest = rest.strip_prefix("::").unwrap_or(rest);
        let Some(inner) = rest.strip_prefix('<') else {
            continue;
        };
        let end = inner.find('>').unwrap_or(inner.len());
        out.push(inner[..end].trim().to_string());
    }
    out
}

/// The expected API-server rejection of an example under `deploy/examples/invalid/`: its
/// `# expect: <message>` line.
pub fn expected_rejection(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("# expect:"))
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
}

/// A Helm template with its template actions taken out, for reading the plain-YAML parts of it
/// (the RBAC rules) without helm: lines that are only an action are dropped, and an action
/// inside a line becomes the word `TEMPLATED`. This is not rendering; it works only for
/// templates whose interesting part is literal YAML, which the chart's RBAC templates keep.
pub fn template_literal_parts(template: &str) -> String {
    let mut out = String::new();
    for line in template.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("{{") && trimmed.ends_with("}}") {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            out.push_str("TEMPLATED");
            rest = rest[start..]
                .find("}}")
                .map_or("", |end| &rest[start + end + 2..]);
        }
        out.push_str(rest);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_type_arguments_reads_both_spellings_and_whole_words_only() {
        let code =
            "let a: Api<Pod> = x; Api::<K>::all(c); MyApi<No>; ApiResource; kube::Api<Lease>";
        assert_eq!(api_type_arguments(code), vec!["Pod", "K", "Lease"]);
    }

    #[test]
    fn template_literal_parts_drops_actions() {
        let t = "{{- if .Values.x }}\nname: {{ include \"n\" . }}\n  {{- include \"l\" . | nindent 4 }}\nrules: []\n{{- end }}\n";
        assert_eq!(template_literal_parts(t), "name: TEMPLATED\nrules: []\n");
    }
}
