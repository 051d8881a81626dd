//! The nemesis: faults done to a minority of members, one round after
//! another, for a bounded time. Each round picks up to `max_faulty`
//! members (half the time including the leader), gives each a fault (or cuts
//! them off together, as a minority that still talks within itself, or as a
//! minority that also reaches one member of the majority, a bridge; rarely,
//! it kills every member at once), holds it for a while, heals every member,
//! and lets the cluster settle. Clients reach every member throughout.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::cluster::DockerCluster;
use crate::cluster::status;
use crate::linearizability::Recorder;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// `docker kill` (SIGKILL), later `docker start` with the same volume.
    Kill,
    /// `docker stop` (SIGTERM: a leader hands over), later `docker start`.
    Restart,
    /// `docker pause` (frozen: alive but silent), later `docker unpause`.
    Pause,
    /// Cut off from its peers on the pods network, later reconnected;
    /// clients still reach it.
    Partition,
    /// Several members cut off together from the rest: they reach each
    /// other and nobody else (clients still reach them).
    Split,
    /// A partition that is not transitive: a minority cut off from the rest
    /// except one member of the majority, the bridge, which reaches both
    /// sides (clients still reach everyone).
    Bridge,
    /// The bridge member of a `Bridge` round.
    Bridging,
    /// Every member killed at once and started again: only what is on the
    /// volumes survives (a rare round).
    KillAll,
}

impl Fault {
    const ALL: [Fault; 4] = [Fault::Kill, Fault::Restart, Fault::Pause, Fault::Partition];

    fn inflict(self, c: &DockerCluster, id: u64) {
        match self {
            Fault::Kill => c.kill(id),
            Fault::Restart => c.stop(id, 10),
            Fault::Pause => c.pause(id),
            Fault::Partition => c.disconnect(id),
            Fault::Split | Fault::Bridge => c.move_to_side(id),
            Fault::Bridging => c.bridge_to_side(id),
            Fault::KillAll => c.kill(id),
        }
    }

    fn heal(self, c: &DockerCluster, id: u64) {
        match self {
            Fault::Kill | Fault::Restart | Fault::KillAll => c.start_member(id),
            Fault::Pause => c.unpause(id),
            Fault::Partition => c.reconnect(id),
            Fault::Split | Fault::Bridge => c.back_from_side(id),
            Fault::Bridging => c.unbridge(id),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// At most this many members are faulty at once (keep below a majority
    /// for a cluster that must stay available).
    pub max_faulty: usize,
    pub hold: (Duration, Duration),
    pub settle: (Duration, Duration),
    pub seed: u64,
}

/// What the nemesis did, on the history's clock.
#[derive(Debug, Default)]
pub struct Report {
    /// (nanoseconds on the recorder's clock, what happened)
    pub timeline: Vec<(u64, String)>,
    pub counts: BTreeMap<Fault, usize>,
    /// When no majority of members could reach each other (every member killed at once): from
    /// the first kill to the end of the round's settling, on the recorder's clock.
    pub no_quorum: Vec<(u64, u64)>,
}

impl Report {
    pub fn faults(&self) -> usize {
        self.counts.values().sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (at, what) in &self.timeline {
            writeln!(f, "  {:>10.3} ms  {what}", *at as f64 / 1e6)?;
        }
        Ok(())
    }
}

/// Which member leads, as far as the answering members say.
fn current_leader(c: &DockerCluster, runtime: &tokio::runtime::Handle) -> Option<u64> {
    runtime.block_on(async {
        for id in c.ids() {
            if let Some(s) = status(&c.client_addr(id)).await
                && s.leader_id != 0
            {
                return Some(s.leader_id);
            }
        }
        None
    })
}

/// Runs rounds of faults until `until`, then leaves every member healed.
/// Blocking: call it from a thread that may block (`spawn_blocking`).
pub fn run(
    c: &DockerCluster,
    cfg: &Config,
    until: Instant,
    recorder: &Recorder,
    runtime: &tokio::runtime::Handle,
) -> Report {
    let mut rng = SmallRng::seed_from_u64(cfg.seed);
    let mut report = Report::default();
    let between = |rng: &mut SmallRng, (lo, hi): (Duration, Duration)| {
        Duration::from_millis(rng.random_range(lo.as_millis() as u64..=hi.as_millis() as u64))
    };
    // Leave time for the last round to heal and settle before `until`.
    while Instant::now() + cfg.hold.1 + cfg.settle.0 < until {
        let mut candidates = c.ids();
        let mut targets = Vec::new();
        if rng.random_bool(0.5)
            && let Some(leader) = current_leader(c, runtime)
        {
            candidates.retain(|id| *id != leader);
            targets.push(leader);
        }
        let how_many = rng.random_range(1..=cfg.max_faulty);
        while targets.len() < how_many && !candidates.is_empty() {
            targets.push(candidates.remove(rng.random_range(0..candidates.len())));
        }
        // Group faults count once per round.
        let group = if rng.random_bool(0.07) {
            Some(Fault::KillAll)
        } else if targets.len() > 1 && rng.random_bool(0.25) {
            Some(Fault::Split)
        } else if !candidates.is_empty() && rng.random_bool(0.2) {
            Some(Fault::Bridge)
        } else {
            None
        };
        let faults: Vec<(u64, Fault)> = match group {
            Some(Fault::KillAll) => c.ids().into_iter().map(|id| (id, Fault::KillAll)).collect(),
            Some(Fault::Bridge) => {
                let bridge = candidates[rng.random_range(0..candidates.len())];
                targets
                    .iter()
                    .map(|id| (*id, Fault::Bridge))
                    .chain([(bridge, Fault::Bridging)])
                    .collect()
            }
            Some(g) => targets.iter().map(|id| (*id, g)).collect(),
            None => targets
                .iter()
                .map(|id| (*id, Fault::ALL[rng.random_range(0..Fault::ALL.len())]))
                .collect(),
        };
        if let Some(g) = group {
            *report.counts.entry(g).or_default() += 1;
        }
        let round_started = recorder.now();
        for (id, fault) in &faults {
            fault.inflict(c, *id);
            if group.is_none() {
                *report.counts.entry(*fault).or_default() += 1;
            }
            report
                .timeline
                .push((recorder.now(), format!("{fault:?} member {id}")));
        }
        std::thread::sleep(between(&mut rng, cfg.hold));
        for (id, fault) in faults.iter().rev() {
            fault.heal(c, *id);
            report
                .timeline
                .push((recorder.now(), format!("healed {fault:?} of member {id}")));
        }
        std::thread::sleep(between(&mut rng, cfg.settle));
        if group == Some(Fault::KillAll) {
            report.no_quorum.push((round_started, recorder.now()));
        }
    }
    report
}
