//! The user's journey on three members, each step what Kubernetes would do
//! to a pod: elect, write anywhere and read everywhere, lose the leader to
//! SIGKILL, stop it with SIGTERM, recreate a pod with a new IP, cut the
//! leader off from its peers.

use std::time::Duration;

use kuberaft_proto::admin::Role;
use kuberaft_proto::kv::Consistency;
use kuberaft_tests::cluster::{status, wait_for_leader};
use kuberaft_tests::docker::cluster::{DockerCluster, Spec};
use kuberaft_tests::docker::report;

use crate::support::{ELECTION, eventually, get, put, runtime, status_of, turn, wait_ready};

const WRITE: Duration = Duration::from_secs(5);

#[test]
fn journey_of_three_members_through_kill_stop_recreate_and_partition() {
    let Some(_turn) = turn() else { return };
    let c = DockerCluster::start(Spec::demo(3));
    let rt = runtime();
    let all = c.client_addrs();

    // A leader is elected, and every member becomes ready.
    let (leader, term) = rt.block_on(wait_for_leader(&all, ELECTION));
    rt.block_on(wait_ready(&all, ELECTION));
    report(&format!(
        "journey: member {leader} leads in term {term}; all 3 ready"
    ));

    // Writes through any member are readable through every member.
    rt.block_on(async {
        for (i, through) in all.iter().enumerate() {
            let key = format!("written-through-{i}");
            put(through, &key, "v", WRITE)
                .await
                .unwrap_or_else(|e| panic!("put through {through}: {e}"));
            for from in &all {
                let v = get(from, &key, Consistency::Linearizable)
                    .await
                    .unwrap_or_else(|e| panic!("get {key} from {from}: {e}"));
                assert_eq!(v.as_deref(), Some("v"), "{key} read through {from}");
            }
        }
    });

    // raftctl in the image talks to its own member, as
    // `kubectl exec demo-0 -- raftctl …` does.
    let (first, second) = (c.ids()[0], c.ids()[1]);
    c.exec(first, &["raftctl", "put", "via-raftctl", "hello"])
        .unwrap_or_else(|e| panic!("raftctl put in member {first}: {e}"));
    let got = c
        .exec(second, &["raftctl", "get", "via-raftctl"])
        .unwrap_or_else(|e| panic!("raftctl get in member {second}: {e}"));
    assert!(got.contains("hello"), "raftctl get printed {got:?}");

    // SIGKILL of the leader: the others elect a new one in a higher term.
    c.kill(leader);
    let (killed_successor, t2) =
        rt.block_on(wait_for_leader(&c.client_addrs_except(&[leader]), ELECTION));
    assert_ne!(killed_successor, leader);
    assert!(t2 > term, "term {t2} after the kill must be above {term}");
    report(&format!(
        "journey: SIGKILL of member {leader} → member {killed_successor} leads in term {t2}"
    ));
    c.start_member(leader);
    let (l, t) = rt.block_on(wait_for_leader(&all, ELECTION));
    rt.block_on(wait_ready(&all, ELECTION));
    rt.block_on(async {
        let v = get(
            &c.client_addr(leader),
            "written-through-0",
            Consistency::Linearizable,
        )
        .await
        .expect("read through the restarted member");
        assert_eq!(v.as_deref(), Some("v"));
    });

    // SIGTERM of the leader (`kubectl delete pod`): it hands leadership over
    // before it exits, so the next term elects its successor at once.
    c.stop(l, 30);
    let exit = c.wait_exited(l, Duration::from_secs(5));
    assert_eq!(exit, Some(0), "a member stopped with SIGTERM exits cleanly");
    let logs = c.logs(l);
    assert!(
        logs.contains("leadership handed over"),
        "member {l} handed leadership over before exiting:\n{logs}"
    );
    let (successor, t3) = rt.block_on(wait_for_leader(&c.client_addrs_except(&[l]), ELECTION));
    assert_ne!(successor, l);
    // TimeoutNow starts the election at once, without PreVote.
    assert_eq!(t3, t + 1, "the handover elects in the very next term");
    report(&format!(
        "journey: SIGTERM of leader {l} (term {t}) → handed over to member {successor} in term {t3}"
    ));
    c.start_member(l);
    let (leader, term) = rt.block_on(wait_for_leader(&all, ELECTION));
    rt.block_on(wait_ready(&all, ELECTION));

    // A recreated pod keeps its name and volume but gets a new IP. It
    // rejoins only if the leader resolves its name again when reconnecting.
    let follower = *c
        .ids()
        .iter()
        .find(|id| **id != leader)
        .expect("a follower");
    let old_ip = c.pod_ip(follower).expect("the follower has a pod IP");
    let new_ip = c.recreate(follower);
    assert_ne!(old_ip, new_ip);
    assert_eq!(c.pod_ip(follower).as_deref(), Some(new_ip.as_str()));
    let all = c.client_addrs();
    let addr = c.client_addr(follower);
    rt.block_on(async {
        // A follower learns who leads only from the leader's own messages:
        // knowing it proves the leader reached the new IP.
        eventually(
            &format!(
                "recreated member {follower} ({old_ip} → {new_ip}) hears from leader {leader}"
            ),
            ELECTION,
            || async {
                status(&addr)
                    .await
                    .filter(|s| s.leader_id == leader && s.term == term)
            },
        )
        .await;
        put(&c.client_addr(leader), "after-recreate", "1", WRITE)
            .await
            .expect("write after the recreate");
        eventually(
            &format!("recreated member {follower} catches up with its volume's log"),
            ELECTION,
            || async {
                let v = get(&addr, "after-recreate", Consistency::Serializable)
                    .await
                    .ok()?;
                (v.as_deref() == Some("1")).then_some(())
            },
        )
        .await;
        let s = status_of(&addr).await;
        assert_eq!(s.role, Role::Follower as i32, "{s:?}");
    });
    rt.block_on(wait_ready(&all, ELECTION));
    report(&format!(
        "journey: member {follower} recreated with pod IP {old_ip} → {new_ip}; it rejoined and follows member {leader}"
    ));

    // The leader is cut off from its peers (clients still reach it).
    let (old, old_term) = rt.block_on(wait_for_leader(&all, ELECTION));
    c.disconnect(old);
    let old_addr = c.client_addr(old);
    rt.block_on(async {
        // It cannot commit: the write it accepts as leader never reaches a majority.
        let r = put(
            &old_addr,
            "during-partition",
            "lost",
            Duration::from_secs(2),
        )
        .await;
        assert!(
            r.is_err(),
            "a leader cut off from its peers committed a write: {r:?}"
        );
    });
    let majority = c.client_addrs_except(&[old]);
    let (new_leader, new_term) = rt.block_on(wait_for_leader(&majority, ELECTION));
    assert_ne!(new_leader, old);
    assert!(new_term > old_term);
    rt.block_on(async {
        // CheckQuorum: without a majority it steps down by itself.
        eventually(&format!("member {old} steps down"), ELECTION, || async {
            status(&old_addr)
                .await
                .filter(|s| s.role != Role::Leader as i32)
        })
        .await;
        let r = put(
            &old_addr,
            "during-partition-2",
            "lost",
            Duration::from_secs(2),
        )
        .await;
        assert!(r.is_err(), "a cut-off member committed a write: {r:?}");
        put(&majority[0], "majority-write", "1", WRITE)
            .await
            .expect("the majority commits");
    });
    report(&format!(
        "journey: leader {old} (term {old_term}) cut off → member {new_leader} leads in term {new_term}; {old} stepped down"
    ));

    // Reconnected, it follows the new leader and has what the majority wrote.
    c.reconnect(old);
    let (leader, term) = rt.block_on(wait_for_leader(&all, ELECTION));
    rt.block_on(async {
        let s = status_of(&old_addr).await;
        assert_eq!(s.role, Role::Follower as i32, "{s:?}");
        assert_eq!((s.leader_id, s.term), (leader, term));
        eventually("the reconnected member catches up", ELECTION, || async {
            let v = get(&old_addr, "majority-write", Consistency::Serializable)
                .await
                .ok()?;
            (v.as_deref() == Some("1")).then_some(())
        })
        .await;
        for key in ["during-partition", "during-partition-2"] {
            let v = get(&all[0], key, Consistency::Linearizable)
                .await
                .expect("linearizable read");
            assert_eq!(v, None, "{key} was never committed, yet it is there");
        }
        put(&old_addr, "after-reconnect", "1", WRITE)
            .await
            .expect("a write through the reconnected member");
        for a in &all {
            let v = get(a, "after-reconnect", Consistency::Linearizable)
                .await
                .expect("read");
            assert_eq!(v.as_deref(), Some("1"), "through {a}");
        }
    });
    rt.block_on(wait_ready(&all, ELECTION));
    report(&format!(
        "journey: member {old} reconnected and follows member {leader} in term {term}"
    ));
}
