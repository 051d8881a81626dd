//! Moving a snapshot file between members in chunks (the InstallSnapshot
//! stream): [`SnapshotChunks`] reads one for the leader to send, and
//! [`SnapshotReceiver`] writes one on the follower into a temporary file that
//! becomes `<index>-<term>.snap` only once it is complete, checked and
//! durable. Both do blocking file I/O: call them from a blocking thread
//! (`tokio::task::spawn_blocking`), not from an async task.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::snapshot_file::{self, SnapshotFile};
use crate::raft::SnapshotMeta;
use crate::rate::RateLimit;
use crate::storage::StorageError;
use crate::storage::snapshot_files::{RECEIVING_SUFFIX, snapshot_path, temporary_path};
use crate::storage::sync::{PacedFile, sync_dir};

/// One piece of a snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Byte offset of `data` in the file.
    pub offset: u64,
    pub data: Bytes,
    /// The last chunk.
    pub done: bool,
}

/// A snapshot file read in chunks, for sending.
pub struct SnapshotChunks {
    file: File,
    head: SnapshotFile,
    offset: u64,
    chunk_size: usize,
    finished: bool,
}

impl SnapshotChunks {
    /// Opens the file at `path`; `chunk_size` bytes per chunk (keep it well
    /// under the gRPC message limit, e.g. 1 MiB).
    pub fn open(path: &Path, chunk_size: usize) -> Result<SnapshotChunks, StorageError> {
        let head = snapshot_file::read_head(path)?;
        let file = File::open(path)
            .map_err(|e| StorageError::bad_snapshot(path, format!("cannot open it: {e}")))?;
        Ok(SnapshotChunks {
            file,
            head,
            offset: 0,
            chunk_size: chunk_size.max(1),
            finished: false,
        })
    }

    /// The metadata, size and checksum to announce in the first chunk.
    pub fn file(&self) -> &SnapshotFile {
        &self.head
    }
}

impl Iterator for SnapshotChunks {
    type Item = Result<Chunk, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let left = self.head.size - self.offset;
        let len = usize::try_from(left).map_or(self.chunk_size, |l| l.min(self.chunk_size));
        let mut buf = vec![0u8; len];
        if let Err(e) = self.file.read_exact(&mut buf) {
            self.finished = true;
            return Some(Err(StorageError::bad_snapshot(
                &self.head.path,
                format!("cannot read it at offset {}: {e}", self.offset),
            )));
        }
        let chunk = Chunk {
            offset: self.offset,
            data: Bytes::from(buf),
            done: self.offset + len as u64 == self.head.size,
        };
        self.offset += len as u64;
        self.finished = chunk.done;
        Some(Ok(chunk))
    }
}

/// A snapshot file being received from the leader.
pub struct SnapshotReceiver {
    dir: PathBuf,
    partial: PathBuf,
    out: Option<BufWriter<PacedFile>>,
    meta: SnapshotMeta,
    total_size: u64,
    crc32: u32,
    received: u64,
    /// When the first chunk arrived: the transfer rate in the log is the
    /// stream's own, without the install that follows it.
    started: std::time::Instant,
}

impl SnapshotReceiver {
    /// Starts receiving the snapshot `meta` of `total_size` bytes and checksum
    /// `crc32` (all from the first chunk) into the snapshot directory `dir`.
    pub fn begin(
        dir: &Path,
        meta: &SnapshotMeta,
        total_size: u64,
        crc32: u32,
    ) -> Result<SnapshotReceiver, StorageError> {
        let partial = temporary_path(dir, meta, RECEIVING_SUFFIX);
        let file = File::create(&partial)
            .map_err(|e| StorageError::io(dir, format!("create {}", partial.display()), e))?;
        Ok(SnapshotReceiver {
            dir: dir.to_owned(),
            partial,
            out: Some(BufWriter::with_capacity(
                1 << 20,
                PacedFile::new(file, RateLimit::new(0)),
            )),
            meta: meta.clone(),
            total_size,
            crc32,
            received: 0,
            started: std::time::Instant::now(),
        })
    }

    /// Appends a chunk. Chunks must arrive in order and not overrun the
    /// announced size.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        if offset != self.received {
            return Err(self.bad(format!(
                "chunk at offset {offset} arrived where offset {} was expected",
                self.received
            )));
        }
        if self.received + data.len() as u64 > self.total_size {
            return Err(self.bad(format!(
                "chunks overrun the announced size of {} bytes",
                self.total_size
            )));
        }
        let Some(out) = self.out.as_mut() else {
            return Err(self.bad("the receiver is closed".into()));
        };
        out.write_all(data).map_err(|e| {
            StorageError::io(&self.dir, format!("write {}", self.partial.display()), e)
        })?;
        self.received += data.len() as u64;
        Ok(())
    }

    /// Checks the received file against what was announced (size, checksum,
    /// metadata) and against itself, makes it durable and names it
    /// `<index>-<term>.snap`. Hand the metadata to the core only after this
    /// returns: installing it reads that file.
    pub fn finish(mut self) -> Result<SnapshotFile, StorageError> {
        if self.received != self.total_size {
            return Err(self.bad(format!(
                "the stream ended after {} of {} bytes",
                self.received, self.total_size
            )));
        }
        let out = self
            .out
            .take()
            .ok_or_else(|| self.bad("the receiver is closed".into()))?;
        let io = |what: &str, path: &Path, e| {
            StorageError::io(&self.dir, format!("{what} {}", path.display()), e)
        };
        let file = out
            .into_inner()
            .map_err(|e| io("write", &self.partial, e.into_error()))?
            .into_inner();
        file.sync_all().map_err(|e| io("fsync", &self.partial, e))?;
        drop(file);
        let received = snapshot_file::verify(&self.partial)?;
        if received.crc32 != self.crc32 {
            return Err(self.bad(format!(
                "its checksum {:#010x} differs from the announced {:#010x}",
                received.crc32, self.crc32
            )));
        }
        if received.meta != self.meta {
            return Err(self.bad(format!(
                "it holds snapshot {} (term {}), not the announced {} (term {})",
                received.meta.last_included_index,
                received.meta.last_included_term,
                self.meta.last_included_index,
                self.meta.last_included_term
            )));
        }
        let path = snapshot_path(&self.dir, &self.meta);
        std::fs::rename(&self.partial, &path).map_err(|e| io("rename", &self.partial, e))?;
        sync_dir(&self.dir)
            .map_err(|e| StorageError::io(&self.dir, "fsync the snapshots directory", e))?;
        let seconds = self.started.elapsed().as_secs_f64();
        tracing::info!(
            path = %path.display(),
            index = self.meta.last_included_index,
            bytes = self.total_size,
            seconds,
            mb_per_second = self.total_size as f64 / 1e6 / seconds.max(1e-9),
            "received snapshot"
        );
        Ok(SnapshotFile { path, ..received })
    }

    fn bad(&self, what: String) -> StorageError {
        StorageError::bad_snapshot(&self.partial, what)
    }
}

impl Drop for SnapshotReceiver {
    /// An abandoned or failed transfer leaves no file behind (after `finish`
    /// succeeded the partial name no longer exists).
    fn drop(&mut self) {
        self.out = None;
        let _ = std::fs::remove_file(&self.partial);
    }
}
