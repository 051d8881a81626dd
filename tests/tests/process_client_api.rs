//! The client API's documented answers, against real processes: limits,
//! compare-and-swap, scans, and what a member without a leader says.

use std::time::Duration;

use kuberaft_proto::kv::{self as kvpb, Consistency};
use kuberaft_tests::cluster::{Cluster, kv, status, wait_for_leader};
use prost::Message as _;

const ELECTION: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_invalid_argument_and_change_nothing() {
    let c = Cluster::start(3);
    let addrs = c.client_addrs();
    wait_for_leader(&addrs, ELECTION).await;
    let mut client = kv(&addrs[1]).await;
    client
        .put(kvpb::PutRequest {
            key: b"settled".to_vec(),
            value: b"1".to_vec(),
        })
        .await
        .expect("put");
    // Let followers learn the commit index, so the next comparison is stable.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before: Vec<u64> = futures_commit(&addrs).await;

    let cases: Vec<(&str, tonic::Status)> = vec![
        (
            "empty key",
            client
                .put(kvpb::PutRequest {
                    key: vec![],
                    value: b"v".to_vec(),
                })
                .await
                .expect_err("empty key"),
        ),
        (
            "key over 4 KiB",
            client
                .put(kvpb::PutRequest {
                    key: vec![b'k'; 4097],
                    value: b"v".to_vec(),
                })
                .await
                .expect_err("long key"),
        ),
        (
            "value over 1 MiB",
            client
                .put(kvpb::PutRequest {
                    key: b"k".to_vec(),
                    value: vec![0; (1 << 20) + 1],
                })
                .await
                .expect_err("big value"),
        ),
        (
            "scan limit out of range",
            client
                .scan(kvpb::ScanRequest {
                    prefix: b"".to_vec(),
                    limit: 10_001,
                    ..Default::default()
                })
                .await
                .expect_err("scan limit"),
        ),
        (
            "delete of an empty key",
            client
                .delete(kvpb::DeleteRequest { key: vec![] })
                .await
                .expect_err("empty key"),
        ),
        (
            "compare-and-swap to a value over 1 MiB",
            client
                .compare_and_swap(kvpb::CompareAndSwapRequest {
                    key: b"k".to_vec(),
                    expected_value: None,
                    new_value: vec![0; (1 << 20) + 1],
                })
                .await
                .expect_err("big value"),
        ),
    ];
    for (what, status) in cases {
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status:?}"
        );
        assert!(
            !status.message().is_empty(),
            "{what}: the message says what is wrong"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        futures_commit(&addrs).await,
        before,
        "no bad request reached the log"
    );
    let got = client
        .get(kvpb::GetRequest {
            key: b"k".to_vec(),
            consistency: 0,
        })
        .await
        .expect("get")
        .into_inner();
    assert!(got.kv.is_none());
}

async fn futures_commit(addrs: &[String]) -> Vec<u64> {
    let mut out = Vec::new();
    for a in addrs {
        out.push(status(a).await.map_or(0, |s| s.commit_index));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_fails_with_the_current_value() {
    let c = Cluster::start(3);
    let addrs = c.client_addrs();
    wait_for_leader(&addrs, ELECTION).await;
    let mut client = kv(&addrs[2]).await;
    let created = client
        .compare_and_swap(kvpb::CompareAndSwapRequest {
            key: b"lock".to_vec(),
            expected_value: None,
            new_value: b"alice".to_vec(),
        })
        .await
        .expect("create if absent")
        .into_inner();
    assert!(created.succeeded);
    let err = client
        .compare_and_swap(kvpb::CompareAndSwapRequest {
            key: b"lock".to_vec(),
            expected_value: None,
            new_value: b"bob".to_vec(),
        })
        .await
        .expect_err("already exists");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("alice"), "{}", err.message());
    let detail =
        kvpb::CompareAndSwapResponse::decode(err.details()).expect("details hold the response");
    assert!(!detail.succeeded);
    assert_eq!(detail.current_value.as_deref(), Some(&b"alice"[..]));
    let swapped = client
        .compare_and_swap(kvpb::CompareAndSwapRequest {
            key: b"lock".to_vec(),
            expected_value: Some(b"alice".to_vec()),
            new_value: b"bob".to_vec(),
        })
        .await
        .expect("swap")
        .into_inner();
    assert!(swapped.succeeded);
    assert!(swapped.index > created.index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_page_through_a_prefix_and_deletes_report_what_existed() {
    let c = Cluster::start(3);
    let addrs = c.client_addrs();
    wait_for_leader(&addrs, ELECTION).await;
    let mut client = kv(&addrs[0]).await;
    for i in 0..25 {
        client
            .put(kvpb::PutRequest {
                key: format!("p/{i:02}").into(),
                value: vec![i],
            })
            .await
            .expect("put");
    }
    client
        .put(kvpb::PutRequest {
            key: b"q".to_vec(),
            value: b"other".to_vec(),
        })
        .await
        .expect("put");
    let mut seen = Vec::new();
    let mut start_after = Vec::new();
    loop {
        let page = client
            .scan(kvpb::ScanRequest {
                prefix: b"p/".to_vec(),
                limit: 10,
                start_after: start_after.clone(),
                consistency: 0,
            })
            .await
            .expect("scan")
            .into_inner();
        seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        match page.kvs.last() {
            Some(last) if page.more => start_after = last.key.clone(),
            _ => break,
        }
    }
    let want: Vec<Vec<u8>> = (0..25).map(|i| format!("p/{i:02}").into_bytes()).collect();
    assert_eq!(seen, want);
    let d = client
        .delete(kvpb::DeleteRequest {
            key: b"p/00".to_vec(),
        })
        .await
        .expect("delete")
        .into_inner();
    assert!(d.deleted);
    let d = client
        .delete(kvpb::DeleteRequest {
            key: b"p/00".to_vec(),
        })
        .await
        .expect("delete")
        .into_inner();
    assert!(!d.deleted);
    // A serializable read is served by the member itself and catches up.
    let mut follower = kv(&addrs[1]).await;
    let mut found = true;
    for _ in 0..50 {
        found = follower
            .get(kvpb::GetRequest {
                key: b"p/00".to_vec(),
                consistency: Consistency::Serializable as i32,
            })
            .await
            .expect("get")
            .into_inner()
            .kv
            .is_some();
        if !found {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!found, "the delete reached the follower's state machine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_leader_requests_are_unavailable_and_say_why() {
    let mut c = Cluster::start(3);
    let addrs = c.client_addrs();
    let (leader, _) = wait_for_leader(&addrs, ELECTION).await;
    let others: Vec<u64> = c.ids().into_iter().filter(|i| *i != leader).collect();
    // Leave one follower alone: it cannot elect anybody.
    c.kill(leader);
    c.kill(others[0]);
    let lone = c.member(others[1]).client_addr();
    // Wait until it has noticed that its leader is gone.
    for _ in 0..100 {
        if status(&lone).await.is_some_and(|s| s.leader_id == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = kv(&lone).await;
    let started = std::time::Instant::now();
    let err = client
        .put(kvpb::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        })
        .await
        .expect_err("no leader");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("no leader"), "{}", err.message());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once, not after a timeout"
    );
    let err = client
        .get(kvpb::GetRequest {
            key: b"k".to_vec(),
            consistency: 0,
        })
        .await
        .expect_err("no leader for a linearizable read");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    // A serializable read is still served, from the member's own state.
    client
        .get(kvpb::GetRequest {
            key: b"k".to_vec(),
            consistency: Consistency::Serializable as i32,
        })
        .await
        .expect("serializable read without a leader");
}
