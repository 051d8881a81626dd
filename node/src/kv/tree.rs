//! How the state machine lies in its sled tree (`kv`).
//!
//! The data and the applied index share one tree because a `sled::Batch` is
//! atomic only within a tree, and they must never disagree (see `apply`). A
//! one-byte tag keeps them apart:
//!
//! - `0x00 "applied"` → CRC-32 + the applied index (u64, big-endian);
//! - `0x01 <key>` → CRC-32 of (key, rest) + `mod_index` (u64, big-endian) +
//!   the value. The checksum covers the key, so a value that turns up under
//!   the wrong key is caught too.

use std::path::Path;

use bytes::Bytes;

use super::{KvMap, Versioned};
use crate::raft::Index;
use crate::storage::{StorageError, record};

pub const APPLIED_KEY: &[u8] = b"\x00applied";
const DATA_TAG: u8 = 0x01;

pub fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(DATA_TAG);
    k.extend_from_slice(key);
    k
}

fn checksum(key: &[u8], rest: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(rest);
    h.finalize()
}

pub fn encode_value(key: &[u8], v: &Versioned) -> Vec<u8> {
    let mut rest = Vec::with_capacity(8 + v.value.len());
    rest.extend_from_slice(&v.mod_index.to_be_bytes());
    rest.extend_from_slice(&v.value);
    let mut out = Vec::with_capacity(4 + rest.len());
    out.extend_from_slice(&checksum(key, &rest).to_be_bytes());
    out.extend_from_slice(&rest);
    out
}

fn decode_value(key: &[u8], stored: &[u8]) -> Result<Versioned, String> {
    let Some((crc, rest)) = stored.split_first_chunk::<4>() else {
        return Err(format!("it is {} bytes long, too short", stored.len()));
    };
    let computed = checksum(key, rest);
    let stored_crc = u32::from_be_bytes(*crc);
    if stored_crc != computed {
        return Err(format!(
            "its checksum does not match (stored {stored_crc:#010x}, computed {computed:#010x})"
        ));
    }
    let Some((mod_index, value)) = rest.split_first_chunk::<8>() else {
        return Err("it has no mod_index".into());
    };
    Ok(Versioned {
        value: Bytes::copy_from_slice(value),
        mod_index: Index::from_be_bytes(*mod_index),
    })
}

/// Reads the whole tree, checking every checksum: the applied index and the
/// data as the in-memory map.
pub fn load(dir: &Path, tree: &sled::Tree) -> Result<(Index, KvMap), StorageError> {
    let mut applied = 0;
    let mut map = KvMap::new();
    for item in tree.iter() {
        let (k, v) = item.map_err(|e| {
            StorageError::corrupt(dir, format!("the state machine's data is unreadable: {e}"))
        })?;
        match k.split_first() {
            Some((&DATA_TAG, key)) => {
                let value = decode_value(key, &v).map_err(|why| {
                    StorageError::corrupt(
                        dir,
                        format!(
                            "the state machine's value of key {:?} is damaged: {why}",
                            String::from_utf8_lossy(key)
                        ),
                    )
                })?;
                map.insert(Bytes::copy_from_slice(key), value);
            }
            _ if k.as_ref() == APPLIED_KEY => {
                applied = record::open_u64(&v).map_err(|e| {
                    StorageError::corrupt(dir, format!("the state machine's applied index: {e}"))
                })?;
            }
            _ => {
                return Err(StorageError::corrupt(
                    dir,
                    format!(
                        "the state machine's tree holds an unknown key {:02x?}",
                        k.as_ref()
                    ),
                ));
            }
        }
    }
    Ok((applied, map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_only_under_their_own_key() {
        let v = Versioned {
            value: Bytes::from_static(b"v"),
            mod_index: 7,
        };
        let stored = encode_value(b"k", &v);
        assert_eq!(decode_value(b"k", &stored), Ok(v));
        assert!(decode_value(b"other", &stored).is_err());
    }
}
