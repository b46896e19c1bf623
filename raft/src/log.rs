//! The Raft log as the core sees it: durable entries in [`Storage`] followed by entries that
//! the application has not yet reported persisted (the unstable tail), plus a received
//! snapshot that is not yet persisted.
//!
//! Ownership: new entries (proposals, or entries received from the leader) live in the
//! unstable tail until the application reports them durable with `on_persisted`; only then
//! are they dropped here, and later reads go to storage. The application writes them into its
//! [`crate::LogStore`] from `Ready::entries`.

use crate::error::{RaftError, StorageError};
use crate::storage::Storage;
use crate::types::{Entry, Index, Snapshot, Term};

pub(crate) struct RaftLog<S: Storage> {
    pub(crate) storage: S,
    /// Snapshot received from the leader that is not yet reported persisted.
    unstable_snapshot: Option<Snapshot>,
    /// Whether `unstable_snapshot` was already handed out in a `Ready`.
    snapshot_handed_out: bool,
    /// Index of `unstable_entries[0]` (or where the next unstable entry goes).
    unstable_offset: Index,
    unstable_entries: Vec<Entry>,
    /// Highest unstable index already handed out in a `Ready` for persistence.
    handed_out_index: Index,
    /// Highest index known committed.
    pub(crate) committed: Index,
    /// Highest index durable in this node's log (consistent with the current log).
    pub(crate) persisted: Index,
    /// Highest index the application reported applied.
    pub(crate) applied: Index,
    /// Highest committed index already handed out for apply.
    pub(crate) apply_handed_out: Index,
}

impl<S: Storage> RaftLog<S> {
    pub(crate) fn new(storage: S, committed: Index, applied: Index) -> RaftLog<S> {
        let last = storage.last_index();
        RaftLog {
            storage,
            unstable_snapshot: None,
            snapshot_handed_out: false,
            unstable_offset: last + 1,
            unstable_entries: Vec::new(),
            handed_out_index: last,
            committed,
            persisted: last,
            applied,
            apply_handed_out: applied,
        }
    }

    pub(crate) fn first_index(&self) -> Index {
        match &self.unstable_snapshot {
            Some(snapshot) => snapshot.meta.index + 1,
            None => self.storage.first_index(),
        }
    }

    pub(crate) fn last_index(&self) -> Index {
        self.unstable_offset - 1 + self.unstable_entries.len() as Index
    }

    pub(crate) fn last_term(&self) -> Term {
        // The last index is always answerable: an entry, the snapshot, or 0.
        self.term(self.last_index()).unwrap_or(0)
    }

    pub(crate) fn term(&self, index: Index) -> Result<Term, StorageError> {
        if index >= self.unstable_offset {
            let position = (index - self.unstable_offset) as usize;
            return match self.unstable_entries.get(position) {
                Some(entry) => Ok(entry.term),
                None => Err(StorageError::Unavailable),
            };
        }
        if let Some(snapshot) = &self.unstable_snapshot {
            if index == snapshot.meta.index {
                return Ok(snapshot.meta.term);
            }
            return Err(StorageError::Compacted);
        }
        self.storage.term(index)
    }

    pub(crate) fn match_term(&self, index: Index, term: Term) -> bool {
        matches!(self.term(index), Ok(found) if found == term)
    }

    /// Raft §5.4.1: a candidate's log is at least as up to date as ours.
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        let our_term = self.last_term();
        last_term > our_term || (last_term == our_term && last_index >= self.last_index())
    }

    /// Entries `lo..hi`, at most `max_bytes` (at least one entry when `lo < hi`).
    pub(crate) fn entries(
        &self,
        lo: Index,
        hi: Index,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        if lo < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        let mut result = Vec::new();
        let mut total_bytes = 0u64;
        if lo < self.unstable_offset {
            let stable_hi = hi.min(self.unstable_offset);
            result = self.storage.entries(lo, stable_hi, max_bytes)?;
            total_bytes = result.iter().map(Entry::size_bytes).sum();
            if (result.len() as Index) < stable_hi - lo {
                return Ok(result);
            }
        }
        let start = lo.max(self.unstable_offset);
        for index in start..hi {
            let position = (index - self.unstable_offset) as usize;
            let Some(entry) = self.unstable_entries.get(position) else {
                break;
            };
            total_bytes += entry.size_bytes();
            if !result.is_empty() && total_bytes > max_bytes {
                break;
            }
            result.push(entry.clone());
        }
        Ok(result)
    }

    /// Index of the first entry in `entries` that is not already in the log with the same
    /// term, or `None` when all are present.
    pub(crate) fn find_conflict(&self, entries: &[Entry]) -> Option<Index> {
        entries
            .iter()
            .find(|entry| !self.match_term(entry.index, entry.term))
            .map(|entry| entry.index)
    }

    /// Appends entries to the unstable tail, truncating any conflicting suffix at or after
    /// `entries[0].index`. The caller checked that the entries follow on from the log.
    pub(crate) fn append(&mut self, entries: &[Entry]) -> Result<(), RaftError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let first_index = first.index;
        if first_index <= self.committed {
            return Err(RaftError::SafetyViolation(format!(
                "truncating at {first_index} would remove committed entries (commit {})",
                self.committed
            )));
        }
        if first_index > self.last_index() + 1 {
            return Err(RaftError::SafetyViolation(format!(
                "append at {first_index} leaves a gap after {}",
                self.last_index()
            )));
        }
        if first_index < self.unstable_offset {
            // The conflict reaches into stable storage: the whole tail is rewritten and the
            // application's `LogStore::append` truncates the stored suffix.
            self.unstable_offset = first_index;
            self.unstable_entries.clear();
        } else {
            let keep = (first_index - self.unstable_offset) as usize;
            self.unstable_entries.truncate(keep);
        }
        self.unstable_entries.extend_from_slice(entries);
        self.handed_out_index = self.handed_out_index.min(first_index - 1);
        self.persisted = self.persisted.min(first_index - 1);
        Ok(())
    }

    /// Handles an append from the leader; returns the index of the last new entry when the
    /// log matched at `prev_log_index`.
    pub(crate) fn maybe_append(
        &mut self,
        prev_log_index: Index,
        prev_log_term: Term,
        commit: Index,
        entries: &[Entry],
    ) -> Result<Option<Index>, RaftError> {
        if !self.match_term(prev_log_index, prev_log_term) {
            return Ok(None);
        }
        let last_new_index = prev_log_index + entries.len() as Index;
        if let Some(conflict_index) = self.find_conflict(entries) {
            let skip = (conflict_index - prev_log_index - 1) as usize;
            self.append(&entries[skip..])?;
        }
        self.commit_to(commit.min(last_new_index));
        Ok(Some(last_new_index))
    }

    /// Raises the commit index (never lowers it).
    pub(crate) fn commit_to(&mut self, index: Index) {
        if index > self.committed {
            debug_assert!(index <= self.last_index(), "commit beyond last index");
            self.committed = index.min(self.last_index());
        }
    }

    /// The reject hint for a failed match at `index` against the leader's `term`: the largest
    /// index ≤ `index` whose term is ≤ `term`, with its term.
    pub(crate) fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut candidate = index.min(self.last_index());
        loop {
            match self.term(candidate) {
                Ok(found) if found > term && candidate > 0 => candidate -= 1,
                Ok(found) => return (candidate, found),
                // Below the first index everything is committed and matches the leader.
                Err(_) => return (candidate, 0),
            }
        }
    }

    /// Replaces the whole log with a received snapshot.
    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        self.persisted = self.persisted.min(self.committed).min(index);
        self.committed = index;
        self.unstable_offset = index + 1;
        self.unstable_entries.clear();
        self.handed_out_index = index;
        self.unstable_snapshot = Some(snapshot);
        self.snapshot_handed_out = false;
    }

    pub(crate) fn has_unhanded_snapshot(&self) -> bool {
        self.unstable_snapshot.is_some() && !self.snapshot_handed_out
    }

    /// Hands out the received snapshot for persistence; the application restores its state
    /// machine from it, so apply positions jump to its index.
    pub(crate) fn take_snapshot_to_persist(&mut self) -> Option<Snapshot> {
        if !self.has_unhanded_snapshot() {
            return None;
        }
        self.snapshot_handed_out = true;
        let snapshot = self.unstable_snapshot.clone()?;
        self.applied = self.applied.max(snapshot.meta.index);
        self.apply_handed_out = self.apply_handed_out.max(snapshot.meta.index);
        Some(snapshot)
    }

    pub(crate) fn has_entries_to_persist(&self) -> bool {
        self.last_index() > self.handed_out_index
    }

    pub(crate) fn take_entries_to_persist(&mut self) -> Vec<Entry> {
        let start = self.handed_out_index.max(self.unstable_offset - 1) + 1;
        let position = (start - self.unstable_offset) as usize;
        let entries = self
            .unstable_entries
            .get(position..)
            .unwrap_or(&[])
            .to_vec();
        self.handed_out_index = self.last_index();
        entries
    }

    /// The application made everything up to `(index, term)` durable.
    pub(crate) fn on_persisted(&mut self, index: Index, term: Term) {
        if let Some(snapshot) = &self.unstable_snapshot {
            let covers_snapshot = index >= snapshot.meta.index && self.snapshot_handed_out;
            if !covers_snapshot {
                return;
            }
            if index == snapshot.meta.index && term != snapshot.meta.term {
                return;
            }
            let snapshot_index = snapshot.meta.index;
            self.unstable_snapshot = None;
            self.persisted = self.persisted.max(snapshot_index);
        }
        // A stale report for entries that were overwritten since is ignored.
        if index > self.handed_out_index || !self.match_term(index, term) {
            return;
        }
        if index >= self.unstable_offset {
            let drop_count = (index + 1 - self.unstable_offset) as usize;
            self.unstable_entries.drain(..drop_count);
            self.unstable_offset = index + 1;
        }
        self.persisted = self.persisted.max(index);
    }

    pub(crate) fn has_entries_to_apply(&self) -> bool {
        self.committed.min(self.persisted) > self.apply_handed_out
    }

    /// Committed and locally durable entries not yet handed out, at most `count_max`.
    pub(crate) fn take_entries_to_apply(
        &mut self,
        count_max: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let lo = self.apply_handed_out + 1;
        let hi = (self.committed.min(self.persisted) + 1).min(lo + count_max as Index);
        let entries = self.entries(lo, hi, u64::MAX)?;
        if let Some(last) = entries.last() {
            self.apply_handed_out = last.index;
        }
        Ok(entries)
    }

    /// `applied ≤ committed ≤ last index`, and the unstable tail follows on from storage.
    pub(crate) fn check_invariants(&self) {
        debug_assert!(self.committed <= self.last_index(), "commit > last index");
        debug_assert!(
            self.applied <= self.apply_handed_out,
            "applied > handed out"
        );
        debug_assert!(
            self.apply_handed_out <= self.committed,
            "apply handed out > commit"
        );
        debug_assert!(
            self.persisted <= self.last_index(),
            "persisted > last index"
        );
        debug_assert!(
            self.first_index() <= self.last_index() + 1,
            "first index > last index + 1"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_storage::MemoryStorage;
    use crate::storage::LogStore;
    use crate::types::SnapshotMeta;

    fn entries(first_index: Index, terms: &[Term]) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(offset, &term)| Entry::normal(term, first_index + offset as Index, vec![0u8]))
            .collect()
    }

    #[test]
    fn unstable_entries_are_handed_out_once_and_dropped_when_persisted() {
        let mut log = RaftLog::new(MemoryStorage::new(), 0, 0);
        log.append(&entries(1, &[1, 1, 1])).expect("append");
        let handed = log.take_entries_to_persist();
        assert_eq!(handed.len(), 3);
        assert!(!log.has_entries_to_persist());
        log.storage.append(&handed).expect("store");
        log.on_persisted(3, 1);
        assert_eq!(log.persisted, 3);
        assert_eq!(log.unstable_offset, 4);
        assert_eq!(log.term(2).expect("term"), 1);
    }

    #[test]
    fn stale_persist_report_for_overwritten_entries_is_ignored() {
        let mut log = RaftLog::new(MemoryStorage::new(), 0, 0);
        log.append(&entries(1, &[1, 1, 1])).expect("append");
        let first = log.take_entries_to_persist();
        log.append(&entries(2, &[2])).expect("overwrite");
        let second = log.take_entries_to_persist();
        assert_eq!(second, entries(2, &[2]));
        log.storage.append(&first).expect("store");
        log.on_persisted(3, 1);
        assert_eq!(log.persisted, 0, "index 3 of term 1 no longer exists");
        log.storage.append(&second).expect("store");
        log.on_persisted(2, 2);
        assert_eq!(log.persisted, 2);
        assert_eq!(log.last_index(), 2);
    }

    #[test]
    fn truncating_committed_entries_is_a_safety_violation() {
        let mut log = RaftLog::new(MemoryStorage::new(), 0, 0);
        log.append(&entries(1, &[1, 1])).expect("append");
        log.commit_to(2);
        assert!(matches!(
            log.append(&entries(2, &[2])),
            Err(RaftError::SafetyViolation(_))
        ));
    }

    #[test]
    fn conflict_hint_skips_whole_terms() {
        let mut log = RaftLog::new(MemoryStorage::new(), 0, 0);
        log.append(&entries(1, &[1, 1, 2, 2, 2, 2]))
            .expect("append");
        // The leader's prev entry has a newer term: the follower's index 6 may still match.
        assert_eq!(log.find_conflict_by_term(6, 3), (6, 2));
        // Leader's prev entry has term 1: skip back over the whole term-2 run.
        assert_eq!(log.find_conflict_by_term(6, 1), (2, 1));
        // Beyond the follower's log: its last index.
        assert_eq!(log.find_conflict_by_term(20, 5), (6, 2));
    }

    #[test]
    fn restored_snapshot_replaces_the_log_until_persisted() {
        let mut log = RaftLog::new(MemoryStorage::new(), 0, 0);
        log.append(&entries(1, &[1, 1])).expect("append");
        let snapshot = Snapshot::new(
            SnapshotMeta {
                index: 10,
                term: 3,
                voters: vec![1],
            },
            vec![1u8, 2, 3],
        );
        log.restore(snapshot.clone());
        assert_eq!(log.first_index(), 11);
        assert_eq!(log.last_index(), 10);
        assert_eq!(log.term(10).expect("term"), 3);
        assert!(matches!(log.term(2), Err(StorageError::Compacted)));
        let handed = log.take_snapshot_to_persist().expect("snapshot");
        assert_eq!(log.applied, 10);
        log.storage.apply_snapshot(handed).expect("store");
        log.on_persisted(10, 3);
        assert_eq!(log.persisted, 10);
        assert_eq!(log.first_index(), 11);
        assert_eq!(log.term(10).expect("term"), 3);
        log.check_invariants();
    }
}
