//! Data dirs of format 1 kept the log and the hard state in sled: tree `log`
//! (u64 big-endian index → CRC-framed `raft.v1.Entry`) and tree `hard_state`.
//! Format 2 keeps both in the write-ahead log (`wal/`). The first start of a
//! newer kuberaft moves them across:
//!
//! 1. A `wal/` already there is removed: under format 1 it can only be what a
//!    migration that did not finish left.
//! 2. The entries (each checksum checked, keys consecutive) and the hard
//!    state are appended to a new log and synced.
//! 3. **Commit point**: the identity file says format 2 (written to a
//!    temporary name, synced, renamed).
//! 4. The store's copy of the identity says so too and the two trees are
//!    cleared; `open` syncs it all before it returns.
//!
//! A crash before 3 leaves a format-1 dir, migrated again at the next start;
//! after 3, `open` finds format 2 and finishes step 4 ([`finish`]).

use std::path::Path;

use kuberaft_proto::raft as pb;

use super::error::StorageError;
use super::identity::IdentityRecord;
use super::wal::{self, Wal};
use super::{
    IDENTITY_KEY, IDENTITY_TREE, LEGACY_HARD_STATE_KEY, LEGACY_HARD_STATE_TREE, LEGACY_LOG_TREE,
    record,
};
use crate::raft::{Entry, HardState, Index};

/// Moves the log and the hard state of a format-1 dir into a new write-ahead
/// log and makes `identity` (and the identity file) format 2.
pub fn migrate(
    dir: &Path,
    db: &sled::Db,
    identity: &mut IdentityRecord,
) -> Result<(), StorageError> {
    let tree = |name: &str| {
        db.open_tree(name)
            .map_err(|e| StorageError::sled(dir, format!("open tree {name}"), e))
    };
    let (log_tree, hard_state_tree) = (tree(LEGACY_LOG_TREE)?, tree(LEGACY_HARD_STATE_TREE)?);
    let hard_state = match hard_state_tree
        .get(LEGACY_HARD_STATE_KEY)
        .map_err(|e| StorageError::sled(dir, "read the hard state", e))?
    {
        Some(v) => Some(HardState::from(
            record::open_message::<pb::HardState>(&v)
                .map_err(|e| StorageError::corrupt(dir, format!("the hard state: {e}")))?,
        )),
        None => None,
    };
    let entries = read_log(dir, &log_tree)?;

    let wal_dir = dir.join(wal::WAL_DIR);
    if wal_dir.exists() {
        std::fs::remove_dir_all(&wal_dir).map_err(|e| {
            StorageError::io(dir, "remove the log of an unfinished format migration", e)
        })?;
    }
    {
        let (mut wal, _) = Wal::open(dir)?;
        let none = HardState::default();
        wal.append(&entries, hard_state.as_ref(), &none)?;
        wal.sync()?;
    }
    identity.format_version = super::FORMAT_VERSION;
    identity.write_file(dir)?;
    tracing::info!(
        dir = %dir.display(),
        entries = entries.len(),
        "moved the log from sled to the write-ahead log (data dir format 1 to 2)"
    );
    finish(dir, db, identity)
}

/// Step 4: the store's identity copy and the old trees catch up with an
/// identity file that already says format 2. Idempotent.
pub fn finish(dir: &Path, db: &sled::Db, identity: &IdentityRecord) -> Result<(), StorageError> {
    let sled_err = |what: &'static str| move |e| StorageError::sled(dir, what, e);
    db.open_tree(IDENTITY_TREE)
        .and_then(|t| t.insert(IDENTITY_KEY, identity.encode()))
        .map_err(sled_err("record the identity"))?;
    for name in [LEGACY_LOG_TREE, LEGACY_HARD_STATE_TREE] {
        db.drop_tree(name)
            .map_err(sled_err("drop a tree of format 1"))?;
    }
    Ok(())
}

/// Whether the store still holds a tree of format 1.
pub fn has_old_trees(db: &sled::Db) -> bool {
    db.tree_names().iter().any(|n| {
        n.as_ref() == LEGACY_LOG_TREE.as_bytes() || n.as_ref() == LEGACY_HARD_STATE_TREE.as_bytes()
    })
}

fn read_log(dir: &Path, log_tree: &sled::Tree) -> Result<Vec<Entry>, StorageError> {
    let mut entries: Vec<Entry> = Vec::new();
    for item in log_tree.iter() {
        let (k, v) = item.map_err(|e| StorageError::sled(dir, "read the log", e))?;
        let index = <[u8; 8]>::try_from(k.as_ref())
            .map(Index::from_be_bytes)
            .map_err(|_| {
                StorageError::corrupt(
                    dir,
                    format!(
                        "the log holds a key {:02x?} that is not an index",
                        k.as_ref()
                    ),
                )
            })?;
        if let Some(prev) = entries.last()
            && index != prev.index + 1
        {
            return Err(StorageError::corrupt(
                dir,
                format!(
                    "the log has a gap: entry {index} follows entry {}",
                    prev.index
                ),
            ));
        }
        let entry = record::open_message::<pb::Entry>(&v)
            .map_err(|e| format!("log entry {index}: {e}"))
            .and_then(|e| Entry::try_from(e).map_err(|e| format!("log entry {index}: {e}")))
            .map_err(|what| StorageError::corrupt(dir, what))?;
        if entry.index != index {
            return Err(StorageError::corrupt(
                dir,
                format!(
                    "log entry {index} is stored under the wrong key (it says it is entry {})",
                    entry.index
                ),
            ));
        }
        entries.push(entry);
    }
    Ok(entries)
}
