//! Fencing a member that lost its data dir.
//!
//! A member that restarts with an empty data dir has forgotten its votes and
//! its log. Rejoining under its old identity could let it vote twice in one
//! term, or let a leader count entries it no longer holds. So every data dir
//! gets a random *incarnation* when it is created, every RPC carries the
//! sender's (requests in their header, answers in the `kuberaft-incarnation`
//! metadata), and every member remembers durably the incarnation it first saw
//! for each peer. A peer that shows up with another one is refused, with a
//! `kuberaft-fenced` marker; a member that is refused so stops with a message
//! that tells the operator what to do: remove it and add it back as a new
//! member (removing a member forgets its incarnation everywhere).
//!
//! What this cannot catch: a member that lost its data before any peer heard
//! from it, and a peer that never heard from its old incarnation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::event::Event;
use crate::raft::NodeId;

/// Metadata key of the sender's incarnation on answers.
pub const INCARNATION: &str = "kuberaft-incarnation";
/// Metadata key set on a refusal because of a changed incarnation.
pub const FENCED: &str = "kuberaft-fenced";

#[derive(Clone)]
pub struct Incarnations {
    mine: u64,
    known: Arc<Mutex<BTreeMap<NodeId, u64>>>,
    /// Peers refused for showing up with another incarnation, reported in Status so that an
    /// operator can replace them (remove, add back), until they are forgotten.
    refused: Arc<Mutex<BTreeSet<NodeId>>>,
    events: mpsc::UnboundedSender<Event>,
}

impl Incarnations {
    pub fn new(
        mine: u64,
        known: BTreeMap<NodeId, u64>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Incarnations {
        Incarnations {
            mine,
            known: Arc::new(Mutex::new(known)),
            refused: Arc::default(),
            events,
        }
    }

    pub fn mine(&self) -> u64 {
        self.mine
    }

    /// Accepts `peer` in `incarnation`, learning it the first time; refuses
    /// it if it was known in another one. 0 means "not told" and passes.
    pub fn check(&self, peer: NodeId, incarnation: u64) -> Result<(), Status> {
        if incarnation == 0 {
            return Ok(());
        }
        let mut known = match self.known.lock() {
            Ok(k) => k,
            Err(p) => p.into_inner(),
        };
        match known.get(&peer) {
            Some(&k) if k == incarnation => Ok(()),
            Some(&k) => {
                lock(&self.refused).insert(peer);
                Err(fenced(peer, incarnation, k))
            }
            None => {
                known.insert(peer, incarnation);
                let _ = self.events.send(Event::PeerIncarnation {
                    peer,
                    incarnation: Some(incarnation),
                });
                Ok(())
            }
        }
    }

    /// Forgets `peer` (it left the cluster): a new incarnation of it may be
    /// added back later.
    pub fn forget(&self, peer: NodeId) -> bool {
        let mut known = match self.known.lock() {
            Ok(k) => k,
            Err(p) => p.into_inner(),
        };
        lock(&self.refused).remove(&peer);
        known.remove(&peer).is_some()
    }

    /// The peers refused since they were last forgotten: they lost their data dir.
    pub fn refused(&self) -> Vec<NodeId> {
        lock(&self.refused).iter().copied().collect()
    }

    /// Checks the incarnation an answer carried in its metadata.
    pub fn check_answer(&self, peer: NodeId, metadata: &MetadataMap) -> Result<(), Status> {
        let incarnation = metadata
            .get(INCARNATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        self.check(peer, incarnation)
    }

    /// Puts our incarnation on an answer.
    pub fn stamp(&self, metadata: &mut MetadataMap) {
        if let Ok(v) = self.mine.to_string().parse() {
            metadata.insert(INCARNATION, v);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn fenced(peer: NodeId, seen: u64, known: u64) -> Status {
    let mut s = Status::failed_precondition(format!(
        "member {peer} came back with a new data dir (incarnation {seen:#x}; this member knew it as {known:#x}): \
         its votes and log are gone, and rejoining under its old identity could break Raft's \
         one-vote-per-term rule. Remove it (raftctl member remove {peer}) and add it back as a new member"
    ));
    s.metadata_mut()
        .insert(FENCED, tonic::metadata::MetadataValue::from_static("1"));
    s
}

/// Whether a peer refused us because our incarnation changed.
pub fn is_fenced(status: &Status) -> bool {
    status.metadata().contains_key(FENCED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_back_with_another_incarnation_is_refused_and_reported_until_forgotten() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let inc = Incarnations::new(7, BTreeMap::from([(2, 0xaa)]), tx);
        assert!(inc.check(2, 0xaa).is_ok());
        assert!(inc.check(3, 0xcc).is_ok(), "learned the first time");
        assert!(inc.refused().is_empty());
        let refusal = inc
            .check(2, 0xbb)
            .expect_err("a new incarnation of member 2");
        assert!(is_fenced(&refusal));
        assert_eq!(inc.refused(), vec![2]);
        assert!(inc.forget(2), "removed from the configuration");
        assert!(inc.refused().is_empty());
        assert!(inc.check(2, 0xbb).is_ok(), "added back as a new member");
    }
}
