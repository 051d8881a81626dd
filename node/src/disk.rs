//! A member's data dir as one unit: the Raft storage (log, hard state,
//! snapshot metadata) and the state machine, opened together and changed
//! together when a snapshot from the leader replaces both.
//!
//! # Driving it from the event loop
//!
//! At start:
//!
//! ```text
//! let (mut disk, boot) = Disk::open(&data_dir, &identity)?;
//! let restored = match boot {
//!     Boot::Restored(r) => r,
//!     Boot::Fresh => disk.storage.bootstrap(initial_membership)?,
//! };
//! let node = RawNode::new(cfg, restored)?;
//! ```
//!
//! For each `Ready`, in the order of the `Ready` contract (`raft/mod.rs`):
//!
//! ```text
//! send(rd.leader_messages);                                               // 0. send early
//! if let Some(meta) = &rd.snapshot { disk.install_snapshot(meta)? }       // 1. persist
//! disk.storage.persist(rd.hard_state.as_ref(), &rd.entries, rd.must_sync())?;
//! send(rd.messages);                                                      // 2. send
//! let results = disk.state_machine.apply(&rd.committed_entries)?;         // 3. apply
//! answer(results, rd.read_states);                                        // 4. answer
//! node.advance();
//! ```
//!
//! Any `Err` from these is a failing disk or a bug: stop the member (the
//! state on disk is consistent; memory may not be).
//!
//! To take a snapshot (say, every N applied entries): `image =
//! disk.state_machine.snapshot_image()`, `meta =
//! node.snapshot_meta_at(image.applied_index)`, then
//! `kv::snapshot_file::write(&disk.storage.snapshot_dir(), &meta, &image)` on a
//! blocking thread; when it returns, on the event loop,
//! `disk.compact(&meta)` and then `node.compact(meta)`.
//!
//! The transport sends `disk.storage.snapshot_path(&meta)` with
//! `kv::transfer::SnapshotChunks`, and receives into
//! `disk.storage.snapshot_dir()` with `kv::transfer::SnapshotReceiver`; only
//! after `finish()` succeeds does it step the core with the InstallSnapshot
//! message.
//!
//! # Installing a snapshot, crash-safely
//!
//! A snapshot from the leader replaces the log (in the write-ahead log), the
//! state machine and the snapshot metadata (two sled trees; a sled batch is
//! atomic only within one tree). The installation is therefore a redo
//! protocol with one commit point:
//!
//! 0. The transport has received the file completely, checked it and made it
//!    durable as `snapshots/<index>-<term>.snap` (`kv::transfer`).
//! 1. **Commit point**: the record `snapshot/installing = meta` is written and
//!    synced. Before it is durable, a crash leaves the old state untouched
//!    (the received file is an orphan, removed at the next start); once it
//!    is durable, the installation will complete.
//! 2. The log is cleared (§7: nothing of it survives a snapshot that does
//!    not match it): a new segment starting with a reset record, the old
//!    segments removed.
//! 3. The state machine's tree is replaced by the file's data, applied index
//!    last.
//! 4. A sync; then one batch sets `snapshot/meta = meta` and removes
//!    `installing`, and another sync.
//!
//! Steps 2–4 are idempotent. [`Disk::open`] finds an `installing` record left
//! by a crash and redoes them from the file (which was durable before step 1),
//! before anything reads the log or the state machine. So after any crash a
//! member restarts either exactly as before the installation or exactly as
//! after it.

use std::path::Path;

use crate::kv::{SnapshotImage, StateMachine, snapshot_file};
use crate::raft::SnapshotMeta;
use crate::storage::snapshot_files;
use crate::storage::{Boot, Identity, LogTrim, Storage, StorageError};

/// The storage and the state machine of one member.
pub struct Disk {
    pub storage: Storage,
    pub state_machine: StateMachine,
}

impl Disk {
    /// Opens (or initialises) the data dir `dir` of member `identity`,
    /// finishes a snapshot installation a crash interrupted, checks the
    /// newest snapshot file, and says how the core starts.
    pub fn open(dir: impl AsRef<Path>, identity: &Identity) -> Result<(Disk, Boot), StorageError> {
        let mut storage = Storage::open(dir, identity)?;
        let state_machine = if let Some(meta) = storage.interrupted_install().cloned() {
            // Finish the installation before anything reads the log or the
            // state machine: both may be half replaced.
            let mut state_machine = StateMachine::unloaded(&storage);
            let path = storage.snapshot_path(&meta);
            let (file, image) = snapshot_file::read(&path).map_err(|e| {
                StorageError::corrupt(
                    storage.dir(),
                    format!(
                        "the installation of snapshot {} (term {}) was interrupted and its file cannot be used: {e}",
                        meta.last_included_index, meta.last_included_term
                    ),
                )
            })?;
            check_file_meta(&storage, &file.meta, &meta)?;
            roll_forward(&mut storage, &mut state_machine, &meta, image)?;
            tracing::info!(
                index = meta.last_included_index,
                "finished an interrupted snapshot installation"
            );
            state_machine
        } else {
            StateMachine::open(&storage)?
        };
        if let Some(meta) = storage.snapshot_meta().cloned() {
            check_snapshot(&storage, &state_machine, &meta)?;
            snapshot_files::remove_old(storage.dir(), &storage.snapshot_dir(), &meta, true)?;
        }
        let boot = storage.boot(state_machine.applied_index());
        Ok((
            Disk {
                storage,
                state_machine,
            },
            boot,
        ))
    }

    /// Records snapshot `meta` (its file durable) and releases the log it
    /// covers. The state machine's staged writes go to sled first, so the
    /// sync in [`Storage::compact`] makes the tree durable at or past the
    /// snapshot before any entry it could be rebuilt from leaves the log.
    pub fn compact(&mut self, meta: &SnapshotMeta) -> Result<LogTrim, StorageError> {
        self.state_machine.flush()?;
        self.storage.compact(meta)
    }

    /// Installs the snapshot `meta` that the core accepted from the leader
    /// (`Ready::snapshot`): its file `snapshots/<index>-<term>.snap` must have
    /// been received completely (`kv::transfer::SnapshotReceiver::finish`).
    /// Call it first when handling that `Ready`, before `persist`. When it
    /// returns, the log is empty, the state machine is at the snapshot's
    /// index, and all of it is durable.
    pub fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let path = self.storage.snapshot_path(meta);
        let (file, image) = snapshot_file::read(&path)?;
        let read = started.elapsed();
        check_file_meta(&self.storage, &file.meta, meta)?;
        crash_point("before-commit-point");
        self.storage.begin_install(meta)?;
        crash_point("after-commit-point");
        let steps = roll_forward(&mut self.storage, &mut self.state_machine, meta, image)?;
        tracing::info!(
            index = meta.last_included_index,
            term = meta.last_included_term,
            keys = self.state_machine.len(),
            seconds = started.elapsed().as_secs_f64(),
            read_seconds = read.as_secs_f64(),
            log_cleared_seconds = steps.log_cleared.as_secs_f64(),
            state_machine_seconds = steps.state_machine.as_secs_f64(),
            sync_seconds = steps.synced.as_secs_f64(),
            "installed snapshot from the leader"
        );
        snapshot_files::remove_old(
            self.storage.dir(),
            &self.storage.snapshot_dir(),
            meta,
            false,
        )
    }
}

/// How long the steps of an installation took, for its log line.
struct InstallSteps {
    log_cleared: std::time::Duration,
    state_machine: std::time::Duration,
    synced: std::time::Duration,
}

/// Steps 2-4 of the installation (see the module's documentation).
fn roll_forward(
    storage: &mut Storage,
    state_machine: &mut StateMachine,
    meta: &SnapshotMeta,
    image: SnapshotImage,
) -> Result<InstallSteps, StorageError> {
    let started = std::time::Instant::now();
    storage.clear_log_for_install()?;
    crash_point("after-log-cleared");
    let log_cleared = started.elapsed();
    state_machine.install(image)?;
    crash_point("after-state-machine-replaced");
    let state_machine = started.elapsed() - log_cleared;
    // Durable before the installation record goes, whatever order sled
    // recovers its writes in after a crash.
    storage.sync()?;
    crash_point("after-replacement-synced");
    storage.finish_install(meta)?;
    crash_point("after-finish");
    Ok(InstallSteps {
        log_cleared,
        state_machine,
        synced: started.elapsed() - log_cleared - state_machine,
    })
}

fn check_file_meta(
    storage: &Storage,
    found: &SnapshotMeta,
    expected: &SnapshotMeta,
) -> Result<(), StorageError> {
    if found == expected {
        return Ok(());
    }
    Err(StorageError::misuse(
        storage.dir(),
        format!(
            "snapshot file {} describes snapshot {} (term {}), not the expected {} (term {}) with the same membership",
            storage.snapshot_path(expected).display(),
            found.last_included_index,
            found.last_included_term,
            expected.last_included_index,
            expected.last_included_term
        ),
    ))
}

/// The newest snapshot must have its file (a leader sends it to followers
/// that are behind the compacted log), and the state machine must be at
/// least at its index (the log before it is gone).
fn check_snapshot(
    storage: &Storage,
    state_machine: &StateMachine,
    meta: &SnapshotMeta,
) -> Result<(), StorageError> {
    if meta.last_included_index == 0 {
        // The bootstrap snapshot: the initial membership, no data, no file.
        return Ok(());
    }
    let path = storage.snapshot_path(meta);
    let file = snapshot_file::verify(&path).map_err(|e| {
        StorageError::corrupt(
            storage.dir(),
            format!(
                "the newest snapshot ({} of term {}) cannot be used: {e}",
                meta.last_included_index, meta.last_included_term
            ),
        )
    })?;
    check_file_meta(storage, &file.meta, meta)?;
    if state_machine.applied_index() < meta.last_included_index {
        return Err(StorageError::corrupt(
            storage.dir(),
            format!(
                "the state machine has applied up to {}, but the log before snapshot {} is compacted away",
                state_machine.applied_index(),
                meta.last_included_index
            ),
        ));
    }
    Ok(())
}

/// In tests, a named step where a child process can be made to die (see the
/// crash tests below); nothing in other builds.
#[cfg(test)]
fn crash_point(step: &'static str) {
    if std::env::var(tests::CRASH_AT_ENV).as_deref() == Ok(step) {
        // No destructors: sled's buffers that were not synced are lost, as
        // in a real crash.
        std::process::exit(tests::CRASH_EXIT_CODE);
    }
}

#[cfg(not(test))]
#[inline(always)]
fn crash_point(_step: &'static str) {}

#[cfg(test)]
mod tests;
