//! The simulator, run over many seeds: each seed is a cluster of 3, 5 or 7
//! members under its own schedule of faults, checked after every step and
//! required to settle once the faults heal (see `kuberaft_tests::sim`).
//!
//! ```text
//! cargo test --release -p kuberaft-tests --test simulation             # 2,000 seeds (CI)
//! SIM_SEEDS=100000 cargo test --release -p kuberaft-tests --test simulation
//! SIM_SEED_BASE=50000 SIM_SEEDS=1000 ...                                # another range
//! SIM_SEED=1234 SIM_NODES=5 cargo test --release -p kuberaft-tests --test simulation -- replay --nocapture
//! ```
//!
//! A failing seed prints the command that replays it and the trace of its
//! last events; the replay prints every event (`SIM_TRACE=messages` adds
//! every message).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use kuberaft_tests::sim::{Outcome, RunSpec, Stats, run};

const DEFAULT_SEEDS: u64 = 2_000;
const SIZES: [u64; 3] = [3, 5, 7];
/// Events kept per run for the report of a failure.
const TRACE_TAIL: usize = 300;
/// Failures printed in full; the rest are listed by seed.
const PRINTED_FAILURES: usize = 3;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a number"),
    }
}

#[test]
fn simulation() {
    let seeds = env_u64("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let base = env_u64("SIM_SEED_BASE").unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    // SIM_PROGRESS=1 names each seed as it starts and ends (a seed that hangs).
    let progress = std::env::var("SIM_PROGRESS").is_ok_and(|v| v == "1");
    let next = AtomicU64::new(0);
    let failures: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    let totals: Mutex<(Stats, u64)> = Mutex::new((Stats::default(), 0));
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut stats = Stats::default();
                let mut virtual_ms = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= seeds {
                        break;
                    }
                    let spec = RunSpec {
                        seed: base + i,
                        nodes: SIZES[(i % 3) as usize],
                        trace_capacity: TRACE_TAIL,
                        trace_messages: false,
                    };
                    let started = Instant::now();
                    if progress {
                        eprintln!("start seed {} ({} members)", spec.seed, spec.nodes);
                    }
                    let outcome = run(spec);
                    if progress {
                        eprintln!(
                            "done  seed {} in {:.2}s",
                            outcome.spec.seed,
                            started.elapsed().as_secs_f64()
                        );
                    }
                    virtual_ms += outcome.virtual_ms;
                    match &outcome.result {
                        Ok(s) => stats.add(s),
                        Err(_) => failures.lock().expect("no panics hold it").push(outcome),
                    }
                }
                let mut t = totals.lock().expect("no panics hold it");
                t.0.add(&stats);
                t.1 += virtual_ms;
            });
        }
    });
    let elapsed = started.elapsed();
    let (stats, virtual_ms) = totals.into_inner().expect("threads done");
    println!(
        "{seeds} seeds ({base}..{}) on {threads} threads in {:.1}s; {:.0} virtual s",
        base + seeds,
        elapsed.as_secs_f64(),
        virtual_ms as f64 / 1000.0
    );
    println!(
        "exercised: {} elections, {} entries committed, {} membership changes, {} snapshots installed, {} snapshot streams cancelled, {} compactions, {} log truncations, {} crashes, {} partitions, {} transfers, {} reads, {} client answers, {} messages; slowest settle after heal {}ms",
        stats.elections,
        stats.committed,
        stats.conf_changes,
        stats.snapshots_installed,
        stats.snapshots_cancelled,
        stats.compactions,
        stats.truncations,
        stats.crashes,
        stats.partitions,
        stats.transfers,
        stats.reads,
        stats.client_answers,
        stats.messages,
        stats.heal_ms
    );
    let mut failures = failures.into_inner().expect("threads done");
    if failures.is_empty() {
        return;
    }
    failures.sort_by_key(|o| o.spec.seed);
    for f in failures.iter().take(PRINTED_FAILURES) {
        eprintln!("\n{}", f.report());
    }
    eprintln!("\nfailures, one line each:");
    for f in &failures {
        if let Err(v) = &f.result {
            eprintln!("  seed {} ({} members): {v}", f.spec.seed, f.spec.nodes);
        }
    }
    let listed: Vec<String> = failures
        .iter()
        .map(|o| format!("{}/{}", o.spec.seed, o.spec.nodes))
        .collect();
    panic!(
        "{} of {seeds} seeds failed (seed/members): {}",
        failures.len(),
        listed.join(" ")
    );
}

/// Replays one seed with its whole trace: `SIM_SEED` and `SIM_NODES` (by
/// default seed 0 with 5 members, so this is also a plain test).
#[test]
fn replay() {
    let seed = env_u64("SIM_SEED").unwrap_or(0);
    let nodes = env_u64("SIM_NODES").unwrap_or(5);
    let messages = std::env::var("SIM_TRACE").is_ok_and(|v| v == "messages");
    let outcome = run(RunSpec {
        seed,
        nodes,
        trace_capacity: 0,
        trace_messages: messages,
    });
    println!("{}", outcome.report());
    if let Err(v) = &outcome.result {
        panic!("seed {seed} with {nodes} members failed: {v}");
    }
}
