//! Core types ↔ protobuf (minimal; to be replaced by the storage branch's
//! complete version).

use kuberaft_proto::raft as pb;

use crate::raft::{self, ConfChange, EntryKind, Member, Membership, Suffrage};

pub fn member_to_pb(m: &Member) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name.clone(),
        peer_addr: m.peer_addr.clone(),
        client_addr: m.client_addr.clone(),
        suffrage: match m.suffrage {
            Suffrage::Voter => pb::Suffrage::Voter as i32,
            Suffrage::Learner => pb::Suffrage::Learner as i32,
        },
    }
}

pub fn member_from_pb(m: &pb::Member) -> Result<Member, String> {
    let suffrage = match pb::Suffrage::try_from(m.suffrage) {
        Ok(pb::Suffrage::Voter) => Suffrage::Voter,
        Ok(pb::Suffrage::Learner) => Suffrage::Learner,
        _ => {
            return Err(format!(
                "member {} has no valid suffrage ({})",
                m.id, m.suffrage
            ));
        }
    };
    Ok(Member {
        id: m.id,
        name: m.name.clone(),
        peer_addr: m.peer_addr.clone(),
        client_addr: m.client_addr.clone(),
        suffrage,
    })
}

pub fn membership_to_pb(m: &Membership) -> pb::Membership {
    pb::Membership {
        members: m.members.values().map(member_to_pb).collect(),
    }
}

pub fn membership_from_pb(m: &pb::Membership) -> Result<Membership, String> {
    Ok(Membership::new(
        m.members
            .iter()
            .map(member_from_pb)
            .collect::<Result<Vec<_>, _>>()?,
    ))
}

pub fn entry_to_pb(e: &raft::Entry) -> pb::Entry {
    let (kind, conf_change) = match &e.kind {
        EntryKind::Normal => (pb::EntryType::Normal, None),
        EntryKind::ConfChange(c) => (
            pb::EntryType::ConfChange,
            Some(pb::ConfChange {
                change: Some(match c {
                    ConfChange::AddLearner(m) => {
                        pb::conf_change::Change::AddLearner(member_to_pb(m))
                    }
                    ConfChange::PromoteLearner { id } => {
                        pb::conf_change::Change::PromoteLearner(*id)
                    }
                    ConfChange::RemoveMember { id } => pb::conf_change::Change::RemoveMember(*id),
                }),
            }),
        ),
    };
    pb::Entry {
        term: e.term,
        index: e.index,
        r#type: kind as i32,
        data: e.data.clone(),
        conf_change,
    }
}

pub fn entry_from_pb(e: pb::Entry) -> Result<raft::Entry, String> {
    let kind = match pb::EntryType::try_from(e.r#type) {
        Ok(pb::EntryType::Normal) => EntryKind::Normal,
        Ok(pb::EntryType::ConfChange) => {
            let change = e
                .conf_change
                .and_then(|c| c.change)
                .ok_or_else(|| format!("entry {} is a membership change without one", e.index))?;
            EntryKind::ConfChange(match change {
                pb::conf_change::Change::AddLearner(m) => {
                    ConfChange::AddLearner(member_from_pb(&m)?)
                }
                pb::conf_change::Change::PromoteLearner(id) => ConfChange::PromoteLearner { id },
                pb::conf_change::Change::RemoveMember(id) => ConfChange::RemoveMember { id },
            })
        }
        Err(_) => return Err(format!("entry {} has unknown type {}", e.index, e.r#type)),
    };
    Ok(raft::Entry {
        term: e.term,
        index: e.index,
        kind,
        data: e.data,
    })
}

pub fn snapshot_meta_to_pb(m: &raft::SnapshotMeta) -> pb::SnapshotMeta {
    pb::SnapshotMeta {
        last_included_index: m.last_included_index,
        last_included_term: m.last_included_term,
        membership: Some(membership_to_pb(&m.membership)),
    }
}

pub fn snapshot_meta_from_pb(m: &pb::SnapshotMeta) -> Result<raft::SnapshotMeta, String> {
    Ok(raft::SnapshotMeta {
        last_included_index: m.last_included_index,
        last_included_term: m.last_included_term,
        membership: membership_from_pb(m.membership.as_ref().ok_or("snapshot has no membership")?)?,
    })
}
