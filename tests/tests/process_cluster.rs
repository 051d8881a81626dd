//! Real `kuberaft-node` processes on 127.0.0.1: elections, replication,
//! failover, and the client API's promises (issue 3).

use std::time::Duration;

use kuberaft_proto::kv::{self as kvpb, Consistency};
use kuberaft_tests::cluster::{Cluster, kv, wait_for_leader};

const ELECTION: Duration = Duration::from_secs(10);

async fn put(addr: &str, key: &str, value: &str) -> Result<u64, tonic::Status> {
    let mut c = kv(addr).await;
    c.put(kvpb::PutRequest {
        key: key.into(),
        value: value.into(),
    })
    .await
    .map(|r| r.into_inner().index)
}

async fn get(
    addr: &str,
    key: &str,
    consistency: Consistency,
) -> Result<Option<Vec<u8>>, tonic::Status> {
    let mut c = kv(addr).await;
    c.get(kvpb::GetRequest {
        key: key.into(),
        consistency: consistency as i32,
    })
    .await
    .map(|r| r.into_inner().kv.map(|kv| kv.value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_elect_a_leader_and_a_write_through_any_member_is_read_through_every_member()
{
    let c = Cluster::start(3);
    let addrs = c.client_addrs();
    let (leader, term) = wait_for_leader(&addrs, ELECTION).await;
    assert!(term >= 1);
    for (i, a) in addrs.iter().enumerate() {
        let key = format!("k{i}");
        put(a, &key, "v")
            .await
            .unwrap_or_else(|e| panic!("put through {a} (leader {leader}): {e}"));
        for b in &addrs {
            let v = get(b, &key, Consistency::Linearizable)
                .await
                .expect("linearizable get");
            assert_eq!(v.as_deref(), Some(&b"v"[..]), "{key} through {b}");
        }
    }
}

/// Writes keys one after another through any member that answers, for as
/// long as `stop` is not set; returns the keys whose writes were acknowledged.
async fn writer(
    addrs: Vec<String>,
    prefix: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<String> {
    let mut acked = Vec::new();
    let mut i = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let key = format!("{prefix}-{i:06}");
        for a in addrs
            .iter()
            .cycle()
            .skip(i as usize % addrs.len())
            .take(addrs.len())
        {
            let mut c = kv(a).await;
            let mut req = tonic::Request::new(kvpb::PutRequest {
                key: key.clone().into(),
                value: b"x".to_vec(),
            });
            req.set_timeout(Duration::from_millis(1500));
            if c.put(req).await.is_ok() {
                acked.push(key.clone());
                break;
            }
        }
        i += 1;
    }
    acked
}

async fn all_present(addr: &str, keys: &[String]) {
    for k in keys {
        let v = get(addr, k, Consistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("get {k} through {addr}: {e}"));
        assert!(
            v.is_some(),
            "acknowledged write {k} is missing through {addr}"
        );
    }
}

async fn killing_the_leader_elects_a_new_one_and_loses_nothing(n: u64) {
    let mut c = Cluster::start(n);
    let addrs = c.client_addrs();
    let (leader, term) = wait_for_leader(&addrs, ELECTION).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w = tokio::spawn(writer(addrs.clone(), "before-and-after", stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.kill(leader);
    let survivors: Vec<String> = c
        .members
        .iter()
        .filter(|m| m.id != leader)
        .map(|m| m.client_addr())
        .collect();
    let (new_leader, new_term) = wait_for_leader(&survivors, ELECTION).await;
    assert_ne!(new_leader, leader);
    assert!(new_term > term, "new term {new_term} must be above {term}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = w.await.expect("writer");
    assert!(
        acked.len() > 10,
        "writes continued: only {} acknowledged",
        acked.len()
    );
    for a in &survivors {
        all_present(a, &acked).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_leader_of_three_elects_a_new_leader_in_a_higher_term() {
    killing_the_leader_elects_a_new_one_and_loses_nothing(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_leader_of_five_elects_a_new_leader_in_a_higher_term() {
    killing_the_leader_elects_a_new_one_and_loses_nothing(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_leader_hands_leadership_over_before_it_exits() {
    let mut c = Cluster::start(3);
    let addrs = c.client_addrs();
    let (leader, term) = wait_for_leader(&addrs, ELECTION).await;
    put(&addrs[0], "before", "1").await.expect("put");
    let exit = c
        .terminate(leader, Duration::from_secs(10))
        .expect("leader exits after SIGTERM");
    assert!(exit.success(), "clean exit, got {exit:?}");
    let log = c.log_of(leader);
    assert!(
        log.contains("leadership handed over"),
        "the leader handed over before exiting:\n{log}"
    );
    let survivors: Vec<String> = c
        .members
        .iter()
        .filter(|m| m.id != leader)
        .map(|m| m.client_addr())
        .collect();
    let (new_leader, new_term) = wait_for_leader(&survivors, ELECTION).await;
    assert_ne!(new_leader, leader);
    // TimeoutNow starts the election at once, without PreVote: the very next
    // term is the one that elects the new leader.
    assert_eq!(new_term, term + 1);
    let v = get(&survivors[0], "before", Consistency::Linearizable)
        .await
        .expect("get");
    assert_eq!(v.as_deref(), Some(&b"1"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_cannot_commit_and_the_cluster_recovers_when_the_majority_returns() {
    let mut c = Cluster::start(5);
    let addrs = c.client_addrs();
    let (leader, _) = wait_for_leader(&addrs, ELECTION).await;
    put(&addrs[0], "a", "1").await.expect("put");
    // Pause two followers: the remaining majority of three goes on.
    let followers: Vec<u64> = c.ids().into_iter().filter(|id| *id != leader).collect();
    c.pause(followers[0]);
    c.pause(followers[1]);
    let leader_addr = c.member(leader).client_addr();
    put(&leader_addr, "b", "2")
        .await
        .expect("a majority of three commits");
    // Pause a third: two of five cannot commit.
    c.pause(followers[2]);
    let mut kvc = kv(&leader_addr).await;
    let mut req = tonic::Request::new(kvpb::PutRequest {
        key: b"c".to_vec(),
        value: b"3".to_vec(),
    });
    req.set_timeout(Duration::from_millis(700));
    let err = kvc.put(req).await.expect_err("two of five cannot commit");
    assert!(
        // Cancelled: the client's own timer fired first, at the same deadline.
        matches!(
            err.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Unavailable | tonic::Code::Cancelled
        ),
        "{err:?}"
    );
    for id in &followers[..3] {
        c.resume(*id);
    }
    wait_for_leader(&addrs, ELECTION).await;
    for a in &addrs {
        let b = get(a, "b", Consistency::Linearizable).await.expect("get b");
        assert_eq!(b.as_deref(), Some(&b"2"[..]), "through {a}");
    }
    put(&addrs[1], "d", "4").await.expect("writes work again");
}
