//! `kuberaft.admin.v1`: status and membership. Membership changes and
//! transfers run on the leader; other members forward them once, to the
//! leader's admin port. The client port serves only the calls that read
//! (see admin.proto for why).

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use kuberaft_proto::admin as pb;
use kuberaft_proto::admin::admin_server::Admin;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

use super::client::{ClientError, ClientRequest, ask};
use super::deadline::{Deadline, FORWARDED};
use super::event::Event;
use super::forward::Forwarder;
use crate::raft::{ConfChange, Membership, NodeId, Suffrage};

#[derive(Clone)]
pub struct AdminService {
    pub events: mpsc::UnboundedSender<Event>,
    pub status: watch::Receiver<pb::StatusResponse>,
    pub forwarder: Forwarder,
    /// Protocol events of the event loop, for WatchEvents.
    pub ui_events: tokio::sync::broadcast::Sender<pb::RaftEvent>,
    /// Served on the admin port: every call. On the client port, the calls that change the
    /// cluster are refused.
    pub admin_port: bool,
}

/// What to do after the local attempt.
enum Outcome<T> {
    Done(T),
    /// Not the leader: forward to this client address.
    Forward(String),
}

impl AdminService {
    /// Proposes a membership change here, retrying while the previous change
    /// is uncommitted or a learner catches up; `Forward` when not leader.
    async fn change(
        &self,
        change: ConfChange,
        deadline: Deadline,
        forwarded: bool,
    ) -> Result<Outcome<Membership>, Status> {
        loop {
            let c = change.clone();
            match ask(&self.events, deadline, |reply| {
                ClientRequest::ChangeMembership {
                    change: c,
                    deadline,
                    reply,
                }
            })
            .await
            {
                Ok(m) => return Ok(Outcome::Done(m)),
                Err(ClientError::NotLeader {
                    leader_addr: Some(addr),
                    ..
                }) if !forwarded => return Ok(Outcome::Forward(addr)),
                // One change at a time, and learners are promoted only once
                // caught up: wait and try again until the deadline.
                Err(ClientError::Unavailable(m))
                    if (m.contains("not committed yet") || m.contains("has not caught up"))
                        && deadline.remaining() > Duration::from_millis(100) =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e.to_status()),
            }
        }
    }

    /// Refuses a call that changes the cluster on the client port, saying where to send it.
    fn on_admin_port(&self, call: &str) -> Result<(), Status> {
        if self.admin_port {
            return Ok(());
        }
        let admin_addr = self.status.borrow().admin_addr.clone();
        Err(Status::permission_denied(format!(
            "{call} changes the cluster and is served only on the admin port ({admin_addr}), \
             which the members and the operator reach; not on the client port. raftctl finds \
             the admin port by itself; run it where the admin port is reachable (in a member's pod)"
        )))
    }

    fn leader_client_addr(&self) -> Option<(NodeId, String)> {
        let s = self.status.borrow();
        if s.leader_id == 0 || s.leader_id == s.member_id {
            return None;
        }
        s.members
            .iter()
            .filter_map(|m| m.member.as_ref())
            .find(|m| m.id == s.leader_id)
            .map(|m| (m.id, m.client_addr.clone()))
    }
}

fn membership_response(m: &Membership) -> Option<kuberaft_proto::raft::Membership> {
    Some(m.into())
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<pb::StatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(self.status.borrow().clone()))
    }

    type WatchStatusStream = StatusStream;

    type WatchEventsStream = Pin<Box<dyn Stream<Item = Result<pb::RaftEvent, Status>> + Send>>;

    async fn watch_events(
        &self,
        _: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        use tokio_stream::StreamExt as _;
        // A watcher that falls behind loses the oldest events, never slows
        // the event loop.
        let events = tokio_stream::wrappers::BroadcastStream::new(self.ui_events.subscribe())
            .filter_map(|r| r.ok().map(Ok));
        Ok(Response::new(Box::pin(events)))
    }

    async fn watch_status(
        &self,
        request: Request<pb::WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        let interval = match request.get_ref().interval_ms {
            0 => Duration::from_millis(1000),
            ms => Duration::from_millis(u64::from(ms).max(10)),
        };
        let mut status = self.status.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let first = status.borrow_and_update().clone();
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tokio::select! {
                    changed = status.changed() => if changed.is_err() { return },
                    _ = tick.tick() => {}
                    _ = tx.closed() => return,
                }
                let s = status.borrow_and_update().clone();
                if tx.send(Ok(s)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        self.on_admin_port("AddMember")?;
        let deadline = Deadline::of(&request);
        let forwarded = request.metadata().contains_key(FORWARDED);
        let r = request.into_inner();
        let mut member = r
            .member
            .as_ref()
            .ok_or_else(|| {
                Status::invalid_argument(
                    "AddMember needs a member (id, name, peer_addr, client_addr)",
                )
            })
            .and_then(|m| {
                let mut m = m.clone();
                m.suffrage = kuberaft_proto::raft::Suffrage::Learner as i32;
                crate::raft::Member::try_from(m)
                    .map_err(|e| Status::invalid_argument(e.to_string()))
            })?;
        member.suffrage = Suffrage::Learner;
        if member.id == 0
            || member.name.is_empty()
            || member.peer_addr.is_empty()
            || member.client_addr.is_empty()
        {
            return Err(Status::invalid_argument(
                "AddMember needs a member id above 0, a name, a peer_addr and a client_addr",
            ));
        }
        let id = member.id;
        // Adding a member that is already a learner just continues to the
        // promotion, so a retried AddMember finishes the job.
        let already_learner = {
            let s = self.status.borrow();
            s.members
                .iter()
                .filter_map(|m| m.member.as_ref())
                .any(|m| m.id == id && m.suffrage == kuberaft_proto::raft::Suffrage::Learner as i32)
        };
        let mut membership = None;
        if !already_learner {
            match self
                .change(ConfChange::AddLearner(member), deadline, forwarded)
                .await?
            {
                Outcome::Done(m) => membership = Some(m),
                Outcome::Forward(addr) => {
                    let mut admin = self.forwarder.leader_admin(&addr).await?;
                    return admin
                        .add_member(Forwarder::forwarded_admin(r, deadline))
                        .await;
                }
            }
        }
        if !r.learner_only {
            match self
                .change(ConfChange::PromoteLearner { id }, deadline, forwarded)
                .await?
            {
                Outcome::Done(m) => membership = Some(m),
                Outcome::Forward(addr) => {
                    let mut admin = self.forwarder.leader_admin(&addr).await?;
                    return admin
                        .add_member(Forwarder::forwarded_admin(r, deadline))
                        .await;
                }
            }
        }
        Ok(Response::new(pb::AddMemberResponse {
            membership: membership.as_ref().and_then(membership_response),
        }))
    }

    async fn promote_member(
        &self,
        request: Request<pb::PromoteMemberRequest>,
    ) -> Result<Response<pb::PromoteMemberResponse>, Status> {
        self.on_admin_port("PromoteMember")?;
        let deadline = Deadline::of(&request);
        let forwarded = request.metadata().contains_key(FORWARDED);
        let r = request.into_inner();
        match self
            .change(ConfChange::PromoteLearner { id: r.id }, deadline, forwarded)
            .await?
        {
            Outcome::Done(m) => Ok(Response::new(pb::PromoteMemberResponse {
                membership: membership_response(&m),
            })),
            Outcome::Forward(addr) => {
                let mut admin = self.forwarder.leader_admin(&addr).await?;
                admin
                    .promote_member(Forwarder::forwarded_admin(r, deadline))
                    .await
            }
        }
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        self.on_admin_port("RemoveMember")?;
        let deadline = Deadline::of(&request);
        let forwarded = request.metadata().contains_key(FORWARDED);
        let r = request.into_inner();
        let outcome = self
            .change(ConfChange::RemoveMember { id: r.id }, deadline, forwarded)
            .await;
        match outcome {
            Ok(Outcome::Done(m)) => Ok(Response::new(pb::RemoveMemberResponse {
                membership: membership_response(&m),
            })),
            Ok(Outcome::Forward(addr)) => {
                let mut admin = self.forwarder.leader_admin(&addr).await?;
                admin
                    .remove_member(Forwarder::forwarded_admin(r, deadline))
                    .await
            }
            // The leader is the member to remove: move leadership away first
            // (thesis §3.10), then ask the new leader.
            Err(s)
                if s.code() == tonic::Code::FailedPrecondition
                    && s.message().contains("cannot remove itself") =>
            {
                ask(&self.events, deadline, |reply| {
                    ClientRequest::TransferLeadership {
                        to: None,
                        deadline,
                        reply,
                    }
                })
                .await
                .map_err(|e| e.to_status())?;
                let started = tokio::time::Instant::now();
                let addr = loop {
                    if let Some((_, addr)) = self.leader_client_addr() {
                        break addr;
                    }
                    if started.elapsed() > Duration::from_secs(5) || deadline.remaining().is_zero()
                    {
                        return Err(Status::unavailable(
                            "leadership moved but no new leader is known yet; retry",
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                let mut admin = self.forwarder.leader_admin(&addr).await?;
                admin
                    .remove_member(Forwarder::forwarded_admin(r, deadline))
                    .await
            }
            Err(s) => Err(s),
        }
    }

    async fn transfer_leadership(
        &self,
        request: Request<pb::TransferLeadershipRequest>,
    ) -> Result<Response<pb::TransferLeadershipResponse>, Status> {
        self.on_admin_port("TransferLeadership")?;
        let deadline = Deadline::of(&request);
        let forwarded = request.metadata().contains_key(FORWARDED);
        let r = request.into_inner();
        let to = (r.to != 0).then_some(r.to);
        match ask(&self.events, deadline, |reply| {
            ClientRequest::TransferLeadership {
                to,
                deadline,
                reply,
            }
        })
        .await
        {
            Ok((leader_id, term)) => Ok(Response::new(pb::TransferLeadershipResponse {
                leader_id,
                term,
            })),
            Err(ClientError::NotLeader {
                leader_addr: Some(addr),
                ..
            }) if !forwarded => {
                let mut admin = self.forwarder.leader_admin(&addr).await?;
                admin
                    .transfer_leadership(Forwarder::forwarded_admin(r, deadline))
                    .await
            }
            Err(e) => Err(e.to_status()),
        }
    }

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        self.on_admin_port("Snapshot")?;
        let deadline = Deadline::of(&request);
        ask(&self.events, deadline, |reply| ClientRequest::Snapshot {
            reply,
        })
        .await
        .map(Response::new)
        .map_err(|e| e.to_status())
    }
}
