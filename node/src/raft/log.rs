//! The replicated log of one member: the snapshot point, the entries after it,
//! and how far they are persisted, committed and handed to the state machine.
//!
//! The whole log since the last snapshot is kept in memory (as etcd's
//! MemoryStorage does); the caller persists what [`RaftLog::unstable`] returns
//! and compacts the log after each snapshot, which bounds it.

use std::collections::VecDeque;

use super::types::{Entry, Index, SnapshotMeta, Term};

#[derive(Debug)]
pub struct RaftLog {
    /// Everything up to and including `snapshot.last_included_index` is
    /// compacted into the state machine's snapshot.
    snapshot: SnapshotMeta,
    /// Entries `snapshot.last_included_index + 1 ..= last_index()`.
    entries: VecDeque<Entry>,
    /// Highest index known to be committed (§5.3).
    pub committed: Index,
    /// Highest index handed to the state machine.
    pub applied: Index,
    /// Highest index on stable storage; entries above it are still to persist.
    stable: Index,
    /// A snapshot accepted from the leader and not yet persisted.
    pending_snapshot: Option<SnapshotMeta>,
}

/// Where a follower's log and an AppendEntries request disagree.
#[derive(Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The request was applied; the log matches the leader's up to
    /// `last_new_index`. `truncated_from` is set when conflicting entries
    /// from that index on were removed (§5.3).
    Appended {
        last_new_index: Index,
        truncated_from: Option<Index>,
    },
    /// The log has no entry at `prev_log_index` with `prev_log_term`.
    Mismatch,
    /// The request would remove committed entries: a broken leader or a
    /// forged message. Nothing was changed.
    ConflictsWithCommitted { index: Index },
}

impl RaftLog {
    /// A log that starts after `snapshot` and holds `entries` (all persisted).
    pub fn restore(
        snapshot: SnapshotMeta,
        entries: Vec<Entry>,
        committed: Index,
        applied: Index,
    ) -> RaftLog {
        let base = snapshot.last_included_index;
        let entries: VecDeque<Entry> = entries.into_iter().filter(|e| e.index > base).collect();
        let last = base + entries.len() as u64;
        let committed = committed.clamp(base, last);
        RaftLog {
            snapshot,
            entries,
            committed,
            applied: applied.clamp(base, committed),
            stable: last,
            pending_snapshot: None,
        }
    }

    pub fn snapshot(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    pub fn first_index(&self) -> Index {
        self.snapshot.last_included_index + 1
    }

    pub fn last_index(&self) -> Index {
        self.snapshot.last_included_index + self.entries.len() as u64
    }

    pub fn last_term(&self) -> Term {
        self.entries
            .back()
            .map_or(self.snapshot.last_included_term, |e| e.term)
    }

    pub fn stable_index(&self) -> Index {
        self.stable
    }

    /// The term of the entry at `index`, if this log still knows it. Index 0
    /// is the empty prefix every log shares, of term 0.
    pub fn term(&self, index: Index) -> Option<Term> {
        let base = self.snapshot.last_included_index;
        if index == base {
            return Some(self.snapshot.last_included_term);
        }
        if index < base || index > self.last_index() {
            return if index == 0 { Some(0) } else { None };
        }
        Some(self.entries[(index - base - 1) as usize].term)
    }

    pub fn entry(&self, index: Index) -> Option<&Entry> {
        let base = self.snapshot.last_included_index;
        if index <= base || index > self.last_index() {
            return None;
        }
        Some(&self.entries[(index - base - 1) as usize])
    }

    pub fn matches(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// §5.4.1: a candidate's log is at least as up-to-date as this one if its
    /// last term is higher, or equal with a last index at least as high.
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Appends entries a leader created; they follow the last entry.
    pub fn append(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index() + 1);
        self.entries.push_back(entry);
    }

    /// The follower's half of AppendEntries (Figure 2, receiver steps 2–4).
    /// The caller has checked that the entries are contiguous from
    /// `prev_log_index + 1` and that `prev_log_index >= committed`.
    pub fn try_append(
        &mut self,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: &[Entry],
    ) -> AppendOutcome {
        if !self.matches(prev_log_index, prev_log_term) {
            return AppendOutcome::Mismatch;
        }
        let last_new_index = prev_log_index + entries.len() as u64;
        // Step 3: find the first entry that is new or conflicts; entries this
        // log already holds with the same term are left alone, so a delayed
        // duplicate request never truncates a longer log.
        let mut first_new = entries.len();
        let mut truncated_from = None;
        for (i, e) in entries.iter().enumerate() {
            match self.term(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    if e.index <= self.committed {
                        return AppendOutcome::ConflictsWithCommitted { index: e.index };
                    }
                    truncated_from = Some(e.index);
                    first_new = i;
                    break;
                }
                None => {
                    first_new = i;
                    break;
                }
            }
        }
        if let Some(from) = truncated_from {
            let keep = (from - self.snapshot.last_included_index - 1) as usize;
            self.entries.truncate(keep);
            self.stable = self.stable.min(from - 1);
        }
        // Step 4: append any new entries not already in the log.
        for e in &entries[first_new..] {
            self.entries.push_back(e.clone());
        }
        AppendOutcome::Appended {
            last_new_index,
            truncated_from,
        }
    }

    /// Raises the commit index; it never goes down (committed entries are
    /// never lost, §5.4).
    pub fn commit_to(&mut self, index: Index) -> bool {
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// The last index at or below `hi` such that `pred` holds for every entry
    /// from the first up to it (`pred` must hold on a prefix, then fail), or
    /// the snapshot index if it holds for none. Terms never decrease along a
    /// log, so searches by term are binary searches.
    fn partition(&self, hi: Index, pred: impl Fn(&Entry) -> bool) -> Index {
        let base = self.snapshot.last_included_index;
        let hi = hi.min(self.last_index());
        if hi <= base {
            return base;
        }
        let len = (hi - base) as usize;
        let (a, b) = self.entries.as_slices();
        let n = if len <= a.len() {
            a[..len].partition_point(&pred)
        } else {
            let na = a.partition_point(&pred);
            if na < a.len() {
                na
            } else {
                a.len() + b[..len - a.len()].partition_point(&pred)
            }
        };
        base + n as u64
    }

    /// The last index of `term` at or below `at_most`: the leader's half of
    /// fast backtracking.
    pub fn last_index_of_term(&self, term: Term, at_most: Index) -> Option<Index> {
        let i = self.partition(at_most, |e| e.term <= term);
        (self.term(i) == Some(term)).then_some(i)
    }

    /// The first index of the run of `term` that contains `at`, but not below
    /// `floor + 1`: the follower's half of fast backtracking.
    pub fn first_index_of_term(&self, term: Term, at: Index, floor: Index) -> Index {
        let i = self.partition(at, |e| e.term < term) + 1;
        i.max(floor + 1).max(self.first_index()).min(at)
    }

    /// Entries from `from` on, up to `max_bytes` (at least one if any).
    pub fn entries_from(&self, from: Index, max_bytes: usize) -> Vec<Entry> {
        self.entries_in(from, self.last_index(), max_bytes)
    }

    /// Entries `from..=to` that the log holds, up to `max_bytes` (at least
    /// one if any).
    fn entries_in(&self, from: Index, to: Index, max_bytes: usize) -> Vec<Entry> {
        let base = self.snapshot.last_included_index;
        let to = to.min(self.last_index());
        if from <= base || from > to {
            return Vec::new();
        }
        let (start, end) = ((from - base - 1) as usize, (to - base) as usize);
        // Every entry counts at least 24 bytes (`Entry::size`), which bounds
        // how many fit; sizing the vector once saves copying it as it grows.
        let fit = max_bytes / 24 + 1;
        let mut out = Vec::with_capacity((end - start).min(fit));
        let mut bytes = 0;
        for e in self.entries.range(start..end) {
            bytes += e.size();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        out
    }

    /// Entries not yet on stable storage.
    pub fn unstable(&self) -> Vec<Entry> {
        self.entries_from(self.stable + 1, usize::MAX)
    }

    pub fn has_unstable(&self) -> bool {
        self.stable < self.last_index()
    }

    /// The caller persisted entries up to `index` (of `term`). Ignored if the
    /// log changed in between.
    pub fn stable_to(&mut self, index: Index, term: Term) {
        if index > self.stable && self.term(index) == Some(term) {
            self.stable = index;
        }
    }

    /// Committed entries not yet handed to the state machine.
    pub fn next_committed(&self, max_bytes: usize) -> Vec<Entry> {
        if self.applied >= self.committed {
            return Vec::new();
        }
        self.entries_in(self.applied + 1, self.committed, max_bytes)
    }

    pub fn has_next_committed(&self) -> bool {
        self.applied < self.committed
    }

    pub fn applied_to(&mut self, index: Index) {
        if index > self.applied && index <= self.committed {
            self.applied = index;
        }
    }

    /// Drops entries up to `meta.last_included_index`, which a snapshot now
    /// covers. The caller guarantees that index is applied.
    pub fn compact(&mut self, meta: SnapshotMeta) {
        let new_base = meta.last_included_index;
        let base = self.snapshot.last_included_index;
        if new_base <= base {
            return;
        }
        let drop = ((new_base - base) as usize).min(self.entries.len());
        self.entries.drain(..drop);
        self.snapshot = meta;
    }

    /// Replaces the whole log with a snapshot from the leader (§7, receiver
    /// steps 6–8): nothing of the old log survives, because the snapshot's last
    /// entry does not match it.
    pub fn install_snapshot(&mut self, meta: SnapshotMeta) {
        let index = meta.last_included_index;
        self.entries.clear();
        self.snapshot = meta.clone();
        self.committed = index;
        self.applied = index;
        self.stable = index;
        self.pending_snapshot = Some(meta);
    }

    pub fn pending_snapshot(&self) -> Option<&SnapshotMeta> {
        self.pending_snapshot.as_ref()
    }

    pub fn snapshot_persisted(&mut self, index: Index) {
        if self
            .pending_snapshot
            .as_ref()
            .is_some_and(|s| s.last_included_index == index)
        {
            self.pending_snapshot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn log_with_terms(terms: &[Term]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, t)| Entry::normal(*t, i as u64 + 1, Bytes::new()))
            .collect();
        RaftLog::restore(SnapshotMeta::default(), entries, 0, 0)
    }

    #[test]
    fn last_index_of_term_finds_the_last_entry_of_a_term() {
        let log = log_with_terms(&[1, 1, 2, 2, 2, 4, 5]);
        assert_eq!(log.last_index_of_term(2, 7), Some(5));
        assert_eq!(log.last_index_of_term(2, 4), Some(4));
        assert_eq!(log.last_index_of_term(3, 7), None);
        assert_eq!(log.last_index_of_term(1, 7), Some(2));
        assert_eq!(log.last_index_of_term(5, 100), Some(7));
        assert_eq!(log.last_index_of_term(0, 7), Some(0));
    }

    #[test]
    fn a_conflicting_entry_truncates_the_log_from_there() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        let new = [Entry::normal(3, 3, Bytes::new())];
        let out = log.try_append(2, 1, &new);
        assert_eq!(
            out,
            AppendOutcome::Appended {
                last_new_index: 3,
                truncated_from: Some(3)
            }
        );
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term(3), Some(3));
        assert_eq!(log.stable_index(), 2);
    }

    #[test]
    fn a_stale_duplicate_never_truncates() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        let dup = [Entry::normal(1, 2, Bytes::new())];
        let out = log.try_append(1, 1, &dup);
        assert_eq!(
            out,
            AppendOutcome::Appended {
                last_new_index: 2,
                truncated_from: None
            }
        );
        assert_eq!(log.last_index(), 4);
    }

    #[test]
    fn committed_entries_are_never_truncated() {
        let mut log = log_with_terms(&[1, 1, 2]);
        log.commit_to(3);
        let out = log.try_append(1, 1, &[Entry::normal(3, 2, Bytes::new())]);
        assert_eq!(out, AppendOutcome::ConflictsWithCommitted { index: 2 });
        assert_eq!(log.last_index(), 3);
    }
}
