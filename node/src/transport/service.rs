//! The receiving side of `kuberaft.raft.v1`: requests from peers go to the
//! event loop, and the core's answers come back as RPC responses once what
//! they promise is durable.

use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use futures::stream::{FuturesOrdered, Stream, StreamExt};
use kuberaft_proto::raft as pb;
use kuberaft_proto::raft::raft_server::Raft;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

use super::codec;
use crate::raft::{self, NodeId};
use crate::server::event::{Event, PeerAnswer};

/// How long a peer's request may wait for the event loop (it is normally
/// answered within a disk write).
const ANSWER_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct PeerService {
    pub cluster: String,
    pub me: NodeId,
    pub events: mpsc::UnboundedSender<Event>,
    /// Where incoming snapshots are written before the event loop takes them.
    pub incoming_dir: PathBuf,
}

impl PeerService {
    fn ask(&self, msg: raft::Message) -> Result<oneshot::Receiver<PeerAnswer>, Status> {
        let (reply, rx) = oneshot::channel();
        self.events
            .send(Event::PeerRequest { msg, reply })
            .map_err(|_| Status::unavailable("member is shutting down"))?;
        Ok(rx)
    }

    fn header(&self, h: Option<&pb::Header>) -> Result<NodeId, Status> {
        codec::check_header(h, &self.cluster, self.me).map_err(Status::failed_precondition)
    }
}

async fn wait(rx: oneshot::Receiver<PeerAnswer>) -> Result<(Option<raft::Message>, u64), Status> {
    match tokio::time::timeout(ANSWER_DEADLINE, rx).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err(Status::unavailable("member is shutting down")),
        Err(_) => Err(Status::deadline_exceeded("member did not answer in time")),
    }
}

type AppendStream = Pin<Box<dyn Stream<Item = Result<pb::AppendEntriesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Raft for PeerService {
    async fn request_vote(
        &self,
        request: Request<pb::RequestVoteRequest>,
    ) -> Result<Response<pb::RequestVoteResponse>, Status> {
        let r = request.into_inner();
        let from = self.header(r.header.as_ref())?;
        let rx = self.ask(codec::vote_request_to_core(self.me, from, &r))?;
        let (answer, _) = wait(rx).await?;
        answer
            .as_ref()
            .and_then(codec::vote_response_to_pb)
            .map(Response::new)
            .ok_or_else(|| Status::internal("no answer to the vote request"))
    }

    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        let r = request.into_inner();
        let from = self.header(r.header.as_ref())?;
        let msg =
            codec::append_request_to_core(self.me, from, r).map_err(Status::invalid_argument)?;
        let (answer, _) = wait(self.ask(msg)?).await?;
        answer
            .as_ref()
            .and_then(codec::append_response_to_pb)
            .map(Response::new)
            .ok_or_else(|| Status::internal("no answer to AppendEntries"))
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
                            .header(r.header.as_ref())
                            .and_then(|from| {
                                codec::append_request_to_core(svc.me, from, r)
                                    .map_err(Status::invalid_argument)
                            })
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
                        let out = answer.and_then(|(m, _)| {
                            m.as_ref()
                                .and_then(codec::append_response_to_pb)
                                .ok_or_else(|| Status::internal("no answer to AppendEntries"))
                        });
                        // A refused request (say, a stale term race) ends the
                        // stream; the leader reopens it.
                        let failed = out.is_err();
                        if tx.send(out).await.is_err() || failed {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
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
        let from = self.header(first.header.as_ref())?;
        let meta = first
            .meta
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("first snapshot chunk has no metadata"))
            .and_then(|m| {
                crate::wire::snapshot_meta_from_pb(m).map_err(Status::invalid_argument)
            })?;
        let term = first.term;
        tokio::fs::create_dir_all(&self.incoming_dir)
            .await
            .map_err(|e| {
                Status::internal(format!(
                    "cannot create {}: {e}",
                    self.incoming_dir.display()
                ))
            })?;
        let path = self.incoming_dir.join(format!(
            "incoming-{from}-{}-{}.snap",
            meta.last_included_index, meta.last_included_term
        ));
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| Status::internal(format!("cannot create {}: {e}", path.display())))?;
        let mut crc = crc32fast::Hasher::new();
        let mut received = 0u64;
        let mut chunk = first;
        let result: Result<(), Status> = async {
            loop {
                if chunk.offset != received {
                    return Err(Status::invalid_argument(format!(
                        "snapshot chunk at offset {} where {received} was expected",
                        chunk.offset
                    )));
                }
                crc.update(&chunk.data);
                file.write_all(&chunk.data)
                    .await
                    .map_err(|e| Status::internal(format!("cannot write {}: {e}", path.display())))?;
                received += chunk.data.len() as u64;
                if chunk.done {
                    if chunk.total_size != received || chunk.crc32 != crc.clone().finalize() {
                        return Err(Status::data_loss(format!(
                            "snapshot arrived damaged: {received} bytes (sender: {}), checksum mismatch",
                            chunk.total_size
                        )));
                    }
                    file.sync_all()
                        .await
                        .map_err(|e| Status::internal(format!("cannot sync {}: {e}", path.display())))?;
                    return Ok(());
                }
                chunk = chunks
                    .message()
                    .await?
                    .ok_or_else(|| Status::aborted("snapshot stream ended before its last chunk"))?;
            }
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
        let msg = raft::Message {
            from,
            to: self.me,
            term,
            body: raft::MessageBody::InstallSnapshot { snapshot: meta },
        };
        let (reply, rx) = oneshot::channel();
        self.events
            .send(Event::SnapshotReceived {
                msg,
                file: path,
                reply,
            })
            .map_err(|_| Status::unavailable("member is shutting down"))?;
        // Installing can take a while (the whole state machine is replaced).
        let answer = match tokio::time::timeout(Duration::from_secs(300), rx).await {
            Ok(Ok(a)) => a?,
            Ok(Err(_)) => return Err(Status::unavailable("member is shutting down")),
            Err(_) => {
                return Err(Status::deadline_exceeded(
                    "installing the snapshot took too long",
                ));
            }
        };
        answer
            .0
            .as_ref()
            .and_then(codec::snapshot_response_to_pb)
            .map(Response::new)
            .ok_or_else(|| Status::internal("no answer to InstallSnapshot"))
    }

    async fn timeout_now(
        &self,
        request: Request<pb::TimeoutNowRequest>,
    ) -> Result<Response<pb::TimeoutNowResponse>, Status> {
        let r = request.into_inner();
        let from = self.header(r.header.as_ref())?;
        let msg = raft::Message {
            from,
            to: self.me,
            term: r.term,
            body: raft::MessageBody::TimeoutNow,
        };
        let (_, term) = wait(self.ask(msg)?).await?;
        Ok(Response::new(pb::TimeoutNowResponse { term }))
    }
}
