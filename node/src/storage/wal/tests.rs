use bytes::Bytes;

use super::*;

const SMALL: u64 = 64 << 10;

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range
        .map(|i| Entry::normal(term, i, Bytes::from(format!("value {i} of term {term}"))))
        .collect()
}

fn hs(term: u64, commit: u64) -> HardState {
    HardState {
        current_term: term,
        voted_for: 1,
        commit_index: commit,
    }
}

fn open(dir: &Path) -> (Wal, Recovered) {
    Wal::open_with(dir, SMALL).unwrap()
}

fn indexes(r: &Recovered) -> Vec<(u64, u64)> {
    r.entries.iter().map(|e| (e.index, e.term)).collect()
}

#[test]
fn appends_and_the_hard_state_survive_a_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut wal, r) = open(tmp.path());
        assert!(r.entries.is_empty() && r.hard_state.is_none());
        wal.append(&entries(1..=3, 1), Some(&hs(1, 0)), &HardState::default())
            .unwrap();
        wal.append(&entries(4..=5, 1), Some(&hs(1, 3)), &hs(1, 0))
            .unwrap();
        wal.sync().unwrap();
    }
    let (_, r) = open(tmp.path());
    assert_eq!(r.entries, entries(1..=5, 1));
    assert_eq!(r.hard_state, Some(hs(1, 3)));
}

#[test]
fn a_new_leaders_entries_override_the_conflicting_suffix() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = open(tmp.path());
        wal.append(&entries(1..=6, 1), None, &HardState::default())
            .unwrap();
        wal.append(&entries(4..=4, 2), None, &HardState::default())
            .unwrap();
        wal.sync().unwrap();
    }
    let (_, r) = open(tmp.path());
    assert_eq!(indexes(&r), vec![(1, 1), (2, 1), (3, 1), (4, 2)]);
}

#[test]
fn the_log_moves_to_new_segments_and_compaction_releases_only_covered_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(tmp.path());
    for i in 1..=2000 {
        let e = Entry::normal(1, i, Bytes::from(vec![7u8; 100]));
        wal.append(&[e], Some(&hs(1, i - 1)), &hs(1, i.saturating_sub(2)))
            .unwrap();
    }
    wal.sync().unwrap();
    let count = wal.segment_count();
    assert!(
        count >= 3,
        "2000 entries of 100 bytes in 64 KiB segments: {count}"
    );
    let released = wal.release_up_to(1000);
    assert!(!released.is_empty());
    for p in &released {
        remove_segment(p).unwrap();
    }
    assert!(wal.segment_count() < count);
    drop(wal);
    let (_, r) = open(tmp.path());
    let first = r.entries.first().unwrap().index;
    assert!(first > 1 && first <= 1001, "first entry left: {first}");
    assert_eq!(r.entries.last().unwrap().index, 2000);
    // The hard state survived the removal of the segments that held it.
    assert_eq!(r.hard_state, Some(hs(1, 1999)));
    // Never the newest, even if everything is covered.
    let (mut wal, _) = open(tmp.path());
    wal.release_up_to(u64::MAX);
    assert_eq!(wal.segment_count(), 1);
}

#[test]
fn a_reset_drops_the_log_and_keeps_the_hard_state() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = open(tmp.path());
        wal.append(&entries(1..=5, 1), Some(&hs(3, 2)), &HardState::default())
            .unwrap();
        wal.reset(&hs(3, 2)).unwrap();
        assert_eq!(wal.segment_count(), 1);
        wal.append(&entries(101..=102, 3), None, &hs(3, 2)).unwrap();
        wal.sync().unwrap();
    }
    let (_, r) = open(tmp.path());
    assert_eq!(indexes(&r), vec![(101, 3), (102, 3)]);
    assert_eq!(r.hard_state, Some(hs(3, 2)));
}

fn only_segment(dir: &Path) -> PathBuf {
    let mut names: Vec<_> = std::fs::read_dir(dir.join(WAL_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names.pop().unwrap()
}

#[test]
fn a_torn_last_write_ends_the_log_and_its_remains_are_zeroed() {
    let tmp = tempfile::tempdir().unwrap();
    let torn_at;
    {
        let (mut wal, _) = open(tmp.path());
        wal.append(&entries(1..=3, 1), None, &HardState::default())
            .unwrap();
        wal.sync().unwrap();
        torn_at = wal.offset as usize;
        let big = Entry::normal(1, 4, Bytes::from(vec![9u8; 3000]));
        wal.append(&[big], None, &HardState::default()).unwrap();
        wal.sync().unwrap();
    }
    // The crash reached the disk with the record's first sector and not the
    // next one.
    let path = only_segment(tmp.path());
    let mut data = std::fs::read(&path).unwrap();
    let sector = (torn_at / 512 + 1) * 512;
    data[sector..sector + 512].fill(0);
    std::fs::write(&path, &data).unwrap();

    let (mut wal, r) = open(tmp.path());
    assert_eq!(r.entries, entries(1..=3, 1));
    let data = std::fs::read(&path).unwrap();
    assert!(data[torn_at..].iter().all(|b| *b == 0), "remains zeroed");
    // The log goes on from there.
    wal.append(&entries(4..=4, 2), None, &HardState::default())
        .unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, r) = open(tmp.path());
    assert_eq!(r.entries.last().map(|e| (e.index, e.term)), Some((4, 2)));
}

#[test]
fn a_flipped_byte_is_refused_and_nothing_is_changed() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = open(tmp.path());
        wal.append(&entries(1..=5, 1), None, &HardState::default())
            .unwrap();
        wal.sync().unwrap();
    }
    let path = only_segment(tmp.path());
    let mut data = std::fs::read(&path).unwrap();
    // Inside entry 3's value ("value 3 of term 1").
    let at = data.windows(7).position(|w| w == b"value 3").unwrap();
    data[at + 2] ^= 0x20;
    std::fs::write(&path, &data).unwrap();
    let err = Wal::open_with(tmp.path(), SMALL).err().unwrap().to_string();
    assert!(err.contains("the record after log entry 2"), "{err}");
    assert!(err.contains("checksum"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), data, "left as it was");
}

#[test]
fn damage_in_an_older_segment_is_refused_even_if_it_looks_torn() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = open(tmp.path());
        for i in 1..=1000 {
            let e = Entry::normal(1, i, Bytes::from(vec![7u8; 200]));
            wal.append(&[e], None, &HardState::default()).unwrap();
        }
        wal.sync().unwrap();
        assert!(wal.segment_count() > 1);
    }
    let mut names: Vec<_> = std::fs::read_dir(tmp.path().join(WAL_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let mut data = std::fs::read(&names[0]).unwrap();
    data[1024..1536].fill(0);
    std::fs::write(&names[0], &data).unwrap();
    let err = Wal::open_with(tmp.path(), SMALL).err().unwrap().to_string();
    assert!(err.contains("0000000000000001.wal"), "{err}");
}

#[test]
fn a_gap_or_a_falling_term_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = open(tmp.path());
        wal.append(&entries(1..=2, 1), None, &HardState::default())
            .unwrap();
        wal.append(&entries(4..=4, 1), None, &HardState::default())
            .unwrap();
        wal.sync().unwrap();
    }
    let err = Wal::open_with(tmp.path(), SMALL).err().unwrap().to_string();
    assert!(
        err.contains("the log has a gap: entry 4 follows entry 2"),
        "{err}"
    );

    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = open(tmp.path());
        wal.append(&entries(1..=2, 2), None, &HardState::default())
            .unwrap();
        wal.append(&entries(3..=3, 1), None, &HardState::default())
            .unwrap();
        wal.sync().unwrap();
    }
    let err = Wal::open_with(tmp.path(), SMALL).err().unwrap().to_string();
    assert!(
        err.contains("log entry 3 has term 1, below term 2"),
        "{err}"
    );
}

#[test]
fn a_segment_left_half_prepared_is_discarded() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = open(tmp.path());
        wal.append(&entries(1..=2, 1), None, &HardState::default())
            .unwrap();
        wal.sync().unwrap();
    }
    let prepared = tmp.path().join(WAL_DIR).join(segment::PREPARING);
    std::fs::write(&prepared, b"half").unwrap();
    let (_, r) = open(tmp.path());
    assert_eq!(r.entries.len(), 2);
    assert!(!prepared.exists());
}

#[test]
fn the_hard_state_survives_a_crash_between_naming_a_segment_and_writing_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = open(tmp.path());
        wal.append(&entries(1..=3, 1), Some(&hs(5, 3)), &HardState::default())
            .unwrap();
        wal.sync().unwrap();
    }
    // The crash: the next segment was named, nothing written to it.
    let wal_dir = tmp.path().join(WAL_DIR);
    segment::prepare(&wal_dir, SMALL, 0).unwrap();
    segment::install(&wal_dir, 2).unwrap();
    {
        let (mut wal, r) = open(tmp.path());
        assert_eq!(r.hard_state, Some(hs(5, 3)));
        // What `Storage::open` does once the log passed its checks.
        wal.rewrite_hard_state(&hs(5, 3)).unwrap();
        wal.append(&entries(4..=4, 5), None, &hs(5, 3)).unwrap();
        wal.sync().unwrap();
        // A snapshot covers everything in the first segment.
        for p in wal.release_up_to(3) {
            remove_segment(&p).unwrap();
        }
        assert_eq!(wal.segment_count(), 1);
    }
    let (_, r) = open(tmp.path());
    assert_eq!(
        r.hard_state,
        Some(hs(5, 3)),
        "the term and vote are not lost"
    );
    assert_eq!(indexes(&r), vec![(4, 5)]);
}

#[test]
fn a_batch_larger_than_a_segment_grows_one_and_the_log_goes_on_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let big: Vec<Entry> = (1..=3)
        .map(|i| Entry::normal(1, i, Bytes::from(vec![3u8; 40 << 10])))
        .collect();
    {
        let (mut wal, _) = open(tmp.path());
        wal.append(&[], Some(&hs(1, 0)), &HardState::default())
            .unwrap();
        wal.append(&big, None, &hs(1, 0)).unwrap();
        wal.append(&entries(4..=5, 1), None, &hs(1, 0)).unwrap();
        wal.sync().unwrap();
        assert_eq!(wal.segment_count(), 2, "the grown one, then a new one");
    }
    let (_, r) = open(tmp.path());
    assert_eq!(r.entries.len(), 5);
    assert_eq!(r.entries[..3], big[..]);
}
