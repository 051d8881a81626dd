//! A cluster of simulated members on a virtual clock. One millisecond of
//! virtual time is one tick: the network delivers what is due, then every
//! member that is up and not paused takes its turn — it handles the
//! messages that arrived, ticks once, and handles its `Ready`s.
//!
//! Everything random comes from one seeded generator and every collection is
//! ordered, so a seed replays exactly.

use std::collections::BTreeMap;

use kuberaft_node::raft::{Config, Member, Membership, NodeId, Role, Suffrage};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::checker::{Checker, Violation};
use super::config_model::ConfigModel;
use super::disk::Disk;
use super::network::{InFlight, NetFaults, Network};
use super::node::{Envelope, Output, SimNode};
use super::state_machine::Applied;
use super::trace::{CrashPoint, Event, Trace};

/// How the members are configured and how their turns are cut.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Every member's `Config`, but for its id and seed. The default is the
    /// paper's timing (150–300 ms elections, 50 ms heartbeats) in 1 ms ticks.
    pub config: Config,
    /// Probability of handling `Ready` after each input rather than once at
    /// the end of the turn (the server batches; both orders must be safe).
    pub ready_after_each_input: f64,
    /// Per-member tick rates in (0, 1]: a member with rate 0.8 misses one
    /// tick in five, as a slow clock would.
    pub clock_skew: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            config: Config::with_tick_ms(1, 1, 0),
            ready_after_each_input: 0.0,
            clock_skew: false,
        }
    }
}

/// More messages in flight than this is a storm: members answering
/// messages with more messages than they received, without end. (A healthy
/// cluster has at most a pipeline window per follower.)
const MAX_IN_FLIGHT: usize = 100_000;

enum Input {
    Deliver(Envelope),
    SnapshotReport { to: NodeId, ok: bool },
}

pub fn member(id: NodeId, suffrage: Suffrage) -> Member {
    Member {
        id,
        name: format!("m{id}"),
        peer_addr: format!("m{id}:7000"),
        client_addr: format!("m{id}:7001"),
        suffrage,
    }
}

pub struct Cluster {
    pub now: u64,
    pub rng: SmallRng,
    pub nodes: BTreeMap<NodeId, SimNode>,
    pub net: Network,
    pub ck: Checker,
    opts: ClusterOptions,
    paused_until: BTreeMap<NodeId, u64>,
    inbox: BTreeMap<NodeId, Vec<Input>>,
    tick_rate: BTreeMap<NodeId, f64>,
    out: Output,
    /// Entries applied since the driver last looked: (member, incarnation,
    /// index, meaning).
    pub applied: Vec<(NodeId, u32, u64, Applied)>,
    /// Reads answered since the driver last looked: (member, ctx, index).
    pub reads: Vec<(NodeId, u64, u64)>,
}

impl Cluster {
    /// `voters` members with ids `1..=voters`, booted from the bootstrap
    /// snapshot that names them all.
    pub fn new(
        seed: u64,
        voters: u64,
        faults: NetFaults,
        opts: ClusterOptions,
        trace: Trace,
    ) -> Result<Cluster, Violation> {
        let membership = Membership::new((1..=voters).map(|id| member(id, Suffrage::Voter)));
        let ck = Checker::new(ConfigModel::of(&membership), trace);
        let mut c = Cluster {
            now: 0,
            rng: SmallRng::seed_from_u64(seed),
            nodes: BTreeMap::new(),
            net: Network::new(faults),
            ck,
            opts,
            paused_until: BTreeMap::new(),
            inbox: BTreeMap::new(),
            tick_rate: BTreeMap::new(),
            out: Output::default(),
            applied: Vec::new(),
            reads: Vec::new(),
        };
        for id in 1..=voters {
            c.add_node(id, Disk::new(membership.clone()))?;
        }
        Ok(c)
    }

    /// Starts a member that joins later: an empty disk, no configuration
    /// (it learns one from the leader's log or snapshot).
    pub fn add_node(&mut self, id: NodeId, disk: Disk) -> Result<(), Violation> {
        let cfg = Config {
            id,
            ..self.opts.config.clone()
        };
        let mut node = SimNode::new(cfg, disk);
        let seed = self.rng.random();
        node.start(seed, &mut self.ck)?;
        let rate = if self.opts.clock_skew {
            self.rng.random_range(0.75..=1.0)
        } else {
            1.0
        };
        self.tick_rate.insert(id, rate);
        self.nodes.insert(id, node);
        Ok(())
    }

    // ---------------------------------------------------------------- faults

    pub fn crash(&mut self, id: NodeId, at: CrashPoint) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        match at {
            CrashPoint::Idle => {
                node.crash(&mut self.ck, at);
                self.inbox.remove(&id);
                self.paused_until.remove(&id);
            }
            // Hits inside the member's next `Ready`.
            _ => node.crash_in_ready = Some(at),
        }
    }

    pub fn restart(&mut self, id: NodeId) -> Result<(), Violation> {
        let seed = self.rng.random();
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        if node.is_up() {
            return Ok(());
        }
        node.start(seed, &mut self.ck)?;
        let raw = node.raw().expect("just started");
        self.ck.event(Event::Restart {
            node: id,
            term: raw.term(),
            last_index: raw.last_index(),
            commit: raw.commit_index(),
        });
        Ok(())
    }

    /// Freezes a member (a long GC pause, a stopped VM): it neither ticks nor
    /// handles messages until `until`; what arrives meanwhile waits for it.
    pub fn pause(&mut self, id: NodeId, until: u64) {
        if self.nodes.get(&id).is_some_and(|n| n.is_up()) {
            self.paused_until.insert(id, until);
            self.ck.event(Event::Pause { node: id, until });
        }
    }

    pub fn is_paused(&self, id: NodeId) -> bool {
        self.paused_until.get(&id).is_some_and(|&t| t > self.now)
    }

    pub fn resume_all(&mut self) {
        self.paused_until.clear();
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.is_up())
    }

    /// Up and not paused: can take a client's request now.
    pub fn is_responsive(&self, id: NodeId) -> bool {
        self.is_up(id) && !self.is_paused(id)
    }

    /// The live member leading the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter_map(|n| n.raw().map(|r| (n.id, r)))
            .filter(|(_, r)| r.role() == Role::Leader)
            .max_by_key(|(_, r)| r.term())
            .map(|(id, _)| id)
    }

    // ------------------------------------------------------------------ time

    /// Runs one millisecond of virtual time.
    pub fn run_ms(&mut self) -> Result<(), Violation> {
        self.ck.now = self.now;
        while let Some(item) = self.net.pop_due(self.now) {
            self.arrive(item);
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.turn(id)?;
        }
        if self.net.in_flight() > MAX_IN_FLIGHT {
            let census = self.net.census();
            let top: Vec<String> = census
                .iter()
                .take(6)
                .map(|(k, n)| format!("{n} x {k}"))
                .collect();
            return Err(Violation(format!(
                "message storm: {} messages in flight ({})",
                self.net.in_flight(),
                top.join(", ")
            )));
        }
        self.now += 1;
        Ok(())
    }

    fn arrive(&mut self, item: InFlight) {
        match item {
            InFlight::Message {
                env,
                sender_incarnation,
                reports,
            } => {
                let (from, to) = (env.msg.from, env.msg.to);
                let deliverable = self.is_up(to) && !self.net.is_cut(from, to);
                if self.ck.trace.messages {
                    let what = if deliverable { "deliver" } else { "lost" };
                    let e = Event::Message {
                        what,
                        from,
                        to,
                        term: env.msg.term,
                        detail: format!("{:?}", env.msg.body),
                    };
                    self.ck.event(e);
                }
                if reports {
                    self.report_snapshot(from, sender_incarnation, to, deliverable);
                }
                if deliverable {
                    self.inbox.entry(to).or_default().push(Input::Deliver(env));
                }
            }
            InFlight::SnapshotReport {
                leader,
                incarnation,
                to,
                ok,
            } => self.report_snapshot(leader, incarnation, to, ok),
        }
    }

    fn report_snapshot(&mut self, leader: NodeId, incarnation: u32, to: NodeId, ok: bool) {
        let same = self
            .nodes
            .get(&leader)
            .is_some_and(|n| n.is_up() && n.incarnation == incarnation);
        if same {
            let input = Input::SnapshotReport { to, ok };
            self.inbox.entry(leader).or_default().push(input);
        }
    }

    fn turn(&mut self, id: NodeId) -> Result<(), Violation> {
        if !self.is_up(id) || self.is_paused(id) {
            return Ok(());
        }
        let inputs = self.inbox.remove(&id).unwrap_or_default();
        let rate = self.tick_rate.get(&id).copied().unwrap_or(1.0);
        let tick = rate >= 1.0 || self.rng.random_bool(rate);
        let tick_at = if inputs.is_empty() {
            0
        } else {
            self.rng.random_range(0..=inputs.len())
        };
        let p = self.opts.ready_after_each_input;
        let node = self.nodes.get_mut(&id).expect("listed");
        let ck = &mut self.ck;
        let out = &mut self.out;
        let mut inputs = inputs.into_iter();
        for i in 0..=inputs.len() {
            if i == tick_at && tick {
                node.tick(ck)?;
            } else if let Some(input) = inputs.next() {
                match input {
                    Input::Deliver(env) => {
                        let _ = node.step(env, ck)?;
                    }
                    Input::SnapshotReport { to, ok } => node.report_snapshot(to, ok, ck)?,
                }
            } else {
                continue;
            }
            if p > 0.0 && self.rng.random_bool(p) {
                node.handle_ready(ck, out)?;
            }
            if !node.is_up() {
                break;
            }
        }
        node.handle_ready(ck, out)?;
        self.dispatch(id);
        Ok(())
    }

    /// Hands a member's output to the network and to the drivers.
    pub fn dispatch(&mut self, id: NodeId) {
        let incarnation = self.nodes.get(&id).map_or(0, |n| n.incarnation);
        // Only streams already on the network stop; one handed out in this
        // very turn (in `out.messages`) was queued behind the cancellation
        // or, if it came first, is one the stop reached too late for.
        for (leader, to) in self.out.cancelled_snapshots.drain(..) {
            self.ck.stats.snapshots_cancelled += self.net.cancel_snapshots(leader, to);
        }
        for env in self.out.messages.drain(..) {
            self.net.send(self.now, env, incarnation, &mut self.rng);
        }
        for (node, index, applied) in self.out.applied.drain(..) {
            self.applied.push((node, incarnation, index, applied));
        }
        self.reads.append(&mut self.out.reads);
        for (leader, to) in self.out.unsent_snapshots.drain(..) {
            let input = Input::SnapshotReport { to, ok: false };
            self.inbox.entry(leader).or_default().push(input);
        }
    }
}
