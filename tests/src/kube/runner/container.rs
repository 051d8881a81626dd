//! `docker create` for a pod's container: what a kubelet and its container runtime would set up,
//! as Docker options. Pure: everything the pod needs is resolved before.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;

use super::status::Waiting;
use super::volumes::Source;

/// What the container is made from, besides the pod itself.
pub struct Inputs<'a> {
    /// The Docker container's name.
    pub name: &'a str,
    pub labels: Vec<String>,
    pub network: &'a str,
    pub ip: &'a str,
    pub cluster_domain: &'a str,
    pub env: &'a [(String, String)],
    pub volumes: &'a BTreeMap<String, Source>,
    /// `USER` of the image (`docker image inspect`), for `runAsNonRoot`.
    pub image_user: &'a str,
}

fn config_error(message: String) -> Waiting {
    Waiting::new("CreateContainerConfigError", message)
}

/// The pod's DNS name under its headless Service, when it has a subdomain.
pub fn fqdn(pod: &Pod, cluster_domain: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.clone().unwrap_or_else(|| pod.name_any());
    let subdomain = spec.subdomain.as_ref()?;
    Some(format!(
        "{hostname}.{subdomain}.{}.svc.{cluster_domain}",
        pod.namespace().unwrap_or_default()
    ))
}

/// The arguments of `docker create` for `container` of `pod`.
pub fn create_args(
    pod: &Pod,
    container: &Container,
    i: &Inputs<'_>,
) -> Result<Vec<String>, Waiting> {
    let spec = pod.spec.clone().unwrap_or_default();
    let namespace = pod.namespace().unwrap_or_default();
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    let sc = container.security_context.clone().unwrap_or_default();
    let mut a: Vec<String> = vec!["create".into(), "--name".into(), i.name.into()];
    a.extend(i.labels.iter().cloned());

    // Network, hostname and DNS: the cluster DNS's records are network aliases here.
    let hostname = spec.hostname.clone().unwrap_or_else(|| pod.name_any());
    a.extend([
        "--network".into(),
        i.network.into(),
        "--ip".into(),
        i.ip.into(),
    ]);
    a.extend(["--hostname".into(), hostname]);
    if let Some(fqdn) = fqdn(pod, i.cluster_domain) {
        let domain = fqdn.split_once('.').map(|(_, d)| d.to_string());
        a.extend(["--network-alias".into(), fqdn]);
        if let Some(d) = domain {
            a.extend(["--domainname".into(), d]);
        }
    }
    for search in [
        format!("{namespace}.svc.{}", i.cluster_domain),
        format!("svc.{}", i.cluster_domain),
        i.cluster_domain.to_string(),
    ] {
        a.extend(["--dns-search".into(), search]);
    }

    for (k, v) in i.env {
        a.extend(["--env".into(), format!("{k}={v}")]);
    }

    // Who the process runs as.
    let uid = sc.run_as_user.or(pod_sc.run_as_user);
    let gid = sc.run_as_group.or(pod_sc.run_as_group);
    if sc.run_as_non_root.or(pod_sc.run_as_non_root) == Some(true) {
        let image_uid = i.image_user.split(':').next().unwrap_or("");
        match uid {
            Some(0) => {
                return Err(config_error(
                    "container's runAsUser breaks non-root policy".to_string(),
                ));
            }
            Some(_) => {}
            None if image_uid.is_empty() || image_uid == "0" || image_uid == "root" => {
                return Err(config_error(
                    "container has runAsNonRoot and image will run as root".to_string(),
                ));
            }
            None if image_uid.parse::<u32>().is_err() => {
                return Err(config_error(format!(
                    "container has runAsNonRoot and image has non-numeric user ({image_uid}), cannot verify user is non-root"
                )));
            }
            None => {}
        }
    }
    match (uid, gid) {
        (Some(u), Some(g)) => a.extend(["--user".into(), format!("{u}:{g}")]),
        (Some(u), None) => a.extend(["--user".into(), u.to_string()]),
        (None, Some(g)) => {
            let u = i
                .image_user
                .split(':')
                .next()
                .filter(|u| !u.is_empty())
                .unwrap_or("0");
            a.extend(["--user".into(), format!("{u}:{g}")]);
        }
        (None, None) => {}
    }
    for g in pod_sc
        .fs_group
        .into_iter()
        .chain(pod_sc.supplemental_groups.clone().unwrap_or_default())
    {
        a.extend(["--group-add".into(), g.to_string()]);
    }
    if sc.read_only_root_filesystem == Some(true) {
        a.push("--read-only".into());
    }
    if sc.allow_privilege_escalation == Some(false) {
        a.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    if let Some(caps) = &sc.capabilities {
        for c in caps.drop.iter().flatten() {
            a.extend(["--cap-drop".into(), c.clone()]);
        }
        for c in caps.add.iter().flatten() {
            a.extend(["--cap-add".into(), c.clone()]);
        }
    }
    if sc.privileged == Some(true) {
        a.push("--privileged".into());
    }

    for m in container.volume_mounts.iter().flatten() {
        if m.sub_path.is_some() || m.sub_path_expr.is_some() {
            return Err(config_error(format!(
                "volume mount {}: subPath is not stood in for",
                m.name
            )));
        }
        let read_only = if m.read_only == Some(true) {
            ",readonly"
        } else {
            ""
        };
        let mount = match i.volumes.get(&m.name) {
            Some(Source::Volume(v)) => {
                format!("type=volume,src={v},dst={}{read_only}", m.mount_path)
            }
            Some(Source::Folder(dir)) => format!(
                "type=bind,src={},dst={}{read_only}",
                dir.display(),
                m.mount_path
            ),
            Some(Source::Tmpfs) => format!("type=tmpfs,dst={}", m.mount_path),
            None => {
                return Err(config_error(format!(
                    "volume mount {} names no volume of the pod",
                    m.name
                )));
            }
        };
        a.extend(["--mount".into(), mount]);
    }

    let grace = spec.termination_grace_period_seconds.unwrap_or(30);
    a.extend(["--stop-timeout".into(), grace.to_string()]);
    if let Some(dir) = &container.working_dir {
        a.extend(["--workdir".into(), dir.clone()]);
    }

    // command replaces the image's ENTRYPOINT, args its CMD; both may use $(VAR).
    let vars: BTreeMap<String, String> = i.env.iter().cloned().collect();
    let expand = |v: &Vec<String>| -> Vec<String> {
        v.iter().map(|s| super::env::expand(s, &vars)).collect()
    };
    let command = container.command.as_ref().map(expand);
    let args = container.args.as_ref().map(expand);
    if let Some(cmd) = &command {
        let first = cmd.first().cloned().unwrap_or_default();
        a.extend(["--entrypoint".into(), first]);
    }
    a.push(container.image.clone().unwrap_or_default());
    if let Some(cmd) = command {
        a.extend(cmd.into_iter().skip(1));
    }
    if let Some(args) = args {
        a.extend(args);
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member_pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "demo-0", "namespace": "default", "uid": "u0" },
            "spec": {
                "hostname": "demo-0",
                "subdomain": "demo-peers",
                "terminationGracePeriodSeconds": 30,
                "securityContext": { "runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true, "fsGroup": 65532 },
                "containers": [{
                    "name": "kuberaft-node",
                    "image": "kuberaft-node:0.1.0",
                    "args": ["--name", "$(KUBERAFT_NAME)"],
                    "securityContext": {
                        "readOnlyRootFilesystem": true,
                        "allowPrivilegeEscalation": false,
                        "capabilities": { "drop": ["ALL"] },
                    },
                    "volumeMounts": [
                        { "name": "data", "mountPath": "/var/lib/kuberaft" },
                        { "name": "tls", "mountPath": "/etc/kuberaft/tls", "readOnly": true },
                    ],
                }],
                "volumes": [],
            },
        }))
        .expect("pod")
    }

    #[test]
    fn a_member_pod_becomes_a_container_as_its_statefulset_describes_it() {
        let pod = member_pod();
        let container = pod.spec.as_ref().expect("spec").containers[0].clone();
        let volumes: BTreeMap<String, Source> = [
            ("data".to_string(), Source::Volume("vol-0".into())),
            ("tls".to_string(), Source::Folder("/tmp/tls".into())),
        ]
        .into();
        let env = vec![("KUBERAFT_NAME".to_string(), "demo-0".to_string())];
        let args = create_args(
            &pod,
            &container,
            &Inputs {
                name: "c0",
                labels: vec![],
                network: "net",
                ip: "172.30.1.10",
                cluster_domain: "cluster.local",
                env: &env,
                volumes: &volumes,
                image_user: "65532:65532",
            },
        )
        .expect("args");
        let joined = args.join(" ");
        for part in [
            "--network-alias demo-0.demo-peers.default.svc.cluster.local",
            "--domainname demo-peers.default.svc.cluster.local",
            "--hostname demo-0",
            "--ip 172.30.1.10",
            "--user 65532:65532",
            "--group-add 65532",
            "--read-only",
            "--cap-drop ALL",
            "--security-opt no-new-privileges",
            "--mount type=volume,src=vol-0,dst=/var/lib/kuberaft --mount",
            "--mount type=bind,src=/tmp/tls,dst=/etc/kuberaft/tls,readonly",
            "--stop-timeout 30",
            "--env KUBERAFT_NAME=demo-0",
        ] {
            assert!(joined.contains(part), "{part:?} missing from {joined}");
        }
        assert!(
            joined.ends_with("kuberaft-node:0.1.0 --name demo-0"),
            "{joined}"
        );
    }

    #[test]
    fn run_as_non_root_is_checked_against_the_image() {
        let mut pod = member_pod();
        let spec = pod.spec.as_mut().expect("spec");
        if let Some(sc) = spec.security_context.as_mut() {
            sc.run_as_user = None;
        }
        let container = spec.containers[0].clone();
        let volumes: BTreeMap<String, Source> = [
            ("data".to_string(), Source::Volume("v".into())),
            ("tls".to_string(), Source::Tmpfs),
        ]
        .into();
        let inputs = |user| Inputs {
            name: "c0",
            labels: vec![],
            network: "net",
            ip: "172.30.1.10",
            cluster_domain: "cluster.local",
            env: &[],
            volumes: &volumes,
            image_user: user,
        };
        let refused = create_args(&pod, &container, &inputs("")).expect_err("root image");
        assert_eq!(refused.reason, "CreateContainerConfigError");
        assert!(refused.message.contains("will run as root"));
        assert!(create_args(&pod, &container, &inputs("nonroot")).is_err());
        let ok = create_args(&pod, &container, &inputs("65532")).expect("non-root image");
        assert!(ok.join(" ").contains("--user 65532:65532"));
    }
}
