//! The scenes of the origin article (`/shared/seeds`, "Raft explained with the
//! secret lives of data"), one test each, plus Figure 8 of the Raft paper.
//!
//! Each scene runs real members on the scripted harness
//! (`kuberaft_tests::script`): the test lets time pass, delivers or drops
//! messages, crashes and restarts members, and the simulator's checker
//! verifies Raft's safety properties after every step. Members use the
//! article's timing: an election timer of 150–300 ms, heartbeats every 50 ms,
//! one tick per millisecond.

use kuberaft_node::raft::{Message, MessageBody, NodeId, Role};
use kuberaft_tests::script::Scene;

fn route(m: &Message) -> (NodeId, NodeId) {
    (m.from, m.to)
}

fn is_vote_traffic(m: &Message) -> bool {
    matches!(
        m.body,
        MessageBody::RequestVote { .. } | MessageBody::RequestVoteResponse { .. }
    )
}

fn is_pre_vote(m: &Message) -> bool {
    matches!(
        m.body,
        MessageBody::RequestVote { pre_vote: true, .. }
            | MessageBody::RequestVoteResponse { pre_vote: true, .. }
    )
}

/// An AppendEntries that carries the entry at `index`.
fn carries(m: &Message, index: u64) -> bool {
    matches!(&m.body, MessageBody::AppendEntries { entries, .. }
        if entries.iter().any(|e| e.index == index))
}

/// Article 1.1: "The three nodes start as followers, each with a timer set to
/// a random value between 150 and 300 ms. Usually one timer runs out first;
/// that node becomes a candidate, starts term 1, votes for itself and asks
/// the others for their votes. A node that has not voted in this term votes
/// yes and resets its timer. With more than half of the votes the candidate
/// becomes the leader, and its heartbeats reset the followers' timers."
#[test]
fn three_nodes_the_first_timer_to_fire_wins_term_1_and_its_heartbeats_keep_the_others_following() {
    let mut s = Scene::new(3);
    for id in s.ids() {
        assert_eq!(s.role(id), Role::Follower);
        assert_eq!(s.term(id), 0);
    }
    let (first, ticks) = s.first_timer();
    assert!(
        (150..300).contains(&ticks),
        "timers are drawn from 150-300 ms, got {ticks}"
    );
    for id in s.ids().into_iter().filter(|id| *id != first) {
        let left = s.status(id).randomized_election_timeout;
        assert!(left > ticks, "member {first}'s timer runs out first");
    }

    s.elapse(u64::from(ticks));
    // kuberaft first asks whether it could win (PreVote) without touching the
    // term; the article's candidacy follows once a majority says yes.
    assert_eq!(s.role(first), Role::PreCandidate);
    for id in s.ids().into_iter().filter(|id| *id != first) {
        assert_eq!(s.role(id), Role::Follower, "only one timer has fired");
    }

    assert!(s.elapse_until(20, |s| s.leader().is_some()));
    assert_eq!(s.leader(), Some(first));
    for id in s.ids() {
        assert_eq!(s.term(id), 1, "everyone is in term 1");
        assert_eq!(
            s.status(id).hard_state.voted_for,
            first,
            "member {id} voted for {first}"
        );
    }

    // Heartbeats every 50 ms keep resetting the followers' timers: two
    // seconds later nobody has started an election.
    s.elapse(2_000);
    assert_eq!(s.leaders(), vec![(first, 1)]);
    for id in s.ids().into_iter().filter(|id| *id != first) {
        let st = s.status(id);
        assert_eq!(st.soft_state.leader_id, first);
        assert!(
            st.election_elapsed <= 50,
            "member {id}'s timer was reset by a heartbeat ({} ms ago)",
            st.election_elapsed
        );
    }
}

/// Article 1.1, continued: "Node A crashes and stops sending heartbeats. Node
/// B's timer runs out before C's; B starts term 2, votes for itself and asks
/// C, which has not voted in term 2 and votes yes. B becomes the new leader."
#[test]
fn the_leader_crashes_a_follower_times_out_and_wins_term_2() {
    let mut s = Scene::new(3);
    let old = s.elect(1_000);
    s.elapse(100);
    assert_eq!(s.term(old), 1);

    s.crash(old);
    assert!(s.elapse_until(1_000, |s| s.leader().is_some()));
    let new = s.leader().expect("a new leader");
    assert_ne!(new, old);
    assert_eq!(s.term(new), 2);
    let other = s
        .ids()
        .into_iter()
        .find(|id| *id != old && *id != new)
        .expect("three members");
    assert_eq!(s.status(other).hard_state.voted_for, new);

    // The old leader comes back as a follower of the new one.
    s.restart(old);
    s.elapse(100);
    assert_eq!(s.role(old), Role::Follower);
    assert_eq!(s.term(old), 2);
    assert_eq!(s.status(old).soft_state.leader_id, new);
}

/// Article 1.2: "Two nodes, C and D, become candidates at the same time in a
/// four-node cluster. A receives C's request first and votes for C; B
/// receives D's first and votes for D; C and D voted for themselves. Each has
/// two votes, not more than half: nobody wins. The timers run again, a new
/// election starts in a later term, and this time one node wins."
#[test]
fn four_nodes_two_simultaneous_candidates_split_the_vote_and_a_later_term_elects_one_leader() {
    let (a, b, c, d) = (1, 2, 3, 4);
    let mut s = Scene::new(4);
    s.fire_election_timer(c);
    s.fire_election_timer(d);
    // Both ask "could I win?" (PreVote) and hear yes from a majority.
    s.deliver_while(is_pre_vote);
    for x in [c, d] {
        assert_eq!(s.role(x), Role::Candidate);
        assert_eq!(s.term(x), 1);
        assert_eq!(s.status(x).hard_state.voted_for, x, "it votes for itself");
    }

    // A hears C first, B hears D first.
    s.deliver_where(|m| route(m) == (c, a) || route(m) == (d, b));
    s.deliver_all();
    assert_eq!(s.status(a).hard_state.voted_for, c);
    assert_eq!(s.status(b).hard_state.voted_for, d);
    assert!(s.leaders().is_empty(), "two votes of four is no majority");
    for id in s.ids() {
        assert_eq!(s.term(id), 1);
    }

    // The timers run again; a later term elects exactly one leader.
    let leader = s.elect(2_000);
    assert!(s.term(leader) >= 2);
    assert_eq!(s.leaders().len(), 1);
    s.elapse(500);
    assert_eq!(s.leaders().len(), 1, "and it stays the only one");
}

/// Article 2: "The client sends 'set 5' to the leader. The leader appends it
/// to its log, uncommitted, and sends it to the followers with the next
/// heartbeat. A follower appends it and acknowledges. Once a majority has
/// it, the leader commits it, applies it, and answers the client; the
/// followers then commit and apply it too."
#[test]
fn the_clients_set_5_is_committed_on_a_majority_applied_and_only_then_answered() {
    let mut s = Scene::new(3);
    let leader = s.elect(1_000);
    s.elapse(60);
    let followers: Vec<NodeId> = s.ids().into_iter().filter(|id| *id != leader).collect();
    let (f1, f2) = (followers[0], followers[1]);

    let set5 = s.set(leader, 5).expect("the leader takes it");
    assert_eq!(
        s.last_index(leader),
        set5.index,
        "appended to the leader's log"
    );
    assert!(s.commit_index(leader) < set5.index, "not committed yet");
    assert!(!s.answered(&set5));
    for f in [f1, f2] {
        assert!(
            s.in_flight().any(|m| m.to == f && carries(m, set5.index)),
            "on its way to member {f}"
        );
    }

    // It reaches one follower, which appends it but does not commit it.
    s.deliver_where(|m| m.to == f1 && carries(m, set5.index));
    assert_eq!(s.last_index(f1), set5.index);
    assert!(s.commit_index(f1) < set5.index);
    assert!(
        !s.answered(&set5),
        "one copy besides the leader's is not yet known"
    );

    // Its acknowledgement makes a majority (leader and f1): committed,
    // applied by the leader, and only now answered.
    s.deliver_where(|m| m.from == f1 && m.to == leader);
    assert!(s.commit_index(leader) >= set5.index);
    assert_eq!(s.value(leader), 5);
    assert!(s.answered(&set5));
    assert!(
        s.last_index(f2) < set5.index,
        "the other follower has not even received it"
    );

    // The followers learn of the commit from the leader's next messages.
    s.elapse(60);
    for id in s.ids() {
        assert!(s.applied_index(id) >= set5.index);
        assert_eq!(s.value(id), 5, "member {id} applied set 5");
    }
}

/// Article 2, "what if a follower fails while the leader replicates?": the
/// leader keeps committing with the majority it has, and the follower that
/// was down receives what it missed when it returns.
#[test]
fn a_follower_that_was_down_catches_up_when_it_returns() {
    let mut s = Scene::new(3);
    let leader = s.elect(1_000);
    s.elapse(60);
    let down = s
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    s.crash(down);
    let mut last = None;
    for v in 1..=10 {
        last = Some(s.set(leader, v).expect("leader"));
        s.elapse(5);
    }
    let last = last.expect("ten writes");
    assert!(s.answered(&last), "two of three is a majority");

    s.restart(down);
    s.elapse(200);
    assert_eq!(s.value(down), 10);
    assert_eq!(s.applied_index(down), s.commit_index(leader));
    assert_eq!(s.log_terms(down), s.log_terms(leader));
}

/// The same, when the leader has meanwhile compacted its log into a snapshot
/// (§7): the returning follower needs entries the leader no longer has, so it
/// receives the snapshot instead.
#[test]
fn a_follower_that_was_down_catches_up_from_a_snapshot_when_the_log_was_compacted() {
    let mut s = Scene::new(3);
    let leader = s.elect(1_000);
    s.elapse(60);
    let down = s
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    s.crash(down);
    for v in 1..=10 {
        s.set(leader, v).expect("leader");
        s.elapse(5);
    }
    s.compact(leader);
    let snapshot = s.status(leader).snapshot_index;
    assert!(snapshot > 1, "the leader compacted its log");

    s.restart(down);
    s.elapse(200);
    assert!(
        s.status(down).snapshot_index >= snapshot,
        "it installed the leader's snapshot"
    );
    assert_eq!(s.value(down), 10);
    s.set(leader, 11).expect("leader");
    s.elapse(60);
    assert_eq!(s.value(down), 11, "and replicates normally after it");
}

/// Article 2, "what if the network is partitioned?": a leader cut off with a
/// minority keeps accepting writes but cannot commit them; the majority
/// elects a leader of a later term that commits; when the old leader hears
/// that term it steps down, and its uncommitted writes are replaced.
#[test]
fn an_old_leader_cut_off_from_the_majority_cannot_commit_and_steps_down_when_it_hears_a_higher_term()
 {
    let mut s = Scene::new(5);
    let old = s.elect(1_000);
    s.elapse(60);
    let others: Vec<NodeId> = s.ids().into_iter().filter(|id| *id != old).collect();
    let minority = [old, others[0]];
    let majority = [others[1], others[2], others[3]];
    s.partition(&minority, &majority);

    let stale = s.set(old, 8).expect("it still believes it leads");
    s.elapse_on(&minority, 20);
    assert_eq!(
        s.last_index(minority[1]),
        stale.index,
        "its follower has it"
    );
    assert!(
        s.commit_index(old) < stale.index,
        "two of five is no majority"
    );
    assert!(!s.answered(&stale));

    // Meanwhile, on the majority side, a new leader of a later term. (The
    // old leader's clock is frozen here, like a paused process, so it is
    // still leader when the higher term reaches it.)
    let mut new = None;
    for _ in 0..1_000 {
        s.elapse_on(&majority, 1);
        new = s.leader().filter(|l| majority.contains(l));
        if new.is_some() {
            break;
        }
    }
    let new = new.expect("the majority elects a leader");
    assert!(s.term(new) > s.term(old));
    let fresh = s.set(new, 9).expect("new leader");
    s.elapse_on(&majority, 20);
    assert!(s.answered(&fresh), "three of five commit");
    assert_eq!(
        s.role(old),
        Role::Leader,
        "the old leader does not know yet"
    );

    // The partition heals. The new leader's next heartbeat carries its term.
    s.heal();
    s.elapse_on(&majority, 60);
    s.deliver_where(|m| m.to == old);
    assert_eq!(s.role(old), Role::Follower, "a higher term demotes it");
    assert_eq!(s.term(old), s.term(new));

    s.elapse(100);
    assert!(!s.answered(&stale), "set 8 was never committed");
    for id in s.ids() {
        assert_eq!(s.value(id), 9, "member {id} applied set 9, never set 8");
        assert_eq!(s.log_terms(id), s.log_terms(new));
    }
}

/// Thesis §6.2 (CheckQuorum): the same old leader, if its clock runs, does
/// not wait for the higher term: after an election timeout without hearing
/// from a majority it steps down by itself, so clients stop writing to it.
#[test]
fn an_old_leader_cut_off_from_the_majority_steps_down_by_itself_after_an_election_timeout() {
    let mut s = Scene::new(5);
    let old = s.elect(1_000);
    s.elapse(60);
    let others: Vec<NodeId> = s.ids().into_iter().filter(|id| *id != old).collect();
    s.partition(&[old, others[0]], &others[1..]);
    assert!(s.elapse_until(2 * 300 + 1, |s| s.role(old) != Role::Leader));
    assert_eq!(s.role(old), Role::Follower);
}

// ------------------------------------------------------------------ Figure 8

/// Figure 8's members S1..S5, with PreVote but without leader leases, so the
/// script decides who times out; one entry per AppendEntries, so an old
/// entry can travel without the new leader's own.
fn figure_8_cluster() -> Scene {
    Scene::with_config(5, |c| {
        c.check_quorum = false;
        c.max_append_bytes = 1;
    })
}

/// Fires `id`'s timer and delivers only election traffic until it leads;
/// false if it cannot win within a few tries.
fn campaign(s: &mut Scene, id: NodeId) -> bool {
    for _ in 0..4 {
        s.fire_election_timer(id);
        s.deliver_while(is_vote_traffic);
        if s.role(id) == Role::Leader {
            return true;
        }
    }
    false
}

/// Figure 8 up to (c): an entry of term 1 at index 2 is on S1, S2 and S3 — a
/// majority — while S1 leads term 3 and its own entry (index 3, term 3) is
/// on S1 and S2 only. S5 (down) holds a different entry at index 2, of term 2.
fn figure_8_up_to_c() -> (Scene, kuberaft_tests::script::Ticket) {
    let (s1, s2, s3, s4, s5) = (1, 2, 3, 4, 5);
    let mut s = figure_8_cluster();
    assert!(campaign(&mut s, s1));
    s.deliver_all();
    assert_eq!(s.log_terms(s4), vec![1], "everyone has S1's no-op");

    // (a) S1 (term 1) replicates a client entry at index 2 to S2 only.
    let a = s.set(s1, 100).expect("S1 leads");
    assert_eq!(a.index, 2);
    s.deliver_where(|m| route(m) == (s1, s2));
    s.deliver_where(|m| route(m) == (s2, s1));
    s.drop_where(|m| m.from == s1);
    assert_eq!(s.log_terms(s2), vec![1, 1]);

    // (b) S1 crashes; S5 wins term 2 with the votes of S3 and S4 (S2's log is
    // more up to date and it refuses) and writes its no-op at index 2, which
    // reaches nobody before S5 crashes too.
    s.crash(s1);
    assert!(campaign(&mut s, s5));
    assert_eq!(s.term(s5), 2);
    assert_eq!(s.log_terms(s5), vec![1, 2]);
    s.drop_where(|m| m.from == s5);
    s.crash(s5);

    // (c) S1 restarts and wins term 3 (S2, S3, S4 vote for it). It appends
    // its no-op at index 3 and replicates: S2 gets index 3; S3 gets index 2
    // only; S4 nothing.
    s.restart(s1);
    assert!(campaign(&mut s, s1));
    assert_eq!(s.term(s1), 3);
    assert_eq!(s.log_terms(s1), vec![1, 1, 3]);
    s.drop_where(|m| m.from == s1 && m.to == s4);
    s.deliver_while(|m| route(m) == (s1, s2) || route(m) == (s2, s1));
    assert_eq!(s.log_terms(s2), vec![1, 1, 3]);
    s.deliver_where(|m| route(m) == (s1, s3)); // S3 lacks index 2: refused
    s.deliver_where(|m| route(m) == (s3, s1)); // S1 backs up to index 2
    assert!(
        s.in_flight()
            .any(|m| route(m) == (s1, s3) && carries(m, 2) && !carries(m, 3))
    );
    s.deliver_where(|m| route(m) == (s1, s3)); // index 2 (term 1) reaches S3
    s.deliver_where(|m| route(m) == (s3, s1)); // and S1 learns it
    assert_eq!(s.log_terms(s3), vec![1, 1]);
    (s, a)
}

/// Figure 8 (c)–(d): an entry of an older term stored on a majority is not
/// committed by counting replicas (§5.4.2), because a later leader can still
/// overwrite it — which is what happens here.
#[test]
fn figure_8_an_old_term_entry_on_a_majority_is_not_committed_and_may_be_overwritten() {
    let (s1, s2, s3, s4, s5) = (1, 2, 3, 4, 5);
    let (mut s, a) = figure_8_up_to_c();
    assert!(
        s.commit_index(s1) < 2,
        "S1 must not commit index 2 of term 1 although S1, S2, S3 store it"
    );
    assert!(!s.answered(&a));

    // (d) S1 crashes. S5 returns; its last entry (term 2) beats those of S3
    // and S4 (term 1), so it wins with their votes and overwrites index 2.
    s.crash(s1);
    s.drop_where(|m| m.from == s1 || m.to == s1);
    s.restart(s5);
    assert!(campaign(&mut s, s5));
    s.deliver_all();
    s.elapse(100);
    for id in [s2, s3, s4, s5] {
        assert_eq!(s.log_terms(id)[1], 2, "member {id}'s index 2 is S5's entry");
        assert_eq!(s.value(id), 0, "the old entry was never applied");
    }
    assert!(!s.answered(&a), "and its client never got an answer");
}

/// Figure 8 (e): once S1 replicates an entry of its own term (index 3) on a
/// majority, that entry commits and the older one with it; S5 can then no
/// longer be elected, so nothing committed is lost.
#[test]
fn figure_8_an_old_term_entry_commits_only_with_an_entry_of_the_current_term() {
    let (s1, s2, s3, s4, s5) = (1, 2, 3, 4, 5);
    let (mut s, a) = figure_8_up_to_c();
    assert!(s.commit_index(s1) < 2);

    // S1's no-op reaches S3: index 3 (term 3) is on a majority.
    s.deliver_where(|m| route(m) == (s1, s3));
    s.deliver_where(|m| route(m) == (s3, s1));
    assert_eq!(s.commit_index(s1), 3, "indexes 2 and 3 commit together");
    assert!(s.answered(&a));
    assert_eq!(s.value(s1), 100);

    // S1 crashes; S5 cannot win: S2 and S3 hold a term-3 entry.
    s.crash(s1);
    s.drop_where(|m| m.from == s1 || m.to == s1);
    s.restart(s5);
    assert!(!campaign(&mut s, s5), "S5's log is behind a majority's");

    // Some other member wins, with index 2 of term 1 and index 3 of term 3.
    let leader = s.elect(2_000);
    assert_ne!(leader, s5);
    s.elapse(200);
    for id in [s2, s3, s4, s5] {
        assert_eq!(&s.log_terms(id)[..3], &[1, 1, 3], "member {id}");
        assert_eq!(s.value(id), 100);
    }
}
