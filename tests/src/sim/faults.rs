//! The fault schedule of a run. Each seed draws a *personality* — how lossy
//! the network is, how often members crash, pause or get cut off, how members
//! are tuned — and then faults are injected at random moments according to
//! it, so different seeds stress different corners rather than all getting
//! the same average mess.

use std::collections::BTreeMap;
use std::fmt;

use kuberaft_node::raft::{Config, NodeId};
use rand::RngExt;
use rand::rngs::SmallRng;

use super::checker::Violation;
use super::cluster::Cluster;
use super::network::NetFaults;
use super::trace::{CrashPoint, Event};

/// How one run misbehaves.
#[derive(Clone, Debug)]
pub struct Personality {
    /// An election storm (see [`Personality::draw`]).
    pub storm: bool,
    /// How long faults are injected before everything heals (virtual ms).
    pub chaos_ms: u64,
    pub net: NetFaults,
    /// Mean virtual ms between two faults of each kind; 0 for never.
    pub crash_every: u64,
    pub pause_every: u64,
    pub partition_every: u64,
    pub transfer_every: u64,
    pub conf_change_every: u64,
    /// Probability that a newly elected leader is crashed or cut off within
    /// a few ms, before its own entries spread: the histories of Figure 8,
    /// where a leader leaves entries of older terms on some members only.
    pub churn: f64,
    pub read_every: u64,
    pub writers: u32,
    pub think_max: u64,
    /// A member compacts once it applied this many entries past its snapshot.
    pub compact_min: u64,
    pub compact_max: u64,
    pub ready_after_each_input: f64,
    pub clock_skew: bool,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub max_inflight_appends: usize,
    pub max_append_bytes: usize,
    pub max_promotion_lag: u64,
}

fn pick<T: Copy>(rng: &mut SmallRng, xs: &[T]) -> T {
    xs[rng.random_range(0..xs.len())]
}

impl Personality {
    pub fn draw(rng: &mut SmallRng) -> Personality {
        let delay_max = pick(rng, &[1, 3, 10, 30, 60]);
        let p = Personality {
            storm: false,
            chaos_ms: rng.random_range(2_000..=8_000),
            net: NetFaults {
                drop: pick(rng, &[0.0, 0.01, 0.05, 0.15, 0.3]),
                duplicate: pick(rng, &[0.0, 0.0, 0.02, 0.1]),
                delay_min: 1,
                delay_max,
                slow: pick(rng, &[0.0, 0.0, 0.01, 0.05]),
                slow_max: delay_max + pick(rng, &[50, 200, 500]),
            },
            crash_every: pick(rng, &[0, 300, 700, 1500]),
            pause_every: pick(rng, &[0, 0, 500, 1500]),
            partition_every: pick(rng, &[0, 200, 500, 1000]),
            transfer_every: pick(rng, &[0, 0, 300, 1000]),
            conf_change_every: pick(rng, &[0, 100, 400]),
            churn: pick(rng, &[0.0, 0.0, 0.3, 0.7]),
            read_every: pick(rng, &[0, 10, 50]),
            writers: rng.random_range(1..=4),
            think_max: pick(rng, &[0, 5, 30]),
            compact_min: pick(rng, &[3, 10, 40, 200]),
            compact_max: pick(rng, &[5, 20, 80, 400]),
            ready_after_each_input: pick(rng, &[0.0, 0.0, 0.3, 1.0]),
            clock_skew: rng.random_bool(0.3),
            pre_vote: rng.random_bool(0.85),
            check_quorum: rng.random_bool(0.85),
            max_inflight_appends: pick(rng, &[1, 2, 8, 256]),
            max_append_bytes: pick(rng, &[1, 64, 1024, 1 << 20]),
            max_promotion_lag: pick(rng, &[0, 5, 1000]),
        };
        if rng.random_bool(0.2) {
            // An election storm: nearly every new leader is cut short, one
            // entry per message on a fast network, so leaders keep leaving
            // partly replicated entries of their terms behind — the
            // histories where committing an old entry by counting (Figure 8)
            // loses it.
            Personality {
                storm: true,
                churn: 0.9,
                max_append_bytes: 1,
                net: NetFaults {
                    delay_max: 5,
                    slow: 0.0,
                    ..p.net
                },
                ..p
            }
        } else {
            p
        }
    }

    /// Applies the member tuning of this personality to a `Config`.
    pub fn tune(&self, cfg: &mut Config) {
        cfg.pre_vote = self.pre_vote;
        cfg.check_quorum = self.check_quorum;
        cfg.max_inflight_appends = self.max_inflight_appends;
        cfg.max_append_bytes = self.max_append_bytes;
        cfg.max_promotion_lag = self.max_promotion_lag;
    }
}

impl fmt::Display for Personality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = &self.net;
        let every = |ms: u64| {
            if ms == 0 {
                "never".to_string()
            } else {
                format!("~{ms}ms")
            }
        };
        if self.storm {
            writeln!(f, "  ELECTION STORM: new leaders are cut short")?;
        }
        writeln!(
            f,
            "  chaos for {}ms; network: drop {:.0}%, duplicate {:.0}%, delay {}..={}ms ({:.0}% up to {}ms)",
            self.chaos_ms,
            n.drop * 100.0,
            n.duplicate * 100.0,
            n.delay_min,
            n.delay_max,
            n.slow * 100.0,
            n.slow_max
        )?;
        writeln!(
            f,
            "  crash {}, pause {}, partition {}, transfer {}, membership change {}, read {}, new leaders cut short {:.0}%",
            every(self.crash_every),
            every(self.pause_every),
            every(self.partition_every),
            every(self.transfer_every),
            every(self.conf_change_every),
            every(self.read_every),
            self.churn * 100.0
        )?;
        writeln!(
            f,
            "  {} writers (think <= {}ms); compact every {}..{} entries; Ready after each input {:.0}%; clock skew {}",
            self.writers,
            self.think_max,
            self.compact_min,
            self.compact_max.max(self.compact_min + 1),
            self.ready_after_each_input * 100.0,
            self.clock_skew
        )?;
        write!(
            f,
            "  members: pre_vote {}, check_quorum {}, max_inflight_appends {}, max_append_bytes {}, max_promotion_lag {}",
            self.pre_vote,
            self.check_quorum,
            self.max_inflight_appends,
            self.max_append_bytes,
            self.max_promotion_lag
        )
    }
}

/// True about once every `every` calls.
pub fn chance(rng: &mut SmallRng, every: u64) -> bool {
    every != 0 && rng.random_range(0..every) == 0
}

/// A fault planned for a member at a moment.
#[derive(Clone, Copy)]
enum Planned {
    Crash(CrashPoint),
    Isolate,
}

struct Cut {
    id: u32,
    links: Vec<(NodeId, NodeId)>,
    until: u64,
}

/// Injects crashes, pauses and partitions, and undoes them when due.
pub struct Faults {
    p: Personality,
    cuts: Vec<Cut>,
    next_cut: u32,
    restarts: BTreeMap<NodeId, u64>,
    /// Faults planned for new leaders: (when, whom, what).
    planned: Vec<(u64, NodeId, Planned)>,
    /// The leader (and its term) seen at the last step.
    last_leader: Option<(NodeId, u64)>,
}

const CRASH_POINTS: [CrashPoint; 3] = [
    CrashPoint::Idle,
    CrashPoint::BeforePersist,
    CrashPoint::BeforeSend,
];

impl Faults {
    pub fn new(p: Personality) -> Faults {
        Faults {
            p,
            cuts: Vec::new(),
            next_cut: 1,
            restarts: BTreeMap::new(),
            planned: Vec::new(),
            last_leader: None,
        }
    }

    /// One millisecond of the chaos phase.
    pub fn act(&mut self, c: &mut Cluster) -> Result<(), Violation> {
        let now = c.now;
        let due: Vec<NodeId> = self
            .restarts
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.restarts.remove(&id);
            c.restart(id)?;
        }
        let mut i = 0;
        while i < self.cuts.len() {
            if self.cuts[i].until <= now {
                let cut = self.cuts.swap_remove(i);
                c.net.restore_links(&cut.links);
                c.ck.event(Event::HealPartition { id: cut.id });
            } else {
                i += 1;
            }
        }
        self.churn(c);
        if chance(&mut c.rng, self.p.crash_every) {
            self.crash(c);
        }
        if chance(&mut c.rng, self.p.pause_every) {
            let victim = self.victim(c);
            let until = now + c.rng.random_range(50..=1_000);
            if let Some(id) = victim {
                c.pause(id, until);
            }
        }
        if chance(&mut c.rng, self.p.partition_every) {
            self.partition(c);
        }
        Ok(())
    }

    /// The leader half the time (the interesting victim), else anyone up.
    fn victim(&self, c: &mut Cluster) -> Option<NodeId> {
        if c.rng.random_bool(0.5)
            && let Some(l) = c.leader()
        {
            return Some(l);
        }
        let up: Vec<NodeId> = c.nodes.keys().copied().filter(|id| c.is_up(*id)).collect();
        (!up.is_empty()).then(|| pick(&mut c.rng, &up))
    }

    fn crash(&mut self, c: &mut Cluster) {
        let Some(id) = self.victim(c) else {
            return;
        };
        let at = pick(&mut c.rng, &CRASH_POINTS);
        self.crash_member(c, id, at);
    }

    fn crash_member(&mut self, c: &mut Cluster, id: NodeId, at: CrashPoint) {
        c.crash(id, at);
        let down_for = pick(&mut c.rng, &[0, 50, 300, 1_000]);
        let back = c.now + 1 + c.rng.random_range(0..=down_for);
        self.restarts.insert(id, back);
    }

    /// Cuts new leaders short: a crash or an isolation a few ms after the
    /// election, while only some members hold what it has sent so far.
    fn churn(&mut self, c: &mut Cluster) {
        let now = c.now;
        let leader = c
            .leader()
            .map(|l| (l, c.nodes[&l].raw().map_or(0, |r| r.term())));
        if leader.is_some() && leader != self.last_leader {
            if let Some((id, _)) = leader
                && self.p.churn > 0.0
                && c.rng.random_bool(self.p.churn)
            {
                let at = now + c.rng.random_range(0..=15);
                let what = if c.rng.random_bool(0.5) {
                    Planned::Isolate
                } else {
                    Planned::Crash(pick(&mut c.rng, &CRASH_POINTS))
                };
                self.planned.push((at, id, what));
            }
            self.last_leader = leader;
        }
        let mut i = 0;
        while i < self.planned.len() {
            let (at, id, what) = self.planned[i];
            if at > now {
                i += 1;
                continue;
            }
            self.planned.swap_remove(i);
            match what {
                Planned::Crash(at) => self.crash_member(c, id, at),
                Planned::Isolate => {
                    let links: Vec<(NodeId, NodeId)> = c
                        .nodes
                        .keys()
                        .filter(|o| **o != id)
                        .flat_map(|o| [(id, *o), (*o, id)])
                        .collect();
                    self.cut(c, "new leader alone", links);
                }
            }
        }
    }

    fn partition(&mut self, c: &mut Cluster) {
        let ids: Vec<NodeId> = c.nodes.keys().copied().collect();
        if ids.len() < 2 {
            return;
        }
        let leader = c.leader();
        let mut shuffled = ids.clone();
        for i in (1..shuffled.len()).rev() {
            let j = c.rng.random_range(0..=i);
            shuffled.swap(i, j);
        }
        let minority = (ids.len() - 1) / 2;
        let (kind, side): (&'static str, Vec<NodeId>) = match c.rng.random_range(0..6) {
            0 => (
                "leader alone",
                leader.map_or_else(|| shuffled[..1].to_vec(), |l| vec![l]),
            ),
            1 => ("a minority", shuffled[..minority.max(1)].to_vec()),
            2 => (
                "a majority",
                shuffled[..ids.len() - minority.max(1)].to_vec(),
            ),
            3 => {
                // The leader can still send, but hears nothing back.
                let l = leader.unwrap_or(shuffled[0]);
                let links: Vec<_> = ids.iter().filter(|&&o| o != l).map(|&o| (o, l)).collect();
                self.cut(c, "one-way: nobody reaches the leader", links);
                return;
            }
            4 => {
                // The leader hears everyone but nobody hears it.
                let l = leader.unwrap_or(shuffled[0]);
                let links: Vec<_> = ids.iter().filter(|&&o| o != l).map(|&o| (l, o)).collect();
                self.cut(c, "one-way: the leader reaches nobody", links);
                return;
            }
            _ => {
                // Two groups that cannot talk, and one member that talks to
                // both (a "bridge"): no side has a clean majority view.
                // `shuffled[0]` is the bridge.
                let rest = &shuffled[1..];
                let half = rest.len() / 2;
                let mut links = Vec::new();
                for a in &rest[..half] {
                    for b in &rest[half..] {
                        links.push((*a, *b));
                        links.push((*b, *a));
                    }
                }
                self.cut(c, "bridge", links);
                return;
            }
        };
        let mut links = Vec::new();
        for a in &side {
            for b in ids.iter().filter(|b| !side.contains(b)) {
                links.push((*a, *b));
                links.push((*b, *a));
            }
        }
        self.cut(c, kind, links);
    }

    fn cut(&mut self, c: &mut Cluster, kind: &'static str, links: Vec<(NodeId, NodeId)>) {
        if links.is_empty() {
            return;
        }
        let id = self.next_cut;
        self.next_cut += 1;
        let until = c.now + c.rng.random_range(30..=1_500);
        c.net.cut_links(&links);
        c.ck.stats.partitions += 1;
        c.ck.event(Event::Partition {
            id,
            kind,
            links: links.clone(),
        });
        self.cuts.push(Cut { id, links, until });
    }

    /// Ends the chaos: every member up and responsive, every link restored,
    /// and from now on a network that delivers everything within 3 ms.
    pub fn heal(&mut self, c: &mut Cluster) -> Result<(), Violation> {
        self.cuts.clear();
        self.planned.clear();
        c.net.heal_all();
        c.net.faults = NetFaults {
            drop: 0.0,
            duplicate: 0.0,
            delay_min: 1,
            delay_max: 3,
            slow: 0.0,
            slow_max: 3,
        };
        c.resume_all();
        let ids: Vec<NodeId> = c.nodes.keys().copied().collect();
        for id in ids {
            if let Some(n) = c.nodes.get_mut(&id) {
                n.crash_in_ready = None;
            }
            c.restart(id)?;
        }
        self.restarts.clear();
        c.ck.event(Event::NetworkHealed);
        Ok(())
    }
}
