//! Log replication (§5.3), commitment (§5.4.2) and snapshot installation (§7).

use super::errors::StepError;
use super::log::AppendOutcome;
use super::progress::ReplicationState;
use super::raft::Raft;
use super::types::{Entry, Index, Message, MessageBody, NodeId, SnapshotMeta, Term};

/// How many heartbeats without progress before a pipelined follower is
/// assumed to have lost messages and is probed again.
const STALLED_HEARTBEATS: u32 = 2;

impl Raft {
    // --------------------------------------------------------------- leader

    /// Sends `to` whatever it is missing, as far as its progress allows:
    /// one probe, a window of pipelined appends, or a snapshot.
    pub(super) fn send_append(&mut self, to: NodeId) {
        loop {
            let Some(pr) = self.progress.get(&to) else {
                return;
            };
            if pr.is_paused() {
                return;
            }
            let next = pr.next_index;
            let replicating = pr.state == ReplicationState::Replicate;
            let known_to_match = pr.match_index + 1 >= next;
            if next < self.log.first_index() {
                // §7: the entries it needs are compacted; send the snapshot.
                self.send_snapshot(to);
                return;
            }
            let prev_log_index = next - 1;
            let Some(prev_log_term) = self.log.term(prev_log_index) else {
                return;
            };
            let entries = self.log.entries_from(next, self.cfg.max_append_bytes);
            if entries.is_empty() && (replicating || known_to_match) {
                // Nothing to send. An empty probe is worth sending only to
                // learn whether the follower holds `next - 1`; one already
                // known to would answer without progress, re-arming the next
                // empty probe: a ping-pong for ever.
                return;
            }
            let last = entries.last().map_or(prev_log_index, |e| e.index);
            let seq = self.reads.seq();
            let leader_commit = self.log.committed;
            if let Some(pr) = self.progress.get_mut(&to) {
                pr.sent(last);
            }
            self.send(
                to,
                MessageBody::AppendEntries {
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                    seq,
                },
            );
            if !replicating {
                return;
            }
        }
    }

    /// §7: sends `to` the snapshot the log starts from; the transport
    /// streams its data and reports the outcome (`report_snapshot`).
    fn send_snapshot(&mut self, to: NodeId) {
        let snapshot = self.log.snapshot().clone();
        let pending = snapshot.last_included_index;
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.become_snapshot(pending);
        }
        tracing::debug!(member = self.id, to, index = pending, "sending snapshot");
        self.send(to, MessageBody::InstallSnapshot { snapshot });
    }

    pub(super) fn broadcast_append(&mut self) {
        let ids: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|i| *i != self.id)
            .collect();
        for id in ids {
            self.send_append(id);
        }
    }

    /// §5.2: leaders send periodic heartbeats to maintain their authority.
    /// A follower still being probed gets its next probe instead, which
    /// serves as the heartbeat too; a pipeline that has made no progress for a
    /// while is assumed to have lost messages and falls back to probing.
    pub(super) fn broadcast_heartbeat(&mut self) {
        let last = self.log.last_index();
        let ids: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|i| *i != self.id)
            .collect();
        for id in ids {
            let Some(pr) = self.progress.get_mut(&id) else {
                continue;
            };
            if pr.state == ReplicationState::Replicate && pr.match_index < pr.next_index - 1 {
                if pr.match_index == pr.match_at_last_heartbeat {
                    pr.stalled_heartbeats += 1;
                    if pr.stalled_heartbeats >= STALLED_HEARTBEATS {
                        let next = pr.match_index + 1;
                        pr.become_probe(next);
                    }
                } else {
                    pr.stalled_heartbeats = 0;
                }
            } else {
                pr.stalled_heartbeats = 0;
            }
            pr.match_at_last_heartbeat = pr.match_index;
            if pr.state == ReplicationState::Probe {
                pr.probe_sent = false;
                if pr.next_index <= last {
                    self.send_append(id);
                    continue;
                }
            }
            self.send_heartbeat(id);
        }
    }

    /// A heartbeat to every member, without entries, for a ReadIndex round.
    pub(super) fn broadcast_heartbeat_only(&mut self) {
        let ids: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|i| *i != self.id)
            .collect();
        for id in ids {
            self.send_heartbeat(id);
        }
    }

    /// An AppendEntries without entries whose consistency check is at the
    /// follower's match index, which the leader knows matches; it carries the
    /// commit index and the ReadIndex round.
    fn send_heartbeat(&mut self, to: NodeId) {
        let Some(pr) = self.progress.get(&to) else {
            return;
        };
        let (prev_log_index, prev_log_term) = match self.log.term(pr.match_index) {
            Some(t) => (pr.match_index, t),
            // Compacted here: index 0 matches every log.
            None => (0, 0),
        };
        let seq = self.reads.seq();
        let leader_commit = self.log.committed;
        self.send(
            to,
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries: Vec::new(),
                leader_commit,
                seq,
            },
        );
    }

    pub(super) fn step_leader(&mut self, m: Message) -> Result<(), StepError> {
        match m.body {
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                reject_index,
                conflict_term,
                conflict_index,
                seq,
                ..
            } => {
                // A leader's log only grows during its term, and followers
                // acknowledge only what it sent them: a claim beyond its last
                // index is forged or corrupt, and counting it would commit
                // entries the follower does not hold.
                if success && match_index > self.log.last_index() {
                    return Err(StepError::Malformed(format!(
                        "member {} acknowledges index {match_index}, beyond the leader's last index {}",
                        m.from,
                        self.log.last_index()
                    )));
                }
                self.handle_append_response(
                    m.from,
                    success,
                    match_index,
                    reject_index,
                    conflict_term,
                    conflict_index,
                    seq,
                );
                Ok(())
            }
            MessageBody::AppendEntries { .. } | MessageBody::InstallSnapshot { .. } => {
                // Two leaders in one term would break Election Safety.
                Err(StepError::Malformed(format!(
                    "member {} claims leadership of term {}, which this member leads",
                    m.from, m.term
                )))
            }
            _ => Ok(()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        match_index: Index,
        reject_index: Index,
        conflict_term: Term,
        conflict_index: Index,
        seq: u64,
    ) {
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if success {
            let matched = match_index.min(last);
            let advanced = pr.maybe_update(matched);
            match pr.state {
                // The probe found where the logs agree: stream from there.
                // Only progress shows that: an answer that tells nothing new
                // may be a late one, to a message of an earlier stream, and
                // streaming a whole window again for each of those multiplies
                // the traffic when messages are reordered.
                ReplicationState::Probe if advanced => pr.become_replicate(),
                // The follower is reachable: the next probe may go out now.
                ReplicationState::Probe => pr.probe_sent = false,
                // Entries that were in flight when the leader chose the
                // snapshot brought the follower past it: the stream would
                // only send data the follower already holds.
                ReplicationState::Snapshot { pending } if pr.match_index >= pending => {
                    pr.become_replicate();
                    self.cancelled_snapshots.push(from);
                }
                _ => {}
            }
            if advanced {
                self.maybe_commit();
            }
            if self.lead_transferee == from
                && self
                    .progress
                    .get(&from)
                    .is_some_and(|p| p.match_index == last)
            {
                self.send(from, MessageBody::TimeoutNow);
            }
        } else {
            // Answers to messages sent before the leader last moved
            // `next_index` say nothing about where the logs now differ. (A
            // refusal at index 0 comes only from a member that holds nothing,
            // which has matched nothing either.)
            let stale = (pr.match_index > 0 && reject_index <= pr.match_index)
                || matches!(pr.state, ReplicationState::Snapshot { .. })
                || (pr.state == ReplicationState::Probe && reject_index + 1 != pr.next_index);
            if !stale && conflict_term == 0 && conflict_index == 0 {
                // The follower holds no configuration (it joined with an
                // empty disk): only the snapshot can start its log.
                self.send_snapshot(from);
            } else if !stale {
                // §5.3, end: skip back a whole conflicting term at a time.
                let hinted = if conflict_term > 0 {
                    self.log
                        .last_index_of_term(conflict_term, reject_index)
                        .map_or(conflict_index, |i| i + 1)
                } else {
                    conflict_index
                };
                let pr = self.progress.get_mut(&from).expect("checked above");
                let next = hinted.min(reject_index).max(pr.match_index + 1);
                pr.become_probe(next);
            }
        }
        if self.membership.is_voter(from) {
            self.reads.ack(from, seq);
            self.release_reads();
        }
        self.send_append(from);
    }

    /// §5.3, §5.4.2: the highest index stored on a majority of voters is
    /// committed, but only if it belongs to the current term (Figure 8);
    /// earlier entries are then committed with it.
    pub(super) fn maybe_commit(&mut self) -> bool {
        let mut matched: Vec<Index> = self
            .membership
            .voters()
            .map(|v| self.progress.get(&v).map_or(0, |p| p.match_index))
            .collect();
        if matched.is_empty() {
            return false;
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let index = matched[self.quorum() - 1];
        if index > self.log.committed && self.log.term(index) == Some(self.term) {
            self.log.commit_to(index);
            self.on_commit_advanced();
            true
        } else {
            false
        }
    }

    /// The leader persisted its log up to `index`.
    pub(super) fn leader_persisted(&mut self, index: Index) {
        let id = self.id;
        if let Some(pr) = self.progress.get_mut(&id) {
            pr.maybe_update(index);
        }
        self.maybe_commit();
    }

    // ------------------------------------------------------------- follower

    /// Figure 2, AppendEntries receiver.
    pub(super) fn handle_append_entries(
        &mut self,
        from: NodeId,
        mut prev_log_index: Index,
        mut prev_log_term: Term,
        entries: &[Entry],
        leader_commit: Index,
        seq: u64,
    ) -> Result<(), StepError> {
        if !self.has_configuration() {
            // A member that joined with an empty disk has no configuration,
            // not even the bootstrap one that index 0 of every other log
            // stands for, so no consistency check can pass here: entries
            // applied on top of nothing would give it a configuration
            // without the founding voters. It asks for the snapshot instead.
            self.send(
                from,
                MessageBody::AppendEntriesResponse {
                    success: false,
                    match_index: 0,
                    reject_index: prev_log_index,
                    conflict_term: 0,
                    conflict_index: 0,
                    last_log_index: 0,
                    seq,
                },
            );
            return Ok(());
        }
        let committed = self.log.committed;
        let mut entries = entries;
        if prev_log_index < committed {
            // Everything up to our commit index is in the leader's log too
            // (Leader Completeness, §5.4), so only what follows it matters.
            let skip = entries.iter().take_while(|e| e.index <= committed).count();
            entries = &entries[skip..];
            prev_log_index = committed;
            prev_log_term = self.log.term(committed).unwrap_or(0);
        }
        let old_last = self.log.last_index();
        match self.log.try_append(prev_log_index, prev_log_term, entries) {
            AppendOutcome::Appended {
                last_new_index,
                truncated_from,
            } => {
                if let Some(from_index) = truncated_from {
                    self.forget_membership_from(from_index);
                }
                let first_new = truncated_from.unwrap_or(old_last + 1);
                if first_new <= last_new_index {
                    self.note_membership_entries(first_new, last_new_index);
                }
                // Figure 2, step 5: commitIndex = min(leaderCommit, index of
                // last new entry).
                self.log.commit_to(leader_commit.min(last_new_index));
                let last_log_index = self.log.last_index();
                self.send(
                    from,
                    MessageBody::AppendEntriesResponse {
                        success: true,
                        match_index: last_new_index,
                        reject_index: 0,
                        conflict_term: 0,
                        conflict_index: 0,
                        last_log_index,
                        seq,
                    },
                );
                Ok(())
            }
            AppendOutcome::Mismatch => {
                let last = self.log.last_index();
                let (conflict_term, conflict_index) = if prev_log_index > last {
                    (0, last + 1)
                } else {
                    let t = self.log.term(prev_log_index).unwrap_or(0);
                    (
                        t,
                        self.log.first_index_of_term(t, prev_log_index, committed),
                    )
                };
                self.send(
                    from,
                    MessageBody::AppendEntriesResponse {
                        success: false,
                        match_index: 0,
                        reject_index: prev_log_index,
                        conflict_term,
                        conflict_index,
                        last_log_index: last,
                        seq,
                    },
                );
                Ok(())
            }
            AppendOutcome::ConflictsWithCommitted { index } => {
                Err(StepError::ConflictsWithCommitted { from, index })
            }
        }
    }

    /// §7, InstallSnapshot receiver. The snapshot's data has already arrived
    /// beside the message; accepting it here makes the next `Ready` carry it
    /// so the caller installs it before anything else.
    pub(super) fn handle_install_snapshot(&mut self, from: NodeId, snapshot: SnapshotMeta) {
        let index = snapshot.last_included_index;
        // A member without a configuration takes any snapshot, even one of
        // index 0: that is the one holding the founding configuration.
        let uninitialized = !self.has_configuration();
        let match_index = if index <= self.log.committed && !uninitialized {
            // Old news: we already have all of it.
            self.log.committed
        } else if self.log.matches(index, snapshot.last_included_term) && !uninitialized {
            // Step 6: our log already holds the snapshot's last entry; keep
            // the entries after it.
            self.log.commit_to(index);
            index
        } else {
            // Step 7-8: discard the whole log and take the snapshot.
            tracing::info!(
                member = self.id,
                index,
                term = snapshot.last_included_term,
                "installing snapshot"
            );
            self.membership = snapshot.membership.clone();
            self.membership_log.clear();
            self.log.install_snapshot(snapshot);
            index
        };
        let last_log_index = self.log.last_index();
        self.send(
            from,
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index,
                reject_index: 0,
                conflict_term: 0,
                conflict_index: 0,
                last_log_index,
                seq: 0,
            },
        );
    }
}
