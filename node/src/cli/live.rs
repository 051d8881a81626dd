//! The live view of a cluster: each member's role, term, leader, vote and
//! commit index, and a narrative of what changed ("dev-1 timed out and became
//! a candidate in term 4") — the article's animation, in a terminal.
//!
//! The state and its rendering are pure; [`follow`] feeds it from every
//! member's WatchStatus stream.

use std::collections::VecDeque;
use std::time::Duration;

use kuberaft_proto::admin::admin_client::AdminClient;
use kuberaft_proto::admin::{Role, StatusResponse, WatchStatusRequest};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::client::channel;
use super::cluster::Process;
use super::error::{Failure, classify};
use super::members::role_name;
use super::output::Table;

/// How many recent events the terminal view keeps on screen.
pub const EVENTS_SHOWN: usize = 12;

#[derive(Clone, Debug)]
pub struct MemberRow {
    pub name: String,
    pub addr: String,
    /// The member's process, when raftctl started it.
    pub process: Option<Process>,
    /// The last status the member sent.
    pub status: Option<StatusResponse>,
    /// Whether its stream is up right now.
    pub reachable: bool,
}

#[derive(Clone, Debug, Default)]
pub struct View {
    pub rows: Vec<MemberRow>,
    pub events: VecDeque<String>,
}

/// What the view learns.
#[derive(Clone, Debug)]
pub enum Update {
    // Boxed: a Status is far larger than the other updates.
    Status(usize, Box<StatusResponse>),
    Unreachable(usize, String),
    Process(usize, Process),
}

impl View {
    pub fn new(rows: Vec<MemberRow>) -> View {
        View {
            rows,
            events: VecDeque::new(),
        }
    }

    /// A member's name by id, from any member's membership.
    fn name_of(&self, id: u64) -> String {
        if id == 0 {
            return "nobody".into();
        }
        for r in &self.rows {
            if let Some(s) = &r.status {
                if s.member_id == id {
                    return s.name.clone();
                }
                if let Some(m) = s
                    .members
                    .iter()
                    .filter_map(|m| m.member.as_ref())
                    .find(|m| m.id == id)
                {
                    return m.name.clone();
                }
            }
        }
        format!("member {id}")
    }

    /// Applies an update; returns the sentences that describe what changed
    /// (also kept as the view's recent events, prefixed with `when`).
    pub fn apply(&mut self, update: Update, when: &str) -> Vec<String> {
        let said = self.describe(&update);
        match update {
            Update::Status(i, s) => {
                if let Some(r) = self.rows.get_mut(i) {
                    r.name = s.name.clone();
                    r.status = Some(*s);
                    r.reachable = true;
                }
            }
            Update::Unreachable(i, _) => {
                if let Some(r) = self.rows.get_mut(i) {
                    r.reachable = false;
                }
            }
            Update::Process(i, p) => {
                if let Some(r) = self.rows.get_mut(i) {
                    if !matches!(p, Process::Running { .. }) {
                        r.reachable = false;
                    }
                    r.process = Some(p);
                }
            }
        }
        for s in &said {
            self.events.push_back(format!("{when}  {s}"));
            while self.events.len() > EVENTS_SHOWN {
                self.events.pop_front();
            }
        }
        said
    }

    fn describe(&self, update: &Update) -> Vec<String> {
        let mut out = Vec::new();
        match update {
            Update::Process(i, p) => {
                let Some(r) = self.rows.get(*i) else {
                    return out;
                };
                match p {
                    Process::Running { pid } => out.push(format!("{} started (pid {pid})", r.name)),
                    Process::Exited { how } => out.push(format!("{} {how}", r.name)),
                }
            }
            Update::Unreachable(i, why) => {
                let Some(r) = self.rows.get(*i) else {
                    return out;
                };
                let running = !matches!(r.process, Some(Process::Exited { .. }));
                if r.reachable && running {
                    out.push(format!("{} is unreachable ({why})", r.name));
                }
            }
            Update::Status(i, new) => {
                let Some(r) = self.rows.get(*i) else {
                    return out;
                };
                let name = &new.name;
                let old = r.status.as_ref();
                if !r.reachable {
                    out.push(format!(
                        "{name} is up: {} in term {}",
                        role_name(new.role()),
                        new.term
                    ));
                    return out;
                }
                let Some(old) = old else { return out };
                let term_changed = new.term != old.term;
                if new.role() != old.role() || term_changed {
                    out.push(match new.role() {
                        Role::Leader => format!("{name} won the election: leader of term {}", new.term),
                        Role::Candidate => format!(
                            "{name} is a candidate in term {}: votes for itself and asks the others",
                            new.term
                        ),
                        Role::PreCandidate => format!(
                            "{name} timed out: pre-candidate, asking whether it could win term {}",
                            new.term + 1
                        ),
                        Role::Follower if old.role() == Role::Leader => {
                            format!("{name} stepped down: follower in term {}", new.term)
                        }
                        Role::Follower if term_changed => {
                            format!("{name} saw term {} and follows it", new.term)
                        }
                        Role::Follower => format!("{name} is a follower again (term {})", new.term),
                        Role::Unspecified => format!("{name} is in an unknown role"),
                    });
                }
                let voted_now = new.voted_for != 0 && new.voted_for != new.member_id;
                if voted_now && (new.voted_for != old.voted_for || term_changed) {
                    out.push(format!(
                        "{name} voted for {} in term {}",
                        self.name_of(new.voted_for),
                        new.term
                    ));
                }
                if new.leader_id != old.leader_id && new.role() != Role::Leader {
                    if new.leader_id == 0 {
                        out.push(format!("{name} has no leader (term {})", new.term));
                    } else {
                        out.push(format!(
                            "{name} follows {} (term {})",
                            self.name_of(new.leader_id),
                            new.term
                        ));
                    }
                }
            }
        }
        out
    }

    /// The member table; `color` highlights the leader, candidates and
    /// members that are down.
    pub fn table(&self, color: bool) -> Vec<String> {
        let managed = self.rows.iter().any(|r| r.process.is_some());
        let mut header = vec!["MEMBER"];
        if managed {
            header.extend(["PID", "PROCESS"]);
        }
        header.extend([
            "ROLE",
            "TERM",
            "LEADER",
            "VOTED FOR",
            "COMMIT",
            "APPLIED",
            "REACHABLE",
        ]);
        let mut t = Table::new(header);
        let mut kinds = Vec::new();
        for r in &self.rows {
            let mut cells = vec![r.name.clone()];
            if managed {
                let (pid, process) = match &r.process {
                    Some(Process::Running { pid }) => (pid.to_string(), "running".to_string()),
                    Some(Process::Exited { how }) => ("-".to_string(), how.clone()),
                    None => ("-".into(), "-".into()),
                };
                cells.extend([pid, process]);
            }
            let down = !r.reachable;
            match &r.status {
                Some(s) if !down => {
                    cells.extend([
                        role_name(s.role()).to_string(),
                        s.term.to_string(),
                        if s.leader_id == 0 {
                            "-".into()
                        } else {
                            self.name_of(s.leader_id)
                        },
                        if s.voted_for == 0 {
                            "-".into()
                        } else {
                            self.name_of(s.voted_for)
                        },
                        s.commit_index.to_string(),
                        s.applied_index.to_string(),
                        "yes".into(),
                    ]);
                    kinds.push(match s.role() {
                        Role::Leader => Kind::Leader,
                        Role::Candidate | Role::PreCandidate => Kind::Candidate,
                        _ => Kind::Plain,
                    });
                }
                _ => {
                    cells.extend(["-", "-", "-", "-", "-", "-", "no"].map(String::from));
                    kinds.push(Kind::Down);
                }
            }
            t.row(cells);
        }
        let lines = t.lines();
        let mut out = Vec::with_capacity(lines.len());
        for (i, line) in lines.into_iter().enumerate() {
            let kind = if i == 0 { Kind::Header } else { kinds[i - 1] };
            out.push(if color { kind.paint(&line) } else { line });
        }
        out
    }

    /// The whole screen below the header: table, blank line, recent events.
    pub fn screen(&self, color: bool) -> Vec<String> {
        let mut out = self.table(color);
        out.push(String::new());
        if self.events.is_empty() {
            out.push("(waiting for the members to report)".into());
        }
        out.extend(self.events.iter().cloned());
        out
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Header,
    Leader,
    Candidate,
    Plain,
    Down,
}

impl Kind {
    fn paint(self, line: &str) -> String {
        let code = match self {
            Kind::Header => "1",
            Kind::Leader => "1;32",
            Kind::Candidate => "33",
            Kind::Plain => return line.to_string(),
            Kind::Down => "2;31",
        };
        format!("\x1b[{code}m{line}\x1b[0m")
    }
}

/// Tasks that follow members' WatchStatus streams; aborted when dropped.
pub struct Followers(Vec<JoinHandle<()>>);

impl Drop for Followers {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Follows the WatchStatus stream of each address (row index = position),
/// reconnecting after errors, and sends what it learns to `tx`.
pub fn follow(
    addrs: &[String],
    interval_ms: u32,
    dial_timeout: Duration,
    tx: mpsc::UnboundedSender<Update>,
) -> Followers {
    let handles = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let addr = addr.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let ch = match channel(&addr, dial_timeout) {
                    Ok(ch) => ch,
                    Err(e) => {
                        let _ = tx.send(Update::Unreachable(i, e.message));
                        return;
                    }
                };
                loop {
                    let why = match AdminClient::new(ch.clone())
                        .watch_status(WatchStatusRequest { interval_ms })
                        .await
                    {
                        Ok(stream) => {
                            let mut stream = stream.into_inner();
                            loop {
                                match stream.message().await {
                                    Ok(Some(s)) => {
                                        if tx.send(Update::Status(i, Box::new(s))).is_err() {
                                            return;
                                        }
                                    }
                                    Ok(None) => break "stream ended".to_string(),
                                    Err(e) => break why(&e),
                                }
                            }
                        }
                        Err(e) => why(&e),
                    };
                    if tx.send(Update::Unreachable(i, why)).is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect();
    Followers(handles)
}

fn why(status: &tonic::Status) -> String {
    match classify(status) {
        Failure::Unreachable(w) | Failure::Lost(w) => w,
        Failure::Answered => status.message().to_string(),
    }
}

/// `+12.345s`: time since the view started.
pub fn since(start: std::time::Instant) -> String {
    format!("+{:>8.3}s", start.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuberaft_proto::admin::MemberStatus;
    use kuberaft_proto::raft::Member;

    fn status(id: u64, role: Role, term: u64, voted_for: u64, leader_id: u64) -> StatusResponse {
        StatusResponse {
            member_id: id,
            name: format!("dev-{}", id - 1),
            role: role as i32,
            term,
            voted_for,
            leader_id,
            commit_index: 5,
            applied_index: 5,
            members: (1..=3)
                .map(|i| MemberStatus {
                    member: Some(Member {
                        id: i,
                        name: format!("dev-{}", i - 1),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn view() -> View {
        View::new(
            (0..3)
                .map(|i| MemberRow {
                    name: format!("dev-{i}"),
                    addr: format!("127.0.0.1:{}", 7101 + 2 * i),
                    process: Some(Process::Running {
                        pid: 100 + i as u32,
                    }),
                    status: None,
                    reachable: false,
                })
                .collect(),
        )
    }

    /// The article's story: a follower times out, asks for votes, wins, and
    /// the others follow it.
    #[test]
    fn an_election_reads_like_the_article() {
        let mut v = view();
        let mut said = Vec::new();
        for (i, s) in [
            (0, status(1, Role::Follower, 1, 0, 0)),
            (1, status(2, Role::Follower, 1, 0, 0)),
            (2, status(3, Role::Follower, 1, 0, 0)),
            (1, status(2, Role::PreCandidate, 1, 0, 0)),
            (1, status(2, Role::Candidate, 2, 2, 0)),
            (0, status(1, Role::Follower, 2, 2, 0)),
            (1, status(2, Role::Leader, 2, 2, 2)),
            (0, status(1, Role::Follower, 2, 2, 2)),
        ] {
            said.extend(v.apply(Update::Status(i, Box::new(s)), "t"));
        }
        assert_eq!(
            said,
            [
                "dev-0 is up: follower in term 1",
                "dev-1 is up: follower in term 1",
                "dev-2 is up: follower in term 1",
                "dev-1 timed out: pre-candidate, asking whether it could win term 2",
                "dev-1 is a candidate in term 2: votes for itself and asks the others",
                "dev-0 saw term 2 and follows it",
                "dev-0 voted for dev-1 in term 2",
                "dev-1 won the election: leader of term 2",
                "dev-0 follows dev-1 (term 2)",
            ]
        );
        let table = v.table(false).join("\n");
        assert_eq!(
            table,
            "\
MEMBER  PID  PROCESS  ROLE      TERM  LEADER  VOTED FOR  COMMIT  APPLIED  REACHABLE
dev-0   100  running  follower  2     dev-1   dev-1      5       5        yes
dev-1   101  running  leader    2     dev-1   dev-1      5       5        yes
dev-2   102  running  follower  1     -       -          5       5        yes"
        );
    }

    #[test]
    fn a_killed_member_is_shown_down_and_said_once() {
        let mut v = view();
        v.apply(
            Update::Status(0, Box::new(status(1, Role::Leader, 3, 1, 1))),
            "t",
        );
        let said = v.apply(
            Update::Process(
                0,
                Process::Exited {
                    how: "killed by SIGKILL".into(),
                },
            ),
            "t",
        );
        assert_eq!(said, ["dev-0 killed by SIGKILL"]);
        // The stream breaking afterwards adds nothing.
        assert!(
            v.apply(Update::Unreachable(0, "reset".into()), "t")
                .is_empty()
        );
        let row = &v.table(false)[1];
        assert!(
            row.contains("killed by SIGKILL") && row.ends_with("no"),
            "{row}"
        );
        assert!(v.table(true)[1].starts_with("\x1b[2;31m"));
    }

    #[test]
    fn recent_events_are_bounded() {
        let mut v = view();
        for t in 1..=30 {
            v.apply(
                Update::Status(0, Box::new(status(1, Role::Follower, t, 0, 0))),
                "t",
            );
        }
        assert_eq!(v.events.len(), EVENTS_SHOWN);
        assert!(v.events.back().unwrap().contains("term 30"));
    }
}
