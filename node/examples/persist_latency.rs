//! Measures what a durable `Storage::persist` costs on this machine: the
//! latency of one entry per fsync, the throughput of 64 entries per fsync
//! (group commit), one large entry that sled stores as a blob file, and, for
//! comparison, one entry without a sync.
//!
//! ```text
//! cargo run --release -p kuberaft-node --example persist_latency [DIR]
//! ```
//!
//! DIR must be on the disk to measure (not a tmpfs); by default a temporary
//! directory under the current one.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kuberaft_node::raft::{Entry, HardState, Member, Membership, Suffrage};
use kuberaft_node::storage::{Identity, Storage};

const ENTRY_BYTES: usize = 300;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let tmp = tempfile::tempdir_in(base)?;
    println!("data dir: {}", tmp.path().display());
    let identity = Identity {
        cluster: "bench".into(),
        member_id: 1,
        member_name: "bench-1".into(),
    };
    let mut storage = Storage::open(tmp.path(), &identity)?;
    storage.bootstrap(Membership::new([Member {
        id: 1,
        name: "bench-1".into(),
        peer_addr: String::new(),
        client_addr: String::new(),
        suffrage: Suffrage::Voter,
    }]))?;
    let mut next = 1u64;
    let payload = Bytes::from(vec![0xab; ENTRY_BYTES]);
    let mut batch = |n: usize, data: &Bytes| -> Vec<Entry> {
        let out = (0..n)
            .map(|i| Entry::normal(1, next + i as u64, data.clone()))
            .collect();
        next += n as u64;
        out
    };

    // Warm up: let sled allocate its first segments.
    for _ in 0..200 {
        let e = batch(1, &payload);
        storage.persist(None, &e, true)?;
    }

    let mut hs = HardState {
        current_term: 1,
        voted_for: 1,
        commit_index: 0,
    };
    let mut one = Vec::new();
    for _ in 0..2000 {
        let e = batch(1, &payload);
        hs.commit_index = e[0].index;
        let t = Instant::now();
        storage.persist(Some(&hs), &e, true)?;
        one.push(t.elapsed());
    }
    report("1 entry of 300 B + hard state, fsync", &mut one);

    let mut unsynced = Vec::new();
    for _ in 0..2000 {
        let e = batch(1, &payload);
        let t = Instant::now();
        storage.persist(None, &e, false)?;
        unsynced.push(t.elapsed());
    }
    storage.sync()?;
    report("1 entry of 300 B, no sync (reference)", &mut unsynced);

    let mut batches = Vec::new();
    let start = Instant::now();
    for _ in 0..500 {
        let e = batch(64, &payload);
        let t = Instant::now();
        storage.persist(None, &e, true)?;
        batches.push(t.elapsed());
    }
    let total = start.elapsed();
    report("64 entries of 300 B, fsync", &mut batches);
    println!(
        "    throughput: {:.0} entries/s ({} entries in {:.2} s)",
        (500 * 64) as f64 / total.as_secs_f64(),
        500 * 64,
        total.as_secs_f64()
    );

    let big = Bytes::from(vec![0xcd; 256 << 10]);
    let mut blobs = Vec::new();
    for _ in 0..200 {
        let e = batch(1, &big);
        let t = Instant::now();
        storage.persist(None, &e, true)?;
        blobs.push(t.elapsed());
    }
    report("1 entry of 256 KiB (a sled blob file), fsync", &mut blobs);
    Ok(())
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{what}: n={} p50={:.3} ms p90={:.3} ms p99={:.3} ms max={:.3} ms mean={:.3} ms",
        samples.len(),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(at(1.0)),
        ms(mean)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
