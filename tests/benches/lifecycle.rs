//! Cluster lifecycle benchmarks (issue 4), with real member processes on
//! 127.0.0.1:
//!
//! 1. A new member joins a cluster holding `LIFECYCLE_KEYS` (100,000) keys of
//!    1 KiB and is promoted: time to promotion, and the rate at which the
//!    leader streamed its snapshot.
//! 2. Write throughput while snapshots are being taken and sent (a follower
//!    is paused until the log it lacks is compacted, then resumed, so the
//!    leader streams it the whole snapshot, again and again), against the
//!    steady rate of the same load.
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

/// Closed-loop writes for `seconds`; returns writes per second.
async fn throughput(addr: &str, seconds: f64, clients: u64, busy: Option<Arc<AtomicBool>>) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
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
    let n = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    if let Some(b) = busy {
        b.store(false, Ordering::Relaxed);
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
    let snap = admin(&leader_addr)
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
            println!("snapshot install on the new member: {secs:.2} s");
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

    // 2. Writes while snapshots are taken and sent.
    let steady = throughput(&leader_addr, 10.0, 32, None).await;
    println!("steady writes: {steady:.0}/s (32 clients, 256-byte values)");
    let busy = Arc::new(AtomicBool::new(true));
    let lagging = c
        .ids()
        .into_iter()
        .find(|i| *i != leader && *i != id)
        .expect("a founding follower");
    let lagging_pid = c.member(lagging).pid().expect("the follower runs");
    let lagging_addr = c.member(lagging).client_addr();
    let background = {
        let (busy, leader_addr) = (busy.clone(), leader_addr.clone());
        tokio::spawn(async move {
            // Again and again: pause a follower, let the log move on, take a
            // snapshot (which compacts the entries it lacks), resume it — the
            // leader must stream it the whole snapshot while writes go on
            // (four voters: three still make a majority).
            let mut rounds = 0;
            let signal = |sig| {
                // SAFETY: kill(2) on a child process the cluster owns.
                unsafe { libc::kill(lagging_pid, sig) };
            };
            while busy.load(Ordering::Relaxed) {
                signal(libc::SIGSTOP);
                tokio::time::sleep(Duration::from_millis(300)).await;
                let snap = admin(&leader_addr)
                    .await
                    .snapshot(adminpb::SnapshotRequest {})
                    .await;
                signal(libc::SIGCONT);
                let Ok(snap) = snap else { continue };
                let target = snap.into_inner().last_included_index;
                // Until the follower has the snapshot, or the load ends.
                while busy.load(Ordering::Relaxed) {
                    if let Some(s) = status(&lagging_addr).await
                        && s.applied_index >= target
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                rounds += 1;
            }
            signal(libc::SIGCONT);
            rounds
        })
    };
    let during = throughput(&leader_addr, 10.0, 32, Some(busy)).await;
    let rounds = background.await.unwrap_or(0);
    println!(
        "writes while snapshots are taken and sent ({rounds} rounds): {during:.0}/s = {:.0}% of steady",
        during / steady * 100.0
    );
    let sends = sent_snapshot_lines(&c.log_of(leader));
    println!("snapshots sent by the leader in all: {}", sends.len());
    for line in sends.iter().skip(1) {
        if let (Some(bytes), Some(secs)) = (field(line, "bytes"), field(line, "seconds")) {
            println!(
                "  under load: {:.1} MB in {secs:.2} s = {:.0} MB/s",
                bytes / 1e6,
                bytes / 1e6 / secs
            );
        }
    }
}
