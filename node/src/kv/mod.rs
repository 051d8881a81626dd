//! TEMPORARY in-memory stand-in, replaced by the storage branch's state machine.
use std::collections::BTreeMap;

use bytes::Bytes;
use kuberaft_proto::kv as pb;
use prost::Message as _;

use crate::raft::{Entry, EntryKind, Index};

pub enum ApplyResult {
    Put,
    Delete {
        existed: bool,
    },
    CompareAndSwap {
        succeeded: bool,
        current: Option<Bytes>,
    },
}

#[derive(Default)]
pub struct StateMachine {
    data: BTreeMap<Vec<u8>, (Vec<u8>, Index)>,
    applied: Index,
}

impl StateMachine {
    pub fn applied_index(&self) -> Index {
        self.applied
    }

    pub fn get(&self, key: &[u8]) -> Option<pb::KeyValue> {
        self.data.get(key).map(|(v, i)| pb::KeyValue {
            key: key.to_vec(),
            value: v.clone(),
            mod_index: *i,
        })
    }

    pub fn scan(
        &self,
        prefix: &[u8],
        start_after: &[u8],
        limit: usize,
    ) -> (Vec<pb::KeyValue>, bool) {
        let mut out = Vec::new();
        for (k, (v, i)) in self.data.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            if !start_after.is_empty() && k.as_slice() <= start_after {
                continue;
            }
            if out.len() == limit {
                return (out, true);
            }
            out.push(pb::KeyValue {
                key: k.clone(),
                value: v.clone(),
                mod_index: *i,
            });
        }
        (out, false)
    }

    pub fn apply(&mut self, entries: &[Entry]) -> Result<Vec<(Index, ApplyResult)>, String> {
        let mut out = Vec::new();
        for e in entries {
            if e.index <= self.applied {
                continue;
            }
            self.applied = e.index;
            if !matches!(e.kind, EntryKind::Normal) || e.data.is_empty() {
                continue;
            }
            let cmd = pb::Command::decode(e.data.clone()).map_err(|x| x.to_string())?;
            let r = match cmd.op {
                Some(pb::command::Op::Put(p)) => {
                    self.data.insert(p.key, (p.value, e.index));
                    ApplyResult::Put
                }
                Some(pb::command::Op::Delete(d)) => ApplyResult::Delete {
                    existed: self.data.remove(&d.key).is_some(),
                },
                Some(pb::command::Op::CompareAndSwap(c)) => {
                    let cur = self.data.get(&c.key).map(|(v, _)| v.clone());
                    if cur == c.expected_value {
                        self.data.insert(c.key, (c.new_value, e.index));
                        ApplyResult::CompareAndSwap {
                            succeeded: true,
                            current: cur.map(Bytes::from),
                        }
                    } else {
                        ApplyResult::CompareAndSwap {
                            succeeded: false,
                            current: cur.map(Bytes::from),
                        }
                    }
                }
                None => continue,
            };
            out.push((e.index, r));
        }
        Ok(out)
    }
}
