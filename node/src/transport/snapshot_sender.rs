//! Streaming a snapshot file to a follower (§7, InstallSnapshot), in chunks
//! over its own gRPC stream, so heartbeats and appends to everyone continue
//! meanwhile.

use std::path::Path;
use std::time::Duration;

use kuberaft_proto::raft as pb;
use kuberaft_proto::raft::raft_client::RaftClient;
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;

use super::peer::PeerContext;
use crate::raft::{NodeId, SnapshotMeta, Term};

/// Bytes per chunk: large enough for throughput, far below the message limit.
pub const CHUNK_BYTES: usize = 1 << 20;

pub async fn send(
    ctx: &PeerContext,
    mut client: RaftClient<Channel>,
    peer: NodeId,
    term: Term,
    meta: SnapshotMeta,
    file: &Path,
) -> Result<pb::InstallSnapshotResponse, String> {
    let mut f = tokio::fs::File::open(file)
        .await
        .map_err(|e| format!("cannot open snapshot {}: {e}", file.display()))?;
    let size = f
        .metadata()
        .await
        .map_err(|e| format!("cannot stat snapshot {}: {e}", file.display()))?
        .len();
    let header = pb::Header {
        cluster: ctx.cluster.clone(),
        from: ctx.me,
        to: peer,
    };
    let meta_pb = crate::wire::snapshot_meta_to_pb(&meta);
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::InstallSnapshotChunk>(4);
    let me = ctx.me;
    let path = file.display().to_string();
    let reader = tokio::spawn(async move {
        let mut offset = 0u64;
        let mut crc = crc32fast::Hasher::new();
        let mut first = true;
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let mut n = 0;
            while n < buf.len() {
                let r = f
                    .read(&mut buf[n..])
                    .await
                    .map_err(|e| format!("cannot read snapshot {path}: {e}"))?;
                if r == 0 {
                    break;
                }
                n += r;
            }
            buf.truncate(n);
            crc.update(&buf);
            let done = offset + n as u64 >= size;
            let chunk = pb::InstallSnapshotChunk {
                header: first.then(|| header.clone()),
                term,
                leader_id: me,
                meta: first.then(|| meta_pb.clone()),
                offset,
                data: buf.into(),
                done,
                total_size: if done { size } else { 0 },
                crc32: if done { crc.clone().finalize() } else { 0 },
            };
            first = false;
            offset += n as u64;
            if tx.send(chunk).await.is_err() {
                return Ok::<(), String>(());
            }
            if done {
                return Ok(());
            }
        }
    });
    // Generous: a slow network still finishes, a dead peer does not hold the
    // transfer forever (keep-alive usually notices first).
    let deadline = Duration::from_secs(60) + Duration::from_secs(size / (10 << 20));
    let result = tokio::time::timeout(
        deadline,
        client.install_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await;
    let read = reader
        .await
        .map_err(|e| format!("snapshot reader failed: {e}"))?;
    read?;
    match result {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => Err(format!(
            "snapshot transfer did not finish within {deadline:?}"
        )),
    }
}
