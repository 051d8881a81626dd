//! The member-status code against a fake Admin gRPC server (see `support/fake_admin.rs`): what
//! the operator would write to status follows leader changes within a second, unreachable and
//! silent members are noticed, and membership calls reach the leader.

mod support;

use std::sync::Arc;
use std::time::Duration;

use kuberaft_operator::certs;
use kuberaft_operator::health::Health;
use kuberaft_operator::members::MemberRef;
use kuberaft_operator::members::admin::MemberAdmin;
use kuberaft_operator::members::watch::{MemberWatches, RETRY_MAX, SILENCE_LIMIT};
use kuberaft_operator::observe::RaftView;
use kuberaft_operator::tls::MemberTls;
use support::eventually;
use support::fake_admin::FakeCluster;

fn watches(
    fake: &FakeCluster,
) -> (
    Arc<MemberWatches>,
    tokio::sync::mpsc::Receiver<
        kube::runtime::reflector::ObjectRef<kuberaft_operator::crd::RaftCluster>,
    >,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    (
        Arc::new(MemberWatches::new(
            Arc::new(fake.locator()),
            tx,
            Health::default(),
        )),
        rx,
    )
}

fn leader_and_term(w: &MemberWatches) -> (Option<String>, u64) {
    let raft = RaftView::from_members(&w.view("default", "demo"));
    (raft.leader.map(|(name, _)| name), raft.term)
}

#[tokio::test]
async fn a_new_leader_in_a_higher_term_is_seen_within_a_second() {
    let fake = FakeCluster::new("demo", 3);
    fake.serve(3).await;
    fake.elect(1);
    let (w, mut triggers) = watches(&fake);
    w.ensure("default", "demo", 3);
    eventually(Duration::from_secs(3), "demo-0 leads in term 1", || {
        (leader_and_term(&w) == (Some("demo-0".to_string()), 1)).then_some(())
    })
    .await;
    let target = triggers.recv().await.expect("a reconcile was triggered");
    assert_eq!(target.name, "demo");
    assert_eq!(target.namespace.as_deref(), Some("default"));

    // `kubectl delete pod demo-0`: the leader dies; demo-2 wins the next election.
    fake.kill(1);
    fake.elect(3);
    let (_, elapsed) = eventually(Duration::from_secs(1), "demo-2 leads in term 2", || {
        (leader_and_term(&w) == (Some("demo-2".to_string()), 2)).then_some(())
    })
    .await;
    println!("leader change seen by the operator after {elapsed:?}");
    let dead = w
        .view("default", "demo")
        .get("demo-0")
        .cloned()
        .expect("demo-0 observed");
    assert!(!dead.reachable, "the dead leader is reported unreachable");
}

#[tokio::test]
async fn a_member_that_comes_back_is_streamed_from_again_within_a_second_whatever_its_past() {
    let fake = FakeCluster::new("demo", 3);
    fake.serve(3).await;
    fake.elect(1);
    let (w, _triggers) = watches(&fake);
    w.ensure("default", "demo", 3);
    let reachable = |w: &MemberWatches, pod: &str| {
        w.view("default", "demo")
            .get(pod)
            .is_some_and(|o| o.reachable)
    };
    // Three outages of demo-1 of 3 s each, as a container that crashes and restarts: each time
    // it is back, the operator streams from it again within about a second (at most one
    // attempt's wait, RETRY_MAX, plus jitter). Before, the wait grew to 5 s within the first
    // outage and never came down, so status lagged the member by seconds after every restart.
    for outage in 0..3 {
        eventually(Duration::from_secs(3), "demo-1 reachable", || {
            reachable(&w, "demo-1").then_some(())
        })
        .await;
        fake.kill(2);
        eventually(Duration::from_secs(3), "demo-1 unreachable", || {
            (!reachable(&w, "demo-1")).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        fake.revive(2);
        let (_, back) = eventually(
            Duration::from_secs(10),
            "demo-1 streamed from again",
            || reachable(&w, "demo-1").then_some(()),
        )
        .await;
        println!("outage {outage}: demo-1 streamed from again {back:?} after it came back");
        assert!(
            back <= RETRY_MAX + Duration::from_millis(600),
            "outage {outage}: {back:?} to reconnect"
        );
    }
}

#[tokio::test]
async fn a_member_without_a_server_is_unreachable_with_a_reason() {
    let fake = FakeCluster::new("demo", 3);
    fake.serve(2).await; // demo-2 has no server
    fake.elect(1);
    let (w, _triggers) = watches(&fake);
    w.ensure("default", "demo", 3);
    let (error, _) = eventually(Duration::from_secs(3), "demo-2 unreachable", || {
        w.view("default", "demo")
            .get("demo-2")
            .filter(|o| !o.reachable)
            .and_then(|o| o.error.clone())
    })
    .await;
    assert!(
        error.contains("127.0.0.1:1"),
        "the error names the address: {error}"
    );
}

#[tokio::test]
async fn a_silent_member_is_noticed() {
    let fake = FakeCluster::new("demo", 3);
    fake.serve(3).await;
    fake.elect(1);
    let (w, _triggers) = watches(&fake);
    w.ensure("default", "demo", 3);
    eventually(Duration::from_secs(3), "demo-1 reachable", || {
        w.view("default", "demo")
            .get("demo-1")
            .filter(|o| o.reachable)
            .map(|_| ())
    })
    .await;
    fake.update(|s| s.silent.push(2));
    let (error, elapsed) = eventually(SILENCE_LIMIT * 2, "demo-1 silent", || {
        w.view("default", "demo")
            .get("demo-1")
            .filter(|o| !o.reachable)
            .and_then(|o| o.error.clone())
    })
    .await;
    assert!(error.contains("no status"), "{error}");
    assert!(
        elapsed >= SILENCE_LIMIT - Duration::from_millis(1100),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn watches_follow_the_pods_that_exist() {
    let fake = FakeCluster::new("demo", 3);
    fake.serve(3).await;
    fake.elect(1);
    let (w, _triggers) = watches(&fake);
    w.ensure("default", "demo", 3);
    eventually(Duration::from_secs(3), "three members", || {
        (w.view("default", "demo").len() == 3).then_some(())
    })
    .await;
    w.ensure("default", "demo", 2);
    assert_eq!(
        w.view("default", "demo")
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        ["demo-0", "demo-1"]
    );
    w.forget("default", "demo");
    assert!(w.view("default", "demo").is_empty());
    assert_eq!(w.clusters(), 0);
}

#[tokio::test]
async fn membership_calls_reach_the_member_they_are_sent_to() {
    let fake = FakeCluster::new("demo", 3);
    fake.serve(4).await;
    fake.elect(1);
    let locator = fake.locator();
    let admin = MemberAdmin {
        locator: &locator,
        cluster_domain: "cluster.local",
        tls: None,
    };
    let member = |ordinal| MemberRef {
        namespace: "default".to_string(),
        cluster: "demo".to_string(),
        ordinal,
    };
    let status = admin.status(&member(0)).await.expect("status");
    assert_eq!(status.leader_name, "demo-0");
    admin
        .add_learner(&member(0), &member(3))
        .await
        .expect("add learner");
    admin.promote(&member(0), 4).await.expect("promote");
    admin.remove(&member(0), 4).await.expect("remove");
    admin
        .transfer_leadership(&member(0), 0)
        .await
        .expect("transfer");
    assert_eq!(
        fake.calls(),
        [
            "AddMember(4, demo-3, learner_only=true)@1",
            "PromoteMember(4)@1",
            "RemoveMember(4)@1",
            "TransferLeadership(0)@1",
        ]
    );

    fake.kill(1);
    let error = admin
        .promote(&member(0), 3)
        .await
        .expect_err("a dead member refuses");
    assert!(error.to_string().contains("demo-0"), "{error}");
    let error = admin
        .status(&MemberRef {
            ordinal: 7,
            ..member(0)
        })
        .await
        .expect_err("no server");
    assert!(error.to_string().contains("unreachable"), "{error}");
}

/// A CA and a member certificate for `demo` in `dir`, as the operator would make them.
fn tls_files(
    dir: &std::path::Path,
    ca_name: &str,
) -> (kuberaft_node::tls::TlsFiles, Arc<MemberTls>) {
    let v = certs::Validity::starting_now(time::Duration::days(1));
    let ca = certs::new_ca(ca_name, v).expect("a CA");
    let sans = certs::member_sans("demo", "default", "cluster.local");
    let leaf = certs::issue(&ca, ca_name, &sans, v).expect("a member certificate");
    let files = kuberaft_node::tls::TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        ca: Some(dir.join("ca.crt")),
    };
    std::fs::write(&files.cert, &leaf.cert).expect("write");
    std::fs::write(&files.key, &leaf.key).expect("write");
    std::fs::write(dir.join("ca.crt"), &ca.cert).expect("write");
    let tls = MemberTls::new("demo-tls", ca.cert, leaf.cert, leaf.key).expect("usable PEM");
    (files, Arc::new(tls))
}

#[tokio::test]
async fn members_with_tls_are_watched_and_called_over_mutual_tls_and_never_plaintext() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let (files, tls) = tls_files(dir.path(), "demo CA");
    let fake = FakeCluster::new("demo", 3);
    for ordinal in 0..3 {
        fake.serve_member_tls(ordinal, files.clone()).await;
    }
    fake.elect(1);
    let (w, _triggers) = watches(&fake);
    w.ensure_with_tls("default", "demo", 3, Some(tls.clone()));
    eventually(
        Duration::from_secs(5),
        "demo-0 leads, seen over TLS",
        || (leader_and_term(&w) == (Some("demo-0".to_string()), 1)).then_some(()),
    )
    .await;

    let locator = fake.locator();
    let member = MemberRef {
        namespace: "default".to_string(),
        cluster: "demo".to_string(),
        ordinal: 1,
    };
    let admin = MemberAdmin {
        locator: &locator,
        cluster_domain: "cluster.local",
        tls: Some(&tls),
    };
    let status = admin.status(&member).await.expect("Status over TLS");
    assert_eq!(status.leader_id, 1);

    // Without TLS, or with a certificate of another CA: unreachable, with a reason.
    let other = tempfile::tempdir().expect("a temporary folder");
    let (_, foreign) = tls_files(other.path(), "another CA");
    for (what, tls, says) in [
        ("plaintext", None, "requires TLS"),
        ("another CA", Some(&*foreign), "not signed by a trusted CA"),
    ] {
        let admin = MemberAdmin {
            locator: &locator,
            cluster_domain: "cluster.local",
            tls,
        };
        let error = admin
            .status(&member)
            .await
            .expect_err("no connection without the cluster's certificate");
        assert!(error.to_string().contains(says), "{what}: {error}");
    }
    let (plain, _triggers) = watches(&fake);
    plain.ensure("default", "demo", 3);
    let (error, _) = eventually(Duration::from_secs(5), "plaintext watch refused", || {
        plain
            .view("default", "demo")
            .get("demo-0")
            .and_then(|o| o.error.clone())
    })
    .await;
    assert!(error.contains("requires TLS"), "{error}");
}
