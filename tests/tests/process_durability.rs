//! Durability and data dirs, with real processes: a restarted member keeps
//! its term, log and data; a foreign or damaged data dir is refused and left
//! as it was (issue 3).

use std::time::Duration;

use kuberaft_proto::kv::{self as kvpb, Consistency};
use kuberaft_tests::cluster::{Cluster, get_linearizable, kv, status, wait_for_leader};

const ELECTION: Duration = Duration::from_secs(10);

async fn put(addr: &str, key: &str, value: &str) {
    kv(addr)
        .await
        .put(kvpb::PutRequest {
            key: key.into(),
            value: value.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("put {key} through {addr}: {e}"));
}

async fn serializable(addr: &str, key: &str) -> Option<Vec<u8>> {
    kv(addr)
        .await
        .get(kvpb::GetRequest {
            key: key.into(),
            consistency: Consistency::Serializable as i32,
        })
        .await
        .ok()
        .and_then(|r| r.into_inner().kv.map(|kv| kv.value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_restarts_with_its_term_log_and_data() {
    let mut c = Cluster::start(3);
    let addrs = c.client_addrs();
    wait_for_leader(&addrs, ELECTION).await;
    for i in 0..50 {
        put(&addrs[i % 3], &format!("k{i:02}"), &format!("v{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in c.ids() {
        let addr = c.member(id).client_addr();
        let before = status(&addr).await.expect("status before");
        c.kill(id);
        c.spawn(id);
        // Before it hears from anyone, what it reports comes from its disk.
        let mut after = None;
        for _ in 0..100 {
            after = status(&addr).await;
            if after.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = after.expect("restarted member answers");
        assert!(
            after.term >= before.term,
            "member {id}: term {} < {}",
            after.term,
            before.term
        );
        assert!(
            after.last_index >= before.last_index,
            "member {id}: log shrank"
        );
        for i in 0..50 {
            let key = format!("k{i:02}");
            let mut v = None;
            for _ in 0..50 {
                v = serializable(&addr, &key).await;
                if v.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(
                v,
                Some(format!("v{i}").into_bytes()),
                "member {id} lost {key}"
            );
        }
        wait_for_leader(&addrs, ELECTION).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_restart_keeps_everything_acknowledged() {
    let mut c = Cluster::start(3);
    let addrs = c.client_addrs();
    let (_, term) = wait_for_leader(&addrs, ELECTION).await;
    for i in 0..20 {
        put(&addrs[0], &format!("w{i}"), "x").await;
    }
    for id in c.ids() {
        c.kill(id);
    }
    for id in c.ids() {
        c.spawn(id);
    }
    let (_, new_term) = wait_for_leader(&addrs, ELECTION).await;
    assert!(new_term > term);
    for i in 0..20 {
        let v = get_linearizable(&addrs[1], &format!("w{i}"))
            .await
            .expect("get");
        assert!(v.is_some(), "w{i} lost in a full restart");
    }
}

fn dir_listing(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = walk(dir);
    out.sort();
    out
}

fn walk(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                let content = std::fs::read(&p).unwrap_or_default();
                let sum = content
                    .iter()
                    .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(*b)));
                out.push((p.display().to_string(), sum));
            }
        }
    }
    out
}

/// Runs member `id` with a modified command line and returns its exit status
/// and output (it is expected to refuse to start).
fn run_to_exit(mut cmd: std::process::Command) -> (std::process::ExitStatus, String) {
    let out = cmd.output().expect("run kuberaft-node");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_another_member_or_cluster_is_refused_and_left_untouched() {
    let mut c = Cluster::start(3);
    let addrs = c.client_addrs();
    wait_for_leader(&addrs, ELECTION).await;
    put(&addrs[0], "a", "1").await;
    c.kill(1);
    let dir1 = c.member(1).data_dir.clone();
    let before = dir_listing(&dir1);

    // Member 2's process pointed at member 1's data dir.
    let dir2 = std::mem::replace(&mut c.member(2).data_dir, dir1.clone());
    let cmd = c.command(2);
    c.member(2).data_dir = dir2;
    let (code, err) = run_to_exit(cmd);
    assert!(!code.success());
    assert!(
        err.contains("member 1") && err.contains("member 2"),
        "says whose dir it is: {err}"
    );
    assert_eq!(dir_listing(&dir1), before, "the refused dir is unchanged");

    // Member 1 in another cluster.
    let real = std::mem::replace(&mut c.name, "other".into());
    let cmd = c.command(1);
    c.name = real;
    let (code, err) = run_to_exit(cmd);
    assert!(!code.success());
    assert!(
        err.contains("\"test\"") && err.contains("\"other\""),
        "names both clusters: {err}"
    );
    assert_eq!(dir_listing(&dir1), before, "the refused dir is unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_data_dir_is_refused_and_never_reset() {
    let mut c = Cluster::start(3);
    let addrs = c.client_addrs();
    wait_for_leader(&addrs, ELECTION).await;
    put(&addrs[0], "a", "the value to damage").await;
    // A linearizable read through member 1 waits until it has applied the
    // write, so its log holds it.
    get_linearizable(&addrs[0], "a").await.expect("read a");
    c.kill(1);
    let dir1 = c.member(1).data_dir.clone();
    // Flip one byte of the stored entry, behind the checksum that guards it.
    {
        let wal = dir1.join("wal");
        let mut segments: Vec<_> = std::fs::read_dir(&wal)
            .expect("the member's log directory")
            .map(|e| e.expect("list the log").path())
            .collect();
        segments.sort();
        let newest = segments.pop().expect("a log segment");
        let mut data = std::fs::read(&newest).expect("read the segment");
        // Inside the value written above, inside its entry.
        let at = data
            .windows(19)
            .position(|w| w == b"the value to damage")
            .expect("the entry of key a");
        data[at] ^= 0x01;
        std::fs::write(&newest, &data).expect("write the damaged segment");
    }
    let (code, err) = run_to_exit(c.command(1));
    if code.success() {
        panic!("a damaged data dir was accepted:\n{err}");
    }
    assert!(
        err.contains(&dir1.display().to_string()),
        "names the data dir: {err}"
    );
    assert!(
        err.contains("checksum") || err.contains("damaged") || err.contains("corrupt"),
        "says what is wrong: {err}"
    );
    // Refused again on a second attempt: nothing was reset in between.
    let (code, _) = run_to_exit(c.command(1));
    assert!(!code.success(), "still refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_data_dir_was_wiped_is_refused_and_can_be_added_back_as_a_new_member() {
    let mut c = Cluster::start(3);
    let addrs = c.client_addrs();
    let (leader, _) = wait_for_leader(&addrs, ELECTION).await;
    put(&addrs[0], "before", "1").await;
    let wiped = c
        .ids()
        .into_iter()
        .find(|i| *i != leader)
        .expect("a follower");
    c.kill(wiped);
    std::fs::remove_dir_all(&c.member(wiped).data_dir).expect("wipe");
    // Back with an empty data dir under its old identity: refused.
    c.spawn(wiped);
    let mut exited = None;
    for _ in 0..300 {
        if !c.member(wiped).is_running() {
            exited = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = c.log_of(wiped);
    assert!(
        exited.is_some(),
        "the wiped member stopped by itself:\n{log}"
    );
    assert!(
        log.contains("came back with a new data dir"),
        "it says why:\n{log}"
    );
    assert!(log.contains("member remove"), "and what to do:\n{log}");
    // The other two carry on.
    let others: Vec<String> = c
        .members
        .iter()
        .filter(|m| m.id != wiped)
        .map(|m| m.client_addr())
        .collect();
    wait_for_leader(&others, ELECTION).await;
    put(&others[0], "during", "2").await;
    let via = c
        .members
        .iter()
        .find(|m| m.id != wiped)
        .map(|m| m.admin_addr())
        .expect("another member");

    // Remove it, wipe again, and add it back as a new member.
    let mut req = tonic::Request::new(kuberaft_proto::admin::RemoveMemberRequest { id: wiped });
    req.set_timeout(Duration::from_secs(20));
    kuberaft_tests::cluster::admin(&via)
        .await
        .remove_member(req)
        .await
        .expect("remove");
    std::fs::remove_dir_all(&c.member(wiped).data_dir).ok();
    c.spawn(wiped);
    let pb = c.member_pb(wiped);
    let mut req = tonic::Request::new(kuberaft_proto::admin::AddMemberRequest {
        member: Some(pb),
        learner_only: false,
    });
    req.set_timeout(Duration::from_secs(30));
    kuberaft_tests::cluster::admin(&via)
        .await
        .add_member(req)
        .await
        .expect("add back");
    let addr = c.member(wiped).client_addr();
    let mut v = None;
    for _ in 0..200 {
        v = serializable(&addr, "during").await;
        if v.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        v.as_deref(),
        Some(&b"2"[..]),
        "the re-added member caught up"
    );
    wait_for_leader(&c.client_addrs(), ELECTION).await;
}
