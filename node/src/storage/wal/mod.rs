//! The write-ahead log: the Raft log and the hard state, appended to
//! preallocated segment files, one `fdatasync` per batch.
//!
//! # Why not sled
//!
//! The log is written in order, read once at start and cut only at its ends;
//! it needs no B-tree. Through sled a durable append of one batch cost
//! 0.21 ms at p50 for one entry and 0.62 ms for 64 (inserts, sled's own
//! `sync_file_range` write-back, then our `fdatasync`; see
//! `storage/sync.rs`); appended to a pre-zeroed file, 0.14 ms and 0.13 ms
//! (see `segment.rs` for the measurement). sled keeps what is read and
//! written by key: the state machine, the snapshot metadata, the identity.
//!
//! # Layout
//!
//! `<data dir>/wal/<seq>.wal`, `seq` in hex, oldest first; each a stream of
//! records (`frame.rs`) followed by zeros. `next.tmp` is the next segment
//! while it is being prepared.
//!
//! Reading replays every segment in order:
//! - an entry with index `i` drops every entry at or after `i` read so far
//!   (a leader's log overrode a conflicting suffix, §5.3), then is appended;
//!   an index past the end + 1 is a gap, which is damage;
//! - the last hard state read is the hard state;
//! - a reset drops every entry read so far (a snapshot replaced the log, §7).
//!
//! Every segment starts with the hard state as it was when the segment was
//! started, so older segments can be removed without losing it. A segment is
//! removed once every entry in it is covered by a snapshot, never the newest.
//!
//! # Crashes
//!
//! Only the newest segment can end in a write that was not synced: before the
//! log moves to a new segment, the old one is synced. A torn record there
//! (see `frame.rs`) ends the log, and the rest of that segment is zeroed so a
//! later reader never mistakes old bytes for records. Nothing in it was
//! acknowledged: acknowledging waits for the sync. Anything else that fails
//! its checksum, anywhere, is damage: the data dir is refused.

mod frame;
mod segment;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use super::error::StorageError;
use super::sync::sync_dir;
use crate::raft::{Entry, HardState, Index};

pub use frame::Record;

/// The log's directory inside a data dir.
pub const WAL_DIR: &str = "wal";

/// A segment is left for a new one only past this much, so a batch larger
/// than a segment is written once into a new segment, which grows.
const ROTATE_AFTER: u64 = 4096;

/// What replaying the log found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The log with every override and reset applied: consecutive indexes
    /// and terms that never go down. Entries a snapshot covers are still in.
    pub entries: Vec<Entry>,
    /// The newest hard state, `None` if the log never held one.
    pub hard_state: Option<HardState>,
}

struct Segment {
    seq: u64,
    path: PathBuf,
    /// The highest entry index ever written to it (0: none).
    max_index: Index,
}

/// The log of one data dir. One owner appends; nothing is shared.
pub struct Wal {
    dir: PathBuf,
    /// Oldest first; the last is the one appended to.
    segments: Vec<Segment>,
    file: File,
    /// Where the written part of the current segment ends.
    offset: u64,
    /// The current segment's length on disk (its preallocated zeros).
    capacity: u64,
    /// The next segment, being prepared on its own thread.
    next: Option<JoinHandle<std::io::Result<File>>>,
    segment_bytes: u64,
    buf: Vec<u8>,
}

impl Wal {
    /// Opens the log of `data_dir` (creating it, empty, if there is none)
    /// and replays it.
    pub fn open(data_dir: &Path) -> Result<(Wal, Recovered), StorageError> {
        Wal::open_with(data_dir, segment::SEGMENT_BYTES)
    }

    /// Whether `data_dir` holds a log segment (read-only: nothing is created).
    pub fn exists(data_dir: &Path) -> bool {
        std::fs::read_dir(data_dir.join(WAL_DIR)).is_ok_and(|names| {
            names
                .filter_map(Result::ok)
                .any(|e| segment::parse_name(&e.file_name().to_string_lossy()).is_some())
        })
    }

    fn open_with(data_dir: &Path, segment_bytes: u64) -> Result<(Wal, Recovered), StorageError> {
        let dir = data_dir.join(WAL_DIR);
        let io = |what: &str, e| StorageError::io(data_dir, format!("{what} ({WAL_DIR}/)"), e);
        if !dir.exists() {
            std::fs::create_dir(&dir).map_err(|e| io("create the log directory", e))?;
            sync_dir(data_dir).map_err(|e| io("fsync the data dir", e))?;
        }
        let mut seqs = Vec::new();
        for item in std::fs::read_dir(&dir).map_err(|e| io("list the log", e))? {
            let item = item.map_err(|e| io("list the log", e))?;
            let name = item.file_name().to_string_lossy().into_owned();
            if let Some(seq) = segment::parse_name(&name) {
                seqs.push(seq);
            } else if name == segment::PREPARING {
                // A segment being prepared when the member stopped: unused.
                std::fs::remove_file(item.path())
                    .map_err(|e| io("remove an unused prepared segment", e))?;
            }
        }
        seqs.sort_unstable();
        if seqs.is_empty() {
            segment::prepare(&dir, segment_bytes, 0).map_err(|e| io("prepare a log segment", e))?;
            segment::install(&dir, 1).map_err(|e| io("create a log segment", e))?;
            seqs.push(1);
        }
        let mut recovered = Recovered::default();
        let mut segments = Vec::new();
        let mut end = 0;
        for (i, seq) in seqs.iter().enumerate() {
            let path = dir.join(segment::name(*seq));
            let map = map_segment(&path).map_err(|e| io("read a log segment", e))?;
            let data: &[u8] = map.as_deref().unwrap_or(&[]);
            let is_last = i + 1 == seqs.len();
            let (max_index, at) = replay(data_dir, &path, data, is_last, &mut recovered)?;
            if is_last {
                end = at;
                zero_tail(data_dir, &path, data, at)?;
            }
            drop(map);
            segments.push(Segment {
                seq: *seq,
                path,
                max_index,
            });
        }
        let current = segments.last().map(|s| s.path.clone()).unwrap_or_default();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&current)
            .map_err(|e| io("open the newest log segment", e))?;
        let capacity = file
            .metadata()
            .map_err(|e| io("read the newest log segment's size", e))?
            .len();
        let wal = Wal {
            dir,
            segments,
            file,
            offset: end as u64,
            capacity,
            next: None,
            segment_bytes,
            buf: Vec::new(),
        };
        Ok((wal, recovered))
    }

    /// Writes `hard_state` into the newest segment, durably. The newest
    /// segment must hold the hard state, because the older ones may all be
    /// removed by a compaction, and a crash right after a new segment was
    /// named, before its first record, leaves it without: the owner calls
    /// this once the log it opened has passed its checks.
    pub fn rewrite_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
        let mut head = Vec::new();
        frame::encode_hard_state(&mut head, hard_state);
        self.write(&head)?;
        self.sync()
    }

    /// Appends `entries` (which may override a suffix, see the module doc)
    /// and then `hard_state`, not synced: call [`Wal::sync`]. `current` is
    /// the hard state in force, written first into a new segment.
    pub fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        current: &HardState,
    ) -> Result<(), StorageError> {
        self.buf.clear();
        for e in entries {
            frame::encode_entry(&mut self.buf, e);
        }
        if let Some(hs) = hard_state {
            frame::encode_hard_state(&mut self.buf, hs);
        }
        // A batch never spans two segments; one too big for a segment that
        // holds little more than its head grows it instead.
        if self.offset + self.buf.len() as u64 > self.capacity && self.offset > ROTATE_AFTER {
            self.rotate(current, false)?;
        }
        let buf = std::mem::take(&mut self.buf);
        let written = self.write(&buf);
        self.buf = buf;
        written?;
        if let (Some(last), Some(seg)) = (
            entries.iter().map(|e| e.index).max(),
            self.segments.last_mut(),
        ) {
            seg.max_index = seg.max_index.max(last);
        }
        if self.next.is_none() && self.offset > self.capacity / 2 {
            let (dir, bytes) = (self.dir.clone(), self.segment_bytes);
            // If the thread cannot start, the next rotation prepares the
            // segment itself.
            self.next = std::thread::Builder::new()
                .name("wal-prepare".into())
                .spawn(move || segment::prepare(&dir, bytes, segment::BACKGROUND_RATE))
                .ok();
        }
        Ok(())
    }

    /// Makes every append so far durable.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.file
            .sync_data()
            .map_err(|e| self.io_error("fdatasync the newest log segment", e))
    }

    /// Drops the whole log, durably: a new segment starting with a reset and
    /// `hard_state`, then the old segments go. Idempotent.
    pub fn reset(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
        self.rotate(hard_state, true)?;
        self.sync()?;
        let old: Vec<_> = self.segments.drain(..self.segments.len() - 1).collect();
        for s in &old {
            remove_segment(&s.path).map_err(|e| self.io_error("remove an old log segment", e))?;
        }
        sync_dir(&self.dir).map_err(|e| self.io_error("fsync the log directory", e))
    }

    /// Forgets the segments (oldest first, never the newest) whose entries
    /// are all at or below `index`, and returns their paths for the caller
    /// to remove (see [`super::LogTrim`]).
    pub fn release_up_to(&mut self, index: Index) -> Vec<PathBuf> {
        let mut out = Vec::new();
        while self.segments.len() > 1 && self.segments[0].max_index <= index {
            out.push(self.segments.remove(0).path);
        }
        out
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many segment files the log has.
    #[cfg(test)]
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), StorageError> {
        self.file
            .write_all_at(buf, self.offset)
            .map_err(|e| self.io_error("append to the log", e))?;
        self.offset += buf.len() as u64;
        self.capacity = self.capacity.max(self.offset);
        Ok(())
    }

    /// Moves to a new segment: the current one is synced first (only the
    /// newest may end in an unsynced write), the prepared one is named, and
    /// it starts with the hard state (after a reset, when `reset`).
    fn rotate(&mut self, hard_state: &HardState, reset: bool) -> Result<(), StorageError> {
        self.sync()?;
        let prepared = match self.next.take() {
            Some(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the preparing thread panicked"))),
            None => segment::prepare(&self.dir, self.segment_bytes, 0),
        };
        let file = prepared.map_err(|e| self.io_error("prepare a log segment", e))?;
        let seq = self.segments.last().map_or(1, |s| s.seq + 1);
        let path = segment::install(&self.dir, seq)
            .map_err(|e| self.io_error("name a new log segment", e))?;
        self.capacity = file
            .metadata()
            .map_err(|e| self.io_error("read a new log segment's size", e))?
            .len();
        self.file = file;
        self.offset = 0;
        self.segments.push(Segment {
            seq,
            path,
            max_index: 0,
        });
        let mut head = Vec::new();
        if reset {
            frame::encode_reset(&mut head);
        }
        frame::encode_hard_state(&mut head, hard_state);
        self.write(&head)
    }

    fn io_error(&self, what: &str, e: std::io::Error) -> StorageError {
        let data_dir = self.dir.parent().unwrap_or(&self.dir);
        StorageError::io(data_dir, format!("{what} ({WAL_DIR}/)"), e)
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // A preparing thread left running could still be writing zeros into
        // next.tmp after another `open` of this dir has named it a segment.
        if let Some(handle) = self.next.take() {
            let _ = handle.join();
        }
    }
}

/// A segment's bytes, mapped rather than read: read into the heap, the 8 MiB
/// stayed in the allocator's arena for good and an idle member grew from
/// about 15 to 21 MiB resident; mapped pages go with the mapping.
fn map_segment(path: &Path) -> std::io::Result<Option<memmap2::Mmap>> {
    let file = File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: the map is read while nothing writes the file: only this
    // member writes its log, after `open` has returned (sled's lock on the
    // data dir keeps a second member process out).
    unsafe { memmap2::Mmap::map(&file) }.map(Some)
}

/// Removes a segment file; one already gone is fine.
pub fn remove_segment(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Replays one segment into `into`; returns the highest entry index in it and
/// where its written part ends.
fn replay(
    data_dir: &Path,
    path: &Path,
    data: &[u8],
    is_last: bool,
    into: &mut Recovered,
) -> Result<(Index, usize), StorageError> {
    let mut pos = 0;
    let mut max_index = 0;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    loop {
        match frame::read_at(data, pos) {
            frame::Found::End => return Ok((max_index, pos)),
            frame::Found::Bad { why, torn } => {
                let after = match into.entries.last() {
                    Some(e) => format!("log entry {}", e.index),
                    None => "the start of the log".into(),
                };
                if torn && is_last {
                    tracing::warn!(
                        segment = %name,
                        offset = pos,
                        after = %after,
                        "the log ends in a write that a crash cut off; it was never acknowledged and is dropped"
                    );
                    return Ok((max_index, pos));
                }
                return Err(StorageError::corrupt(
                    data_dir,
                    format!("the record after {after} ({WAL_DIR}/{name}, offset {pos}): {why}"),
                ));
            }
            frame::Found::Record(record, next) => {
                match record {
                    Record::Entry(e) => {
                        max_index = max_index.max(e.index);
                        push_entry(data_dir, &mut into.entries, e)?;
                    }
                    Record::HardState(hs) => into.hard_state = Some(hs),
                    Record::Reset => into.entries.clear(),
                }
                pos = next;
            }
        }
    }
}

/// Appends `e` to the replayed log, dropping the suffix it overrides.
fn push_entry(data_dir: &Path, log: &mut Vec<Entry>, e: Entry) -> Result<(), StorageError> {
    if let (Some(first), Some(last)) = (log.first().map(|f| f.index), log.last().map(|l| l.index)) {
        if e.index > last + 1 {
            return Err(StorageError::corrupt(
                data_dir,
                format!("the log has a gap: entry {} follows entry {last}", e.index),
            ));
        }
        let keep = e.index.saturating_sub(first) as usize;
        log.truncate(keep);
    }
    if let Some(prev) = log.last()
        && e.term < prev.term
    {
        return Err(StorageError::corrupt(
            data_dir,
            format!(
                "log entry {} has term {}, below term {} of the entry before it",
                e.index, e.term, prev.term
            ),
        ));
    }
    log.push(e);
    Ok(())
}

/// Zeros the newest segment after its written part if anything is there (a
/// torn write's remains), so no later reader takes it for records.
fn zero_tail(data_dir: &Path, path: &Path, data: &[u8], end: usize) -> Result<(), StorageError> {
    let Some(first) = data[end..].iter().position(|b| *b != 0) else {
        return Ok(());
    };
    let io = |e| {
        StorageError::io(
            data_dir,
            format!("zero the cut-off end of {}", path.display()),
            e,
        )
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io)?;
    let from = end + first;
    file.write_all_at(&vec![0u8; data.len() - from], from as u64)
        .map_err(io)?;
    file.sync_data().map_err(io)
}

#[cfg(test)]
mod tests;
