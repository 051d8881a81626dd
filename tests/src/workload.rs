//! Clients that drive a cluster through its client API and write down what
//! they saw: puts, gets and compare-and-swaps on a few keys (recorded for the
//! linearizability check), and puts of keys written once each (to check that
//! every acknowledged write survives).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kuberaft_proto::kv::kv_client::KvClient;
use kuberaft_proto::kv::{self as kvpb, Consistency};
use prost::Message as _;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::linearizability::{Call, Operation, Recorder, Return};

/// Prefix of the keys each written once.
pub const UNIQUE_PREFIX: &str = "unique/";

#[derive(Clone, Debug)]
pub struct Config {
    pub clients: u32,
    /// The registers clients contend on.
    pub keys: Vec<String>,
    /// How long a client waits for an answer before it calls the outcome
    /// unknown.
    pub request_timeout: Duration,
    /// Share of operations that are writes of unique keys.
    pub unique_share: f64,
    /// A client rests up to this long between operations.
    pub max_think: Duration,
    pub seed: u64,
}

/// What the clients of a run did with the unique keys.
#[derive(Debug, Default)]
pub struct UniqueWrites {
    /// Acknowledged: must exist at the end.
    pub acknowledged: Vec<String>,
    /// Sent without an answer: may exist.
    pub unknown: Vec<String>,
    /// Refused with an answer that says it was not and will not be applied: must not exist.
    pub refused: Vec<String>,
    /// The unknown ones with when they were sent and when the client gave up.
    pub timed_out: Vec<crate::lateness::TimedOut>,
}

/// An error that says the write was not applied and never will be (kv.proto): a deadline that
/// passed before the write was proposed, or a proposal a new leader overwrote.
pub fn says_not_applied(status: &tonic::Status) -> bool {
    let m = status.message();
    m.contains("it was not, and will not be") || m.contains("it was not applied")
}

/// One client's channels, one per member, made on first use.
struct Channels {
    timeout: Duration,
    by_addr: HashMap<String, Channel>,
}

impl Channels {
    fn kv(&mut self, addr: &str) -> KvClient<Channel> {
        let timeout = self.timeout;
        let channel = self
            .by_addr
            .entry(addr.to_string())
            .or_insert_with(|| {
                Endpoint::from_shared(format!("http://{addr}"))
                    .expect("a member address is a valid URI")
                    .connect_timeout(Duration::from_millis(500))
                    .timeout(timeout)
                    .connect_lazy()
            })
            .clone();
        KvClient::new(channel)
    }
}

fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

fn value_of(kv: Option<kvpb::KeyValue>) -> Option<String> {
    kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

/// Sends `call` on `key` to the member at `addr`; the answer, or `None` when
/// the outcome is unknown.
pub async fn invoke(
    kv: &mut KvClient<Channel>,
    key: &str,
    call: &Call,
    timeout: Duration,
) -> Option<Return> {
    let key_bytes = key.as_bytes().to_vec();
    match call {
        Call::Get => kv
            .get(request(
                kvpb::GetRequest {
                    key: key_bytes,
                    consistency: Consistency::Linearizable as i32,
                },
                timeout,
            ))
            .await
            .ok()
            .map(|r| Return::Get(value_of(r.into_inner().kv))),
        Call::Put { value } => kv
            .put(request(
                kvpb::PutRequest {
                    key: key_bytes,
                    value: value.as_bytes().to_vec(),
                },
                timeout,
            ))
            .await
            .ok()
            .map(|_| Return::Put),
        Call::Cas { expected, new } => {
            let answer = kv
                .compare_and_swap(request(
                    kvpb::CompareAndSwapRequest {
                        key: key_bytes,
                        expected_value: expected.as_ref().map(|e| e.as_bytes().to_vec()),
                        new_value: new.as_bytes().to_vec(),
                    },
                    timeout,
                ))
                .await;
            match answer {
                Ok(_) => Some(Return::CasOk),
                Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                    let detail = kvpb::CompareAndSwapResponse::decode(status.details())
                        .unwrap_or_else(|e| {
                            panic!("a failed compare-and-swap carries no CompareAndSwapResponse: {e}; {status:?}")
                        });
                    Some(Return::CasFailed {
                        current: detail
                            .current_value
                            .map(|v| String::from_utf8_lossy(&v).into_owned()),
                    })
                }
                // Any other error may come after the write was proposed (a
                // timeout, a leader that lost its term, a forward that broke):
                // its outcome is unknown.
                Err(status) => {
                    assert_ne!(
                        status.code(),
                        tonic::Code::InvalidArgument,
                        "the workload sent a request the API refuses: {status:?}"
                    );
                    None
                }
            }
        }
    }
}

/// Runs the clients until `until`, recording register operations into
/// `recorder`.
pub async fn run(
    addrs: Vec<String>,
    cfg: Config,
    until: Instant,
    recorder: Arc<Recorder>,
) -> UniqueWrites {
    let mut tasks = Vec::new();
    for client in 0..cfg.clients {
        let (addrs, cfg, recorder) = (addrs.clone(), cfg.clone(), recorder.clone());
        tasks.push(tokio::spawn(async move {
            client_loop(client, addrs, cfg, until, recorder).await
        }));
    }
    let mut all = UniqueWrites::default();
    for t in tasks {
        let u = t.await.expect("a client task panicked");
        all.acknowledged.extend(u.acknowledged);
        all.unknown.extend(u.unknown);
        all.refused.extend(u.refused);
        all.timed_out.extend(u.timed_out);
    }
    all
}

async fn client_loop(
    client: u32,
    addrs: Vec<String>,
    cfg: Config,
    until: Instant,
    recorder: Arc<Recorder>,
) -> UniqueWrites {
    let mut rng = SmallRng::seed_from_u64(cfg.seed ^ (u64::from(client) << 32));
    let mut channels = Channels {
        timeout: cfg.request_timeout,
        by_addr: HashMap::new(),
    };
    // The last value this client saw in each key: what its swaps expect.
    let mut last_seen: HashMap<String, Option<String>> = HashMap::new();
    let mut unique = UniqueWrites::default();
    let mut seq = 0u64;
    while Instant::now() < until {
        seq += 1;
        let addr = &addrs[rng.random_range(0..addrs.len())];
        let mut kv = channels.kv(addr);
        let think = rng.random_range(0..=cfg.max_think.as_millis() as u64);
        if rng.random_bool(cfg.unique_share) {
            let key = format!("{UNIQUE_PREFIX}c{client}-{seq}");
            let sent_at = recorder.now();
            let answer = kv
                .put(request(
                    kvpb::PutRequest {
                        key: key.clone().into_bytes(),
                        value: b"1".to_vec(),
                    },
                    cfg.request_timeout,
                ))
                .await;
            match answer {
                Ok(_) => unique.acknowledged.push(key),
                Err(status) if says_not_applied(&status) => unique.refused.push(key),
                Err(status) => {
                    assert_ne!(
                        status.code(),
                        tonic::Code::InvalidArgument,
                        "the workload sent a request the API refuses: {status:?}"
                    );
                    unique.timed_out.push(crate::lateness::TimedOut {
                        key: key.clone(),
                        sent_at,
                        deadline: sent_at + cfg.request_timeout.as_nanos() as u64,
                    });
                    unique.unknown.push(key);
                }
            }
        } else {
            let key = cfg.keys[rng.random_range(0..cfg.keys.len())].clone();
            let value = format!("c{client}-{seq}");
            let call = match rng.random_range(0..10u8) {
                0..=3 => Call::Get,
                4..=6 => Call::Put { value },
                _ => Call::Cas {
                    expected: last_seen.get(&key).cloned().flatten(),
                    new: value,
                },
            };
            let invoked_at = recorder.now();
            let answer = invoke(&mut kv, &key, &call, cfg.request_timeout).await;
            let completed_at = recorder.now();
            match (&call, &answer) {
                (_, Some(Return::Get(v))) | (_, Some(Return::CasFailed { current: v })) => {
                    last_seen.insert(key.clone(), v.clone());
                }
                (Call::Put { value }, Some(Return::Put))
                | (Call::Cas { new: value, .. }, Some(Return::CasOk)) => {
                    last_seen.insert(key.clone(), Some(value.clone()));
                }
                _ => {}
            }
            let failed = answer.is_none();
            recorder.record(Operation {
                client,
                key,
                call,
                invoked_at,
                completed: answer.map(|r| (completed_at, r)),
            });
            if failed {
                // That member may be down: do not hammer it.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
    unique
}

/// After the faults: a linearizable read of every key through a member that
/// answers (recorded, so the check covers the final state), retried for up
/// to `patience`.
pub async fn final_reads(
    addrs: &[String],
    keys: &[String],
    recorder: &Recorder,
    patience: Duration,
) -> Result<(), String> {
    let mut channels = Channels {
        timeout: Duration::from_secs(2),
        by_addr: HashMap::new(),
    };
    let client = u32::MAX;
    for key in keys {
        let give_up = Instant::now() + patience;
        let mut attempt = 0usize;
        loop {
            let mut kv = channels.kv(&addrs[attempt % addrs.len()]);
            attempt += 1;
            let invoked_at = recorder.now();
            let answer = invoke(&mut kv, key, &Call::Get, Duration::from_secs(2)).await;
            let completed_at = recorder.now();
            let ok = answer.is_some();
            recorder.record(Operation {
                client,
                key: key.clone(),
                call: Call::Get,
                invoked_at,
                completed: answer.map(|r| (completed_at, r)),
            });
            if ok {
                break;
            }
            if Instant::now() > give_up {
                return Err(format!(
                    "no member answered a read of {key} within {patience:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Every key with `prefix`, read linearizably page by page through `addr`.
pub async fn scan_all(addr: &str, prefix: &str) -> Result<Vec<String>, tonic::Status> {
    let mut kv = KvClient::new(
        Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
            .connect_timeout(Duration::from_millis(500))
            .connect_lazy(),
    );
    let mut keys = Vec::new();
    let mut start_after = Vec::new();
    loop {
        let page = kv
            .scan(request(
                kvpb::ScanRequest {
                    prefix: prefix.as_bytes().to_vec(),
                    limit: 1000,
                    start_after: start_after.clone(),
                    consistency: Consistency::Linearizable as i32,
                },
                Duration::from_secs(5),
            ))
            .await?
            .into_inner();
        for kv in &page.kvs {
            keys.push(String::from_utf8_lossy(&kv.key).into_owned());
        }
        match (page.more, page.kvs.last()) {
            (true, Some(last)) => start_after = last.key.clone(),
            _ => return Ok(keys),
        }
    }
}
