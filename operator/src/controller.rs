//! Wiring of the kube-runtime controller: which changes trigger a reconcile.
//!
//! - a RaftCluster's spec changes (the generation predicate: the operator's own status writes
//!   do not retrigger it);
//! - an owned StatefulSet, Service or PodDisruptionBudget changes (readiness, drift, deletion);
//! - a member's pod changes (made, ready, deleted: what scaling and rolling updates wait for);
//! - a member reports a new role, term, leader or configuration (the member watches).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::crd::RaftCluster;
use crate::health::Health;
use crate::reconcile::{Context, OwnedStores, error_policy, reconcile};
use crate::resources::{FIELD_MANAGER, INSTANCE_LABEL};

/// How often watches of deleted clusters are swept.
const SWEEP: Duration = Duration::from_secs(30);

/// Builds the owned-object stores with their trigger streams; `synced` is set once the store
/// holds its first full list (before that, an object missing from it may still exist).
fn owned<K>(
    client: &Client,
    synced: Arc<AtomicBool>,
) -> (
    reflector::Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default()
        .labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"))
        .any_semantic();
    let stream = watcher(Api::<K>::all(client.clone()), config)
        .default_backoff()
        .reflect(writer)
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                synced.store(true, Ordering::Release);
            }
        })
        .applied_objects();
    (reader, stream)
}

/// The owned-object stores and the streams that feed them; pass the stores to the
/// [`Context`] and the streams to [`run`].
pub fn owned_stores(client: &Client) -> (OwnedStores, OwnedStreams) {
    let statefulsets_synced = Arc::new(AtomicBool::new(false));
    let pods_synced = Arc::new(AtomicBool::new(false));
    let (statefulsets, sts) = owned::<StatefulSet>(client, statefulsets_synced.clone());
    let (services, svc) = owned::<Service>(client, Arc::default());
    let (pod_disruption_budgets, pdb) = owned::<PodDisruptionBudget>(client, Arc::default());
    // The members' pods carry the managed-by label too (the pod template's).
    let (pods, pod) = owned::<Pod>(client, pods_synced.clone());
    (
        OwnedStores {
            statefulsets,
            services,
            pod_disruption_budgets,
            pods,
            statefulsets_synced,
            pods_synced,
        },
        OwnedStreams {
            statefulsets: sts.boxed(),
            services: svc.boxed(),
            pod_disruption_budgets: pdb.boxed(),
            pods: pod.boxed(),
        },
    )
}

/// The RaftCluster a member's pod belongs to (its `app.kubernetes.io/instance` label).
fn cluster_of(pod: Pod) -> Option<ObjectRef<RaftCluster>> {
    let cluster = pod.labels().get(INSTANCE_LABEL)?;
    Some(ObjectRef::new(cluster).within(&pod.namespace()?))
}

pub struct OwnedStreams {
    statefulsets: futures::stream::BoxStream<'static, Result<StatefulSet, watcher::Error>>,
    services: futures::stream::BoxStream<'static, Result<Service, watcher::Error>>,
    pod_disruption_budgets:
        futures::stream::BoxStream<'static, Result<PodDisruptionBudget, watcher::Error>>,
    pods: futures::stream::BoxStream<'static, Result<Pod, watcher::Error>>,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    streams: OwnedStreams,
    triggers: mpsc::Receiver<ObjectRef<RaftCluster>>,
    health: Health,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (reader, writer) = reflector::store::<RaftCluster>();
    // Ready once the first full list is in the cache. Read off the stream itself: a second
    // waiter on `Store::wait_until_ready` (the controller is the first) is never woken in
    // kube-runtime 5, whose DelayedInit keeps one waker; the operator then stayed unready for
    // ever and `helm install --wait` timed out (found by the journey tier).
    let ready = health.clone();
    let clusters = watcher(
        Api::<RaftCluster>::all(ctx.client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .reflect(writer)
    .inspect(move |event| {
        if matches!(event, Ok(watcher::Event::InitDone)) {
            ready.set_ready(true);
        }
    })
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());

    // Stop watching the members of clusters that no longer exist.
    let sweep_reader = reader.clone();
    let watches = ctx.watches.clone();
    health.spawn("sweep of deleted clusters".to_string(), async move {
        loop {
            tokio::time::sleep(SWEEP).await;
            watches.retain(|ns, name| sweep_reader.get(&ObjectRef::new(name).within(ns)).is_some());
        }
    });
    Controller::for_stream(clusters, reader)
        .owns_stream(streams.statefulsets)
        .owns_stream(streams.services)
        .owns_stream(streams.pod_disruption_budgets)
        .watches_stream(streams.pods, cluster_of)
        .reconcile_on(ReceiverStream::new(triggers))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(cluster = %object.name, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile failed"),
            }
        })
        .await;
}
