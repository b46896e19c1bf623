//! The storage traits: [`Storage`] is what the Raft core reads; [`LogStore`] is the write side
//! the application uses (and the conformance suite checks).
//!
//! Log layout: a store holds the last snapshot (possibly only its metadata) and the entries
//! `first_index()..=last_index()`. `first_index() == snapshot.index + 1` once the log has been
//! compacted up to the snapshot, and `term(first_index() - 1)` is always answerable (the
//! snapshot term, or 0 for an empty store).

use crate::error::StorageError;
use crate::types::{Entry, HardState, Index, Snapshot, SnapshotMeta, Term};

/// Read side of the durable log, used by [`crate::RawNode`].
pub trait Storage {
    /// Persisted hard state and the metadata of the latest persisted snapshot, read at start.
    fn initial_state(&self) -> Result<(HardState, Option<SnapshotMeta>), StorageError>;
    /// Index of the first stored entry (snapshot index + 1; 1 for an empty store).
    fn first_index(&self) -> Index;
    /// Index of the last stored entry (the snapshot index when no entry follows it).
    fn last_index(&self) -> Index;
    /// Term of the entry at `index`, for `first_index() - 1 ..= last_index()`.
    /// [`StorageError::Compacted`] below, [`StorageError::Unavailable`] above.
    fn term(&self, index: Index) -> Result<Term, StorageError>;
    /// Entries `lo..hi`, stopping early once `max_bytes` is exceeded (at least one entry is
    /// returned when `lo < hi`).
    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;
    /// The latest snapshot with its data, to send to a lagging follower.
    fn snapshot(&self) -> Result<Snapshot, StorageError>;
}

/// Write side of the durable log. Every method returns only once its effect is durable.
pub trait LogStore: Storage {
    /// Appends entries that follow on from the log, first truncating any stored entries at
    /// or after `entries[0].index` (a conflicting suffix).
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;
    /// Replaces the persisted hard state.
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError>;
    /// Installs a snapshot received from the leader: discards every entry and makes the
    /// log start right after the snapshot.
    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError>;
    /// Records a snapshot the application took of its own applied state. The log is not
    /// touched; a later [`LogStore::compact`] releases the covered entries.
    fn store_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError>;
    /// Releases entries `<= upto`; `upto` must not exceed the stored snapshot's index.
    /// `term(upto)` stays answerable.
    fn compact(&mut self, upto: Index) -> Result<(), StorageError>;
}
