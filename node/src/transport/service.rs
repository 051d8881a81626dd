//! The receiving side of `kuberaft.raft.v1`: requests from peers go to the
//! event loop, and the core's answers come back as RPC responses once what
//! they promise is durable.

use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use futures::stream::{FuturesOrdered, Stream, StreamExt};
use kuberaft_proto::raft as pb;
use kuberaft_proto::raft::raft_server::Raft;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

use crate::kv::transfer::SnapshotReceiver;
use crate::raft::{self, NodeId};
use crate::server::event::{Event, PeerAnswer};
use crate::server::incarnations::Incarnations;
use crate::wire::{self, PeerRequest, PeerResponse, Rpc};

/// How long a peer's request may wait for the event loop (it is normally
/// answered within a disk write).
const ANSWER_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct PeerService {
    pub cluster: String,
    pub me: NodeId,
    pub events: mpsc::UnboundedSender<Event>,
    /// The data dir's snapshot directory, where incoming snapshots land.
    pub snapshot_dir: PathBuf,
    pub incarnations: Incarnations,
}

impl PeerService {
    fn ask(&self, msg: raft::Message) -> Result<oneshot::Receiver<PeerAnswer>, Status> {
        let (reply, rx) = oneshot::channel();
        self.events
            .send(Event::PeerRequest { msg, reply })
            .map_err(|_| Status::unavailable("member is shutting down"))?;
        Ok(rx)
    }

    /// The core message a request carries, after checking who it is for
    /// and that its sender is the incarnation we know.
    fn incoming(&self, req: PeerRequest) -> Result<raft::Message, Status> {
        let header = match &req {
            PeerRequest::RequestVote(r) => r.header.as_ref(),
            PeerRequest::AppendEntries(r) => r.header.as_ref(),
            PeerRequest::InstallSnapshot(r) => r.header.as_ref(),
            PeerRequest::TimeoutNow(r) => r.header.as_ref(),
        };
        let incarnation = header.map_or(0, |h| h.incarnation);
        let msg = wire::message::request_from_proto(req, &self.cluster, self.me)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        self.incarnations.check(msg.from, incarnation)?;
        Ok(msg)
    }

    /// An answer, stamped with our incarnation.
    fn answer<T>(&self, body: T) -> Response<T> {
        let mut r = Response::new(body);
        self.incarnations.stamp(r.metadata_mut());
        r
    }
}

async fn wait(rx: oneshot::Receiver<PeerAnswer>) -> Result<(Option<raft::Message>, u64), Status> {
    match tokio::time::timeout(ANSWER_DEADLINE, rx).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err(Status::unavailable("member is shutting down")),
        Err(_) => Err(Status::deadline_exceeded("member did not answer in time")),
    }
}

/// The RPC response carrying the core's answer.
fn respond(answer: Option<raft::Message>, rpc: Rpc) -> Result<PeerResponse, Status> {
    let m = answer
        .ok_or_else(|| Status::internal(format!("the core gave no answer to {}", rpc.name())))?;
    wire::message::response_to_proto(&m, rpc).map_err(|e| Status::internal(e.to_string()))
}

type AppendStream = Pin<Box<dyn Stream<Item = Result<pb::AppendEntriesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Raft for PeerService {
    async fn request_vote(
        &self,
        request: Request<pb::RequestVoteRequest>,
    ) -> Result<Response<pb::RequestVoteResponse>, Status> {
        let msg = self.incoming(PeerRequest::RequestVote(request.into_inner()))?;
        let (answer, _) = wait(self.ask(msg)?).await?;
        match respond(answer, Rpc::RequestVote)? {
            PeerResponse::RequestVote(r) => Ok(self.answer(r)),
            _ => Err(Status::internal("wrong answer to RequestVote")),
        }
    }

    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        let msg = self.incoming(PeerRequest::AppendEntries(request.into_inner()))?;
        let (answer, _) = wait(self.ask(msg)?).await?;
        match respond(answer, Rpc::AppendEntries)? {
            PeerResponse::AppendEntries(r) => Ok(self.answer(r)),
            _ => Err(Status::internal("wrong answer to AppendEntries")),
        }
    }

    type AppendEntriesPipelineStream = AppendStream;

    async fn append_entries_pipeline(
        &self,
        request: Request<Streaming<pb::AppendEntriesRequest>>,
    ) -> Result<Response<Self::AppendEntriesPipelineStream>, Status> {
        let mut incoming = request.into_inner();
        let svc = self.clone();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            // Requests go to the event loop in arrival order; answers leave in
            // the same order, each once the core has made it durable.
            let mut pending = FuturesOrdered::new();
            loop {
                tokio::select! {
                    req = incoming.message() => {
                        let r = match req {
                            Ok(Some(r)) => r,
                            _ => break,
                        };
                        let asked = svc
                            .incoming(PeerRequest::AppendEntries(r))
                            .and_then(|msg| svc.ask(msg));
                        match asked {
                            Ok(rx) => pending.push_back(wait(rx)),
                            Err(status) => {
                                let _ = tx.send(Err(status)).await;
                                break;
                            }
                        }
                    }
                    Some(answer) = pending.next(), if !pending.is_empty() => {
                        let out = answer.and_then(|(m, _)| match respond(m, Rpc::AppendEntries)? {
                            PeerResponse::AppendEntries(r) => Ok(r),
                            _ => Err(Status::internal("wrong answer to AppendEntries")),
                        });
                        // A refused request ends the stream; the leader
                        // reopens it and probes again.
                        let failed = out.is_err();
                        if tx.send(out).await.is_err() || failed {
                            break;
                        }
                    }
                }
            }
        });
        let stream: AppendStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
        Ok(self.answer(stream))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::InstallSnapshotChunk>>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        let mut chunks = request.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let msg = self.incoming(PeerRequest::InstallSnapshot(first.clone()))?;
        let raft::MessageBody::InstallSnapshot { snapshot: meta } = &msg.body else {
            return Err(Status::internal("InstallSnapshot carried another message"));
        };
        let dir = self.snapshot_dir.clone();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Status::internal(format!("cannot create {}: {e}", dir.display())))?;
        // File writes block: keep them off the async workers' hot path.
        let mut receiver = tokio::task::block_in_place(|| {
            SnapshotReceiver::begin(&dir, meta, first.total_size, first.crc32)
        })
        .map_err(|e| Status::internal(e.to_string()))?;
        let mut chunk = first;
        loop {
            tokio::task::block_in_place(|| receiver.write(chunk.offset, &chunk.data))
                .map_err(|e| Status::data_loss(e.to_string()))?;
            if chunk.done {
                break;
            }
            chunk = chunks
                .message()
                .await?
                .ok_or_else(|| Status::aborted("snapshot stream ended before its last chunk"))?;
        }
        let file = tokio::task::block_in_place(|| receiver.finish())
            .map_err(|e| Status::data_loss(e.to_string()))?;
        let (reply, rx) = oneshot::channel();
        self.events
            .send(Event::SnapshotReceived {
                msg,
                file: file.path,
                reply,
            })
            .map_err(|_| Status::unavailable("member is shutting down"))?;
        // Installing can take a while: the whole state machine is replaced.
        let (answer, _) = match tokio::time::timeout(Duration::from_secs(300), rx).await {
            Ok(Ok(a)) => a?,
            Ok(Err(_)) => return Err(Status::unavailable("member is shutting down")),
            Err(_) => {
                return Err(Status::deadline_exceeded(
                    "installing the snapshot took too long",
                ));
            }
        };
        match respond(answer, Rpc::InstallSnapshot)? {
            PeerResponse::InstallSnapshot(r) => Ok(self.answer(r)),
            _ => Err(Status::internal("wrong answer to InstallSnapshot")),
        }
    }

    async fn timeout_now(
        &self,
        request: Request<pb::TimeoutNowRequest>,
    ) -> Result<Response<pb::TimeoutNowResponse>, Status> {
        let msg = self.incoming(PeerRequest::TimeoutNow(request.into_inner()))?;
        let (_, term) = wait(self.ask(msg)?).await?;
        Ok(self.answer(pb::TimeoutNowResponse { term }))
    }
}
