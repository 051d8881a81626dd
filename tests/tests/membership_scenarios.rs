//! Membership changes the way the operator makes them (grow: add a learner,
//! let it catch up, promote it; shrink: remove a member), one server at a
//! time (§4.1 of Ongaro's thesis), on the scripted harness with the
//! simulator's checker watching every step.

use kuberaft_node::raft::{ConfChange, NodeId, ProposeError, Role, Suffrage};
use kuberaft_tests::script::Scene;
use kuberaft_tests::sim::cluster::member;

fn voters(s: &Scene, id: NodeId) -> Vec<NodeId> {
    s.status(id).membership.voters().collect()
}

/// A new pod starts with an empty data directory. The founding voters are
/// recorded only in the bootstrap snapshot, which no log entry repeats, so
/// the new member must get that snapshot before any entry; once promoted it
/// knows all four voters (not just itself) and the cluster keeps committing
/// with the new majority.
#[test]
fn a_new_member_joins_with_an_empty_disk_catches_up_is_promoted_and_a_voter_is_removed() {
    let mut s = Scene::new(3);
    let leader = s.elect(1_000);
    for v in 1..=5 {
        s.set(leader, v).expect("leader");
        s.elapse(5);
    }

    s.add_empty_member(4);
    let add = ConfChange::AddLearner(member(4, Suffrage::Learner));
    s.propose_conf_change(leader, add)
        .expect("one change at a time");
    s.elapse(100);
    assert_eq!(s.value(4), 5, "the learner replicated the log");
    assert_eq!(s.role(4), Role::Follower);
    assert_eq!(
        voters(&s, 4),
        vec![1, 2, 3],
        "the learner knows the founding voters"
    );

    s.propose_conf_change(leader, ConfChange::PromoteLearner { id: 4 })
        .expect("caught up");
    s.elapse(100);
    for id in 1..=4 {
        assert_eq!(voters(&s, id), vec![1, 2, 3, 4], "member {id}");
    }

    // Four voters need three: with two of the founders down, the cluster
    // can still commit only because the new member counts.
    let down: Vec<NodeId> = (1..=3).filter(|id| *id != leader).collect();
    s.crash(down[0]);
    let w = s.set(leader, 6).expect("leader");
    s.elapse(50);
    assert!(s.answered(&w), "leader, new member and one founder commit");

    s.restart(down[0]);
    s.elapse(100);
    let removed = down[1];
    s.propose_conf_change(leader, ConfChange::RemoveMember { id: removed })
        .expect("one change at a time");
    s.elapse(100);
    let remaining: Vec<NodeId> = (1..=4).filter(|id| *id != removed).collect();
    for id in &remaining {
        assert_eq!(&voters(&s, *id), &remaining, "member {id}");
    }
    let w = s.set(leader, 7).expect("leader");
    s.elapse(50);
    assert!(s.answered(&w));
    for id in remaining {
        assert_eq!(s.value(id), 7, "member {id}");
    }
}

/// §4.1, and the fix to single-server changes (Ongaro, raft-dev 2015): a
/// leader takes one change at a time, and none before it has committed an
/// entry of its own term.
#[test]
fn a_leader_takes_one_membership_change_at_a_time() {
    let mut s = Scene::new(3);
    let leader = s.elect(1_000);
    s.elapse(60);
    s.add_empty_member(4);
    s.add_empty_member(5);
    let add = |id| ConfChange::AddLearner(member(id, Suffrage::Learner));
    let first = s.propose_conf_change(leader, add(4)).expect("first change");
    let second = s.propose_conf_change(leader, add(5));
    assert_eq!(
        second,
        Err(ProposeError::ConfChangePending { index: first }),
        "the second waits for the first to commit"
    );
    s.elapse(60);
    s.propose_conf_change(leader, add(5))
        .expect("the first is committed now");

    // A new leader must first commit an entry of its own term.
    s.crash(leader);
    let next = s.elect(1_000);
    let r = s.propose_conf_change(next, ConfChange::PromoteLearner { id: 4 });
    assert!(
        matches!(r, Err(ProposeError::ConfChangePending { .. })),
        "{r:?}"
    );
    s.elapse(60);
    s.propose_conf_change(next, ConfChange::PromoteLearner { id: 4 })
        .expect("its no-op is committed now");
}
