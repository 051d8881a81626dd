//! Clients of the simulated cluster. A writer sends one command at a time to
//! the member it believes leads, follows `NotLeader` hints, and retries the
//! same command (same number, so it applies once) when its answer does not
//! come: the member crashed, another entry took its index, or it timed out.
//! A reader asks for ReadIndex reads and has each answer checked against the
//! writes committed before it asked.

use std::collections::BTreeMap;

use kuberaft_node::raft::{Index, NodeId, ProposeError};
use rand::RngExt;

use super::checker::Violation;
use super::cluster::Cluster;
use super::state_machine::{Applied, Command, REGISTERS};

#[derive(Clone, Copy, Debug)]
enum State {
    /// Will send (or resend) the current command at `at`.
    Sending { at: u64 },
    /// The member accepted the command at `index` and will answer once it
    /// applies that index.
    Waiting {
        node: NodeId,
        incarnation: u32,
        index: Index,
        deadline: u64,
    },
    /// Answered, and told to send nothing new.
    Idle,
}

pub struct Writer {
    pub id: u32,
    seq: u32,
    state: State,
    hint: NodeId,
    think_max: u64,
    timeout: u64,
    /// Whether the current command was sent at least once.
    attempted: bool,
}

impl Writer {
    pub fn new(id: u32, think_max: u64, timeout: u64) -> Writer {
        Writer {
            id,
            seq: 1,
            state: State::Sending { at: 0 },
            hint: 0,
            think_max,
            timeout,
            attempted: false,
        }
    }

    /// The command this writer is trying to get committed, unless idle.
    pub fn pending(&self) -> Option<(u32, u32)> {
        match self.state {
            State::Idle => None,
            _ => Some((self.id, self.seq)),
        }
    }

    /// Sends the command if it is time to.
    pub fn act(&mut self, c: &mut Cluster) -> Result<(), Violation> {
        match self.state {
            State::Sending { at } if at <= c.now => {}
            State::Waiting {
                node,
                incarnation,
                deadline,
                ..
            } => {
                let lost = !c.is_up(node) || c.nodes[&node].incarnation != incarnation;
                if lost || deadline <= c.now {
                    self.state = State::Sending { at: c.now };
                }
                return Ok(());
            }
            _ => return Ok(()),
        }
        let target = if self.hint != 0 && c.is_responsive(self.hint) {
            self.hint
        } else {
            let up: Vec<NodeId> = c
                .nodes
                .keys()
                .copied()
                .filter(|id| c.is_responsive(*id))
                .collect();
            if up.is_empty() {
                self.state = State::Sending { at: c.now + 10 };
                return Ok(());
            }
            up[c.rng.random_range(0..up.len())]
        };
        let command = Command {
            client: self.id,
            seq: self.seq,
            key: (self.seq as usize % REGISTERS) as u8,
            value: self.id * 1_000_000 + self.seq,
        };
        let node = c.nodes.get_mut(&target).expect("responsive");
        let incarnation = node.incarnation;
        self.attempted = true;
        match node.propose(command.encode(), &mut c.ck)? {
            Ok(index) => {
                self.hint = target;
                self.state = State::Waiting {
                    node: target,
                    incarnation,
                    index,
                    deadline: c.now + self.timeout,
                };
            }
            Err(ProposeError::NotLeader { leader_id }) => {
                self.hint = leader_id;
                let at = c.now + c.rng.random_range(1..=10);
                self.state = State::Sending { at };
            }
            Err(_) => {
                let at = c.now + c.rng.random_range(5..=30);
                self.state = State::Sending { at };
            }
        }
        Ok(())
    }

    /// Sees an applied entry; answers the client if it is the one it waits for.
    pub fn on_applied(
        &mut self,
        node: NodeId,
        incarnation: u32,
        index: Index,
        applied: &Applied,
        c: &mut Cluster,
        more: bool,
    ) {
        let State::Waiting {
            node: n,
            incarnation: inc,
            index: i,
            ..
        } = self.state
        else {
            return;
        };
        if (n, inc, i) != (node, incarnation, index) {
            return;
        }
        let ours = matches!(applied, Applied::Command { command, .. }
            if command.client == self.id && command.seq == self.seq);
        if ours {
            c.ck.stats.client_answers += 1;
            self.seq += 1;
            self.attempted = false;
            self.state = if more {
                State::Sending {
                    at: c.now + c.rng.random_range(0..=self.think_max),
                }
            } else {
                State::Idle
            };
        } else {
            // Another entry took our index: the command was lost; resend it.
            self.state = State::Sending { at: c.now };
        }
    }

    /// Sends nothing new: a command not yet sent is dropped, one already
    /// sent is still retried until it is answered.
    pub fn stop_new(&mut self) {
        if !self.attempted {
            self.state = State::Idle;
        }
    }
}

/// Issues ReadIndex reads to the leader and checks their answers.
pub struct Reader {
    next_ctx: u64,
    next_at: u64,
    every: u64,
    /// ctx → the commit index when the read was asked.
    asked: BTreeMap<u64, Index>,
}

impl Reader {
    pub fn new(every: u64) -> Reader {
        Reader {
            next_ctx: 1,
            next_at: 0,
            every,
            asked: BTreeMap::new(),
        }
    }

    pub fn act(&mut self, c: &mut Cluster) -> Result<(), Violation> {
        if self.every == 0 || c.now < self.next_at {
            return Ok(());
        }
        self.next_at = c.now + c.rng.random_range(1..=self.every);
        let Some(leader) = c.leader() else {
            return Ok(());
        };
        if !c.is_responsive(leader) {
            return Ok(());
        }
        let ctx = self.next_ctx;
        let required = c.ck.commit_index();
        let node = c.nodes.get_mut(&leader).expect("leader");
        if node.read_index(ctx, &mut c.ck)?.is_ok() {
            self.next_ctx += 1;
            self.asked.insert(ctx, required);
        }
        Ok(())
    }

    pub fn on_answer(
        &mut self,
        node: NodeId,
        ctx: u64,
        index: Index,
        c: &mut Cluster,
    ) -> Result<(), Violation> {
        match self.asked.remove(&ctx) {
            Some(required) => c.ck.on_read(node, ctx, index, required),
            None => Err(Violation(format!(
                "member {node} answers read {ctx}, which was never asked or was answered before"
            ))),
        }
    }
}
