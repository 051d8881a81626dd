//! A member's durable state: what Figure 2 calls "persistent state on all
//! servers" (currentTerm, votedFor, log[]) plus the commit index, the newest
//! snapshot's metadata and who the data dir belongs to. The log and the hard
//! state are appended to a write-ahead log of preallocated segment files
//! ([`wal`]); the rest is on sled, with a real fsync (see [`sync`] for why
//! sled's own flush is not one).
//!
//! # On-disk layout of a data dir
//!
//! ```text
//! <dir>/
//!   identity                   who the dir belongs to (JSON; see identity.rs)
//!   wal/<seq>.wal              the log and the hard state (see wal/mod.rs)
//!   conf, db, blobs/, snap.*   sled's store (db is its log; large values go
//!                              to blobs/<lsn>, see sync.rs)
//!   snapshots/<index>-<term>.snap
//!                              state machine snapshots (kv/snapshot_file.rs);
//!                              *.snap.tmp and *.snap.partial while being
//!                              written or received
//!   lost+found/                tolerated: a fresh ext4 volume has one
//! ```
//!
//! sled trees (every value is framed with a CRC-32, see [`record`]):
//!
//! | tree         | key                   | value                              |
//! |--------------|-----------------------|------------------------------------|
//! | `identity`   | `identity`            | JSON [`IdentityRecord`] (= the file) |
//! | `hard_state` | `hard_state`          | format 1 only: see `legacy.rs`     |
//! | `log`        | index, u64 big-endian | format 1 only: see `legacy.rs`     |
//! | `snapshot`   | `meta`                | `raft.v1.SnapshotMeta` (newest)    |
//! | `snapshot`   | `installing`          | `raft.v1.SnapshotMeta` (see `disk`)|
//! | `kv`         | see `kv/tree.rs`      | the state machine and its applied index |

mod error;
mod identity;
mod legacy;
mod log;
mod open;
pub mod record;
pub mod snapshot_files;
pub mod sync;
pub mod wal;

use std::path::{Path, PathBuf};

pub use error::{DAMAGED_DIR_ADVICE, ForeignIdentity, StorageError};
pub use identity::{FORMAT_VERSION, Identity, IdentityRecord};
pub use log::LogTrim;

use crate::raft::{Entry, HardState, Index, Membership, RestoredState, SnapshotMeta};
use sync::SledFiles;

const IDENTITY_TREE: &str = "identity";
const IDENTITY_KEY: &[u8] = b"identity";
const LEGACY_HARD_STATE_TREE: &str = "hard_state";
const LEGACY_HARD_STATE_KEY: &[u8] = b"hard_state";
const LEGACY_LOG_TREE: &str = "log";
const SNAPSHOT_TREE: &str = "snapshot";
const SNAPSHOT_META_KEY: &[u8] = b"meta";
const INSTALLING_KEY: &[u8] = b"installing";
const KV_TREE: &str = "kv";
const PEERS_TREE: &str = "peers";

/// How a member starts.
#[derive(Debug)]
pub enum Boot {
    /// The data dir is new: call [`Storage::bootstrap`] with the initial
    /// membership, which becomes the snapshot of index 0.
    Fresh,
    /// What the member persisted before it stopped.
    Restored(RestoredState),
}

/// The durable state of one member in its data dir. One owner (the event
/// loop) calls it; nothing in it is shared.
pub struct Storage {
    dir: PathBuf,
    db: sled::Db,
    wal: wal::Wal,
    snapshot_tree: sled::Tree,
    kv_tree: sled::Tree,
    /// Peer id (u64 big-endian) → the incarnation this member has seen it in.
    peers_tree: sled::Tree,
    files: SledFiles,
    identity: IdentityRecord,
    hard_state: HardState,
    /// The newest snapshot; `None` until [`Storage::bootstrap`].
    snapshot: Option<SnapshotMeta>,
    /// A snapshot installation that was under way when the member stopped.
    interrupted_install: Option<SnapshotMeta>,
    /// Index of the last entry in the log (the snapshot's if none).
    last_index: Index,
    /// The log read at `open`, handed to the core once by [`Storage::boot`].
    restored_entries: Vec<Entry>,
    /// How long each sync since the last [`Storage::take_sync_times`] took,
    /// for the `kuberaft_fsync_seconds` histogram (storage knows no metrics).
    sync_times: Vec<std::time::Duration>,
}

impl Storage {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where snapshot files live (`<dir>/snapshots`).
    pub fn snapshot_dir(&self) -> PathBuf {
        self.dir.join(snapshot_files::SNAPSHOT_DIR)
    }

    /// The path of the snapshot file described by `meta`.
    pub fn snapshot_path(&self, meta: &SnapshotMeta) -> PathBuf {
        snapshot_files::snapshot_path(&self.snapshot_dir(), meta)
    }

    pub fn identity(&self) -> &IdentityRecord {
        &self.identity
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The newest durable snapshot (`None` before bootstrap).
    pub fn snapshot_meta(&self) -> Option<&SnapshotMeta> {
        self.snapshot.as_ref()
    }

    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// A snapshot installation that was under way when the member stopped;
    /// [`crate::disk::Disk::open`] finishes it.
    pub fn interrupted_install(&self) -> Option<&SnapshotMeta> {
        self.interrupted_install.as_ref()
    }

    /// The sled tree of the state machine (`kv/`), in the same store so one
    /// sync covers both.
    pub(crate) fn kv_tree(&self) -> &sled::Tree {
        &self.kv_tree
    }

    /// What the core starts from, given the state machine's applied index.
    /// The restored log is handed out once.
    pub fn boot(&mut self, applied: Index) -> Boot {
        let Some(snapshot) = self.snapshot.clone() else {
            return Boot::Fresh;
        };
        Boot::Restored(RestoredState {
            hard_state: self.hard_state,
            snapshot,
            entries: std::mem::take(&mut self.restored_entries),
            applied,
        })
    }

    /// Records the initial membership of a fresh data dir as the snapshot of
    /// index 0 (durably: a restart must not come back without voters) and
    /// returns what the core starts from.
    pub fn bootstrap(&mut self, membership: Membership) -> Result<RestoredState, StorageError> {
        if let Some(s) = &self.snapshot {
            return Err(StorageError::misuse(
                &self.dir,
                format!(
                    "bootstrap of a data dir that already holds snapshot {} (term {}); only a fresh data dir is bootstrapped",
                    s.last_included_index, s.last_included_term
                ),
            ));
        }
        let meta = SnapshotMeta {
            last_included_index: 0,
            last_included_term: 0,
            membership,
        };
        self.write_snapshot_meta(&meta)?;
        self.sync()?;
        tracing::info!(dir = %self.dir.display(), voters = meta.membership.voter_count(), "bootstrapped a fresh data dir");
        self.snapshot = Some(meta.clone());
        Ok(RestoredState {
            hard_state: self.hard_state,
            snapshot: meta,
            entries: Vec::new(),
            applied: 0,
        })
    }

    /// The incarnation of every peer this member has heard from.
    pub fn peer_incarnations(
        &self,
    ) -> Result<std::collections::BTreeMap<crate::raft::NodeId, u64>, StorageError> {
        let mut out = std::collections::BTreeMap::new();
        for item in self.peers_tree.iter() {
            let (k, v) =
                item.map_err(|e| StorageError::sled(&self.dir, "read peer incarnations", e))?;
            let id = <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| {
                    StorageError::corrupt(&self.dir, "a peer incarnation record has a bad key")
                })?;
            let incarnation = record::open_u64(&v).map_err(|e| {
                StorageError::corrupt(&self.dir, format!("the incarnation of peer {id}: {e}"))
            })?;
            out.insert(id, incarnation);
        }
        Ok(out)
    }

    /// Remembers durably that peer `id` is in `incarnation` (or forgets it,
    /// with `None`, when the peer leaves the cluster).
    pub fn record_peer_incarnation(
        &mut self,
        id: crate::raft::NodeId,
        incarnation: Option<u64>,
    ) -> Result<(), StorageError> {
        let key = id.to_be_bytes();
        let r = match incarnation {
            Some(i) => self.peers_tree.insert(key, record::seal_u64(i)).map(|_| ()),
            None => self.peers_tree.remove(key).map(|_| ()),
        };
        r.map_err(|e| StorageError::sled(&self.dir, "record a peer incarnation", e))?;
        self.sync()
    }

    /// Makes every write so far durable: the log's, and sled's (flush, then
    /// fdatasync of its blobs and data file).
    pub fn sync(&mut self) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        self.wal.sync()?;
        self.files.sync(&self.db)?;
        self.record_sync_time(started.elapsed());
        Ok(())
    }

    fn record_sync_time(&mut self, took: std::time::Duration) {
        // Bounded: a caller that never takes them must not grow this forever.
        if self.sync_times.len() < 1024 {
            self.sync_times.push(took);
        }
    }

    /// The durations of the syncs since the last call.
    pub fn take_sync_times(&mut self) -> Vec<std::time::Duration> {
        std::mem::take(&mut self.sync_times)
    }

    fn write_snapshot_meta(&self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        let value = record::seal_message(&kuberaft_proto::raft::SnapshotMeta::from(meta));
        self.snapshot_tree
            .insert(SNAPSHOT_META_KEY, value)
            .map_err(|e| StorageError::sled(&self.dir, "write the snapshot metadata", e))?;
        Ok(())
    }

    // ------------------------------------------------ snapshot installation
    //
    // The protocol (its commit point and recovery) is described in
    // `crate::disk`, which drives these steps together with the state machine.

    /// Step 1, the commit point: records durably that the snapshot `meta`
    /// (whose file is complete and synced) is being installed.
    pub(crate) fn begin_install(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        let value = record::seal_message(&kuberaft_proto::raft::SnapshotMeta::from(meta));
        self.snapshot_tree
            .insert(INSTALLING_KEY, value)
            .map_err(|e| StorageError::sled(&self.dir, "record a snapshot installation", e))?;
        self.sync()?;
        self.interrupted_install = Some(meta.clone());
        Ok(())
    }

    /// Drops the whole log: nothing of it survives a snapshot that does not
    /// match it (§7, receiver steps 7-8). Idempotent.
    pub(crate) fn clear_log_for_install(&mut self) -> Result<(), StorageError> {
        self.wal.reset(&self.hard_state)?;
        self.restored_entries.clear();
        Ok(())
    }

    /// Last step: `meta` becomes the newest snapshot and the installation
    /// record goes, in one atomic sled batch, then everything is synced.
    pub(crate) fn finish_install(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        batch.insert(
            SNAPSHOT_META_KEY,
            record::seal_message(&kuberaft_proto::raft::SnapshotMeta::from(meta)),
        );
        batch.remove(INSTALLING_KEY);
        self.snapshot_tree
            .apply_batch(batch)
            .map_err(|e| StorageError::sled(&self.dir, "finish a snapshot installation", e))?;
        self.sync()?;
        self.snapshot = Some(meta.clone());
        self.interrupted_install = None;
        self.last_index = meta.last_included_index;
        // The core's commit index moved to the snapshot's; the caller's next
        // `persist` records it, and until then a restart clamps it up anyway.
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
