//! The operator's Prometheus metrics (`kuberaft_operator_*`), served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub reconciles: Counter,
    pub reconcile_errors: Family<ReasonLabel, Counter>,
    pub reconcile_duration: Histogram,
    pub status_updates: Counter,
    pub applies: Counter,
    pub leader_change_to_status: Histogram,
    pub watched_clusters: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconciles: Counter::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            status_updates: Counter::default(),
            applies: Counter::default(),
            leader_change_to_status: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            watched_clusters: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric under the `kuberaft_operator` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("kuberaft_operator");
        r.register(
            "reconciles",
            "Reconciles of RaftClusters",
            self.reconciles.clone(),
        );
        r.register(
            "reconcile_errors",
            "Reconciles that failed, by reason",
            self.reconcile_errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            self.reconcile_duration.clone(),
        );
        r.register(
            "status_updates",
            "Writes of a RaftCluster's status (writes that would change nothing are not made)",
            self.status_updates.clone(),
        );
        r.register(
            "applies",
            "Server-side applies of owned objects (unchanged objects are not re-applied)",
            self.applies.clone(),
        );
        r.register(
            "leader_change_to_status_seconds",
            "From a member reporting a new leader to the RaftCluster's status showing it",
            self.leader_change_to_status.clone(),
        );
        r.register(
            "watched_clusters",
            "RaftClusters whose members are being watched",
            self.watched_clusters.clone(),
        );
    }
}

/// The registry and its text encoding.
pub struct Exporter {
    registry: Registry,
}

impl Exporter {
    pub fn new(metrics: &Metrics) -> Self {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        Exporter { registry }
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
