//! The replicated state machine behind `kuberaft.kv.v1`: a map from keys to
//! values, changed only by committed log entries, in log order (§5.3: the
//! state machine applies entries in index order, so every member that applied
//! index `i` holds the same map).
//!
//! The map lives twice: in sled (tree `kv`, with the applied index), so a
//! restart does not replay the whole log, and in memory as a persistent
//! ordered map (`imbl::OrdMap`), which serves reads and snapshots — cloning
//! it costs O(1), so a snapshot or a reader takes a consistent image while
//! applying goes on.

pub mod command;
pub mod snapshot_file;
pub mod transfer;
mod tree;
mod writer;

use std::ops::Bound;
use std::path::PathBuf;

use bytes::Bytes;
use imbl::OrdMap;
use imbl::ordmap::DiffItem;

pub use command::ApplyResult;

use crate::raft::{Entry, EntryKind, Index};
use crate::storage::{Storage, StorageError, record};

/// A value and the index of the write that last set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub value: Bytes,
    pub mod_index: Index,
}

pub type KvMap = OrdMap<Bytes, Versioned>;

/// The state machine at one applied index.
#[derive(Clone, Debug)]
pub struct SnapshotImage {
    pub applied_index: Index,
    pub data: KvMap,
}

/// Changes applied in memory and not yet written to sled.
#[must_use = "pass it to StateMachine::write, or the sled copy falls behind memory"]
pub struct Unwritten(Option<Writes>);

/// Changes to the kv tree: data key → encoded value, or `None` to remove it.
/// The newest change of a key replaces an older one, so a key written many
/// times between two sled writes is written once.
#[derive(Default)]
pub(crate) struct Writes {
    changes: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
    /// The applied index they bring the tree to.
    applied: Index,
    entries: u64,
}

impl Writes {
    pub(crate) fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.bytes += key.len() + value.len();
        self.changes.insert(key, Some(value));
    }

    pub(crate) fn remove(&mut self, key: Vec<u8>) {
        self.bytes += key.len();
        self.changes.insert(key, None);
    }

    fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.entries == 0
    }

    fn merge(&mut self, newer: Writes) {
        self.bytes += newer.bytes;
        self.changes.extend(newer.changes);
        self.applied = newer.applied;
        self.entries += newer.entries;
    }

    /// Whether the tree should be written now (see `StateMachine::write`).
    fn due(&self) -> bool {
        self.changes.len() >= FLUSH_KEYS
            || self.bytes >= FLUSH_BYTES
            || self.entries >= FLUSH_ENTRIES
    }
}

/// When the staged changes are written to sled: whichever comes first.
const FLUSH_KEYS: usize = 4096;
const FLUSH_BYTES: usize = 4 << 20;
const FLUSH_ENTRIES: u64 = 16_384;

/// One page of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage {
    pub kvs: Vec<(Bytes, Versioned)>,
    /// More keys with the prefix follow the last one.
    pub more: bool,
}

pub struct StateMachine {
    dir: PathBuf,
    tree: sled::Tree,
    applied: Index,
    map: KvMap,
    /// The map holds exactly what the tree and `staged` hold together: an
    /// installation then writes only the keys that differ.
    mirrors_tree: bool,
    /// Applied in memory, not yet written to the tree (see `write`).
    staged: Writes,
    writer: writer::TreeWriter,
}

impl StateMachine {
    /// Loads the state machine from the storage's `kv` tree, checking every
    /// value's checksum.
    pub fn open(storage: &Storage) -> Result<StateMachine, StorageError> {
        let dir = storage.dir().to_owned();
        let tree = storage.kv_tree().clone();
        let (applied, map) = tree::load(&dir, &tree)?;
        Ok(StateMachine {
            dir,
            tree,
            applied,
            map,
            mirrors_tree: true,
            staged: Writes::default(),
            writer: writer::TreeWriter::start(storage.kv_tree().clone()),
        })
    }

    /// A state machine whose tree is about to be replaced by a snapshot's
    /// (an interrupted installation): what the tree holds now is not read.
    pub(crate) fn unloaded(storage: &Storage) -> StateMachine {
        StateMachine {
            dir: storage.dir().to_owned(),
            tree: storage.kv_tree().clone(),
            applied: 0,
            map: KvMap::new(),
            mirrors_tree: false,
            staged: Writes::default(),
            writer: writer::TreeWriter::start(storage.kv_tree().clone()),
        }
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The index of the last entry applied.
    pub fn applied_index(&self) -> Index {
        self.applied
    }

    /// Applies committed entries in order and answers each command (conf
    /// changes and the leader's no-ops only advance the applied index).
    ///
    /// Entries at or below the applied index are skipped: after a restart the
    /// core may hand out again entries the state machine already holds, and
    /// applying one twice would break exactly-once (a second Put would move
    /// `mod_index`, a second CAS could fail).
    pub fn apply(&mut self, entries: &[Entry]) -> Result<Vec<(Index, ApplyResult)>, StorageError> {
        let (results, unwritten) = self.apply_in_memory(entries)?;
        self.write(unwritten)?;
        self.flush()?;
        Ok(results)
    }

    /// [`StateMachine::apply`] in two steps, so the event loop can answer
    /// clients between them: the answers come from memory, and the sled
    /// write is not on their path.
    ///
    /// That is safe because the sled copy is never what makes an entry
    /// durable: the entries already are, in the log. The changes and the new
    /// applied index go to sled in ONE batch (so they never disagree) and are
    /// not fsynced here; whatever a crash loses of it is applied again from
    /// the log at restart (the applied index on disk is then older, and the
    /// entries after it are handed out again). A compaction writes and syncs
    /// it before the log it could be replayed from goes (`Disk::compact`).
    ///
    /// Memory moves ahead of sled until [`StateMachine::write`]; call it
    /// before anything else touches the state machine.
    pub fn apply_in_memory(
        &mut self,
        entries: &[Entry],
    ) -> Result<(Vec<(Index, ApplyResult)>, Unwritten), StorageError> {
        // Check the order first and change the map in place afterwards: a
        // map changed through a clone of itself copies every node it
        // touches (they are shared with the clone until it is dropped).
        let mut expected = self.applied;
        for e in entries.iter().filter(|e| e.index > self.applied) {
            if e.index != expected + 1 {
                return Err(StorageError::misuse(
                    &self.dir,
                    format!(
                        "entry {} handed to the state machine, which has applied up to {expected}",
                        e.index
                    ),
                ));
            }
            expected = e.index;
        }
        if expected == self.applied {
            return Ok((Vec::new(), Unwritten(None)));
        }
        let mut batch = Writes::default();
        let mut results = Vec::new();
        for e in entries.iter().filter(|e| e.index > self.applied) {
            if matches!(e.kind, EntryKind::Normal) && !e.data.is_empty() {
                let result = command::apply(&mut self.map, &mut batch, e.index, &e.data);
                results.push((e.index, result));
            }
        }
        batch.applied = expected;
        batch.entries = expected - self.applied;
        self.applied = expected;
        Ok((results, Unwritten(Some(batch))))
    }

    /// Takes what [`StateMachine::apply_in_memory`] applied, for the tree.
    /// It goes to sled with what the next turns apply, once enough has
    /// gathered (4,096 keys, 4 MiB or 16,384 entries), on the writer thread
    /// (`writer.rs`). One sled batch per turn, written by the event loop,
    /// cost sled's I/O threads a write and a `sync_file_range` each time: a
    /// tenth of a loaded member's CPU (perf, 2026-11-26) and most of what a
    /// follower's event loop spent applying. Until they are in the tree a
    /// restart applies those entries again from the log, as after a crash.
    /// An error means the tree fell behind memory for good: the member must
    /// stop (its log still holds every entry, so a restart applies them).
    pub fn write(&mut self, unwritten: Unwritten) -> Result<(), StorageError> {
        if let Some(writes) = unwritten.0 {
            self.staged.merge(writes);
        }
        if self.staged.due() {
            self.send_staged()?;
        }
        Ok(())
    }

    /// Writes every staged change and the applied index to the tree (one
    /// sled batch, so they never disagree) and returns once they are in it.
    /// Not synced: `Storage::sync` does that.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        self.send_staged()?;
        self.writer.wait().map_err(|e| self.writer_error(e))
    }

    fn send_staged(&mut self) -> Result<(), StorageError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let staged = std::mem::take(&mut self.staged);
        let mut batch = sled::Batch::default();
        for (key, value) in staged.changes {
            match value {
                Some(v) => batch.insert(key, v),
                None => batch.remove(key),
            }
        }
        batch.insert(tree::APPLIED_KEY, record::seal_u64(staged.applied));
        self.writer.write(batch).map_err(|e| self.writer_error(e))
    }

    fn writer_error(&self, e: String) -> StorageError {
        StorageError::io(
            &self.dir,
            "apply entries to the state machine",
            std::io::Error::other(e),
        )
    }

    pub fn get(&self, key: &[u8]) -> Option<&Versioned> {
        self.map.get(key)
    }

    /// Up to `limit` keys with `prefix`, in byte order, starting after
    /// `start_after` (or at the prefix when it is empty).
    pub fn scan(&self, prefix: &[u8], start_after: &[u8], limit: usize) -> ScanPage {
        let start = if start_after.is_empty() || start_after < prefix {
            Bound::Included(prefix)
        } else {
            Bound::Excluded(start_after)
        };
        let mut kvs: Vec<_> = self
            .map
            .range::<_, [u8]>((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit.saturating_add(1))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let more = kvs.len() > limit;
        kvs.truncate(limit);
        ScanPage { kvs, more }
    }

    /// The whole state machine at the applied index, for a snapshot (written
    /// by `snapshot_file::write` on another thread) or for readers outside
    /// the event loop. O(1): the map is shared until either side changes.
    pub fn snapshot_image(&self) -> SnapshotImage {
        SnapshotImage {
            applied_index: self.applied,
            data: self.map.clone(),
        }
    }

    /// Replaces the whole state machine with a snapshot's. Not atomic on
    /// disk by itself: `crate::disk` calls it between the durable
    /// installation record and its removal, and repeats it after a crash.
    ///
    /// A follower that fell behind usually holds most of the snapshot's keys
    /// already, with the same values: only the keys that differ are written
    /// (a diff of two in-memory maps, far cheaper than rewriting every key
    /// in sled). After a crash the tree's content is unknown, so it is
    /// cleared and written whole.
    pub(crate) fn install(&mut self, image: SnapshotImage) -> Result<(), StorageError> {
        if self.mirrors_tree {
            // The diff below is against the map, which is the tree only
            // once everything staged is in it.
            self.flush()?;
        } else {
            self.staged = Writes::default();
            self.writer.wait().map_err(|e| self.writer_error(e))?;
        }
        let sled_err = |e| StorageError::sled(&self.dir, "install a snapshot's data", e);
        if !self.mirrors_tree {
            self.tree.clear().map_err(sled_err)?;
            self.map = KvMap::new();
            self.mirrors_tree = true;
        }
        // Batches of bounded size: a snapshot can be far larger than what
        // one sled batch should hold in memory.
        const PER_BATCH: usize = 4096;
        let mut batch = sled::Batch::default();
        // The applied index goes first and comes back last: while it is
        // missing the tree is plainly incomplete, never "complete at some
        // index".
        batch.remove(tree::APPLIED_KEY);
        let mut in_batch = 1;
        for change in self.map.diff(&image.data) {
            match change {
                DiffItem::Add(key, v) | DiffItem::Update { new: (key, v), .. } => {
                    batch.insert(tree::data_key(key), tree::encode_value(key, v))
                }
                DiffItem::Remove(key, _) => batch.remove(tree::data_key(key)),
            }
            in_batch += 1;
            if in_batch == PER_BATCH {
                self.tree
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(sled_err)?;
                in_batch = 0;
            }
        }
        batch.insert(tree::APPLIED_KEY, record::seal_u64(image.applied_index));
        self.tree.apply_batch(batch).map_err(sled_err)?;
        self.map = image.data;
        self.applied = image.applied_index;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
