//! Cluster lifecycle benchmarks (issue 4), with real member processes on
//! 127.0.0.1:
//!
//! 1. A new member joins a cluster holding `LIFECYCLE_KEYS` (100,000) keys of
//!    1 KiB and is promoted: time to promotion, and the rate at which the
//!    leader streamed its snapshot.
//! 2. Write throughput while a snapshot is taken, sent and installed,
//!    against the steady rate of the same cluster and load. A learner (so
//!    that pausing it changes no quorum) is stopped for a second; the leader
//!    takes a snapshot, which compacts the entries the learner lacks; the
//!    learner is resumed, and the leader streams it the snapshot, which it
//!    installs. Only the writes from asking for the snapshot until the
//!    learner has installed it count, round after round for 30 s. (An
//!    earlier version paused a voter for 300 ms: the entries in flight to it
//!    usually covered the snapshot, so it rarely installed one, and the
//!    pause itself counted as "during".)
//!
//! ```text
//! cargo bench -p kuberaft-tests --bench lifecycle
//! LIFECYCLE_KEYS=20000 cargo bench -p kuberaft-tests --bench lifecycle   # quicker
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kuberaft_proto::admin as adminpb;
use kuberaft_proto::kv as kvpb;
use kuberaft_tests::cluster::{Cluster, admin, kv, status, wait_for_leader};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes keys `from..to` with `writers` concurrent clients through `addr`.
async fn load(addr: &str, from: u64, to: u64, value_len: usize, writers: u64) {
    let next = Arc::new(AtomicU64::new(from));
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (addr, next) = (addr.to_string(), next.clone());
            tokio::spawn(async move {
                let mut c = kv(&addr).await;
                let value = vec![b'x'; value_len];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= to {
                        return;
                    }
                    let req = kvpb::PutRequest {
                        key: format!("key-{i:08}").into_bytes(),
                        value: value.clone(),
                    };
                    while c.put(req.clone()).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// Closed-loop writes for `seconds`, each acknowledged one counted in
/// `done`; returns writes per second over the whole run.
async fn throughput(addr: &str, seconds: f64, clients: u64, done: Arc<AtomicU64>) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let before = done.load(Ordering::Relaxed);
    let tasks: Vec<_> = (0..clients)
        .map(|w| {
            let (addr, stop, done) = (addr.to_string(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut c = kv(&addr).await;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let req = kvpb::PutRequest {
                        key: format!("tp-{w}-{}", i % 1000).into_bytes(),
                        value: vec![b'v'; 256],
                    };
                    if c.put(req).await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed) - before;
    let elapsed = start.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    n as f64 / elapsed
}

fn sent_snapshot_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("sent snapshot"))
        .map(str::to_string)
        .collect()
}

fn field(line: &str, name: &str) -> Option<f64> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    line[at..]
        .split_whitespace()
        .next()?
        .trim_matches('"')
        .parse()
        .ok()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let keys = env_u64("LIFECYCLE_KEYS", 100_000);
    println!(
        "lifecycle bench: 3 members on 127.0.0.1 (release build, fsync on), {keys} keys of 1 KiB"
    );
    let mut c = Cluster::start_with(3, &["--snapshot-threshold-entries", "1000000000"]);
    let addrs = c.client_addrs();
    let (leader, _) = wait_for_leader(&addrs, Duration::from_secs(20)).await;
    let leader_addr = c.member(leader).client_addr();

    let started = Instant::now();
    load(&leader_addr, 0, keys, 1024, 32).await;
    println!(
        "loaded {keys} keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let snap = admin(&c.member(leader).admin_addr())
        .await
        .snapshot(adminpb::SnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    println!(
        "leader snapshot: index {}, {:.1} MB",
        snap.last_included_index,
        snap.size_bytes as f64 / 1e6
    );

    // 1. A new member joins and is promoted.
    let id = c.add_node();
    let member = c.member_pb(id);
    let started = Instant::now();
    let mut req = tonic::Request::new(adminpb::AddMemberRequest {
        member: Some(member),
        learner_only: false,
    });
    req.set_timeout(Duration::from_secs(600));
    admin(&leader_addr)
        .await
        .add_member(req)
        .await
        .expect("AddMember");
    let promotion = started.elapsed().as_secs_f64();
    let new_addr = c.member(id).client_addr();
    let s = status(&new_addr).await.expect("status of the new member");
    println!(
        "new member {id}: promoted to voter {promotion:.2} s after AddMember (applied index {})",
        s.applied_index
    );
    // The new member's side: the stream itself (first chunk to the file
    // fsynced and checked), then the install into its state machine.
    let joined_log = c.log_of(id);
    for line in joined_log.lines() {
        if line.contains("received snapshot")
            && let (Some(bytes), Some(secs)) = (field(line, "bytes"), field(line, "seconds"))
        {
            println!(
                "snapshot transfer (stream, as received): {:.1} MB in {secs:.2} s = {:.0} MB/s",
                bytes / 1e6,
                bytes / 1e6 / secs
            );
        }
        if line.contains("installed snapshot from the leader")
            && let Some(secs) = field(line, "seconds")
        {
            let step = |name| field(line, name).map_or("?".to_string(), |s| format!("{s:.2} s"));
            println!(
                "snapshot install on the new member: {secs:.2} s (reading the file {}, clearing the log {}, the state machine {}, syncing {})",
                step("read_seconds"),
                step("log_cleared_seconds"),
                step("state_machine_seconds"),
                step("sync_seconds")
            );
        }
    }
    // The leader's side: from opening the file to the follower's answer,
    // so it includes the install.
    let log = c.log_of(leader);
    for line in sent_snapshot_lines(&log) {
        if let (Some(bytes), Some(secs)) = (field(&line, "bytes"), field(&line, "seconds")) {
            println!(
                "snapshot sent and installed (leader's view): {:.1} MB in {secs:.2} s = {:.0} MB/s",
                bytes / 1e6,
                bytes / 1e6 / secs
            );
        }
    }

    // 2. Writes while snapshots are taken and sent. A learner (so that
    // pausing it changes no quorum) falls behind, the leader takes a
    // snapshot that compacts what the learner lacks, and streams it; the
    // learner installs it. Writes are counted only from the moment the
    // snapshot is asked for until the learner has installed it, against
    // the steady rate of the same cluster and load.
    let learner = c.add_node();
    let mut req = tonic::Request::new(adminpb::AddMemberRequest {
        member: Some(c.member_pb(learner)),
        learner_only: true,
    });
    req.set_timeout(Duration::from_secs(600));
    admin(&leader_addr)
        .await
        .add_member(req)
        .await
        .expect("AddMember (learner)");
    let learner_pid = c.member(learner).pid().expect("the learner runs");
    let learner_addr = c.member(learner).client_addr();
    // The steady rate is measured once the learner has caught up (its own
    // first snapshot install would otherwise fall inside it).
    let commit = status(&leader_addr)
        .await
        .expect("status of the leader")
        .commit_index;
    let caught_up = Instant::now();
    while status(&learner_addr)
        .await
        .is_none_or(|s| s.applied_index < commit)
    {
        assert!(
            caught_up.elapsed() < Duration::from_secs(120),
            "the learner did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = Arc::new(AtomicU64::new(0));
    let steady = throughput(&leader_addr, 10.0, 32, done.clone()).await;
    println!("steady writes: {steady:.0}/s (32 clients, 256-byte values, 4 voters and a learner)");
    // What a stopped learner costs by itself, without any snapshot: the
    // rounds below stop it too.
    // SAFETY: kill(2) on a child process the cluster owns.
    unsafe { libc::kill(learner_pid, libc::SIGSTOP) };
    let stopped = throughput(&leader_addr, 5.0, 32, done.clone()).await;
    // SAFETY: as above.
    unsafe { libc::kill(learner_pid, libc::SIGCONT) };
    println!(
        "writes while the learner is stopped, no snapshot: {stopped:.0}/s = {:.0}% of steady",
        stopped / steady * 100.0
    );
    let busy = Arc::new(AtomicBool::new(true));
    let background = {
        let (busy, done) = (busy.clone(), done.clone());
        let leader_admin = c.member(leader).admin_addr();
        tokio::spawn(async move {
            let signal = |sig| {
                // SAFETY: kill(2) on a child process the cluster owns.
                unsafe { libc::kill(learner_pid, sig) };
            };
            let (mut writes, mut seconds, mut rounds) = (0u64, 0f64, 0u32);
            let (mut taking, mut taking_writes) = (0f64, 0u64);
            while busy.load(Ordering::Relaxed) {
                // Long enough that the entries in flight to it when it
                // stopped do not reach the snapshot's index.
                signal(libc::SIGSTOP);
                tokio::time::sleep(Duration::from_millis(1000)).await;
                let (started, before) = (Instant::now(), done.load(Ordering::Relaxed));
                let snap = admin(&leader_admin)
                    .await
                    .snapshot(adminpb::SnapshotRequest {})
                    .await;
                signal(libc::SIGCONT);
                let Ok(snap) = snap else { continue };
                let taken = (
                    started.elapsed().as_secs_f64(),
                    done.load(Ordering::Relaxed) - before,
                );
                let target = snap.into_inner().last_included_index;
                let mut installed = false;
                while busy.load(Ordering::Relaxed) {
                    if let Some(s) = status(&learner_addr).await
                        && s.snapshot_index >= target
                        && s.applied_index >= target
                    {
                        installed = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if installed {
                    writes += done.load(Ordering::Relaxed) - before;
                    seconds += started.elapsed().as_secs_f64();
                    rounds += 1;
                    taking += taken.0;
                    taking_writes += taken.1;
                }
            }
            signal(libc::SIGCONT);
            (writes, seconds, rounds, taking_writes, taking)
        })
    };
    throughput(&leader_addr, 30.0, 32, done).await;
    busy.store(false, Ordering::Relaxed);
    let (writes, seconds, rounds, taking_writes, taking) =
        background.await.unwrap_or((0, 0.0, 0, 0, 0.0));
    let during = writes as f64 / seconds.max(1e-9);
    println!(
        "writes while a snapshot is taken, sent and installed ({rounds} rounds, {seconds:.1} s in all): {during:.0}/s = {:.0}% of steady",
        during / steady * 100.0
    );
    let while_taking = taking_writes as f64 / taking.max(1e-9);
    let (rest_writes, rest) = (writes - taking_writes, seconds - taking);
    println!(
        "  of which taking it ({taking:.1} s): {while_taking:.0}/s = {:.0}%; sending and installing it ({rest:.1} s): {:.0}/s = {:.0}%",
        while_taking / steady * 100.0,
        rest_writes as f64 / rest.max(1e-9),
        rest_writes as f64 / rest.max(1e-9) / steady * 100.0
    );
    let installs: Vec<f64> = c
        .log_of(learner)
        .lines()
        .filter(|l| l.contains("installed snapshot from the leader"))
        .filter_map(|l| field(l, "seconds"))
        .collect();
    println!(
        "installs on the learner: {} ({})",
        installs.len(),
        installs
            .iter()
            .map(|s| format!("{s:.2} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let leader_log = c.log_of(leader);
    let sends = sent_snapshot_lines(&leader_log);
    println!("snapshots sent by the leader in all: {}", sends.len());
    let stopped = leader_log
        .lines()
        .filter(|l| l.contains("stopped streaming a snapshot"))
        .count();
    println!("snapshot streams stopped because the learner caught up through entries: {stopped}");
    for line in sends.iter().skip(1) {
        if let (Some(bytes), Some(secs)) = (field(line, "bytes"), field(line, "seconds")) {
            println!(
                "  under load, to member {}: {:.1} MB in {secs:.2} s = {:.0} MB/s",
                field(line, "peer").unwrap_or(0.0),
                bytes / 1e6,
                bytes / 1e6 / secs
            );
        }
    }
}
