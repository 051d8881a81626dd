//! Raft messages between members over gRPC (`kuberaft.raft.v1`).
//!
//! Outgoing: one task per peer ([`peer`]) with a lazily connected channel that
//! resolves the peer's DNS name again on every reconnect ([`resolve`],
//! [`channel`]). Incoming: [`service`] hands requests to the event loop.
//! Every gRPC connection, of peers and of clients, gathers its writes
//! ([`gather`]).

pub mod channel;
pub mod gather;
pub mod peer;
pub mod resolve;
pub mod service;
pub mod snapshot_sender;

use std::collections::BTreeMap;
use std::path::PathBuf;

use tokio::sync::mpsc;

use crate::raft::{Membership, Message, NodeId};
use peer::{Outbound, PeerContext};

/// Most messages queued for one peer before new ones are dropped; a peer
/// that slow is treated like a lossy link (Raft retransmits).
const PEER_QUEUE: usize = 4096;

struct PeerHandle {
    addr: String,
    tx: mpsc::Sender<Outbound>,
}

/// The set of peer tasks, kept in step with the membership.
pub struct Transport {
    ctx: PeerContext,
    peers: BTreeMap<NodeId, PeerHandle>,
}

impl Transport {
    pub fn new(ctx: PeerContext) -> Transport {
        Transport {
            ctx,
            peers: BTreeMap::new(),
        }
    }

    /// Starts tasks for new members, stops those of removed ones, and
    /// restarts any whose address changed. Must run inside a tokio runtime.
    pub fn sync(&mut self, membership: &Membership, runtime: &tokio::runtime::Handle) {
        let me = self.ctx.me;
        self.peers.retain(|id, h| {
            membership
                .members
                .get(id)
                .is_some_and(|m| m.peer_addr == h.addr)
        });
        for m in membership.members.values() {
            if m.id == me || self.peers.contains_key(&m.id) {
                continue;
            }
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            runtime.spawn(peer::run_peer(
                self.ctx.clone(),
                m.id,
                m.peer_addr.clone(),
                rx,
            ));
            self.peers.insert(
                m.id,
                PeerHandle {
                    addr: m.peer_addr.clone(),
                    tx,
                },
            );
        }
    }

    /// Queues a message; never blocks. A message to a member without a task
    /// (not in the configuration) is dropped.
    pub fn send(&self, msg: Message) {
        if let Some(p) = self.peers.get(&msg.to) {
            let _ = p.tx.try_send(Outbound::Message(msg));
        }
    }

    /// Stops streaming a snapshot to `to`, if one is being streamed; queued
    /// in order with the messages, so a snapshot sent after it is not stopped.
    pub fn cancel_snapshot(&self, to: NodeId) {
        if let Some(p) = self.peers.get(&to) {
            let _ = p.tx.try_send(Outbound::CancelSnapshot);
        }
    }

    pub fn send_snapshot(&self, msg: Message, file: PathBuf) -> bool {
        match self.peers.get(&msg.to) {
            Some(p) => p.tx.try_send(Outbound::Snapshot { msg, file }).is_ok(),
            None => false,
        }
    }
}
