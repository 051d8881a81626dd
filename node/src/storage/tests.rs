//! Scenarios of a data dir's life: first start, restarts, truncation,
//! compaction, and the dirs that must be refused (and left untouched).

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use tempfile::TempDir;

use super::*;
use crate::raft::{Member, Suffrage};
use identity::IdentityRecord;

pub(crate) fn identity(id: u64) -> Identity {
    Identity {
        cluster: "demo".into(),
        member_id: id,
        member_name: format!("demo-{id}"),
    }
}

pub(crate) fn membership() -> Membership {
    Membership::new((1..=3).map(|id| Member {
        id,
        name: format!("demo-{id}"),
        peer_addr: format!("demo-{id}.demo-peers.default.svc.cluster.local:7000"),
        client_addr: format!("demo-{id}.demo-peers.default.svc.cluster.local:7001"),
        suffrage: Suffrage::Voter,
    }))
}

pub(crate) fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range
        .map(|i| Entry::normal(term, i, Bytes::from(format!("cmd {i} of term {term}"))))
        .collect()
}

/// sled lets go of its lock on `db` a moment after the last handle is
/// dropped (its thread pool may still be finishing a write), so opening
/// again right away, in this process or a child, can find it locked.
pub(crate) fn retry_while_locked<T, E: std::fmt::Display>(
    mut open: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    || e.to_string().contains("another process holds it open") =>
            {
                if std::time::Instant::now() > deadline {
                    return Err(e);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

pub(crate) fn storage_open(dir: &Path, identity: &Identity) -> Result<Storage, StorageError> {
    retry_while_locked(|| Storage::open(dir, identity))
}

fn open(dir: &Path) -> Storage {
    storage_open(dir, &identity(1)).unwrap()
}

fn restored(storage: &mut Storage) -> RestoredState {
    match storage.boot(0) {
        Boot::Restored(r) => r,
        Boot::Fresh => panic!("expected a restored data dir"),
    }
}

/// A bootstrapped data dir holding entries 1..=5 of term 1 and a hard state.
fn populated() -> (TempDir, HardState) {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path());
    s.bootstrap(membership()).unwrap();
    let hs = HardState {
        current_term: 1,
        voted_for: 1,
        commit_index: 3,
    };
    s.persist(Some(&hs), &entries(1..=5, 1), true).unwrap();
    (tmp, hs)
}

/// Every file under `dir` with its size and checksum, to prove a refused
/// open wrote nothing.
fn contents(dir: &Path) -> BTreeMap<String, (usize, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = p.strip_prefix(dir).unwrap().display().to_string();
                let bytes = std::fs::read(&p).unwrap();
                out.insert(name, (bytes.len(), crc32fast::hash(&bytes)));
            }
        }
    }
    out
}

/// Edits one tree behind the storage's back, as a damaged disk would.
fn tamper(dir: &Path, tree: &str, f: impl FnOnce(&sled::Tree)) {
    let db = retry_while_locked(|| sled::Config::new().path(dir).open()).unwrap();
    f(&db.open_tree(tree).unwrap());
    db.flush().unwrap();
}

#[test]
fn a_new_data_dir_is_fresh_until_bootstrapped_and_keeps_its_membership() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    {
        let mut s = open(&dir);
        assert!(matches!(s.boot(0), Boot::Fresh));
        assert_eq!(s.identity().member_id, 1);
        assert_eq!(s.identity().format_version, FORMAT_VERSION);
        let r = s.bootstrap(membership()).unwrap();
        assert_eq!(r.snapshot.membership, membership());
        assert!(s.bootstrap(membership()).is_err(), "bootstrap twice");
    }
    {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = open(tmp.path());
        let err = s.persist(None, &entries(1..=1, 1), true).unwrap_err();
        assert!(err.to_string().contains("before bootstrap"), "{err}");
    }
    let mut s = open(&dir);
    let r = restored(&mut s);
    assert_eq!(r.snapshot.last_included_index, 0);
    assert_eq!(r.snapshot.membership, membership());
    assert!(r.entries.is_empty());
}

#[test]
fn a_restart_recovers_the_hard_state_and_the_log() {
    let (tmp, hs) = populated();
    let mut s = open(tmp.path());
    let r = restored(&mut s);
    assert_eq!(r.hard_state, hs);
    assert_eq!(r.entries, entries(1..=5, 1));
    assert_eq!(s.last_index(), 5);
    assert_eq!(s.hard_state(), hs);
}

#[test]
fn entries_from_a_new_leader_replace_the_conflicting_suffix() {
    let (tmp, _) = populated();
    {
        let mut s = open(tmp.path());
        // §5.3: entries 3.. of term 1 conflict with the new leader's.
        s.persist(None, &entries(3..=4, 2), true).unwrap();
        assert_eq!(s.last_index(), 4);
    }
    let mut s = open(tmp.path());
    let mut want = entries(1..=2, 1);
    want.extend(entries(3..=4, 2));
    assert_eq!(restored(&mut s).entries, want);
}

#[test]
fn entries_that_would_leave_a_gap_are_refused() {
    let (tmp, _) = populated();
    let mut s = open(tmp.path());
    let err = s.persist(None, &entries(7..=8, 1), true).unwrap_err();
    assert!(err.to_string().contains("from index 7"), "{err}");
    let mut not_consecutive = entries(6..=6, 1);
    not_consecutive.extend(entries(8..=8, 1));
    assert!(s.persist(None, &not_consecutive, true).is_err());
    assert_eq!(s.last_index(), 5);
}

#[test]
fn compaction_drops_the_covered_entries_and_survives_a_restart() {
    let (tmp, _) = populated();
    let meta = SnapshotMeta {
        last_included_index: 3,
        last_included_term: 1,
        membership: membership(),
    };
    {
        let mut s = open(tmp.path());
        s.compact(&meta).unwrap().run().unwrap();
        assert_eq!(s.snapshot_meta(), Some(&meta));
    }
    let mut s = open(tmp.path());
    let r = restored(&mut s);
    assert_eq!(r.snapshot, meta);
    assert_eq!(r.entries, entries(4..=5, 1));
    // New entries go after the log as before; entries the snapshot covers
    // cannot be written.
    s.persist(None, &entries(6..=6, 1), true).unwrap();
    assert!(s.persist(None, &entries(3..=3, 2), true).is_err());
}

#[test]
fn a_compaction_interrupted_before_the_entries_went_is_finished_at_start() {
    let (tmp, _) = populated();
    let meta = SnapshotMeta {
        last_included_index: 2,
        last_included_term: 1,
        membership: membership(),
    };
    {
        // The crash: the metadata is durable, the entries still there.
        let s = open(tmp.path());
        s.write_snapshot_meta(&meta).unwrap();
    }
    let mut s = open(tmp.path());
    assert_eq!(restored(&mut s).entries, entries(3..=5, 1));
}

#[test]
fn another_members_or_clusters_data_dir_is_refused_and_left_untouched() {
    let (tmp, _) = populated();
    let before = contents(tmp.path());
    let strangers = [
        Identity {
            cluster: "other".into(),
            ..identity(1)
        },
        identity(2),
        Identity {
            member_name: "demo-7".into(),
            ..identity(1)
        },
    ];
    for stranger in strangers {
        let err = storage_open(tmp.path(), &stranger)
            .err()
            .expect("a foreign data dir must be refused");
        let msg = err.to_string();
        assert!(matches!(err, StorageError::ForeignIdentity(_)), "{msg}");
        assert!(
            msg.contains(&format!(
                "belongs to cluster \"demo\", member 1 (\"demo-1\"); refusing to start as member {} (\"{}\") of cluster \"{}\"",
                stranger.member_id, stranger.member_name, stranger.cluster
            )),
            "{msg}"
        );
        assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
        assert_eq!(contents(tmp.path()), before, "refusing wrote to the dir");
    }
    let mut s = open(tmp.path());
    assert_eq!(restored(&mut s).entries, entries(1..=5, 1));
}

/// The newest log segment's path and bytes.
fn newest_segment(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let mut paths: Vec<_> = std::fs::read_dir(dir.join(wal::WAL_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let path = paths.pop().unwrap();
    let data = std::fs::read(&path).unwrap();
    (path, data)
}

#[test]
fn a_log_entry_with_a_flipped_byte_is_refused() {
    let (tmp, _) = populated();
    let (path, mut data) = newest_segment(tmp.path());
    let at = data.windows(5).position(|w| w == b"cmd 3").unwrap();
    data[at + 1] ^= 0x20;
    std::fs::write(&path, &data).unwrap();
    let err = storage_open(tmp.path(), &identity(1)).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{msg}");
    assert!(msg.contains("the record after log entry 2"), "{msg}");
    assert!(msg.contains("checksum"), "{msg}");
    assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
    assert!(msg.contains("remove this member"), "{msg}");
    // Nothing was reset: the damaged segment is as it was.
    assert_eq!(newest_segment(tmp.path()).1, data);
    assert!(storage_open(tmp.path(), &identity(1)).is_err());
}

#[test]
fn a_gap_in_the_log_is_refused() {
    let (tmp, hs) = populated();
    {
        // Behind `persist`'s back, which refuses to write a gap.
        let mut s = open(tmp.path());
        s.wal.append(&entries(7..=7, 1), None, &hs).unwrap();
        s.wal.sync().unwrap();
    }
    let msg = storage_open(tmp.path(), &identity(1))
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("the log has a gap: entry 7 follows entry 5"),
        "{msg}"
    );
}

#[test]
fn a_log_that_does_not_go_on_from_the_snapshot_or_a_damaged_hard_state_is_refused() {
    let (tmp, hs) = populated();
    {
        let mut s = open(tmp.path());
        s.wal.reset(&hs).unwrap();
        s.wal.append(&entries(9..=9, 1), None, &hs).unwrap();
        s.wal.sync().unwrap();
    }
    let before = newest_segment(tmp.path()).1;
    let msg = storage_open(tmp.path(), &identity(1))
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("the log starts at entry 9, but the snapshot ends at 0"),
        "{msg}"
    );
    assert_eq!(
        newest_segment(tmp.path()).1,
        before,
        "the refused log is left as it was"
    );

    // The hard state is the last record `populated` wrote (commit index 3).
    let (tmp, _) = populated();
    let (path, mut data) = newest_segment(tmp.path());
    let last = data.iter().rposition(|b| *b != 0).unwrap();
    data[last] ^= 0x01;
    std::fs::write(&path, &data).unwrap();
    let msg = storage_open(tmp.path(), &identity(1))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("the record after log entry 5"), "{msg}");
    assert!(msg.contains("checksum"), "{msg}");
}

/// Rewrites a data dir as format 1 left it: the log and the hard state in
/// sled, no `wal/`. With `identity_file_format` 2 it is instead what a
/// migration that stopped right after its commit point left: the new log
/// and identity file, the old trees and store identity.
fn make_format_1(dir: &Path, identity_file_format: u32) {
    let mut record = {
        let s = open(dir);
        s.identity().clone()
    };
    let (log, hs) = {
        let mut s = open(dir);
        let r = restored(&mut s);
        (r.entries, r.hard_state)
    };
    record.format_version = 1;
    let db = retry_while_locked(|| sled::Config::new().path(dir).open()).unwrap();
    db.open_tree(IDENTITY_TREE)
        .unwrap()
        .insert(IDENTITY_KEY, record.encode())
        .unwrap();
    let log_tree = db.open_tree(LEGACY_LOG_TREE).unwrap();
    for e in &log {
        log_tree
            .insert(
                e.index.to_be_bytes(),
                record::seal_message(&kuberaft_proto::raft::Entry::from(e)),
            )
            .unwrap();
    }
    db.open_tree(LEGACY_HARD_STATE_TREE)
        .unwrap()
        .insert(
            LEGACY_HARD_STATE_KEY,
            record::seal_message(&kuberaft_proto::raft::HardState::from(&hs)),
        )
        .unwrap();
    db.flush().unwrap();
    drop(db);
    if identity_file_format == 1 {
        std::fs::remove_dir_all(dir.join(wal::WAL_DIR)).unwrap();
    }
    record.format_version = identity_file_format;
    record.write_file(dir).unwrap();
}

#[test]
fn a_format_1_data_dir_is_moved_to_the_write_ahead_log() {
    for identity_file_format in [1, FORMAT_VERSION] {
        let (tmp, hs) = populated();
        make_format_1(tmp.path(), identity_file_format);
        if identity_file_format == 1 {
            // What an earlier migration that crashed before its commit point
            // left: it is discarded and done again.
            std::fs::create_dir(tmp.path().join(wal::WAL_DIR)).unwrap();
            std::fs::write(
                tmp.path().join(wal::WAL_DIR).join("0000000000000001.wal"),
                b"junk",
            )
            .unwrap();
        }
        {
            let mut s = open(tmp.path());
            assert_eq!(s.identity().format_version, FORMAT_VERSION);
            let r = restored(&mut s);
            assert_eq!(r.hard_state, hs, "from file format {identity_file_format}");
            assert_eq!(r.entries, entries(1..=5, 1));
            s.persist(None, &entries(6..=6, 1), true).unwrap();
        }
        let on_disk = IdentityRecord::read_file(tmp.path()).unwrap().unwrap();
        assert_eq!(on_disk.format_version, FORMAT_VERSION);
        let mut s = open(tmp.path());
        assert_eq!(restored(&mut s).entries.len(), 6);
        assert!(!legacy::has_old_trees(&s.db));
    }
}

#[test]
fn damaged_snapshot_metadata_is_refused() {
    let (tmp, _) = populated();
    tamper(tmp.path(), SNAPSHOT_TREE, |t| {
        let mut v = t.get(SNAPSHOT_META_KEY).unwrap().unwrap().to_vec();
        v[4] ^= 0x80;
        t.insert(SNAPSHOT_META_KEY, v).unwrap();
    });
    let msg = storage_open(tmp.path(), &identity(1))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("the snapshot metadata: its checksum"), "{msg}");
}

#[test]
fn a_directory_with_other_files_is_not_a_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
    let before = contents(tmp.path());
    let err = storage_open(tmp.path(), &identity(1)).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, StorageError::NotADataDir { .. }), "{msg}");
    assert!(msg.contains("\"notes.txt\""), "{msg}");
    assert_eq!(contents(tmp.path()), before);
    assert!(!tmp.path().join("db").exists());
}

#[test]
fn a_sled_store_without_a_kuberaft_identity_is_not_a_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    tamper(tmp.path(), "someone-elses", |t| {
        t.insert(b"k", b"v").unwrap();
    });
    let before = contents(tmp.path());
    let err = storage_open(tmp.path(), &identity(1)).err().unwrap();
    assert!(matches!(err, StorageError::NotADataDir { .. }), "{err}");
    assert!(
        err.to_string().contains("no kuberaft identity file"),
        "{err}"
    );
    assert_eq!(contents(tmp.path()), before, "refusing wrote to the dir");
}

#[test]
fn a_store_whose_identity_differs_from_the_identity_file_is_refused() {
    let (tmp, _) = populated();
    tamper(tmp.path(), IDENTITY_TREE, |t| {
        let other = IdentityRecord::new(&identity(2));
        t.insert(IDENTITY_KEY, other.encode()).unwrap();
    });
    let msg = storage_open(tmp.path(), &identity(1))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("its identity file says"), "{msg}");
}

#[test]
fn a_first_start_that_crashed_after_writing_its_identity_file_is_finished() {
    // Crashed before sled created its store...
    let tmp = tempfile::tempdir().unwrap();
    IdentityRecord::new(&identity(1))
        .write_file(tmp.path())
        .unwrap();
    std::fs::write(tmp.path().join("identity.tmp"), "half").unwrap();
    let mut s = open(tmp.path());
    assert!(matches!(s.boot(0), Boot::Fresh));
    drop(s);
    // ...or after sled created it, before the identity was in it.
    let tmp = tempfile::tempdir().unwrap();
    IdentityRecord::new(&identity(1))
        .write_file(tmp.path())
        .unwrap();
    drop(sled::Config::new().path(tmp.path()).open().unwrap());
    let mut s = open(tmp.path());
    assert!(matches!(s.boot(0), Boot::Fresh));
    // And a crash in the very first step leaves a dir that counts as empty.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("identity.tmp"), "half").unwrap();
    assert!(matches!(open(tmp.path()).boot(0), Boot::Fresh));
}

#[test]
fn a_fresh_volume_with_lost_and_found_is_empty() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("lost+found")).unwrap();
    let mut s = open(tmp.path());
    assert!(matches!(s.boot(0), Boot::Fresh));
}

#[test]
fn a_data_dir_that_cannot_be_created_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let msg = storage_open(&file.join("data"), &identity(1))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("a-file/data"), "{msg}");
    assert!(
        msg.contains("a file stands where a directory should be"),
        "{msg}"
    );
    let msg = storage_open(&file, &identity(1)).err().unwrap().to_string();
    assert!(msg.contains("is a file, not a directory"), "{msg}");
}

/// Makes a directory immutable (`chattr +i`) for as long as it lives, which
/// stops even root from writing to it; `None` where chattr is not allowed.
struct Immutable<'a>(&'a Path);

impl<'a> Immutable<'a> {
    fn new(dir: &'a Path) -> Option<Immutable<'a>> {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Immutable(dir))
    }
}

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(self.0)
            .status();
    }
}

#[test]
fn a_data_dir_without_write_permission_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root ignores permissions; an immutable directory stops it too.
    let _immutable = if std::fs::write(dir.join("probe"), "").is_ok() {
        std::fs::remove_file(dir.join("probe")).unwrap();
        match Immutable::new(&dir) {
            Some(guard) => Some(guard),
            None => return, // Nothing can stop this process from writing here.
        }
    } else {
        None
    };
    let msg = storage_open(&dir, &identity(1)).err().unwrap().to_string();
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(msg.contains("give this process write access"), "{msg}");
}

#[test]
fn a_second_process_on_the_same_dir_is_refused_by_sleds_lock() {
    let (tmp, _) = populated();
    let _first = open(tmp.path());
    // sled holds an exclusive lock on `db`; a second open in this process
    // (or another) fails instead of corrupting the store.
    let msg = Storage::open(tmp.path(), &identity(1))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("another process holds it open"), "{msg}");
}

#[test]
fn identity_member_zero_and_empty_cluster_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(storage_open(tmp.path(), &identity(0)).is_err());
    let nameless = Identity {
        cluster: String::new(),
        ..identity(1)
    };
    assert!(storage_open(tmp.path(), &nameless).is_err());
    assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none());
}

#[test]
fn large_values_go_to_sleds_blob_files_which_are_synced_and_read_back() {
    let (tmp, _) = populated();
    // Above sled's blob threshold (segment_size / 4, 128 KiB by default).
    let big = vec![0x5a; 300 << 10];
    {
        let mut s = open(tmp.path());
        s.kv_tree().insert(b"big", big.clone()).unwrap();
        s.sync().unwrap();
        let blobs = std::fs::read_dir(tmp.path().join("blobs")).unwrap().count();
        assert!(blobs > 0, "sled wrote no blob for a 300 KiB value");
        assert_eq!(s.files.synced_blob_count(), blobs);
    }
    let s = open(tmp.path());
    assert_eq!(s.kv_tree().get(b"big").unwrap().unwrap().as_ref(), &big[..]);
}

#[test]
fn a_large_entry_is_appended_and_read_back() {
    let (tmp, _) = populated();
    let big = Entry::normal(1, 6, Bytes::from(vec![0x5a; 1 << 20]));
    {
        let mut s = open(tmp.path());
        s.persist(None, std::slice::from_ref(&big), true).unwrap();
    }
    let mut s = open(tmp.path());
    assert_eq!(restored(&mut s).entries.last(), Some(&big));
}

#[test]
fn a_bootstrapped_data_dir_without_its_write_ahead_log_is_refused_and_left_untouched() {
    let (tmp, _) = populated();
    std::fs::remove_dir_all(tmp.path().join(wal::WAL_DIR)).unwrap();
    let msg = storage_open(tmp.path(), &identity(1))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("write-ahead log (wal/) is gone"), "{msg}");
    assert!(!tmp.path().join(wal::WAL_DIR).exists(), "no new log made");
}
