//! A fake Raft cluster behind real gRPC: one small tonic server per member implementing
//! `kuberaft.admin.v1.Admin` on 127.0.0.1, all sharing one scripted cluster state. Tests elect
//! leaders, kill members and check membership calls; the operator's member code talks to it
//! exactly as it would to `kuberaft-node` pods. Once the node server lands, real `kuberaft-node`
//! processes can replace it behind the same `MemberLocator` seam.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use kuberaft_operator::members::MemberRef;
use kuberaft_proto::admin::admin_server::{Admin, AdminServer};
use kuberaft_proto::admin::{
    AddMemberRequest, AddMemberResponse, MemberStatus, PromoteMemberRequest, PromoteMemberResponse,
    RemoveMemberRequest, RemoveMemberResponse, Role, SnapshotRequest, SnapshotResponse,
    StatusRequest, StatusResponse, TransferLeadershipRequest, TransferLeadershipResponse,
    WatchStatusRequest,
};
use kuberaft_proto::raft::{Member, Membership, Suffrage};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// One member of the configuration.
#[derive(Clone, Debug)]
pub struct ConfEntry {
    pub voter: bool,
    pub match_index: u64,
}

#[derive(Debug)]
pub struct State {
    pub cluster: String,
    pub term: u64,
    /// Member id of the leader, 0 for none.
    pub leader: u64,
    pub leader_changed_unix_ms: u64,
    pub commit_index: u64,
    /// Configuration by member id.
    pub configuration: BTreeMap<u64, ConfEntry>,
    /// Member ids whose process is "dead": their calls fail and their streams break.
    pub dead: Vec<u64>,
    /// Member ids that stop sending (a vanished pod that sends no reset).
    pub silent: Vec<u64>,
    /// Every admin call, in order, as "Method(arg)@member".
    pub calls: Vec<String>,
    /// Member ids the members report as back with a new data dir (refused until removed).
    pub lost_data: Vec<u64>,
}

/// A scripted cluster of members served on local ports.
#[derive(Clone)]
pub struct FakeCluster {
    state: Arc<Mutex<State>>,
    changed: watch::Sender<u64>,
    /// Ordinal → address of its admin server.
    pub addrs: Arc<Mutex<BTreeMap<i32, SocketAddr>>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl FakeCluster {
    /// A cluster named `cluster` whose configuration is `voters` voters (ids 1..=voters), with
    /// no leader yet.
    pub fn new(cluster: &str, voters: u64) -> Self {
        let configuration = (1..=voters)
            .map(|id| {
                (
                    id,
                    ConfEntry {
                        voter: true,
                        match_index: 0,
                    },
                )
            })
            .collect();
        let (changed, _) = watch::channel(0);
        FakeCluster {
            state: Arc::new(Mutex::new(State {
                cluster: cluster.to_string(),
                term: 0,
                leader: 0,
                leader_changed_unix_ms: 0,
                commit_index: 0,
                configuration,
                dead: Vec::new(),
                silent: Vec::new(),
                calls: Vec::new(),
                lost_data: Vec::new(),
            })),
            changed,
            addrs: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake cluster state")
    }

    /// Changes the state and wakes every WatchStatus stream.
    pub fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.changed.send_modify(|v| *v += 1);
    }

    /// `id` wins an election in the next term.
    pub fn elect(&self, id: u64) {
        self.update(|s| {
            s.term += 1;
            s.leader = id;
            s.leader_changed_unix_ms = now_ms();
            s.commit_index += 1;
            let commit = s.commit_index;
            for entry in s.configuration.values_mut() {
                entry.match_index = commit;
            }
        });
    }

    /// The member's process dies (its streams break, its calls fail); if it led, nobody leads.
    pub fn kill(&self, id: u64) {
        self.update(|s| {
            s.dead.push(id);
            if s.leader == id {
                s.leader = 0;
            }
        });
    }

    /// The member's process is back (a restarted container).
    #[allow(dead_code)]
    pub fn revive(&self, id: u64) {
        self.update(|s| s.dead.retain(|d| *d != id));
    }

    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Starts admin servers for ordinals `0..members` (members not in the configuration are
    /// pods waiting to join).
    pub async fn serve(&self, members: i32) {
        for ordinal in 0..members {
            self.serve_member(ordinal).await;
        }
    }

    pub async fn serve_member(&self, ordinal: i32) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let addr = listener.local_addr().expect("local address");
        self.addrs.lock().expect("addrs").insert(ordinal, addr);
        let service = FakeMember {
            id: u64::try_from(ordinal).expect("ordinal") + 1,
            cluster: self.clone(),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AdminServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
    }

    /// Like [`serve_member`](Self::serve_member), with TLS on the admin port as a member with
    /// `spec.tls` serves it: `files` as `--client-cert-file`, `--client-key-file` and
    /// `--client-trusted-ca-file`, client certificates required.
    #[allow(dead_code)]
    pub async fn serve_member_tls(&self, ordinal: i32, files: kuberaft_node::tls::TlsFiles) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let addr = listener.local_addr().expect("local address");
        self.addrs.lock().expect("addrs").insert(ordinal, addr);
        let tls = kuberaft_node::tls::ServerTls::load("client", files, true).expect("server TLS");
        let service = FakeMember {
            id: u64::try_from(ordinal).expect("ordinal") + 1,
            cluster: self.clone(),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AdminServer::new(service))
                .serve_with_incoming(kuberaft_node::tls::server::incoming(listener, Some(tls))),
        );
    }

    /// A locator that sends the operator to these local servers (an unused port for pods that
    /// have none, or of another cluster, so they look unreachable).
    pub fn locator(&self) -> impl Fn(&MemberRef) -> String + Send + Sync + 'static {
        let addrs = self.addrs.clone();
        let cluster = self.lock().cluster.clone();
        move |m: &MemberRef| match addrs.lock().expect("addrs").get(&m.ordinal) {
            Some(addr) if m.cluster == cluster => format!("http://{addr}"),
            _ => "http://127.0.0.1:1".to_string(),
        }
    }

    fn status_of(&self, id: u64) -> Result<StatusResponse, Status> {
        let s = self.lock();
        if s.dead.contains(&id) {
            return Err(Status::unavailable(format!("member {id} is dead")));
        }
        let name = |id: u64| format!("{}-{}", s.cluster, id - 1);
        let is_leader = s.leader == id;
        let members = if is_leader {
            s.configuration
                .iter()
                .map(|(&mid, e)| MemberStatus {
                    member: Some(Member {
                        id: mid,
                        name: name(mid),
                        peer_addr: String::new(),
                        client_addr: String::new(),
                        suffrage: if e.voter {
                            Suffrage::Voter as i32
                        } else {
                            Suffrage::Learner as i32
                        },
                    }),
                    match_index: e.match_index,
                    next_index: e.match_index + 1,
                    replication_state: "replicate".to_string(),
                    recent_active: !s.dead.contains(&mid),
                })
                .collect()
        } else {
            Vec::new()
        };
        let suffrage = match s.configuration.get(&id) {
            Some(e) if e.voter => Suffrage::Voter,
            Some(_) => Suffrage::Learner,
            None => Suffrage::Unspecified,
        };
        let in_configuration = s.configuration.contains_key(&id);
        Ok(StatusResponse {
            member_id: id,
            name: name(id),
            cluster: s.cluster.clone(),
            role: if is_leader {
                Role::Leader as i32
            } else {
                Role::Follower as i32
            },
            term: if in_configuration { s.term } else { 0 },
            voted_for: s.leader,
            leader_id: if in_configuration { s.leader } else { 0 },
            leader_name: if in_configuration && s.leader != 0 {
                name(s.leader)
            } else {
                String::new()
            },
            commit_index: s.commit_index,
            applied_index: s.commit_index,
            last_index: s.commit_index,
            snapshot_index: 0,
            members,
            serving: in_configuration && s.leader != 0,
            suffrage: suffrage as i32,
            leader_changed_unix_ms: s.leader_changed_unix_ms,
            version: "fake".to_string(),
            admin_addr: String::new(),
            lost_data_members: if in_configuration {
                s.lost_data.clone()
            } else {
                Vec::new()
            },
        })
    }

    fn record(&self, call: String) {
        self.lock().calls.push(call);
    }
}

struct FakeMember {
    id: u64,
    cluster: FakeCluster,
}

impl FakeMember {
    fn check_alive(&self) -> Result<(), Status> {
        if self.cluster.lock().dead.contains(&self.id) {
            Err(Status::unavailable("dead"))
        } else {
            Ok(())
        }
    }

    fn membership(&self) -> Membership {
        let s = self.cluster.lock();
        Membership {
            members: s
                .configuration
                .keys()
                .map(|&id| Member {
                    id,
                    ..Member::default()
                })
                .collect(),
        }
    }
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<StatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for FakeMember {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        self.cluster.status_of(self.id).map(Response::new)
    }

    type WatchStatusStream = StatusStream;

    type WatchEventsStream =
        Pin<Box<dyn Stream<Item = Result<kuberaft_proto::admin::RaftEvent, Status>> + Send>>;

    async fn watch_events(
        &self,
        _: Request<kuberaft_proto::admin::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        Err(Status::unimplemented("the fake member publishes no events"))
    }

    async fn watch_status(
        &self,
        request: Request<WatchStatusRequest>,
    ) -> Result<Response<StatusStream>, Status> {
        self.check_alive()?;
        let interval = match request.into_inner().interval_ms {
            0 => Duration::from_millis(1000),
            ms => Duration::from_millis(u64::from(ms)),
        };
        let cluster = self.cluster.clone();
        let id = self.id;
        let mut changed = cluster.changed.subscribe();
        let stream = async_stream(move |tx| async move {
            loop {
                let silent = cluster.lock().silent.contains(&id);
                if !silent {
                    let status = cluster.status_of(id);
                    let dead = status.is_err();
                    if tx.send(status).await.is_err() || dead {
                        return;
                    }
                }
                tokio::select! {
                    _ = changed.changed() => {}
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn add_member(
        &self,
        request: Request<AddMemberRequest>,
    ) -> Result<Response<AddMemberResponse>, Status> {
        self.check_alive()?;
        let request = request.into_inner();
        let member = request
            .member
            .ok_or_else(|| Status::invalid_argument("member is required"))?;
        self.cluster.record(format!(
            "AddMember({}, {}, learner_only={})@{}",
            member.id, member.name, request.learner_only, self.id
        ));
        self.cluster.update(|s| {
            s.configuration.entry(member.id).or_insert(ConfEntry {
                voter: false,
                match_index: 0,
            });
        });
        Ok(Response::new(AddMemberResponse {
            membership: Some(self.membership()),
        }))
    }

    async fn promote_member(
        &self,
        request: Request<PromoteMemberRequest>,
    ) -> Result<Response<PromoteMemberResponse>, Status> {
        self.check_alive()?;
        let id = request.into_inner().id;
        self.cluster
            .record(format!("PromoteMember({id})@{}", self.id));
        self.cluster.update(|s| {
            if let Some(e) = s.configuration.get_mut(&id) {
                e.voter = true;
            }
        });
        Ok(Response::new(PromoteMemberResponse {
            membership: Some(self.membership()),
        }))
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberResponse>, Status> {
        self.check_alive()?;
        let id = request.into_inner().id;
        self.cluster
            .record(format!("RemoveMember({id})@{}", self.id));
        self.cluster.update(|s| {
            s.configuration.remove(&id);
            // Removing a member forgets its incarnation everywhere.
            s.lost_data.retain(|m| *m != id);
        });
        Ok(Response::new(RemoveMemberResponse {
            membership: Some(self.membership()),
        }))
    }

    async fn transfer_leadership(
        &self,
        request: Request<TransferLeadershipRequest>,
    ) -> Result<Response<TransferLeadershipResponse>, Status> {
        self.check_alive()?;
        let to = request.into_inner().to;
        self.cluster
            .record(format!("TransferLeadership({to})@{}", self.id));
        let target = {
            let s = self.cluster.lock();
            if to != 0 {
                to
            } else {
                s.configuration
                    .iter()
                    .filter(|(id, e)| e.voter && **id != s.leader && !s.dead.contains(id))
                    .map(|(id, _)| *id)
                    .next()
                    .unwrap_or(s.leader)
            }
        };
        self.cluster.elect(target);
        let s = self.cluster.lock();
        Ok(Response::new(TransferLeadershipResponse {
            leader_id: s.leader,
            term: s.term,
        }))
    }

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        Err(Status::unimplemented("the fake has no state machine"))
    }
}

/// A stream fed by a task through a small channel.
fn async_stream<F, Fut>(f: F) -> StatusStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<StatusResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
