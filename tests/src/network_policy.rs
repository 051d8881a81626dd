//! What the members' NetworkPolicies must say (issue 16): the admin port, where the membership
//! changes, is open to the cluster's own pods and the operator only, never to clients; the
//! client port is open to clients.

use serde_yaml::Value;

use crate::manifests::str_at;

/// The member ports, as the operator's StatefulSet names them.
pub const CLIENT_PORT: i64 = 7001;
pub const ADMIN_PORT: i64 = 7003;

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map_or(&[], |s| s.as_slice())
}

fn label<'a>(selector: &'a Value, key: &str) -> Option<&'a str> {
    selector.get("matchLabels")?.get(key)?.as_str()
}

/// Checks every NetworkPolicy among `objects`; says how many it checked.
pub fn check(objects: &[Value]) -> Result<usize, String> {
    let policies: Vec<&Value> = objects
        .iter()
        .filter(|d| str_at(d, &["kind"]) == Some("NetworkPolicy"))
        .collect();
    for policy in &policies {
        let name = str_at(policy, &["metadata", "name"]).unwrap_or("?");
        let spec = policy.get("spec").unwrap_or(&Value::Null);
        let instance = spec
            .get("podSelector")
            .and_then(|s| label(s, "app.kubernetes.io/instance"))
            .ok_or_else(|| format!("NetworkPolicy {name} selects no RaftCluster's pods"))?;
        let (mut admin_rules, mut client_rules, mut operator_allowed) = (0, 0, false);
        for rule in seq(spec.get("ingress").unwrap_or(&Value::Null)) {
            let ports: Vec<i64> = seq(rule.get("ports").unwrap_or(&Value::Null))
                .iter()
                .filter_map(|p| p.get("port").and_then(Value::as_i64))
                .collect();
            if ports.contains(&CLIENT_PORT) {
                client_rules += 1;
            }
            if !ports.contains(&ADMIN_PORT) {
                continue;
            }
            admin_rules += 1;
            let from = seq(rule.get("from").unwrap_or(&Value::Null));
            if from.is_empty() {
                return Err(format!(
                    "NetworkPolicy {name} opens the admin port {ADMIN_PORT} to everyone"
                ));
            }
            for peer in from {
                let pods = peer.get("podSelector").unwrap_or(&Value::Null);
                let own = peer.get("namespaceSelector").is_none()
                    && label(pods, "app.kubernetes.io/name") == Some("kuberaft")
                    && label(pods, "app.kubernetes.io/instance") == Some(instance);
                let operator = peer.get("namespaceSelector").is_some()
                    && label(pods, "app.kubernetes.io/name") == Some("kuberaft-operator");
                operator_allowed |= operator;
                if !own && !operator {
                    return Err(format!(
                        "NetworkPolicy {name} lets {} reach the admin port {ADMIN_PORT}: only the \
                         cluster's own pods and the operator may",
                        serde_json::to_string(peer).unwrap_or_default()
                    ));
                }
            }
        }
        if admin_rules != 1 || !operator_allowed {
            return Err(format!(
                "NetworkPolicy {name}: {admin_rules} rules for the admin port {ADMIN_PORT} \
                 (operator allowed: {operator_allowed}); expected one, with the operator"
            ));
        }
        if client_rules == 0 {
            return Err(format!(
                "NetworkPolicy {name} has no rule for the client port {CLIENT_PORT}"
            ));
        }
    }
    Ok(policies.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(admin_from: &str) -> Vec<Value> {
        let text = format!(
            r#"
kind: NetworkPolicy
metadata: {{name: demo-members}}
spec:
  podSelector:
    matchLabels: {{app.kubernetes.io/name: kuberaft, app.kubernetes.io/instance: demo}}
  ingress:
    - from: [{{podSelector: {{}}}}]
      ports: [{{port: 7001}}]
    - from: {admin_from}
      ports: [{{port: 7003}}]
"#
        );
        vec![serde_yaml::from_str(&text).unwrap()]
    }

    const OWN: &str = "{podSelector: {matchLabels: {app.kubernetes.io/name: kuberaft, app.kubernetes.io/instance: demo}}}";
    const OPERATOR: &str = "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kuberaft-system}}, podSelector: {matchLabels: {app.kubernetes.io/name: kuberaft-operator}}}";

    #[test]
    fn members_and_the_operator_on_the_admin_port_pass() {
        assert_eq!(check(&policy(&format!("[{OWN}, {OPERATOR}]"))), Ok(1));
    }

    #[test]
    fn clients_on_the_admin_port_fail() {
        for from in [
            format!("[{OWN}, {OPERATOR}, {{podSelector: {{}}}}]"),
            format!(
                "[{OPERATOR}, {{podSelector: {{matchLabels: {{app.kubernetes.io/name: kuberaft, app.kubernetes.io/instance: other}}}}}}]"
            ),
            "[]".to_string(),
        ] {
            assert!(check(&policy(&from)).is_err(), "{from}");
        }
    }

    #[test]
    fn an_admin_port_the_operator_cannot_reach_fails() {
        let e = check(&policy(&format!("[{OWN}]"))).unwrap_err();
        assert!(e.contains("operator"), "{e}");
    }
}
