//! The append decision procedure (semantics.md §4, §5) applied through the log.

use std::sync::atomic::Ordering;

use super::*;
use crate::api::{AppendReply, ListQuery, Notification};
use crate::time::parse_timestamp;

/// http-api.md §13, mode `none`, replayed through apply with the example's stamps.
#[test]
fn worked_example_sequence() {
    let mut harness = Harness::new();
    let created_at_us = parse_timestamp("2026-01-05T10:11:12.123456Z").expect("parses");
    let ApplyOutcome::Created(record) = harness.apply(create("s1", created_at_us)) else {
        panic!("create failed");
    };
    assert_eq!(record.created_at_us, created_at_us);
    assert_eq!((record.last_seq, record.archived_seq), (0, 0));
    assert_eq!(
        harness.apply(create("s1", created_at_us + 5)),
        ApplyOutcome::Rejected(ServiceError::SessionExists)
    );
    assert_eq!(
        harness.append_one("s1", event("p", 1), None),
        appended(1, 1)
    );
    assert_eq!(harness.append_one("s1", event("p", 1), None), deduped(1, 1));
    let mut changed = event("p", 1);
    changed.payload = object(r#"{"x":1}"#);
    assert_eq!(
        harness.append_one("s1", changed, None),
        Err(ServiceError::ProducerReplayConflict)
    );
    let error = harness
        .append_one("s1", event("p", 3), None)
        .expect_err("gap");
    assert_eq!(error.message(), "Producer p expected seq 2, got 3");
    let error = harness
        .append_one("s1", event("p", 2), Some(0))
        .expect_err("stale");
    assert_eq!(
        error,
        ServiceError::ExpectedSeqConflict {
            expected: 0,
            current: 1
        }
    );
    assert_eq!(error.message(), "Expected seq 0, current seq is 1");
    let second_stamp_us = parse_timestamp("2026-01-05T10:11:13.000001Z").expect("parses");
    let outcome = harness.apply(append("s1", vec![event("p", 2)], Some(1), second_stamp_us));
    assert_eq!(
        outcome,
        ApplyOutcome::Appended {
            reply: AppendReply {
                results: vec![AppendResult {
                    seq: 2,
                    last_seq: 2,
                    deduped: false
                }],
                last_seq: 2
            },
            notifications: vec![Notification {
                seq: 2,
                last_seq: 2
            }],
            events_appended: 1,
        }
    );
    // Dedupe wins over a now-stale expected_seq.
    assert_eq!(
        harness.append_one("s1", event("p", 2), Some(1)),
        deduped(2, 2)
    );
    assert_eq!(
        harness.append_one("s1", event("q", 1), None),
        appended(3, 3)
    );
    assert_eq!(
        harness.append_one("nope", event("p", 1), None),
        Err(ServiceError::SessionNotFound)
    );
    let page = harness.group.list(&ListQuery {
        limit: 1,
        cursor: None,
        metadata_filters: Vec::new(),
        creator_id: None,
        creator_tenant_id: None,
    });
    assert_eq!(page.len(), 1, "only one session exists");
    assert_eq!(
        (page[0].id.as_str(), page[0].last_seq, page[0].archived_seq),
        ("s1", 3, 0)
    );
    let batch = harness.group.read("s1", 1, 1).expect("hot read");
    assert_eq!(
        (batch.first_seq, batch.last_seq, batch.events.len()),
        (2, 3, 1)
    );
    assert_eq!(
        &batch.events[0][..],
        br#"{"seq":2,"type":"t","payload":{},"actor":"a","producer_id":"p","producer_seq":2,"metadata":{},"refs":{},"idempotency_key":null,"inserted_at":"2026-01-05T10:11:13.000001Z"}"#
    );
}

/// semantics.md §4 step 5, one assertion per row of the producer sequence table, plus the
/// dedupe rules around it.
#[test]
fn decision_procedure_rows() {
    let mut harness = Harness::new();
    harness.apply(create("s", 0));
    // No cursor: p = 1 appends, anything else conflicts with expected 1.
    assert_eq!(
        harness.append_one("s", event("a", 2), None),
        seq_conflict("a", 1, 2)
    );
    assert_eq!(harness.append_one("s", event("a", 1), None), appended(1, 1));
    // Cursor (L = 1): p = L + 1 appends.
    assert_eq!(harness.append_one("s", event("a", 2), None), appended(2, 2));
    // p = L with other content: replay conflict; with the same content: dedupe.
    let mut other = event("a", 2);
    other.idempotency_key = Some("k".to_owned());
    assert_eq!(
        harness.append_one("s", other, None),
        Err(ServiceError::ProducerReplayConflict)
    );
    assert_eq!(harness.append_one("s", event("a", 2), None), deduped(2, 2));
    // p < L (even an exact retry of an older event) and p > L + 1 conflict with expected L + 1.
    assert_eq!(
        harness.append_one("s", event("a", 1), None),
        seq_conflict("a", 3, 1)
    );
    assert_eq!(
        harness.append_one("s", event("a", 5), None),
        seq_conflict("a", 3, 5)
    );
    // Producers are independent; seq is shared.
    assert_eq!(harness.append_one("s", event("b", 1), None), appended(3, 3));
    assert_eq!(harness.append_one("s", event("a", 3), None), appended(4, 4));
    // A dedupe reports the current last_seq and skips expected_seq.
    assert_eq!(
        harness.append_one("s", event("b", 1), Some(99)),
        deduped(3, 4)
    );
    // expected_seq is checked before the producer sequence.
    assert_eq!(
        harness.append_one("s", event("b", 7), Some(3)),
        Err(ServiceError::ExpectedSeqConflict {
            expected: 3,
            current: 4
        })
    );
    assert_eq!(
        harness.append_one("s", event("b", 2), Some(4)),
        appended(5, 5)
    );
    let record = harness.group.session("s").expect("exists");
    assert_eq!(record.last_seq, 5);
}

#[test]
fn rejections_do_not_change_state() {
    let mut harness = Harness::new();
    harness.apply(create("s", 0));
    harness
        .append_one("s", event("a", 1), None)
        .expect("appends");
    let before = harness.sessions_bytes();
    let counter_before = harness.counter.load(Ordering::Relaxed);
    let rejected = [
        append("s", vec![event("a", 3)], None, 5),
        append("s", vec![event("a", 2)], Some(0), 5),
        append(
            "s",
            vec![event("b", 1), event("c", 1), event("a", 9)],
            None,
            5,
        ),
        append(
            "s",
            vec![event("a", 1), event("b", 1), event("b", 1), event("b", 3)],
            None,
            5,
        ),
        append("missing", vec![event("a", 1)], None, 5),
        create("s", 5),
    ];
    for command in rejected {
        let outcome = harness.apply(command.clone());
        assert!(
            matches!(outcome, ApplyOutcome::Rejected(_)),
            "{command:?} gave {outcome:?}"
        );
        assert_eq!(
            harness.sessions_bytes(),
            before,
            "{command:?} changed state"
        );
        assert_eq!(harness.counter.load(Ordering::Relaxed), counter_before);
    }
}

/// semantics.md §4.2: per-event procedure on a working copy, running last_seq, one expected_seq
/// check against the pre-batch last_seq unless every event is a dedupe.
#[test]
fn batch_semantics() {
    let mut harness = Harness::new();
    harness.apply(create("s", 0));
    let outcome = harness.apply(append(
        "s",
        vec![event("a", 1), event("a", 2), event("b", 1)],
        Some(0),
        10,
    ));
    let ApplyOutcome::Appended {
        reply,
        notifications,
        events_appended,
    } = outcome
    else {
        panic!("batch rejected: {outcome:?}");
    };
    assert_eq!(reply.last_seq, 3);
    assert_eq!(
        reply.results,
        [
            AppendResult {
                seq: 1,
                last_seq: 1,
                deduped: false
            },
            AppendResult {
                seq: 2,
                last_seq: 2,
                deduped: false
            },
            AppendResult {
                seq: 3,
                last_seq: 3,
                deduped: false
            },
        ]
    );
    assert_eq!(events_appended, 3);
    assert_eq!(
        notifications
            .iter()
            .map(|n| (n.seq, n.last_seq))
            .collect::<Vec<_>>(),
        [(1, 3), (2, 3), (3, 3)]
    );

    // All dedupes: expected_seq is skipped.
    let ApplyOutcome::Appended {
        reply,
        notifications,
        ..
    } = harness.apply(append("s", vec![event("a", 2), event("b", 1)], Some(0), 11))
    else {
        panic!("all-dedupe batch rejected");
    };
    assert_eq!(
        reply.results,
        [
            AppendResult {
                seq: 2,
                last_seq: 3,
                deduped: true
            },
            AppendResult {
                seq: 3,
                last_seq: 3,
                deduped: true
            }
        ]
    );
    assert!(notifications.is_empty());

    // A dedupe first, then a new event: expected_seq is compared with the pre-batch last_seq.
    assert_eq!(
        harness.apply(append("s", vec![event("b", 1), event("c", 1)], Some(2), 12)),
        ApplyOutcome::Rejected(ServiceError::ExpectedSeqConflict {
            expected: 2,
            current: 3
        })
    );
    let ApplyOutcome::Appended { reply, .. } = harness.apply(append(
        "s",
        vec![event("b", 1), event("c", 1), event("c", 1)],
        Some(3),
        12,
    )) else {
        panic!("batch rejected");
    };
    // The repeated event dedupes against the working copy.
    assert_eq!(
        reply.results,
        [
            AppendResult {
                seq: 3,
                last_seq: 3,
                deduped: true
            },
            AppendResult {
                seq: 4,
                last_seq: 4,
                deduped: false
            },
            AppendResult {
                seq: 4,
                last_seq: 4,
                deduped: true
            },
        ]
    );
    // Retrying a batch with two events of one producer conflicts (only the latest dedupes).
    assert_eq!(
        harness.apply(append("s", vec![event("a", 1), event("a", 2)], None, 13)),
        ApplyOutcome::Rejected(ServiceError::ProducerSeqConflict {
            producer_id: "a".to_owned(),
            expected: 3,
            got: 1
        })
    );
}

/// semantics.md §4.1 with 10,001 producers: the least recently appended one is forgotten.
#[test]
fn producer_lru_forgets_the_least_recent_producer() {
    let mut harness = Harness::new();
    harness.apply(create("s", 0));
    for index in 0..=PRODUCER_CURSORS_MAX {
        let producer_id = format!("p{index}");
        assert!(harness
            .append_one("s", event(&producer_id, 1), None)
            .is_ok());
    }
    let session = &harness.group.sessions["s"];
    assert_eq!(session.cursors.len(), PRODUCER_CURSORS_MAX);
    assert!(session.cursors.get("p0").is_none());
    assert!(session.cursors.get("p1").is_some());
    // The forgotten producer must restart at 1; a late retry of its old event appends again.
    assert_eq!(
        harness.append_one("s", event("p0", 2), None),
        seq_conflict("p0", 1, 2)
    );
    assert_eq!(
        harness.append_one("s", event("p0", 1), None),
        appended(10_002, 10_002)
    );
    // That evicted p1, the next least recent; p2 still continues.
    assert_eq!(
        harness.append_one("s", event("p1", 2), None),
        seq_conflict("p1", 1, 2)
    );
    assert_eq!(
        harness.append_one("s", event("p2", 2), None),
        appended(10_003, 10_003)
    );

    // An eviction inside a rejected batch is undone with the rest of the working copy: "new"
    // evicts p3, then p3's next event is a conflict (p3 is forgotten within the batch).
    let before = harness.sessions_bytes();
    assert_eq!(
        harness.apply(append("s", vec![event("new", 1), event("p3", 2)], None, 5)),
        ApplyOutcome::Rejected(ServiceError::ProducerSeqConflict {
            producer_id: "p3".to_owned(),
            expected: 1,
            got: 2
        })
    );
    assert_eq!(harness.sessions_bytes(), before);
    assert_eq!(
        harness.append_one("s", event("p3", 2), None),
        appended(10_004, 10_004)
    );
}

/// semantics.md §5: inserted_at = max(stamp, previous inserted_at); a batch shares one stamp.
#[test]
fn timestamps_never_decrease() {
    let mut harness = Harness::new();
    harness.apply(create("s", 50));
    assert_eq!(
        harness.group.session("s").expect("exists").created_at_us,
        50
    );
    harness.apply(append("s", vec![event("a", 1)], None, 2_000_000));
    harness.apply(append(
        "s",
        vec![event("a", 2), event("b", 1)],
        None,
        1_000_000,
    ));
    harness.apply(append("s", vec![event("a", 3)], None, 3_000_001));
    let batch = harness.group.read("s", 0, 10).expect("hot read");
    let inserted: Vec<String> = batch
        .events
        .iter()
        .map(|frame| {
            let value: Value = serde_json::from_slice(frame).expect("frame is JSON");
            value["inserted_at"].as_str().expect("string").to_owned()
        })
        .collect();
    assert_eq!(
        inserted,
        [
            "1970-01-01T00:00:02.000000Z",
            "1970-01-01T00:00:02.000000Z",
            "1970-01-01T00:00:02.000000Z",
            "1970-01-01T00:00:03.000001Z"
        ]
    );
}
