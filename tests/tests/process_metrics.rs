//! `/metrics` of real members: it parses as Prometheus text, and the key
//! series move when the leader is killed (issue 7).

use std::time::Duration;

use kuberaft_tests::cluster::{Cluster, wait_for_leader};
use kuberaft_tests::prometheus::{fetch, parse};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_when_the_leader_is_killed() {
    let mut c = Cluster::start(3);
    let addrs = c.client_addrs();
    let (leader, term) = wait_for_leader(&addrs, Duration::from_secs(10)).await;
    let follower = c
        .ids()
        .into_iter()
        .find(|i| *i != leader)
        .expect("a follower");
    let http = c.member(follower).http_addr();
    // Give the status board a refresh interval to publish.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = parse(&fetch(&http).expect("GET /metrics")).expect("valid exposition");
    for series in [
        "kuberaft_term",
        "kuberaft_commit_index",
        "kuberaft_applied_index",
        "kuberaft_leader_changes_total",
        "kuberaft_proposals_committed_total",
        "kuberaft_append_seconds_count",
        "kuberaft_fsync_seconds_count",
        "kuberaft_role{role=\"follower\"}",
    ] {
        assert!(
            before.contains_key(series),
            "missing {series} in {:?}",
            before.keys().collect::<Vec<_>>()
        );
    }
    // The follower has at least persisted its vote or the leader's no-op,
    // each with a sync: histograms that never move would be decoration.
    assert!(before["kuberaft_append_seconds_count"] > 0.0);
    assert!(before["kuberaft_fsync_seconds_count"] > 0.0);
    assert_eq!(before["kuberaft_term"], term as f64);
    assert_eq!(before["kuberaft_leader_id"], leader as f64);
    assert_eq!(before["kuberaft_role{role=\"follower\"}"], 1.0);

    c.kill(leader);
    let survivors: Vec<String> = c
        .members
        .iter()
        .filter(|m| m.id != leader)
        .map(|m| m.client_addr())
        .collect();
    let (new_leader, new_term) = wait_for_leader(&survivors, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = parse(&fetch(&http).expect("GET /metrics")).expect("valid exposition");
    assert_eq!(after["kuberaft_term"], new_term as f64);
    assert_eq!(after["kuberaft_leader_id"], new_leader as f64);
    assert!(after["kuberaft_leader_changes_total"] > before["kuberaft_leader_changes_total"]);
    if new_leader == follower {
        assert_eq!(after["kuberaft_role{role=\"leader\"}"], 1.0);
        let lag = format!("kuberaft_follower_lag_entries{{peer=\"{leader}\"}}");
        assert!(
            after.contains_key(&lag),
            "the new leader reports the lag of the dead member"
        );
    }
}

#[test]
fn the_parser_rejects_malformed_expositions() {
    assert!(parse("a 1\n# EOF\n").is_ok());
    assert!(parse("a 1\n").is_err(), "missing EOF");
    assert!(
        parse("a{b=\"c\" 1\n# EOF\n").is_err(),
        "unterminated labels"
    );
    assert!(parse("a one\n# EOF\n").is_err(), "bad value");
    assert!(parse("# WHAT\n# EOF\n").is_err(), "unknown comment");
}
