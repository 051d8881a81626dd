//! How one record is laid out in a segment, and how a reader tells apart the
//! end of the log, a write that a crash cut off, and damage.
//!
//! ```text
//! | body length: u32 LE | CRC-32 of (length bytes, body): u32 LE | body |
//! body = | kind: u8 | protobuf (raft.v1.Entry or raft.v1.HardState), or nothing |
//! ```
//!
//! A segment is filled with zeros before it is used, so a header of eight zero
//! bytes is where the written part ends (a body is never empty, so no record
//! starts with a zero length). A write that was not synced when the machine
//! stopped can reach the disk in part: the disk writes sectors, not records,
//! and in any order. What it left is a record that fails its checksum and
//! still holds a piece of zeros where a sector was never written — a torn
//! record. A record that fails its checksum with no such piece is damage.
//! (etcd's WAL tells them apart the same way.)

use kuberaft_proto::raft as pb;
use prost::Message;

use crate::raft::{Entry, HardState};

pub const HEADER: usize = 8;
/// The sector size a torn write is assumed to be made of: the smallest any
/// disk writes atomically.
const SECTOR: usize = 512;
/// A length above this is damage, not a record: the largest entry is a
/// 1 MiB value with its key and framing (kv.proto's limits).
const MAX_BODY: usize = 16 << 20;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_RESET: u8 = 3;

/// What a record says.
#[derive(Debug, PartialEq)]
pub enum Record {
    Entry(Entry),
    HardState(HardState),
    /// Everything before is void: the log was replaced by a snapshot (§7).
    Reset,
}

/// What a reader finds at an offset.
#[derive(Debug, PartialEq)]
pub enum Found {
    /// A whole record, and where the next one starts.
    Record(Record, usize),
    /// Zeros: nothing was written here.
    End,
    /// Not a record. `torn` when it holds zeros where a sector was never
    /// written (what a crash during an unsynced write leaves).
    Bad { why: String, torn: bool },
}

pub fn encode_entry(buf: &mut Vec<u8>, e: &Entry) {
    encode(buf, KIND_ENTRY, |b| {
        // Encoding into a Vec cannot fail: it grows.
        let _ = pb::Entry::from(e).encode(b);
    });
}

pub fn encode_hard_state(buf: &mut Vec<u8>, hs: &HardState) {
    encode(buf, KIND_HARD_STATE, |b| {
        let _ = pb::HardState::from(hs).encode(b);
    });
}

pub fn encode_reset(buf: &mut Vec<u8>) {
    encode(buf, KIND_RESET, |_| {});
}

fn encode(buf: &mut Vec<u8>, kind: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    buf.push(kind);
    body(buf);
    let len = u32::try_from(buf.len() - start - HEADER).unwrap_or(u32::MAX);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = checksum(&buf[start..start + 4], &buf[start + HEADER..]);
    buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(len: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(body);
    h.finalize()
}

/// Reads what is at `pos` of a segment's bytes.
pub fn read_at(data: &[u8], pos: usize) -> Found {
    let rest = &data[pos.min(data.len())..];
    let Some((header, _)) = rest.split_first_chunk::<HEADER>() else {
        if rest.iter().all(|b| *b == 0) {
            return Found::End;
        }
        return Found::Bad {
            why: format!(
                "a record header is cut off by the end of the segment ({} bytes left)",
                rest.len()
            ),
            torn: true,
        };
    };
    let len_bytes = &header[..4];
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 && stored == 0 {
        return Found::End;
    }
    if len == 0 || len > MAX_BODY {
        return Found::Bad {
            why: format!("its header claims a body of {len} bytes"),
            torn: has_unwritten_sector(data, pos, pos + HEADER),
        };
    }
    let Some(body) = rest.get(HEADER..HEADER + len) else {
        // A segment grows past its preallocated size only for a batch too
        // big for it; a crash can lose the end of such a write with its size.
        return Found::Bad {
            why: format!(
                "it claims {len} bytes but the segment ends {} bytes later",
                rest.len() - HEADER
            ),
            torn: true,
        };
    };
    let computed = checksum(len_bytes, body);
    if computed != stored {
        return Found::Bad {
            why: format!(
                "its checksum does not match (stored {stored:#010x}, computed {computed:#010x})"
            ),
            torn: has_unwritten_sector(data, pos, pos + HEADER + len),
        };
    }
    let next = pos + HEADER + len;
    let decoded = match body[0] {
        KIND_ENTRY => pb::Entry::decode(&body[1..])
            .map_err(|e| e.to_string())
            .and_then(|e| Entry::try_from(e).map_err(|e| e.to_string()))
            .map(Record::Entry),
        KIND_HARD_STATE => pb::HardState::decode(&body[1..])
            .map(|h| Record::HardState(HardState::from(h)))
            .map_err(|e| e.to_string()),
        KIND_RESET if body.len() == 1 => Ok(Record::Reset),
        kind => Err(format!("unknown record kind {kind}")),
    };
    match decoded {
        Ok(record) => Found::Record(record, next),
        // Its checksum held, so this is no torn write: a bug or a newer format.
        Err(why) => Found::Bad {
            why: format!("it cannot be decoded: {why}"),
            torn: false,
        },
    }
}

/// Whether some piece of `data[from..to]` between two sector boundaries is
/// all zeros: a sector the write never reached.
fn has_unwritten_sector(data: &[u8], from: usize, to: usize) -> bool {
    let to = to.min(data.len());
    let mut start = from;
    while start < to {
        let end = ((start / SECTOR + 1) * SECTOR).min(to);
        if data[start..end].iter().all(|b| *b == 0) {
            return true;
        }
        start = end;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(index: u64, len: usize) -> Entry {
        Entry::normal(2, index, Bytes::from(vec![0xab; len]))
    }

    fn segment(records: &[u8], size: usize) -> Vec<u8> {
        let mut data = records.to_vec();
        data.resize(size, 0);
        data
    }

    #[test]
    fn records_read_back_in_order_then_the_end() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, &entry(1, 10));
        let hs = HardState {
            current_term: 2,
            voted_for: 3,
            commit_index: 1,
        };
        encode_hard_state(&mut buf, &hs);
        encode_reset(&mut buf);
        let data = segment(&buf, 4096);
        let Found::Record(Record::Entry(e), next) = read_at(&data, 0) else {
            panic!("no entry");
        };
        assert_eq!(e, entry(1, 10));
        let Found::Record(Record::HardState(h), next) = read_at(&data, next) else {
            panic!("no hard state");
        };
        assert_eq!(h, hs);
        let Found::Record(Record::Reset, next) = read_at(&data, next) else {
            panic!("no reset");
        };
        assert_eq!(next, buf.len());
        assert_eq!(read_at(&data, next), Found::End);
        assert_eq!(read_at(&data, data.len()), Found::End);
    }

    #[test]
    fn a_flipped_byte_is_damage_but_a_missing_sector_is_a_torn_write() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, &entry(1, 2000));
        let mut damaged = segment(&buf, 4096);
        damaged[1500] ^= 0x01;
        assert!(matches!(
            read_at(&damaged, 0),
            Found::Bad { torn: false, ref why } if why.contains("checksum")
        ));
        let mut torn = segment(&buf, 4096);
        torn[1024..1536].fill(0);
        assert!(matches!(read_at(&torn, 0), Found::Bad { torn: true, .. }));
        // The record's last sector written only in part: its tail is zeros.
        let mut cut = segment(&buf, 4096);
        cut[1536..buf.len()].fill(0);
        assert!(matches!(read_at(&cut, 0), Found::Bad { torn: true, .. }));
    }

    #[test]
    fn a_damaged_length_is_damage_unless_the_header_is_half_written() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, &entry(1, 100));
        let mut data = segment(&buf, 4096);
        data[3] = 0x7f;
        assert!(matches!(read_at(&data, 0), Found::Bad { torn: false, .. }));
        // A header straddling a sector boundary, its second half unwritten.
        let mut buf = vec![0u8; 508];
        buf.fill(0);
        let at = buf.len();
        encode_entry(&mut buf, &entry(1, 100));
        let mut data = segment(&buf, 4096);
        data[512..].fill(0);
        assert!(matches!(read_at(&data, at), Found::Bad { torn: true, .. }));
    }

    #[test]
    fn a_record_cut_off_by_the_end_of_the_file_is_torn() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, &entry(1, 3000));
        assert!(matches!(
            read_at(&buf[..2000], 0),
            Found::Bad { torn: true, .. }
        ));
        assert!(matches!(
            read_at(&buf[..5], 0),
            Found::Bad { torn: true, .. }
        ));
    }
}
