//! `raftctl failover-bench`: on a local cluster it starts itself, writers
//! keep writing while the leader is killed (SIGKILL, or SIGTERM with
//! `--graceful`) N times and restarted each time. It reports how long the
//! cluster took to have a new leader and how long writes could not complete,
//! and checks at the end that every acknowledged write is still there.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use kuberaft_proto::admin::{Role, StatusResponse};
use kuberaft_proto::kv::{self, kv_client::KvClient};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;
use tonic::transport::Channel;

use super::args::{FailoverArgs, GlobalArgs, OutputFormat};
use super::client::{channel, request};
use super::cluster::LocalCluster;
use super::error::{CliError, Failure, classify};
use super::members::status_of;
use super::output::{Table, ms, print_json, thousands};
use super::report::{Summary, histogram, record};

/// Prefix of the keys the writers write.
const PREFIX: &str = "failover/";

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One round's measurements.
#[derive(Clone, Debug)]
pub struct Round {
    pub killed: String,
    pub old_term: u64,
    pub new_term: u64,
    pub new_leader: String,
    pub time_to_leader: Duration,
    /// When the signal was sent, to find the write gap afterwards.
    pub signalled_at: Instant,
    /// When the restarted member had caught up again.
    pub recovered_at: Instant,
    /// Filled in once all acknowledgements are known.
    pub write_gap: Duration,
}

/// The longest time without any acknowledged write around a kill: from the
/// last acknowledgement before `from` to the end of `to`. `acks` is sorted.
pub fn write_gap(acks: &[Instant], from: Instant, to: Instant) -> Duration {
    let start = acks.partition_point(|&t| t <= from);
    let mut prev = match start {
        0 => from,
        i => acks[i - 1],
    };
    let mut longest = Duration::ZERO;
    for &t in &acks[start..] {
        if t > to {
            break;
        }
        longest = longest.max(t - prev);
        prev = t;
    }
    // Writes that never resumed count up to the end of the window.
    longest.max(to.saturating_duration_since(prev))
}

/// Status of every member, in member order (None: unreachable or stopped).
async fn statuses(channels: &[Channel]) -> Vec<Option<StatusResponse>> {
    join_all(
        channels
            .iter()
            .map(|ch| async { status_of(ch.clone(), Duration::from_millis(300)).await.ok() }),
    )
    .await
}

/// Waits until every running member reports the same leader in the same
/// term and has applied what is committed; returns the leader's index.
async fn wait_stable(
    cluster: &mut LocalCluster,
    channels: &[Channel],
    within: Duration,
) -> Result<(usize, u64), CliError> {
    let deadline = Instant::now() + within;
    loop {
        cluster.reap();
        let s = statuses(channels).await;
        let leader = s.iter().flatten().find(|s| s.role() == Role::Leader);
        if let Some(l) = leader {
            let all_agree = s.iter().zip(&cluster.members).all(|(s, m)| match s {
                Some(s) => s.leader_id == l.member_id && s.term == l.term && s.serving,
                None => !m.is_running(),
            });
            let running = cluster.members.iter().all(|m| m.is_running());
            if all_agree && running {
                let i = cluster
                    .members
                    .iter()
                    .position(|m| m.id == l.member_id)
                    .unwrap_or(0);
                return Ok((i, l.term));
            }
        }
        if Instant::now() >= deadline {
            let lines: Vec<String> = cluster
                .members
                .iter()
                .zip(&s)
                .map(|(m, s)| match s {
                    Some(s) => format!(
                        "{}: {} term {} leader {}",
                        m.name,
                        super::members::role_name(s.role()),
                        s.term,
                        s.leader_id
                    ),
                    None => format!("{}: unreachable ({:?})", m.name, m.process),
                })
                .collect();
            return Err(CliError::new(format!(
                "the cluster did not settle on one leader within {}s ({}); see the logs in {}",
                within.as_secs(),
                lines.join("; "),
                cluster.data_dir().display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A writer: puts unique keys in a closed loop until told to stop, moving
/// to the next member when one cannot be reached. Returns the times of its
/// acknowledgements and the keys acknowledged.
async fn writer(
    w: usize,
    channels: Vec<Channel>,
    stop: Arc<AtomicBool>,
) -> (Vec<Instant>, Vec<Vec<u8>>) {
    let mut acks = Vec::new();
    let mut keys = Vec::new();
    let mut at = w % channels.len();
    let value = vec![b'x'; 64];
    let mut seq: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("{PREFIX}{w:03}/{seq:09}").into_bytes();
        let req = kv::PutRequest {
            key: key.clone(),
            value: value.clone(),
        };
        let mut kv = KvClient::new(channels[at].clone());
        match kv.put(request(req, Duration::from_secs(1))).await {
            Ok(_) => {
                acks.push(Instant::now());
                keys.push(key);
                seq += 1;
            }
            Err(status) => {
                if matches!(
                    classify(&status),
                    Failure::Unreachable(_) | Failure::Lost(_)
                ) || status.code() == tonic::Code::DeadlineExceeded
                {
                    at = (at + 1) % channels.len();
                }
                // The outcome of this key is unknown; use a fresh one.
                seq += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    (acks, keys)
}

pub async fn run(args: &FailoverArgs, global: &GlobalArgs) -> Result<(), CliError> {
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| CliError::new(format!("cannot catch SIGINT: {e}")))?;
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| CliError::new(format!("cannot catch SIGTERM: {e}")))?;
    let mut cluster = LocalCluster::start(&args.cluster)?;
    // Interrupted or not, the members are stopped and the data dir removed.
    let result = tokio::select! {
        r = measure(&mut cluster, args, global) => r,
        _ = sigint.recv() => Err(CliError::new("interrupted; stopped the cluster")),
        _ = sigterm.recv() => Err(CliError::new("terminated; stopped the cluster")),
    };
    cluster.stop_all(Duration::from_secs(5)).await;
    result
}

async fn measure(
    cluster: &mut LocalCluster,
    args: &FailoverArgs,
    global: &GlobalArgs,
) -> Result<(), CliError> {
    let table = global.format() == OutputFormat::Table;
    let signal = if args.graceful {
        libc::SIGTERM
    } else {
        libc::SIGKILL
    };
    let signal_name = if args.graceful { "SIGTERM" } else { "SIGKILL" };
    let endpoints = cluster.endpoints();
    let channels: Vec<Channel> = endpoints
        .iter()
        .map(|a| channel(a, Duration::from_millis(200)))
        .collect::<Result<_, _>>()?;
    if table {
        eprintln!(
            "raftctl failover-bench: {} members, {} rounds of {signal_name} to the leader, {} writers; data in {}",
            cluster.members.len(),
            args.rounds,
            args.writers,
            cluster.data_dir().display()
        );
    }
    wait_stable(cluster, &channels, Duration::from_secs(15)).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..args.writers as usize)
        .map(|w| {
            let ch: Vec<Channel> = endpoints
                .iter()
                .map(|a| channel(a, Duration::from_millis(200)))
                .collect::<Result<_, _>>()?;
            Ok(tokio::spawn(writer(w, ch, stop.clone())))
        })
        .collect::<Result<_, CliError>>()?;

    let mut rounds: Vec<Round> = Vec::new();
    let outcome = async {
        for r in 1..=args.rounds {
            tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
            let (i, old_term) = wait_stable(cluster, &channels, Duration::from_secs(15)).await?;
            let killed = cluster.members[i].name.clone();
            let signalled_unix_ms = unix_ms();
            let signalled_at = Instant::now();
            cluster.signal(i, signal);
            // A new leader: another member leading in a later term.
            let deadline = signalled_at + Duration::from_secs(15);
            let (new_leader, new_term, seen_at, changed_ms) = loop {
                let s = statuses(&channels).await;
                let seen_at = Instant::now();
                if let Some(l) = s
                    .iter()
                    .flatten()
                    .find(|s| s.role() == Role::Leader && s.term > old_term && s.member_id != cluster.members[i].id)
                {
                    break (l.name.clone(), l.term, seen_at, l.leader_changed_unix_ms);
                }
                if seen_at >= deadline {
                    return Err(CliError::new(format!(
                        "round {r}: no new leader 15s after {signal_name} to {killed}; see the logs in {}",
                        cluster.data_dir().display()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            let observed = seen_at - signalled_at;
            // The new leader's own clock says when it took over; trust it
            // when it is plausible (after the signal, before we saw it).
            let time_to_leader = match changed_ms.checked_sub(signalled_unix_ms) {
                Some(d) if changed_ms > 0 && Duration::from_millis(d) <= observed => {
                    Duration::from_millis(d)
                }
                _ => observed,
            };
            if !cluster.wait_exit(i, Duration::from_secs(10)).await {
                cluster.signal(i, libc::SIGKILL);
                cluster.wait_exit(i, Duration::from_secs(5)).await;
            }
            cluster.spawn(i)?;
            wait_stable(cluster, &channels, Duration::from_secs(15)).await?;
            let round = Round {
                killed,
                old_term,
                new_term,
                new_leader,
                time_to_leader,
                signalled_at,
                recovered_at: Instant::now(),
                write_gap: Duration::ZERO,
            };
            if table {
                eprintln!(
                    "  round {r:>3}: {signal_name} {} (term {}) → {} leads term {} after {}",
                    round.killed,
                    round.old_term,
                    round.new_leader,
                    round.new_term,
                    ms(u64::try_from(round.time_to_leader.as_micros()).unwrap_or(u64::MAX))
                );
            }
            rounds.push(round);
        }
        Ok::<(), CliError>(())
    }
    .await;

    stop.store(true, Ordering::Relaxed);
    let mut acks: Vec<Instant> = Vec::new();
    let mut acked: Vec<Vec<u8>> = Vec::new();
    for w in writers {
        if let Ok((a, k)) = w.await {
            acks.extend(a);
            acked.extend(k);
        }
    }
    outcome?;
    acks.sort();
    for r in &mut rounds {
        r.write_gap = write_gap(&acks, r.signalled_at, r.recovered_at);
    }
    let missing = missing_keys(&channels, &acked).await?;

    let mut leader_h = histogram();
    let mut gap_h = histogram();
    for r in &rounds {
        record(&mut leader_h, r.time_to_leader);
        record(&mut gap_h, r.write_gap);
    }
    let (to_leader, gap) = (Summary::of(&leader_h), Summary::of(&gap_h));
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    match global.format() {
        OutputFormat::Json => print_json(&json!({
            "signal": signal_name,
            "members": cluster.members.len(),
            "rounds": rounds.iter().map(|r| json!({
                "killed": r.killed,
                "old_term": r.old_term,
                "new_leader": r.new_leader,
                "new_term": r.new_term,
                "time_to_leader_ms": us(r.time_to_leader) as f64 / 1000.0,
                "write_gap_ms": us(r.write_gap) as f64 / 1000.0,
            })).collect::<Vec<_>>(),
            "time_to_leader_ms": to_leader.json_ms(),
            "write_gap_ms": gap.json_ms(),
            "acknowledged_writes": acked.len(),
            "missing_acknowledged_writes": missing,
        })),
        OutputFormat::Table => {
            let mut t = Table::new([
                "ROUND",
                "STOPPED",
                "TERM",
                "NEW LEADER",
                "NEW TERM",
                "TIME TO LEADER",
                "WRITE GAP",
            ]);
            for (n, r) in rounds.iter().enumerate() {
                t.row([
                    (n + 1).to_string(),
                    r.killed.clone(),
                    r.old_term.to_string(),
                    r.new_leader.clone(),
                    r.new_term.to_string(),
                    ms(us(r.time_to_leader)),
                    ms(us(r.write_gap)),
                ]);
            }
            print!("{}", t.render());
            println!();
            println!(
                "time to a new leader ({signal_name}): {}",
                to_leader.short_line()
            );
            println!("write gap:                   {}", gap.short_line());
            println!(
                "acknowledged writes: {}; missing afterwards: {missing}",
                thousands(acked.len() as u64)
            );
        }
    }
    if missing > 0 {
        return Err(CliError::new(format!(
            "{missing} acknowledged writes are missing after the failovers: the cluster lost data; keep --data-dir and the logs and report it"
        )));
    }
    Ok(())
}

/// How many acknowledged keys a linearizable scan does not find.
async fn missing_keys(channels: &[Channel], acked: &[Vec<u8>]) -> Result<usize, CliError> {
    let mut found: HashSet<Vec<u8>> = HashSet::with_capacity(acked.len());
    let mut start_after = Vec::new();
    let mut at = 0;
    let mut failures = 0;
    loop {
        let req = kv::ScanRequest {
            prefix: PREFIX.as_bytes().to_vec(),
            limit: 10_000,
            start_after: start_after.clone(),
            consistency: kv::Consistency::Linearizable as i32,
        };
        match KvClient::new(channels[at].clone())
            .scan(request(req, Duration::from_secs(5)))
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                let last = r.kvs.last().map(|kv| kv.key.clone());
                found.extend(r.kvs.into_iter().map(|kv| kv.key));
                match last {
                    Some(k) if r.more => start_after = k,
                    _ => break,
                }
            }
            Err(s) => {
                failures += 1;
                if failures > 20 {
                    return Err(CliError::new(format!(
                        "cannot read the written keys back to check them: {}",
                        s.message()
                    )));
                }
                at = (at + 1) % channels.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Ok(acked.iter().filter(|k| !found.contains(*k)).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_gap_is_the_longest_silence_around_the_kill() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let acks = [at(0), at(1), at(2), at(250), at(251), at(252), at(400)];
        // Killed at 5: the last ack was at 2, the next at 250.
        assert_eq!(write_gap(&acks, at(5), at(300)), Duration::from_millis(248));
        // No acks before the kill: the silence counts from the kill.
        assert_eq!(
            write_gap(&acks[3..], at(5), at(300)),
            Duration::from_millis(245)
        );
        // Writes that never resume count until the end of the window.
        assert_eq!(
            write_gap(&acks[..3], at(5), at(300)),
            Duration::from_millis(298)
        );
    }
}
