//! Small in-crate checks of the core; the thorough ones are the simulator and
//! the scenario tests in `tests/`.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::*;

fn member(id: NodeId) -> Member {
    Member {
        id,
        name: format!("m{id}"),
        peer_addr: String::new(),
        client_addr: String::new(),
        suffrage: Suffrage::Voter,
    }
}

/// Nodes that exchange messages instantly and persist everything.
struct Net {
    nodes: BTreeMap<NodeId, RawNode>,
    applied: BTreeMap<NodeId, Vec<Bytes>>,
}

impl Net {
    fn new(n: u64) -> Net {
        let membership = Membership::new((1..=n).map(member));
        let nodes = (1..=n)
            .map(|id| {
                let cfg = Config::with_tick_ms(id, 10, 7);
                let restored = RestoredState {
                    snapshot: SnapshotMeta {
                        membership: membership.clone(),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                (id, RawNode::new(cfg, restored).unwrap())
            })
            .collect();
        Net {
            nodes,
            applied: BTreeMap::new(),
        }
    }

    fn settle(&mut self) {
        loop {
            let mut msgs = Vec::new();
            let mut busy = false;
            for (id, n) in self.nodes.iter_mut() {
                if n.has_ready() {
                    busy = true;
                    let rd = n.ready();
                    msgs.extend(rd.leader_messages);
                    msgs.extend(rd.messages);
                    for e in rd.committed_entries {
                        if !e.data.is_empty() {
                            self.applied.entry(*id).or_default().push(e.data.clone());
                        }
                    }
                    n.advance();
                }
            }
            if !busy {
                return;
            }
            for m in msgs {
                let (from, to) = (m.from, m.to);
                let snapshot = matches!(m.body, MessageBody::InstallSnapshot { .. });
                if let Some(n) = self.nodes.get_mut(&to) {
                    let _ = n.step(m);
                }
                if snapshot && let Some(leader) = self.nodes.get_mut(&from) {
                    // The transport streamed the data: report it done.
                    leader.report_snapshot(to, true);
                }
            }
        }
    }

    fn tick_all(&mut self) {
        for n in self.nodes.values_mut() {
            n.tick();
        }
        self.settle();
    }

    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .find(|n| n.role() == Role::Leader)
            .map(|n| n.id())
    }

    fn change(&mut self, leader: NodeId, change: ConfChange) -> Result<Index, ProposeError> {
        self.nodes
            .get_mut(&leader)
            .expect("the leader is in the net")
            .propose_conf_change(change)
    }

    /// The leader adds member `id` as a learner; ten ticks pass.
    fn add_learner(&mut self, leader: NodeId, id: NodeId) {
        let learner = Member {
            suffrage: Suffrage::Learner,
            ..member(id)
        };
        self.change(leader, ConfChange::AddLearner(learner))
            .expect("the learner is added");
        for _ in 0..10 {
            self.tick_all();
        }
    }
}

#[test]
fn three_members_elect_one_leader_and_replicate_a_write() {
    let mut net = Net::new(3);
    for _ in 0..100 {
        net.tick_all();
        if net.leader().is_some() {
            break;
        }
    }
    let leader = net.leader().expect("a leader within 100 ticks");
    let term = net.nodes[&leader].term();
    for n in net.nodes.values() {
        assert_eq!(n.term(), term);
        assert_eq!(n.leader_id(), leader);
    }
    let idx = net
        .nodes
        .get_mut(&leader)
        .unwrap()
        .propose(Bytes::from_static(b"set 5"))
        .unwrap();
    net.settle();
    // Followers learn the commit index with the next heartbeat.
    for _ in 0..10 {
        net.tick_all();
    }
    for (id, n) in &net.nodes {
        assert!(
            n.commit_index() >= idx,
            "member {id} commit {}",
            n.commit_index()
        );
        assert_eq!(net.applied[id], vec![Bytes::from_static(b"set 5")]);
    }
}

#[test]
fn a_single_member_elects_itself_and_commits() {
    let mut net = Net::new(1);
    for _ in 0..40 {
        net.tick_all();
    }
    assert_eq!(net.leader(), Some(1));
    net.nodes
        .get_mut(&1)
        .unwrap()
        .propose(Bytes::from_static(b"x"))
        .unwrap();
    net.settle();
    assert_eq!(net.applied[&1], vec![Bytes::from_static(b"x")]);
}

#[test]
fn a_read_index_is_confirmed_by_a_majority() {
    let mut net = Net::new(3);
    for _ in 0..100 {
        net.tick_all();
    }
    let leader = net.leader().unwrap();
    let n = net.nodes.get_mut(&leader).unwrap();
    n.read_index(42).unwrap();
    let rd = n.ready();
    assert!(rd.read_states.is_empty(), "needs a heartbeat round first");
    let msgs: Vec<_> = rd.leader_messages.into_iter().chain(rd.messages).collect();
    assert!(
        !msgs.is_empty(),
        "the heartbeat round that confirms the read"
    );
    n.advance();
    for m in msgs {
        let _ = net.nodes.get_mut(&m.to).unwrap().step(m);
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let mut msgs = Vec::new();
        for n in net.nodes.values_mut() {
            let rd = n.ready();
            got.extend(rd.read_states.clone());
            msgs.extend(rd.leader_messages);
            msgs.extend(rd.messages);
            n.advance();
        }
        for m in msgs {
            let _ = net.nodes.get_mut(&m.to).unwrap().step(m);
        }
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].ctx, 42);
}

#[test]
fn a_member_that_joins_with_an_empty_disk_learns_the_founding_voters() {
    let mut net = Net::new(3);
    for _ in 0..100 {
        net.tick_all();
    }
    let leader = net.leader().expect("a leader within 100 ticks");
    // The founding configuration is only in the bootstrap snapshot (index 0),
    // which no log entry repeats; the new member has an empty disk.
    let cfg = Config::with_tick_ms(4, 10, 7);
    net.nodes
        .insert(4, RawNode::new(cfg, RestoredState::default()).unwrap());
    net.add_learner(leader, 4);
    net.change(leader, ConfChange::PromoteLearner { id: 4 })
        .unwrap();
    for _ in 0..10 {
        net.tick_all();
    }
    let voters: Vec<NodeId> = net.nodes[&4].membership().voters().collect();
    assert_eq!(voters, vec![1, 2, 3, 4]);
}

#[test]
fn a_follower_that_already_has_everything_is_not_probed_again_for_each_answer() {
    let membership = Membership::new((1..=3).map(member));
    let restored = RestoredState {
        snapshot: SnapshotMeta {
            membership,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut r = raft::Raft::new(Config::with_tick_ms(1, 10, 7), restored).unwrap();
    r.become_candidate();
    r.become_leader();
    let (last, term) = (r.log.last_index(), r.term);
    r.msgs.clear();
    // Member 2 holds everything, but the leader probes it (after a snapshot
    // it did not need, say).
    let pr = r.progress.get_mut(&2).unwrap();
    pr.match_index = last;
    pr.become_probe(last + 1);
    pr.probe_sent = true;
    let answer = Message {
        from: 2,
        to: 1,
        term,
        body: MessageBody::AppendEntriesResponse {
            success: true,
            match_index: last,
            reject_index: 0,
            conflict_term: 0,
            conflict_index: 0,
            last_log_index: last,
            seq: 0,
        },
    };
    for _ in 0..3 {
        r.step(answer.clone()).unwrap();
    }
    assert!(
        r.msgs.iter().all(|m| m.to != 2),
        "each answer was met with another probe: {:?}",
        r.msgs
    );
}

#[test]
fn late_answers_while_probing_do_not_each_stream_a_whole_window() {
    let membership = Membership::new((1..=3).map(member));
    let restored = RestoredState {
        snapshot: SnapshotMeta {
            membership,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut cfg = Config::with_tick_ms(1, 10, 7);
    cfg.max_append_bytes = 1;
    let mut r = raft::Raft::new(cfg, restored).unwrap();
    r.become_candidate();
    r.become_leader();
    for _ in 0..100 {
        r.propose(Bytes::from_static(b"x")).unwrap();
    }
    let term = r.term;
    // Member 2 matched up to 4; a reordered stream made the leader probe it
    // at 5. Answers to that earlier stream keep arriving, none with news.
    let pr = r.progress.get_mut(&2).unwrap();
    pr.match_index = 4;
    pr.become_probe(5);
    r.msgs.clear();
    for _ in 0..10 {
        r.step(Message {
            from: 2,
            to: 1,
            term,
            body: MessageBody::AppendEntriesResponse {
                success: true,
                match_index: 4,
                reject_index: 0,
                conflict_term: 0,
                conflict_index: 0,
                last_log_index: 4,
                seq: 0,
            },
        })
        .unwrap();
    }
    let sent = r.msgs.iter().filter(|m| m.to == 2).count();
    assert!(sent <= 10, "{sent} messages for 10 answers without news");
}

#[test]
fn a_late_copy_of_a_new_members_first_refusal_does_not_resend_the_snapshot() {
    let learner = Member {
        suffrage: Suffrage::Learner,
        ..member(4)
    };
    let membership = Membership::new((1..=3).map(member).chain([learner]));
    let restored = RestoredState {
        snapshot: SnapshotMeta {
            membership,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut r = raft::Raft::new(Config::with_tick_ms(1, 10, 7), restored).unwrap();
    r.become_candidate();
    r.become_leader();
    let (last, term) = (r.log.last_index(), r.term);
    let answer = |success: bool, match_index: Index, reject_index: Index| {
        append_answer(4, term, success, match_index, reject_index)
    };
    // The new member refuses the first probe: it holds no configuration.
    let refusal = answer(false, 0, r.progress[&4].next_index - 1);
    r.step(refusal.clone()).unwrap();
    assert!(matches!(
        r.progress[&4].state,
        ReplicationState::Snapshot { .. }
    ));
    // The snapshot arrives, the member catches up...
    r.report_snapshot(4, true);
    r.step(answer(true, last, 0)).unwrap();
    assert_eq!(r.progress[&4].state, ReplicationState::Replicate);
    r.msgs.clear();
    // ...and then a delayed copy of its first refusal arrives.
    r.step(refusal).unwrap();
    assert!(
        !r.msgs
            .iter()
            .any(|m| matches!(m.body, MessageBody::InstallSnapshot { .. })),
        "the snapshot was sent again: {:?}",
        r.msgs
    );
    assert_eq!(r.progress[&4].state, ReplicationState::Replicate);
}

/// Simulator seed 92385 (3 members, 100k-seed hunt): a voter that had stored
/// nothing when it crashed came back with an empty disk, knowing no members,
/// and dropped every vote request as coming from a stranger; with another
/// such voter the configuration in force never had a quorum of willing
/// voters again, and the cluster stayed leaderless after every fault healed.
#[test]
fn a_voter_with_an_empty_disk_answers_vote_requests_of_members_it_does_not_know() {
    let mut r = RawNode::new(Config::with_tick_ms(4, 10, 7), RestoredState::default()).unwrap();
    for pre_vote in [true, false] {
        r.step(Message {
            from: 1,
            to: 4,
            term: 4,
            body: MessageBody::RequestVote {
                last_log_index: 49,
                last_log_term: 3,
                pre_vote,
                leader_transfer: false,
            },
        })
        .expect("a vote request from a member this disk does not know yet is answered");
        let rd = r.ready();
        let answers: Vec<_> = rd
            .messages
            .iter()
            .chain(rd.leader_messages.iter())
            .filter(|m| m.to == 1)
            .map(|m| m.body.clone())
            .collect();
        assert_eq!(
            answers,
            vec![MessageBody::RequestVoteResponse {
                vote_granted: true,
                pre_vote
            }],
            "pre_vote={pre_vote}"
        );
        r.advance();
    }
}

/// The same seed first went wrong here: the leader promoted a learner three
/// milliseconds after adding it, before it had stored anything, because only
/// its lag (49 entries, under the allowed 1000) was counted.
#[test]
fn a_learner_that_has_stored_nothing_is_not_promoted() {
    let mut net = Net::new(3);
    for _ in 0..100 {
        net.tick_all();
    }
    let leader = net.leader().expect("a leader within 100 ticks");
    // Member 4 is not running: nothing it is sent is ever stored.
    net.add_learner(leader, 4);
    let refused = net.change(leader, ConfChange::PromoteLearner { id: 4 });
    assert!(
        matches!(refused, Err(ProposeError::LearnerNotCaughtUp { id: 4, .. })),
        "{refused:?}"
    );
}

/// A follower that fell behind the leader's compaction is sent the snapshot,
/// but appends that were already in flight to it bring it past the snapshot:
/// the leader then asks the transport to stop the stream, which would only
/// carry what the follower already holds.
#[test]
fn a_follower_that_catches_up_through_entries_in_flight_cancels_its_snapshot() {
    let restored = RestoredState {
        snapshot: SnapshotMeta {
            membership: Membership::new((1..=3).map(member)),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut r = raft::Raft::new(Config::with_tick_ms(1, 10, 7), restored).unwrap();
    r.become_candidate();
    r.become_leader();
    for i in 0..10u8 {
        r.propose(Bytes::from(vec![i])).unwrap();
    }
    let (last, term) = (r.log.last_index(), r.term);
    let answer = |from: NodeId, success: bool, match_index: Index, reject_index: Index| {
        append_answer(from, term, success, match_index, reject_index)
    };
    // Everything is durable on the leader and member 3: committed, applied
    // and compacted away.
    r.log.stable_to(last, term);
    r.leader_persisted(last);
    r.step(answer(3, true, last, 0)).unwrap();
    assert_eq!(r.log.committed, last);
    r.log.applied_to(last);
    let meta = r.snapshot_meta_at(last).unwrap();
    r.compact(meta);
    assert_eq!(r.log.first_index(), last + 1);
    // Member 2's refusal sends it the snapshot.
    let next = r.progress[&2].next_index;
    r.step(answer(2, false, 0, next - 1)).unwrap();
    assert_eq!(
        r.progress[&2].state,
        ReplicationState::Snapshot { pending: last }
    );
    // An answer to earlier appends that stops short of the snapshot changes
    // nothing: the snapshot is still needed.
    r.step(answer(2, true, last - 1, 0)).unwrap();
    assert!(r.cancelled_snapshots.is_empty());
    // The appends in flight reach the snapshot's index: the stream stops.
    r.step(answer(2, true, last, 0)).unwrap();
    assert_eq!(r.progress[&2].state, ReplicationState::Replicate);
    assert_eq!(r.cancelled_snapshots, vec![2]);
    // The stream's late report no longer moves the follower back.
    r.report_snapshot(2, true);
    assert_eq!(r.progress[&2].state, ReplicationState::Replicate);
    assert_eq!(r.progress[&2].match_index, last);
}

/// `from`'s answer to member 1's AppendEntries, without a conflict hint.
fn append_answer(
    from: NodeId,
    term: Term,
    success: bool,
    match_index: Index,
    reject_index: Index,
) -> Message {
    Message {
        from,
        to: 1,
        term,
        body: MessageBody::AppendEntriesResponse {
            success,
            match_index,
            reject_index,
            conflict_term: 0,
            conflict_index: 0,
            last_log_index: match_index,
            seq: 0,
        },
    }
}
