//! Membership changes with real processes (issue 4): grow 3 → 5 → 3 while a
//! client writes; remove the leader; a removed member does not disturb the
//! cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kuberaft_proto::admin as adminpb;
use kuberaft_proto::kv as kvpb;
use kuberaft_proto::raft::Suffrage;
use kuberaft_tests::cluster::{Cluster, admin, kv, status, wait_for_leader};

const ELECTION: Duration = Duration::from_secs(10);

async fn writer(addrs: Vec<String>, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut acked = Vec::new();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("m-{i:06}");
        let a = &addrs[i % addrs.len()];
        let mut req = tonic::Request::new(kvpb::PutRequest {
            key: key.clone().into(),
            value: b"x".to_vec(),
        });
        req.set_timeout(Duration::from_secs(2));
        if kv(a).await.put(req).await.is_ok() {
            acked.push(key);
        }
        i += 1;
    }
    acked
}

fn voters(s: &adminpb::StatusResponse) -> Vec<u64> {
    let mut v: Vec<u64> = s
        .members
        .iter()
        .filter_map(|m| m.member.as_ref())
        .filter(|m| m.suffrage == Suffrage::Voter as i32)
        .map(|m| m.id)
        .collect();
    v.sort();
    v
}

async fn add_member(via: &str, member: kuberaft_proto::raft::Member) -> adminpb::AddMemberResponse {
    let mut req = tonic::Request::new(adminpb::AddMemberRequest {
        member: Some(member),
        learner_only: false,
    });
    req.set_timeout(Duration::from_secs(30));
    admin(via)
        .await
        .add_member(req)
        .await
        .expect("AddMember")
        .into_inner()
}

async fn remove_member(via: &str, id: u64) {
    let mut req = tonic::Request::new(adminpb::RemoveMemberRequest { id });
    req.set_timeout(Duration::from_secs(30));
    admin(via)
        .await
        .remove_member(req)
        .await
        .unwrap_or_else(|e| panic!("RemoveMember {id}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_from_three_to_five_and_back_while_a_client_writes() {
    let mut c = Cluster::start(3);
    let addrs = c.client_addrs();
    wait_for_leader(&addrs, ELECTION).await;
    let admin_addrs = c.admin_addrs();
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(addrs.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    for _ in 0..2 {
        let id = c.add_node();
        let pb = c.member_pb(id);
        // Through member 2's admin port: a follower forwards to the leader's.
        let resp = add_member(&admin_addrs[1], pb).await;
        let m = resp.membership.expect("membership");
        assert!(
            m.members
                .iter()
                .any(|x| x.id == id && x.suffrage == Suffrage::Voter as i32),
            "member {id} was promoted: {m:?}"
        );
    }
    let all = c.client_addrs();
    let (leader, _) = wait_for_leader(&all, ELECTION).await;
    let s = status(&c.member(leader).client_addr())
        .await
        .expect("status");
    assert_eq!(voters(&s), vec![1, 2, 3, 4, 5]);
    tokio::time::sleep(Duration::from_millis(300)).await;

    for id in [5, 4] {
        remove_member(&admin_addrs[0], id).await;
        c.kill(id);
    }
    let (leader, _) = wait_for_leader(&addrs, ELECTION).await;
    let s = status(&c.member(leader).client_addr())
        .await
        .expect("status");
    assert_eq!(voters(&s), vec![1, 2, 3]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = w.await.expect("writer");
    assert!(
        acked.len() > 20,
        "the client kept writing: {} acknowledged",
        acked.len()
    );
    for a in &addrs {
        let mut client = kv(a).await;
        for k in &acked {
            let got = client
                .get(kvpb::GetRequest {
                    key: k.clone().into(),
                    consistency: 0,
                })
                .await
                .expect("get")
                .into_inner();
            assert!(got.kv.is_some(), "acknowledged {k} missing through {a}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_moves_leadership_first_and_the_removed_member_stays_quiet() {
    let mut c = Cluster::start(3);
    let addrs = c.client_addrs();
    let (leader, _) = wait_for_leader(&addrs, ELECTION).await;
    kv(&addrs[0])
        .await
        .put(kvpb::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        })
        .await
        .expect("put");
    // Ask the leader itself to remove itself.
    remove_member(&c.member(leader).admin_addr(), leader).await;
    let others: Vec<String> = c
        .members
        .iter()
        .filter(|m| m.id != leader)
        .map(|m| m.client_addr())
        .collect();
    let (new_leader, term) = wait_for_leader(&others, ELECTION).await;
    assert_ne!(new_leader, leader);
    let s = status(&others[0]).await.expect("status");
    assert_eq!(voters(&s).len(), 2);
    assert!(!voters(&s).contains(&leader));
    // The removed member keeps running, cut off from the log; with PreVote
    // and leader leases it must not push the cluster into new terms.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (still, later_term) = wait_for_leader(&others, ELECTION).await;
    assert_eq!(
        still, new_leader,
        "no leader change caused by the removed member"
    );
    assert_eq!(
        later_term, term,
        "the removed member did not disturb the term"
    );
    kv(&others[0])
        .await
        .put(kvpb::PutRequest {
            key: b"k2".to_vec(),
            value: b"v".to_vec(),
        })
        .await
        .expect("the two remaining commit");
}

/// Issue 16: whoever reaches a client port (the `<name>` Services expose it) must not change the
/// cluster. Every call that changes it is refused there, names the admin address, and changes
/// nothing; the calls that read still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_port_refuses_every_call_that_changes_the_cluster() {
    let mut c = Cluster::start(3);
    let addrs = c.client_addrs();
    let (leader, term) = wait_for_leader(&addrs, ELECTION).await;
    let at = c.member(leader).client_addr();
    let admin_addr = c.member(leader).admin_addr();
    let before = status(&at).await.expect("status on the client port");
    assert_eq!(
        before.admin_addr, admin_addr,
        "Status says where the admin port is"
    );
    let joiner = c.add_node();
    let pb = c.member_pb(joiner);
    let mut client = admin(&at).await;
    let refusals = [
        (
            "AddMember",
            client
                .add_member(adminpb::AddMemberRequest {
                    member: Some(pb),
                    learner_only: true,
                })
                .await
                .map(drop),
        ),
        (
            "PromoteMember",
            client
                .promote_member(adminpb::PromoteMemberRequest { id: joiner })
                .await
                .map(drop),
        ),
        (
            "RemoveMember",
            client
                .remove_member(adminpb::RemoveMemberRequest { id: 1 })
                .await
                .map(drop),
        ),
        (
            "TransferLeadership",
            client
                .transfer_leadership(adminpb::TransferLeadershipRequest { to: 0 })
                .await
                .map(drop),
        ),
        (
            "Snapshot",
            client.snapshot(adminpb::SnapshotRequest {}).await.map(drop),
        ),
    ];
    for (call, result) in refusals {
        let e = result.expect_err(call);
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{call}: {e}");
        assert!(
            e.message().contains(call) && e.message().contains(&admin_addr),
            "{call}: the refusal names the call and the admin address: {}",
            e.message()
        );
    }
    let after = status(&at).await.expect("status");
    assert_eq!(
        voters(&after),
        voters(&before),
        "the membership did not change"
    );
    assert!(
        !after
            .members
            .iter()
            .filter_map(|m| m.member.as_ref())
            .any(|m| m.id == joiner),
        "member {joiner} was not added"
    );
    assert_eq!(
        (after.leader_id, after.term),
        (leader, term),
        "leadership did not move"
    );
    assert_eq!(
        after.snapshot_index, before.snapshot_index,
        "no snapshot was taken"
    );
}
