//! The conformance suite every archive adapter runs (`contract/archive.md` §1, §3).
//!
//! A test file provides a [`Harness`] (the adapter plus a side door into its storage) and expands
//! [`archive_suite!`], which generates one `#[test]` per case.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod services;

use std::time::Instant;

use bytes::Bytes;
use starcite_archive::{ArchiveAdapter, ArchiveError, ArchivedEvent, SessionCatalog};

/// An adapter under test and direct access to what it stored.
pub trait Harness {
    fn adapter(&self) -> &dyn ArchiveAdapter;

    /// The stored catalog record as JSON, `None` when none is stored.
    fn stored_catalog(&self, session_id: &str) -> Option<serde_json::Value>;

    /// Stores `event_json` (a frame whose `inserted_at` may use a shorter read form) directly,
    /// bypassing the adapter's write validation. Chunk stores write it as the only line of a chunk.
    fn store_raw_event(&self, session_id: &str, seq: u64, event_json: &str);

    /// Names of the kinds of invalid stored data this backend can hold.
    fn invalid_data_kinds(&self) -> Vec<&'static str>;

    /// Stores invalid data of `kind` at seq 1 of the session.
    fn store_invalid_data(&self, session_id: &str, kind: &str);
}

/// A session id unique to this test run.
pub fn session_id(case: &str) -> String {
    format!("{case}-{:08x}", rand::random::<u32>())
}

/// The frame of `contract/tail.md` §3 for `seq`, varied across seqs: `source` present on every third
/// event, an idempotency key on every second, numbers that need more than 64 bits, non-ASCII text.
pub fn event_with(seq: u64, text: &str, inserted_at: &str) -> ArchivedEvent {
    let source = if seq.is_multiple_of(3) {
        r#""source":"agent","#
    } else {
        ""
    };
    let idempotency_key = if seq.is_multiple_of(2) {
        format!("\"key-{seq}\"")
    } else {
        "null".to_owned()
    };
    let text = serde_json::to_string(text).unwrap();
    let json = format!(
        concat!(
            r#"{{"seq":{seq},"type":"content","payload":{{"text":{text},"big":123456789012345678901234567890,"#,
            r#""pi":3.14159265358979323846264338327950288,"list":[1,"zwei",null,true]}},"actor":"user:u1","#,
            r#""producer_id":"producer-ä","producer_seq":{seq},{source}"metadata":{{"starcite_principal":{{"tenant_id":"acme","#,
            r#""principal_type":"user","principal_id":"u1","actor":"user:u1"}}}},"refs":{{}},"idempotency_key":{idempotency_key},"#,
            r#""inserted_at":"{inserted_at}"}}"#
        ),
        seq = seq,
        text = text,
        source = source,
        idempotency_key = idempotency_key,
        inserted_at = inserted_at,
    );
    ArchivedEvent {
        seq,
        json: Bytes::from(json),
    }
}

/// [`event_with`] at a fixed written-form timestamp.
pub fn event(seq: u64, text: &str) -> ArchivedEvent {
    event_with(seq, text, "2026-01-05T10:11:12.123456Z")
}

pub fn events(seqs: impl IntoIterator<Item = u64>, text: &str) -> Vec<ArchivedEvent> {
    seqs.into_iter().map(|seq| event(seq, text)).collect()
}

/// Checks that `actual` equals `expected`. Chunk stores return the frame byte for byte; Postgres
/// returns equal JSON (jsonb reorders nested object keys) with the frame's top-level key order.
pub fn assert_same_events(
    adapter: &dyn ArchiveAdapter,
    actual: &[ArchivedEvent],
    expected: &[ArchivedEvent],
) {
    let actual_seqs: Vec<u64> = actual.iter().map(|event| event.seq).collect();
    let expected_seqs: Vec<u64> = expected.iter().map(|event| event.seq).collect();
    assert_eq!(actual_seqs, expected_seqs, "seqs differ");
    for (actual, expected) in actual.iter().zip(expected) {
        let actual_text = std::str::from_utf8(&actual.json).unwrap();
        let expected_text = std::str::from_utf8(&expected.json).unwrap();
        if adapter.name() == "postgres" {
            let actual_value: serde_json::Value = serde_json::from_str(actual_text).unwrap();
            let expected_value: serde_json::Value = serde_json::from_str(expected_text).unwrap();
            assert_eq!(actual_value, expected_value, "event {} differs", actual.seq);
            assert!(actual_text.starts_with(&format!(r#"{{"seq":{},"type":"#, actual.seq)));
            assert!(actual_text.contains(r#""actor":"user:u1","producer_id":"#));
            assert!(actual_text.contains(r#","idempotency_key":"#));
            assert!(actual_text.ends_with(r#""inserted_at":"2026-01-05T10:11:12.123456Z"}"#));
        } else {
            assert_eq!(actual_text, expected_text, "event {} differs", actual.seq);
        }
    }
}

fn read(
    adapter: &dyn ArchiveAdapter,
    session_id: &str,
    from_seq: u64,
    to_seq: u64,
) -> Vec<ArchivedEvent> {
    adapter
        .read_events(session_id, from_seq, to_seq)
        .unwrap_or_else(|error| panic!("read {session_id} {from_seq}..={to_seq}: {error}"))
}

fn write(adapter: &dyn ArchiveAdapter, session_id: &str, events: &[ArchivedEvent]) -> u64 {
    adapter
        .write_events(session_id, events)
        .unwrap_or_else(|error| panic!("write {session_id}: {error}"))
}

fn seqs(events: &[ArchivedEvent]) -> Vec<u64> {
    events.iter().map(|event| event.seq).collect()
}

/// Written events read back unchanged; ranges filter; missing seqs and sessions read as empty.
pub fn round_trip(harness: &dyn Harness) {
    let adapter = harness.adapter();
    let session = session_id("round-trip");
    let written = events(1..=20, "hello \"world\" ✓");
    assert_eq!(write(adapter, &session, &written), 20);
    assert_same_events(adapter, &read(adapter, &session, 1, 20), &written);
    assert_same_events(adapter, &read(adapter, &session, 0, 1000), &written);
    assert_same_events(adapter, &read(adapter, &session, 5, 7), &written[4..7]);
    assert!(read(adapter, &session, 21, 30).is_empty());
    assert!(read(adapter, &session, 0, 0).is_empty());
    assert!(read(adapter, &session, 10, 5).is_empty());
    assert!(read(adapter, &session_id("never-written"), 1, 100).is_empty());
    assert_eq!(write(adapter, &session, &[]), 0);
}

/// 255, 256 and 257 events: the last fills chunk 1 and starts chunk 257; 255..258 spans both.
pub fn chunk_boundaries(harness: &dyn Harness) {
    let adapter = harness.adapter();
    for count in [255_u64, 256, 257] {
        let session = session_id(&format!("boundary-{count}"));
        let written = events(1..=count, "boundary");
        assert_eq!(write(adapter, &session, &written), count);
        assert_same_events(adapter, &read(adapter, &session, 1, count), &written);
        let spanning = read(adapter, &session, 255, 258);
        assert_eq!(seqs(&spanning), (255..=count.min(258)).collect::<Vec<_>>());
        assert_same_events(adapter, &spanning, &written[254..]);
    }
    let session = session_id("boundary-single");
    let written = events(256..=257, "edge");
    assert_eq!(write(adapter, &session, &written), 2);
    assert_eq!(seqs(&read(adapter, &session, 256, 256)), vec![256]);
    assert_eq!(seqs(&read(adapter, &session, 257, 257)), vec![257]);
    assert_eq!(seqs(&read(adapter, &session, 1, 255)), Vec::<u64>::new());
}

/// A crash between write and ack makes the archiver write the same events again: the second write
/// stores nothing new and changes nothing.
pub fn idempotent_rewrite(harness: &dyn Harness) {
    let adapter = harness.adapter();
    let session = session_id("rewrite");
    let written = events(1..=260, "once");
    assert_eq!(write(adapter, &session, &written), 260);
    assert_eq!(write(adapter, &session, &written), 0);
    assert_same_events(adapter, &read(adapter, &session, 1, 260), &written);
}

/// Overlapping and gapped writes merge; a stored seq keeps its stored event.
pub fn overlapping_writes_keep_stored_events(harness: &dyn Harness) {
    let adapter = harness.adapter();
    let session = session_id("overlap");
    let first = events(1..=10, "first");
    assert_eq!(write(adapter, &session, &first), 10);
    let second = events(5..=15, "second");
    assert_eq!(write(adapter, &session, &second), 5);
    let mut expected = first.clone();
    expected.extend_from_slice(&second[6..]);
    assert_same_events(adapter, &read(adapter, &session, 1, 15), &expected);

    // Gaps filled later, across the chunk boundary.
    let session = session_id("gaps");
    let outer = vec![event(250, "a"), event(260, "a")];
    assert_eq!(write(adapter, &session, &outer), 2);
    let inner = events(251..=259, "b");
    assert_eq!(write(adapter, &session, &inner), 9);
    let all = read(adapter, &session, 1, 1000);
    assert_eq!(seqs(&all), (250..=260).collect::<Vec<_>>());
}

/// A batch larger than one Postgres statement (5,000 rows) and spanning many chunks.
pub fn large_batch(harness: &dyn Harness) {
    let adapter = harness.adapter();
    let session = session_id("large");
    let written = events(1..=6000, "bulk");
    assert_eq!(write(adapter, &session, &written), 6000);
    assert_eq!(write(adapter, &session, &written), 0);
    assert_same_events(adapter, &read(adapter, &session, 1, 6000), &written);
}

/// Several threads write several sessions at once; every session reads back complete.
pub fn concurrent_sessions(harness: &(dyn Harness + Sync)) {
    const THREAD_COUNT: usize = 6;
    const SESSIONS_PER_THREAD_COUNT: usize = 3;
    const EVENTS_PER_SESSION_COUNT: u64 = 520;
    const BATCH_EVENTS_COUNT: usize = 130;
    let adapter = harness.adapter();
    let sessions: Vec<Vec<String>> = (0..THREAD_COUNT)
        .map(|thread_index| {
            (0..SESSIONS_PER_THREAD_COUNT)
                .map(|session_index| {
                    session_id(&format!("concurrent-{thread_index}-{session_index}"))
                })
                .collect()
        })
        .collect();
    let written = events(1..=EVENTS_PER_SESSION_COUNT, "concurrent");
    std::thread::scope(|scope| {
        for thread_sessions in &sessions {
            let written = &written;
            scope.spawn(move || {
                // Interleave the sessions batch by batch so that their writes overlap in time.
                for batch in written.chunks(BATCH_EVENTS_COUNT) {
                    for session in thread_sessions {
                        assert_eq!(write(adapter, session, batch), batch.len() as u64);
                    }
                }
            });
        }
    });
    for session in sessions.iter().flatten() {
        assert_same_events(
            adapter,
            &read(adapter, session, 1, EVENTS_PER_SESSION_COUNT),
            &written,
        );
    }
}

pub fn catalog(session: &str, title: Option<&str>) -> SessionCatalog {
    let metadata = serde_json::json!({"tenant_id": "acme", "labels": ["a", "b"], "score": 12345678901234567890_u64});
    SessionCatalog {
        id: session.to_owned(),
        title: title.map(str::to_owned),
        creator_principal: Some(
            serde_json::json!({"tenant_id": "acme", "id": "u1", "type": "user"}),
        ),
        metadata: metadata.as_object().unwrap().clone(),
        created_at: "2026-01-05T10:11:12.000001Z".to_owned(),
    }
}

/// The first catalog write wins; a second one succeeds and changes nothing.
pub fn catalog_create_if_absent(harness: &dyn Harness) {
    let adapter = harness.adapter();
    let session = session_id("catalog");
    assert!(harness.stored_catalog(&session).is_none());
    adapter
        .write_catalog(&catalog(&session, Some("first")))
        .unwrap();
    adapter
        .write_catalog(&catalog(&session, Some("second")))
        .unwrap();
    let stored = harness
        .stored_catalog(&session)
        .expect("catalog record stored");
    let expected = serde_json::json!({
        "id": session,
        "title": "first",
        "creator_principal": {"tenant_id": "acme", "id": "u1", "type": "user"},
        "metadata": {"tenant_id": "acme", "labels": ["a", "b"], "score": 12345678901234567890_u64},
        "created_at": "2026-01-05T10:11:12.000001Z",
    });
    assert_eq!(stored, expected);

    let session = session_id("catalog-bare");
    let mut bare = catalog(&session, None);
    bare.creator_principal = None;
    bare.metadata.clear();
    adapter.write_catalog(&bare).unwrap();
    let stored = harness
        .stored_catalog(&session)
        .expect("catalog record stored");
    assert_eq!(stored["title"], serde_json::Value::Null);
    assert_eq!(stored["creator_principal"], serde_json::Value::Null);
    assert_eq!(stored["metadata"], serde_json::json!({}));

    let mut invalid = catalog(&session_id("catalog-invalid"), None);
    invalid.created_at = "2026-01-05T10:11:12Z".to_owned();
    assert!(matches!(
        adapter.write_catalog(&invalid),
        Err(ArchiveError::InvalidCatalog { .. })
    ));
}

/// Invalid stored data makes reads fail instead of silently dropping or inventing events.
pub fn invalid_stored_data_fails_reads(harness: &dyn Harness) {
    let adapter = harness.adapter();
    for kind in harness.invalid_data_kinds() {
        let session = session_id(&format!("invalid-{kind}"));
        harness.store_invalid_data(&session, kind);
        match adapter.read_events(&session, 1, 10) {
            Err(ArchiveError::InvalidLine { .. }) => {}
            other => panic!("{kind}: expected an InvalidLine error, got {other:?}"),
        }
    }
}

/// Timestamps stored with fewer fractional digits or without `Z` are read back in the written form.
pub fn short_timestamps_read_in_written_form(harness: &dyn Harness) {
    let adapter = harness.adapter();
    let cases = [
        ("2026-01-05T10:11:12.5Z", "2026-01-05T10:11:12.500000Z"),
        ("2026-01-05T10:11:12Z", "2026-01-05T10:11:12.000000Z"),
        ("2026-01-05T10:11:12.123", "2026-01-05T10:11:12.123000Z"),
        ("2026-01-05T10:11:12", "2026-01-05T10:11:12.000000Z"),
    ];
    for (stored, expected) in cases {
        let session = session_id("timestamp");
        let raw = event_with(7, "ts", stored);
        harness.store_raw_event(&session, 7, std::str::from_utf8(&raw.json).unwrap());
        let read_back = read(adapter, &session, 1, 10);
        assert_eq!(seqs(&read_back), vec![7], "{stored}");
        let value: serde_json::Value = serde_json::from_slice(&read_back[0].json).unwrap();
        assert_eq!(value["inserted_at"], expected, "{stored}");
        let text = std::str::from_utf8(&read_back[0].json).unwrap();
        assert!(
            text.ends_with(&format!(r#""inserted_at":"{expected}"}}"#)),
            "{text}"
        );
    }
}

/// Malformed batches are refused before anything is stored.
pub fn invalid_batches_are_refused(harness: &dyn Harness) {
    let adapter = harness.adapter();
    let session = session_id("refused");
    let descending = vec![event(2, "x"), event(1, "x")];
    assert!(matches!(
        adapter.write_events(&session, &descending),
        Err(ArchiveError::InvalidEvent { seq: 1, .. })
    ));
    let short_timestamp = vec![event(1, "x"), event_with(2, "x", "2026-01-05T10:11:12Z")];
    assert!(matches!(
        adapter.write_events(&session, &short_timestamp),
        Err(ArchiveError::InvalidEvent { seq: 2, .. })
    ));
    let mismatched = vec![ArchivedEvent {
        seq: 3,
        json: event(4, "x").json,
    }];
    assert!(matches!(
        adapter.write_events(&session, &mismatched),
        Err(ArchiveError::InvalidEvent { seq: 3, .. })
    ));
    assert!(read(adapter, &session, 1, 10).is_empty());
}

/// Prints write and read throughput (run with `--nocapture`); nothing is asserted about speed.
pub fn report_throughput(harness: &dyn Harness) {
    const SESSION_COUNT: u64 = 4;
    const EVENTS_PER_SESSION_COUNT: u64 = 10_000;
    const BATCH_EVENTS_COUNT: usize = 5000;
    let adapter = harness.adapter();
    let written = events(
        1..=EVENTS_PER_SESSION_COUNT,
        "throughput payload of moderate size",
    );
    let sessions: Vec<String> = (0..SESSION_COUNT)
        .map(|_| session_id("throughput"))
        .collect();
    let started = Instant::now();
    for session in &sessions {
        for batch in written.chunks(BATCH_EVENTS_COUNT) {
            write(adapter, session, batch);
        }
    }
    let write_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for session in &sessions {
        assert_eq!(
            read(adapter, session, 1, EVENTS_PER_SESSION_COUNT).len() as u64,
            EVENTS_PER_SESSION_COUNT
        );
    }
    let read_seconds = started.elapsed().as_secs_f64();
    let total = (SESSION_COUNT * EVENTS_PER_SESSION_COUNT) as f64;
    println!(
        "archive throughput [{}]: write {:.0} events/s, read {:.0} events/s ({} events of {} bytes, batches of {})",
        adapter.name(),
        total / write_seconds,
        total / read_seconds,
        total,
        written[0].json.len(),
        BATCH_EVENTS_COUNT,
    );
}

/// Generates one `#[test]` per suite case; `$harness` is an expression giving a fresh harness.
macro_rules! archive_suite {
    ($harness:expr) => {
        #[test]
        fn round_trip() {
            $crate::suite::round_trip(&$harness);
        }
        #[test]
        fn chunk_boundaries() {
            $crate::suite::chunk_boundaries(&$harness);
        }
        #[test]
        fn idempotent_rewrite() {
            $crate::suite::idempotent_rewrite(&$harness);
        }
        #[test]
        fn overlapping_writes_keep_stored_events() {
            $crate::suite::overlapping_writes_keep_stored_events(&$harness);
        }
        #[test]
        fn large_batch() {
            $crate::suite::large_batch(&$harness);
        }
        #[test]
        fn concurrent_sessions() {
            $crate::suite::concurrent_sessions(&$harness);
        }
        #[test]
        fn catalog_create_if_absent() {
            $crate::suite::catalog_create_if_absent(&$harness);
        }
        #[test]
        fn invalid_stored_data_fails_reads() {
            $crate::suite::invalid_stored_data_fails_reads(&$harness);
        }
        #[test]
        fn short_timestamps_read_in_written_form() {
            $crate::suite::short_timestamps_read_in_written_form(&$harness);
        }
        #[test]
        fn invalid_batches_are_refused() {
            $crate::suite::invalid_batches_are_refused(&$harness);
        }
        #[test]
        fn report_throughput() {
            $crate::suite::report_throughput(&$harness);
        }
    };
}
pub(crate) use archive_suite;

/// Invalid chunk bodies for the chunk stores, by kind.
pub fn invalid_chunk_body(kind: &str) -> String {
    let valid = String::from_utf8(event(1, "x").json.to_vec()).unwrap();
    match kind {
        "not-an-object" => "[1,2,3]".to_owned(),
        "not-json" => "{\"seq\":1,".to_owned(),
        "missing-refs" => valid.replace(r#""refs":{},"#, ""),
        "missing-producer-id" => valid.replace(r#""producer_id":"producer-ä","#, ""),
        "trailing-newline" => format!("{valid}\n"),
        "seq-outside-chunk" => valid.replace(r#"{"seq":1,"#, r#"{"seq":900,"#),
        other => panic!("unknown invalid data kind {other}"),
    }
}

pub const INVALID_CHUNK_KINDS: &[&str] = &[
    "not-an-object",
    "not-json",
    "missing-refs",
    "missing-producer-id",
    "trailing-newline",
    "seq-outside-chunk",
];
