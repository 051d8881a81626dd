//! Protocol events for the web view (`GET /ui`, admin.v1 WatchEvents),
//! derived in the shell from what the event loop sees: the inputs it steps,
//! the `Ready` it handles, the messages it sends. The core stays unaware.
//!
//! Events go out on a bounded broadcast channel: publishing never blocks the
//! event loop, a slow watcher loses the oldest events, and nothing at all is
//! built while nobody watches. Chatty kinds (heartbeats, appends, entries,
//! timer resets) are sampled: at most [`SAMPLED_PER_SECOND`] per kind per
//! second, the rest counted in the next published event's `dropped`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kuberaft_proto::admin::{RaftEvent, RaftEventKind as Kind};
use tokio::sync::broadcast;

use super::status::role_to_pb;
use crate::raft::{self, Entry, MessageBody, NodeId, RawNode, Role, Term};

/// Events a watcher may fall behind by before it loses the oldest.
pub const CHANNEL_CAPACITY: usize = 4096;

/// Most events of one sampled kind published per second.
pub const SAMPLED_PER_SECOND: u32 = 25;

/// How often a STATUS event is published while someone watches.
const STATUS_EVERY: Duration = Duration::from_millis(250);

/// Most entry terms one ENTRIES_APPENDED event carries.
const MAX_ENTRY_TERMS: usize = 64;

/// Entry terms a STATUS event carries: the log's tail, more than the page
/// shows of each log (14), so that every cell it draws has its term from
/// the member's first status on.
const STATUS_ENTRY_TERMS: usize = 32;

/// What made the core change, as far as the shell can tell.
#[derive(Clone, Copy, Debug)]
pub enum Cause {
    Tick,
    Message {
        from: NodeId,
        term: Term,
        name: &'static str,
    },
    Other,
}

impl Cause {
    pub fn of_message(m: &raft::Message) -> Cause {
        Cause::Message {
            from: m.from,
            term: m.term,
            name: m.body.name(),
        }
    }
}

/// Where the core stood before an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Standing {
    role: Role,
    term: Term,
    leader: NodeId,
}

#[derive(Clone, Copy, Default)]
struct Window {
    start: Option<Instant>,
    count: u32,
    dropped: u64,
}

pub struct Recorder {
    tx: broadcast::Sender<RaftEvent>,
    member: NodeId,
    name: String,
    tick_ms: u32,
    seq: u64,
    windows: [Window; 19],
    standing: Option<Standing>,
    timer: (u32, u32),
    commit: u64,
    last_status: Option<Instant>,
    /// Watchers at the last STATUS event. A page draws a member only from
    /// its first STATUS on, so a new watcher gets one at once.
    watchers: usize,
    /// The first appended entry whose term no published event carried (its
    /// ENTRIES_APPENDED was sampled away): the next one carries it.
    unpublished_from: Option<u64>,
    pub isolated: bool,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn sampled(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::HeartbeatSent
            | Kind::HeartbeatAcked
            | Kind::AppendSent
            | Kind::AppendAcked
            | Kind::EntriesAppended
            | Kind::Committed
            | Kind::Applied
            | Kind::ElectionTimer
    )
}

impl Recorder {
    pub fn new(
        tx: broadcast::Sender<RaftEvent>,
        member: NodeId,
        name: String,
        tick_ms: u32,
    ) -> Recorder {
        Recorder {
            tx,
            member,
            name,
            tick_ms,
            seq: 0,
            windows: [Window::default(); 19],
            standing: None,
            timer: (0, 0),
            commit: 0,
            last_status: None,
            watchers: 0,
            unpublished_from: None,
            isolated: false,
        }
    }

    /// Whether anyone watches; nothing is built otherwise.
    pub fn active(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    fn event(&self, node: &RawNode, kind: Kind) -> RaftEvent {
        RaftEvent {
            member_id: self.member,
            kind: kind as i32,
            term: node.term(),
            role: role_to_pb(node.role()) as i32,
            leader_id: node.leader_id(),
            ..Default::default()
        }
    }

    /// Sends the event unless sampling leaves it out; says whether it went.
    fn publish(&mut self, mut ev: RaftEvent) -> bool {
        let kind = ev.kind();
        if sampled(kind) {
            let now = Instant::now();
            let w = &mut self.windows[ev.kind as usize % 19];
            if w.start
                .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
            {
                w.start = Some(now);
                w.count = 0;
            }
            if w.count >= SAMPLED_PER_SECOND {
                w.dropped += 1;
                return false;
            }
            w.count += 1;
            ev.dropped = std::mem::take(&mut w.dropped);
        }
        self.seq += 1;
        ev.seq = self.seq;
        ev.unix_ms = unix_ms();
        let _ = self.tx.send(ev);
        true
    }

    /// Nobody watches: forget where the core stood, so the next watcher does
    /// not see a stale change.
    pub fn idle(&mut self) {
        self.standing = None;
        self.last_status = None;
        self.watchers = 0;
        self.unpublished_from = None;
    }

    /// After each input: role, term, leader and election-timer changes.
    pub fn after_input(&mut self, node: &RawNode, cause: Cause) {
        let now = Standing {
            role: node.role(),
            term: node.term(),
            leader: node.leader_id(),
        };
        let before = self.standing.replace(now);
        let mut role_changed = false;
        if let Some(b) = before
            && b != now
        {
            if b.role != now.role || b.term != now.term {
                role_changed = true;
                let mut ev = self.event(node, Kind::RoleChanged);
                ev.reason = reason(b, now, cause);
                ev.voted_for = node.voted_for();
                self.publish(ev);
            } else {
                self.publish(self.event(node, Kind::LeaderKnown));
            }
        }
        let timer = node.election_timer();
        let (elapsed, timeout) = timer;
        let reset = timer.1 != self.timer.1 || elapsed < self.timer.0;
        self.timer = timer;
        if now.role != Role::Leader && (reset || role_changed) {
            let mut ev = self.event(node, Kind::ElectionTimer);
            ev.timeout_ms = timeout * self.tick_ms;
            ev.elapsed_ms = elapsed * self.tick_ms;
            if role_changed {
                // Never sampled away: the page must see the new timer.
                self.seq += 1;
                ev.seq = self.seq;
                ev.unix_ms = unix_ms();
                let _ = self.tx.send(ev);
            } else {
                self.publish(ev);
            }
        }
    }

    /// A message this member sends; `answers_heartbeat` when it answers a
    /// heartbeat (an AppendEntries without entries).
    pub fn sent(&mut self, node: &RawNode, m: &raft::Message, answers_heartbeat: bool) {
        // The member's own term, not the message's: a pre-vote asks about a
        // term nobody is in yet.
        let mut ev = self.event(node, Kind::Unspecified);
        ev.peer_id = m.to;
        let kind = match &m.body {
            MessageBody::RequestVote {
                pre_vote,
                last_log_index,
                ..
            } => {
                ev.pre_vote = *pre_vote;
                ev.index = *last_log_index;
                Kind::VoteRequested
            }
            MessageBody::RequestVoteResponse {
                vote_granted,
                pre_vote,
            } => {
                ev.pre_vote = *pre_vote;
                if *vote_granted {
                    Kind::VoteGranted
                } else {
                    Kind::VoteDenied
                }
            }
            MessageBody::AppendEntries {
                entries,
                leader_commit,
                prev_log_index,
                ..
            } => {
                ev.commit_index = *leader_commit;
                match (entries.first(), entries.last()) {
                    (Some(f), Some(l)) => {
                        ev.index = f.index;
                        ev.last_index = l.index;
                        Kind::AppendSent
                    }
                    _ => {
                        ev.index = *prev_log_index;
                        Kind::HeartbeatSent
                    }
                }
            }
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                reject_index,
                ..
            } => {
                ev.success = *success;
                ev.index = if *success {
                    *match_index
                } else {
                    *reject_index
                };
                if answers_heartbeat {
                    Kind::HeartbeatAcked
                } else {
                    Kind::AppendAcked
                }
            }
            MessageBody::InstallSnapshot { snapshot } => {
                ev.index = snapshot.last_included_index;
                Kind::SnapshotSent
            }
            MessageBody::TimeoutNow => Kind::TimeoutNowSent,
        };
        ev.kind = kind as i32;
        self.publish(ev);
    }

    /// Entries made durable in this turn's `Ready`.
    pub fn appended(&mut self, node: &RawNode, entries: &[Entry]) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        // From the first entry no event told of, so that a page that saw
        // the published events knows the term of every entry.
        let from = self
            .unpublished_from
            .map_or(first.index, |u| u.min(first.index));
        let mut ev = self.event(node, Kind::EntriesAppended);
        (ev.index, ev.entry_terms) = log_tail(node, from, last.index, MAX_ENTRY_TERMS);
        ev.last_index = last.index;
        self.unpublished_from = if self.publish(ev) { None } else { Some(from) };
    }

    pub fn committed(&mut self, node: &RawNode) {
        let commit = node.commit_index();
        if commit != self.commit {
            self.commit = commit;
            let mut ev = self.event(node, Kind::Committed);
            ev.index = commit;
            self.publish(ev);
        }
    }

    pub fn applied(&mut self, node: &RawNode, applied: u64) {
        let mut ev = self.event(node, Kind::Applied);
        ev.index = applied;
        self.publish(ev);
    }

    pub fn snapshot_installed(&mut self, node: &RawNode, index: u64) {
        let mut ev = self.event(node, Kind::SnapshotInstalled);
        ev.index = index;
        self.publish(ev);
    }

    pub fn isolation(&mut self, node: &RawNode, isolated: bool) {
        self.isolated = isolated;
        let mut ev = self.event(node, Kind::Isolation);
        ev.isolated = isolated;
        self.publish(ev);
    }

    /// A STATUS event, at most every [`STATUS_EVERY`] unless `now` or a
    /// watcher joined since the last one.
    pub fn status(&mut self, node: &RawNode, applied: u64, now: bool) {
        let watchers = self.tx.receiver_count();
        let joined = watchers > self.watchers;
        self.watchers = watchers;
        if !now && !joined && self.last_status.is_some_and(|t| t.elapsed() < STATUS_EVERY) {
            return;
        }
        self.last_status = Some(Instant::now());
        let mut ev = self.event(node, Kind::Status);
        ev.voted_for = node.voted_for();
        ev.commit_index = node.commit_index();
        ev.applied_index = applied;
        ev.last_index = node.last_index();
        (ev.index, ev.entry_terms) = log_tail(node, 1, ev.last_index, STATUS_ENTRY_TERMS);
        ev.name = self.name.clone();
        ev.isolated = self.isolated;
        let (elapsed, timeout) = node.election_timer();
        ev.timeout_ms = timeout * self.tick_ms;
        ev.elapsed_ms = elapsed * self.tick_ms;
        self.publish(ev);
    }
}

/// The terms of the latest `max` entries of `from..=last` that the log still
/// holds (compaction drops the oldest), and the index of the first of them.
fn log_tail(node: &RawNode, from: u64, last: u64, max: usize) -> (u64, Vec<Term>) {
    let mut terms: Vec<Term> = (from.max(1)..=last)
        .rev()
        .take(max)
        .map_while(|i| node.entry(i).map(|e| e.term))
        .collect();
    terms.reverse();
    (last + 1 - terms.len() as u64, terms)
}

/// Why the role or term changed, in the words of the paper.
fn reason(b: Standing, now: Standing, cause: Cause) -> String {
    match (b.role, now.role, cause) {
        (_, Role::Follower, Cause::Message { from, term, name }) if now.term > b.term => {
            format!("saw the higher term {term} in a {name} from member {from}")
        }
        (Role::Leader, Role::Follower, Cause::Tick) => {
            "stepped down: no answer from a majority for an election timeout (check quorum)".into()
        }
        (_, Role::PreCandidate, Cause::Tick) => {
            "election timeout: no heartbeat from a leader; asking for pre-votes".into()
        }
        (Role::PreCandidate, Role::Candidate, _) => format!(
            "a majority granted the pre-vote: starts term {} and asks for votes",
            now.term
        ),
        (_, Role::Candidate, Cause::Tick) => {
            format!(
                "election timeout (split vote?): starts term {} and asks for votes",
                now.term
            )
        }
        (_, Role::Candidate, Cause::Message { from, .. }) => format!(
            "leader {from} handed over leadership (TimeoutNow): starts term {}",
            now.term
        ),
        (_, Role::Leader, _) => format!(
            "won the election: a majority voted for it in term {}",
            now.term
        ),
        (
            Role::Candidate | Role::PreCandidate,
            Role::Follower,
            Cause::Message { from, name, .. },
        ) if name.starts_with("Append") || name == "InstallSnapshot" => {
            format!("member {from} leads term {}", now.term)
        }
        (Role::Candidate | Role::PreCandidate, Role::Follower, Cause::Message { .. }) => {
            "a majority refused the vote".into()
        }
        _ => format!("{} → {}", b.role.as_str(), now.role.as_str()),
    }
}

/// The event as JSON for the page: kind in snake case, numbers as numbers.
pub fn to_json(ev: &RaftEvent) -> serde_json::Value {
    let kind = ev.kind().as_str_name();
    let kind = kind
        .strip_prefix("RAFT_EVENT_KIND_")
        .unwrap_or(kind)
        .to_ascii_lowercase();
    let role = ev.role().as_str_name();
    let role = role
        .strip_prefix("ROLE_")
        .unwrap_or(role)
        .to_ascii_lowercase()
        .replace('_', "-");
    let mut v = serde_json::json!({
        "kind": kind,
        "member_id": ev.member_id,
        "seq": ev.seq,
        "unix_ms": ev.unix_ms,
        "term": ev.term,
        "role": role,
        "leader_id": ev.leader_id,
    });
    let extra: [(&str, serde_json::Value); 14] = [
        ("voted_for", ev.voted_for.into()),
        ("peer_id", ev.peer_id.into()),
        ("index", ev.index.into()),
        ("last_index", ev.last_index.into()),
        ("commit_index", ev.commit_index.into()),
        ("applied_index", ev.applied_index.into()),
        ("pre_vote", ev.pre_vote.into()),
        ("success", ev.success.into()),
        ("timeout_ms", ev.timeout_ms.into()),
        ("elapsed_ms", ev.elapsed_ms.into()),
        ("reason", ev.reason.clone().into()),
        ("dropped", ev.dropped.into()),
        ("name", ev.name.clone().into()),
        ("isolated", ev.isolated.into()),
    ];
    if let Some(map) = v.as_object_mut() {
        for (k, val) in extra {
            let empty = matches!(&val, serde_json::Value::Number(n) if n.as_u64() == Some(0))
                || val == serde_json::Value::Bool(false)
                || val == serde_json::Value::String(String::new());
            if !empty {
                map.insert(k.into(), val);
            }
        }
        if !ev.entry_terms.is_empty() {
            map.insert("entry_terms".into(), ev.entry_terms.clone().into());
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Config, Member, Membership, RestoredState, SnapshotMeta, Suffrage};

    fn node() -> RawNode {
        node_of(3)
    }

    fn node_of(n: u64) -> RawNode {
        let members = (1..=n).map(|id| Member {
            id,
            name: format!("m{id}"),
            peer_addr: String::new(),
            client_addr: String::new(),
            suffrage: Suffrage::Voter,
        });
        let restored = RestoredState {
            snapshot: SnapshotMeta {
                membership: Membership::new(members),
                ..Default::default()
            },
            ..Default::default()
        };
        RawNode::new(Config::with_tick_ms(1, 10, 7), restored).expect("a core")
    }

    /// A member alone in its cluster, leader, with `n` entries of its own
    /// after its leader's no-op; all durable.
    fn leader_with(n: u8) -> RawNode {
        let mut node = node_of(1);
        let turn = |node: &mut RawNode| {
            if node.has_ready() {
                node.ready();
                node.advance();
            }
        };
        while node.role() != Role::Leader {
            node.tick();
            turn(&mut node);
        }
        for i in 0..n {
            node.propose(bytes::Bytes::from(vec![i]))
                .expect("a leader takes proposals");
            turn(&mut node);
        }
        node
    }

    fn entries(node: &RawNode, from: u64, to: u64) -> Vec<Entry> {
        (from..=to).filter_map(|i| node.entry(i).cloned()).collect()
    }

    fn heartbeat() -> raft::Message {
        raft::Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::AppendEntries {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: Vec::new(),
                leader_commit: 0,
                seq: 1,
            },
        }
    }

    #[test]
    fn chatty_kinds_are_sampled_and_the_rest_counted() {
        let (tx, mut rx) = broadcast::channel(1024);
        let mut r = Recorder::new(tx, 1, "m1".into(), 10);
        let n = node();
        for _ in 0..100 {
            r.sent(&n, &heartbeat(), false);
        }
        let mut got = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            got.push(ev);
        }
        assert_eq!(got.len(), SAMPLED_PER_SECOND as usize);
        assert!(got.iter().all(|e| e.kind() == Kind::HeartbeatSent));
        assert!(got.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        // Votes are never sampled.
        let vote = raft::Message {
            body: MessageBody::RequestVote {
                last_log_index: 0,
                last_log_term: 0,
                pre_vote: true,
                leader_transfer: false,
            },
            ..heartbeat()
        };
        for _ in 0..100 {
            r.sent(&n, &vote, false);
        }
        assert_eq!(rx.len(), 100);
    }

    #[test]
    fn events_read_as_json_for_the_page() {
        let (tx, mut rx) = broadcast::channel(16);
        let mut r = Recorder::new(tx, 1, "m1".into(), 10);
        let n = node();
        r.status(&n, 0, true);
        let v = to_json(&rx.try_recv().expect("a status"));
        assert_eq!(v["kind"], "status");
        assert_eq!(v["role"], "follower");
        assert_eq!(v["name"], "m1");
        assert_eq!(v["member_id"], 1);
        assert!(
            v["timeout_ms"]
                .as_u64()
                .is_some_and(|t| (150..300).contains(&t)),
            "{v}"
        );
        assert!(v.get("peer_id").is_none(), "zero fields are left out: {v}");
    }

    #[test]
    fn a_status_carries_the_terms_of_the_logs_tail() {
        let (tx, mut rx) = broadcast::channel(16);
        let mut r = Recorder::new(tx, 1, "m1".into(), 10);
        let n = leader_with(40);
        r.status(&n, 0, true);
        let v = to_json(&rx.try_recv().expect("a status"));
        let last = n.last_index();
        assert_eq!(last, 41, "the no-op and 40 entries");
        assert_eq!(v["last_index"], last);
        assert_eq!(v["index"], last + 1 - STATUS_ENTRY_TERMS as u64, "{v}");
        let terms = v["entry_terms"].as_array().expect("entry terms");
        assert_eq!(terms.len(), STATUS_ENTRY_TERMS);
        assert!(terms.iter().all(|t| t.as_u64() == Some(n.term())), "{v}");
    }

    #[test]
    fn a_new_watcher_gets_a_status_at_once() {
        let (tx, mut first) = broadcast::channel(16);
        let mut r = Recorder::new(tx.clone(), 1, "m1".into(), 10);
        let n = node();
        r.status(&n, 0, false);
        assert!(first.try_recv().is_ok(), "the first watcher's status");
        r.status(&n, 0, false);
        assert!(first.try_recv().is_err(), "not again within 250 ms");
        let mut second = tx.subscribe();
        r.status(&n, 0, false);
        let ev = second.try_recv().expect("the new watcher's status");
        assert_eq!(ev.kind(), Kind::Status);
    }

    #[test]
    fn entries_whose_event_was_sampled_away_come_with_the_next() {
        let (tx, mut rx) = broadcast::channel(64);
        let mut r = Recorder::new(tx, 1, "m1".into(), 10);
        let n = leader_with(40);
        for i in 1..=30 {
            r.appended(&n, &entries(&n, i, i));
        }
        let got: Vec<RaftEvent> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(
            got.len(),
            SAMPLED_PER_SECOND as usize,
            "26 to 30 sampled away"
        );
        // A second later, the next event tells of the entries left out too.
        r.windows = [Window::default(); 19];
        r.appended(&n, &entries(&n, 31, 32));
        let ev = rx.try_recv().expect("entries appended");
        assert_eq!((ev.index, ev.last_index), (26, 32));
        assert_eq!(ev.entry_terms, vec![n.term(); 7]);
        r.appended(&n, &entries(&n, 33, 33));
        let ev = rx.try_recv().expect("entries appended");
        assert_eq!((ev.index, ev.entry_terms.len()), (33, 1), "nothing owed");
    }

    #[test]
    fn reasons_say_why_in_the_papers_words() {
        let s = |role, term| Standing {
            role,
            term,
            leader: 0,
        };
        let r = reason(s(Role::Follower, 1), s(Role::PreCandidate, 1), Cause::Tick);
        assert!(r.starts_with("election timeout"), "{r}");
        let r = reason(
            s(Role::Leader, 1),
            s(Role::Follower, 2),
            Cause::Message {
                from: 3,
                term: 2,
                name: "RequestVote",
            },
        );
        assert_eq!(r, "saw the higher term 2 in a RequestVote from member 3");
        let r = reason(s(Role::Leader, 1), s(Role::Follower, 1), Cause::Tick);
        assert!(r.contains("check quorum"), "{r}");
        let r = reason(s(Role::Candidate, 2), s(Role::Leader, 2), Cause::Other);
        assert!(r.starts_with("won the election"), "{r}");
    }
}
