//! Making sled's writes durable for real.
//!
//! # Why `sled::Db::flush` is not enough
//!
//! sled 0.34 documents `flush()` as "flushes all dirty IO buffers and calls
//! fsync", but on Linux it writes its log with `sync_file_range(2)`
//! (`pagecache/iobuf.rs`), which starts and waits for write-back of the page
//! cache but neither flushes the disk's volatile write cache nor persists the
//! file's metadata (its size, when the log grew): the man page says it gives
//! no durability guarantee. sled's flusher thread calls a real `fsync` only
//! every `flush_every_ms`. So after `flush()` we `fdatasync` the data file
//! `<dir>/db` ourselves, through a second handle opened at start (sled does
//! not expose its own; Linux syncs the file, not the descriptor).
//!
//! # Where sled puts large values, and how they are made durable
//!
//! sled does not always write a value into `<dir>/db`. When one log message
//! (a page fragment, or a whole page when a tree node is consolidated or
//! split) is larger than `segment_size / 4 - 20` bytes — 131,052 bytes with
//! the default 512 KiB segments (`pagecache/logger.rs`, `reserve_inner`) — it
//! writes the message to its own file `<dir>/blobs/<lsn>`
//! (`pagecache/blob_io.rs`, `write_blob`) and logs only a pointer to it.
//! `write_blob` creates the file, writes it, and never syncs it or its
//! directory; nothing else does either. A crash can therefore keep the pointer
//! (in the synced log) and lose the blob, and sled then fails to read the
//! page.
//!
//! Values cannot be kept small enough to avoid this: a client value may be
//! 1 MiB (kv.proto), a log entry carries it, and even small values become a
//! blob when a leaf node of up to 17 of them is rewritten as one page larger
//! than the threshold. So every sync also fsyncs each blob file it has not
//! synced before, then the `blobs` directory (so the new names survive),
//! before the data file. The blob is written while the value is inserted
//! (before `insert` returns), so by the time we sync, every blob that the
//! log points to exists. Blobs sled deletes need no sync: a deletion that is
//! lost leaves a garbage file, which sled removes at its next recovery
//! (`gc_blobs`) or leaves unused.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::error::StorageError;
use crate::rate::RateLimit;

/// The files of sled's store that a sync must reach, held open so a sync costs
/// no `open` of the data file.
pub struct SledFiles {
    dir: PathBuf,
    /// A second handle on `<dir>/db`; fdatasync through it syncs sled's log.
    db_file: File,
    blobs_dir: PathBuf,
    /// The blob files (named by their log sequence number) known to be synced.
    synced_blobs: BTreeSet<u64>,
}

impl SledFiles {
    /// Opens the handles, after sled has opened (and so created) its files.
    pub fn open(dir: &Path) -> Result<SledFiles, StorageError> {
        let db_path = dir.join("db");
        // Read-only is enough: fsync(2) and fdatasync(2) work on any
        // descriptor of the file, and we never write through this one.
        let db_file = File::open(&db_path)
            .map_err(|e| StorageError::io(dir, format!("open {}", db_path.display()), e))?;
        Ok(SledFiles {
            dir: dir.to_owned(),
            db_file,
            blobs_dir: dir.join("blobs"),
            synced_blobs: BTreeSet::new(),
        })
    }

    /// Makes everything written to `db` so far durable: sled's buffers, its
    /// blobs and its log. One call per batch of writes (group commit).
    pub fn sync(&mut self, db: &sled::Db) -> Result<(), StorageError> {
        db.flush()
            .map_err(|e| StorageError::sled(&self.dir, "flush its buffers", e))?;
        self.sync_new_blobs()?;
        self.db_file
            .sync_data()
            .map_err(|e| StorageError::io(&self.dir, "fdatasync db", e))
    }

    /// Fsyncs the blob files not synced yet, then their directory.
    fn sync_new_blobs(&mut self) -> Result<(), StorageError> {
        let entries = std::fs::read_dir(&self.blobs_dir)
            .map_err(|e| StorageError::io(&self.dir, "list blobs", e))?;
        let mut present = BTreeSet::new();
        let mut fresh = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io(&self.dir, "list blobs", e))?;
            // sled names blobs by their LSN; it ignores (and so do we) any
            // other file someone left there.
            let Some(lsn) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            present.insert(lsn);
            if !self.synced_blobs.contains(&lsn) {
                fresh.push((lsn, entry.path()));
            }
        }
        for (_, path) in &fresh {
            match File::open(path) {
                Ok(f) => f.sync_data().map_err(|e| {
                    StorageError::io(&self.dir, format!("fdatasync {}", path.display()), e)
                })?,
                // sled removed it between our listing and now: it is garbage.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StorageError::io(
                        &self.dir,
                        format!("open {}", path.display()),
                        e,
                    ));
                }
            }
        }
        if !fresh.is_empty() {
            sync_dir(&self.blobs_dir)
                .map_err(|e| StorageError::io(&self.dir, "fsync the blobs directory", e))?;
        }
        // Forget blobs sled deleted, so the set stays as small as the dir.
        self.synced_blobs = present;
        Ok(())
    }

    /// How many of sled's blob files are known to be synced.
    #[cfg(test)]
    pub fn synced_blob_count(&self) -> usize {
        self.synced_blobs.len()
    }

    /// Syncs everything sled has ever written here, not only what this
    /// process wrote: after a process crash the page cache may still hold
    /// writes that never reached the disk, and the state we are about to act
    /// on (a vote, acknowledged entries) must not be lost by a later power cut.
    pub fn sync_all(&mut self, db: &sled::Db) -> Result<(), StorageError> {
        self.synced_blobs.clear();
        self.sync(db)?;
        let conf = self.dir.join("conf");
        // sled writes its `conf` once, at creation, without syncing it.
        if conf.exists() {
            sync_file(&conf).map_err(|e| StorageError::io(&self.dir, "fsync conf", e))?;
        }
        self.db_file
            .sync_all()
            .map_err(|e| StorageError::io(&self.dir, "fsync db", e))?;
        sync_dir(&self.dir).map_err(|e| StorageError::io(&self.dir, "fsync the data dir", e))
    }
}

/// Fsyncs a directory, which makes the names created, renamed or removed in
/// it durable (a file's own fsync does not cover its name).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

pub fn sync_file(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

/// A file written front to back that starts the write-back of what it has
/// written every few MiB, without waiting for it (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE` only: no durability, the final fsync gives that),
/// and that writes at most at its rate limit, checked at the same points.
/// A snapshot is 100 MB or more; left to the page cache it reaches the disk
/// in one burst at its fsync, which the members' log fsyncs on the same disk
/// queue behind (RocksDB's `bytes_per_sync` paces its files for the same
/// reason). Measured with `cargo bench --bench lifecycle` on 2026-11-26: the
/// write-back pacing alone changed nothing measurable (writes while the
/// leader takes a snapshot 58–74% of steady with or without it); with the
/// leader's snapshot file also limited to 150 MB/s they stayed at about 100%.
pub struct PacedFile {
    file: File,
    written: u64,
    started_up_to: u64,
    limit: RateLimit,
}

/// How much is written between two write-back starts.
const PACE_BYTES: u64 = 4 << 20;

impl PacedFile {
    pub fn new(file: File, limit: RateLimit) -> PacedFile {
        PacedFile {
            file,
            written: 0,
            started_up_to: 0,
            limit,
        }
    }

    pub fn into_inner(self) -> File {
        self.file
    }

    fn start_writeback(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::io::AsRawFd;
            let (from, len) = (self.started_up_to, self.written - self.started_up_to);
            // SAFETY: a plain system call on a descriptor this value owns.
            // A failure only loses the pacing: the final fsync still writes
            // everything.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    from as libc::off64_t,
                    len as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        self.started_up_to = self.written;
    }
}

impl std::io::Write for PacedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started_up_to >= PACE_BYTES {
            self.start_writeback();
            self.limit.wait_blocking(self.written);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}
