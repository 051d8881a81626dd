//! Sending to one peer: a task per peer, so a dead or slow peer never holds
//! up the others. AppendEntries go through one ordered stream (pipelining);
//! votes and TimeoutNow are separate unary calls; snapshots their own stream.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kuberaft_proto::raft as pb;
use kuberaft_proto::raft::raft_client::RaftClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::channel::{CONNECT_TIMEOUT, lazy_channel_with};
use super::snapshot_sender;
use crate::raft::{self, NodeId};
use crate::server::event::Event;
use crate::wire::{self, PeerRequest, PeerResponse};

/// Largest gRPC message a member sends or accepts (an AppendEntries batch).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// How many AppendEntries may wait for a stream before new ones are dropped
/// (Raft retransmits).
const PIPELINE_QUEUE: usize = 1024;
const VOTE_DEADLINE: Duration = Duration::from_millis(1000);

/// What the event loop hands a peer task.
pub enum Outbound {
    Message(raft::Message),
    /// Stream the snapshot in `file` (described by the message) to the peer.
    Snapshot {
        msg: raft::Message,
        file: PathBuf,
    },
    /// Stop streaming the current snapshot: the follower caught up without it.
    CancelSnapshot,
}

/// The context a peer task needs.
#[derive(Clone)]
pub struct PeerContext {
    pub cluster: String,
    pub me: NodeId,
    pub events: mpsc::UnboundedSender<Event>,
    pub metrics: crate::metrics::Metrics,
    /// Snapshot streaming limit in bytes per second; 0 is unlimited.
    pub snapshot_send_rate: u64,
    pub incarnations: crate::server::incarnations::Incarnations,
    /// Mutual TLS to the other members' peer ports, when configured.
    pub tls: Option<crate::tls::ClientTls>,
}

impl PeerContext {
    /// Handles a refusal from `peer`: if it refused our incarnation, this
    /// member's data dir is not the one the cluster knew, and it must stop.
    fn refused(&self, peer: NodeId, status: &tonic::Status) {
        if crate::server::incarnations::is_fenced(status) {
            let _ = self.events.send(Event::Fenced(format!(
                "member {peer} refused this member: {}",
                status.message()
            )));
        }
    }

    /// Checks the incarnation on an answer from `peer`; false (and a log
    /// line) if the peer came back with a new data dir.
    fn answer_ok(&self, peer: NodeId, metadata: &tonic::metadata::MetadataMap) -> bool {
        match self.incarnations.check_answer(peer, metadata) {
            Ok(()) => true,
            Err(status) => {
                tracing::error!(peer, "{}", status.message());
                false
            }
        }
    }
}

/// Stamps our incarnation on a request's header.
fn stamp(req: &mut PeerRequest, incarnation: u64) {
    let header = match req {
        PeerRequest::RequestVote(r) => r.header.as_mut(),
        PeerRequest::AppendEntries(r) => r.header.as_mut(),
        PeerRequest::InstallSnapshot(r) => r.header.as_mut(),
        PeerRequest::TimeoutNow(r) => r.header.as_mut(),
    };
    if let Some(h) = header {
        h.incarnation = incarnation;
    }
}

pub fn client_for(channel: Channel) -> RaftClient<Channel> {
    RaftClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Runs until `rx` closes (the peer left the configuration or we stop).
pub async fn run_peer(
    ctx: PeerContext,
    peer: NodeId,
    addr: String,
    mut rx: mpsc::Receiver<Outbound>,
) {
    let channel = match lazy_channel_with(&addr, CONNECT_TIMEOUT, ctx.tls.clone()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(peer, %addr, error = %e, "cannot reach peer: bad address");
            while rx.recv().await.is_some() {}
            return;
        }
    };
    let client = client_for(channel);
    let (append_tx, append_rx) = mpsc::channel(PIPELINE_QUEUE);
    // Set once the peer answered with another incarnation than the one we
    // know: it lost its data; nothing more is sent to it.
    let fenced = Arc::new(AtomicBool::new(false));
    let pipeline = tokio::spawn(run_pipeline(
        ctx.clone(),
        peer,
        client.clone(),
        append_rx,
        fenced.clone(),
    ));
    let mut snapshot_task: Option<tokio::task::JoinHandle<()>> = None;
    while let Some(out) = rx.recv().await {
        if fenced.load(Ordering::Relaxed) {
            continue;
        }
        match out {
            Outbound::CancelSnapshot => {
                // Taken, not only aborted: an aborted task counts as running
                // until its next poll, and a snapshot queued right behind
                // this would be dropped as "one at a time".
                if let Some(t) = snapshot_task.take()
                    && !t.is_finished()
                {
                    t.abort();
                    ctx.metrics
                        .snapshots
                        .get_or_create(&crate::metrics::KindLabels { kind: "cancelled" })
                        .inc();
                    tracing::info!(
                        peer,
                        "stopped streaming a snapshot: the follower caught up through entries"
                    );
                }
            }
            Outbound::Snapshot { msg, file } => {
                if snapshot_task.as_ref().is_some_and(|t| !t.is_finished()) {
                    // One snapshot at a time; the core asks again if this one fails.
                    continue;
                }
                let (ctx, client) = (ctx.clone(), client.clone());
                let fenced = fenced.clone();
                snapshot_task = Some(tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let bytes = std::fs::metadata(&file).map_or(0, |m| m.len());
                    let result = snapshot_sender::send(&ctx, client, &msg, &file).await;
                    let result = match result {
                        Ok(resp) if !ctx.answer_ok(peer, resp.metadata()) => {
                            fenced.store(true, Ordering::Relaxed);
                            Err("the peer came back with a new data dir".to_string())
                        }
                        Ok(resp) => Ok(resp.into_inner()),
                        Err(status) => {
                            ctx.refused(peer, &status);
                            Err(format!("{:?}: {}", status.code(), status.message()))
                        }
                    };
                    let ok = match result {
                        Ok(resp) => {
                            let secs = started.elapsed().as_secs_f64();
                            tracing::info!(
                                peer,
                                bytes,
                                seconds = secs,
                                mb_per_second = bytes as f64 / 1e6 / secs.max(1e-9),
                                "sent snapshot"
                            );
                            let answer = wire::message::response_from_proto(
                                PeerResponse::InstallSnapshot(resp),
                                peer,
                                ctx.me,
                            );
                            if let Some(m) = answer {
                                let _ = ctx.events.send(Event::PeerMessage(m));
                            }
                            true
                        }
                        Err(e) => {
                            tracing::warn!(peer, error = %e, "sending snapshot failed");
                            false
                        }
                    };
                    let _ = ctx.events.send(Event::SnapshotSent { to: peer, ok });
                }));
            }
            Outbound::Message(msg) => {
                match wire::message::request_to_proto(&msg, &ctx.cluster).map(|mut r| {
                    stamp(&mut r, ctx.incarnations.mine());
                    r
                }) {
                    Ok(PeerRequest::AppendEntries(req)) => {
                        // Full queue: the peer is far behind or gone; Raft resends.
                        let _ = append_tx.try_send(req);
                    }
                    Ok(PeerRequest::RequestVote(req)) => {
                        let (ctx, mut client) = (ctx.clone(), client.clone());
                        let fenced = fenced.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(VOTE_DEADLINE, client.request_vote(req))
                                .await
                            {
                                Ok(Ok(resp)) if !ctx.answer_ok(peer, resp.metadata()) => {
                                    fenced.store(true, Ordering::Relaxed);
                                }
                                Ok(Ok(resp)) => {
                                    let answer = wire::message::response_from_proto(
                                        PeerResponse::RequestVote(resp.into_inner()),
                                        peer,
                                        ctx.me,
                                    );
                                    if let Some(m) = answer {
                                        let _ = ctx.events.send(Event::PeerMessage(m));
                                    }
                                }
                                Ok(Err(status)) => {
                                    ctx.refused(peer, &status);
                                    tracing::debug!(peer, code = ?status.code(), message = status.message(), "vote request refused");
                                }
                                Err(_) => tracing::debug!(peer, "vote request timed out"),
                            }
                        });
                    }
                    Ok(PeerRequest::TimeoutNow(req)) => {
                        let (ctx, mut client) = (ctx.clone(), client.clone());
                        tokio::spawn(async move {
                            match tokio::time::timeout(VOTE_DEADLINE, client.timeout_now(req)).await
                            {
                                Ok(Ok(_)) => {}
                                Ok(Err(status)) => ctx.refused(peer, &status),
                                Err(_) => tracing::debug!(peer, "TimeoutNow timed out"),
                            }
                        });
                    }
                    // Snapshots come as Outbound::Snapshot, with their file.
                    Ok(PeerRequest::InstallSnapshot(_)) => {}
                    Err(e) => tracing::warn!(peer, error = %e, "cannot send message"),
                }
            }
        }
    }
    pipeline.abort();
    if let Some(t) = snapshot_task {
        t.abort();
    }
}

/// Keeps one AppendEntriesPipeline stream open to the peer and feeds it in
/// order; answers go to the event loop. A broken stream is reopened after a
/// backoff; what was in flight on it is lost and Raft resends it.
async fn run_pipeline(
    ctx: PeerContext,
    peer: NodeId,
    mut client: RaftClient<Channel>,
    mut rx: mpsc::Receiver<pb::AppendEntriesRequest>,
    fenced: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        // Wait for something to send before connecting.
        let Some(first) = rx.recv().await else {
            return;
        };
        let (tx, stream_rx) = mpsc::channel(PIPELINE_QUEUE);
        let _ = tx.try_send(first);
        let opened = tokio::time::timeout(
            Duration::from_secs(2),
            client.append_entries_pipeline(ReceiverStream::new(stream_rx)),
        )
        .await;
        let mut responses = match opened {
            Ok(Ok(r)) if !ctx.answer_ok(peer, r.metadata()) => {
                fenced.store(true, Ordering::Relaxed);
                drain_for(&mut rx, Duration::from_secs(3600)).await;
                continue;
            }
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => {
                ctx.refused(peer, &status);
                tracing::debug!(peer, code = ?status.code(), message = status.message(), "cannot open the append stream");
                drain_for(&mut rx, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            Err(_) => {
                tracing::debug!(peer, "opening the append stream timed out");
                drain_for(&mut rx, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(10);
        let connected = ctx
            .metrics
            .peer_connected
            .get_or_create(&crate::metrics::PeerLabels {
                peer: peer.to_string(),
            })
            .clone();
        connected.set(1);
        loop {
            tokio::select! {
                req = rx.recv() => match req {
                    Some(req) => {
                        if tx.send(req).await.is_err() {
                            break;
                        }
                    }
                    None => return,
                },
                resp = responses.message() => match resp {
                    Ok(Some(resp)) => {
                        let answer = wire::message::response_from_proto(
                            PeerResponse::AppendEntries(resp),
                            peer,
                            ctx.me,
                        );
                        if let Some(m) = answer
                            && ctx.events.send(Event::PeerMessage(m)).is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        ctx.refused(peer, &status);
                        tracing::debug!(peer, code = ?status.code(), message = status.message(), "append stream broke");
                        break;
                    }
                },
            }
        }
        connected.set(0);
        drain_for(&mut rx, backoff).await;
    }
}

/// Waits `d`, dropping whatever is queued meanwhile: those requests are stale
/// by the time a new stream opens, and the leader will probe again.
async fn drain_for(rx: &mut mpsc::Receiver<pb::AppendEntriesRequest>, d: Duration) {
    let deadline = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(_)) => continue,
            _ => return,
        }
    }
}
