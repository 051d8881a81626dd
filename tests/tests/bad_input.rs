//! Bad input: messages no correct member sends — from strangers, from stale
//! terms, pointing beyond the log, malformed — change nothing a member
//! keeps (its hard state, role, leader, log, commit and applied indexes,
//! configuration, and a leader's view of its followers), and nothing at all
//! makes the core panic.
//!
//! "Changes nothing" leaves out only the election timer: a real leader's
//! message resets it even when the member has to refuse what it says.

use bytes::Bytes;
use kuberaft_node::raft::{
    Config, Entry, HardState, Index, Member, Membership, Message, MessageBody, NodeId,
    ProgressStatus, RawNode, RestoredState, SnapshotMeta, SoftState, StepError, Suffrage, Term,
};
use kuberaft_tests::script::Scene;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// Everything a member keeps, as far as bad input is concerned.
#[derive(Debug, PartialEq)]
struct Kept {
    hard_state: HardState,
    soft_state: SoftState,
    log: Vec<Term>,
    applied: Index,
    snapshot: Index,
    voters: Vec<NodeId>,
    progress: Vec<ProgressStatus>,
    pending_reads: usize,
}

fn kept(s: &Scene, id: NodeId) -> Kept {
    let st = s.status(id);
    Kept {
        hard_state: st.hard_state,
        soft_state: st.soft_state,
        log: s.log_terms(id),
        applied: st.applied_index,
        snapshot: st.snapshot_index,
        voters: st.membership.voters().collect(),
        progress: st.progress,
        pending_reads: st.pending_reads,
    }
}

/// Three members in term 2 (so term 1 is there to be stale) with a leader, a
/// few committed writes and one write the leader holds alone (its messages
/// were lost), everything else quiet.
fn cluster() -> (Scene, NodeId, NodeId) {
    let mut s = Scene::new(3);
    let first = s.elect(1_000);
    s.elapse(60);
    s.crash(first);
    let leader = s.elect(1_000);
    s.restart(first);
    assert_eq!(s.term(leader), 2);
    for v in 1..=3 {
        s.set(leader, v).expect("leader");
        s.elapse(5);
    }
    s.elapse(60);
    s.set(leader, 4).expect("leader");
    s.drop_where(|m| m.from == leader);
    let follower = s
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("follower");
    (s, leader, follower)
}

fn msg(from: NodeId, to: NodeId, term: Term, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

fn entry(term: Term, index: Index) -> Entry {
    Entry::normal(term, index, Bytes::from_static(b"forged"))
}

/// Steps `m` into `to` and asserts it kept everything; returns the verdict.
fn changes_nothing(s: &mut Scene, to: NodeId, m: Message) -> Result<(), StepError> {
    let before = kept(s, to);
    let what = format!("{m:?}");
    let r = s.step(to, m);
    assert_eq!(kept(s, to), before, "member {to} changed after {what}");
    r
}

fn append(
    prev_log_index: Index,
    prev_log_term: Term,
    entries: Vec<Entry>,
    leader_commit: Index,
) -> MessageBody {
    MessageBody::AppendEntries {
        prev_log_index,
        prev_log_term,
        entries,
        leader_commit,
        seq: 0,
    }
}

fn ack(match_index: Index) -> MessageBody {
    MessageBody::AppendEntriesResponse {
        success: true,
        match_index,
        reject_index: 0,
        conflict_term: 0,
        conflict_index: 0,
        last_log_index: match_index,
        seq: 0,
    }
}

fn vote_request(last_log_index: Index, last_log_term: Term) -> MessageBody {
    MessageBody::RequestVote {
        last_log_index,
        last_log_term,
        pre_vote: false,
        leader_transfer: false,
    }
}

#[test]
fn answers_from_an_unknown_member_change_nothing() {
    let (mut s, leader, _) = cluster();
    let t = s.term(leader);
    let last = s.last_index(leader);
    let stranger = 99;
    for body in [
        MessageBody::RequestVoteResponse {
            vote_granted: true,
            pre_vote: false,
        },
        ack(last),
    ] {
        let r = changes_nothing(&mut s, leader, msg(stranger, leader, t + 5, body));
        assert!(
            matches!(r, Err(StepError::UnknownSender { from: 99 })),
            "{r:?}"
        );
    }
}

/// A vote request is processed whoever sends it (thesis §4.1: the receiver
/// may be behind on membership), but while a leader is heard from, one from
/// outside the configuration changes nothing, like any other (CheckQuorum's
/// lease).
#[test]
fn vote_requests_from_an_unknown_member_change_nothing_while_a_leader_is_heard() {
    let (mut s, leader, follower) = cluster();
    let t = s.term(leader);
    let last = s.last_index(leader);
    let stranger = 99;
    for to in [follower, leader] {
        let r = changes_nothing(
            &mut s,
            to,
            msg(stranger, to, t + 5, vote_request(last + 10, t + 5)),
        );
        assert!(
            matches!(r, Err(StepError::InLease { from: 99, .. })),
            "{r:?}"
        );
    }
}

#[test]
fn requests_from_a_stale_term_change_nothing() {
    let (mut s, leader, follower) = cluster();
    let stale = s.term(follower) - 1;
    let other = s
        .ids()
        .into_iter()
        .find(|id| *id != leader && *id != follower)
        .expect("third");
    let forged = vec![entry(stale, 2), entry(stale, 3)];
    for body in [
        append(1, 1, forged, 100),
        vote_request(1_000, stale),
        MessageBody::InstallSnapshot {
            snapshot: SnapshotMeta {
                last_included_index: 1_000,
                last_included_term: stale,
                membership: s.status(follower).membership,
            },
        },
        MessageBody::TimeoutNow,
    ] {
        // Refused with our term, which tells the sender it is stale.
        changes_nothing(&mut s, follower, msg(other, follower, stale, body)).expect("answered");
    }
}

#[test]
fn an_append_beyond_the_end_of_the_log_changes_nothing_and_is_refused() {
    let (mut s, leader, follower) = cluster();
    let t = s.term(leader);
    let last = s.last_index(follower);
    let m = msg(
        leader,
        follower,
        t,
        append(last + 10, t, vec![entry(t, last + 11)], last + 11),
    );
    changes_nothing(&mut s, follower, m).expect("answered");
    let refused = s.in_flight().any(|m| {
        m.from == follower
            && matches!(
                m.body,
                MessageBody::AppendEntriesResponse { success: false, .. }
            )
    });
    assert!(refused, "the follower tells the leader where its log ends");
}

#[test]
fn an_acknowledgement_beyond_the_end_of_the_leaders_log_changes_nothing() {
    let (mut s, leader, follower) = cluster();
    let t = s.term(leader);
    let last = s.last_index(leader);
    assert!(
        s.commit_index(leader) < last,
        "the leader holds an uncommitted write"
    );
    // No follower can hold entries the leader never had; counting this one
    // would commit the last write on the leader's copy alone.
    let r = changes_nothing(&mut s, leader, msg(follower, leader, t, ack(last + 100)));
    assert!(matches!(r, Err(StepError::Malformed(_))), "{r:?}");
}

#[test]
fn malformed_appends_change_nothing() {
    let (mut s, leader, follower) = cluster();
    let t = s.term(leader);
    let last = s.last_index(follower);
    let cases = [
        (
            "entries with a gap",
            append(last, t, vec![entry(t, last + 1), entry(t, last + 3)], 0),
        ),
        (
            "entries out of order",
            append(last, t, vec![entry(t, last + 2), entry(t, last + 1)], 0),
        ),
        (
            "an entry of a later term than the message",
            append(last, t, vec![entry(t + 1, last + 1)], 0),
        ),
        (
            "a previous term later than the message",
            append(last, t + 1, vec![], 0),
        ),
        (
            "entry terms going down",
            append(last, t, vec![entry(t, last + 1), entry(t - 1, last + 2)], 0),
        ),
        (
            "an entry term below the previous term",
            append(last, t, vec![entry(t - 1, last + 1)], 0),
        ),
        (
            "indexes past the end of u64",
            append(u64::MAX, t, vec![entry(t, 0)], 0),
        ),
        (
            "an entry beyond index 2^63, where no real log gets",
            append(u64::MAX - 1, t, vec![entry(t, u64::MAX)], 0),
        ),
    ];
    for (what, body) in cases {
        let r = changes_nothing(&mut s, follower, msg(leader, follower, t, body));
        assert!(matches!(r, Err(StepError::Malformed(_))), "{what}: {r:?}");
    }
}

#[test]
fn a_vote_request_whose_log_is_of_a_later_term_than_the_candidate_changes_nothing() {
    let (mut s, leader, follower) = cluster();
    let t = s.term(leader);
    let other = s
        .ids()
        .into_iter()
        .find(|id| *id != leader && *id != follower)
        .expect("third");
    // A candidate's log cannot hold entries of a term it has not reached;
    // believing it would hand it every vote and bump everyone's term. A
    // member that just restarted knows no leader, so no lease stops it from
    // hearing a vote request.
    s.crash(follower);
    s.restart(follower);
    let r = changes_nothing(
        &mut s,
        follower,
        msg(other, follower, t + 1, vote_request(5, t + 50)),
    );
    assert!(matches!(r, Err(StepError::Malformed(_))), "{r:?}");
}

#[test]
fn malformed_snapshots_and_misaddressed_messages_change_nothing() {
    let (mut s, leader, follower) = cluster();
    let t = s.term(leader);
    let snapshot = |index, term, membership| MessageBody::InstallSnapshot {
        snapshot: SnapshotMeta {
            last_included_index: index,
            last_included_term: term,
            membership,
        },
    };
    let members = s.status(follower).membership;
    let cases = [
        (
            "a snapshot without voters",
            leader,
            follower,
            snapshot(50, t, Membership::default()),
        ),
        (
            "a snapshot of a later term than the message",
            leader,
            follower,
            snapshot(50, t + 1, members.clone()),
        ),
        (
            "a snapshot beyond index 2^63",
            leader,
            follower,
            snapshot(u64::MAX, t, members),
        ),
        (
            "a message for another member",
            leader,
            follower + 10,
            MessageBody::TimeoutNow,
        ),
        (
            "a message from member 0",
            0,
            follower,
            MessageBody::TimeoutNow,
        ),
        (
            "a message from itself",
            follower,
            follower,
            MessageBody::TimeoutNow,
        ),
    ];
    for (what, from, to, body) in cases {
        let r = changes_nothing(&mut s, follower, msg(from, to, t, body));
        assert!(r.is_err(), "{what}: {r:?}");
    }
}

// ------------------------------------------------------------ random garbage

fn voter(id: NodeId) -> Member {
    Member {
        id,
        name: format!("m{id}"),
        peer_addr: String::new(),
        client_addr: String::new(),
        suffrage: Suffrage::Voter,
    }
}

fn random_message(rng: &mut SmallRng, to: NodeId, term: Term) -> Message {
    let mut n = |hi: u64| rng.random_range(0..=hi);
    let from = [0, 1, 2, 3, 99][n(4) as usize];
    let to = if n(9) == 0 { n(5) } else { to };
    let term = match n(3) {
        0 => n(u64::MAX),
        _ => term.saturating_sub(1) + n(2),
    };
    let idx = |n: &mut dyn FnMut(u64) -> u64| if n(19) == 0 { u64::MAX - n(2) } else { n(25) };
    let body = match n(7) {
        0 => MessageBody::RequestVote {
            last_log_index: idx(&mut n),
            last_log_term: n(12),
            pre_vote: n(1) == 0,
            leader_transfer: n(1) == 0,
        },
        1 => MessageBody::RequestVoteResponse {
            vote_granted: n(1) == 0,
            pre_vote: n(1) == 0,
        },
        2 | 3 => {
            let prev = idx(&mut n);
            let count = n(3);
            let entries = (0..count)
                .map(|i| {
                    Entry::normal(
                        n(12),
                        prev.wrapping_add(1 + i).wrapping_add(n(1)),
                        Bytes::new(),
                    )
                })
                .collect();
            MessageBody::AppendEntries {
                prev_log_index: prev,
                prev_log_term: n(12),
                entries,
                leader_commit: idx(&mut n),
                seq: n(5),
            }
        }
        4 => MessageBody::AppendEntriesResponse {
            success: n(1) == 0,
            match_index: idx(&mut n),
            reject_index: idx(&mut n),
            conflict_term: n(12),
            conflict_index: idx(&mut n),
            last_log_index: idx(&mut n),
            seq: n(5),
        },
        5 => MessageBody::InstallSnapshot {
            snapshot: SnapshotMeta {
                last_included_index: idx(&mut n),
                last_included_term: n(12),
                membership: if n(1) == 0 {
                    Membership::default()
                } else {
                    Membership::new((1..=3).map(voter))
                },
            },
        },
        _ => MessageBody::TimeoutNow,
    };
    Message {
        from,
        to,
        term,
        body,
    }
}

/// A member with a log of terms 1, 1, 2, 2, 3, 3, 3, 4 (committed up to 5).
fn member_with_a_log(id: NodeId, seed: u64) -> RawNode {
    let terms = [1, 1, 2, 2, 3, 3, 3, 4];
    let entries = terms
        .iter()
        .enumerate()
        .map(|(i, t)| Entry::normal(*t, i as u64 + 1, Bytes::from_static(b"x")))
        .collect();
    let restored = RestoredState {
        hard_state: HardState {
            current_term: 4,
            voted_for: 0,
            commit_index: 5,
        },
        snapshot: SnapshotMeta {
            membership: Membership::new((1..=3).map(voter)),
            ..Default::default()
        },
        entries,
        applied: 0,
    };
    RawNode::new(Config::with_tick_ms(id, 1, seed), restored).expect("valid state")
}

/// Thousands of random messages — most of them nonsense — at a follower and
/// at a leader: the core never panics, its term and commit index never go
/// back, and the entries it knew to be committed never change.
#[test]
fn random_garbage_never_panics_nor_touches_committed_entries() {
    let mut rng = SmallRng::seed_from_u64(2024);
    for round in 0..20u64 {
        let mut node = member_with_a_log(1, round);
        if round % 2 == 1 {
            // Make it leader of term 5 with the votes of 2 and 3.
            while node.role() != kuberaft_node::raft::Role::PreCandidate {
                node.tick();
            }
            for (from, pre_vote, term) in [(2, true, 5), (2, false, 5)] {
                let _ = node.step(msg(
                    from,
                    1,
                    term,
                    MessageBody::RequestVoteResponse {
                        vote_granted: true,
                        pre_vote,
                    },
                ));
            }
            assert_eq!(node.role(), kuberaft_node::raft::Role::Leader);
        }
        let committed: Vec<Entry> = (1..=5).filter_map(|i| node.entry(i).cloned()).collect();
        let (mut term, mut commit) = (node.term(), node.commit_index());
        for _ in 0..2_000 {
            let m = random_message(&mut rng, 1, node.term());
            let _ = node.step(m);
            if rng.random_bool(0.1) {
                node.tick();
            }
            if node.has_ready() {
                let _ = node.ready();
                node.advance();
            }
            assert!(node.term() >= term, "the term went back");
            assert!(node.commit_index() >= commit, "the commit index went back");
            term = node.term();
            commit = node.commit_index();
            for e in &committed {
                if let Some(now) = node.entry(e.index) {
                    assert_eq!(now, e, "committed entry {} changed", e.index);
                }
            }
        }
    }
}
