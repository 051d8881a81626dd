//! Who is in the cluster and what each member says about itself: asks the
//! endpoints for their Status, then the other members their membership lists.

use std::time::Duration;

use futures::future::join_all;
use kuberaft_proto::admin::admin_client::AdminClient;
use kuberaft_proto::admin::{self, Role, StatusRequest, StatusResponse};
use kuberaft_proto::raft;
use tonic::transport::Channel;

use super::client::{Client, channel, request};
use super::error::{Failure, classify, code_name};

/// One member (or endpoint) and its answer.
#[derive(Clone, Debug)]
pub struct MemberView {
    pub addr: String,
    /// From the membership, when some member listed this address.
    pub member: Option<raft::Member>,
    pub status: Result<StatusResponse, String>,
}

impl MemberView {
    pub fn id(&self) -> Option<u64> {
        match &self.status {
            Ok(s) => Some(s.member_id),
            Err(_) => self.member.as_ref().map(|m| m.id),
        }
    }

    pub fn name(&self) -> String {
        match (&self.status, &self.member) {
            (Ok(s), _) => s.name.clone(),
            (Err(_), Some(m)) => m.name.clone(),
            _ => String::new(),
        }
    }
}

/// Asks one member for its Status.
pub async fn status_of(ch: Channel, timeout: Duration) -> Result<StatusResponse, String> {
    let mut admin = AdminClient::new(ch);
    let call = admin.status(request(StatusRequest {}, timeout));
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(match classify(&status) {
            Failure::Unreachable(why) => format!("unreachable ({why})"),
            Failure::Lost(why) => format!("connection lost ({why})"),
            Failure::Answered => format!("{}: {}", code_name(status.code()), status.message()),
        }),
        Err(_) => Err(format!("no answer within {}ms", timeout.as_millis())),
    }
}

/// The membership as the most authoritative answer sees it: the leader's, else
/// the one with the highest term.
pub fn best_membership(answers: &[&StatusResponse]) -> Vec<raft::Member> {
    answers
        .iter()
        .max_by_key(|s| (s.role() == Role::Leader, s.term, s.commit_index))
        .map(|s| s.members.iter().filter_map(|m| m.member.clone()).collect())
        .unwrap_or_default()
}

/// The leader's view of replication, when some member is the leader.
pub fn leader_of(views: &[MemberView]) -> Option<&StatusResponse> {
    views
        .iter()
        .filter_map(|v| v.status.as_ref().ok())
        .filter(|s| s.role() == Role::Leader)
        .max_by_key(|s| s.term)
}

/// Status of every endpoint and, with `discover`, of every member the
/// answers list (by client address). Sorted by member id, then address.
pub async fn survey(client: &Client, discover: bool) -> Vec<MemberView> {
    let timeout = client.command_timeout.min(Duration::from_secs(3));
    let asked: Vec<(String, Channel)> = client
        .endpoints()
        .iter()
        .map(|e| (e.addr.clone(), e.channel.clone()))
        .collect();
    let mut views: Vec<MemberView> = join_all(asked.into_iter().map(|(addr, ch)| async move {
        let status = status_of(ch, timeout).await;
        MemberView {
            addr,
            member: None,
            status,
        }
    }))
    .await;
    let answers: Vec<&StatusResponse> = views
        .iter()
        .filter_map(|v| v.status.as_ref().ok())
        .collect();
    let membership = best_membership(&answers);
    if discover {
        let more: Vec<raft::Member> = membership
            .iter()
            .filter(|m| !views.iter().any(|v| v.addr == m.client_addr))
            .filter(|m| !answers.iter().any(|s| s.member_id == m.id))
            .cloned()
            .collect();
        let extra = join_all(more.into_iter().map(|m| async move {
            let status = match channel(&m.client_addr, client.dial_timeout) {
                Ok(ch) => status_of(ch, timeout).await,
                Err(e) => Err(e.message),
            };
            MemberView {
                addr: m.client_addr.clone(),
                member: Some(m),
                status,
            }
        }))
        .await;
        views.extend(extra);
    }
    for v in &mut views {
        let by_addr = membership.iter().find(|m| m.client_addr == v.addr);
        let by_id = v
            .status
            .as_ref()
            .ok()
            .and_then(|s| membership.iter().find(|m| m.id == s.member_id));
        if let Some(m) = by_id.or(by_addr) {
            v.member = Some(m.clone());
        }
    }
    views.sort_by(|a, b| {
        (a.id().unwrap_or(u64::MAX), &a.addr).cmp(&(b.id().unwrap_or(u64::MAX), &b.addr))
    });
    views
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
        Role::Unspecified => "unknown",
    }
}

pub fn suffrage_name(s: raft::Suffrage) -> &'static str {
    match s {
        raft::Suffrage::Voter => "voter",
        raft::Suffrage::Learner => "learner",
        raft::Suffrage::Unspecified => "unknown",
    }
}

/// "3 of 5 members unreachable", for explaining a missing leader.
pub fn unreachable_summary(views: &[MemberView]) -> Option<String> {
    let total = views.len();
    let down = views.iter().filter(|v| v.status.is_err()).count();
    (total > 0 && down > 0).then(|| format!("{down} of {total} members unreachable"))
}

/// Member status as JSON, for `status -o json` and the live view's snapshots.
pub fn status_json(s: &StatusResponse) -> serde_json::Value {
    serde_json::json!({
        "member_id": s.member_id,
        "name": s.name,
        "cluster": s.cluster,
        "role": role_name(s.role()),
        "term": s.term,
        "voted_for": s.voted_for,
        "leader_id": s.leader_id,
        "leader_name": s.leader_name,
        "commit_index": s.commit_index,
        "applied_index": s.applied_index,
        "last_index": s.last_index,
        "snapshot_index": s.snapshot_index,
        "serving": s.serving,
        "suffrage": suffrage_name(s.suffrage()),
        "leader_changed_unix_ms": s.leader_changed_unix_ms,
        "version": s.version,
        "admin_addr": s.admin_addr,
        "lost_data_members": s.lost_data_members,
        "members": s.members.iter().map(member_status_json).collect::<Vec<_>>(),
    })
}

pub fn member_json(m: &raft::Member) -> serde_json::Value {
    serde_json::json!({
        "id": m.id,
        "name": m.name,
        "peer_addr": m.peer_addr,
        "client_addr": m.client_addr,
        "suffrage": suffrage_name(m.suffrage()),
    })
}

fn member_status_json(m: &admin::MemberStatus) -> serde_json::Value {
    let mut v = m.member.as_ref().map(member_json).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("match_index".into(), m.match_index.into());
        o.insert("next_index".into(), m.next_index.into());
        o.insert(
            "replication_state".into(),
            m.replication_state.clone().into(),
        );
        o.insert("recent_active".into(), m.recent_active.into());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_the_names_of_the_paper_and_the_proto() {
        let s = StatusResponse {
            member_id: 2,
            name: "dev-1".into(),
            role: Role::Leader as i32,
            term: 7,
            leader_id: 2,
            commit_index: 40,
            members: vec![admin::MemberStatus {
                member: Some(raft::Member {
                    id: 3,
                    name: "dev-2".into(),
                    suffrage: raft::Suffrage::Learner as i32,
                    ..Default::default()
                }),
                match_index: 39,
                next_index: 40,
                replication_state: "replicate".into(),
                recent_active: true,
            }],
            ..Default::default()
        };
        let v = status_json(&s);
        assert_eq!(v["role"], "leader");
        assert_eq!(v["term"], 7);
        assert_eq!(v["leader_id"], 2);
        assert_eq!(v["commit_index"], 40);
        assert_eq!(v["members"][0]["match_index"], 39);
        assert_eq!(v["members"][0]["suffrage"], "learner");
        assert_eq!(v["members"][0]["replication_state"], "replicate");
    }

    #[test]
    fn unreachable_members_are_counted() {
        let view = |ok: bool| MemberView {
            addr: "h:1".into(),
            member: None,
            status: if ok {
                Ok(StatusResponse::default())
            } else {
                Err("unreachable".into())
            },
        };
        assert_eq!(
            unreachable_summary(&[view(true), view(false), view(false)]).as_deref(),
            Some("2 of 3 members unreachable")
        );
        assert_eq!(unreachable_summary(&[view(true)]), None);
    }
}
