//! Five members: two may fail and the rest go on; a third failure stops
//! commits; when they return, every acknowledged write is everywhere.

use std::time::Duration;

use kuberaft_proto::kv::Consistency;
use kuberaft_tests::cluster::wait_for_leader;
use kuberaft_tests::docker::cluster::{DockerCluster, Spec};
use kuberaft_tests::docker::report;

use crate::support::{ELECTION, eventually, get, put, runtime, turn, wait_ready};

#[test]
fn five_members_survive_two_failures_and_stop_committing_at_three() {
    let Some(_turn) = turn() else { return };
    let c = DockerCluster::start(Spec::demo(5));
    let rt = runtime();
    let all = c.client_addrs();
    let (leader, term) = rt.block_on(wait_for_leader(&all, ELECTION));
    rt.block_on(wait_ready(&all, ELECTION));
    let mut acknowledged = Vec::new();
    rt.block_on(async {
        for (i, through) in all.iter().enumerate() {
            let key = format!("five-{i}");
            put(through, &key, "v", Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("put through {through}: {e}"));
            acknowledged.push(key);
        }
    });

    // The leader and one follower die: three of five still commit.
    let follower = *c
        .ids()
        .iter()
        .find(|id| **id != leader)
        .expect("a follower");
    c.kill(leader);
    c.kill(follower);
    let rest = c.client_addrs_except(&[leader, follower]);
    let (new_leader, new_term) = rt.block_on(wait_for_leader(&rest, ELECTION));
    assert!(new_term > term);
    rt.block_on(async {
        put(&rest[0], "with-three", "v", Duration::from_secs(5))
            .await
            .expect("three of five commit");
    });
    acknowledged.push("with-three".into());
    report(&format!(
        "five members: members {leader} and {follower} killed → member {new_leader} leads in term {new_term}"
    ));

    // A third: two of five cannot.
    let third = *c
        .ids()
        .iter()
        .find(|id| ![leader, follower, new_leader].contains(id))
        .expect("a third member");
    c.kill(third);
    rt.block_on(async {
        let r = put(
            &c.client_addr(new_leader),
            "with-two",
            "v",
            Duration::from_secs(2),
        )
        .await;
        assert!(r.is_err(), "two of five committed a write: {r:?}");
    });

    // All come back: one leader, every acknowledged write on every member.
    for id in [leader, follower, third] {
        c.start_member(id);
    }
    rt.block_on(wait_for_leader(&all, ELECTION));
    rt.block_on(wait_ready(&all, ELECTION));
    rt.block_on(async {
        for a in &all {
            for key in &acknowledged {
                eventually(&format!("{key} on {a}"), ELECTION, || async {
                    let v = get(a, key, Consistency::Serializable).await.ok()?;
                    (v.as_deref() == Some("v")).then_some(())
                })
                .await;
            }
        }
    });
    report("five members: all five back, every acknowledged write on every member");
}
