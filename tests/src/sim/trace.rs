//! What happened in a run, for the person reading a failure: faults,
//! elections, commits, membership changes, snapshots. Events are kept as
//! plain data in a ring buffer and formatted only when a run fails, so
//! passing runs pay almost nothing for them.

use std::collections::VecDeque;
use std::fmt;

use kuberaft_node::raft::{ConfChange, Index, NodeId, Term};

/// Where a crash hits a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// Between two turns: everything the member did is handled.
    Idle,
    /// After `ready()`, before anything of it is persisted: that Ready is lost.
    BeforePersist,
    /// After persisting a Ready, before sending its messages.
    BeforeSend,
}

#[derive(Clone, Debug)]
pub enum Event {
    Note(String),
    Crash {
        node: NodeId,
        at: CrashPoint,
    },
    Restart {
        node: NodeId,
        term: Term,
        last_index: Index,
        commit: Index,
    },
    Pause {
        node: NodeId,
        until: u64,
    },
    Partition {
        id: u32,
        kind: &'static str,
        links: Vec<(NodeId, NodeId)>,
    },
    HealPartition {
        id: u32,
    },
    NetworkHealed,
    Elected {
        node: NodeId,
        term: Term,
        last_index: Index,
    },
    SteppedDown {
        node: NodeId,
        term: Term,
    },
    Committed {
        by: NodeId,
        index: Index,
        term: Term,
    },
    ConfProposed {
        leader: NodeId,
        index: Index,
        change: ConfChange,
    },
    ConfCommitted {
        index: Index,
        change: ConfChange,
    },
    TransferLeader {
        from: NodeId,
        to: NodeId,
    },
    Compacted {
        node: NodeId,
        index: Index,
    },
    SnapshotInstalled {
        node: NodeId,
        index: Index,
        term: Term,
    },
    MemberStarted {
        node: NodeId,
    },
    Message {
        what: &'static str,
        from: NodeId,
        to: NodeId,
        term: Term,
        detail: String,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Note(s) => write!(f, "{s}"),
            Event::Crash { node, at } => match at {
                CrashPoint::Idle => write!(f, "CRASH   member {node}"),
                CrashPoint::BeforePersist => {
                    write!(
                        f,
                        "CRASH   member {node} after ready(), before persisting it (the Ready is lost)"
                    )
                }
                CrashPoint::BeforeSend => {
                    write!(
                        f,
                        "CRASH   member {node} after persisting a Ready, before sending it"
                    )
                }
            },
            Event::Restart {
                node,
                term,
                last_index,
                commit,
            } => write!(
                f,
                "RESTART member {node} from disk: term {term}, last index {last_index}, commit {commit}"
            ),
            Event::Pause { node, until } => write!(f, "PAUSE   member {node} until t={until}"),
            Event::Partition { id, kind, links } => {
                write!(f, "CUT     #{id} {kind}:")?;
                for (a, b) in links {
                    write!(f, " {a}->{b}")?;
                }
                Ok(())
            }
            Event::HealPartition { id } => write!(f, "HEAL    #{id}"),
            Event::NetworkHealed => {
                write!(
                    f,
                    "HEAL    everything: all members up, network perfect from now on"
                )
            }
            Event::Elected {
                node,
                term,
                last_index,
            } => write!(
                f,
                "ELECTED member {node} leads term {term} (last index {last_index})"
            ),
            Event::SteppedDown { node, term } => {
                write!(f, "STEP    member {node} no longer leads term {term}")
            }
            Event::Committed { by, index, term } => {
                write!(
                    f,
                    "COMMIT  up to {index} (term {term}), first known by member {by}"
                )
            }
            Event::ConfProposed {
                leader,
                index,
                change,
            } => write!(
                f,
                "CONF    leader {leader} proposes \"{change}\" at {index}"
            ),
            Event::ConfCommitted { index, change } => {
                write!(f, "CONF    \"{change}\" committed at {index}")
            }
            Event::TransferLeader { from, to } => {
                write!(f, "XFER    leader {from} hands leadership to {to}")
            }
            Event::Compacted { node, index } => {
                write!(
                    f,
                    "SNAP    member {node} snapshots and compacts up to {index}"
                )
            }
            Event::SnapshotInstalled { node, index, term } => write!(
                f,
                "SNAP    member {node} installs the leader's snapshot of {index} (term {term})"
            ),
            Event::MemberStarted { node } => write!(f, "START   new member {node} (empty disk)"),
            Event::Message {
                what,
                from,
                to,
                term,
                detail,
            } => write!(f, "  msg   {what} {from}->{to} term {term} {detail}"),
        }
    }
}

/// The last `capacity` events of a run (all of them when `capacity` is 0).
pub struct Trace {
    events: VecDeque<(u64, Event)>,
    capacity: usize,
    dropped: u64,
    /// Whether per-message events are recorded (replays ask for them).
    pub messages: bool,
}

impl Trace {
    pub fn new(capacity: usize) -> Trace {
        Trace {
            events: VecDeque::new(),
            capacity,
            dropped: 0,
            messages: false,
        }
    }

    pub fn push(&mut self, now: u64, event: Event) {
        if self.capacity != 0 && self.events.len() == self.capacity {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back((now, event));
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.dropped > 0 {
            out.push_str(&format!(
                "  ({} earlier events not kept; the replay command with SIM_TRACE=all prints every one)\n",
                self.dropped
            ));
        }
        for (t, e) in &self.events {
            out.push_str(&format!("  t={t:>6}ms  {e}\n"));
        }
        out
    }
}
