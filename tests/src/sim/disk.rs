//! A member's simulated disk: exactly what a crash leaves behind.
//!
//! The caller of the core writes here what each `Ready` asks to persist. A
//! `Ready` that needs no fsync (only the commit index moved) is written to the
//! page cache, which a crash discards; everything else is synced.

use std::collections::VecDeque;

use kuberaft_node::raft::{Entry, HardState, Index, Membership, RestoredState, SnapshotMeta, Term};

use super::state_machine::KvStateMachine;

/// A snapshot with its data: the state machine as of `meta.last_included_index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotImage {
    pub meta: SnapshotMeta,
    pub state: KvStateMachine,
}

#[derive(Clone, Debug)]
pub struct Disk {
    hard_state: HardState,
    /// Written without fsync: lost if the member crashes before the next sync.
    cached_hard_state: Option<HardState>,
    snapshot: SnapshotImage,
    /// The entries after the snapshot, contiguous.
    entries: VecDeque<Entry>,
}

impl Disk {
    /// A fresh data directory: the bootstrap snapshot of index 0 holds the
    /// initial membership (empty for a member that joins later).
    pub fn new(membership: Membership) -> Disk {
        Disk {
            hard_state: HardState::default(),
            cached_hard_state: None,
            snapshot: SnapshotImage {
                meta: SnapshotMeta {
                    last_included_index: 0,
                    last_included_term: 0,
                    membership,
                },
                state: KvStateMachine::default(),
            },
            entries: VecDeque::new(),
        }
    }

    /// What the member restarts from.
    pub fn restored_state(&self) -> RestoredState {
        RestoredState {
            hard_state: self.hard_state,
            snapshot: self.snapshot.meta.clone(),
            entries: self.entries.iter().cloned().collect(),
            applied: self.snapshot.meta.last_included_index,
        }
    }

    /// The newest hard state written, synced or not.
    pub fn latest_hard_state(&self) -> HardState {
        self.cached_hard_state.unwrap_or(self.hard_state)
    }

    /// The hard state that survives a crash.
    pub fn synced_hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn snapshot(&self) -> &SnapshotImage {
        &self.snapshot
    }

    pub fn snapshot_index(&self) -> Index {
        self.snapshot.meta.last_included_index
    }

    pub fn last_index(&self) -> Index {
        self.snapshot_index() + self.entries.len() as u64
    }

    pub fn entry(&self, index: Index) -> Option<&Entry> {
        let base = self.snapshot_index();
        if index <= base {
            return None;
        }
        self.entries.get((index - base - 1) as usize)
    }

    /// The term at `index`, including the snapshot's last entry.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index() {
            return Some(self.snapshot.meta.last_included_term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// Step 1 of the `Ready` contract: install the snapshot (which replaces
    /// the whole log: the core sends one only when the log does not match
    /// it), truncate the log at the first new entry and append, then write the
    /// hard state. `Err` says how the request is impossible to honour.
    pub fn write(
        &mut self,
        snapshot: Option<SnapshotImage>,
        entries: &[Entry],
        hard_state: Option<HardState>,
        sync: bool,
    ) -> Result<(), String> {
        if let Some(image) = snapshot {
            self.entries.clear();
            self.snapshot = image;
        }
        if let Some(first) = entries.first() {
            let base = self.snapshot_index();
            if first.index <= base || first.index > self.last_index() + 1 {
                return Err(format!(
                    "Ready entries start at index {}, but the stored log covers {}..={} after snapshot {}",
                    first.index,
                    base + 1,
                    self.last_index(),
                    base
                ));
            }
            self.entries.truncate((first.index - base - 1) as usize);
            for (i, e) in entries.iter().enumerate() {
                if e.index != first.index + i as u64 {
                    return Err(format!(
                        "Ready entries are not contiguous: index {} follows {}",
                        e.index,
                        first.index + i as u64 - 1
                    ));
                }
                self.entries.push_back(e.clone());
            }
        }
        if let Some(hs) = hard_state {
            self.cached_hard_state = Some(hs);
        }
        if sync {
            // An fsync makes everything written before it durable.
            if let Some(hs) = self.cached_hard_state.take() {
                self.hard_state = hs;
            }
        }
        Ok(())
    }

    /// Stores a snapshot the member took itself and drops the entries it
    /// covers (log compaction, §7). Synced before the core compacts.
    pub fn save_snapshot(&mut self, image: SnapshotImage) {
        let index = image.meta.last_included_index;
        let drop = (index.saturating_sub(self.snapshot_index()) as usize).min(self.entries.len());
        self.entries.drain(..drop);
        self.snapshot = image;
    }

    /// The power goes out: unsynced writes are gone.
    pub fn crash(&mut self) {
        self.cached_hard_state = None;
    }
}
