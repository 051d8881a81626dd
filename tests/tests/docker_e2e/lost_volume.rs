//! A pod that comes back without its volume (its PVC deleted, its node's
//! disk gone) has forgotten its votes and its log. Rejoining under its old
//! identity could break Raft's one-vote-per-term rule, so it is refused and
//! says how to recover; the others go on.

use std::time::Duration;

use kuberaft_tests::cluster::wait_for_leader;
use kuberaft_tests::docker::cluster::{DockerCluster, Spec};
use kuberaft_tests::docker::report;

use crate::support::{ELECTION, put, runtime, turn, wait_ready};

#[test]
fn a_member_back_with_an_empty_volume_is_refused_and_says_what_to_do() {
    let Some(_turn) = turn() else { return };
    let c = DockerCluster::start(Spec::demo(3));
    let rt = runtime();
    let all = c.client_addrs();
    let (leader, _) = rt.block_on(wait_for_leader(&all, ELECTION));
    rt.block_on(wait_ready(&all, ELECTION));
    rt.block_on(async {
        put(&all[0], "before", "1", Duration::from_secs(5))
            .await
            .expect("put");
    });

    let lost = *c
        .ids()
        .iter()
        .find(|id| **id != leader)
        .expect("a follower");
    c.recreate_with_empty_volume(lost);
    let exit = c.wait_exited(lost, ELECTION);
    assert!(
        exit.is_some_and(|code| code != 0),
        "member {lost} with an empty volume must stop with an error, got {exit:?}"
    );
    let logs = c.logs(lost);
    assert!(
        logs.contains("came back with a new data dir") && logs.contains("member remove"),
        "member {lost} says why it stopped and what to do:\n{logs}"
    );

    let rest = c.client_addrs_except(&[lost]);
    rt.block_on(wait_for_leader(&rest, ELECTION));
    rt.block_on(async {
        put(&rest[0], "after", "1", Duration::from_secs(5))
            .await
            .expect("the other two go on");
    });
    report(&format!(
        "lost volume: member {lost} came back empty, was refused (exit {exit:?}) and said to remove and re-add it; the others go on"
    ));
}
