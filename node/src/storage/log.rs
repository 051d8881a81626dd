//! The log on disk: persisting entries and the hard state (a conflicting
//! suffix is overridden, §5.3), checking what was read back against the
//! snapshot, and compacting it behind a snapshot (§7). The bytes live in the
//! write-ahead log (`wal/`).

use std::path::PathBuf;

use super::error::StorageError;
use super::wal::{self, Recovered};
use super::{Storage, snapshot_files, sync::sync_dir};
use crate::raft::{Entry, HardState, SnapshotMeta};

impl Storage {
    /// Step 1 of the `Ready` contract: writes `entries` (which replace the
    /// stored entries from `entries[0].index` on: a leader's log overrides a
    /// conflicting suffix, §5.3) and `hard_state`, and, when `must_sync`,
    /// makes all of it durable with one fdatasync before returning (Figure 2:
    /// respond to RPCs only after updating stable storage). Call it once per
    /// `Ready`, so one sync covers a whole batch (group commit).
    pub fn persist(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
        must_sync: bool,
    ) -> Result<(), StorageError> {
        if self.snapshot.is_none() {
            // A log without its initial membership could not be restarted.
            return Err(StorageError::misuse(
                &self.dir,
                "persist before bootstrap: record the initial membership with Storage::bootstrap first",
            ));
        }
        self.check_append(entries)?;
        self.wal.append(entries, hard_state, &self.hard_state)?;
        if let Some(last) = entries.last() {
            self.last_index = last.index;
        }
        if let Some(hs) = hard_state {
            self.hard_state = *hs;
        }
        if must_sync {
            let started = std::time::Instant::now();
            self.wal.sync()?;
            self.record_sync_time(started.elapsed());
        }
        Ok(())
    }

    /// New entries must follow the snapshot, leave no gap after the stored
    /// log, and be consecutive: anything else is a bug in the caller, and
    /// storing it would make the data dir unreadable.
    fn check_append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first().map(|e| e.index) else {
            return Ok(());
        };
        let snapshot_index = self.snapshot.as_ref().map_or(0, |s| s.last_included_index);
        if first <= snapshot_index || first > self.last_index + 1 {
            return Err(StorageError::misuse(
                &self.dir,
                format!(
                    "refusing to store entries from index {first}: the log holds {}..={} after snapshot {snapshot_index}",
                    snapshot_index + 1,
                    self.last_index
                ),
            ));
        }
        for pair in entries.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return Err(StorageError::misuse(
                    &self.dir,
                    format!(
                        "refusing to store entries that are not consecutive: {} then {}",
                        pair[0].index, pair[1].index
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Records `meta` as the newest snapshot and releases the log segments
    /// it covers. Call it once the snapshot's file is durable (the snapshot
    /// writer returned), then [`crate::raft::RawNode::compact`].
    pub fn compact(&mut self, meta: &SnapshotMeta) -> Result<LogTrim, StorageError> {
        let index = meta.last_included_index;
        let current = self.snapshot.as_ref().map_or(0, |s| s.last_included_index);
        let nothing = LogTrim {
            wal_dir: self.wal.dir().to_owned(),
            data_dir: self.dir.clone(),
            segments: Vec::new(),
        };
        if index <= current {
            return Ok(nothing);
        }
        if index > self.last_index {
            return Err(StorageError::misuse(
                &self.dir,
                format!(
                    "cannot compact the log to snapshot {index}: the log ends at {}",
                    self.last_index
                ),
            ));
        }
        // The metadata is durable (and with it, in the same sync, the state
        // machine's writes up to the snapshot) before any segment goes: a
        // crash in between leaves entries the snapshot covers, which `open`
        // skips; the other order could leave a gap before the log.
        self.write_snapshot_meta(meta)?;
        self.sync()?;
        self.snapshot = Some(meta.clone());
        snapshot_files::remove_old(&self.dir, &self.snapshot_dir(), meta, false)?;
        tracing::info!(index, term = meta.last_included_term, "compacted the log");
        Ok(LogTrim {
            segments: self.wal.release_up_to(index),
            ..nothing
        })
    }

    /// Checks the replayed log against snapshot `meta` (it must go on from
    /// the snapshot, with no gap and no term below the snapshot's) and keeps
    /// the entries after it for [`Storage::boot`].
    pub(super) fn load_log(
        &mut self,
        meta: &SnapshotMeta,
        recovered: Recovered,
    ) -> Result<(), StorageError> {
        let snapshot_index = meta.last_included_index;
        let mut entries = recovered.entries;
        let covered = entries
            .iter()
            .take_while(|e| e.index <= snapshot_index)
            .count();
        entries.drain(..covered);
        if let Some(first) = entries.first() {
            if first.index != snapshot_index + 1 {
                return Err(StorageError::corrupt(
                    &self.dir,
                    format!(
                        "the log starts at entry {}, but the snapshot ends at {snapshot_index} (entries {}..{} are missing)",
                        first.index,
                        snapshot_index + 1,
                        first.index
                    ),
                ));
            }
            if first.term < meta.last_included_term {
                return Err(StorageError::corrupt(
                    &self.dir,
                    format!(
                        "log entry {} has term {}, below term {} of the snapshot before it",
                        first.index, first.term, meta.last_included_term
                    ),
                ));
            }
        }
        let last_index = entries.last().map_or(snapshot_index, |e| e.index);
        if self.hard_state.commit_index > last_index {
            // Possible only if a synced suffix was lost; the core clamps the
            // commit index to the log, but this deserves a look.
            tracing::warn!(
                commit_index = self.hard_state.commit_index,
                last_index,
                "the stored commit index is beyond the stored log"
            );
        }
        self.last_index = last_index;
        self.restored_entries = entries;
        Ok(())
    }
}

/// The log segments a compaction released, to be removed.
///
/// The snapshot covers them and nothing reads them again, so removing them
/// is housekeeping, which the event loop hands to a background thread. What
/// a crash leaves behind, `open` reads and skips, and a later compaction
/// removes.
#[must_use = "call run(), or the released segments stay on disk"]
pub struct LogTrim {
    data_dir: PathBuf,
    wal_dir: PathBuf,
    segments: Vec<PathBuf>,
}

impl LogTrim {
    /// Removes the released segment files; returns how many.
    pub fn run(self) -> Result<usize, StorageError> {
        for path in &self.segments {
            wal::remove_segment(path).map_err(|e| {
                StorageError::io(&self.data_dir, format!("remove {}", path.display()), e)
            })?;
        }
        if !self.segments.is_empty() {
            sync_dir(&self.wal_dir)
                .map_err(|e| StorageError::io(&self.data_dir, "fsync the log directory", e))?;
        }
        Ok(self.segments.len())
    }
}
