//! Opening a data dir: is it ours, is it whole, and what did we persist?
//!
//! The order matters. Nothing is written until the dir is known to be empty
//! (then it is initialised: identity file first) or to carry this member's
//! identity file. A dir that is someone else's, or not a kuberaft data dir at
//! all, is refused before sled opens it, so it is left byte for byte as it
//! was. A damaged data dir of ours is refused too; sled has opened it by then
//! (its own recovery may rewrite its files), but nothing of ours is reset,
//! removed or overwritten.

use std::path::{Path, PathBuf};

use kuberaft_proto::raft as pb;

use super::error::StorageError;
use super::identity::{IDENTITY_FILE_TMP, Identity, IdentityRecord};
use super::sync::{SledFiles, sync_dir};
use super::wal::{self, Recovered, Wal};
use super::{
    FORMAT_VERSION, IDENTITY_KEY, IDENTITY_TREE, INSTALLING_KEY, KV_TREE, PEERS_TREE,
    SNAPSHOT_META_KEY, SNAPSHOT_TREE, Storage, legacy, record, snapshot_files,
};
use crate::raft::SnapshotMeta;

/// Entries that do not make a directory "not empty": a freshly formatted
/// ext4 volume has `lost+found`, and a first start that crashed may have left
/// a half-written identity file.
const IGNORED_ENTRIES: &[&str] = &["lost+found", IDENTITY_FILE_TMP];

/// sled's page cache. The state machine keeps its own copy of the data in
/// memory (kv/), and the log is read once at start, so sled needs little.
const SLED_CACHE_BYTES: u64 = 64 << 20;

/// What a directory looked like before we touched it.
enum Found {
    /// Nothing (or only what [`IGNORED_ENTRIES`] names): initialise it.
    Empty,
    /// A data dir with this identity file.
    DataDir(IdentityRecord),
}

impl Storage {
    /// Opens (or, when `dir` is empty or absent, initialises) the data dir of
    /// member `identity`. Refuses a dir that belongs to another member or
    /// cluster, that is not a kuberaft data dir, or whose identity, hard
    /// state, snapshot metadata or log fails its checksum or has a gap. On
    /// success everything read is durable (synced again, in case it was only
    /// in the page cache of a process that crashed).
    pub fn open(dir: impl AsRef<Path>, identity: &Identity) -> Result<Storage, StorageError> {
        let dir = dir.as_ref().to_owned();
        identity.validate(&dir)?;
        let record = match inspect(&dir)? {
            Found::Empty => {
                let record = IdentityRecord::new(identity);
                // From here on the dir is ours (a crash before the store is
                // complete is finished by the next start, see below).
                record.write_file(&dir)?;
                tracing::info!(
                    dir = %dir.display(),
                    cluster = %record.cluster,
                    member = record.member_id,
                    "initialising a new data dir"
                );
                record
            }
            Found::DataDir(record) => {
                record.check(&dir, identity)?;
                record
            }
        };
        let db = sled::Config::new()
            .path(&dir)
            .cache_capacity(SLED_CACHE_BYTES)
            .open()
            .map_err(|e| StorageError::sled(&dir, "open its store", e))?;
        let mut record = record;
        let store_behind = check_identity_tree(&dir, &db, &record)?;
        if record.format_version < FORMAT_VERSION {
            legacy::migrate(&dir, &db, &mut record)?;
        } else if store_behind || legacy::has_old_trees(&db) {
            // A migration passed its commit point and stopped.
            legacy::finish(&dir, &db, &record)?;
        }
        Storage::load(dir, db, record)
    }

    /// Reads the trees of a data dir whose identity has been checked.
    fn load(dir: PathBuf, db: sled::Db, identity: IdentityRecord) -> Result<Storage, StorageError> {
        let tree = |name: &str| {
            db.open_tree(name)
                .map_err(|e| StorageError::sled(&dir, format!("open tree {name}"), e))
        };
        let snapshot_tree = tree(SNAPSHOT_TREE)?;
        let kv_tree = tree(KV_TREE)?;
        let peers_tree = tree(PEERS_TREE)?;

        let snapshot = read_meta(&dir, &snapshot_tree, SNAPSHOT_META_KEY, "snapshot metadata")?;
        if snapshot.is_some() && !Wal::exists(&dir) {
            // Starting with an empty log would forget the term and the vote:
            // the member could vote twice in one term.
            return Err(StorageError::corrupt(
                &dir,
                format!(
                    "it was bootstrapped but its write-ahead log ({}/) is gone, and with it the log, the term and the vote",
                    wal::WAL_DIR
                ),
            ));
        }
        let (wal, recovered) = Wal::open(&dir)?;
        let stored_hard_state = recovered.hard_state;
        let hard_state = stored_hard_state.unwrap_or_default();
        let interrupted_install = read_meta(
            &dir,
            &snapshot_tree,
            INSTALLING_KEY,
            "snapshot installation record",
        )?;

        let snapshot_dir = dir.join(snapshot_files::SNAPSHOT_DIR);
        std::fs::create_dir_all(&snapshot_dir)
            .map_err(|e| StorageError::io(&dir, "create the snapshots directory", e))?;

        let files = SledFiles::open(&dir)?;
        let mut storage = Storage {
            dir,
            db,
            wal,
            snapshot_tree,
            kv_tree,
            peers_tree,
            files,
            identity,
            hard_state,
            snapshot,
            interrupted_install,
            last_index: 0,
            restored_entries: Vec::new(),
            sync_times: Vec::new(),
        };
        match (&storage.snapshot, &storage.interrupted_install) {
            // The log is about to be replaced by the snapshot; what is left
            // of it is not read (nor trusted).
            (_, Some(meta)) => {
                tracing::warn!(
                    dir = %storage.dir.display(),
                    index = meta.last_included_index,
                    term = meta.last_included_term,
                    "a snapshot installation was interrupted; it will be finished"
                );
            }
            (Some(meta), None) => {
                let meta = meta.clone();
                storage.load_log(&meta, recovered)?;
            }
            (None, None) => storage.check_fresh(&recovered)?,
        }
        if let Some(hs) = stored_hard_state {
            // Only now that the log passed its checks: a refused dir is
            // left as it was found.
            storage.wal.rewrite_hard_state(&hs)?;
        }
        storage.files.sync_all(&storage.db)?;
        sync_dir(&storage.snapshot_dir())
            .map_err(|e| StorageError::io(&storage.dir, "fsync the snapshots directory", e))?;
        Ok(storage)
    }

    /// A data dir without snapshot metadata was never bootstrapped, so it
    /// can hold no log: if it does, the metadata was lost.
    fn check_fresh(&self, recovered: &Recovered) -> Result<(), StorageError> {
        if !recovered.entries.is_empty() || !self.kv_tree.is_empty() {
            return Err(StorageError::corrupt(
                &self.dir,
                "it holds log entries or state machine data but no snapshot metadata (not even the initial membership)",
            ));
        }
        Ok(())
    }
}

/// Classifies `dir` without writing to it (except to create it when absent).
fn inspect(dir: &Path) -> Result<Found, StorageError> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, "create it", e))?;
            if let Some(parent) = dir.parent() {
                // Make the new directory's name durable.
                let _ = sync_dir(parent);
            }
            return Ok(Found::Empty);
        }
        Err(e) => return Err(StorageError::io(dir, "inspect it", e)),
        Ok(m) if !m.is_dir() => {
            return Err(StorageError::NotADataDir {
                dir: dir.to_owned(),
                found: "it is a file, not a directory".into(),
            });
        }
        Ok(_) => {}
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, "list it", e))? {
        let entry = entry.map_err(|e| StorageError::io(dir, "list it", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !IGNORED_ENTRIES.contains(&name.as_str()) {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Ok(Found::Empty);
    }
    if let Some(record) = IdentityRecord::read_file(dir)? {
        return Ok(Found::DataDir(record));
    }
    names.sort();
    let shown: Vec<_> = names.iter().take(5).map(|n| format!("{n:?}")).collect();
    let more = if names.len() > 5 {
        format!(" and {} more", names.len() - 5)
    } else {
        String::new()
    };
    Err(StorageError::NotADataDir {
        dir: dir.to_owned(),
        found: format!(
            "it holds {}{more} but no kuberaft identity file",
            shown.join(", ")
        ),
    })
}

/// The store's copy of the identity must agree with the file's. A store
/// without one is the rest of an interrupted first start if it is empty
/// (then the copy is written now), and damage otherwise. Returns whether the
/// copy is the same identity in an older format (a format migration passed
/// its commit point, see `legacy.rs`).
fn check_identity_tree(
    dir: &Path,
    db: &sled::Db,
    record: &IdentityRecord,
) -> Result<bool, StorageError> {
    let tree = db
        .open_tree(IDENTITY_TREE)
        .map_err(|e| StorageError::sled(dir, "open tree identity", e))?;
    match get(dir, &tree, IDENTITY_KEY, "identity")? {
        Some(v) => {
            let stored = IdentityRecord::decode(dir, &v)?;
            let older_copy = stored.format_version < record.format_version
                && IdentityRecord {
                    format_version: record.format_version,
                    ..stored.clone()
                } == *record;
            if older_copy {
                return Ok(true);
            }
            if stored != *record {
                return Err(StorageError::corrupt(
                    dir,
                    format!("its identity file says {record:?} but its store says {stored:?}"),
                ));
            }
            Ok(false)
        }
        None if store_is_empty(db) => {
            // Made durable by the sync at the end of `load`; if that never
            // happens, the next start gets here again.
            tree.insert(IDENTITY_KEY, record.encode())
                .map_err(|e| StorageError::sled(dir, "record the identity", e))?;
            Ok(false)
        }
        None => Err(StorageError::corrupt(
            dir,
            "its store holds data but no identity record",
        )),
    }
}

/// Whether a sled store holds nothing at all.
fn store_is_empty(db: &sled::Db) -> bool {
    db.tree_names()
        .iter()
        .all(|name| db.open_tree(name).map(|t| t.is_empty()).unwrap_or(false))
}

fn get(
    dir: &Path,
    tree: &sled::Tree,
    key: &[u8],
    what: &str,
) -> Result<Option<sled::IVec>, StorageError> {
    tree.get(key)
        .map_err(|e| StorageError::sled(dir, format!("read the {what}"), e))
}

fn read_meta(
    dir: &Path,
    tree: &sled::Tree,
    key: &[u8],
    what: &str,
) -> Result<Option<SnapshotMeta>, StorageError> {
    let Some(v) = get(dir, tree, key, what)? else {
        return Ok(None);
    };
    let meta = record::open_message::<pb::SnapshotMeta>(&v)
        .map_err(|e| StorageError::corrupt(dir, format!("the {what}: {e}")))?;
    SnapshotMeta::try_from(meta)
        .map(Some)
        .map_err(|e| StorageError::corrupt(dir, format!("the {what}: {e}")))
}
