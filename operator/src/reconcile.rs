//! One reconcile of one RaftCluster: read → decide → apply → report.
//!
//! - read: the StatefulSet and the pods (API), and the members' last Statuses (the watches);
//! - decide: the bootstrap membership (once), the next scaling step, every owned object, the status;
//! - apply: server-side apply under one field manager, skipping objects unchanged since the last
//!   apply; the membership step through the admin API; the leader label;
//! - report: the status (only when it changed), and Events (`events.rs`) for leader and membership
//!   changes.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::crd::{Bootstrap, RaftCluster, RaftClusterStatus};
use crate::error::{Error, Result};
use crate::members::MemberRef;
use crate::members::admin::MemberAdmin;
use crate::members::watch::MemberWatches;
use crate::metrics::Metrics;
use crate::observe::{Observed, PodState, RaftView, StatefulSetState};
use crate::resources::{
    self, BuildConfig, FIELD_MANAGER, ROLE_LABEL, ROLE_LEADER, initial_members, member_id,
    pod_name, selector_string,
};
use crate::rollout::{Rollout, RolloutInput, next_rollout, updated_pods};
use crate::scaling::{Step, next_step};
use crate::status::{self, Failure, StatusInput, is_healthy};

/// Owned objects are re-applied at least this often even when unchanged, to repair drift the
/// owned-object stores could not see.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Requeue while a membership change is under way (the watches also trigger on each change).
pub const SCALING_REQUEUE: Duration = Duration::from_secs(2);
/// Requeue while no leader is known; a member reporting one triggers a reconcile at once, so
/// this is only a safety net.
pub const LEADERLESS_REQUEUE: Duration = Duration::from_secs(30);
/// Requeue of a steady cluster, to refresh commit indexes in status.
pub const STEADY_REQUEUE: Duration = Duration::from_secs(60);

/// Stores of the objects the operator owns, when the controller runs with them; they let an
/// unchanged object be skipped safely (its resourceVersion is still the one applied).
#[derive(Clone)]
pub struct OwnedStores {
    pub statefulsets: Store<StatefulSet>,
    pub services: Store<Service>,
    pub pod_disruption_budgets: Store<PodDisruptionBudget>,
    /// The members' pods (labelled managed-by the operator).
    pub pods: Store<Pod>,
    /// Set once the StatefulSet and pod stores hold a full list: until then a reconcile reads
    /// from the API, since an object missing from a store may still exist.
    pub statefulsets_synced: Arc<std::sync::atomic::AtomicBool>,
    pub pods_synced: Arc<std::sync::atomic::AtomicBool>,
}

impl OwnedStores {
    fn synced(&self) -> bool {
        use std::sync::atomic::Ordering::Acquire;
        self.statefulsets_synced.load(Acquire) && self.pods_synced.load(Acquire)
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub config: BuildConfig,
    pub watches: Arc<MemberWatches>,
    pub metrics: Metrics,
    /// `reportingInstance` of Events: the operator's pod name.
    pub instance: String,
    pub owned: Option<OwnedStores>,
    memory: Mutex<Memory>,
}

/// An object as last applied.
struct Applied {
    /// Hash of the applied body.
    hash: u64,
    /// The resourceVersion the API server returned.
    resource_version: Option<String>,
    at: Instant,
}

/// What the operator remembers between reconciles. Losing it (a restart) costs only redundant
/// applies and one possibly repeated Event, never a wrong decision.
#[derive(Default)]
pub(crate) struct Memory {
    /// (cluster uid, kind, name) → what was last applied.
    applied: HashMap<(String, String, String), Applied>,
    /// cluster uid → consecutive failed reconciles, for the backoff.
    failures: HashMap<String, u32>,
    /// cluster uid → generation whose even replica count was already warned about.
    pub(crate) warned_even: HashMap<String, i64>,
    /// cluster uid → the status last written.
    last_status: HashMap<String, RaftClusterStatus>,
}

impl Context {
    pub fn new(
        client: Client,
        config: BuildConfig,
        watches: Arc<MemberWatches>,
        metrics: Metrics,
        instance: String,
        owned: Option<OwnedStores>,
    ) -> Self {
        Context {
            client,
            config,
            watches,
            metrics,
            instance,
            owned,
            memory: Mutex::new(Memory::default()),
        }
    }

    pub(crate) fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        match self.memory.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn forget(&self, uid: &str) {
        let mut m = self.memory();
        m.applied.retain(|(u, _, _), _| u != uid);
        m.failures.remove(uid);
        m.warned_even.remove(uid);
        m.last_status.remove(uid);
    }
}

/// The controller's reconcile function.
pub async fn reconcile(rc: Arc<RaftCluster>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let name = rc.name_any();
    let namespace = rc
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(name.clone()))?;
    let uid = rc.uid().ok_or_else(|| Error::MissingUid(name.clone()))?;
    if rc.metadata.deletion_timestamp.is_some() {
        // Owner references make Kubernetes delete what the operator made; the StatefulSet's
        // PVC retention policy (from spec.storage.retention) decides about the data.
        ctx.watches.forget(&namespace, &name);
        ctx.forget(&uid);
        return Ok(Action::await_change());
    }
    let result = reconcile_cluster(&rc, &ctx, &namespace, &name, &uid).await;
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics
        .watched_clusters
        .set(i64::try_from(ctx.watches.clusters()).unwrap_or(i64::MAX));
    match &result {
        Ok(_) => {
            ctx.memory().failures.remove(&uid);
        }
        Err(e) => {
            ctx.metrics
                .reconcile_errors
                .get_or_create(&crate::metrics::ReasonLabel {
                    reason: e.reason().to_string(),
                })
                .inc();
        }
    }
    result
}

/// Backs off exponentially per cluster: 1 s, 2 s, 4 s … up to 5 minutes. One bad cluster never
/// stops the others, and the operator never exits because of one.
pub fn error_policy(rc: Arc<RaftCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    let uid = rc.uid().unwrap_or_default();
    let failures = {
        let mut m = ctx.memory();
        let n = m.failures.entry(uid).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(failures);
    tracing::warn!(cluster = %rc.name_any(), %error, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// The delay after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(9);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(300))
}

async fn reconcile_cluster(
    rc: &RaftCluster,
    ctx: &Context,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<Action> {
    // The operator is the only writer of status, so the status it last wrote is at least as new
    // as the cached object's (whose watch event may not have arrived yet): compare with that,
    // or a trigger right after a write would repeat the write and its Events.
    let last_written = ctx.memory().last_status.get(uid).cloned();
    let fresher;
    let rc = match last_written {
        Some(status) if rc.status.as_ref() != Some(&status) => {
            let mut copy = rc.clone();
            copy.status = Some(status);
            fresher = copy;
            &fresher
        }
        _ => rc,
    };
    let mut observed = read(ctx, namespace, name).await?;
    let bootstrap = decide_bootstrap(rc, &observed, &ctx.config);
    let replicas = observed.statefulset.as_ref().map_or_else(
        || size_without_statefulset(rc, &observed, &bootstrap),
        |s| s.replicas,
    );
    // TLS Secrets first: the StatefulSet mounts them and the member client dials with them. A
    // failure is reported in status and blocks every change (a StatefulSet mounting a missing
    // Secret would leave its pods stuck); the member watches keep what they dial with.
    let (tls, tls_failure) =
        match crate::tls::ensure(rc, &ctx.client, &ctx.config.cluster_domain, rc.spec.paused).await
        {
            Ok(tls) => {
                ctx.watches
                    .ensure_with_tls(namespace, name, replicas, tls.clone());
                (tls, None)
            }
            Err(e) => (None, Some(e)),
        };
    observed.members = ctx.watches.view(namespace, name);
    let raft = RaftView::from_members(&observed.members);
    let step = next_step(rc.spec.replicas, replicas, &raft, |ordinal| {
        is_healthy(observed.members.get(&pod_name(name, ordinal)))
    });
    if step != Step::Steady {
        tracing::info!(cluster = %name, ?step, "next step");
    }
    let now = Timestamp::now();

    let mut failure: Option<Error> = tls_failure;
    let mut rollout = decide_rollout(&observed, &raft, &step, name, now);
    if !rc.spec.paused && failure.is_none() {
        let target = match step {
            Step::SetReplicas(n) => n,
            _ => replicas,
        };
        let voters = budget_voters(rc, &raft, replicas);
        match apply_objects(rc, ctx, uid, target, voters, &bootstrap).await {
            Ok(template_unseen) => {
                if let Some(sts) = observed.statefulset.as_mut() {
                    sts.replicas = target;
                    if template_unseen {
                        // Just changed: which pods are up to date is unknown until the
                        // StatefulSet controller has seen it (its status triggers a reconcile).
                        sts.update_revision = None;
                        rollout = decide_rollout(&observed, &raft, &step, name, now);
                    }
                } else {
                    // Made just now: its pods are made from its template (pods left by an
                    // orphaning delete are judged on the next reconcile, once it has a status).
                    observed.statefulset = Some(StatefulSetState {
                        replicas: target,
                        ..StatefulSetState::default()
                    });
                }
                if let Err(e) = take_step(
                    rc,
                    ctx,
                    namespace,
                    name,
                    &raft,
                    &step,
                    &observed.pods,
                    tls.as_deref(),
                )
                .await
                {
                    failure = Some(e);
                } else if let Err(e) =
                    roll(rc, ctx, namespace, &observed, &rollout, tls.as_deref()).await
                {
                    failure = Some(e);
                }
            }
            Err(e) => failure = Some(e),
        }
        if let Err(e) = label_leader(ctx, namespace, &observed, &raft).await {
            failure.get_or_insert(e);
        }
        crate::events::warn_even_replicas(rc, ctx, uid).await;
    }

    if rollout.in_progress() {
        tracing::info!(cluster = %name, ?rollout, "rolling update");
    }
    let updated_replicas = updated_pods(observed.statefulset.as_ref(), &observed.pods);

    let report = failure.as_ref().map(|e| Failure {
        reason: e.reason(),
        message: e.to_string(),
    });
    let new_status = status::compute(&StatusInput {
        rc,
        observed: &observed,
        raft: &raft,
        step: &step,
        rollout: &rollout,
        updated_replicas,
        bootstrap: Some(&bootstrap),
        failure: report.as_ref(),
        now,
    });
    let old_status = rc.status.clone().unwrap_or_default();
    if rc.status.as_ref() != Some(&new_status) {
        write_status(ctx, namespace, name, &new_status).await?;
        ctx.memory()
            .last_status
            .insert(uid.to_string(), new_status.clone());
        crate::events::report_leader_change(rc, ctx, &old_status, &new_status).await;
    }

    match failure {
        Some(e) => Err(e),
        None if step.is_scaling() || rollout.in_progress() => Ok(Action::requeue(SCALING_REQUEUE)),
        None if step == Step::WaitForLeader => Ok(Action::requeue(LEADERLESS_REQUEUE)),
        None => Ok(Action::requeue(STEADY_REQUEUE)),
    }
}

/// The rolling update's next step. Membership changes go first: a pod added while scaling is
/// made from the new template anyway.
fn decide_rollout(
    observed: &Observed,
    raft: &RaftView,
    step: &Step,
    name: &str,
    now: Timestamp,
) -> Rollout {
    if !matches!(step, Step::Steady | Step::WaitForLeader) {
        return Rollout::UpToDate;
    }
    let healthy = |ordinal: i32| is_healthy(observed.members.get(&pod_name(name, ordinal)));
    next_rollout(&RolloutInput {
        statefulset: observed.statefulset.as_ref(),
        pods: &observed.pods,
        raft,
        healthy: &healthy,
        now,
    })
}

/// Reads the StatefulSet and the pods: from the watched stores once they are synced (no API
/// call per reconcile), from the API before that (and in tests that run without stores).
async fn read(ctx: &Context, namespace: &str, name: &str) -> Result<Observed> {
    if let Some(stores) = ctx.owned.as_ref().filter(|s| s.synced()) {
        let statefulset = stores
            .statefulsets
            .get(&ObjectRef::new(&resources::statefulset_name(name)).within(namespace))
            .map(|sts| crate::observe::statefulset_state(&sts));
        let pods = stores
            .pods
            .state()
            .iter()
            .filter(|p| {
                p.namespace().as_deref() == Some(namespace)
                    && p.labels()
                        .get(resources::INSTANCE_LABEL)
                        .map(String::as_str)
                        == Some(name)
            })
            .filter_map(|pod| crate::observe::pod_state(name, pod))
            .collect();
        return Ok(Observed {
            statefulset,
            pods,
            members: Default::default(),
        });
    }
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
    let statefulset = statefulsets
        .get_opt(&resources::statefulset_name(name))
        .await?
        .map(|sts| crate::observe::statefulset_state(&sts));
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pods = pods
        .list(&ListParams::default().labels(&selector_string(name)))
        .await?
        .items
        .iter()
        .filter_map(|pod| crate::observe::pod_state(name, pod))
        .collect();
    Ok(Observed {
        statefulset,
        pods,
        members: Default::default(),
    })
}

/// The voters whose quorum the PodDisruptionBudget keeps: those of the configuration in force
/// as the leader reports it; without a leader, the most the cluster may have (spec or pods), so
/// the budget errs on the side of keeping members.
pub fn budget_voters(rc: &RaftCluster, raft: &RaftView, replicas: i32) -> i32 {
    match &raft.configuration {
        Some(conf) => i32::try_from(conf.iter().filter(|m| m.voter).count()).unwrap_or(i32::MAX),
        None => rc.spec.replicas.max(replicas),
    }
}

/// How many pods a StatefulSet made again (it was deleted, e.g. `--cascade=orphan` to change
/// its volumeClaimTemplates) must run: as many as the cluster has, never just its bootstrap
/// size. A cluster created with 3 and scaled to 5 made again with 3 would lose pods 3 and 4,
/// two of five voters, and with them its quorum. So the largest of: the bootstrap size, the
/// size status last saw, one past the highest ordinal among the members status lists and
/// among the pods still running (an orphaning delete leaves them).
pub fn size_without_statefulset(
    rc: &RaftCluster,
    observed: &Observed,
    bootstrap: &Bootstrap,
) -> i32 {
    let name = rc.name_any();
    let status = rc.status.as_ref();
    let from_status = status.map_or(0, |s| s.replicas);
    let from_members = status
        .into_iter()
        .flat_map(|s| &s.members)
        .filter_map(|m| resources::ordinal_of_pod(&name, &m.name))
        .map(|o| o.saturating_add(1))
        .max()
        .unwrap_or(0);
    let from_pods = observed
        .pods
        .iter()
        .map(|p| p.ordinal.saturating_add(1))
        .max()
        .unwrap_or(0);
    bootstrap
        .replicas
        .max(from_status)
        .max(from_members)
        .max(from_pods)
}

/// The bootstrap membership: as recorded in status; else as the existing StatefulSet's pods
/// were given it (status was lost, or its write failed after the StatefulSet was made); else
/// decided now, once, from `spec.replicas`.
pub fn decide_bootstrap(rc: &RaftCluster, observed: &Observed, cfg: &BuildConfig) -> Bootstrap {
    if let Some(b) = rc.status.as_ref().and_then(|s| s.bootstrap.clone()) {
        return b;
    }
    if let Some(members) = observed
        .statefulset
        .as_ref()
        .and_then(|s| s.initial_members.clone())
    {
        let replicas =
            i32::try_from(members.split(',').filter(|m| !m.is_empty()).count()).unwrap_or(i32::MAX);
        return Bootstrap {
            replicas,
            initial_members: members,
        };
    }
    let namespace = rc.namespace().unwrap_or_default();
    Bootstrap {
        replicas: rc.spec.replicas,
        initial_members: initial_members(
            &rc.name_any(),
            &namespace,
            &cfg.cluster_domain,
            rc.spec.replicas,
        ),
    }
}

/// `voters`: how many voters the disruption budget keeps a quorum of (see [`budget_voters`]).
/// True when the StatefulSet applied has a spec its controller has not seen yet.
async fn apply_objects(
    rc: &RaftCluster,
    ctx: &Context,
    uid: &str,
    replicas: i32,
    voters: i32,
    bootstrap: &Bootstrap,
) -> Result<bool> {
    let stores = ctx.owned.as_ref();
    apply(
        ctx,
        uid,
        resources::peers_service(rc),
        stores.map(|s| &s.services),
    )
    .await?;
    apply(
        ctx,
        uid,
        resources::client_service(rc),
        stores.map(|s| &s.services),
    )
    .await?;
    apply(
        ctx,
        uid,
        resources::leader_service(rc),
        stores.map(|s| &s.services),
    )
    .await?;
    let sts = resources::statefulset(rc, &ctx.config, replicas, &bootstrap.initial_members);
    let applied = apply(ctx, uid, sts, stores.map(|s| &s.statefulsets)).await?;
    let pdb = resources::pod_disruption_budget(rc, voters);
    apply(ctx, uid, pdb, stores.map(|s| &s.pod_disruption_budgets)).await?;
    // A spec the StatefulSet controller has not seen yet (a template just changed).
    Ok(applied.is_some_and(|sts| {
        sts.status.and_then(|s| s.observed_generation) < sts.metadata.generation
    }))
}

/// Server-side applies `object` unless exactly it was applied recently and (when a store is
/// available) nobody changed it since.
/// Returns the object as applied, or None when it was skipped.
async fn apply<K>(
    ctx: &Context,
    uid: &str,
    object: K,
    store: Option<&Store<K>>,
) -> Result<Option<K>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let name = object.name_any();
    let namespace = object.namespace().unwrap_or_default();
    let body = serde_json::to_vec(&object).map_err(|source| Error::Serialize {
        what: "an owned object",
        source,
    })?;
    let mut hasher = DefaultHasher::new();
    body.hash(&mut hasher);
    let hash = hasher.finish();
    let key = (uid.to_string(), K::kind(&()).to_string(), name.clone());
    let unchanged = ctx.memory().applied.get(&key).is_some_and(|a| {
        a.hash == hash
            && a.at.elapsed() < RESYNC
            && store.is_none_or(|s| {
                s.get(&ObjectRef::new(&name).within(&namespace))
                    .is_some_and(|o| o.resource_version() == a.resource_version)
            })
    });
    if unchanged {
        return Ok(None);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await?;
    ctx.metrics.applies.inc();
    ctx.memory().applied.insert(
        key,
        Applied {
            hash,
            resource_version: applied.resource_version(),
            at: Instant::now(),
        },
    );
    Ok(Some(applied))
}

/// Makes the membership change `step` asks for, through the leader.
#[allow(clippy::too_many_arguments)]
async fn take_step(
    rc: &RaftCluster,
    ctx: &Context,
    namespace: &str,
    name: &str,
    raft: &RaftView,
    step: &Step,
    pods: &[PodState],
    tls: Option<&crate::tls::MemberTls>,
) -> Result<()> {
    let member = |ordinal: i32| MemberRef {
        namespace: namespace.to_string(),
        cluster: name.to_string(),
        ordinal,
    };
    let Some(via) = raft.leader.as_ref().map(|(_, o)| member(*o)) else {
        return Ok(());
    };
    let admin = MemberAdmin {
        locator: ctx.watches.locator(),
        cluster_domain: &ctx.config.cluster_domain,
        tls,
    };
    let (reason, note) = match *step {
        Step::AddLearner(o) => {
            admin.add_learner(&via, &member(o)).await?;
            (
                "MemberAdded",
                format!(
                    "added {} (member {}) as a learner",
                    pod_name(name, o),
                    member_id(o)
                ),
            )
        }
        Step::Promote(o) => {
            admin.promote(&via, member_id(o)).await?;
            (
                "MemberPromoted",
                format!("promoted {} to voter", pod_name(name, o)),
            )
        }
        Step::TransferLeadership { from: o, to } => {
            admin.transfer_leadership(&member(o), member_id(to)).await?;
            (
                "LeadershipTransferred",
                format!(
                    "asked {} to hand leadership to {} before its removal",
                    pod_name(name, o),
                    pod_name(name, to)
                ),
            )
        }
        Step::Replace(o) => {
            admin.remove(&via, member_id(o)).await?;
            // Restarted now, it is not refused any more (removal forgot its incarnation) and
            // skips the crash-loop back-off it is in.
            if let Some(pod) = pods.iter().find(|p| p.ordinal == o) {
                delete_pod(ctx, namespace, pod).await?;
            }
            (
                "MemberReplaced",
                format!(
                    "{} came back without its data (a new incarnation, refused by the leader): removed it from the configuration and restarted it, to add it back as a new learner, then voter",
                    pod_name(name, o)
                ),
            )
        }
        Step::Remove(o) => {
            admin.remove(&via, member_id(o)).await?;
            (
                "MemberRemoved",
                format!("removed {} from the configuration", pod_name(name, o)),
            )
        }
        _ => return Ok(()),
    };
    tracing::info!(cluster = %name, %note, "membership step taken");
    // Lost data is worth a look even when the operator repaired it: the disk may be failing.
    let type_ = if reason == "MemberReplaced" {
        "Warning"
    } else {
        "Normal"
    };
    crate::events::publish_event(ctx, rc, type_, reason, "Scale", note).await;
    Ok(())
}

/// Takes the rolling update's next step: restarts a pod (deletes it; the StatefulSet makes it
/// again from the current template) or hands leadership over before the leader's restart.
async fn roll(
    rc: &RaftCluster,
    ctx: &Context,
    namespace: &str,
    observed: &Observed,
    rollout: &Rollout,
    tls: Option<&crate::tls::MemberTls>,
) -> Result<()> {
    let name = rc.name_any();
    let restart = |ordinals: Vec<i32>| async move {
        for ordinal in ordinals {
            let Some(pod) = observed.pods.iter().find(|p| p.ordinal == ordinal) else {
                continue;
            };
            if !delete_pod(ctx, namespace, pod).await? {
                continue;
            }
            let revision = pod.revision.as_deref().unwrap_or("unknown");
            let note = format!(
                "restarted {} (revision {revision}) to run the current pod template",
                pod.name
            );
            tracing::info!(cluster = %rc.name_any(), %note, "rolling update");
            crate::events::publish_event(ctx, rc, "Normal", "MemberRestarted", "Update", note)
                .await;
        }
        Ok(())
    };
    match rollout {
        Rollout::Restart { ordinal, .. } => restart(vec![*ordinal]).await,
        Rollout::RestartAll(ordinals) => restart(ordinals.clone()).await,
        Rollout::TransferLeadership { from, to } => {
            let member = |ordinal: i32| MemberRef {
                namespace: namespace.to_string(),
                cluster: name.clone(),
                ordinal,
            };
            let admin = MemberAdmin {
                locator: ctx.watches.locator(),
                cluster_domain: &ctx.config.cluster_domain,
                tls,
            };
            admin
                .transfer_leadership(&member(*from), member_id(*to))
                .await?;
            let note = format!(
                "asked {} to hand leadership to {}, which runs the current pod template, before its restart",
                pod_name(&name, *from),
                pod_name(&name, *to)
            );
            tracing::info!(cluster = %name, %note, "rolling update");
            crate::events::publish_event(
                ctx,
                rc,
                "Normal",
                "LeadershipTransferred",
                "Update",
                note,
            )
            .await;
            Ok(())
        }
        Rollout::Stalled { ordinal, why } => {
            let was_stalled = rc.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == status::DEGRADED && c.reason == "UpdateStalled")
            });
            if !was_stalled {
                let note = format!(
                    "the rolling update stopped at {}: {why}",
                    pod_name(&name, *ordinal)
                );
                crate::events::publish_event(ctx, rc, "Warning", "UpdateStalled", "Update", note)
                    .await;
            }
            Ok(())
        }
        Rollout::UpToDate | Rollout::Pending | Rollout::WaitForMember { .. } => Ok(()),
    }
}

/// Deletes `pod` — exactly it: the uid precondition never hits a replacement the StatefulSet
/// made meanwhile. False when it was gone or replaced already.
async fn delete_pod(ctx: &Context, namespace: &str, pod: &PodState) -> Result<bool> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods.delete(&pod.name, &params).await {
        Ok(_) => Ok(true),
        // Gone already (404), or replaced: the uid no longer matches (409).
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Moves `kuberaft.io/role=leader` to the leader's pod (and off every other pod). With no
/// leader known, labels are left as they are rather than flapping during an election.
async fn label_leader(
    ctx: &Context,
    namespace: &str,
    observed: &Observed,
    raft: &RaftView,
) -> Result<()> {
    let Some((leader, _)) = raft.leader.as_ref() else {
        return Ok(());
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    for pod in &observed.pods {
        let is_leader = &pod.name == leader;
        if pod.leader_label == is_leader {
            continue;
        }
        let value = if is_leader {
            json!(ROLE_LEADER)
        } else {
            json!(null)
        };
        let patch = json!({ "metadata": { "labels": { ROLE_LABEL: value } } });
        match pods
            .patch(&pod.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            // The pod went away (the old leader was deleted): nothing to unlabel.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes the status with server-side apply, so fields that are no longer set are removed.
async fn write_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &RaftClusterStatus,
) -> Result<()> {
    let api: Api<RaftCluster> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({
        "apiVersion": RaftCluster::api_version(&()),
        "kind": RaftCluster::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics.status_updates.inc();
    Ok(())
}
