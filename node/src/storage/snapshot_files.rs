//! Where snapshot files live and which of them are kept.
//!
//! `<data dir>/snapshots/<index>-<term>.snap` holds the state machine at log
//! index `index` of term `term` (the format is in `kv/snapshot_file.rs`). A
//! file is written (or received) under a temporary name, fsynced, and renamed
//! into place, so a `.snap` name is always a complete file. Which snapshot is
//! *the* snapshot is recorded in sled (`Storage::snapshot_meta`), not guessed
//! from the names: a `.snap` file newer than that is one being installed, or
//! an orphan of a crash.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::StorageError;
use super::sync::sync_dir;
use crate::raft::{Index, SnapshotMeta, Term};

pub const SNAPSHOT_DIR: &str = "snapshots";
const SUFFIX: &str = ".snap";
/// Being written by this member (a snapshot of its own state machine).
pub const WRITING_SUFFIX: &str = ".snap.tmp";
/// Being received from the leader.
pub const RECEIVING_SUFFIX: &str = ".snap.partial";

pub fn file_name(index: Index, term: Term) -> String {
    format!("{index}-{term}{SUFFIX}")
}

/// The path of the snapshot file of `meta` in the snapshot directory `dir`.
pub fn snapshot_path(dir: &Path, meta: &SnapshotMeta) -> PathBuf {
    dir.join(file_name(meta.last_included_index, meta.last_included_term))
}

/// A fresh path for a snapshot of `meta` to be written or received under
/// until it is complete. Each call gives another name, so two transfers of
/// the same snapshot (a leader that retried while the first stream was still
/// open) never write into one file.
pub fn temporary_path(dir: &Path, meta: &SnapshotMeta, suffix: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(
        "{}-{}.{n}{suffix}",
        meta.last_included_index, meta.last_included_term
    ))
}

/// `(index, term)` of a complete snapshot file's name.
pub fn parse_name(name: &str) -> Option<(Index, Term)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (index, term) = stem.split_once('-')?;
    Some((index.parse().ok()?, term.parse().ok()?))
}

/// The complete snapshot files in `dir`, oldest first.
pub fn list(dir: &Path) -> std::io::Result<Vec<(Index, Term, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some((index, term)) = entry.file_name().to_str().and_then(parse_name) {
            out.push((index, term, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Removes snapshot files older than the newest one before `current` — so
/// `current` and one predecessor stay (a follower may still be receiving the
/// predecessor from us). Files newer than `current` are left alone: they are
/// being installed. With `at_start`, no transfer or write can be in flight,
/// so unfinished files and files newer than `current` (orphans of a crash)
/// go too.
pub fn remove_old(
    data_dir: &Path,
    dir: &Path,
    current: &SnapshotMeta,
    at_start: bool,
) -> Result<(), StorageError> {
    let io = |e| StorageError::io(data_dir, format!("clean up {}", dir.display()), e);
    let current_key = (current.last_included_index, current.last_included_term);
    let files = list(dir).map_err(io)?;
    let predecessor = files
        .iter()
        .filter(|(i, t, _)| (*i, *t) < current_key)
        .map(|(i, t, _)| (*i, *t))
        .next_back();
    let mut removed = false;
    for (index, term, path) in &files {
        let key = (*index, *term);
        let keep =
            key == current_key || Some(key) == predecessor || (!at_start && key > current_key);
        if !keep {
            tracing::info!(path = %path.display(), "removing old snapshot file");
            std::fs::remove_file(path).map_err(io)?;
            removed = true;
        }
    }
    if at_start {
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(WRITING_SUFFIX) || name.ends_with(RECEIVING_SUFFIX) {
                tracing::info!(file = %name, "removing unfinished snapshot file");
                std::fs::remove_file(entry.path()).map_err(io)?;
                removed = true;
            }
        }
    }
    if removed {
        // Not needed for safety (a resurrected old file is only garbage), but
        // it keeps the disk usage we report true after a crash.
        sync_dir(dir).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        assert_eq!(file_name(10, 1), "10-1.snap");
        assert_eq!(parse_name(&file_name(10, 1)), Some((10, 1)));
        assert_eq!(parse_name("10-1.snap.tmp"), None);
        let meta = SnapshotMeta::default();
        let a = temporary_path(Path::new("/d"), &meta, RECEIVING_SUFFIX);
        let b = temporary_path(Path::new("/d"), &meta, RECEIVING_SUFFIX);
        assert_ne!(a, b);
        assert!(a.to_string_lossy().ends_with(RECEIVING_SUFFIX));
        assert_eq!(parse_name(&a.file_name().unwrap().to_string_lossy()), None);
        assert_eq!(parse_name("x-1.snap"), None);
    }
}
