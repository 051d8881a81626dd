//! The member's status as `kuberaft.admin.v1` reports it, published on a
//! watch channel that Status, WatchStatus and the health service read.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kuberaft_proto::admin as pb;
use tokio::sync::watch;

use crate::config::NodeConfig;
use crate::metrics::{Metrics, PeerLabels};
use crate::raft::{RawNode, Role, Suffrage};

/// How often the status is refreshed when nothing but indexes moved.
const REFRESH: Duration = Duration::from_millis(100);

pub struct StatusBoard {
    tx: watch::Sender<pb::StatusResponse>,
    name: String,
    cluster: String,
    last_publish: Instant,
    last_leader: (u64, u64),
    leader_changed_unix_ms: u64,
    /// Latches once this member has known a leader and applied everything it
    /// knew to be committed: from then on it serves (grpc.health.v1).
    caught_up: bool,
    metrics: Metrics,
    admin_listen: std::net::SocketAddr,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where others reach this member's admin port: the host they reach its client port at (its
/// client address in the configuration) with the admin port; the listen address itself
/// (through loopback if unspecified) while it is in no configuration yet.
fn admin_addr(client_addr: Option<&str>, admin_listen: std::net::SocketAddr) -> String {
    match client_addr.and_then(|a| a.rsplit_once(':')) {
        Some((host, _)) => format!("{host}:{}", admin_listen.port()),
        None => crate::ui::local_addr(admin_listen),
    }
}

pub fn role_to_pb(role: Role) -> pb::Role {
    match role {
        Role::Follower => pb::Role::Follower,
        Role::PreCandidate => pb::Role::PreCandidate,
        Role::Candidate => pb::Role::Candidate,
        Role::Leader => pb::Role::Leader,
    }
}

impl StatusBoard {
    pub fn new(
        cfg: &NodeConfig,
        tx: watch::Sender<pb::StatusResponse>,
        metrics: Metrics,
    ) -> StatusBoard {
        StatusBoard {
            tx,
            name: cfg.name.clone(),
            cluster: cfg.cluster.clone(),
            last_publish: Instant::now() - REFRESH,
            last_leader: (0, 0),
            leader_changed_unix_ms: 0,
            caught_up: false,
            metrics,
            admin_listen: cfg.admin_listen,
        }
    }

    /// Publishes a fresh status if `now` is set, if term or leader changed,
    /// or if the last one is older than the refresh interval.
    /// `lost_data`: members refused for a new incarnation (see incarnations.rs).
    pub fn publish(&mut self, node: &RawNode, applied_index: u64, lost_data: Vec<u64>, now: bool) {
        let leader = (node.term(), node.leader_id());
        if leader.1 != self.last_leader.1 && leader.1 != 0 {
            self.leader_changed_unix_ms = unix_ms();
            self.metrics.leader_changes.inc();
        }
        let changed = leader != self.last_leader;
        if !now && !changed && self.last_publish.elapsed() < REFRESH {
            return;
        }
        self.last_leader = leader;
        self.last_publish = Instant::now();
        let s = node.status();
        self.update_metrics(&s, applied_index);
        if !self.caught_up
            && s.soft_state.leader_id != 0
            && applied_index >= s.hard_state.commit_index
        {
            self.caught_up = true;
        }
        let members = s
            .membership
            .members
            .values()
            .map(|m| {
                let p = s.progress.iter().find(|p| p.id == m.id);
                pb::MemberStatus {
                    member: Some(m.into()),
                    match_index: p.map_or(0, |p| p.match_index),
                    next_index: p.map_or(0, |p| p.next_index),
                    replication_state: p.map_or(String::new(), |p| p.state.as_str().to_string()),
                    recent_active: p.is_some_and(|p| p.recent_active),
                }
            })
            .collect();
        let leader_name = s
            .membership
            .members
            .get(&s.soft_state.leader_id)
            .map_or(String::new(), |m| m.name.clone());
        let suffrage = match s.membership.members.get(&s.id).map(|m| m.suffrage) {
            Some(Suffrage::Voter) => kuberaft_proto::raft::Suffrage::Voter,
            Some(Suffrage::Learner) => kuberaft_proto::raft::Suffrage::Learner,
            None => kuberaft_proto::raft::Suffrage::Unspecified,
        };
        let admin_addr = admin_addr(
            s.membership
                .members
                .get(&s.id)
                .map(|m| m.client_addr.as_str()),
            self.admin_listen,
        );
        let status = pb::StatusResponse {
            member_id: s.id,
            name: self.name.clone(),
            cluster: self.cluster.clone(),
            role: role_to_pb(s.soft_state.role) as i32,
            term: s.hard_state.current_term,
            voted_for: s.hard_state.voted_for,
            leader_id: s.soft_state.leader_id,
            leader_name,
            commit_index: s.hard_state.commit_index,
            applied_index,
            last_index: s.last_index,
            snapshot_index: s.snapshot_index,
            members,
            serving: self.caught_up && s.soft_state.leader_id != 0,
            suffrage: suffrage as i32,
            leader_changed_unix_ms: self.leader_changed_unix_ms,
            version: env!("CARGO_PKG_VERSION").to_string(),
            lost_data_members: lost_data,
            admin_addr,
        };
        self.tx.send_replace(status);
    }

    fn update_metrics(&self, s: &crate::raft::Status, applied_index: u64) {
        let m = &self.metrics;
        m.term.set(s.hard_state.current_term as i64);
        m.set_role(s.soft_state.role);
        m.leader_id.set(s.soft_state.leader_id as i64);
        m.commit_index.set(s.hard_state.commit_index as i64);
        m.applied_index.set(applied_index as i64);
        m.last_log_index.set(s.last_index as i64);
        m.snapshot_index.set(s.snapshot_index as i64);
        m.follower_lag_entries.clear();
        for p in s.progress.iter().filter(|p| p.id != s.id) {
            m.follower_lag_entries
                .get_or_create(&PeerLabels {
                    peer: p.id.to_string(),
                })
                .set(s.last_index.saturating_sub(p.match_index) as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::admin_addr;

    #[test]
    fn the_admin_address_is_the_client_host_with_the_admin_port() {
        let listen = "0.0.0.0:7003".parse().unwrap();
        assert_eq!(
            admin_addr(Some("demo-0.demo-peers.default.svc:7001"), listen),
            "demo-0.demo-peers.default.svc:7003"
        );
        assert_eq!(admin_addr(Some("[::1]:7001"), listen), "[::1]:7003");
        assert_eq!(admin_addr(None, listen), "127.0.0.1:7003");
        assert_eq!(
            admin_addr(None, "10.0.0.5:9003".parse().unwrap()),
            "10.0.0.5:9003"
        );
    }
}
