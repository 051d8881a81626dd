//! `raftctl bench`: closed-loop load. Each of C clients keeps exactly one
//! request in flight and sends the next when the answer arrives; the latency
//! of every request goes into an HDR histogram.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use kuberaft_proto::kv::{self, Consistency, kv_client::KvClient};
use serde_json::json;
use tokio::time::Instant;
use tonic::Status;
use tonic::transport::Channel;

use super::args::{BenchArgs, GlobalArgs, OutputFormat, Target};
use super::client::{Client, channel, request};
use super::error::{CliError, Failure, classify, code_name};
use super::members;
use super::output::{outln, print_json, thousands};
use super::report::{Summary, histogram, record};

/// Key `i` of the benchmark's key space.
pub fn bench_key(i: u64) -> Vec<u8> {
    format!("bench/{i:010}").into_bytes()
}

/// A short name for an error, to count errors by kind.
pub fn error_kind(status: &Status) -> String {
    match classify(status) {
        Failure::Unreachable(_) => "unreachable".into(),
        Failure::Lost(_) => "connection lost".into(),
        Failure::Answered => {
            let msg: String = status.message().chars().take(60).collect();
            format!("{}: {msg}", code_name(status.code()))
        }
    }
}

/// What one client measured.
struct ClientResult {
    latencies: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

/// Where the clients send their requests.
async fn targets(client: &Client, target: Target) -> Result<(Vec<String>, String), CliError> {
    let endpoints: Vec<String> = client.endpoints().iter().map(|e| e.addr.clone()).collect();
    match target {
        Target::First => Ok((
            vec![endpoints[0].clone()],
            format!("first endpoint {}", endpoints[0]),
        )),
        Target::Spread => Ok((
            endpoints.clone(),
            format!("spread over {}", endpoints.join(",")),
        )),
        Target::Leader => {
            let views = members::survey(client, true).await;
            let leader = members::leader_of(&views).ok_or_else(|| {
                CliError::new(format!(
                    "no leader: {}; wait for an election (raftctl status) or use --target spread",
                    super::admin::leader_line(&views)
                ))
            })?;
            let addr = views
                .iter()
                .find(|v| {
                    v.status
                        .as_ref()
                        .is_ok_and(|s| s.member_id == leader.member_id)
                })
                .map(|v| v.addr.clone())
                .unwrap_or_default();
            Ok((
                vec![addr.clone()],
                format!("leader {} at {addr}", leader.name),
            ))
        }
    }
}

/// One request of the benchmark.
async fn one(
    kv: &mut KvClient<Channel>,
    read: Option<Consistency>,
    key: Vec<u8>,
    value: &Bytes,
    timeout: Duration,
) -> Result<(), Status> {
    match read {
        Some(c) => {
            let req = kv::GetRequest {
                key,
                consistency: c as i32,
            };
            kv.get(request(req, timeout)).await.map(|_| ())
        }
        None => {
            let req = kv::PutRequest {
                key,
                value: value.to_vec(),
            };
            kv.put(request(req, timeout)).await.map(|_| ())
        }
    }
}

pub async fn run(args: &BenchArgs, global: &GlobalArgs) -> Result<(), CliError> {
    let client = Client::new(
        &global.endpoints,
        global.dial_timeout,
        global.command_timeout,
    )?;
    let (addrs, target_desc) = targets(&client, args.target).await?;
    // Client c uses channels[c mod len]: shared connections, or one each.
    let mut channels: Vec<Channel> = Vec::new();
    if args.conn_per_client {
        for c in 0..args.clients as usize {
            channels.push(channel(&addrs[c % addrs.len()], global.dial_timeout)?);
        }
    } else {
        for a in &addrs {
            for _ in 0..args.conns {
                channels.push(channel(a, global.dial_timeout)?);
            }
        }
    }
    let value = Bytes::from(
        (0..args.value_size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    let read = args.read.then_some(if args.serializable {
        Consistency::Serializable
    } else {
        Consistency::Linearizable
    });
    let what = match read {
        None => "writes",
        Some(Consistency::Linearizable) => "linearizable reads",
        Some(Consistency::Serializable) => "serializable reads",
    };
    let table = global.format() == OutputFormat::Table;
    if table {
        eprintln!(
            "raftctl bench: {what}, {} client{}, {}-byte values, {} keys, {} s after {} s of warm-up; {target_desc}, {} connection(s)",
            args.clients,
            if args.clients == 1 { "" } else { "s" },
            args.value_size,
            thousands(args.keys),
            args.seconds,
            args.warmup_seconds,
            channels.len()
        );
    }
    if read.is_some() {
        fill(&channels, args, &value, global.command_timeout).await?;
    }

    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup_seconds);
    let end = measure_from + Duration::from_secs(args.seconds);
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..u64::from(args.clients) {
        let mut kv = KvClient::new(channels[(c as usize) % channels.len()].clone())
            .max_decoding_message_size(8 << 20);
        let value = value.clone();
        let done = done.clone();
        let keys = args.keys;
        let timeout = global.command_timeout;
        tasks.push(tokio::spawn(async move {
            let mut r = ClientResult {
                latencies: histogram(),
                errors: BTreeMap::new(),
            };
            // Each client walks the key space from its own offset.
            let mut k = c.wrapping_mul(0x9E37_79B9_7F4A_7C15) % keys;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                k = (k + 1) % keys;
                let outcome = one(&mut kv, read, bench_key(k), &value, timeout).await;
                let measured = t0 >= measure_from && Instant::now() <= end;
                match outcome {
                    Ok(()) => {
                        if measured {
                            record(&mut r.latencies, t0.elapsed());
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(status) => {
                        if measured {
                            *r.errors.entry(error_kind(&status)).or_default() += 1;
                        }
                        // Do not spin on a member that is down.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            r
        }));
    }

    // A line per second on a terminal, so a long run shows it is alive.
    let progress = (table && std::io::stderr().is_terminal()).then(|| {
        let done = done.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from).await;
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            for s in 1.. {
                tick.tick().await;
                let now = done.load(Ordering::Relaxed);
                eprintln!("  {s:>4}s  {:>10} ops/s", thousands(now - last));
                last = now;
            }
        })
    });

    let mut all = histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        let r = t
            .await
            .map_err(|e| CliError::new(format!("a bench client failed: {e}")))?;
        all.add(&r.latencies)
            .map_err(|e| CliError::new(format!("cannot merge latencies: {e}")))?;
        for (k, n) in r.errors {
            *errors.entry(k).or_default() += n;
        }
    }
    if let Some(p) = progress {
        p.abort();
    }
    let s = Summary::of(&all);
    let secs = args.seconds as f64;
    let ops_per_sec = s.count as f64 / secs;
    let error_total: u64 = errors.values().sum();
    match global.format() {
        OutputFormat::Json => print_json(&json!({
            "mode": what,
            "clients": args.clients,
            "value_size": args.value_size,
            "keys": args.keys,
            "seconds": args.seconds,
            "target": target_desc,
            "connections": channels.len(),
            "ops": s.count,
            "ops_per_sec": ops_per_sec.round(),
            "latency_ms": s.json_ms(),
            "errors": errors,
        })),
        OutputFormat::Table => {
            outln!(
                "throughput: {} ops/s ({} {what} in {} s)",
                thousands(ops_per_sec.round() as u64),
                thousands(s.count),
                args.seconds
            );
            outln!("latency:    {}", s.line());
            if errors.is_empty() {
                outln!("errors:     none");
            } else {
                outln!("errors:     {}", thousands(error_total));
                for (k, n) in &errors {
                    outln!("  {:>10}  {k}", thousands(*n));
                }
            }
        }
    }
    if s.count == 0 {
        return Err(CliError::new(
            "no request succeeded; check the cluster with `raftctl status`",
        ));
    }
    Ok(())
}

/// Writes every key once before a read benchmark, so reads find values.
async fn fill(
    channels: &[Channel],
    args: &BenchArgs,
    value: &Bytes,
    timeout: Duration,
) -> Result<(), CliError> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..channels.len().max(16) {
        let mut kv = KvClient::new(channels[c % channels.len()].clone());
        let next = next.clone();
        let value = value.clone();
        let keys = args.keys;
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= keys {
                    return Ok(());
                }
                one(&mut kv, None, bench_key(k), &value, timeout)
                    .await
                    .map_err(|s| {
                        CliError::new(format!(
                            "cannot write the keys to read ({}); check the cluster with `raftctl status`",
                            error_kind(&s)
                        ))
                    })?;
            }
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| CliError::new(format!("a writer failed: {e}")))??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_by_kind() {
        assert_eq!(
            error_kind(&Status::unavailable("no leader")),
            "UNAVAILABLE: no leader"
        );
        assert_eq!(bench_key(42), b"bench/0000000042");
    }
}
