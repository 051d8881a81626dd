//! The runner's Node object: what `kubectl get nodes` shows, and the node pods are bound to.

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::Shared;

/// Creates the Node (or takes it over) and reports it Ready.
pub(super) async fn register(shared: &Shared) -> Result<(), String> {
    let name = &shared.config.node_name;
    let nodes: Api<Node> = Api::all(shared.client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": std::env::consts::ARCH,
            },
        },
    }))
    .map_err(|e| format!("the Node object: {e}"))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(format!("cannot register Node {name}: {e}")),
    }
    let now = Timestamp::now().to_string();
    let status = json!({
        "status": {
            "capacity": { "cpu": "2", "memory": "24Gi", "pods": "110" },
            "allocatable": { "cpu": "2", "memory": "24Gi", "pods": "110" },
            "addresses": [
                { "type": "InternalIP", "address": shared.host_ip() },
                { "type": "Hostname", "address": name },
            ],
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "the journey's pod runner stands in for this node's kubelet",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }],
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": "", "osImage": "Docker containers on the test machine",
                "containerRuntimeVersion": "docker://", "kubeletVersion": "v1.32.13-journey",
                "kubeProxyVersion": "", "operatingSystem": "linux",
                "architecture": std::env::consts::ARCH,
            },
        }
    });
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(|e| format!("cannot report Node {name} ready: {e}"))?;
    Ok(())
}
