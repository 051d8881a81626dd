//! A write whose client gave up is never applied later. A follower forwards a put to the
//! leader through a connection that stalls past the client's deadline (as a congested link
//! retransmitting would), then delivers it: the leader must refuse it, not propose it. With a
//! relative deadline alone (`grpc-timeout`), the request arrived with a fresh countdown and was
//! applied seconds after its client had been told DEADLINE_EXCEEDED.

use std::time::{Duration, Instant};

use kuberaft_proto::kv::{self as kvpb, Consistency};
use kuberaft_tests::cluster::{Cluster, free_port, kv, wait_for_leader};
use kuberaft_tests::prometheus::{fetch, parse};
use kuberaft_tests::proxy::Proxy;

const ELECTION: Duration = Duration::from_secs(10);

async fn put(addr: &str, key: &str, timeout: Duration) -> Result<u64, tonic::Status> {
    let mut r = tonic::Request::new(kvpb::PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
    });
    r.set_timeout(timeout);
    kv(addr).await.put(r).await.map(|r| r.into_inner().index)
}

/// Writes the leader refused because their client had given up.
fn abandoned_writes(http_addr: &str) -> f64 {
    fetch(http_addr)
        .and_then(|text| parse(&text))
        .ok()
        .and_then(|m| {
            m.get("kuberaft_requests_abandoned_total{kind=\"write\"}")
                .copied()
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_delivered_after_its_deadline_is_refused_not_applied() {
    // Every member's client address, as the others know it, is a proxy in front of it.
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let advertised = ports.clone();
    let mut c = Cluster::start_advertising(3, move |id| advertised[(id - 1) as usize]);
    let mut proxies = Vec::new();
    for (m, port) in c.members.iter().zip(&ports) {
        proxies.push(Proxy::start(*port, m.client_addr()).await);
    }
    let addrs = c.client_addrs();
    let (leader, _) = wait_for_leader(&addrs, ELECTION).await;
    let follower = c
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let follower_addr = c.member(follower).client_addr();
    let leader_addr = c.member(leader).client_addr();
    let leader_http = c.member(leader).http_addr();
    put(&follower_addr, "before", Duration::from_secs(5))
        .await
        .expect("a forwarded write goes through the proxy");

    // The follower → leader link stalls. The client gives up after 500 ms.
    let proxy = &proxies[(leader - 1) as usize];
    proxy.hold();
    let held_at = Instant::now();
    let late = put(&follower_addr, "late", Duration::from_millis(500)).await;
    assert!(
        late.is_err(),
        "the stalled write was acknowledged: {late:?}"
    );
    let refused_before = abandoned_writes(&leader_http);
    // The request sits in the stalled link well past its deadline, though not so long that
    // the follower's keep-alive (1 s ping, 2 s timeout) gives up the connection: then it is
    // delivered, in order, as a retransmission would deliver it.
    tokio::time::sleep(Duration::from_millis(1_800).saturating_sub(held_at.elapsed())).await;
    proxy.release();

    let start = Instant::now();
    while abandoned_writes(&leader_http) <= refused_before {
        if start.elapsed() > Duration::from_secs(10) {
            c.dump_logs();
            panic!("the leader never refused the late write");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Another write through the same path commits; the late one is not there, on any member.
    put(&follower_addr, "after", Duration::from_secs(5))
        .await
        .expect("the link works again");
    for addr in [&leader_addr, &follower_addr] {
        let mut r = tonic::Request::new(kvpb::GetRequest {
            key: b"late".to_vec(),
            consistency: Consistency::Linearizable as i32,
        });
        r.set_timeout(Duration::from_secs(5));
        let got = kv(addr).await.get(r).await.expect("get").into_inner();
        assert!(
            got.kv.is_none(),
            "the write whose client gave up was applied: {:?} (read through {addr})",
            got.kv
        );
    }
}
