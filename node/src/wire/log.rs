//! The log's nouns on the wire: entries, membership and its changes, snapshot
//! metadata and the hard state. `From<&core>` goes out; `TryFrom<proto>`
//! comes in and checks what the protocol cannot express in its types.

use kuberaft_proto::raft as pb;
use kuberaft_proto::raft::conf_change::Change;

use super::WireError;
use crate::raft::{
    ConfChange, Entry, EntryKind, HardState, Member, Membership, SnapshotMeta, Suffrage,
};

impl From<Suffrage> for pb::Suffrage {
    fn from(s: Suffrage) -> pb::Suffrage {
        match s {
            Suffrage::Voter => pb::Suffrage::Voter,
            Suffrage::Learner => pb::Suffrage::Learner,
        }
    }
}

/// Reads a `Suffrage` field; UNSPECIFIED is refused because a member whose
/// vote is unknown must not silently become a voter (or a learner).
fn suffrage_from_proto(value: i32) -> Result<Suffrage, WireError> {
    match pb::Suffrage::try_from(value) {
        Ok(pb::Suffrage::Voter) => Ok(Suffrage::Voter),
        Ok(pb::Suffrage::Learner) => Ok(Suffrage::Learner),
        Ok(pb::Suffrage::Unspecified) => Err(WireError::Invalid {
            message: "Member",
            why: "suffrage is SUFFRAGE_UNSPECIFIED; a member is a voter or a learner".into(),
        }),
        Err(_) => Err(WireError::UnknownEnum {
            message: "Member",
            field: "suffrage",
            value,
        }),
    }
}

impl From<&Member> for pb::Member {
    fn from(m: &Member) -> pb::Member {
        pb::Member {
            id: m.id,
            name: m.name.clone(),
            peer_addr: m.peer_addr.clone(),
            client_addr: m.client_addr.clone(),
            suffrage: pb::Suffrage::from(m.suffrage).into(),
        }
    }
}

impl TryFrom<pb::Member> for Member {
    type Error = WireError;

    fn try_from(m: pb::Member) -> Result<Member, WireError> {
        if m.id == 0 {
            // 0 means "nobody" on the wire (see `raft::NodeId`).
            return Err(WireError::Invalid {
                message: "Member",
                why: format!("member {:?} has id 0, which is reserved", m.name),
            });
        }
        Ok(Member {
            id: m.id,
            suffrage: suffrage_from_proto(m.suffrage)?,
            name: m.name,
            peer_addr: m.peer_addr,
            client_addr: m.client_addr,
        })
    }
}

impl From<&Membership> for pb::Membership {
    fn from(m: &Membership) -> pb::Membership {
        pb::Membership {
            members: m.members.values().map(pb::Member::from).collect(),
        }
    }
}

impl TryFrom<pb::Membership> for Membership {
    type Error = WireError;

    fn try_from(m: pb::Membership) -> Result<Membership, WireError> {
        let mut out = Membership::default();
        for member in m.members {
            let member = Member::try_from(member)?;
            let id = member.id;
            if out.members.insert(id, member).is_some() {
                return Err(WireError::Invalid {
                    message: "Membership",
                    why: format!("member {id} is listed twice"),
                });
            }
        }
        Ok(out)
    }
}

impl From<&ConfChange> for pb::ConfChange {
    fn from(c: &ConfChange) -> pb::ConfChange {
        let change = match c {
            ConfChange::AddLearner(m) => Change::AddLearner(pb::Member::from(m)),
            ConfChange::PromoteLearner { id } => Change::PromoteLearner(*id),
            ConfChange::RemoveMember { id } => Change::RemoveMember(*id),
        };
        pb::ConfChange {
            change: Some(change),
        }
    }
}

impl TryFrom<pb::ConfChange> for ConfChange {
    type Error = WireError;

    fn try_from(c: pb::ConfChange) -> Result<ConfChange, WireError> {
        match c.change {
            Some(Change::AddLearner(m)) => Ok(ConfChange::AddLearner(Member::try_from(m)?)),
            Some(Change::PromoteLearner(id)) => Ok(ConfChange::PromoteLearner { id }),
            Some(Change::RemoveMember(id)) => Ok(ConfChange::RemoveMember { id }),
            None => Err(WireError::Missing {
                message: "ConfChange",
                field: "change",
            }),
        }
    }
}

impl From<&Entry> for pb::Entry {
    fn from(e: &Entry) -> pb::Entry {
        let (kind, conf_change) = match &e.kind {
            EntryKind::Normal => (pb::EntryType::Normal, None),
            EntryKind::ConfChange(c) => (pb::EntryType::ConfChange, Some(c.into())),
        };
        pb::Entry {
            term: e.term,
            index: e.index,
            r#type: kind.into(),
            data: e.data.clone(),
            conf_change,
        }
    }
}

impl TryFrom<pb::Entry> for Entry {
    type Error = WireError;

    fn try_from(e: pb::Entry) -> Result<Entry, WireError> {
        let kind = match (pb::EntryType::try_from(e.r#type), e.conf_change) {
            (Ok(pb::EntryType::Normal), None) => EntryKind::Normal,
            (Ok(pb::EntryType::ConfChange), Some(c)) => {
                EntryKind::ConfChange(ConfChange::try_from(c)?)
            }
            (Ok(pb::EntryType::ConfChange), None) => {
                return Err(WireError::Invalid {
                    message: "Entry",
                    why: format!(
                        "entry {} is of type ENTRY_TYPE_CONF_CHANGE but has no conf_change",
                        e.index
                    ),
                });
            }
            (Ok(pb::EntryType::Normal), Some(_)) => {
                return Err(WireError::Invalid {
                    message: "Entry",
                    why: format!(
                        "entry {} is of type ENTRY_TYPE_NORMAL but carries a conf_change",
                        e.index
                    ),
                });
            }
            (Err(_), _) => {
                return Err(WireError::UnknownEnum {
                    message: "Entry",
                    field: "type",
                    value: e.r#type,
                });
            }
        };
        Ok(Entry {
            term: e.term,
            index: e.index,
            kind,
            data: e.data,
        })
    }
}

impl From<&SnapshotMeta> for pb::SnapshotMeta {
    fn from(s: &SnapshotMeta) -> pb::SnapshotMeta {
        pb::SnapshotMeta {
            last_included_index: s.last_included_index,
            last_included_term: s.last_included_term,
            membership: Some((&s.membership).into()),
        }
    }
}

impl TryFrom<pb::SnapshotMeta> for SnapshotMeta {
    type Error = WireError;

    fn try_from(s: pb::SnapshotMeta) -> Result<SnapshotMeta, WireError> {
        // Every snapshot has a configuration (§7); an absent one is not the
        // same as an empty one.
        let membership = s.membership.ok_or(WireError::Missing {
            message: "SnapshotMeta",
            field: "membership",
        })?;
        Ok(SnapshotMeta {
            last_included_index: s.last_included_index,
            last_included_term: s.last_included_term,
            membership: Membership::try_from(membership)?,
        })
    }
}

impl From<&HardState> for pb::HardState {
    fn from(h: &HardState) -> pb::HardState {
        pb::HardState {
            current_term: h.current_term,
            voted_for: h.voted_for,
            commit_index: h.commit_index,
        }
    }
}

impl From<pb::HardState> for HardState {
    fn from(h: pb::HardState) -> HardState {
        HardState {
            current_term: h.current_term,
            voted_for: h.voted_for,
            commit_index: h.commit_index,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn member(id: u64, suffrage: Suffrage) -> Member {
        Member {
            id,
            name: format!("demo-{id}"),
            peer_addr: format!("demo-{id}.demo-peers.default.svc.cluster.local:7000"),
            client_addr: format!("demo-{id}.demo-peers.default.svc.cluster.local:7001"),
            suffrage,
        }
    }

    fn round_trip_entry(e: Entry) {
        let back = Entry::try_from(pb::Entry::from(&e)).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn entries_round_trip() {
        round_trip_entry(Entry::normal(3, 7, Bytes::from_static(b"put x=1")));
        round_trip_entry(Entry::normal(3, 8, Bytes::new()));
        round_trip_entry(Entry {
            term: 4,
            index: 9,
            kind: EntryKind::ConfChange(ConfChange::AddLearner(member(4, Suffrage::Learner))),
            data: Bytes::new(),
        });
        round_trip_entry(Entry {
            term: 4,
            index: 10,
            kind: EntryKind::ConfChange(ConfChange::PromoteLearner { id: 4 }),
            data: Bytes::new(),
        });
        round_trip_entry(Entry {
            term: 5,
            index: 11,
            kind: EntryKind::ConfChange(ConfChange::RemoveMember { id: 2 }),
            data: Bytes::new(),
        });
    }

    #[test]
    fn snapshot_meta_and_hard_state_round_trip() {
        let meta = SnapshotMeta {
            last_included_index: 100,
            last_included_term: 6,
            membership: Membership::new([
                member(1, Suffrage::Voter),
                member(2, Suffrage::Voter),
                member(3, Suffrage::Learner),
            ]),
        };
        assert_eq!(
            SnapshotMeta::try_from(pb::SnapshotMeta::from(&meta)).unwrap(),
            meta
        );
        let empty = SnapshotMeta::default();
        assert_eq!(
            SnapshotMeta::try_from(pb::SnapshotMeta::from(&empty)).unwrap(),
            empty
        );
        let hs = HardState {
            current_term: 9,
            voted_for: 2,
            commit_index: 77,
        };
        assert_eq!(HardState::from(pb::HardState::from(&hs)), hs);
    }

    #[test]
    fn conf_change_entry_without_conf_change_is_refused() {
        let e = pb::Entry {
            term: 1,
            index: 2,
            r#type: pb::EntryType::ConfChange.into(),
            data: Bytes::new(),
            conf_change: None,
        };
        let err = Entry::try_from(e).unwrap_err();
        assert!(err.to_string().contains("no conf_change"), "{err}");
    }

    #[test]
    fn normal_entry_with_conf_change_and_unknown_types_are_refused() {
        let with_change = pb::Entry {
            term: 1,
            index: 2,
            r#type: pb::EntryType::Normal.into(),
            data: Bytes::new(),
            conf_change: Some((&ConfChange::RemoveMember { id: 3 }).into()),
        };
        assert!(Entry::try_from(with_change).is_err());
        let unknown = pb::Entry {
            term: 1,
            index: 2,
            r#type: 42,
            data: Bytes::new(),
            conf_change: None,
        };
        assert_eq!(
            Entry::try_from(unknown).unwrap_err(),
            WireError::UnknownEnum {
                message: "Entry",
                field: "type",
                value: 42
            }
        );
        let empty_change = pb::ConfChange { change: None };
        assert!(ConfChange::try_from(empty_change).is_err());
    }

    #[test]
    fn bad_members_are_refused() {
        let mut m = pb::Member::from(&member(1, Suffrage::Voter));
        m.suffrage = pb::Suffrage::Unspecified.into();
        let err = Member::try_from(m.clone()).unwrap_err();
        assert!(err.to_string().contains("SUFFRAGE_UNSPECIFIED"), "{err}");
        m.suffrage = 9;
        assert!(matches!(
            Member::try_from(m.clone()),
            Err(WireError::UnknownEnum { .. })
        ));
        m.suffrage = pb::Suffrage::Voter.into();
        m.id = 0;
        assert!(Member::try_from(m).is_err());

        let twice = pb::Membership {
            members: vec![
                (&member(1, Suffrage::Voter)).into(),
                (&member(1, Suffrage::Learner)).into(),
            ],
        };
        let err = Membership::try_from(twice).unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");

        let no_membership = pb::SnapshotMeta {
            last_included_index: 1,
            last_included_term: 1,
            membership: None,
        };
        assert!(SnapshotMeta::try_from(no_membership).is_err());
    }
}
