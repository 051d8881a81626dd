//! The data dir as a whole: snapshots taken and installed, and crashes in
//! the middle of an installation (in a child process that really dies).

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use kuberaft_proto::kv as pb;
use kuberaft_proto::kv::command::Op;

use super::*;
use crate::kv::{Versioned, command};
use crate::raft::{Entry, HardState, Index, RestoredState};
use crate::storage::tests::{entries, identity, membership, retry_while_locked};

/// The environment variables of a crash test's child process.
pub const CRASH_AT_ENV: &str = "KUBERAFT_TEST_CRASH_AT";
const CRASH_DIR_ENV: &str = "KUBERAFT_TEST_CRASH_DIR";
/// How the child says it died at the crash point.
pub const CRASH_EXIT_CODE: i32 = 86;

fn put(index: Index, term: u64, key: &str, value: &str) -> Entry {
    Entry::normal(
        term,
        index,
        command::encode(Op::Put(pb::PutRequest {
            key: key.into(),
            value: value.into(),
        })),
    )
}

fn open(dir: &Path) -> (Disk, Boot) {
    retry_while_locked(|| Disk::open(dir, &identity(1))).unwrap()
}

fn restored(boot: Boot) -> RestoredState {
    match boot {
        Boot::Restored(r) => r,
        Boot::Fresh => panic!("expected a restored data dir"),
    }
}

fn get(disk: &Disk, key: &str) -> Option<String> {
    disk.state_machine
        .get(key.as_bytes())
        .map(|v| String::from_utf8(v.value.to_vec()).unwrap())
}

/// The state before the installation: entries 1..=5 of term 1 persisted,
/// 1..=3 committed and applied ("old" = "1", "2", "3").
fn old_state(dir: &Path) {
    let (mut disk, boot) = open(dir);
    assert!(matches!(boot, Boot::Fresh));
    disk.storage.bootstrap(membership()).unwrap();
    let log: Vec<_> = (1..=5).map(|i| put(i, 1, "old", &i.to_string())).collect();
    let hs = HardState {
        current_term: 1,
        voted_for: 2,
        commit_index: 3,
    };
    disk.storage.persist(Some(&hs), &log, true).unwrap();
    disk.state_machine.apply(&log[..3]).unwrap();
}

fn new_meta() -> SnapshotMeta {
    SnapshotMeta {
        last_included_index: 20,
        last_included_term: 4,
        membership: membership(),
    }
}

/// The leader's snapshot at index 20 ("new" = "20"), received into `dir`
/// (after the data dir is open: a start removes snapshot files newer than
/// the current snapshot, which a crash orphaned).
fn receive_new_snapshot(dir: &Path) {
    let mut data = crate::kv::KvMap::new();
    data.insert(
        Bytes::from_static(b"new"),
        Versioned {
            value: Bytes::from_static(b"20"),
            mod_index: 20,
        },
    );
    let image = SnapshotImage {
        applied_index: 20,
        data,
    };
    snapshot_file::write(&dir.join("snapshots"), &new_meta(), &image).unwrap();
}

fn assert_old(dir: &Path) {
    let (disk, boot) = open(dir);
    let r = restored(boot);
    assert_eq!(r.snapshot.last_included_index, 0);
    assert_eq!(r.entries.len(), 5);
    assert_eq!(r.applied, 3);
    assert_eq!(get(&disk, "old"), Some("3".into()));
    assert_eq!(get(&disk, "new"), None);
    assert!(
        !disk.storage.snapshot_path(&new_meta()).exists(),
        "an orphaned snapshot file should be removed at start"
    );
}

fn assert_new(dir: &Path) {
    let (disk, boot) = open(dir);
    let r = restored(boot);
    assert_eq!(r.snapshot, new_meta());
    assert!(r.entries.is_empty());
    assert_eq!(r.applied, 20);
    assert_eq!(r.hard_state.current_term, 1);
    assert_eq!(get(&disk, "new"), Some("20".into()));
    assert_eq!(get(&disk, "old"), None);
    assert_eq!(disk.storage.interrupted_install(), None);
    assert_eq!(disk.storage.last_index(), 20);
}

#[test]
fn an_installed_snapshot_replaces_log_and_state_machine_and_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    old_state(tmp.path());
    {
        let (mut disk, _) = open(tmp.path());
        receive_new_snapshot(tmp.path());
        disk.install_snapshot(&new_meta()).unwrap();
        assert_eq!(disk.state_machine.applied_index(), 20);
        assert_eq!(get(&disk, "new"), Some("20".into()));
        // The core goes on from index 21.
        let hs = HardState {
            current_term: 4,
            voted_for: 0,
            commit_index: 20,
        };
        disk.storage
            .persist(Some(&hs), &[put(21, 4, "after", "21")], true)
            .unwrap();
        disk.state_machine
            .apply(&[put(21, 4, "after", "21")])
            .unwrap();
    }
    let (disk, boot) = open(tmp.path());
    let r = restored(boot);
    assert_eq!(r.snapshot, new_meta());
    assert_eq!(r.entries, vec![put(21, 4, "after", "21")]);
    assert_eq!(r.applied, 21);
    assert_eq!(get(&disk, "old"), None);
    assert_eq!(get(&disk, "after"), Some("21".into()));
}

fn versioned(value: &str, mod_index: Index) -> Versioned {
    Versioned {
        value: Bytes::from(value.to_string()),
        mod_index,
    }
}

/// A follower that already holds most of the snapshot's keys (the common
/// case: it fell behind, it was not wiped) writes only the difference; the
/// result must still be exactly the snapshot, in memory and after a restart.
#[test]
fn an_installation_over_a_similar_state_leaves_exactly_the_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut disk, _) = open(tmp.path());
    disk.storage.bootstrap(membership()).unwrap();
    let log = vec![
        put(1, 1, "same", "s"),
        put(2, 1, "changed", "before"),
        put(3, 1, "gone", "g"),
        put(4, 1, "moved", "m"),
    ];
    disk.storage.persist(None, &log, true).unwrap();
    disk.state_machine.apply(&log).unwrap();
    let mut data = crate::kv::KvMap::new();
    for (key, v) in [
        ("same", versioned("s", 1)),
        ("changed", versioned("after", 9)),
        ("moved", versioned("m", 12)),
        ("added", versioned("a", 15)),
    ] {
        data.insert(Bytes::from(key), v);
    }
    let image = SnapshotImage {
        applied_index: 20,
        data: data.clone(),
    };
    snapshot_file::write(&tmp.path().join("snapshots"), &new_meta(), &image).unwrap();
    disk.install_snapshot(&new_meta()).unwrap();
    assert_eq!(disk.state_machine.snapshot_image().data, data);
    drop(disk);
    // The tree, loaded afresh, holds the same: nothing stale, nothing lost.
    let (disk, boot) = open(tmp.path());
    assert_eq!(restored(boot).applied, 20);
    assert_eq!(disk.state_machine.snapshot_image().data, data);
}

#[test]
fn installing_needs_the_received_file() {
    let tmp = tempfile::tempdir().unwrap();
    old_state(tmp.path());
    let (mut disk, _) = open(tmp.path());
    let err = disk.install_snapshot(&new_meta()).unwrap_err();
    assert!(err.to_string().contains("20-4.snap"), "{err}");
    assert_eq!(disk.state_machine.applied_index(), 3);
    drop(disk);
    assert_old(tmp.path());
}

/// Runs as a child process of the crash test (and does nothing in a normal
/// test run): installs the snapshot and dies at the step the parent names.
#[test]
fn crash_child_installs_a_snapshot() {
    let Ok(dir) = std::env::var(CRASH_DIR_ENV) else {
        return;
    };
    let (mut disk, _) = open(Path::new(&dir));
    receive_new_snapshot(Path::new(&dir));
    disk.install_snapshot(&new_meta()).unwrap();
    std::process::exit(0);
}

#[test]
fn a_crash_at_any_step_of_an_installation_leaves_the_old_state_or_the_new_one() {
    // (step, whether the installation must be complete after a restart)
    let steps = [
        ("before-commit-point", false),
        ("after-commit-point", true),
        ("after-log-cleared", true),
        ("after-state-machine-replaced", true),
        ("after-replacement-synced", true),
        ("after-finish", true),
    ];
    let exe = std::env::current_exe().unwrap();
    for (step, complete) in steps {
        let tmp = tempfile::tempdir().unwrap();
        old_state(tmp.path());
        let status = Command::new(&exe)
            .args([
                "--exact",
                "disk::tests::crash_child_installs_a_snapshot",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CRASH_DIR_ENV, tmp.path())
            .env(CRASH_AT_ENV, step)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(CRASH_EXIT_CODE), "child at {step}");
        if complete {
            assert_new(tmp.path());
        } else {
            assert_old(tmp.path());
        }
        // Recovery is idempotent: a second restart finds the same state.
        if complete {
            assert_new(tmp.path());
        } else {
            assert_old(tmp.path());
        }
    }
}

#[test]
fn an_interrupted_installation_whose_file_is_gone_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    old_state(tmp.path());
    {
        let (mut disk, _) = open(tmp.path());
        receive_new_snapshot(tmp.path());
        disk.storage.begin_install(&new_meta()).unwrap();
    }
    std::fs::remove_file(tmp.path().join("snapshots/20-4.snap")).unwrap();
    let err = retry_while_locked(|| Disk::open(tmp.path(), &identity(1)))
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("installation of snapshot 20 (term 4) was interrupted"),
        "{msg}"
    );
    assert!(msg.contains("remove this member"), "{msg}");
}

#[test]
fn a_snapshot_taken_here_compacts_the_log_and_old_files_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    old_state(tmp.path());
    let snapshot_at = |disk: &mut Disk, index: Index| {
        let image = disk.state_machine.snapshot_image();
        assert_eq!(image.applied_index, index);
        let meta = SnapshotMeta {
            last_included_index: index,
            last_included_term: 1,
            membership: membership(),
        };
        // On a background thread in the server; the image is independent
        // of the state machine, which goes on applying.
        let dir = disk.storage.snapshot_dir();
        let file = std::thread::spawn(move || snapshot_file::write(&dir, &meta, &image))
            .join()
            .unwrap()
            .unwrap();
        disk.storage.compact(&file.meta).unwrap().run().unwrap();
    };
    {
        let (mut disk, _) = open(tmp.path());
        snapshot_at(&mut disk, 3);
        let more: Vec<_> = (6..=9).map(|i| put(i, 1, "old", &i.to_string())).collect();
        disk.storage.persist(None, &more, true).unwrap();
        disk.state_machine.apply(&entries(4..=5, 1)).unwrap();
        snapshot_at(&mut disk, 5);
        disk.state_machine.apply(&more[..2]).unwrap();
        snapshot_at(&mut disk, 7);
        let names: Vec<_> = snapshot_files::list(&disk.storage.snapshot_dir())
            .unwrap()
            .into_iter()
            .map(|(i, t, _)| (i, t))
            .collect();
        // The newest and the one before it.
        assert_eq!(names, vec![(5, 1), (7, 1)]);
    }
    let (disk, boot) = open(tmp.path());
    let r = restored(boot);
    assert_eq!(r.snapshot.last_included_index, 7);
    assert_eq!(
        r.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![8, 9]
    );
    assert_eq!(r.applied, 7);
    assert_eq!(get(&disk, "old"), Some("7".into()));
}

#[test]
fn a_missing_snapshot_file_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    old_state(tmp.path());
    {
        let (mut disk, _) = open(tmp.path());
        let image = disk.state_machine.snapshot_image();
        let meta = SnapshotMeta {
            last_included_index: 3,
            last_included_term: 1,
            membership: membership(),
        };
        let file = snapshot_file::write(&disk.storage.snapshot_dir(), &meta, &image).unwrap();
        disk.storage.compact(&meta).unwrap().run().unwrap();
        std::fs::remove_file(file.path).unwrap();
    }
    let msg = retry_while_locked(|| Disk::open(tmp.path(), &identity(1)))
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("the newest snapshot (3 of term 1) cannot be used"),
        "{msg}"
    );
}
