//! The invariants of Raft (Figure 3 of the paper), checked after every input
//! a member handles and every `Ready` it hands out.
//!
//! The checker keeps the ground truth the members cannot see: the leader of
//! every term, every entry ever written to a durable log, and the committed
//! log itself — built from the members' commit indexes as they advance, and
//! never allowed to change. Each check is incremental (it looks only at what
//! changed), so it can run after every step of thousands of runs.
//!
//! - **Election Safety**: at most one member is ever leader of a term.
//! - **Log Matching**: an (index, term) pair names one entry and one previous
//!   term everywhere, so two logs that share it share the prefix before it.
//! - **Leader Completeness**: a new leader's log holds every entry committed
//!   in an earlier term.
//! - **Commitment rule** (§5.4.2, Figure 8): a leader's commit index moves
//!   only to an entry of its own term.
//! - **State Machine Safety**: every applied entry is the committed entry of
//!   its index, and each member's history hash equals the committed log's,
//!   so applied sequences are prefixes of one another.
//! - **Committed entries are final**: the committed log only grows; a
//!   member's commit index only moves over entries equal to it; a durable log
//!   never drops an entry at or below the member's commit index nor holds
//!   one there that differs from it; snapshots describe the committed state.
//! - **Durability before speech**: a vote or an acknowledgement of term `T`
//!   leaves only once what it promises is on disk, or the disk has moved to
//!   a later term (which keeps the promise: nobody acts in an older term); a
//!   term is persisted before anything is said in it; nobody votes twice in
//!   a term; `must_sync` is set whenever the term, the vote, the log or the
//!   snapshot changed.
//! - **Membership** (M1–M3): see `config_model.rs`.
//! - **Reads**: a ReadIndex answer reflects every write committed before the
//!   read was asked (linearizability of reads, §6.4 of the thesis).

use std::collections::BTreeMap;

use kuberaft_node::raft::{
    Entry, EntryKind, HardState, Index, Message, MessageBody, NodeId, RawNode, Ready, Role, Term,
};

use super::config_model::{ConfigModel, majorities_always_intersect, voter_distance};
use super::disk::{Disk, SnapshotImage};
use super::state_machine::{Command, chain, entry_digest};
use super::trace::{Event, Trace};

/// A broken invariant (or a harness that cannot continue), in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! violation {
    ($($arg:tt)*) => { Err(Violation(format!($($arg)*))) };
}

/// What the checker last saw of one member (in its current incarnation).
#[derive(Clone, Copy, Debug, Default)]
struct View {
    term: Term,
    leading: bool,
    commit: Index,
}

/// Counts of what a run exercised, to show the faults actually happened.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub elections: u64,
    pub committed: u64,
    pub conf_changes: u64,
    pub snapshots_installed: u64,
    /// In-flight snapshot streams stopped because their follower caught up.
    pub snapshots_cancelled: u64,
    pub compactions: u64,
    pub truncations: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub transfers: u64,
    pub reads: u64,
    pub client_answers: u64,
    pub messages: u64,
    pub heal_ms: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.elections += o.elections;
        self.committed += o.committed;
        self.conf_changes += o.conf_changes;
        self.snapshots_installed += o.snapshots_installed;
        self.snapshots_cancelled += o.snapshots_cancelled;
        self.compactions += o.compactions;
        self.truncations += o.truncations;
        self.crashes += o.crashes;
        self.partitions += o.partitions;
        self.transfers += o.transfers;
        self.reads += o.reads;
        self.client_answers += o.client_answers;
        self.messages += o.messages;
        self.heal_ms = self.heal_ms.max(o.heal_ms);
    }
}

pub struct Checker {
    /// Virtual time, for the trace.
    pub now: u64,
    pub trace: Trace,
    pub stats: Stats,
    /// Election Safety: the leader of each term.
    leaders: BTreeMap<Term, NodeId>,
    /// Log Matching: for each index, every (term, digest, previous term)
    /// written to some durable log.
    written: Vec<Vec<(Term, u64, Term)>>,
    /// The committed log; `committed[i - 1]` is the entry at index `i`.
    committed: Vec<Entry>,
    /// `commit_terms[i - 1]`: the term of the leader that committed index `i`
    /// (the member whose commit index first reached it).
    commit_terms: Vec<Term>,
    /// `history[i]`: the history hash after applying entries `1..=i`.
    history: Vec<u64>,
    /// Committed membership entries: (index, configuration from then on).
    configs: Vec<(Index, ConfigModel)>,
    views: BTreeMap<NodeId, View>,
}

impl Checker {
    pub fn new(initial: ConfigModel, trace: Trace) -> Checker {
        Checker {
            now: 0,
            trace,
            stats: Stats::default(),
            leaders: BTreeMap::new(),
            written: vec![Vec::new()],
            committed: Vec::new(),
            commit_terms: Vec::new(),
            history: vec![0],
            configs: vec![(0, initial)],
            views: BTreeMap::new(),
        }
    }

    pub fn event(&mut self, e: Event) {
        self.trace.push(self.now, e);
    }

    /// The highest index known committed anywhere.
    pub fn commit_index(&self) -> Index {
        self.committed.len() as Index
    }

    pub fn committed_entry(&self, index: Index) -> Option<&Entry> {
        index
            .checked_sub(1)
            .and_then(|i| self.committed.get(i as usize))
    }

    /// `G`: the configuration of the latest committed membership entry.
    pub fn committed_config(&self) -> &ConfigModel {
        &self.configs.last().expect("the initial configuration").1
    }

    fn config_at(&self, index: Index) -> &ConfigModel {
        let i = self.configs.partition_point(|(at, _)| *at <= index);
        &self.configs[i.saturating_sub(1)].1
    }

    // ------------------------------------------------------------ observing

    /// A member (re)started from its disk: a fresh incarnation.
    pub fn on_restart(&mut self, id: NodeId, raw: &RawNode) -> Result<(), Violation> {
        self.views.insert(
            id,
            View {
                term: raw.term(),
                leading: false,
                commit: raw.commit_index(),
            },
        );
        // A restarted member's commit index came from its disk; it must name
        // committed entries it still holds.
        let commit = raw.commit_index();
        if commit > self.commit_index() {
            return violation!(
                "member {id} restarted with commit index {commit}, beyond the committed log ({})",
                self.commit_index()
            );
        }
        if let Some(e) = raw.entry(commit)
            && Some(e) != self.committed_entry(commit)
        {
            return violation!(
                "member {id} restarted with entry {commit} (term {}) as committed, but the committed entry there has term {:?}",
                e.term,
                self.committed_entry(commit).map(|c| c.term)
            );
        }
        Ok(())
    }

    /// Looks at a member after it handled one input or one `Ready`.
    pub fn observe(&mut self, id: NodeId, raw: &RawNode) -> Result<(), Violation> {
        let term = raw.term();
        let role = raw.role();
        let commit = raw.commit_index();
        let view = self.views.get(&id).copied().unwrap_or_default();
        if term < view.term {
            return violation!("member {id}'s term went back from {} to {term}", view.term);
        }
        let leading = role == Role::Leader;
        if leading {
            match self.leaders.get(&term) {
                Some(&l) if l != id => {
                    return violation!(
                        "Election Safety: members {l} and {id} both lead term {term}"
                    );
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(term, id);
                    self.stats.elections += 1;
                    self.event(Event::Elected {
                        node: id,
                        term,
                        last_index: raw.last_index(),
                    });
                    self.check_new_leader(id, raw)?;
                }
            }
        } else if view.leading {
            self.event(Event::SteppedDown {
                node: id,
                term: view.term,
            });
        }
        if commit < view.commit {
            return violation!(
                "member {id}'s commit index went back from {} to {commit}",
                view.commit
            );
        }
        if commit > view.commit {
            if leading {
                self.check_commitment_rule(id, raw, commit)?;
            }
            // A commit that extends the committed log is a decision (M2);
            // one below it is a member learning what was decided.
            if leading && commit > self.commit_index() {
                self.check_leader_commit(id, raw, commit)?;
            }
            self.check_commit_advance(id, raw, view.commit, commit)?;
        }
        self.views.insert(
            id,
            View {
                term,
                leading,
                commit,
            },
        );
        Ok(())
    }

    /// Leader Completeness (Figure 3: an entry committed in a term is in the
    /// log of every leader of a later term), and M1 for the configuration a
    /// current leader was elected in.
    ///
    /// A leader of an older term can still appear late — a member paused
    /// holding the votes of an old election counts them when it resumes — but
    /// every member it needs has moved on, so it can decide nothing; it owes
    /// only the entries committed before its term.
    fn check_new_leader(&mut self, id: NodeId, raw: &RawNode) -> Result<(), Violation> {
        let term = raw.term();
        let current = self.commit_terms.last().is_none_or(|t| *t < term);
        let c = if current {
            self.commit_index()
        } else {
            self.commit_terms.partition_point(|t| *t < term) as Index
        };
        if raw.last_index() < c {
            return violation!(
                "Leader Completeness: member {id} leads term {term} with last index {}, but entries up to {c} are committed",
                raw.last_index()
            );
        }
        let snap = raw.status().snapshot_index;
        if snap > self.commit_index() {
            return violation!(
                "member {id} holds a snapshot of index {snap}, beyond the committed log ({})",
                self.commit_index()
            );
        }
        if snap > 0 && snap <= c {
            let t = raw.snapshot_meta_at(snap).map(|m| m.last_included_term);
            if t != self.committed_entry(snap).map(|e| e.term) {
                return violation!(
                    "Leader Completeness: member {id} (leader of {term}) has a snapshot of index {snap} with term {t:?}, but the committed entry there has term {}",
                    self.committed[snap as usize - 1].term
                );
            }
        }
        for i in snap + 1..=c {
            let want = &self.committed[i as usize - 1];
            match raw.entry(i) {
                Some(e) if e == want => {}
                got => {
                    return violation!(
                        "Leader Completeness: member {id} leads term {term} but its entry {i} is {:?}, not the committed one (term {})",
                        got.map(|e| e.term),
                        want.term
                    );
                }
            }
        }
        if !current {
            return Ok(());
        }
        // M1: its configuration is G plus at most one uncommitted change,
        // and it is the configuration its log defines.
        let g = self.committed_config().clone();
        let mut model = g.clone();
        let mut uncommitted = Vec::new();
        for i in c + 1..=raw.last_index() {
            if let Some(Entry {
                kind: EntryKind::ConfChange(change),
                ..
            }) = raw.entry(i)
            {
                uncommitted.push(i);
                if let Some(next) = model.apply(change) {
                    model = next;
                }
            }
        }
        if uncommitted.len() > 1 {
            return violation!(
                "M1: member {id} leads term {term} with {} uncommitted membership entries ({uncommitted:?}); only one may be pending",
                uncommitted.len()
            );
        }
        let actual = ConfigModel::of(raw.membership());
        if actual != model {
            return violation!(
                "M1: member {id} leads term {term} with voters {:?} learners {:?}, but its log defines voters {:?} learners {:?}",
                actual.voters,
                actual.learners,
                model.voters,
                model.learners
            );
        }
        if voter_distance(&actual.voters, &g.voters) > 1 {
            return violation!(
                "M1: member {id} leads term {term} with voters {:?}, more than one change from the committed configuration {:?}",
                actual.voters,
                g.voters
            );
        }
        Ok(())
    }

    /// §5.4.2 and Figure 8: a leader moves its commit index only to an entry
    /// of its own term; older entries are committed with it, never by
    /// counting their replicas (a majority may hold an old entry that a later
    /// leader still overwrites). Checked at the decision, because the
    /// overwrite it allows needs a rare history to show.
    fn check_commitment_rule(
        &self,
        id: NodeId,
        raw: &RawNode,
        commit: Index,
    ) -> Result<(), Violation> {
        let term = raw.term();
        match raw.entry(commit) {
            Some(e) if e.term == term => Ok(()),
            got => violation!(
                "§5.4.2: member {id} (leader of term {term}) commits up to {commit}, an entry of term {:?}, by counting replicas",
                got.map(|e| e.term)
            ),
        }
    }

    /// M2: a leader commits only with a configuration whose majorities meet
    /// those of the committed configuration.
    fn check_leader_commit(
        &mut self,
        id: NodeId,
        raw: &RawNode,
        commit: Index,
    ) -> Result<(), Violation> {
        let voters = ConfigModel::of(raw.membership()).voters;
        let g = &self.committed_config().voters;
        if !majorities_always_intersect(&voters, g) {
            return violation!(
                "M2: member {id} (leader of term {}) commits up to {commit} with voters {voters:?}, whose majorities need not meet those of the committed configuration {g:?}",
                raw.term()
            );
        }
        Ok(())
    }

    /// A member's commit index moved from `from` to `to`: every newly
    /// committed entry it holds must be the committed one, and entries beyond
    /// the committed log extend it.
    fn check_commit_advance(
        &mut self,
        id: NodeId,
        raw: &RawNode,
        from: Index,
        to: Index,
    ) -> Result<(), Violation> {
        let before = self.commit_index();
        for i in from + 1..=to {
            let Some(e) = raw.entry(i) else {
                // Covered by a snapshot; `on_snapshot` checked it.
                if i > self.commit_index() {
                    return violation!(
                        "member {id} commits index {i} without holding it, beyond the committed log ({})",
                        self.commit_index()
                    );
                }
                continue;
            };
            if let Some(c) = self.committed_entry(i) {
                if c != e {
                    return violation!(
                        "State Machine Safety: member {id} commits entry {i} of term {}, but entry {i} of term {} was committed before",
                        e.term,
                        c.term
                    );
                }
                continue;
            }
            debug_assert_eq!(i, self.commit_index() + 1);
            self.extend_committed(e.clone(), raw.term());
        }
        let after = self.commit_index();
        if after > before {
            let term = self.committed[after as usize - 1].term;
            self.event(Event::Committed {
                by: id,
                index: after,
                term,
            });
        }
        Ok(())
    }

    fn extend_committed(&mut self, e: Entry, commit_term: Term) {
        let prev = *self.history.last().expect("history[0]");
        self.history.push(chain(prev, &e));
        let index = e.index;
        if let EntryKind::ConfChange(change) = &e.kind {
            let next = self.committed_config().apply(change);
            if let Some(next) = next {
                self.configs.push((index, next));
            }
            self.stats.conf_changes += 1;
            self.event(Event::ConfCommitted {
                index,
                change: change.clone(),
            });
        }
        self.committed.push(e);
        self.commit_terms.push(commit_term);
        self.stats.committed += 1;
    }

    /// M3: a leader appended a membership entry at `index`.
    pub fn on_conf_proposed(
        &mut self,
        id: NodeId,
        raw: &RawNode,
        index: Index,
    ) -> Result<(), Violation> {
        let term = raw.term();
        let first_of_term = self.committed.partition_point(|e| e.term < term);
        if self
            .committed
            .get(first_of_term)
            .is_none_or(|e| e.term != term)
        {
            return violation!(
                "M3: member {id} proposes a membership change at {index} in term {term} before any entry of term {term} is committed"
            );
        }
        for i in raw.commit_index() + 1..index {
            if let Some(Entry {
                kind: EntryKind::ConfChange(c),
                ..
            }) = raw.entry(i)
            {
                return violation!(
                    "M3: member {id} proposes a membership change at {index} while \"{c}\" at {i} is not committed"
                );
            }
        }
        if let Some(Entry {
            kind: EntryKind::ConfChange(change),
            ..
        }) = raw.entry(index)
        {
            self.event(Event::ConfProposed {
                leader: id,
                index,
                change: change.clone(),
            });
        } else {
            return violation!(
                "member {id} accepted a membership change but holds no such entry at {index}"
            );
        }
        Ok(())
    }

    // ------------------------------------------------------- the disk side

    /// Before a `Ready` is persisted: `must_sync` must cover what changed.
    pub fn on_ready(&mut self, id: NodeId, rd: &Ready, disk: &Disk) -> Result<(), Violation> {
        if rd.must_sync() {
            return Ok(());
        }
        let old = disk.latest_hard_state();
        let changes_vote = rd
            .hard_state
            .is_some_and(|h| h.current_term != old.current_term || h.voted_for != old.voted_for);
        if !rd.entries.is_empty() || rd.snapshot.is_some() || changes_vote {
            return violation!(
                "member {id}'s Ready changes the log, the snapshot, the term or the vote but does not ask for a sync"
            );
        }
        Ok(())
    }

    /// What a truncation from `from` would drop that the member knows to be
    /// committed: the highest such index, which the write must keep
    /// (identically). Entries above the member's own commit index may go,
    /// even committed ones: a member that was away can follow a leader of a
    /// term older than the commit, and the majority that committed them
    /// still holds them.
    pub fn known_committed_from(&self, disk: &Disk, from: Index) -> Option<Index> {
        let hi = disk.last_index().min(disk.latest_hard_state().commit_index);
        (from <= hi).then_some(hi)
    }

    /// After a `Ready`'s entries and hard state were written.
    pub fn on_persist(
        &mut self,
        id: NodeId,
        entries: &[Entry],
        old_hard: HardState,
        new_hard: Option<HardState>,
        must_keep: Option<Index>,
        disk: &Disk,
    ) -> Result<(), Violation> {
        if let Some(h) = new_hard {
            if h.current_term < old_hard.current_term {
                return violation!(
                    "member {id} persisted term {} after term {}",
                    h.current_term,
                    old_hard.current_term
                );
            }
            if h.current_term == old_hard.current_term
                && old_hard.voted_for != 0
                && h.voted_for != old_hard.voted_for
            {
                return violation!(
                    "member {id} voted for {} and then for {} in term {}",
                    old_hard.voted_for,
                    h.voted_for,
                    h.current_term
                );
            }
        }
        if let Some(keep) = must_keep
            && (disk.last_index() < keep || disk.entry(keep) != self.committed_entry(keep))
        {
            return violation!(
                "member {id} truncated its log and lost entry {keep}, which it knew to be committed"
            );
        }
        for e in entries {
            let i = e.index;
            let Some(prev_term) = disk.term(i - 1) else {
                return violation!(
                    "member {id} stored entry {i} without entry {} before it",
                    i - 1
                );
            };
            let digest = entry_digest(e);
            let slot = i as usize;
            if self.written.len() <= slot {
                self.written.resize_with(slot + 1, Vec::new);
            }
            match self.written[slot].iter().find(|(t, _, _)| *t == e.term) {
                Some(&(_, d, p)) => {
                    if d != digest {
                        return violation!(
                            "Log Matching: member {id} stores a different entry at index {i} of term {} than another log does",
                            e.term
                        );
                    }
                    if p != prev_term {
                        return violation!(
                            "Log Matching: entry {i} of term {} follows term {prev_term} on member {id} but term {p} elsewhere",
                            e.term
                        );
                    }
                }
                None => self.written[slot].push((e.term, digest, prev_term)),
            }
            // A member behind may hold a divergent entry where others have
            // committed, until the leader corrects it; never at or below what
            // it knows to be committed.
            if i <= disk.latest_hard_state().commit_index
                && let Some(c) = self.committed_entry(i)
                && c != e
            {
                return violation!(
                    "member {id} stores entry {i} of term {} at or below its commit index, where entry {i} of term {} is committed",
                    e.term,
                    c.term
                );
            }
        }
        Ok(())
    }

    /// A snapshot was installed from the leader or taken locally: it must be
    /// the committed state at its index, with the committed configuration.
    pub fn on_snapshot(&mut self, id: NodeId, image: &SnapshotImage) -> Result<(), Violation> {
        let s = image.meta.last_included_index;
        if s > self.commit_index() {
            return violation!(
                "member {id} holds a snapshot of index {s}, beyond the committed log ({})",
                self.commit_index()
            );
        }
        if image.state.applied_index != s {
            return violation!(
                "member {id}'s snapshot of index {s} holds a state machine at index {}",
                image.state.applied_index
            );
        }
        let want_term = self.committed_entry(s).map_or(0, |e| e.term);
        if image.meta.last_included_term != want_term {
            return violation!(
                "member {id}'s snapshot of index {s} has term {}, but the committed entry there has term {want_term}",
                image.meta.last_included_term
            );
        }
        if image.state.history != self.history[s as usize] {
            return violation!(
                "State Machine Safety: member {id}'s snapshot of index {s} is not the state of the committed log"
            );
        }
        let config = ConfigModel::of(&image.meta.membership);
        if s > 0 && &config != self.config_at(s) {
            return violation!(
                "member {id}'s snapshot of index {s} records voters {:?}, but the committed configuration there has voters {:?}",
                config.voters,
                self.config_at(s).voters
            );
        }
        Ok(())
    }

    /// Before a message leaves: what it promises must be durable.
    pub fn on_send(&mut self, id: NodeId, m: &Message, disk: &Disk) -> Result<(), Violation> {
        self.stats.messages += 1;
        let durable = disk.synced_hard_state();
        // A Ready may answer several inputs of one turn: a vote in term 2 and
        // then, after a term-3 message, a vote in term 3 leave together after
        // term 3 is synced. The term-2 promise still holds — a member in a
        // later term never acts in an earlier one — so what is checked is
        // that the disk records the promise or has moved past its term.
        let moved_on = durable.current_term > m.term;
        match &m.body {
            MessageBody::RequestVote { pre_vote: true, .. }
            | MessageBody::RequestVoteResponse { pre_vote: true, .. } => return Ok(()),
            MessageBody::RequestVoteResponse {
                vote_granted: true, ..
            } if !moved_on && (durable.current_term != m.term || durable.voted_for != m.to) => {
                return violation!(
                    "member {id} grants its vote to {} in term {} but its disk records term {} vote {}",
                    m.to,
                    m.term,
                    durable.current_term,
                    durable.voted_for
                );
            }
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index,
                ..
            } if !moved_on && *match_index > disk.last_index() => {
                return violation!(
                    "member {id} acknowledges entries up to {match_index} but its disk holds only up to {}",
                    disk.last_index()
                );
            }
            _ => {}
        }
        if m.term > durable.current_term {
            return violation!(
                "member {id} sends {} in term {} before persisting that term (disk: {})",
                m.body.name(),
                m.term,
                durable.current_term
            );
        }
        Ok(())
    }

    /// A member's state machine applied `e`.
    pub fn on_apply(&mut self, id: NodeId, e: &Entry, history: u64) -> Result<(), Violation> {
        let i = e.index;
        match self.committed_entry(i) {
            Some(c) if c == e => {}
            Some(c) => {
                return violation!(
                    "State Machine Safety: member {id} applies entry {i} of term {}, but the committed entry {i} has term {}",
                    e.term,
                    c.term
                );
            }
            None => {
                return violation!(
                    "member {id} applies entry {i}, which is not committed (committed up to {})",
                    self.commit_index()
                );
            }
        }
        if history != self.history[i as usize] {
            return violation!(
                "State Machine Safety: member {id}'s applied history up to {i} differs from the committed log's"
            );
        }
        Ok(())
    }

    /// A ReadIndex answer at `index` for a read asked when `required` was the
    /// committed index: it must not miss a write committed before it.
    pub fn on_read(
        &mut self,
        id: NodeId,
        ctx: u64,
        index: Index,
        required: Index,
    ) -> Result<(), Violation> {
        self.stats.reads += 1;
        if index < required {
            return violation!(
                "linearizability: member {id} answers read {ctx} at index {index}, but {required} was committed before the read was asked"
            );
        }
        if index > self.commit_index() {
            return violation!(
                "member {id} answers read {ctx} at index {index}, which is not committed"
            );
        }
        Ok(())
    }

    /// Commands committed in `(from, to]`, for clients that wait on them.
    pub fn committed_commands(&self, from: Index, to: Index) -> impl Iterator<Item = Command> + '_ {
        let to = to.min(self.commit_index());
        self.committed[from as usize..to as usize]
            .iter()
            .filter_map(|e| Command::decode(&e.data))
    }
}
