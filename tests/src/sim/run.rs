//! One seeded run: a cluster under chaos, then healed, then held to a
//! deadline. Phase one injects the seed's faults while writers, a reader,
//! the operator and compaction keep the cluster busy; every step is checked.
//! Phase two heals everything (all members up, a perfect network) and
//! requires liveness: within [`LIVENESS_DEADLINE_MS`] a leader is known to
//! every member, every command a writer sent is committed, and every member
//! has applied the whole log.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use kuberaft_node::raft::{Index, NodeId};
use rand::RngExt;
use rand::rngs::SmallRng;

use super::checker::{Stats, Violation};
use super::client::{Reader, Writer};
use super::cluster::{Cluster, ClusterOptions};
use super::faults::{Faults, Personality, chance};
use super::operator::Operator;
use super::trace::Trace;

/// How long a healed cluster has to finish all pending work (virtual ms).
pub const LIVENESS_DEADLINE_MS: u64 = 10_000;

/// Which run, and how much of it to remember.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub seed: u64,
    pub nodes: u64,
    /// Events kept for the report of a failure; 0 keeps all.
    pub trace_capacity: usize,
    pub trace_messages: bool,
}

/// What a run did, and whether it held.
pub struct Outcome {
    pub spec: RunSpec,
    pub result: Result<Stats, Violation>,
    pub personality: String,
    pub trace: String,
    pub virtual_ms: u64,
}

impl Outcome {
    /// The command that runs this seed again, printing its whole trace.
    pub fn replay_command(&self) -> String {
        format!(
            "SIM_SEED={} SIM_NODES={} cargo test --release -p kuberaft-tests --test simulation -- replay --nocapture",
            self.spec.seed, self.spec.nodes
        )
    }

    pub fn report(&self) -> String {
        let what = match &self.result {
            Ok(_) => "passed".to_string(),
            Err(v) => format!("FAILED at t={}ms: {v}", self.virtual_ms),
        };
        format!(
            "seed {} with {} members {what}\n  replay: {}\npersonality:\n{}\ntrace:\n{}",
            self.spec.seed,
            self.spec.nodes,
            self.replay_command(),
            self.personality,
            self.trace
        )
    }
}

/// Runs one seed. A panic inside the core is caught and reported as a
/// failure of this seed, with the trace up to the panic.
pub fn run(spec: RunSpec) -> Outcome {
    let mut seed_rng = <SmallRng as rand::SeedableRng>::seed_from_u64(spec.seed);
    let personality = Personality::draw(&mut seed_rng);
    let mut trace = Trace::new(spec.trace_capacity);
    trace.messages = spec.trace_messages;
    let p = personality.clone();
    let mut config = ClusterOptions::default().config;
    p.tune(&mut config);
    let opts = ClusterOptions {
        config,
        ready_after_each_input: p.ready_after_each_input,
        clock_skew: p.clock_skew,
    };
    let cluster = Cluster::new(seed_rng.random(), spec.nodes, p.net.clone(), opts, trace);
    let mut cluster = match cluster {
        Ok(c) => c,
        Err(v) => {
            return Outcome {
                spec,
                result: Err(v),
                personality: personality.to_string(),
                trace: String::new(),
                virtual_ms: 0,
            };
        }
    };
    let mut world = World::new(&personality, spec.nodes as usize);
    let result = catch_unwind(AssertUnwindSafe(|| world.run(&mut cluster, &personality)))
        .unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(Violation(format!("panic: {msg}")))
        });
    Outcome {
        spec,
        result: result.map(|()| cluster.ck.stats.clone()),
        personality: personality.to_string(),
        trace: cluster.ck.trace.render(),
        virtual_ms: cluster.now,
    }
}

/// The actors around the cluster.
struct World {
    writers: Vec<Writer>,
    reader: Reader,
    faults: Faults,
    operator: Operator,
    compact_at: BTreeMap<NodeId, u64>,
    /// Highest command number committed per writer, and how far the
    /// committed log has been scanned for them.
    committed_seq: BTreeMap<u32, u32>,
    scanned: Index,
}

impl World {
    fn new(p: &Personality, size: usize) -> World {
        World {
            writers: (1..=p.writers)
                .map(|id| Writer::new(id, p.think_max, 400))
                .collect(),
            reader: Reader::new(p.read_every),
            faults: Faults::new(p.clone()),
            operator: Operator::new(size, 3),
            compact_at: BTreeMap::new(),
            committed_seq: BTreeMap::new(),
            scanned: 0,
        }
    }

    fn run(&mut self, c: &mut Cluster, p: &Personality) -> Result<(), Violation> {
        while c.now < p.chaos_ms {
            self.faults.act(c)?;
            if chance(&mut c.rng, p.conf_change_every) {
                self.operator.change_membership(c)?;
            }
            if chance(&mut c.rng, p.transfer_every) {
                self.operator.transfer_leadership(c)?;
            }
            self.step(c, p, true)?;
        }
        self.faults.heal(c)?;
        for w in &mut self.writers {
            w.stop_new();
        }
        let healed_at = c.now;
        let deadline = healed_at + LIVENESS_DEADLINE_MS;
        while c.now < deadline {
            self.step(c, p, false)?;
            if self.settled(c) {
                c.ck.stats.heal_ms = c.now - healed_at;
                return Ok(());
            }
        }
        Err(Violation(format!(
            "liveness: {}ms after everything healed, the cluster has not settled: {}",
            LIVENESS_DEADLINE_MS,
            self.unsettled(c)
        )))
    }

    /// One millisecond: clients act, the cluster runs, answers come back.
    fn step(&mut self, c: &mut Cluster, p: &Personality, chaos: bool) -> Result<(), Violation> {
        for w in &mut self.writers {
            w.act(c)?;
        }
        if chaos {
            self.reader.act(c)?;
        }
        c.run_ms()?;
        let applied = std::mem::take(&mut c.applied);
        for (node, incarnation, index, what) in &applied {
            for w in &mut self.writers {
                w.on_applied(*node, *incarnation, *index, what, c, chaos);
            }
        }
        let reads = std::mem::take(&mut c.reads);
        for (node, ctx, index) in reads {
            self.reader.on_answer(node, ctx, index, c)?;
        }
        self.compact(c, p)?;
        let committed = c.ck.commit_index();
        for cmd in c.ck.committed_commands(self.scanned, committed) {
            let seq = self.committed_seq.entry(cmd.client).or_insert(0);
            *seq = (*seq).max(cmd.seq);
        }
        self.scanned = committed;
        Ok(())
    }

    /// Members compact once they applied enough past their last snapshot.
    fn compact(&mut self, c: &mut Cluster, p: &Personality) -> Result<(), Violation> {
        let ids: Vec<NodeId> = c.nodes.keys().copied().collect();
        for id in ids {
            if !c.is_responsive(id) {
                continue;
            }
            let node = &c.nodes[&id];
            let since = node
                .sm
                .applied_index
                .saturating_sub(node.disk.snapshot_index());
            let threshold = match self.compact_at.get(&id) {
                Some(t) => *t,
                None => {
                    let t = c
                        .rng
                        .random_range(p.compact_min..=p.compact_max.max(p.compact_min));
                    self.compact_at.insert(id, t);
                    t
                }
            };
            if since >= threshold {
                self.compact_at.remove(&id);
                let node = c.nodes.get_mut(&id).expect("listed");
                node.compact(&mut c.ck)?;
            }
        }
        Ok(())
    }

    fn pending_commands(&self) -> Vec<(u32, u32)> {
        self.writers
            .iter()
            .filter_map(|w| w.pending())
            .filter(|(client, seq)| self.committed_seq.get(client).is_none_or(|s| s < seq))
            .collect()
    }

    /// Liveness reached: one leader known to all its members, no command
    /// pending, the whole log committed and applied everywhere.
    fn settled(&self, c: &Cluster) -> bool {
        self.unsettled_reason(c).is_none()
    }

    fn unsettled(&self, c: &Cluster) -> String {
        self.unsettled_reason(c).unwrap_or_default()
    }

    fn unsettled_reason(&self, c: &Cluster) -> Option<String> {
        let Some(leader) = c.leader() else {
            return Some("no leader".into());
        };
        let raw = c.nodes[&leader].raw().expect("leader is up");
        let pending = self.pending_commands();
        if !pending.is_empty() {
            return Some(format!(
                "leader {leader} (term {}), commands (writer, number) not committed: {pending:?}",
                raw.term()
            ));
        }
        if raw.commit_index() < raw.last_index() {
            return Some(format!(
                "leader {leader} (term {}) has committed {} of {} entries",
                raw.term(),
                raw.commit_index(),
                raw.last_index()
            ));
        }
        for id in raw.membership().members.keys() {
            let Some(m) = c.nodes.get(id).and_then(|n| n.raw().map(|r| (n, r))) else {
                return Some(format!(
                    "member {id} of leader {leader}'s configuration is not running"
                ));
            };
            let (node, r) = m;
            if r.term() != raw.term() || r.leader_id() != leader {
                return Some(format!(
                    "member {id} is in term {} following {}, not leader {leader} of term {}",
                    r.term(),
                    r.leader_id(),
                    raw.term()
                ));
            }
            if node.sm.applied_index != raw.commit_index() {
                return Some(format!(
                    "member {id} applied {} of {} committed entries",
                    node.sm.applied_index,
                    raw.commit_index()
                ));
            }
        }
        None
    }
}
