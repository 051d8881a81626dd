//! TEMPORARY in-memory stand-in, replaced by the sled storage branch.
use crate::raft::{Entry, HardState, RestoredState, SnapshotMeta};

#[derive(Default)]
pub struct Storage {
    pub hard: HardState,
    pub entries: Vec<Entry>,
    pub snapshot: SnapshotMeta,
}

impl Storage {
    pub fn open_fresh(snapshot: SnapshotMeta) -> (Storage, RestoredState) {
        let s = Storage {
            snapshot: snapshot.clone(),
            ..Default::default()
        };
        (
            s,
            RestoredState {
                snapshot,
                ..Default::default()
            },
        )
    }

    pub fn persist(
        &mut self,
        hard: Option<&HardState>,
        entries: &[Entry],
        _sync: bool,
    ) -> Result<(), String> {
        if let Some(h) = hard {
            self.hard = *h;
        }
        if let Some(first) = entries.first() {
            self.entries.retain(|e| e.index < first.index);
            self.entries.extend_from_slice(entries);
        }
        Ok(())
    }
}
