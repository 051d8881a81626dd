//! The state machine: what commands do, exactly once, across restarts; and
//! snapshot files, whole and damaged, on disk and in transit.

use std::path::Path;

use bytes::Bytes;
use kuberaft_proto::kv as pb;
use kuberaft_proto::kv::command::Op;

use super::snapshot_file;
use super::transfer::{SnapshotChunks, SnapshotReceiver};
use super::*;
use crate::raft::{ConfChange, SnapshotMeta};
use crate::storage::tests::{identity, membership, retry_while_locked, storage_open};

fn put(key: &str, value: &str) -> Bytes {
    command::encode(Op::Put(pb::PutRequest {
        key: key.into(),
        value: value.into(),
    }))
}

fn delete(key: &str) -> Bytes {
    command::encode(Op::Delete(pb::DeleteRequest { key: key.into() }))
}

fn cas(key: &str, expected: Option<&str>, new: &str) -> Bytes {
    command::encode(Op::CompareAndSwap(pb::CompareAndSwapRequest {
        key: key.into(),
        expected_value: expected.map(Into::into),
        new_value: new.into(),
    }))
}

fn entry(index: Index, data: Bytes) -> Entry {
    Entry::normal(1, index, data)
}

/// A bootstrapped data dir and its state machine.
fn open(dir: &Path) -> (Storage, StateMachine) {
    let mut storage = storage_open(dir, &identity(1)).unwrap();
    if storage.snapshot_meta().is_none() {
        storage.bootstrap(membership()).unwrap();
    }
    let sm = StateMachine::open(&storage).unwrap();
    (storage, sm)
}

fn value(sm: &StateMachine, key: &str) -> Option<(String, Index)> {
    sm.get(key.as_bytes())
        .map(|v| (String::from_utf8(v.value.to_vec()).unwrap(), v.mod_index))
}

/// Entries 1..=7: puts, a no-op, a conf change, a delete and two CAS.
fn history() -> Vec<Entry> {
    vec![
        entry(1, Bytes::new()), // the leader's no-op
        entry(2, put("a", "1")),
        entry(3, put("b", "2")),
        Entry {
            term: 1,
            index: 4,
            kind: EntryKind::ConfChange(ConfChange::RemoveMember { id: 3 }),
            data: Bytes::new(),
        },
        entry(5, delete("b")),
        entry(6, cas("a", Some("1"), "10")),
        entry(7, cas("c", Some("x"), "y")),
    ]
}

#[test]
fn commands_answer_and_record_their_mod_index() {
    let tmp = tempfile::tempdir().unwrap();
    let (_storage, mut sm) = open(tmp.path());
    let results = sm.apply(&history()).unwrap();
    assert_eq!(
        results,
        vec![
            (2, ApplyResult::Put),
            (3, ApplyResult::Put),
            (5, ApplyResult::Delete { existed: true }),
            (
                6,
                ApplyResult::CompareAndSwap {
                    succeeded: true,
                    current_value: Some(Bytes::from_static(b"1"))
                }
            ),
            (
                7,
                ApplyResult::CompareAndSwap {
                    succeeded: false,
                    current_value: None
                }
            ),
        ]
    );
    assert_eq!(sm.applied_index(), 7);
    assert_eq!(value(&sm, "a"), Some(("10".into(), 6)));
    assert_eq!(value(&sm, "b"), None);
    assert_eq!(
        sm.apply(&[entry(8, delete("b")), entry(9, cas("c", None, "new"))])
            .unwrap(),
        vec![
            (8, ApplyResult::Delete { existed: false }),
            (
                9,
                ApplyResult::CompareAndSwap {
                    succeeded: true,
                    current_value: None
                }
            )
        ]
    );
    assert_eq!(value(&sm, "c"), Some(("new".into(), 9)));
}

#[test]
fn an_undecodable_command_is_answered_as_invalid_and_still_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let (_storage, mut sm) = open(tmp.path());
    let results = sm
        .apply(&[entry(1, Bytes::from_static(b"\xff\xff\xff"))])
        .unwrap();
    assert!(matches!(results[0], (1, ApplyResult::Invalid { .. })));
    assert_eq!(sm.applied_index(), 1);
}

#[test]
fn applying_again_what_is_already_applied_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let once = {
        let (_s, mut sm) = open(tempfile::tempdir().unwrap().path());
        sm.apply(&history()).unwrap();
        sm.snapshot_image().data
    };
    {
        let (_storage, mut sm) = open(tmp.path());
        sm.apply(&history()[..4]).unwrap();
        // Entries 2..=4 come again (as after a restart), then 5..=7.
        let results = sm.apply(&history()[1..]).unwrap();
        let indexes: Vec<_> = results.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, vec![5, 6, 7]);
        assert_eq!(sm.snapshot_image().data, once);
    }
    // After a restart the whole history again is a no-op.
    let (_storage, mut sm) = open(tmp.path());
    assert_eq!(sm.applied_index(), 7);
    assert!(sm.apply(&history()).unwrap().is_empty());
    assert_eq!(sm.snapshot_image().data, once);
    assert_eq!(value(&sm, "a"), Some(("10".into(), 6)));
}

#[test]
fn an_entry_after_a_gap_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (_storage, mut sm) = open(tmp.path());
    sm.apply(&history()[..2]).unwrap();
    let err = sm.apply(&[entry(5, put("z", "1"))]).unwrap_err();
    assert!(err.to_string().contains("applied up to 2"), "{err}");
    assert_eq!(sm.applied_index(), 2);
    assert_eq!(sm.get(b"z"), None);
    // A gap inside a batch: the entries before it are not applied either.
    let err = sm
        .apply(&[entry(3, put("y", "1")), entry(5, put("z", "1"))])
        .unwrap_err();
    assert!(err.to_string().contains("applied up to 3"), "{err}");
    assert_eq!(sm.applied_index(), 2);
    assert_eq!(sm.get(b"y"), None);
}

#[test]
fn a_restart_recovers_the_data_and_the_applied_index() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (_storage, mut sm) = open(tmp.path());
        sm.apply(&history()).unwrap();
    }
    let (_storage, sm) = open(tmp.path());
    assert_eq!(sm.applied_index(), 7);
    assert_eq!(value(&sm, "a"), Some(("10".into(), 6)));
    assert_eq!(sm.len(), 1);
}

#[test]
fn a_damaged_value_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (_storage, mut sm) = open(tmp.path());
        sm.apply(&history()).unwrap();
    }
    {
        let db = retry_while_locked(|| sled::Config::new().path(tmp.path()).open()).unwrap();
        let t = db.open_tree("kv").unwrap();
        let k = tree::data_key(b"a");
        let mut v = t.get(&k).unwrap().unwrap().to_vec();
        v[5] ^= 1;
        t.insert(k, v).unwrap();
        db.flush().unwrap();
    }
    let storage = storage_open(tmp.path(), &identity(1)).unwrap();
    let err = StateMachine::open(&storage).err().unwrap();
    assert!(err.to_string().contains("key \"a\" is damaged"), "{err}");
}

#[test]
fn scans_page_through_a_prefix_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (_storage, mut sm) = open(tmp.path());
    let keys = ["app/1", "app/2", "app/3", "apple", "b"];
    let entries: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| entry(i as u64 + 1, put(k, "v")))
        .collect();
    sm.apply(&entries).unwrap();
    let names = |page: &ScanPage| -> Vec<String> {
        page.kvs
            .iter()
            .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
            .collect()
    };
    let first = sm.scan(b"app/", b"", 2);
    assert_eq!(names(&first), vec!["app/1", "app/2"]);
    assert!(first.more);
    let second = sm.scan(b"app/", b"app/2", 2);
    assert_eq!(names(&second), vec!["app/3"]);
    assert!(!second.more);
    assert_eq!(names(&sm.scan(b"", b"apple", 10)), vec!["b"]);
    assert_eq!(sm.scan(b"zzz", b"", 10).kvs, vec![]);
    assert_eq!(names(&sm.scan(b"app", b"", 10)).len(), 4);
}

fn meta(index: Index) -> SnapshotMeta {
    SnapshotMeta {
        last_included_index: index,
        last_included_term: 1,
        membership: membership(),
    }
}

/// A state machine at index 9 and its snapshot file.
fn written_snapshot(dir: &Path) -> (SnapshotImage, snapshot_file::SnapshotFile) {
    let (storage, mut sm) = open(dir);
    sm.apply(&history()).unwrap();
    sm.apply(&[
        entry(8, put("bin\0ary", "\u{1F980}")),
        entry(9, put("e", "")),
    ])
    .unwrap();
    let image = sm.snapshot_image();
    let file = snapshot_file::write(&storage.snapshot_dir(), &meta(9), &image).unwrap();
    (image, file)
}

#[test]
fn a_snapshot_file_reads_back_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, file) = written_snapshot(tmp.path());
    assert!(file.path.ends_with("snapshots/9-1.snap"), "{file:?}");
    assert_eq!(std::fs::metadata(&file.path).unwrap().len(), file.size);
    let (read, back) = snapshot_file::read(&file.path).unwrap();
    assert_eq!(read, file);
    assert_eq!(back.applied_index, 9);
    assert_eq!(back.data, image.data);
    assert_eq!(snapshot_file::read_head(&file.path).unwrap(), file);
    // Only the final name exists: the temporary one was renamed.
    let names: Vec<_> = std::fs::read_dir(file.path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["9-1.snap"]);
}

#[test]
fn a_snapshot_whose_metadata_and_image_disagree_is_not_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (storage, sm) = open(tmp.path());
    assert!(snapshot_file::write(&storage.snapshot_dir(), &meta(3), &sm.snapshot_image()).is_err());
}

#[test]
fn a_damaged_or_truncated_snapshot_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, file) = written_snapshot(tmp.path());
    let good = std::fs::read(&file.path).unwrap();
    for at in [0, 20, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x04;
        std::fs::write(&file.path, &bad).unwrap();
        assert!(snapshot_file::verify(&file.path).is_err(), "flip at {at}");
    }
    for len in [0, 10, good.len() / 2, good.len() - 1] {
        std::fs::write(&file.path, &good[..len]).unwrap();
        let err = snapshot_file::verify(&file.path).unwrap_err();
        assert!(matches!(err, StorageError::BadSnapshot { .. }), "{err}");
    }
    let mut longer = good.clone();
    longer.push(0);
    std::fs::write(&file.path, &longer).unwrap();
    assert!(snapshot_file::verify(&file.path).is_err());
}

#[test]
fn a_snapshot_streamed_in_chunks_arrives_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, file) = written_snapshot(tmp.path());
    let receiver_dir = tempfile::tempdir().unwrap();
    let chunks = SnapshotChunks::open(&file.path, 7).unwrap();
    assert_eq!(chunks.file(), &file);
    let mut rx =
        SnapshotReceiver::begin(receiver_dir.path(), &file.meta, file.size, file.crc32).unwrap();
    let mut n = 0;
    for chunk in chunks {
        let chunk = chunk.unwrap();
        assert_eq!(
            chunk.done,
            chunk.offset + chunk.data.len() as u64 == file.size
        );
        rx.write(chunk.offset, &chunk.data).unwrap();
        n += 1;
    }
    assert_eq!(n, file.size.div_ceil(7));
    let received = rx.finish().unwrap();
    assert_eq!(received.path, receiver_dir.path().join("9-1.snap"));
    assert_eq!(received.crc32, file.crc32);
    assert_eq!(
        snapshot_file::read(&received.path).unwrap().1.data,
        image.data
    );
}

#[test]
fn a_broken_transfer_is_refused_and_leaves_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, file) = written_snapshot(tmp.path());
    let bytes = std::fs::read(&file.path).unwrap();
    let rx_dir = tempfile::tempdir().unwrap();
    let empty = |dir: &Path| std::fs::read_dir(dir).unwrap().next().is_none();

    // Out of order.
    let mut rx = SnapshotReceiver::begin(rx_dir.path(), &file.meta, file.size, file.crc32).unwrap();
    assert!(rx.write(5, &bytes[5..]).is_err());
    drop(rx);
    assert!(empty(rx_dir.path()));

    // Cut short.
    let mut rx = SnapshotReceiver::begin(rx_dir.path(), &file.meta, file.size, file.crc32).unwrap();
    rx.write(0, &bytes[..10]).unwrap();
    assert!(rx.finish().is_err());
    assert!(empty(rx_dir.path()));

    // Damaged on the way.
    let mut rx = SnapshotReceiver::begin(rx_dir.path(), &file.meta, file.size, file.crc32).unwrap();
    let mut damaged = bytes.clone();
    damaged[30] ^= 1;
    rx.write(0, &damaged).unwrap();
    assert!(rx.finish().is_err());
    assert!(empty(rx_dir.path()));

    // Announced as another snapshot.
    let mut rx = SnapshotReceiver::begin(rx_dir.path(), &meta(8), file.size, file.crc32).unwrap();
    rx.write(0, &bytes).unwrap();
    let err = rx.finish().unwrap_err();
    assert!(err.to_string().contains("not the announced 8"), "{err}");
    assert!(empty(rx_dir.path()));

    // Overrunning the announced size.
    let mut rx = SnapshotReceiver::begin(rx_dir.path(), &file.meta, 4, file.crc32).unwrap();
    assert!(rx.write(0, &bytes).is_err());
}

#[test]
fn staged_writes_reach_sled_in_one_batch_when_enough_has_gathered() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (_storage, mut sm) = open(tmp.path());
        let (_, unwritten) = sm.apply_in_memory(&history()).unwrap();
        sm.write(unwritten).unwrap();
        assert_eq!(sm.applied_index(), 7);
        // Dropped without a flush: as after a crash.
    }
    {
        let (_storage, mut sm) = open(tmp.path());
        // Nothing reached sled: the entries are applied again from the log,
        // with the same results.
        assert_eq!(sm.applied_index(), 0);
        assert_eq!(value(&sm, "a"), None);
        let (_, unwritten) = sm.apply_in_memory(&history()).unwrap();
        sm.write(unwritten).unwrap();
        // Many writes of one key gather into one change, then are written
        // once enough entries have gathered.
        let mut index = 7;
        while index < FLUSH_ENTRIES {
            index += 1;
            let (_, unwritten) = sm
                .apply_in_memory(&[entry(index, put("a", &index.to_string()))])
                .unwrap();
            assert!(sm.staged.changes.len() <= 2, "one change per key");
            sm.write(unwritten).unwrap();
        }
        assert!(sm.staged.is_empty(), "written when due");
    }
    let (_storage, sm) = open(tmp.path());
    let last = FLUSH_ENTRIES;
    assert_eq!(sm.applied_index(), last);
    assert_eq!(value(&sm, "a"), Some((last.to_string(), last)));
    assert_eq!(value(&sm, "b"), None);
}
