//! Rebuilding one group's [`WalLogStore`] from its snapshot file and the shard's WAL records.
//!
//! Replay rules (docs/format.md, "Raft log in the write-ahead log"):
//! - An `Entry` at an index the group already holds truncates that index and everything after
//!   it first (a conflicting suffix overwritten by a new leader). An entry may not leave a gap.
//! - The first entry seen for a group may start anywhere up to `snapshot index + 1`, because the
//!   segments before it were released after a snapshot; without a snapshot it must be index 1.
//! - `SnapshotInstalled` voids every earlier entry of the group; entries continue after it.
//! - The latest `HardState` wins.
//! - At the end, entries up to the snapshot index are dropped. Entries after it are kept only if
//!   they continue the snapshot: the replayed log holds the snapshot's own entry with the
//!   snapshot's term, or starts right after it. Otherwise (a crash after a received snapshot's
//!   file was replaced but before its marker was durable) only the snapshot is kept, since the
//!   stale entries were never acknowledged on top of it.

use std::collections::VecDeque;
use std::path::PathBuf;

use starcite_raft::{HardState, Index, SnapshotMeta, Term};

use super::store::{record_entry, RecordLog, StoredEntry, WalLogStore};
use crate::wal::{frame_bytes, Lsn, WalRecord};

/// A group's WAL records do not form a valid log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("group {group}: {reason}")]
pub struct ReplayError {
    /// Group id.
    pub group: u32,
    /// What is wrong.
    pub reason: String,
}

/// The replay of one group's records, in log order.
pub struct GroupReplay {
    group: u32,
    snapshot_meta: Option<SnapshotMeta>,
    hard_state: Option<(HardState, Lsn)>,
    /// Index just before `entries`.
    base_index: Index,
    /// Term at `base_index`, when known (a snapshot marker); `None` when the log was cut by a
    /// segment release.
    base_term: Option<Term>,
    /// Whether any entry or marker was replayed (fixes where the log starts).
    started: bool,
    entries: VecDeque<StoredEntry>,
}

impl GroupReplay {
    /// Starts the replay of `group`, whose snapshot file (if any) holds `snapshot_meta`.
    pub fn new(group: u32, snapshot_meta: Option<SnapshotMeta>) -> Self {
        GroupReplay {
            group,
            snapshot_meta,
            hard_state: None,
            base_index: 0,
            base_term: Some(0),
            started: false,
            entries: VecDeque::new(),
        }
    }

    fn error(&self, reason: String) -> ReplayError {
        ReplayError {
            group: self.group,
            reason,
        }
    }

    fn last_index(&self) -> Index {
        self.base_index + self.entries.len() as Index
    }

    fn snapshot_index(&self) -> Index {
        self.snapshot_meta.as_ref().map_or(0, |meta| meta.index)
    }

    /// Feeds one record of this group with its end LSN.
    pub fn on_record(&mut self, end_lsn: Lsn, record: WalRecord) -> Result<(), ReplayError> {
        let start_lsn = end_lsn - frame_bytes(&record);
        match record {
            WalRecord::Entry {
                term,
                index,
                payload,
                ..
            } => self.on_entry(start_lsn, term, index, &payload),
            WalRecord::HardState {
                term, vote, commit, ..
            } => {
                self.hard_state = Some((HardState { term, vote, commit }, start_lsn));
                Ok(())
            }
            WalRecord::SnapshotInstalled { index, term, .. } => {
                if index > self.snapshot_index() {
                    return Err(self.error(format!(
                        "snapshot marker at index {index} but the snapshot file is at {}",
                        self.snapshot_index()
                    )));
                }
                self.entries.clear();
                self.base_index = index;
                self.base_term = Some(term);
                self.started = true;
                Ok(())
            }
        }
    }

    fn on_entry(
        &mut self,
        start_lsn: Lsn,
        term: Term,
        index: Index,
        payload: &[u8],
    ) -> Result<(), ReplayError> {
        let gap = || {
            format!(
                "entry index {index} term {term} does not follow index {}",
                self.last_index()
            )
        };
        if !self.started {
            if index == 0 || index > self.snapshot_index() + 1 {
                return Err(self.error(gap()));
            }
            self.started = true;
            self.base_index = index - 1;
            self.base_term = (index == 1).then_some(0);
        } else if index > self.last_index() + 1 || index <= self.base_index {
            return Err(self.error(gap()));
        }
        self.entries
            .truncate((index - self.base_index - 1) as usize);
        if let Some(previous) = self.entries.back() {
            if previous.entry.term > term {
                return Err(self.error(format!(
                    "entry index {index} term {term} follows a later term {}",
                    previous.entry.term
                )));
            }
        }
        self.entries.push_back(StoredEntry {
            entry: record_entry(term, index, payload),
            start_lsn,
        });
        Ok(())
    }

    /// The replayed entries, in order (for validating their payloads before use).
    pub fn entry_payloads(&self) -> impl Iterator<Item = (Index, &[u8])> {
        self.entries
            .iter()
            .map(|stored| (stored.entry.index, &stored.entry.data[..]))
    }

    /// Whether the replayed log continues the snapshot at `(index, term)`.
    fn continues_snapshot(&self, index: Index, term: Term) -> bool {
        if self.base_index == index {
            return self.base_term.is_none_or(|base_term| base_term == term);
        }
        if index < self.base_index {
            return false;
        }
        match self.entries.get((index - self.base_index - 1) as usize) {
            Some(stored) => stored.entry.term == term,
            // The log ends at or before the snapshot: nothing follows it.
            None => true,
        }
    }

    /// Ends the replay and builds the store.
    pub fn finish<L: RecordLog>(
        mut self,
        log: L,
        snapshot_dir: PathBuf,
    ) -> Result<WalLogStore<L>, ReplayError> {
        let (snapshot_index, snapshot_term) = self
            .snapshot_meta
            .as_ref()
            .map_or((0, 0), |meta| (meta.index, meta.term));
        if self.snapshot_meta.is_none() && self.base_index > 0 {
            return Err(self.error(format!(
                "log starts after index {} but the group has no snapshot",
                self.base_index
            )));
        }
        if !self.continues_snapshot(snapshot_index, snapshot_term) {
            tracing::warn!(
                group = self.group,
                snapshot_index,
                "dropping log entries that do not continue the group's snapshot"
            );
            self.entries.clear();
            self.base_index = snapshot_index;
        }
        if self.base_index < snapshot_index {
            let covered = ((snapshot_index - self.base_index) as usize).min(self.entries.len());
            self.entries.drain(..covered);
        }
        let last_index = snapshot_index.max(self.last_index());
        let (mut hard_state, hard_state_lsn) = match self.hard_state {
            Some((hard_state, lsn)) => (hard_state, Some(lsn)),
            None => (HardState::default(), None),
        };
        hard_state.commit = hard_state.commit.max(snapshot_index).min(last_index);
        Ok(WalLogStore::from_parts(
            self.group,
            log,
            snapshot_dir,
            hard_state,
            hard_state_lsn,
            self.snapshot_meta,
            self.entries,
        ))
    }
}
