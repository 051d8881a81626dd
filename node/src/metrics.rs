//! Prometheus metrics of a member, served at `/metrics` on the HTTP port.
//!
//! Names follow Prometheus conventions: a `kuberaft_` prefix, `_total` on
//! counters (added by the OpenMetrics encoder), base units in the name
//! (`_seconds`, `_bytes`).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::raft::Role;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    /// `Role::as_str`: follower, pre-candidate, candidate, leader.
    pub role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// Every metric of a member; cheap to clone (all handles are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub term: Gauge,
    pub role: Family<RoleLabels, Gauge>,
    pub leader_id: Gauge,
    pub leader_changes: Counter,
    pub commit_index: Gauge,
    pub applied_index: Gauge,
    pub last_log_index: Gauge,
    pub snapshot_index: Gauge,
    pub proposals_committed: Counter,
    pub proposals_failed: Counter,
    pub requests_abandoned: Family<KindLabels, Counter>,
    pub append_seconds: Histogram,
    pub fsync_seconds: Histogram,
    pub apply_seconds: Histogram,
    pub snapshots: Family<KindLabels, Counter>,
    pub snapshot_bytes: Gauge,
    pub peer_connected: Family<PeerLabels, Gauge>,
    pub follower_lag_entries: Family<PeerLabels, Gauge>,
}

fn latency() -> Histogram {
    // 50 µs to ~1.6 s: an fsync on a fast disk up to a stalled one.
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("kuberaft");
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            term: Gauge::default(),
            role: Family::default(),
            leader_id: Gauge::default(),
            leader_changes: Counter::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            last_log_index: Gauge::default(),
            snapshot_index: Gauge::default(),
            proposals_committed: Counter::default(),
            proposals_failed: Counter::default(),
            requests_abandoned: Family::default(),
            append_seconds: latency(),
            fsync_seconds: latency(),
            apply_seconds: latency(),
            snapshots: Family::default(),
            snapshot_bytes: Gauge::default(),
            peer_connected: Family::default(),
            follower_lag_entries: Family::default(),
        };
        r.register("term", "The member's current term (§5.1)", m.term.clone());
        r.register(
            "role",
            "1 for the member's current role, 0 for the others",
            m.role.clone(),
        );
        r.register(
            "leader_id",
            "Member id of the known leader; 0 if none",
            m.leader_id.clone(),
        );
        r.register(
            "leader_changes",
            "Times this member saw the leader change",
            m.leader_changes.clone(),
        );
        r.register(
            "commit_index",
            "Highest log index known to be committed",
            m.commit_index.clone(),
        );
        r.register(
            "applied_index",
            "Highest log index applied to the state machine",
            m.applied_index.clone(),
        );
        r.register(
            "last_log_index",
            "Index of the last entry in the member's log",
            m.last_log_index.clone(),
        );
        r.register(
            "snapshot_index",
            "Last index covered by the member's newest snapshot",
            m.snapshot_index.clone(),
        );
        r.register(
            "proposals_committed",
            "Client writes committed and applied on this leader",
            m.proposals_committed.clone(),
        );
        r.register(
            "proposals_failed",
            "Client writes refused or lost to a leader change",
            m.proposals_failed.clone(),
        );
        r.register(
            "requests_abandoned",
            "Requests not carried out because their client's deadline had passed or it hung up (kind: write, read, membership, transfer)",
            m.requests_abandoned.clone(),
        );
        r.register_with_unit(
            "append",
            "Time to persist one batch of log entries and hard state",
            Unit::Seconds,
            m.append_seconds.clone(),
        );
        r.register_with_unit(
            "fsync",
            "Time of the fsync that makes a batch durable",
            Unit::Seconds,
            m.fsync_seconds.clone(),
        );
        r.register_with_unit(
            "apply",
            "Time to apply one batch of committed entries",
            Unit::Seconds,
            m.apply_seconds.clone(),
        );
        r.register(
            "snapshots",
            "Snapshots taken, sent, installed, and cancelled (a stream stopped because its follower caught up through entries)",
            m.snapshots.clone(),
        );
        r.register_with_unit(
            "snapshot_size",
            "Size of the newest snapshot",
            Unit::Bytes,
            m.snapshot_bytes.clone(),
        );
        r.register(
            "peer_connected",
            "1 while the append stream to a peer is open",
            m.peer_connected.clone(),
        );
        r.register(
            "follower_lag_entries",
            "Leader only: entries a member's log is behind the leader's",
            m.follower_lag_entries.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }

    pub fn set_role(&self, role: Role) {
        for r in [
            Role::Follower,
            Role::PreCandidate,
            Role::Candidate,
            Role::Leader,
        ] {
            self.role
                .get_or_create(&RoleLabels { role: r.as_str() })
                .set(i64::from(r == role));
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
