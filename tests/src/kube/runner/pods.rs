//! The scheduler's part and the kubelet's pod manager: watch every pod, bind the pending ones to
//! the Node, and keep one worker per pod bound here.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Pod};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_of};
use serde_json::json;
use tokio::sync::watch;

use super::{Order, Shared, Worker, lock, worker};

pub(super) async fn run(shared: Arc<Shared>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let mut events = watch_of(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    // The pods listed since the watch (re)started: workers of any other pod are stale.
    let mut listed: Option<HashSet<String>> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listed = Some(HashSet::new()),
            Ok(Event::InitApply(pod)) => {
                if let Some(l) = listed.as_mut() {
                    l.insert(pod.uid().unwrap_or_default());
                }
                on_pod(&shared, pod).await;
            }
            Ok(Event::InitDone) => {
                if let Some(l) = listed.take() {
                    let gone: Vec<String> = lock(&shared.workers)
                        .keys()
                        .filter(|uid| !l.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in gone {
                        kill(&shared, &uid);
                    }
                }
            }
            Ok(Event::Apply(pod)) => on_pod(&shared, pod).await,
            Ok(Event::Delete(pod)) => kill(&shared, &pod.uid().unwrap_or_default()),
            Err(e) => tracing::warn!(error = %e, "pod runner: the pod watch failed; retrying"),
        }
    }
}

/// The pod's object is gone: its container is killed at once.
fn kill(shared: &Shared, uid: &str) {
    if let Some(w) = lock(&shared.workers).get(uid) {
        w.order.send_replace(Order::Kill);
    }
}

async fn on_pod(shared: &Arc<Shared>, pod: Pod) {
    let Some(uid) = pod.uid() else { return };
    let spec = pod.spec.as_ref();
    match spec.and_then(|s| s.node_name.as_deref()) {
        None => {
            let scheduler = spec.and_then(|s| s.scheduler_name.as_deref());
            if pod.metadata.deletion_timestamp.is_none()
                && scheduler.is_none_or(|s| s == "default-scheduler")
            {
                bind(shared, &pod).await;
            }
        }
        Some(node) if node == shared.config.node_name => {
            let known = match lock(&shared.workers).get(&uid) {
                Some(w) => {
                    w.pod.send_replace(pod.clone());
                    true
                }
                None => false,
            };
            if known {
                return;
            }
            if pod.metadata.deletion_timestamp.is_some() {
                // Being deleted and never run here (a runner that restarted): nothing to stop.
                worker::remove_object(shared, &pod).await;
                return;
            }
            let mut workers = lock(&shared.workers);
            // A pod recreated under the same name replaces the old one's container.
            let namespace = pod.namespace().unwrap_or_default();
            let name = pod.name_any();
            for w in workers.values() {
                if w.namespace == namespace && w.name == name {
                    w.order.send_replace(Order::Kill);
                }
            }
            let container = shared.run.name_of(&format!(
                "{namespace}-{name}-{}",
                uid.split('-').next().unwrap_or(&uid)
            ));
            let (pod_tx, pod_rx) = watch::channel(pod);
            let (order_tx, order_rx) = watch::channel(Order::Run);
            let task = tokio::spawn(worker::run(
                shared.clone(),
                uid.clone(),
                container.clone(),
                pod_rx,
                order_rx,
            ));
            // Replaced workers stay in the map under their own UIDs until they end.
            workers.insert(
                uid,
                Worker {
                    namespace,
                    name,
                    container,
                    pod: pod_tx,
                    order: order_tx,
                    task,
                },
            );
        }
        Some(_) => {}
    }
}

/// `pods/binding`: what the scheduler does once it chose a node.
async fn bind(shared: &Shared, pod: &Pod) {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let binding: Binding = match serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": { "name": name, "namespace": namespace, "uid": pod.uid() },
        "target": { "apiVersion": "v1", "kind": "Node", "name": shared.config.node_name },
    })) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "pod runner: cannot build a Binding");
            return;
        }
    };
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &namespace);
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => {}
        // Bound already (a repeated event), or gone.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
        Err(e) => tracing::warn!(pod = %name, error = %e, "pod runner: binding failed"),
    }
}
