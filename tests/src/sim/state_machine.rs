//! The toy state machine every simulated member applies committed entries to:
//! a few registers that client commands set, plus a running hash of every
//! entry applied so far. Two members that applied the same prefix of the log
//! have the same hash, so the checker compares whole histories in O(1).

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use kuberaft_node::raft::{Entry, EntryKind, Index};

/// How many registers the toy store has.
pub const REGISTERS: usize = 8;

/// A client command: set register `key` to `value`. `(client, seq)` names the
/// command, so a client that retries after a lost answer has it applied once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    pub client: u32,
    pub seq: u32,
    pub key: u8,
    pub value: u32,
}

const COMMAND_LEN: usize = 13;

impl Command {
    pub fn encode(&self) -> Bytes {
        let mut b = Vec::with_capacity(COMMAND_LEN);
        b.extend_from_slice(&self.client.to_le_bytes());
        b.extend_from_slice(&self.seq.to_le_bytes());
        b.push(self.key);
        b.extend_from_slice(&self.value.to_le_bytes());
        Bytes::from(b)
    }

    /// `None` for data that is not a command (the leader's no-op is empty).
    pub fn decode(data: &[u8]) -> Option<Command> {
        if data.len() != COMMAND_LEN {
            return None;
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        Some(Command {
            client: u32_at(0),
            seq: u32_at(4),
            key: data[8],
            value: u32_at(9),
        })
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "set r{}={} (client {} #{})",
            self.key, self.value, self.client, self.seq
        )
    }
}

/// What one member's state machine holds. Cloning it is the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStateMachine {
    /// The last log index applied (or restored from a snapshot).
    pub applied_index: Index,
    /// Chained hash of every entry applied, in order (see [`chain`]).
    pub history: u64,
    pub registers: [u32; REGISTERS],
    /// Highest command number applied per client, to drop retried duplicates.
    last_seq: BTreeMap<u32, u32>,
}

/// The outcome of applying one entry, for the client that proposed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Not a client command: the no-op of a new leader or a membership change.
    Internal,
    /// A command; `fresh` is false for a retried duplicate that changed nothing.
    Command { command: Command, fresh: bool },
}

impl KvStateMachine {
    /// Applies the next committed entry. The caller hands entries in order;
    /// one out of order is the core's bug and reported by the checker.
    pub fn apply(&mut self, e: &Entry) -> Applied {
        self.applied_index = e.index;
        self.history = chain(self.history, e);
        if !matches!(e.kind, EntryKind::Normal) {
            return Applied::Internal;
        }
        let Some(command) = Command::decode(&e.data) else {
            return Applied::Internal;
        };
        let last = self.last_seq.entry(command.client).or_insert(0);
        let fresh = command.seq > *last;
        if fresh {
            *last = command.seq;
            self.registers[command.key as usize % REGISTERS] = command.value;
        }
        Applied::Command { command, fresh }
    }
}

/// A digest of everything that identifies an entry: index, term, kind, data.
pub fn entry_digest(e: &Entry) -> u64 {
    let mut h = fnv1a(FNV_OFFSET, &e.index.to_le_bytes());
    h = fnv1a(h, &e.term.to_le_bytes());
    match &e.kind {
        EntryKind::Normal => h = fnv1a(h, b"n"),
        // Membership changes are rare; their text identifies them well enough.
        EntryKind::ConfChange(c) => h = fnv1a(h, c.to_string().as_bytes()),
    }
    fnv1a(h, &e.data)
}

/// The history hash after applying `e` on top of `history`.
pub fn chain(history: u64, e: &Entry) -> u64 {
    mix(history ^ entry_digest(e))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64's finaliser: every input bit affects every output bit, so
/// chained hashes depend on the order of the entries.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_duplicates_apply_once() {
        let c = Command {
            client: 7,
            seq: 3,
            key: 2,
            value: 99,
        };
        assert_eq!(Command::decode(&c.encode()), Some(c));
        let mut sm = KvStateMachine::default();
        let e = |index, seq, value| Entry::normal(1, index, Command { seq, value, ..c }.encode());
        assert!(matches!(
            sm.apply(&e(1, 3, 99)),
            Applied::Command { fresh: true, .. }
        ));
        assert!(matches!(
            sm.apply(&e(2, 3, 42)),
            Applied::Command { fresh: false, .. }
        ));
        assert_eq!(sm.registers[2], 99);
        assert_eq!(sm.applied_index, 2);
    }

    #[test]
    fn the_history_hash_depends_on_order() {
        let a = Entry::normal(1, 1, Bytes::from_static(b"a"));
        let b = Entry::normal(1, 1, Bytes::from_static(b"b"));
        assert_ne!(chain(chain(0, &a), &b), chain(chain(0, &b), &a));
    }
}
