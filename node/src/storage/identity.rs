//! Whose data dir this is. A StatefulSet gives a recreated pod its old volume,
//! but a misconfigured one (a renamed cluster, a hand-made PV bound to the
//! wrong claim) can give it someone else's: a member that started on another
//! member's log would vote and acknowledge with that member's history. So the
//! data dir records, once, which member of which cluster it belongs to, and
//! every start compares.
//!
//! The record is kept twice: in the file `<dir>/identity` (JSON, readable
//! with `cat`), checked before sled opens the store — because sled rewrites
//! parts of its files whenever it opens one, and a dir that is not ours must
//! be left byte for byte as we found it — and in the sled tree `identity`
//! (checksummed), which travels with the data and must agree with the file.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::error::{ForeignIdentity, StorageError};
use super::record;
use super::sync::sync_dir;
use crate::raft::NodeId;

/// The on-disk format this code writes and reads. Bump it, and teach `open`
/// to migrate or refuse, whenever the layout of a tree or a file changes.
/// 1: the log and the hard state in sled trees (migrated, see `legacy.rs`);
/// 2: the log and the hard state in the write-ahead log (`wal/`).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format `open` still reads (and migrates).
pub const OLDEST_READABLE_FORMAT: u32 = 1;

/// The identity file, and the name it is written under before it is complete.
pub const IDENTITY_FILE: &str = "identity";
pub const IDENTITY_FILE_TMP: &str = "identity.tmp";

/// Who is starting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The RaftCluster's name.
    pub cluster: String,
    pub member_id: NodeId,
    /// The pod's name, e.g. "demo-2".
    pub member_name: String,
}

/// What the data dir records about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    pub format_version: u32,
    pub cluster: String,
    pub member_id: NodeId,
    pub member_name: String,
    /// When the data dir was initialised, in milliseconds since the Unix epoch.
    pub created_at_unix_ms: u64,
    /// A random number chosen when the data dir was initialised. Peers
    /// remember it: a member that comes back with a new data dir (its
    /// durable state lost) has a new incarnation, and they refuse it (see
    /// `server/incarnations.rs`).
    #[serde(default)]
    pub incarnation: u64,
}

impl IdentityRecord {
    pub fn new(identity: &Identity) -> IdentityRecord {
        let created_at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        IdentityRecord {
            format_version: FORMAT_VERSION,
            cluster: identity.cluster.clone(),
            member_id: identity.member_id,
            member_name: identity.member_name.clone(),
            created_at_unix_ms,
            // Never 0: 0 means "unknown" on the wire.
            incarnation: rand::random::<u64>().max(1),
        }
    }

    /// JSON inside the checksummed frame: readable in a hex dump, and new
    /// fields can be added without a format change.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising a struct of strings and integers cannot fail.
        record::seal(&serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(dir: &Path, value: &[u8]) -> Result<IdentityRecord, StorageError> {
        let payload = record::open(value).map_err(|e| {
            StorageError::corrupt(dir, format!("the identity record is unreadable: {e}"))
        })?;
        serde_json::from_slice(payload).map_err(|e| {
            StorageError::corrupt(dir, format!("the identity record is unreadable: {e}"))
        })
    }

    /// Reads `<dir>/identity`, if there is one.
    pub fn read_file(dir: &Path) -> Result<Option<IdentityRecord>, StorageError> {
        let path = dir.join(IDENTITY_FILE);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::io(dir, "read its identity file", e)),
        };
        serde_json::from_slice(&text).map(Some).map_err(|e| {
            StorageError::corrupt(
                dir,
                format!("its identity file {} is unreadable: {e}", path.display()),
            )
        })
    }

    /// Writes `<dir>/identity` durably: to a temporary name, fsynced, renamed,
    /// and the directory fsynced, so it is either whole or absent.
    pub fn write_file(&self, dir: &Path) -> Result<(), StorageError> {
        let tmp = dir.join(IDENTITY_FILE_TMP);
        let io = |e| StorageError::io(dir, "write its identity file", e);
        let mut text = serde_json::to_vec_pretty(self).unwrap_or_default();
        text.push(b'\n');
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&text).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, dir.join(IDENTITY_FILE)).map_err(io)?;
        sync_dir(dir).map_err(io)
    }

    /// Refuses to start `identity` on a data dir recorded for someone else.
    pub fn check(&self, dir: &Path, identity: &Identity) -> Result<(), StorageError> {
        if !(OLDEST_READABLE_FORMAT..=FORMAT_VERSION).contains(&self.format_version) {
            return Err(StorageError::UnsupportedFormat {
                dir: dir.to_owned(),
                found: self.format_version,
                supported: FORMAT_VERSION,
            });
        }
        if self.cluster != identity.cluster
            || self.member_id != identity.member_id
            || self.member_name != identity.member_name
        {
            return Err(StorageError::ForeignIdentity(Box::new(ForeignIdentity {
                dir: dir.to_owned(),
                found_cluster: self.cluster.clone(),
                found_member_id: self.member_id,
                found_member_name: self.member_name.clone(),
                cluster: identity.cluster.clone(),
                member_id: identity.member_id,
                member_name: identity.member_name.clone(),
            })));
        }
        Ok(())
    }
}

impl Identity {
    /// A member id of 0 means "nobody" in the core, and a nameless cluster
    /// would match every other nameless one.
    pub fn validate(&self, dir: &Path) -> Result<(), StorageError> {
        if self.member_id == 0 {
            return Err(StorageError::misuse(
                dir,
                "member id 0 is reserved; member ids start at 1",
            ));
        }
        if self.cluster.is_empty() {
            return Err(StorageError::misuse(dir, "the cluster name is empty"));
        }
        Ok(())
    }
}
