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

    fn publish(&mut self, mut ev: RaftEvent) {
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
                return;
            }
            w.count += 1;
            ev.dropped = std::mem::take(&mut w.dropped);
        }
        self.seq += 1;
        ev.seq = self.seq;
        ev.unix_ms = unix_ms();
        let _ = self.tx.send(ev);
    }

    /// Nobody watches: forget where the core stood, so the next watcher does
    /// not see a stale change.
    pub fn idle(&mut self) {
        self.standing = None;
        self.last_status = None;
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
        let mut ev = self.event(node, Kind::EntriesAppended);
        let tail = &entries[entries.len().saturating_sub(MAX_ENTRY_TERMS)..];
        ev.index = tail.first().map_or(first.index, |e| e.index);
        ev.last_index = last.index;
        ev.entry_terms = tail.iter().map(|e| e.term).collect();
        self.publish(ev);
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

    /// A STATUS event, at most every [`STATUS_EVERY`] unless `now`.
    pub fn status(&mut self, node: &RawNode, applied: u64, now: bool) {
        if !now && self.last_status.is_some_and(|t| t.elapsed() < STATUS_EVERY) {
            return;
        }
        self.last_status = Some(Instant::now());
        let mut ev = self.event(node, Kind::Status);
        ev.voted_for = node.voted_for();
        ev.commit_index = node.commit_index();
        ev.applied_index = applied;
        ev.last_index = node.last_index();
        ev.name = self.name.clone();
        ev.isolated = self.isolated;
        let (elapsed, timeout) = node.election_timer();
        ev.timeout_ms = timeout * self.tick_ms;
        ev.elapsed_ms = elapsed * self.tick_ms;
        self.publish(ev);
    }
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
        let members = (1..=3).map(|id| Member {
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
