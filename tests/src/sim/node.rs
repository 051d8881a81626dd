//! One simulated member: a `RawNode`, its disk, its state machine, and the
//! `Ready` contract handled exactly as the server must handle it — persist,
//! send, apply, answer reads, advance — with a crash possible between any two
//! of those steps.

use bytes::Bytes;
use kuberaft_node::raft::{
    ConfChange, Config, Index, Message, MessageBody, NodeId, ProposeError, RawNode, ReadState,
    StepError,
};

use super::checker::{Checker, Violation};
use super::disk::{Disk, SnapshotImage};
use super::state_machine::{Applied, KvStateMachine};
use super::trace::{CrashPoint, Event};

/// A member that hands out this many `Ready`s in a row without any new
/// input is looping (each `Ready` handled should need fewer next time).
const MAX_READIES_PER_TURN: usize = 10_000;

/// A message on its way, with the snapshot's data when it is an
/// InstallSnapshot (the core sends only the description; the transport
/// streams the data beside it).
#[derive(Clone, Debug)]
pub struct Envelope {
    pub msg: Message,
    pub snapshot: Option<Box<SnapshotImage>>,
}

/// What a member's turn produced for the world around it.
#[derive(Debug, Default)]
pub struct Output {
    pub messages: Vec<Envelope>,
    /// Entries applied, with what they meant to the state machine.
    pub applied: Vec<(NodeId, Index, Applied)>,
    /// ReadIndex answers: (member, ctx, read index), given once applied.
    pub reads: Vec<(NodeId, u64, Index)>,
    /// InstallSnapshot messages that could not be sent because the member no
    /// longer stores that snapshot: (member, to). Their transfers failed.
    pub unsent_snapshots: Vec<(NodeId, NodeId)>,
    /// Snapshot streams the leader stopped: (leader, to). Those in flight
    /// before them never arrive and are never reported.
    pub cancelled_snapshots: Vec<(NodeId, NodeId)>,
}

pub struct SimNode {
    pub id: NodeId,
    cfg: Config,
    raw: Option<RawNode>,
    pub disk: Disk,
    /// Valid while the member is up; rebuilt from the snapshot on restart.
    pub sm: KvStateMachine,
    /// Bumped on every restart, so late answers to a dead incarnation are
    /// recognised (the snapshot reports of the transport, client answers).
    pub incarnation: u32,
    /// Snapshot data that arrived with InstallSnapshot messages since the
    /// last `Ready`, for the `Ready` that installs one of them.
    arrived_snapshots: Vec<SnapshotImage>,
    /// Read states waiting for the state machine to reach their index.
    reads: Vec<ReadState>,
    /// A crash armed to hit inside the next `Ready`.
    pub crash_in_ready: Option<CrashPoint>,
}

impl SimNode {
    pub fn new(cfg: Config, disk: Disk) -> SimNode {
        SimNode {
            id: cfg.id,
            cfg,
            raw: None,
            disk,
            sm: KvStateMachine::default(),
            incarnation: 0,
            arrived_snapshots: Vec::new(),
            reads: Vec::new(),
            crash_in_ready: None,
        }
    }

    pub fn is_up(&self) -> bool {
        self.raw.is_some()
    }

    pub fn raw(&self) -> Option<&RawNode> {
        self.raw.as_ref()
    }

    /// Boots (or reboots) the member from its disk. `seed` feeds its election
    /// timer, so a restarted member does not replay its old timeouts.
    pub fn start(&mut self, seed: u64, ck: &mut Checker) -> Result<(), Violation> {
        let mut cfg = self.cfg.clone();
        cfg.seed = seed;
        let raw = RawNode::new(cfg, self.disk.restored_state()).map_err(|e| {
            Violation(format!(
                "member {} cannot start from its disk: {e}",
                self.id
            ))
        })?;
        self.sm = self.disk.snapshot().state.clone();
        self.incarnation += 1;
        self.arrived_snapshots.clear();
        self.reads.clear();
        self.crash_in_ready = None;
        ck.on_restart(self.id, &raw)?;
        self.raw = Some(raw);
        Ok(())
    }

    /// The power goes out: only the disk's synced contents survive.
    pub fn crash(&mut self, ck: &mut Checker, at: CrashPoint) {
        if self.raw.take().is_none() {
            return;
        }
        self.disk.crash();
        self.arrived_snapshots.clear();
        self.reads.clear();
        self.crash_in_ready = None;
        ck.stats.crashes += 1;
        ck.event(Event::Crash { node: self.id, at });
    }

    // --------------------------------------------------------------- inputs

    pub fn tick(&mut self, ck: &mut Checker) -> Result<(), Violation> {
        let Some(raw) = self.raw.as_mut() else {
            return Ok(());
        };
        raw.tick();
        ck.observe(self.id, raw)
    }

    /// Delivers a message. A refusal (`StepError`) is the core's business and
    /// fine; the checker still looks at what it did.
    pub fn step(
        &mut self,
        env: Envelope,
        ck: &mut Checker,
    ) -> Result<Result<(), StepError>, Violation> {
        let Some(raw) = self.raw.as_mut() else {
            return Ok(Ok(()));
        };
        if let Some(image) = env.snapshot {
            self.arrived_snapshots.push(*image);
        }
        let r = raw.step(env.msg);
        ck.observe(self.id, raw)?;
        Ok(r)
    }

    pub fn propose(
        &mut self,
        data: Bytes,
        ck: &mut Checker,
    ) -> Result<Result<Index, ProposeError>, Violation> {
        let Some(raw) = self.raw.as_mut() else {
            return Ok(Err(ProposeError::NotLeader { leader_id: 0 }));
        };
        let r = raw.propose(data);
        ck.observe(self.id, raw)?;
        Ok(r)
    }

    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
        ck: &mut Checker,
    ) -> Result<Result<Index, ProposeError>, Violation> {
        let Some(raw) = self.raw.as_mut() else {
            return Ok(Err(ProposeError::NotLeader { leader_id: 0 }));
        };
        let r = raw.propose_conf_change(change);
        if let Ok(index) = r {
            ck.on_conf_proposed(self.id, raw, index)?;
        }
        ck.observe(self.id, raw)?;
        Ok(r)
    }

    pub fn read_index(
        &mut self,
        ctx: u64,
        ck: &mut Checker,
    ) -> Result<Result<(), ProposeError>, Violation> {
        let Some(raw) = self.raw.as_mut() else {
            return Ok(Err(ProposeError::NotLeader { leader_id: 0 }));
        };
        let r = raw.read_index(ctx);
        ck.observe(self.id, raw)?;
        Ok(r)
    }

    pub fn transfer_leader(
        &mut self,
        to: NodeId,
        ck: &mut Checker,
    ) -> Result<Result<(), ProposeError>, Violation> {
        let Some(raw) = self.raw.as_mut() else {
            return Ok(Err(ProposeError::NotLeader { leader_id: 0 }));
        };
        let r = raw.transfer_leader(to);
        if r.is_ok() {
            ck.stats.transfers += 1;
            ck.event(Event::TransferLeader { from: self.id, to });
        }
        ck.observe(self.id, raw)?;
        Ok(r)
    }

    /// The transport reports how streaming a snapshot to `to` ended.
    pub fn report_snapshot(
        &mut self,
        to: NodeId,
        ok: bool,
        ck: &mut Checker,
    ) -> Result<(), Violation> {
        let Some(raw) = self.raw.as_mut() else {
            return Ok(());
        };
        raw.report_snapshot(to, ok);
        ck.observe(self.id, raw)
    }

    /// Snapshots the state machine at its applied index and compacts the log
    /// behind it: store the image durably first, then tell the core (§7).
    pub fn compact(&mut self, ck: &mut Checker) -> Result<(), Violation> {
        let Some(raw) = self.raw.as_mut() else {
            return Ok(());
        };
        let index = self.sm.applied_index;
        if index <= self.disk.snapshot_index() {
            return Ok(());
        }
        let Some(meta) = raw.snapshot_meta_at(index) else {
            return Err(Violation(format!(
                "member {} applied {index} but the core describes no snapshot there",
                self.id
            )));
        };
        let image = SnapshotImage {
            meta: meta.clone(),
            state: self.sm.clone(),
        };
        ck.on_snapshot(self.id, &image)?;
        self.disk.save_snapshot(image);
        raw.compact(meta);
        ck.stats.compactions += 1;
        ck.event(Event::Compacted {
            node: self.id,
            index,
        });
        ck.observe(self.id, raw)
    }

    // ---------------------------------------------------------------- ready

    /// Hands messages to the network, with the snapshot data an
    /// InstallSnapshot needs.
    fn send(
        &mut self,
        ck: &mut Checker,
        out: &mut Output,
        messages: Vec<Message>,
    ) -> Result<(), Violation> {
        let id = self.id;
        for msg in messages {
            ck.on_send(id, &msg, &self.disk)?;
            let snapshot = match &msg.body {
                MessageBody::InstallSnapshot { snapshot } => {
                    let stored = self.disk.snapshot();
                    if &stored.meta != snapshot {
                        // The member replaced that snapshot since it
                        // queued the message (it installed a newer one in
                        // this very Ready, say): the data is gone, so the
                        // transfer fails, and the leader, if it still is
                        // one, retries with the snapshot it has now.
                        if stored.meta.last_included_index < snapshot.last_included_index {
                            return Err(Violation(format!(
                                "member {id} sends a snapshot of index {} but stores an older one, of index {}",
                                snapshot.last_included_index, stored.meta.last_included_index
                            )));
                        }
                        out.unsent_snapshots.push((id, msg.to));
                        continue;
                    }
                    Some(Box::new(stored.clone()))
                }
                _ => None,
            };
            out.messages.push(Envelope { msg, snapshot });
        }
        Ok(())
    }

    /// Handles every `Ready` the member has, in the order of the contract.
    pub fn handle_ready(&mut self, ck: &mut Checker, out: &mut Output) -> Result<(), Violation> {
        let id = self.id;
        for _ in 0..MAX_READIES_PER_TURN {
            let Some(raw) = self.raw.as_mut() else {
                return Ok(());
            };
            if !raw.has_ready() {
                return Ok(());
            }
            let mut rd = raw.ready();
            ck.on_ready(id, &rd, &self.disk)?;
            // Before anything is sent: a new snapshot to the same follower
            // may be in this Ready, and only the earlier ones stop.
            for to in std::mem::take(&mut rd.cancelled_snapshots) {
                out.cancelled_snapshots.push((id, to));
            }
            // 0. A leader's requests leave before its own write (§10.2.1):
            // a crash right after loses its entries here but not there.
            let early = std::mem::take(&mut rd.leader_messages);
            self.send(ck, out, early)?;
            if self.crash_in_ready == Some(CrashPoint::BeforePersist) {
                self.crash(ck, CrashPoint::BeforePersist);
                return Ok(());
            }

            // 1. Persist: snapshot, then entries (truncating), then hard state.
            let image = match &rd.snapshot {
                None => None,
                Some(meta) => {
                    let found = self.arrived_snapshots.iter().position(|s| &s.meta == meta);
                    let Some(pos) = found else {
                        return Err(Violation(format!(
                            "member {id}'s Ready installs a snapshot of index {} that never arrived",
                            meta.last_included_index
                        )));
                    };
                    Some(self.arrived_snapshots.swap_remove(pos))
                }
            };
            self.arrived_snapshots.clear();
            let old_hard = self.disk.latest_hard_state();
            let must_keep = match rd.entries.first() {
                Some(first) if first.index <= self.disk.last_index() && image.is_none() => {
                    ck.stats.truncations += 1;
                    ck.known_committed_from(&self.disk, first.index)
                }
                _ => None,
            };
            if let Some(image) = &image {
                ck.on_snapshot(id, image)?;
            }
            self.disk
                .write(image.clone(), &rd.entries, rd.hard_state, rd.must_sync())
                .map_err(|e| Violation(format!("member {id}: {e}")))?;
            ck.on_persist(
                id,
                &rd.entries,
                old_hard,
                rd.hard_state,
                must_keep,
                &self.disk,
            )?;
            if let Some(image) = image {
                ck.stats.snapshots_installed += 1;
                ck.event(Event::SnapshotInstalled {
                    node: id,
                    index: image.meta.last_included_index,
                    term: image.meta.last_included_term,
                });
                // Installing the snapshot's data is part of persisting it.
                self.sm = image.state;
            }
            if self.crash_in_ready == Some(CrashPoint::BeforeSend) {
                self.crash(ck, CrashPoint::BeforeSend);
                return Ok(());
            }

            // 2. Send.
            self.send(ck, out, rd.messages)?;

            // 3. Apply.
            for e in &rd.committed_entries {
                if e.index != self.sm.applied_index + 1 {
                    return Err(Violation(format!(
                        "member {id} is handed entry {} to apply after {}",
                        e.index, self.sm.applied_index
                    )));
                }
                let applied = self.sm.apply(e);
                ck.on_apply(id, e, self.sm.history)?;
                out.applied.push((id, e.index, applied));
            }

            // 4. Answer the reads whose index is applied.
            self.reads.extend(rd.read_states);
            let applied = self.sm.applied_index;
            self.reads.retain(|r| {
                if r.index <= applied {
                    out.reads.push((id, r.ctx, r.index));
                    false
                } else {
                    true
                }
            });

            // 5. Advance.
            let raw = self.raw.as_mut().expect("up");
            raw.advance();
            ck.observe(id, raw)?;
        }
        Err(Violation(format!(
            "member {id} still has work after {MAX_READIES_PER_TURN} Readies without new input: it never settles"
        )))
    }
}
