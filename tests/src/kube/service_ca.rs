//! The API server here is Kubernetes as OpenShift vendors it: its ServiceAccount admission adds
//! the ConfigMap `openshift-service-ca.crt` (key `service-ca.crt`) to every pod's token volume,
//! next to `kube-root-ca.crt`. OpenShift's service-CA controller publishes it in each namespace;
//! that controller needs OpenShift's API and is off, so this task publishes it instead (with the
//! cluster CA), or no pod with a ServiceAccount token could start.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kube::runtime::{WatchStreamExt, watcher as watch_of};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinHandle;

pub const NAME: &str = "openshift-service-ca.crt";

/// Publishes the ConfigMap in every namespace, now and as namespaces are made.
pub fn publish(client: Client, ca_pem: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut events = watch_of(namespaces, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = events.next().await {
            let Ok(ns) = event else { continue };
            if ns.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name_any());
            let Ok(cm) = serde_json::from_value::<ConfigMap>(json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": { "name": NAME },
                "data": { "service-ca.crt": ca_pem },
            })) else {
                continue;
            };
            match api.create(&PostParams::default(), &cm).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => {
                    tracing::warn!(namespace = %ns.name_any(), error = %e, "{NAME} not published")
                }
            }
        }
    })
}
