//! The log on disk: persisting entries and the hard state (with truncation
//! of conflicting suffixes, §5.3), reading it back with its checks, and
//! compacting it behind a snapshot (§7).

use kuberaft_proto::raft as pb;

use super::error::StorageError;
use super::{HARD_STATE_KEY, Storage, record, snapshot_files};
use crate::raft::{Entry, HardState, Index, SnapshotMeta};

fn key(index: Index) -> [u8; 8] {
    index.to_be_bytes()
}

impl Storage {
    /// Step 1 of the `Ready` contract: removes the stored entries from
    /// `entries[0].index` on (a leader's log overrides a conflicting suffix,
    /// §5.3), writes `entries` and `hard_state`, and, when `must_sync`, makes
    /// all of it durable with one fsync before returning (Figure 2: respond to
    /// RPCs only after updating stable storage). Call it once per `Ready`, so
    /// one fsync covers a whole batch (group commit).
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
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            self.check_append(entries)?;
            let mut batch = sled::Batch::default();
            if first.index <= self.last_index {
                for k in self.log_tree.range(key(first.index)..).keys() {
                    let k = k.map_err(|e| {
                        StorageError::sled(&self.dir, "read the log to truncate it", e)
                    })?;
                    batch.remove(k);
                }
            }
            for e in entries {
                batch.insert(&key(e.index), record::seal_message(&pb::Entry::from(e)));
            }
            // One batch: a crash leaves the old suffix or the new one.
            self.log_tree
                .apply_batch(batch)
                .map_err(|e| StorageError::sled(&self.dir, "write log entries", e))?;
            self.last_index = last.index;
        }
        if let Some(hs) = hard_state {
            self.hard_state_tree
                .insert(
                    HARD_STATE_KEY,
                    record::seal_message(&pb::HardState::from(hs)),
                )
                .map_err(|e| StorageError::sled(&self.dir, "write the hard state", e))?;
            self.hard_state = *hs;
        }
        if must_sync {
            self.sync()?;
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

    /// Records `meta` as the newest snapshot and drops the entries it covers.
    /// Call it once the snapshot's file is durable (the snapshot writer
    /// returned), then [`crate::raft::RawNode::compact`].
    pub fn compact(&mut self, meta: &SnapshotMeta) -> Result<LogTrim, StorageError> {
        let index = meta.last_included_index;
        let current = self.snapshot.as_ref().map_or(0, |s| s.last_included_index);
        if index <= current {
            return Ok(LogTrim {
                dir: self.dir.clone(),
                log_tree: self.log_tree.clone(),
                up_to: 0,
            });
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
        // The metadata is durable before any entry is removed: a crash in
        // between leaves entries the snapshot already covers, which `open`
        // removes; the other order could leave a gap before the log.
        self.write_snapshot_meta(meta)?;
        self.sync()?;
        self.snapshot = Some(meta.clone());
        snapshot_files::remove_old(&self.dir, &self.snapshot_dir(), meta, false)?;
        tracing::info!(index, term = meta.last_included_term, "compacted the log");
        Ok(LogTrim {
            dir: self.dir.clone(),
            log_tree: self.log_tree.clone(),
            up_to: index,
        })
    }

    /// Reads and checks the log after snapshot `meta`: every entry's checksum,
    /// its decoding, its key, no gap, and terms that never go down. Entries
    /// the snapshot covers (left by a crash during compaction) are removed.
    pub(super) fn load_log(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        let snapshot_index = meta.last_included_index;
        let mut prev_index = snapshot_index;
        let mut prev_term = meta.last_included_term;
        let mut covered = sled::Batch::default();
        let mut covered_count = 0usize;
        let mut entries = Vec::new();
        for item in self.log_tree.iter() {
            let (k, v) = item.map_err(|e| {
                StorageError::corrupt(
                    &self.dir,
                    format!("the log entry after index {prev_index} is unreadable: {e}"),
                )
            })?;
            let index = <[u8; 8]>::try_from(k.as_ref())
                .map(Index::from_be_bytes)
                .map_err(|_| {
                    StorageError::corrupt(
                        &self.dir,
                        format!(
                            "the log holds a key {:02x?} that is not an index",
                            k.as_ref()
                        ),
                    )
                })?;
            if index <= snapshot_index {
                covered.remove(k);
                covered_count += 1;
                continue;
            }
            if index != prev_index + 1 {
                return Err(StorageError::corrupt(
                    &self.dir,
                    if prev_index == snapshot_index {
                        format!(
                            "the log starts at entry {index}, but the snapshot ends at {snapshot_index} (entries {}..{index} are missing)",
                            snapshot_index + 1
                        )
                    } else {
                        format!("the log has a gap: entry {index} follows entry {prev_index}")
                    },
                ));
            }
            let entry = record::open_message::<pb::Entry>(&v)
                .map_err(|e| format!("log entry {index}: {e}"))
                .and_then(|e| Entry::try_from(e).map_err(|e| format!("log entry {index}: {e}")))
                .map_err(|what| StorageError::corrupt(&self.dir, what))?;
            if entry.index != index {
                return Err(StorageError::corrupt(
                    &self.dir,
                    format!(
                        "log entry {index} is stored under the wrong key (it says it is entry {})",
                        entry.index
                    ),
                ));
            }
            if entry.term < prev_term {
                return Err(StorageError::corrupt(
                    &self.dir,
                    format!(
                        "log entry {index} has term {}, below term {prev_term} of the entry before it",
                        entry.term
                    ),
                ));
            }
            prev_index = index;
            prev_term = entry.term;
            entries.push(entry);
        }
        if covered_count > 0 {
            tracing::info!(
                count = covered_count,
                snapshot_index,
                "finishing an interrupted compaction"
            );
            self.log_tree
                .apply_batch(covered)
                .map_err(|e| StorageError::sled(&self.dir, "compact the log", e))?;
        }
        if self.hard_state.commit_index > prev_index {
            // Possible only if sled lost a synced suffix; the core clamps the
            // commit index to the log, but this deserves a look.
            tracing::warn!(
                commit_index = self.hard_state.commit_index,
                last_index = prev_index,
                "the stored commit index is beyond the stored log"
            );
        }
        self.last_index = prev_index;
        self.restored_entries = entries;
        Ok(())
    }
}

/// The entries a compaction left behind on disk, to be removed.
///
/// The snapshot covers them and nothing reads them again, so removing them
/// is housekeeping: the event loop hands this to a background thread. It
/// removes them in small batches because a sled batch holds a lock that
/// every other write waits for — one batch of 100,000 removals stalled the
/// leader for seconds, long enough to lose its leadership. What a crash
/// leaves behind, `open` removes.
#[must_use = "call run(), or the compacted entries stay on disk until the next start"]
pub struct LogTrim {
    dir: std::path::PathBuf,
    log_tree: sled::Tree,
    up_to: Index,
}

impl LogTrim {
    const PER_BATCH: usize = 512;

    /// Removes the entries up to the snapshot's index; returns how many.
    pub fn run(self) -> Result<usize, StorageError> {
        let mut removed = 0;
        if self.up_to == 0 {
            return Ok(0);
        }
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for k in self
                .log_tree
                .range(..=key(self.up_to))
                .keys()
                .take(Self::PER_BATCH)
            {
                let k =
                    k.map_err(|e| StorageError::sled(&self.dir, "read the log to compact it", e))?;
                batch.remove(k);
                n += 1;
            }
            if n == 0 {
                return Ok(removed);
            }
            self.log_tree
                .apply_batch(batch)
                .map_err(|e| StorageError::sled(&self.dir, "compact the log", e))?;
            removed += n;
        }
    }
}
