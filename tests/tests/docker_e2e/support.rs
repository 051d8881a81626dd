//! Shared steps of the Docker scenarios: one scenario at a time, the
//! engine check, and the client calls the scenarios make.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kuberaft_proto::admin::{self as adminpb};
use kuberaft_proto::kv::{self as kvpb, Consistency};
use kuberaft_tests::cluster::{channel, kv, status};
use kuberaft_tests::docker::cli::engine_available;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Held for the whole of a scenario: one cluster at a time.
pub struct Turn(#[allow(dead_code)] MutexGuard<'static, ()>);

/// Waits for this scenario's turn; `None` when the suite is skipped on
/// purpose (see `engine_available`).
pub fn turn() -> Option<Turn> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    engine_available().then_some(Turn(guard))
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

pub async fn put(
    addr: &str,
    key: &str,
    value: &str,
    timeout: Duration,
) -> Result<u64, tonic::Status> {
    kv(addr)
        .await
        .put(request(
            kvpb::PutRequest {
                key: key.into(),
                value: value.into(),
            },
            timeout,
        ))
        .await
        .map(|r| r.into_inner().index)
}

pub async fn get(
    addr: &str,
    key: &str,
    consistency: Consistency,
) -> Result<Option<String>, tonic::Status> {
    kv(addr)
        .await
        .get(request(
            kvpb::GetRequest {
                key: key.into(),
                consistency: consistency as i32,
            },
            Duration::from_secs(5),
        ))
        .await
        .map(|r| {
            r.into_inner()
                .kv
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        })
}

/// Polls `probe` every 100 ms until it gives `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What grpc.health.v1 says of the member at `addr` (the readiness probe
/// the operator gives pods).
pub async fn health(addr: &str) -> Option<ServingStatus> {
    let mut h = HealthClient::new(channel(addr).await);
    let r = h
        .check(request(
            tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            },
            Duration::from_millis(500),
        ))
        .await
        .ok()?;
    ServingStatus::try_from(r.into_inner().status).ok()
}

/// Waits until every member at `addrs` is ready (SERVING).
pub async fn wait_ready(addrs: &[String], timeout: Duration) {
    for a in addrs {
        eventually(&format!("{a} reports SERVING"), timeout, || async {
            (health(a).await == Some(ServingStatus::Serving)).then_some(())
        })
        .await;
    }
}

/// The member's own status, waiting for it to answer.
pub async fn status_of(addr: &str) -> adminpb::StatusResponse {
    eventually(
        &format!("{addr} answers Status"),
        Duration::from_secs(20),
        || status(addr),
    )
    .await
}

pub const ELECTION: Duration = Duration::from_secs(30);
