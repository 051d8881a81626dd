//! A container's environment as a kubelet makes it: `envFrom`, then `env` (values, `$(VAR)`
//! references to earlier variables, downward-API fields, Secret and ConfigMap keys), and the
//! API server's address.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::ResourceExt;
use kube::api::Api;

use super::Shared;
use super::status::Waiting;

fn config_error(message: String) -> Waiting {
    Waiting::new("CreateContainerConfigError", message)
}

/// The value of a downward-API field of `pod` (`metadata.name`, `status.podIP`, …).
pub(super) fn field_value(
    pod: &Pod,
    path: &str,
    pod_ip: Option<&str>,
    host_ip: Option<&str>,
) -> Result<String, String> {
    let spec = pod.spec.as_ref();
    let quoted = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
            .map(str::to_string)
    };
    let value = match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.unwrap_or_default().to_string(),
        "status.hostIP" | "status.hostIPs" => host_ip.unwrap_or_default().to_string(),
        _ => {
            if let Some(key) = quoted("metadata.labels['") {
                pod.labels().get(&key).cloned().unwrap_or_default()
            } else if let Some(key) = quoted("metadata.annotations['") {
                pod.annotations().get(&key).cloned().unwrap_or_default()
            } else {
                return Err(format!("the field {path} is not supported"));
            }
        }
    };
    Ok(value)
}

/// Replaces `$(NAME)` by the value of a variable defined earlier; `$$` is a literal `$`; a
/// reference to an unknown name stays as written (Kubernetes' rules).
pub(super) fn expand(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

async fn secret_key(
    shared: &Shared,
    namespace: &str,
    name: &str,
    key: Option<&str>,
    optional: bool,
) -> Result<BTreeMap<String, String>, Waiting> {
    let api: Api<Secret> = Api::namespaced(shared.client.clone(), namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|e| config_error(format!("secret {name}: {e}")))?;
    let data: BTreeMap<String, String> = secret
        .and_then(|s| s.data)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    pick(data, key, optional, || format!("secret \"{name}\""))
}

async fn config_map_key(
    shared: &Shared,
    namespace: &str,
    name: &str,
    key: Option<&str>,
    optional: bool,
) -> Result<BTreeMap<String, String>, Waiting> {
    let api: Api<ConfigMap> = Api::namespaced(shared.client.clone(), namespace);
    let cm = api
        .get_opt(name)
        .await
        .map_err(|e| config_error(format!("configmap {name}: {e}")))?;
    let data = cm.and_then(|c| c.data).unwrap_or_default();
    pick(data, key, optional, || format!("configmap \"{name}\""))
}

/// One key of `data` (or all of it without a key); a missing one is an error unless optional.
fn pick(
    data: BTreeMap<String, String>,
    key: Option<&str>,
    optional: bool,
    what: impl Fn() -> String,
) -> Result<BTreeMap<String, String>, Waiting> {
    match key {
        None => Ok(data),
        Some(key) => match data.get(key) {
            Some(v) => Ok([(key.to_string(), v.clone())].into()),
            None if optional => Ok(BTreeMap::new()),
            None => Err(config_error(format!(
                "couldn't find key {key} in {}",
                what()
            ))),
        },
    }
}

/// The container's environment, in order.
pub(super) async fn resolve(
    shared: &Shared,
    pod: &Pod,
    container: &Container,
    pod_ip: &str,
) -> Result<Vec<(String, String)>, Waiting> {
    let namespace = pod.namespace().unwrap_or_default();
    let host_ip = shared.host_ip();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |vars: &mut BTreeMap<String, String>, k: String, v: String| {
        if !vars.contains_key(&k) {
            order.push(k.clone());
        }
        vars.insert(k, v);
    };
    // The master Service's variables are set in every container, enableServiceLinks or not.
    let (host, port) = (&shared.config.api_host, shared.config.api_port);
    for (k, v) in [
        ("KUBERNETES_SERVICE_HOST", host.clone()),
        ("KUBERNETES_SERVICE_PORT", port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS", port.to_string()),
        ("KUBERNETES_PORT", format!("tcp://{host}:{port}")),
    ] {
        set(&mut vars, k.to_string(), v);
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(s) = &from.secret_ref {
            secret_key(
                shared,
                &namespace,
                &s.name,
                None,
                s.optional.unwrap_or(false),
            )
            .await?
        } else if let Some(c) = &from.config_map_ref {
            config_map_key(
                shared,
                &namespace,
                &c.name,
                None,
                c.optional.unwrap_or(false),
            )
            .await?
        } else {
            BTreeMap::new()
        };
        for (k, v) in data {
            set(&mut vars, format!("{prefix}{k}"), v);
        }
    }
    for e in container.env.iter().flatten() {
        let value = match &e.value_from {
            None => expand(e.value.as_deref().unwrap_or(""), &vars),
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    field_value(pod, &f.field_path, Some(pod_ip), Some(&host_ip))
                        .map_err(|m| config_error(format!("env {}: {m}", e.name)))?
                } else if let Some(s) = &from.secret_key_ref {
                    let found = secret_key(
                        shared,
                        &namespace,
                        &s.name,
                        Some(&s.key),
                        s.optional.unwrap_or(false),
                    )
                    .await?;
                    match found.into_values().next() {
                        Some(v) => v,
                        None => continue,
                    }
                } else if let Some(c) = &from.config_map_key_ref {
                    let found = config_map_key(
                        shared,
                        &namespace,
                        &c.name,
                        Some(&c.key),
                        c.optional.unwrap_or(false),
                    )
                    .await?;
                    match found.into_values().next() {
                        Some(v) => v,
                        None => continue,
                    }
                } else {
                    return Err(config_error(format!(
                        "env {}: only fieldRef, secretKeyRef and configMapKeyRef are stood in for",
                        e.name
                    )));
                }
            }
        };
        set(&mut vars, e.name.clone(), value);
    }
    Ok(order
        .into_iter()
        .map(|k| {
            let v = vars.get(&k).cloned().unwrap_or_default();
            (k, v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand_to_earlier_variables_and_unknown_ones_stay() {
        let vars: BTreeMap<String, String> = [("POD".to_string(), "demo-0".to_string())].into();
        assert_eq!(expand("$(POD).peers", &vars), "demo-0.peers");
        assert_eq!(expand("$(NOPE)-x", &vars), "$(NOPE)-x");
        assert_eq!(expand("$$(POD)", &vars), "$(POD)");
        assert_eq!(expand("cost $5 (approx)", &vars), "cost $5 (approx)");
        assert_eq!(expand("$(POD", &vars), "$(POD");
    }

    #[test]
    fn fields_of_the_pod_are_read_by_path() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "demo-1", "namespace": "prod", "uid": "u-1",
                "labels": { "app.kubernetes.io/name": "kuberaft" },
            },
            "spec": { "containers": [], "nodeName": "n1" },
        }))
        .expect("pod");
        let f = |p: &str| field_value(&pod, p, Some("10.0.0.7"), Some("10.0.0.1"));
        assert_eq!(f("metadata.name").as_deref(), Ok("demo-1"));
        assert_eq!(f("metadata.namespace").as_deref(), Ok("prod"));
        assert_eq!(f("status.podIP").as_deref(), Ok("10.0.0.7"));
        assert_eq!(f("spec.nodeName").as_deref(), Ok("n1"));
        assert_eq!(
            f("metadata.labels['app.kubernetes.io/name']").as_deref(),
            Ok("kuberaft")
        );
        assert!(f("status.phase").is_err());
    }
}
