//! Why the data dir cannot be used, worded for the person who has to act.

use std::path::{Path, PathBuf};

/// What to do about a data dir whose contents cannot be trusted. Wiping it
/// and restarting in place is NOT safe: a voter that forgets its vote or its
/// log can help elect a leader that lacks committed entries. The member has to
/// leave the configuration first and come back as a new learner.
pub const DAMAGED_DIR_ADVICE: &str = "do not edit or wipe it in place: remove this member from the \
     cluster with a membership change, move the data dir aside (keep it for \
     analysis), and add the member back with an empty data dir; it will catch \
     up from the leader's snapshot";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    ForeignIdentity(Box<ForeignIdentity>),

    #[error(
        "{dir} is not a kuberaft data dir: {found}; refusing to use it so as not to \
         overwrite someone else's files. Point the member at an empty directory or at \
         its own data dir"
    )]
    NotADataDir { dir: PathBuf, found: String },

    #[error("data dir {dir} is damaged: {what}; {advice}", advice = DAMAGED_DIR_ADVICE)]
    Corrupt { dir: PathBuf, what: String },

    #[error(
        "data dir {dir} was written with storage format {found}, which this kuberaft \
         (format {supported}) cannot read; run a kuberaft release that supports format {found}"
    )]
    UnsupportedFormat {
        dir: PathBuf,
        found: u32,
        supported: u32,
    },

    #[error("data dir {dir}: {action}: {source}{hint}", hint = io_hint(source))]
    Io {
        dir: PathBuf,
        action: String,
        #[source]
        source: std::io::Error,
    },

    #[error("data dir {dir}: sled could not {action}: {source}")]
    Sled {
        dir: PathBuf,
        action: String,
        #[source]
        source: sled::Error,
    },

    #[error("snapshot file {path}: {what}")]
    BadSnapshot { path: PathBuf, what: String },

    /// The caller broke the storage's contract (a bug, not a disk problem).
    #[error("data dir {dir}: {what}")]
    Misuse { dir: PathBuf, what: String },

    /// Only in tests: a simulated crash at a named step.
    #[cfg(test)]
    #[error("simulated crash at {0}")]
    SimulatedCrash(&'static str),
}

/// A data dir recorded for another member or cluster than the one starting.
#[derive(Debug, thiserror::Error)]
#[error(
    "data dir {dir} belongs to cluster {found_cluster:?}, member {found_member_id} \
     ({found_member_name:?}); refusing to start as member {member_id} ({member_name:?}) \
     of cluster {cluster:?}. Give this member its own data dir (on Kubernetes: its own \
     PersistentVolumeClaim)"
)]
pub struct ForeignIdentity {
    pub dir: PathBuf,
    pub found_cluster: String,
    pub found_member_id: u64,
    pub found_member_name: String,
    pub cluster: String,
    pub member_id: u64,
    pub member_name: String,
}

/// The usual causes of an I/O error on a data dir, and their fixes.
fn io_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "; give this process write access to the data dir (on Kubernetes: set the \
             pod's securityContext.fsGroup, or chown the volume)"
        }
        std::io::ErrorKind::ReadOnlyFilesystem => {
            "; the data dir is on a read-only file system; mount the volume read-write"
        }
        std::io::ErrorKind::StorageFull => "; the volume is full; grow it or free space",
        std::io::ErrorKind::NotADirectory => "; a file stands where a directory should be",
        _ => "",
    }
}

impl StorageError {
    pub(crate) fn io(dir: &Path, action: impl Into<String>, source: std::io::Error) -> Self {
        StorageError::Io {
            dir: dir.to_owned(),
            action: action.into(),
            source,
        }
    }

    pub(crate) fn sled(dir: &Path, action: impl Into<String>, source: sled::Error) -> Self {
        // sled reports I/O failures (a lock held by another process, a full
        // disk) as sled errors; unwrap them so the hint above applies.
        match source {
            // sled's only way to say "another process has this store open".
            sled::Error::Io(source) if source.to_string().contains("could not acquire lock") => {
                StorageError::Io {
                    dir: dir.to_owned(),
                    action: format!(
                        "could not {}: another process holds it open (a second member on the same data dir?)",
                        action.into()
                    ),
                    source,
                }
            }
            sled::Error::Io(source) => StorageError::Io {
                dir: dir.to_owned(),
                action: format!("could not {}", action.into()),
                source,
            },
            source @ sled::Error::Corruption { .. } => StorageError::Corrupt {
                dir: dir.to_owned(),
                what: format!("sled could not {}: {source}", action.into()),
            },
            source => StorageError::Sled {
                dir: dir.to_owned(),
                action: action.into(),
                source,
            },
        }
    }

    pub(crate) fn corrupt(dir: &Path, what: impl Into<String>) -> Self {
        StorageError::Corrupt {
            dir: dir.to_owned(),
            what: what.into(),
        }
    }

    pub(crate) fn bad_snapshot(path: &Path, what: impl Into<String>) -> Self {
        StorageError::BadSnapshot {
            path: path.to_owned(),
            what: what.into(),
        }
    }

    pub(crate) fn misuse(dir: &Path, what: impl Into<String>) -> Self {
        StorageError::Misuse {
            dir: dir.to_owned(),
            what: what.into(),
        }
    }
}
