//! Leader election (§5.2, §5.4.1) with PreVote (§9.6 of the thesis) and
//! leadership transfer (§3.10).

use super::raft::{Campaign, Raft};
use super::types::{MessageBody, NodeId, Role};

impl Raft {
    /// Starts an election of the given kind and asks every voter.
    pub(super) fn campaign(&mut self, kind: Campaign) {
        if !self.promotable() {
            return;
        }
        let (vote_term, pre_vote) = match kind {
            Campaign::PreElection => {
                self.become_pre_candidate();
                (self.term + 1, true)
            }
            Campaign::Election | Campaign::Transfer => {
                self.become_candidate();
                (self.term, false)
            }
        };
        tracing::debug!(
            member = self.id,
            term = vote_term,
            pre_vote,
            "starting election"
        );
        // Our own vote: a single-voter cluster wins at once.
        self.votes.insert(self.id, true);
        if self.tally_won() {
            self.election_won();
            return;
        }
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term();
        let voters: Vec<NodeId> = self.membership.voters().filter(|v| *v != self.id).collect();
        for to in voters {
            self.send_with_term(
                to,
                vote_term,
                MessageBody::RequestVote {
                    last_log_index,
                    last_log_term,
                    pre_vote,
                    leader_transfer: kind == Campaign::Transfer,
                },
            );
        }
    }

    /// Figure 2, RequestVote receiver: grant if we have not voted for someone
    /// else in this term and the candidate's log is at least as up-to-date as
    /// ours. A granted real vote is persisted before the answer leaves
    /// (`Ready` puts the hard state before the messages).
    pub(super) fn handle_request_vote(&mut self, m: super::types::Message) {
        let MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            pre_vote,
            ..
        } = m.body
        else {
            return;
        };
        let can_vote = self.voted_for == m.from
            || (self.voted_for == 0 && self.leader_id == 0)
            // A PreVote for a future term binds nothing in ours.
            || (pre_vote && m.term > self.term);
        let granted = can_vote && self.log.is_up_to_date(last_log_index, last_log_term);
        if granted {
            // A granted PreVote answers in the candidate's future term; a
            // granted vote in the (now equal) current term.
            self.send_with_term(
                m.from,
                m.term,
                MessageBody::RequestVoteResponse {
                    vote_granted: true,
                    pre_vote,
                },
            );
            if !pre_vote {
                self.voted_for = m.from;
                // Figure 2: granting a vote resets the election timer.
                self.reset_election_timer();
            }
        } else {
            self.send(
                m.from,
                MessageBody::RequestVoteResponse {
                    vote_granted: false,
                    pre_vote,
                },
            );
        }
    }

    pub(super) fn handle_vote_response(&mut self, from: NodeId, granted: bool) {
        if !self.membership.is_voter(from) {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        if self.tally_won() {
            self.election_won();
        } else if self.tally_lost() {
            // A majority said no: wait for a leader or the next timeout.
            self.become_follower(self.term, 0);
        }
    }

    fn tally_won(&self) -> bool {
        let yes = self
            .membership
            .voters()
            .filter(|v| self.votes.get(v) == Some(&true))
            .count();
        yes >= self.quorum()
    }

    fn tally_lost(&self) -> bool {
        let no = self
            .membership
            .voters()
            .filter(|v| self.votes.get(v) == Some(&false))
            .count();
        no > self.membership.voter_count() - self.quorum()
    }

    fn election_won(&mut self) {
        match self.role {
            Role::PreCandidate => self.campaign(Campaign::Election),
            Role::Candidate => {
                tracing::info!(member = self.id, term = self.term, "elected leader");
                self.become_leader();
            }
            _ => {}
        }
    }
}
