//! The operator's live view of every member: one WatchStatus stream per pod. A stream delivers a
//! fresh Status on each change of role, term or leader (and once a second), so a new leader
//! reaches the status of the RaftCluster within a second: a change triggers a reconcile of the
//! cluster through the controller's `reconcile_on` stream. Periodic Statuses that change nothing
//! that status shows trigger nothing, so an idle cluster costs no API writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;
use kuberaft_proto::admin::admin_client::AdminClient;
use kuberaft_proto::admin::{StatusResponse, WatchStatusRequest};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::admin::connect;
use super::{MemberLocator, MemberRef};
use crate::crd::RaftCluster;
use crate::health::Health;
use crate::tls::MemberTls;

/// How often members are asked to send a Status even when nothing changed.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// A stream silent for this long is treated as broken (a vanished pod may never reset it).
pub const SILENCE_LIMIT: Duration = Duration::from_secs(3);
const RETRY_MIN: Duration = Duration::from_millis(200);
/// The longest wait between attempts. Short, because a member that comes back (a restarted
/// container, a recreated pod) is only seen, and can only report an election, once its stream
/// is up again: at 5 s, status lagged elections by seconds. An attempt a second per member
/// that is down costs nothing worth saving.
pub const RETRY_MAX: Duration = Duration::from_secs(1);

/// What the operator last heard from one member.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The last Status received, kept while the member is unreachable.
    pub status: Option<StatusResponse>,
    /// The stream is up and delivering.
    pub reachable: bool,
    /// Why the member is unreachable.
    pub error: Option<String>,
    /// When the operator received the last Status.
    pub received_at: Option<Instant>,
}

impl Observation {
    fn unreachable(previous: Option<&Observation>, error: String) -> Self {
        Observation {
            status: previous.and_then(|p| p.status.clone()),
            reachable: false,
            error: Some(error),
            received_at: previous.and_then(|p| p.received_at),
        }
    }

    /// What the RaftCluster's status or the scaling steps depend on: a change here triggers a
    /// reconcile, anything else (commit index, the periodic resend) does not.
    fn signature(&self) -> impl PartialEq + use<> {
        let status = self.status.as_ref().map(|s| {
            let members: Vec<(u64, i32)> = s
                .members
                .iter()
                .filter_map(|m| m.member.as_ref().map(|m| (m.id, m.suffrage)))
                .collect();
            (s.role, s.term, s.leader_id, s.serving, s.suffrage, members)
        });
        (self.reachable, status)
    }
}

/// The members of one cluster by pod name.
pub type ClusterView = BTreeMap<String, Observation>;

type ClusterKey = (String, String);

struct ClusterWatch {
    view: Arc<Mutex<ClusterView>>,
    tasks: HashMap<i32, JoinHandle<()>>,
    /// What the streams dial with; a change restarts them.
    tls: Option<Arc<MemberTls>>,
}

/// All member watches of all clusters.
pub struct MemberWatches {
    locator: Arc<dyn MemberLocator>,
    trigger: mpsc::Sender<ObjectRef<RaftCluster>>,
    health: Health,
    clusters: Mutex<HashMap<ClusterKey, ClusterWatch>>,
}

impl MemberWatches {
    /// `trigger` receives the cluster to reconcile whenever a member's reported state changes;
    /// it is bounded, and a full queue drops the trigger (a reconcile for it is pending anyway).
    pub fn new(
        locator: Arc<dyn MemberLocator>,
        trigger: mpsc::Sender<ObjectRef<RaftCluster>>,
        health: Health,
    ) -> Self {
        MemberWatches {
            locator,
            trigger,
            health,
            clusters: Mutex::new(HashMap::new()),
        }
    }

    pub fn locator(&self) -> &dyn MemberLocator {
        self.locator.as_ref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClusterKey, ClusterWatch>> {
        match self.clusters.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Watches exactly the pods with ordinals `0..replicas` of the cluster: starts the missing
    /// streams and stops those of pods that no longer exist.
    pub fn ensure(&self, namespace: &str, cluster: &str, replicas: i32) {
        self.ensure_with_tls(namespace, cluster, replicas, None);
    }

    /// [`ensure`](Self::ensure) for a cluster whose members speak TLS when `tls` is set.
    pub fn ensure_with_tls(
        &self,
        namespace: &str,
        cluster: &str,
        replicas: i32,
        tls: Option<Arc<MemberTls>>,
    ) {
        let mut clusters = self.lock();
        let watch = clusters
            .entry((namespace.to_string(), cluster.to_string()))
            .or_insert_with(|| ClusterWatch {
                view: Arc::new(Mutex::new(ClusterView::new())),
                tasks: HashMap::new(),
                tls: tls.clone(),
            });
        if watch.tls != tls {
            for task in watch.tasks.values() {
                task.abort();
            }
            watch.tasks.clear();
            watch.tls = tls;
        }
        watch.tasks.retain(|ordinal, task| {
            let keep = *ordinal < replicas && !task.is_finished();
            if !keep {
                task.abort();
                lock_view(&watch.view).remove(&crate::resources::pod_name(cluster, *ordinal));
            }
            keep
        });
        for ordinal in 0..replicas {
            if watch.tasks.contains_key(&ordinal) {
                continue;
            }
            let member = MemberRef {
                namespace: namespace.to_string(),
                cluster: cluster.to_string(),
                ordinal,
            };
            let task = watch_member(
                member.clone(),
                self.locator.endpoint(&member),
                watch.tls.clone(),
                watch.view.clone(),
                self.trigger.clone(),
            );
            let handle = self
                .health
                .spawn(format!("watch of member {}", member.pod()), task);
            watch.tasks.insert(ordinal, handle);
        }
    }

    /// What the cluster's members last reported.
    pub fn view(&self, namespace: &str, cluster: &str) -> ClusterView {
        self.lock()
            .get(&(namespace.to_string(), cluster.to_string()))
            .map(|w| lock_view(&w.view).clone())
            .unwrap_or_default()
    }

    /// Stops watching a cluster (it was deleted).
    pub fn forget(&self, namespace: &str, cluster: &str) {
        if let Some(watch) = self
            .lock()
            .remove(&(namespace.to_string(), cluster.to_string()))
        {
            for task in watch.tasks.values() {
                task.abort();
            }
        }
    }

    /// Stops watching every cluster for which `keep` is false.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        let mut clusters = self.lock();
        clusters.retain(|(ns, name), watch| {
            let k = keep(ns, name);
            if !k {
                for task in watch.tasks.values() {
                    task.abort();
                }
            }
            k
        });
    }

    /// Number of clusters watched.
    pub fn clusters(&self) -> usize {
        self.lock().len()
    }
}

fn lock_view(view: &Mutex<ClusterView>) -> std::sync::MutexGuard<'_, ClusterView> {
    match view.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Records `observation` for `pod` and triggers a reconcile when it differs in what matters.
fn record(
    member: &MemberRef,
    view: &Mutex<ClusterView>,
    trigger: &mpsc::Sender<ObjectRef<RaftCluster>>,
    observation: impl FnOnce(Option<&Observation>) -> Observation,
) {
    let pod = member.pod();
    let changed = {
        let mut view = lock_view(view);
        let previous = view.get(&pod);
        let next = observation(previous);
        let changed = previous.is_none_or(|p| p.signature() != next.signature());
        view.insert(pod, next);
        changed
    };
    if changed {
        let target = ObjectRef::<RaftCluster>::new(&member.cluster).within(&member.namespace);
        // A full queue already holds reconciles that will read this view.
        let _ = trigger.try_send(target);
    }
}

/// The wait before reconnecting: it doubles with each attempt that delivered nothing, up to
/// [`RETRY_MAX`], and starts over at [`RETRY_MIN`] after a stream that delivered a Status (a
/// member that restarted is back, and the next break is a new outage, not the same one). A
/// fifth either way of jitter keeps the streams to a cluster's members from reconnecting in
/// step.
#[derive(Debug)]
struct Retry {
    next: Duration,
}

impl Retry {
    fn new() -> Self {
        Retry { next: RETRY_MIN }
    }

    /// The wait after an attempt; `delivered` says whether it received any Status.
    fn after(&mut self, delivered: bool, jitter: f64) -> Duration {
        if delivered {
            self.next = RETRY_MIN;
        }
        let wait = self.next.mul_f64(jitter.clamp(0.8, 1.2));
        self.next = (self.next * 2).min(RETRY_MAX);
        wait
    }
}

async fn watch_member(
    member: MemberRef,
    uri: String,
    tls: Option<Arc<MemberTls>>,
    view: Arc<Mutex<ClusterView>>,
    trigger: mpsc::Sender<ObjectRef<RaftCluster>>,
) {
    let mut retry = Retry::new();
    loop {
        let mut delivered = false;
        let Err(error) = deliver(
            &member,
            &uri,
            tls.as_deref(),
            &view,
            &trigger,
            &mut delivered,
        )
        .await;
        tracing::debug!(member = %member.pod(), %uri, %error, "member watch interrupted");
        record(&member, &view, &trigger, |previous| {
            Observation::unreachable(previous, error)
        });
        let jitter = rand::random_range(0.8..=1.2);
        tokio::time::sleep(retry.after(delivered, jitter)).await;
    }
}

/// Streams one connection's worth of Statuses into the view, setting `delivered` when one
/// arrives. Returns why it ended (it never ends well: members stream until they go away).
async fn deliver(
    member: &MemberRef,
    uri: &str,
    tls: Option<&MemberTls>,
    view: &Mutex<ClusterView>,
    trigger: &mpsc::Sender<ObjectRef<RaftCluster>>,
    delivered: &mut bool,
) -> Result<std::convert::Infallible, String> {
    let channel = connect(uri, tls).await?;
    let request = WatchStatusRequest {
        interval_ms: u32::try_from(WATCH_INTERVAL.as_millis()).unwrap_or(1000),
    };
    let mut stream = tokio::time::timeout(
        SILENCE_LIMIT,
        AdminClient::new(channel).watch_status(request),
    )
    .await
    .map_err(|_| format!("WatchStatus on {uri} did not answer"))?
    .map_err(|status| format!("WatchStatus on {uri} failed: {}", status.message()))?
    .into_inner();
    loop {
        let next = tokio::time::timeout(SILENCE_LIMIT, stream.message())
            .await
            .map_err(|_| format!("no status from {uri} for {SILENCE_LIMIT:?}"))?
            .map_err(|status| format!("WatchStatus on {uri} broke: {}", status.message()))?;
        let Some(status) = next else {
            return Err(format!("{uri} ended its WatchStatus stream"));
        };
        let now = Instant::now();
        *delivered = true;
        record(member, view, trigger, |_| Observation {
            status: Some(status),
            reachable: true,
            error: None,
            received_at: Some(now),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_while_nothing_arrives_and_start_over_after_a_stream_that_worked() {
        let mut r = Retry::new();
        let waits: Vec<Duration> = (0..5).map(|_| r.after(false, 1.0)).collect();
        assert_eq!(
            waits,
            [200, 400, 800, 1000, 1000].map(Duration::from_millis)
        );
        // The member came back and its stream delivered before it broke again: the first
        // reconnect is quick, not the longest wait.
        assert_eq!(r.after(true, 1.0), RETRY_MIN);
        assert_eq!(r.after(false, 1.0), Duration::from_millis(400));
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        let mut r = Retry::new();
        assert_eq!(r.after(false, 0.8), Duration::from_millis(160));
        assert_eq!(r.after(false, 5.0), Duration::from_millis(480));
    }
}
