//! Benchmarks of the pure Raft core: `cargo bench -p kuberaft-tests --bench core`.
//!
//! 1. **Throughput**: proposals committed per second through three cores with
//!    no I/O — the leader takes a batch of proposals per turn, the followers
//!    append it, the acknowledgements commit it. This is the ceiling the
//!    server's storage and network then lower.
//! 2. **Figure 16 of the Raft paper**: how long a cluster takes to replace a
//!    crashed leader, in virtual time, with the default timeouts (elections
//!    after 150–300 ms, heartbeats every 50 ms) and 1 ms message delay, over
//!    1,000 crashes each for 3 and 5 members.
//!
//! `BENCH_SECONDS` (default 3) sets how much CPU time each throughput run
//! takes; `BENCH_CRASHES` (default 1000; 0 skips it) the number of leader
//! crashes per size.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kuberaft_node::raft::{
    Config, Member, Membership, Message, NodeId, RawNode, RestoredState, Role, SnapshotMeta,
    Suffrage,
};
use kuberaft_tests::sim::trace::{CrashPoint, Trace};
use kuberaft_tests::sim::{Cluster, ClusterOptions, NetFaults};
use rand::RngExt;

/// CPU time this thread has used. The throughput is reported per second of
/// it as well as per wall-clock second, because on a shared machine other
/// processes take turns on the CPU and wall time then measures them too.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let seconds = env_u64("BENCH_SECONDS", 3);
    let crashes = env_u64("BENCH_CRASHES", 1_000) as usize;
    println!(
        "kuberaft core benchmarks (release build, one thread; an Entry is {} bytes)\n",
        std::mem::size_of::<kuberaft_node::raft::Entry>()
    );
    for batch in [64, 256, 1024, 4096] {
        throughput(batch, Duration::from_secs(seconds));
    }
    if crashes > 0 {
        println!();
        for members in [3, 5] {
            figure_16(members, crashes);
        }
    }
}

// ------------------------------------------------------------------ throughput

/// Three cores wired directly: what each `Ready` asks to persist is taken as
/// persisted at once (no I/O), messages are delivered at once.
struct Trio {
    nodes: Vec<RawNode>,
    mail: Vec<Message>,
    applied: u64,
}

impl Trio {
    fn new() -> Trio {
        let membership = Membership::new((1..=3).map(|id| Member {
            id,
            name: format!("m{id}"),
            peer_addr: String::new(),
            client_addr: String::new(),
            suffrage: Suffrage::Voter,
        }));
        let nodes = (1..=3)
            .map(|id| {
                let restored = RestoredState {
                    snapshot: SnapshotMeta {
                        membership: membership.clone(),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                RawNode::new(Config::with_tick_ms(id, 1, id), restored).expect("valid")
            })
            .collect();
        Trio {
            nodes,
            mail: Vec::new(),
            applied: 0,
        }
    }

    /// Hands out and "handles" every node's Ready; returns whether any had one.
    fn turn(&mut self) -> bool {
        let mut busy = false;
        for (i, n) in self.nodes.iter_mut().enumerate() {
            while n.has_ready() {
                busy = true;
                let rd = n.ready();
                self.mail.extend(rd.leader_messages);
                self.mail.extend(rd.messages);
                if i == 0 {
                    self.applied += rd.committed_entries.len() as u64;
                }
                std::hint::black_box(&rd.entries);
                n.advance();
            }
        }
        let mail = std::mem::take(&mut self.mail);
        for m in mail {
            let to = (m.to - 1) as usize;
            let _ = self.nodes[to].step(m);
        }
        busy
    }

    fn settle(&mut self) {
        while self.turn() {}
    }
}

fn throughput(batch: usize, run_for: Duration) {
    let mut t = Trio::new();
    while t.nodes[0].role() != Role::Leader {
        t.nodes[0].tick();
        t.settle();
    }
    t.settle();
    let payload = Bytes::from(vec![7u8; 16]);
    let start = Instant::now();
    let cpu_start = thread_cpu_time();
    let mut proposed = 0u64;
    let applied_before = t.applied;
    while thread_cpu_time() - cpu_start < run_for {
        for _ in 0..10 {
            for _ in 0..batch {
                t.nodes[0].propose(payload.clone()).expect("leader");
            }
            proposed += batch as u64;
            t.settle();
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = (thread_cpu_time() - cpu_start).as_secs_f64();
    let committed = t.applied - applied_before;
    assert_eq!(committed, proposed, "every proposal committed");
    println!(
        "throughput, 3 cores, no I/O, batches of {batch:>4}: {:>9.0} proposals committed per CPU second ({:>9.0} per wall second; {committed} in {cpu:.2} s CPU, {wall:.2} s wall)",
        committed as f64 / cpu,
        committed as f64 / wall
    );
}

// ------------------------------------------------------------------- Figure 16

/// Crashes the leader `crashes` times and measures, in virtual time, how long
/// until another member leads a later term.
fn figure_16(members: u64, crashes: usize) {
    let mut c = Cluster::new(
        16 + members,
        members,
        NetFaults::perfect(1),
        ClusterOptions::default(),
        Trace::new(64),
    )
    .expect("cluster");
    let mut times = Vec::with_capacity(crashes);
    for _ in 0..crashes {
        let leader = wait_for_stable_leader(&mut c);
        // Let a random part of a heartbeat interval pass, so the crash falls
        // anywhere between two heartbeats (as in the paper's experiment).
        let wait = c.rng.random_range(0..200);
        for _ in 0..wait {
            c.run_ms().expect("no invariant breaks");
        }
        let term = c.nodes[&leader].raw().expect("up").term();
        c.crash(leader, CrashPoint::Idle);
        let crashed_at = c.now;
        loop {
            c.run_ms().expect("no invariant breaks");
            let new = c
                .leader()
                .filter(|l| c.nodes[l].raw().is_some_and(|r| r.term() > term));
            if new.is_some() {
                break;
            }
            assert!(c.now - crashed_at < 10_000, "no new leader within 10 s");
        }
        times.push(c.now - crashed_at);
        c.restart(leader).expect("restart");
    }
    times.sort_unstable();
    let pct = |p: f64| times[((times.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    let over_300 = times.iter().filter(|t| **t > 300).count();
    println!(
        "Figure 16, {members} members, {crashes} leader crashes, 150-300 ms timeouts, 1 ms delay: new leader after p50 {} ms, p90 {} ms, p99 {} ms, max {} ms (min {} ms; {:.1}% over 300 ms)",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        times[times.len() - 1],
        times[0],
        over_300 as f64 * 100.0 / times.len() as f64
    );
}

/// Runs until one member leads and every member up follows it.
fn wait_for_stable_leader(c: &mut Cluster) -> NodeId {
    for _ in 0..10_000 {
        c.run_ms().expect("no invariant breaks");
        let Some(l) = c.leader() else { continue };
        let term = c.nodes[&l].raw().expect("up").term();
        let all = c.nodes.values().all(|n| {
            n.raw()
                .is_none_or(|r| r.term() == term && r.leader_id() == l)
        });
        if all {
            return l;
        }
    }
    panic!("no stable leader within 10 s");
}
