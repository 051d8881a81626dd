//! The operator's member-status code against real `kuberaft-node`
//! processes (issue 5): it follows each member's WatchStatus stream, and when
//! the leader is killed the status it would write shows the new leader, in a
//! higher term, a moment later.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kuberaft_operator::health::Health;
use kuberaft_operator::members::MemberRef;
use kuberaft_operator::members::watch::MemberWatches;
use kuberaft_operator::observe::RaftView;
use kuberaft_tests::cluster::{Cluster, wait_for_leader};

fn leader_and_term(w: &MemberWatches) -> (Option<String>, u64) {
    let raft = RaftView::from_members(&w.view("default", "demo"));
    (raft.leader.map(|(name, _)| name), raft.term)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_the_operator_would_write_follows_a_real_leader_change() {
    let mut c = Cluster::start_named("demo", 3);
    let addrs = c.client_addrs();
    let (leader, term) = wait_for_leader(&addrs, Duration::from_secs(10)).await;
    // The operator reaches pod demo-<ordinal> at member ordinal+1's admin port.
    let ports: Vec<u16> = c.members.iter().map(|m| m.admin_port).collect();
    let locator = move |m: &MemberRef| format!("http://127.0.0.1:{}", ports[m.ordinal as usize]);
    let (tx, _triggers) = tokio::sync::mpsc::channel(64);
    let watches = Arc::new(MemberWatches::new(Arc::new(locator), tx, Health::default()));
    watches.ensure("default", "demo", 3);

    let leader_pod = format!("demo-{}", leader - 1);
    let start = Instant::now();
    loop {
        if leader_and_term(&watches) == (Some(leader_pod.clone()), term) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the operator sees {leader_pod} lead term {term}: {:?}",
            leader_and_term(&watches)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // kubectl delete pod <leader>
    c.kill(leader);
    let killed = Instant::now();
    let (new_leader, new_term) = loop {
        let (l, t) = leader_and_term(&watches);
        if let Some(l) = l
            && l != leader_pod
            && t > term
        {
            break (l, t);
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the operator saw no new leader: {:?}",
            leader_and_term(&watches)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!(
        "the operator's view: {new_leader} leads term {new_term}, {:?} after {leader_pod} was killed",
        killed.elapsed()
    );
    let dead = watches
        .view("default", "demo")
        .get(&leader_pod)
        .cloned()
        .expect("observed");
    assert!(!dead.reachable, "the killed leader shows as unreachable");
}
