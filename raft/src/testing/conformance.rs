//! One conformance suite that every [`LogStore`] runs: the in-memory store in this crate and
//! the engine's write-ahead-log store. It panics with a description of the first broken rule.

use crate::error::StorageError;
use crate::storage::LogStore;
use crate::types::{Entry, HardState, Index, Snapshot, SnapshotMeta, Term};

/// Runs every conformance case. `make` returns a fresh empty store; `reopen` simulates a
/// crash and restart: it takes the store and returns one opened from its durable state only.
pub fn run_conformance<S: LogStore>(mut make: impl FnMut() -> S, mut reopen: impl FnMut(S) -> S) {
    empty_store(make());
    append_and_read(make());
    overwrite_conflicting_suffix(make());
    append_with_gap_is_refused(make());
    hard_state_round_trip(make(), &mut reopen);
    store_snapshot_and_compact(make(), &mut reopen);
    compact_beyond_snapshot_is_refused(make());
    apply_received_snapshot(make(), &mut reopen);
    reopen_preserves_log(make(), &mut reopen);
}

fn must<T>(result: Result<T, StorageError>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("storage conformance: {what} failed: {error}"),
    }
}

fn entries_with_terms(first_index: Index, terms: &[Term]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(offset, &term)| {
            let index = first_index + offset as Index;
            Entry::normal(
                term,
                index,
                format!("entry {index} term {term}").into_bytes(),
            )
        })
        .collect()
}

fn snapshot(index: Index, term: Term) -> Snapshot {
    Snapshot::new(
        SnapshotMeta {
            index,
            term,
            voters: vec![1, 2, 3],
        },
        format!("state at {index}").into_bytes(),
    )
}

fn assert_terms<S: LogStore>(store: &S, first_index: Index, terms: &[Term], case: &str) {
    for (offset, &term) in terms.iter().enumerate() {
        let index = first_index + offset as Index;
        assert_eq!(
            must(store.term(index), "term"),
            term,
            "{case}: term at {index}"
        );
    }
}

fn empty_store<S: LogStore>(store: S) {
    assert_eq!(store.first_index(), 1, "empty store: first index");
    assert_eq!(store.last_index(), 0, "empty store: last index");
    assert_eq!(must(store.term(0), "term(0)"), 0, "empty store: term(0)");
    assert!(
        matches!(store.term(1), Err(StorageError::Unavailable)),
        "empty store: term(1) must be unavailable"
    );
    let (hard_state, snapshot_meta) = must(store.initial_state(), "initial_state");
    assert_eq!(hard_state, HardState::default(), "empty store: hard state");
    assert!(snapshot_meta.is_none(), "empty store: no snapshot");
}

fn append_and_read<S: LogStore>(mut store: S) {
    let entries = entries_with_terms(1, &[1, 1, 2, 2, 3]);
    must(store.append(&entries), "append");
    assert_eq!(store.first_index(), 1, "append: first index");
    assert_eq!(store.last_index(), 5, "append: last index");
    assert_terms(&store, 1, &[1, 1, 2, 2, 3], "append");
    assert_eq!(
        must(store.entries(1, 6, u64::MAX), "entries"),
        entries,
        "append: entries read back"
    );
    assert_eq!(
        must(store.entries(2, 4, u64::MAX), "entries"),
        entries[1..3].to_vec(),
        "append: sub-range"
    );
    let limited = must(store.entries(1, 6, 1), "entries with byte limit");
    assert_eq!(
        limited.len(),
        1,
        "byte limit: exactly one entry when the first exceeds it"
    );
    let one_size = entries[0].size_bytes();
    let two = must(store.entries(1, 6, 2 * one_size), "entries with byte limit");
    assert!(
        !two.is_empty() && two.len() <= 2 && two[..] == entries[..two.len()],
        "byte limit: a prefix within the limit"
    );
    assert!(
        matches!(
            store.entries(4, 7, u64::MAX),
            Err(StorageError::Unavailable)
        ),
        "entries beyond the last index must be unavailable"
    );
    must(
        store.append(&entries_with_terms(6, &[3])),
        "append following on",
    );
    assert_eq!(store.last_index(), 6, "append following on: last index");
}

fn overwrite_conflicting_suffix<S: LogStore>(mut store: S) {
    must(
        store.append(&entries_with_terms(1, &[1, 1, 1, 1, 1])),
        "append",
    );
    let replacement = entries_with_terms(3, &[2, 2]);
    must(store.append(&replacement), "overwrite");
    assert_eq!(store.last_index(), 4, "overwrite: the old suffix is gone");
    assert_terms(&store, 1, &[1, 1, 2, 2], "overwrite");
    assert!(
        matches!(store.term(5), Err(StorageError::Unavailable)),
        "overwrite: index 5 must be gone"
    );
    assert_eq!(
        must(store.entries(3, 5, u64::MAX), "entries"),
        replacement,
        "overwrite: new entries read back"
    );
}

fn append_with_gap_is_refused<S: LogStore>(mut store: S) {
    must(store.append(&entries_with_terms(1, &[1, 1])), "append");
    assert!(
        store.append(&entries_with_terms(4, &[1])).is_err(),
        "an append leaving a gap must be refused"
    );
    assert_eq!(store.last_index(), 2, "a refused append changes nothing");
}

fn hard_state_round_trip<S: LogStore>(mut store: S, reopen: &mut impl FnMut(S) -> S) {
    must(store.append(&entries_with_terms(1, &[1, 2, 3])), "append");
    let hard_state = HardState {
        term: 3,
        vote: 2,
        commit: 2,
    };
    must(store.set_hard_state(hard_state), "set_hard_state");
    assert_eq!(
        must(store.initial_state(), "initial_state").0,
        hard_state,
        "hard state read back"
    );
    let store = reopen(store);
    assert_eq!(
        must(store.initial_state(), "initial_state").0,
        hard_state,
        "hard state after reopen"
    );
}

fn store_snapshot_and_compact<S: LogStore>(mut store: S, reopen: &mut impl FnMut(S) -> S) {
    must(
        store.append(&entries_with_terms(1, &[1, 1, 2, 2, 3, 3])),
        "append",
    );
    let taken = snapshot(4, 2);
    must(store.store_snapshot(taken.clone()), "store_snapshot");
    assert_eq!(store.first_index(), 1, "store_snapshot alone keeps the log");
    must(store.compact(4), "compact");
    assert_eq!(store.first_index(), 5, "compact: first index");
    assert_eq!(store.last_index(), 6, "compact: last index");
    assert_eq!(
        must(store.term(4), "term(4)"),
        2,
        "compact: snapshot term kept"
    );
    assert!(
        matches!(store.term(3), Err(StorageError::Compacted)),
        "compact: term below the snapshot must be compacted"
    );
    assert!(
        matches!(store.entries(3, 6, u64::MAX), Err(StorageError::Compacted)),
        "compact: entries below the snapshot must be compacted"
    );
    assert_eq!(
        must(store.entries(5, 7, u64::MAX), "entries"),
        entries_with_terms(5, &[3, 3]),
        "compact: entries above the snapshot remain"
    );
    assert_eq!(
        must(store.snapshot(), "snapshot"),
        taken,
        "snapshot read back"
    );
    let store = reopen(store);
    assert_eq!(store.first_index(), 5, "compact: first index after reopen");
    assert_eq!(store.last_index(), 6, "compact: last index after reopen");
    assert_eq!(
        must(store.term(4), "term(4)"),
        2,
        "snapshot term after reopen"
    );
    assert_eq!(
        must(store.snapshot(), "snapshot"),
        taken,
        "snapshot after reopen"
    );
    let meta = must(store.initial_state(), "initial_state").1;
    assert_eq!(meta, Some(taken.meta), "initial state names the snapshot");
}

fn compact_beyond_snapshot_is_refused<S: LogStore>(mut store: S) {
    must(
        store.append(&entries_with_terms(1, &[1, 1, 1, 1])),
        "append",
    );
    must(store.store_snapshot(snapshot(2, 1)), "store_snapshot");
    assert!(
        store.compact(3).is_err(),
        "compaction beyond the snapshot must be refused"
    );
    assert_eq!(
        store.first_index(),
        1,
        "a refused compaction changes nothing"
    );
}

fn apply_received_snapshot<S: LogStore>(mut store: S, reopen: &mut impl FnMut(S) -> S) {
    must(store.append(&entries_with_terms(1, &[1, 1, 1])), "append");
    let received = snapshot(10, 5);
    must(store.apply_snapshot(received.clone()), "apply_snapshot");
    assert_eq!(store.first_index(), 11, "apply_snapshot: first index");
    assert_eq!(store.last_index(), 10, "apply_snapshot: last index");
    assert_eq!(must(store.term(10), "term(10)"), 5, "apply_snapshot: term");
    assert!(
        matches!(store.term(3), Err(StorageError::Compacted)),
        "apply_snapshot: the old log is gone"
    );
    must(
        store.append(&entries_with_terms(11, &[5, 6])),
        "append after snapshot",
    );
    let store = reopen(store);
    assert_eq!(
        store.first_index(),
        11,
        "apply_snapshot: first index after reopen"
    );
    assert_eq!(
        store.last_index(),
        12,
        "apply_snapshot: last index after reopen"
    );
    assert_eq!(
        must(store.term(10), "term(10)"),
        5,
        "snapshot term after reopen"
    );
    assert_eq!(
        must(store.snapshot(), "snapshot"),
        received,
        "snapshot after reopen"
    );
}

fn reopen_preserves_log<S: LogStore>(mut store: S, reopen: &mut impl FnMut(S) -> S) {
    let entries = entries_with_terms(1, &[1, 1, 2]);
    must(store.append(&entries), "append");
    must(store.append(&entries_with_terms(3, &[3, 3])), "overwrite");
    let store = reopen(store);
    assert_eq!(store.last_index(), 4, "reopen: last index");
    assert_terms(&store, 1, &[1, 1, 3, 3], "reopen");
    let mut store = reopen(store);
    must(
        store.append(&entries_with_terms(5, &[3])),
        "append after reopen",
    );
    assert_eq!(store.last_index(), 5, "append after reopen: last index");
}
