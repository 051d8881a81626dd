//! What one committed command does to the key-value map.
//!
//! Every member applies the same commands in the same order and must end in
//! the same state, so applying is a pure function of (map, index, command
//! bytes): no clock, no configuration, no limits that a newer version might
//! change (the client service enforces the limits of kv.proto before it
//! proposes). A command that cannot be decoded is answered as invalid, on
//! every member alike, instead of stopping the state machine.

use bytes::Bytes;
use kuberaft_proto::kv as pb;
use kuberaft_proto::kv::command::Op;
use prost::Message as _;

use super::{KvMap, Versioned, Writes, tree};
use crate::raft::Index;

/// What a command did, for the client that proposed it. The index of the
/// command's entry travels beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyResult {
    /// The key now holds the value (its `mod_index` is the entry's index).
    Put,
    Delete {
        /// Whether the key existed.
        existed: bool,
    },
    CompareAndSwap {
        succeeded: bool,
        /// The value the key held when the command was applied.
        current_value: Option<Bytes>,
    },
    /// The entry's data is not a command this version knows.
    Invalid { reason: String },
}

/// Applies the command in `data` (entry `index`) to `map`, and records the
/// same change in `batch` for the kv tree.
pub(crate) fn apply(map: &mut KvMap, batch: &mut Writes, index: Index, data: &[u8]) -> ApplyResult {
    let command = match pb::Command::decode(data) {
        Ok(c) => c,
        Err(e) => {
            return ApplyResult::Invalid {
                reason: format!("entry {index} is not a kuberaft.kv.v1.Command: {e}"),
            };
        }
    };
    match command.op {
        Some(Op::Put(p)) => {
            set(map, batch, index, p.key, p.value);
            ApplyResult::Put
        }
        Some(Op::Delete(d)) => {
            let existed = map.remove(d.key.as_slice()).is_some();
            batch.remove(tree::data_key(&d.key));
            ApplyResult::Delete { existed }
        }
        Some(Op::CompareAndSwap(c)) => {
            let current_value = map.get(c.key.as_slice()).map(|v| v.value.clone());
            // An unset expected_value means "the key must not exist".
            let succeeded = current_value.as_deref() == c.expected_value.as_deref();
            if succeeded {
                set(map, batch, index, c.key, c.new_value);
            }
            ApplyResult::CompareAndSwap {
                succeeded,
                current_value,
            }
        }
        None => ApplyResult::Invalid {
            reason: format!("entry {index} holds a command without an operation"),
        },
    }
}

fn set(map: &mut KvMap, batch: &mut Writes, index: Index, key: Vec<u8>, value: Vec<u8>) {
    let v = Versioned {
        value: Bytes::from(value),
        mod_index: index,
    };
    batch.insert(tree::data_key(&key), tree::encode_value(&key, &v));
    map.insert(Bytes::from(key), v);
}

/// Encodes a command for a log entry (what the client service proposes).
pub fn encode(op: Op) -> Bytes {
    Bytes::from(pb::Command { op: Some(op) }.encode_to_vec())
}
