//! An in-memory [`LogStore`], for tests and the simulator. "Durable" means "held by this
//! value": a simulated crash keeps the `MemoryStorage` and drops the `RawNode`.

use crate::error::StorageError;
use crate::storage::{LogStore, Storage};
use crate::types::{Entry, HardState, Index, Snapshot, SnapshotMeta, Term};

/// In-memory log store. `entries[0]` has index `snapshot.meta.index + 1`.
#[derive(Debug, Clone)]
pub struct MemoryStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    /// Whether `snapshot` is a real snapshot (as opposed to the empty initial one).
    has_snapshot: bool,
    /// Index and term of the entry just before `entries` (the compaction point).
    offset_index: Index,
    offset_term: Term,
    entries: Vec<Entry>,
}

impl Default for MemoryStorage {
    fn default() -> MemoryStorage {
        MemoryStorage::new()
    }
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> MemoryStorage {
        MemoryStorage {
            hard_state: HardState::default(),
            snapshot: Snapshot::new(SnapshotMeta::default(), Vec::new()),
            has_snapshot: false,
            offset_index: 0,
            offset_term: 0,
            entries: Vec::new(),
        }
    }

    /// The persisted hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn position(&self, index: Index) -> usize {
        (index - self.offset_index - 1) as usize
    }
}

impl Storage for MemoryStorage {
    fn initial_state(&self) -> Result<(HardState, Option<SnapshotMeta>), StorageError> {
        let meta = self.has_snapshot.then(|| self.snapshot.meta.clone());
        Ok((self.hard_state, meta))
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
            Some(entry) => Ok(entry.term),
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
            let Some(entry) = self.entries.get(self.position(index)) else {
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

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        if !self.has_snapshot {
            return Err(StorageError::SnapshotTemporarilyUnavailable);
        }
        Ok(self.snapshot.clone())
    }
}

impl LogStore for MemoryStorage {
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
        for pair in entries.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return Err(StorageError::InvalidRequest(
                    "entries are not contiguous".to_string(),
                ));
            }
        }
        let keep = self.position(first.index);
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.hard_state = hard_state;
        Ok(())
    }

    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        if self.has_snapshot && snapshot.meta.index < self.snapshot.meta.index {
            return Err(StorageError::InvalidRequest(
                "snapshot older than the stored one".to_string(),
            ));
        }
        self.offset_index = snapshot.meta.index;
        self.offset_term = snapshot.meta.term;
        self.entries.clear();
        self.hard_state.commit = self.hard_state.commit.max(snapshot.meta.index);
        self.snapshot = snapshot;
        self.has_snapshot = true;
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
        self.snapshot = snapshot;
        self.has_snapshot = true;
        Ok(())
    }

    fn compact(&mut self, upto: Index) -> Result<(), StorageError> {
        if upto <= self.offset_index {
            return Ok(());
        }
        if !self.has_snapshot || upto > self.snapshot.meta.index {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_storage_passes_conformance() {
        crate::testing::run_conformance(MemoryStorage::new, |storage| storage);
    }
}
