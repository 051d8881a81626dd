//! A scripted cluster for scenario tests: the test decides whose clock runs,
//! which messages arrive and which are lost, who crashes, so a scene reads
//! like the article or the paper ("node 3's timer fires first", "the vote
//! request of C reaches A before D's does").
//!
//! Members are the simulator's (`sim::node::SimNode`: a real `RawNode`, a
//! simulated disk, the toy state machine, the `Ready` contract), and the
//! simulator's checker watches every step, so a scene also fails if any of
//! Raft's safety properties breaks along the way.
//!
//! Messages wait in flight until the script delivers or drops them. Time
//! passes only when the script says so: [`Scene::tick`] one member,
//! [`Scene::elapse`] all of them, one millisecond at a time, with everything
//! sent in one millisecond delivered in the next.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use kuberaft_node::raft::{
    ConfChange, Config, Index, Membership, Message, MessageBody, NodeId, ProposeError, RawNode,
    Role, Status, StepError, Suffrage, Term,
};

use crate::sim::checker::{Checker, Violation};
use crate::sim::cluster::member;
use crate::sim::config_model::ConfigModel;
use crate::sim::disk::Disk;
use crate::sim::node::{Envelope, Output, SimNode};
use crate::sim::state_machine::{Applied, Command};
use crate::sim::trace::{CrashPoint, Trace};

/// Most deliveries [`Scene::deliver_all`] makes before it decides the
/// members talk forever.
const MAX_DELIVERIES: usize = 100_000;

/// A client's write, to ask later whether it was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The member the client sent it to, and where that member put it.
    pub member: NodeId,
    pub index: Index,
    pub command: Command,
}

pub struct Scene {
    nodes: BTreeMap<NodeId, SimNode>,
    ck: Checker,
    in_flight: VecDeque<Envelope>,
    cut: BTreeSet<(NodeId, NodeId)>,
    out: Output,
    /// Writes answered: the tickets whose member applied them.
    answered: Vec<Ticket>,
    waiting: Vec<Ticket>,
    next_seq: u32,
}

impl Scene {
    /// `n` members with the default settings: elections after 150–300 ms,
    /// heartbeats every 50 ms, one tick per millisecond.
    pub fn new(n: u64) -> Scene {
        Scene::with_config(n, |_| {})
    }

    /// `n` members whose `Config` `tune` adjusts.
    pub fn with_config(n: u64, tune: impl Fn(&mut Config)) -> Scene {
        let membership = Membership::new((1..=n).map(|id| member(id, Suffrage::Voter)));
        let mut ck = Checker::new(ConfigModel::of(&membership), Trace::new(0));
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let mut cfg = Config::with_tick_ms(id, 1, id);
            tune(&mut cfg);
            let mut node = SimNode::new(cfg, Disk::new(membership.clone()));
            node.start(id, &mut ck).unwrap_or_else(|v| panic!("{v}"));
            nodes.insert(id, node);
        }
        Scene {
            nodes,
            ck,
            in_flight: VecDeque::new(),
            cut: BTreeSet::new(),
            out: Output::default(),
            answered: Vec::new(),
            waiting: Vec::new(),
            next_seq: 1,
        }
    }

    fn check(&self, r: Result<(), Violation>) {
        if let Err(v) = r {
            panic!("invariant broken: {v}\ntrace:\n{}", self.ck.trace.render());
        }
    }

    fn node(&self, id: NodeId) -> &SimNode {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no member {id}"))
    }

    /// The running core of member `id` (panics if it is down).
    pub fn raw(&self, id: NodeId) -> &RawNode {
        self.node(id)
            .raw()
            .unwrap_or_else(|| panic!("member {id} is down"))
    }

    /// Handles `id`'s `Ready`s and puts what it sent in flight.
    fn flush(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("member");
        let r = node.handle_ready(&mut self.ck, &mut self.out);
        self.check(r);
        self.in_flight.extend(self.out.messages.drain(..));
        for (node, index, applied) in std::mem::take(&mut self.out.applied) {
            if let Applied::Command { command, .. } = applied {
                let t = Ticket {
                    member: node,
                    index,
                    command,
                };
                if let Some(pos) = self.waiting.iter().position(|w| *w == t) {
                    self.answered.push(self.waiting.swap_remove(pos));
                }
            }
        }
        self.out.reads.clear();
        for (leader, to) in std::mem::take(&mut self.out.unsent_snapshots) {
            self.report_snapshot(leader, to, false);
        }
    }

    fn report_snapshot(&mut self, leader: NodeId, to: NodeId, ok: bool) {
        if let Some(node) = self.nodes.get_mut(&leader) {
            let r = node.report_snapshot(to, ok, &mut self.ck);
            self.check(r);
            self.flush(leader);
        }
    }

    // ------------------------------------------------------------------ time

    /// One tick of member `id`'s clock; what it sends stays in flight.
    pub fn tick(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("member");
        let r = node.tick(&mut self.ck);
        self.check(r);
        self.flush(id);
    }

    /// Runs `id`'s clock alone until its election timer fires (it becomes a
    /// pre-candidate or candidate). Panics after 1,000 ticks.
    pub fn fire_election_timer(&mut self, id: NodeId) {
        for _ in 0..1_000 {
            self.tick(id);
            if matches!(self.role(id), Role::PreCandidate | Role::Candidate) {
                return;
            }
        }
        panic!("member {id}'s election timer never fired");
    }

    /// `ms` milliseconds pass for every running member; what is sent in one
    /// millisecond arrives in the next (unless a link is cut).
    pub fn elapse(&mut self, ms: u64) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        self.elapse_on(&ids, ms);
    }

    /// `ms` milliseconds pass for the members `ids` only (the others are
    /// frozen, as a paused process is); messages to frozen members wait.
    pub fn elapse_on(&mut self, ids: &[NodeId], ms: u64) {
        for _ in 0..ms {
            self.deliver_where(|m| ids.contains(&m.to));
            for id in ids {
                if self.is_up(*id) {
                    self.tick(*id);
                }
            }
        }
    }

    /// Lets time pass (1 ms at a time, for everyone) until `done` holds;
    /// false if it did not within `max_ms`.
    pub fn elapse_until(&mut self, max_ms: u64, done: impl Fn(&Scene) -> bool) -> bool {
        for _ in 0..max_ms {
            if done(self) {
                return true;
            }
            self.elapse(1);
        }
        done(self)
    }

    // --------------------------------------------------------------- network

    /// The messages sent and not yet delivered or dropped, oldest first.
    pub fn in_flight(&self) -> impl Iterator<Item = &Message> {
        self.in_flight.iter().map(|e| &e.msg)
    }

    fn deliver(&mut self, env: Envelope) {
        let (from, to) = (env.msg.from, env.msg.to);
        let is_snapshot = matches!(env.msg.body, MessageBody::InstallSnapshot { .. });
        let arrives = self.is_up(to) && !self.cut.contains(&(from, to));
        if arrives {
            let node = self.nodes.get_mut(&to).expect("member");
            let r = node.step(env, &mut self.ck).map(|_| ());
            self.check(r);
            self.flush(to);
        }
        if is_snapshot {
            // The transport tells the sender how the stream ended.
            self.report_snapshot(from, to, arrives);
        }
    }

    /// Delivers, in order, the messages now in flight that `pick` selects;
    /// what they cause stays in flight. Returns how many were delivered.
    pub fn deliver_where(&mut self, pick: impl Fn(&Message) -> bool) -> usize {
        let (chosen, rest): (Vec<Envelope>, Vec<Envelope>) =
            self.in_flight.drain(..).partition(|e| pick(&e.msg));
        self.in_flight.extend(rest);
        let n = chosen.len();
        for env in chosen {
            self.deliver(env);
        }
        n
    }

    /// Delivers messages `pick` selects, and those they cause, until none is
    /// left that it selects.
    pub fn deliver_while(&mut self, pick: impl Fn(&Message) -> bool) -> usize {
        let mut total = 0;
        loop {
            let n = self.deliver_where(&pick);
            if n == 0 {
                return total;
            }
            total += n;
            assert!(total < MAX_DELIVERIES, "the members never stop talking");
        }
    }

    /// Delivers everything, and everything that causes, until the network
    /// is quiet (no time passes).
    pub fn deliver_all(&mut self) -> usize {
        self.deliver_while(|_| true)
    }

    /// Drops the messages in flight that `pick` selects (lost in the network).
    pub fn drop_where(&mut self, pick: impl Fn(&Message) -> bool) -> usize {
        let (dropped, rest): (Vec<Envelope>, Vec<Envelope>) =
            self.in_flight.drain(..).partition(|e| pick(&e.msg));
        self.in_flight.extend(rest);
        for env in &dropped {
            if matches!(env.msg.body, MessageBody::InstallSnapshot { .. }) {
                self.report_snapshot(env.msg.from, env.msg.to, false);
            }
        }
        dropped.len()
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        for x in a {
            for y in b {
                self.cut.insert((*x, *y));
                self.cut.insert((*y, *x));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    // --------------------------------------------------------------- members

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.is_up())
    }

    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("member");
        node.crash(&mut self.ck, CrashPoint::Idle);
    }

    /// Boots `id` from its disk; booting includes handling its first
    /// `Ready` (re-applying the committed entries after its snapshot).
    pub fn restart(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("member");
        let r = node.start(id + 1_000, &mut self.ck);
        self.check(r);
        self.flush(id);
    }

    /// Adds a member with an empty disk (it is not in any configuration
    /// until a leader adds it).
    pub fn add_empty_member(&mut self, id: NodeId) {
        let cfg = Config::with_tick_ms(id, 1, id);
        let mut node = SimNode::new(cfg, Disk::new(Membership::default()));
        let r = node.start(id, &mut self.ck);
        self.check(r);
        self.nodes.insert(id, node);
    }

    pub fn propose_conf_change(
        &mut self,
        id: NodeId,
        change: ConfChange,
    ) -> Result<Index, ProposeError> {
        let node = self.nodes.get_mut(&id).expect("member");
        let r = node.propose_conf_change(change, &mut self.ck);
        let r = match r {
            Ok(r) => r,
            Err(v) => panic!("invariant broken: {v}"),
        };
        self.flush(id);
        r
    }

    /// A client asks member `id` to set the register to `value` (the
    /// article's "set 5"). The ticket tells later whether it was answered.
    pub fn set(&mut self, id: NodeId, value: u32) -> Result<Ticket, ProposeError> {
        let command = Command {
            client: 1,
            seq: self.next_seq,
            key: 0,
            value,
        };
        self.next_seq += 1;
        let node = self.nodes.get_mut(&id).expect("member");
        let r = node.propose(command.encode(), &mut self.ck);
        let index = match r {
            Ok(Ok(index)) => index,
            Ok(Err(e)) => return Err(e),
            Err(v) => panic!("invariant broken: {v}"),
        };
        let ticket = Ticket {
            member: id,
            index,
            command,
        };
        self.waiting.push(ticket);
        self.flush(id);
        Ok(ticket)
    }

    /// Whether the client got its answer: the member applied the write.
    pub fn answered(&self, t: &Ticket) -> bool {
        self.answered.contains(t)
    }

    /// Steps a message straight into member `id` (bad input tests).
    pub fn step(&mut self, id: NodeId, m: Message) -> Result<(), StepError> {
        let node = self.nodes.get_mut(&id).expect("member");
        let r = node.step(
            Envelope {
                msg: m,
                snapshot: None,
            },
            &mut self.ck,
        );
        let r = r.unwrap_or_else(|v| panic!("invariant broken: {v}"));
        self.flush(id);
        r
    }

    /// Snapshots `id`'s state machine and compacts its log.
    pub fn compact(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("member");
        let r = node.compact(&mut self.ck);
        self.check(r);
    }

    // ---------------------------------------------------------- observations

    pub fn role(&self, id: NodeId) -> Role {
        self.raw(id).role()
    }

    pub fn term(&self, id: NodeId) -> Term {
        self.raw(id).term()
    }

    pub fn status(&self, id: NodeId) -> Status {
        self.raw(id).status()
    }

    pub fn commit_index(&self, id: NodeId) -> Index {
        self.raw(id).commit_index()
    }

    pub fn last_index(&self, id: NodeId) -> Index {
        self.raw(id).last_index()
    }

    pub fn applied_index(&self, id: NodeId) -> Index {
        self.node(id).sm.applied_index
    }

    /// The register the article's client sets, as member `id` applied it.
    pub fn value(&self, id: NodeId) -> u32 {
        self.node(id).sm.registers[0]
    }

    /// The terms of `id`'s log entries from index 1 (0 where compacted).
    pub fn log_terms(&self, id: NodeId) -> Vec<Term> {
        let raw = self.raw(id);
        (1..=raw.last_index())
            .map(|i| raw.entry(i).map_or(0, |e| e.term))
            .collect()
    }

    /// The members that are up and lead, as (member, term).
    pub fn leaders(&self) -> Vec<(NodeId, Term)> {
        self.nodes
            .values()
            .filter_map(|n| n.raw().map(|r| (n.id, r)))
            .filter(|(_, r)| r.role() == Role::Leader)
            .map(|(id, r)| (id, r.term()))
            .collect()
    }

    /// The leader of the highest term among the members that are up.
    pub fn leader(&self) -> Option<NodeId> {
        self.leaders()
            .into_iter()
            .max_by_key(|(_, t)| *t)
            .map(|(id, _)| id)
    }

    /// Time passes until some member leads; panics after `max_ms`.
    pub fn elect(&mut self, max_ms: u64) -> NodeId {
        let ok = self.elapse_until(max_ms, |s| s.leader().is_some());
        assert!(ok, "no leader within {max_ms}ms");
        self.leader().expect("just checked")
    }

    /// The member whose election timer will fire first if time passes for
    /// everyone, and in how many ticks.
    pub fn first_timer(&self) -> (NodeId, u32) {
        self.nodes
            .values()
            .filter_map(|n| n.raw().map(|r| (n.id, r.status())))
            .map(|(id, s)| {
                (
                    id,
                    s.randomized_election_timeout
                        .saturating_sub(s.election_elapsed),
                )
            })
            .min_by_key(|(id, left)| (*left, *id))
            .expect("a member is up")
    }
}
