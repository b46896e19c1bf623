//! [`WalLogStore`]: the Raft log of one group kept in its shard's shared write-ahead log.
//!
//! Entries and hard states are WAL records (`Entry`, `HardState`); an installed snapshot is a
//! snapshot file plus a `SnapshotInstalled` record. The store keeps every entry after its
//! snapshot in memory (they are needed for apply and for followers that lag by less than a
//! snapshot interval, and the snapshot interval bounds them) together with the start LSN of
//! its record, so that the shard can tell which segments the group still needs.
//!
//! Durability: [`LogStore`] methods only *buffer* their WAL records. The shard's driving loop
//! persists a whole batch of groups with one fsync before it reports anything persisted to the
//! Raft core or sends a message that depends on it, which is what the `LogStore` contract
//! protects. Snapshot files are written and synced inside the call.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use starcite_raft::{
    Entry, EntryKind, HardState, Index, LogStore, Snapshot, SnapshotMeta, Storage, StorageError,
    Term,
};

use super::snapshot_file::{read_snapshot_file, write_snapshot_file, SnapshotFileError};
use crate::wal::{frame_bytes, Lsn, Wal, WalError, WalRecord};

/// Where a [`WalLogStore`] appends its records: the shard's [`Wal`] in production; tests may
/// use a log that makes every record durable before returning.
pub trait RecordLog {
    /// Appends `record` and returns its end LSN.
    fn append(&self, record: &WalRecord) -> Result<Lsn, WalError>;
}

impl RecordLog for Wal {
    fn append(&self, record: &WalRecord) -> Result<Lsn, WalError> {
        Wal::append(self, record)
    }
}

/// One stored entry and the LSN where its record starts.
#[derive(Clone, Debug)]
pub(crate) struct StoredEntry {
    pub(crate) entry: Entry,
    pub(crate) start_lsn: Lsn,
}

/// The Raft log of one group on top of a shared write-ahead log.
pub struct WalLogStore<L: RecordLog> {
    group: u32,
    log: L,
    snapshot_dir: PathBuf,
    hard_state: HardState,
    /// Start LSN of the latest hard state record (`None` before the first one).
    hard_state_lsn: Option<Lsn>,
    /// Metadata of the latest snapshot (its data is in the snapshot file).
    snapshot_meta: Option<SnapshotMeta>,
    /// Index and term just before `entries` (the snapshot point, or 0).
    offset_index: Index,
    offset_term: Term,
    entries: VecDeque<StoredEntry>,
}

fn backend(error: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageError::Backend(Box::new(error))
}

/// The WAL record of an entry. A no-op is stored with an empty payload: every application
/// command encodes to at least one byte, so the kind needs no field of its own.
pub fn entry_record(group: u32, entry: &Entry) -> WalRecord {
    let payload = match entry.kind {
        EntryKind::Noop => Bytes::new(),
        EntryKind::Normal => Bytes::from_owner(entry.data.clone()),
    };
    WalRecord::Entry {
        group,
        term: entry.term,
        index: entry.index,
        payload,
    }
}

/// The Raft entry of a WAL `Entry` record (see [`entry_record`]).
pub fn record_entry(term: Term, index: Index, payload: &[u8]) -> Entry {
    if payload.is_empty() {
        Entry::noop(term, index)
    } else {
        Entry::normal(term, index, payload.to_vec())
    }
}

impl<L: RecordLog> WalLogStore<L> {
    /// Assembles a store from recovered parts (see [`super::GroupReplay::finish`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_parts(
        group: u32,
        log: L,
        snapshot_dir: PathBuf,
        hard_state: HardState,
        hard_state_lsn: Option<Lsn>,
        snapshot_meta: Option<SnapshotMeta>,
        entries: VecDeque<StoredEntry>,
    ) -> Self {
        let (offset_index, offset_term) = snapshot_meta
            .as_ref()
            .map_or((0, 0), |meta| (meta.index, meta.term));
        debug_assert!(entries
            .front()
            .is_none_or(|first| first.entry.index == offset_index + 1));
        WalLogStore {
            group,
            log,
            snapshot_dir,
            hard_state,
            hard_state_lsn,
            snapshot_meta,
            offset_index,
            offset_term,
            entries,
        }
    }

    /// The group this store holds.
    pub fn group(&self) -> u32 {
        self.group
    }

    /// The persisted hard state (as last handed to the log).
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Index of the latest snapshot (0 without one).
    pub fn snapshot_index(&self) -> Index {
        self.snapshot_meta.as_ref().map_or(0, |meta| meta.index)
    }

    /// Directory of the snapshot files.
    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshot_dir
    }

    /// The record log (the tests' reopen takes it back).
    pub fn into_log(self) -> L {
        self.log
    }

    /// The oldest LSN this group still needs: the start of its first stored entry, or of its
    /// hard state record when that is older. `None` when it needs no record at all.
    pub fn oldest_needed_lsn(&self) -> Option<Lsn> {
        let entry_lsn = self.entries.front().map(|stored| stored.start_lsn);
        match (entry_lsn, self.hard_state_lsn) {
            (Some(entry), Some(hard_state)) => Some(entry.min(hard_state)),
            (entry, hard_state) => entry.or(hard_state),
        }
    }

    /// The start LSN of the first stored entry.
    pub fn first_entry_lsn(&self) -> Option<Lsn> {
        self.entries.front().map(|stored| stored.start_lsn)
    }

    /// The start LSN of the latest hard state record.
    pub fn hard_state_lsn(&self) -> Option<Lsn> {
        self.hard_state_lsn
    }

    /// Appends the current hard state again, so that older segments holding the previous
    /// record can be released. Durable once the shard's next fsync completes.
    pub fn rewrite_hard_state(&mut self) -> Result<(), StorageError> {
        if self.hard_state_lsn.is_none() {
            return Ok(());
        }
        self.set_hard_state(self.hard_state)
    }

    fn append_record(&self, record: &WalRecord) -> Result<Lsn, StorageError> {
        let end_lsn = self.log.append(record).map_err(backend)?;
        Ok(end_lsn - frame_bytes(record))
    }

    fn position(&self, index: Index) -> usize {
        (index - self.offset_index - 1) as usize
    }

    fn write_snapshot(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        write_snapshot_file(&self.snapshot_dir, self.group, snapshot).map_err(backend)
    }
}

impl<L: RecordLog> Storage for WalLogStore<L> {
    fn initial_state(&self) -> Result<(HardState, Option<SnapshotMeta>), StorageError> {
        Ok((self.hard_state, self.snapshot_meta.clone()))
    }

    fn first_index(&self) -> Index {
        self.offset_index + 1
    }

    fn last_index(&self) -> Index {
        self.offset_index + self.entries.len() as Index
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        if index < self.offset_index {
            return Err(StorageError::Compacted);
        }
        if index == self.offset_index {
            return Ok(self.offset_term);
        }
        match self.entries.get(self.position(index)) {
            Some(stored) => Ok(stored.entry.term),
            None => Err(StorageError::Unavailable),
        }
    }

    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if lo <= self.offset_index {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        let mut result = Vec::new();
        let mut total_bytes = 0u64;
        for index in lo..hi {
            let Some(stored) = self.entries.get(self.position(index)) else {
                break;
            };
            total_bytes += stored.entry.size_bytes();
            if !result.is_empty() && total_bytes > max_bytes {
                break;
            }
            result.push(stored.entry.clone());
        }
        Ok(result)
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        let Some(meta) = &self.snapshot_meta else {
            return Err(StorageError::SnapshotTemporarilyUnavailable);
        };
        match read_snapshot_file(&self.snapshot_dir, self.group) {
            Ok(Some(snapshot)) if snapshot.meta == *meta => Ok(snapshot),
            Ok(_) => Err(backend(SnapshotFileError::Corrupt {
                path: self.snapshot_dir.clone(),
                reason: format!(
                    "group {} snapshot file does not hold snapshot {}",
                    self.group, meta.index
                ),
            })),
            Err(error) => Err(backend(error)),
        }
    }
}

impl<L: RecordLog> LogStore for WalLogStore<L> {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.offset_index {
            return Err(StorageError::Compacted);
        }
        if first.index > self.last_index() + 1 {
            return Err(StorageError::InvalidRequest(format!(
                "append at {} leaves a gap after {}",
                first.index,
                self.last_index()
            )));
        }
        if entries
            .windows(2)
            .any(|pair| pair[1].index != pair[0].index + 1)
        {
            return Err(StorageError::InvalidRequest(
                "entries are not contiguous".to_string(),
            ));
        }
        // Replay truncates the same suffix when it meets the first of these records.
        let keep = self.position(first.index);
        self.entries.truncate(keep);
        for entry in entries {
            let start_lsn = self.append_record(&entry_record(self.group, entry))?;
            self.entries.push_back(StoredEntry {
                entry: entry.clone(),
                start_lsn,
            });
        }
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        let record = WalRecord::HardState {
            group: self.group,
            term: hard_state.term,
            vote: hard_state.vote,
            commit: hard_state.commit,
        };
        self.hard_state_lsn = Some(self.append_record(&record)?);
        self.hard_state = hard_state;
        Ok(())
    }

    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        if snapshot.meta.index < self.snapshot_index() {
            return Err(StorageError::InvalidRequest(
                "snapshot older than the stored one".to_string(),
            ));
        }
        // The file first: the marker voids the group's earlier entries on replay, so the
        // snapshot that replaces them must already be durable when the marker is.
        self.write_snapshot(&snapshot)?;
        let marker = WalRecord::SnapshotInstalled {
            group: self.group,
            index: snapshot.meta.index,
            term: snapshot.meta.term,
        };
        self.append_record(&marker)?;
        self.offset_index = snapshot.meta.index;
        self.offset_term = snapshot.meta.term;
        self.entries.clear();
        self.hard_state.commit = self.hard_state.commit.max(snapshot.meta.index);
        self.snapshot_meta = Some(snapshot.meta);
        Ok(())
    }

    fn store_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        if snapshot.meta.index > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        if self.term(snapshot.meta.index)? != snapshot.meta.term {
            return Err(StorageError::InvalidRequest(
                "snapshot term differs from the log".to_string(),
            ));
        }
        if snapshot.meta.index < self.snapshot_index() {
            return Err(StorageError::InvalidRequest(
                "snapshot older than the stored one".to_string(),
            ));
        }
        self.write_snapshot(&snapshot)?;
        self.snapshot_meta = Some(snapshot.meta);
        Ok(())
    }

    fn compact(&mut self, upto: Index) -> Result<(), StorageError> {
        if upto <= self.offset_index {
            return Ok(());
        }
        if upto > self.snapshot_index() {
            return Err(StorageError::InvalidRequest(
                "compaction beyond the snapshot".to_string(),
            ));
        }
        let term = self.term(upto)?;
        let drop_count = self.position(upto) + 1;
        self.entries.drain(..drop_count);
        self.offset_index = upto;
        self.offset_term = term;
        Ok(())
    }
}
