//! Streaming a snapshot file to a follower (§7, InstallSnapshot), in chunks
//! over its own gRPC stream, so heartbeats and appends to everyone continue
//! meanwhile.

use std::path::Path;
use std::time::Duration;

use kuberaft_proto::raft as pb;
use kuberaft_proto::raft::raft_client::RaftClient;
use tonic::Status;
use tonic::transport::Channel;

use super::peer::PeerContext;
use crate::kv::transfer::SnapshotChunks;
use crate::raft::Message;
use crate::rate::RateLimit;
use crate::wire::{self, PeerRequest};

/// Bytes per chunk: large enough for throughput, far below the message limit.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Sends the snapshot in `file`, described by the core's InstallSnapshot
/// message `msg`, and returns the follower's answer (or its refusal).
pub async fn send(
    ctx: &PeerContext,
    mut client: RaftClient<Channel>,
    msg: &Message,
    file: &Path,
) -> Result<tonic::Response<pb::InstallSnapshotResponse>, Status> {
    let bytes_per_second = ctx.snapshot_send_rate;
    let Ok(PeerRequest::InstallSnapshot(mut first)) =
        wire::message::request_to_proto(msg, &ctx.cluster)
    else {
        return Err(Status::internal("not an InstallSnapshot message"));
    };
    if let Some(h) = first.header.as_mut() {
        h.incarnation = ctx.incarnations.mine();
    }
    let path = file.to_owned();
    let mut chunks = tokio::task::spawn_blocking(move || SnapshotChunks::open(&path, CHUNK_BYTES))
        .await
        .map_err(|e| Status::internal(format!("snapshot reader failed: {e}")))?
        .map_err(|e| Status::internal(e.to_string()))?;
    let size = chunks.file().size;
    let crc32 = chunks.file().crc32;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::InstallSnapshotChunk>(4);
    // Reading is blocking file I/O: a blocking thread feeds the stream.
    let reader = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut first = Some(first);
        let limit = RateLimit::new(bytes_per_second);
        for chunk in chunks.by_ref() {
            let chunk = chunk.map_err(|e| e.to_string())?;
            // A chunk may leave once the bytes before it are within the rate.
            limit.wait_blocking(chunk.offset);
            let msg = match first.take() {
                Some(head) => pb::InstallSnapshotChunk {
                    offset: chunk.offset,
                    data: chunk.data,
                    done: chunk.done,
                    total_size: size,
                    crc32,
                    ..head
                },
                None => pb::InstallSnapshotChunk {
                    offset: chunk.offset,
                    data: chunk.data,
                    done: chunk.done,
                    ..Default::default()
                },
            };
            if tx.blocking_send(msg).is_err() {
                // The RPC ended; its error says why.
                return Ok(());
            }
        }
        Ok(())
    });
    // Generous: a slow network still finishes, a dead peer does not hold the
    // transfer forever (keep-alive usually notices first).
    let deadline = Duration::from_secs(60) + Duration::from_secs(size / (10 << 20));
    let result = tokio::time::timeout(
        deadline,
        client.install_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await;
    reader
        .await
        .map_err(|e| Status::internal(format!("snapshot reader failed: {e}")))?
        .map_err(Status::internal)?;
    match result {
        Ok(r) => r,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "snapshot transfer did not finish within {deadline:?}"
        ))),
    }
}
