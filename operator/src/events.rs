//! Events about a RaftCluster: leader changes ("demo-2 elected leader in term 7"), membership
//! steps, and warnings. Events are courtesies: failing to publish one is logged, never retried.

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};

use crate::crd::{RaftCluster, RaftClusterStatus};
use crate::reconcile::Context;
use crate::status::leader_event_note;

/// A Warning Event, once per generation, when `spec.replicas` is even.
pub async fn warn_even_replicas(rc: &RaftCluster, ctx: &Context, uid: &str) {
    let generation = rc.metadata.generation.unwrap_or(0);
    if rc.spec.replicas % 2 != 0 {
        return;
    }
    let first = ctx.memory().warned_even.insert(uid.to_string(), generation) != Some(generation);
    if first {
        let n = rc.spec.replicas;
        let note = format!(
            "spec.replicas is {n}: {n} members tolerate {} failures, no more than {}; use an odd number",
            (n - 1) / 2,
            n - 1
        );
        publish_event(ctx, rc, "Warning", "EvenReplicas", "Validate", note).await;
    }
}

/// An Event, and the latency metric, when status shows a new leader or a new term.
pub async fn report_leader_change(
    rc: &RaftCluster,
    ctx: &Context,
    old: &RaftClusterStatus,
    new: &RaftClusterStatus,
) {
    let Some(leader) = new.leader.as_ref() else {
        return;
    };
    if old.leader.as_ref() == Some(leader) && old.term == new.term {
        return;
    }
    if let Some(changed) = new.last_leader_change.as_ref() {
        let elapsed = Timestamp::now().duration_since(changed.0);
        if elapsed.is_positive() {
            ctx.metrics
                .leader_change_to_status
                .observe(elapsed.as_secs_f64());
        }
    }
    let note = leader_event_note(leader, new.term);
    tracing::info!(cluster = %rc.name_any(), %note);
    publish_event(ctx, rc, "Normal", "LeaderElected", "Observe", note).await;
}

/// Publishes an `events.k8s.io/v1` Event about `rc`. A failure is logged, not returned: an
/// Event is a courtesy, not a reason to retry a reconcile.
pub async fn publish_event(
    ctx: &Context,
    rc: &RaftCluster,
    type_: &str,
    reason: &str,
    action: &str,
    note: String,
) {
    let namespace = rc.namespace().unwrap_or_default();
    let now = Timestamp::now();
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                rc.name_any(),
                now.as_nanosecond().unsigned_abs()
            )),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some(action.to_string()),
        reason: Some(reason.to_string()),
        note: Some(note),
        type_: Some(type_.to_string()),
        regarding: Some(rc.object_ref(&())),
        reporting_controller: Some(format!("{}/operator", crate::crd::GROUP)),
        reporting_instance: Some(ctx.instance.clone()),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Err(error) = api.create(&PostParams::default(), &event).await {
        tracing::warn!(%error, reason, "could not publish an Event");
    }
}
