//! Archive acknowledgement, `U` accounting, hot reads and listing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;
use crate::api::{ListQuery, SessionRecord};

/// semantics.md §8 and archive.md §8: acks evict hot events and release their bytes from `U`.
#[test]
fn acknowledge_evicts_and_accounts_unarchived_bytes() {
    let counter = Arc::new(AtomicU64::new(0));
    let mut first = GroupState::new(1, counter.clone());
    let mut second = GroupState::new(2, counter.clone());
    first.apply(1, &create("s", 0));
    second.apply(1, &create("t", 0));
    first.apply(
        2,
        &append(
            "s",
            vec![event("a", 1), event("a", 2), event("a", 3)],
            None,
            0,
        ),
    );
    second.apply(2, &append("t", vec![event("a", 1)], None, 0));
    let frames = first.read("s", 0, 10).expect("hot read").events;
    let frame_bytes: Vec<u64> = frames.iter().map(|frame| frame.len() as u64).collect();
    assert_eq!(first.unarchived_bytes(), frame_bytes.iter().sum::<u64>());
    assert_eq!(
        counter.load(Ordering::Relaxed),
        first.unarchived_bytes() + second.unarchived_bytes()
    );

    let acked = first.apply(
        3,
        &Command::AckArchived {
            session_id: "s".to_owned(),
            upto: 2,
        },
    );
    assert_eq!(
        acked,
        ApplyOutcome::Acked {
            session_id: "s".to_owned(),
            archived_seq: 2
        }
    );
    assert_eq!(first.unarchived_bytes(), frame_bytes[2]);
    assert_eq!(first.read("s", 0, 10), Err(ServiceError::EventGapDetected));
    assert_eq!(first.read("s", 2, 10).expect("hot").events, frames[2..]);
    assert_eq!(first.hot_events("s", 1, 3), [(3, frames[2].clone())]);
    assert_eq!(first.hot_event("s", 2), None);
    assert_eq!(first.unarchived_sessions().count(), 1);
    // A lower or repeated upto changes nothing; upto beyond last_seq stops at last_seq.
    let before = first.encode_snapshot()[SNAPSHOT_HEADER_BYTES..].to_vec();
    first.apply(
        4,
        &Command::AckArchived {
            session_id: "s".to_owned(),
            upto: 1,
        },
    );
    first.apply(
        5,
        &Command::AckArchived {
            session_id: "s".to_owned(),
            upto: 2,
        },
    );
    assert_eq!(first.encode_snapshot()[SNAPSHOT_HEADER_BYTES..], before);
    let acked = first.apply(
        6,
        &Command::AckArchived {
            session_id: "s".to_owned(),
            upto: 99,
        },
    );
    assert_eq!(
        acked,
        ApplyOutcome::Acked {
            session_id: "s".to_owned(),
            archived_seq: 3
        }
    );
    assert_eq!(first.unarchived_bytes(), 0);
    assert_eq!(first.unarchived_sessions().count(), 0);
    assert_eq!(counter.load(Ordering::Relaxed), second.unarchived_bytes());
    let empty = first.read("s", 3, 10).expect("nothing to read");
    assert_eq!(
        (empty.first_seq, empty.events.len(), empty.last_seq),
        (4, 0, 3)
    );
    // Later events are stored after the archived ones.
    first.apply(7, &append("s", vec![event("a", 4)], None, 0));
    assert_eq!(first.read("s", 3, 10).expect("hot").events.len(), 1);
    assert_eq!(
        first.apply(
            8,
            &Command::AckArchived {
                session_id: "missing".to_owned(),
                upto: 1
            }
        ),
        ApplyOutcome::Rejected(ServiceError::SessionNotFound)
    );
    // Dropping a group gives its share back.
    drop(first);
    assert_eq!(counter.load(Ordering::Relaxed), second.unarchived_bytes());
    drop(second);
    assert_eq!(counter.load(Ordering::Relaxed), 0);
}

#[test]
fn read_bounds() {
    let mut harness = Harness::new();
    harness.apply(create("s", 0));
    harness.apply(append(
        "s",
        (1..=5).map(|p| event("a", p)).collect(),
        None,
        0,
    ));
    let batch = harness.group.read("s", 1, 2).expect("hot read");
    assert_eq!(
        (batch.first_seq, batch.events.len(), batch.last_seq),
        (2, 2, 5)
    );
    let batch = harness.group.read("s", 3, 1000).expect("hot read");
    assert_eq!(batch.events.len(), 2);
    let batch = harness
        .group
        .read("s", 9, 10)
        .expect("cursor beyond last_seq");
    assert!(batch.events.is_empty());
    assert_eq!(
        harness
            .group
            .read("s", u64::MAX, 10)
            .expect("no overflow")
            .events
            .len(),
        0
    );
    assert_eq!(
        harness.group.read("x", 0, 10),
        Err(ServiceError::SessionNotFound)
    );
}

fn list_query(limit: u32) -> ListQuery {
    ListQuery {
        limit,
        cursor: None,
        metadata_filters: Vec::new(),
        creator_id: None,
        creator_tenant_id: None,
    }
}

fn ids(records: &[SessionRecord]) -> Vec<&str> {
    records.iter().map(|record| record.id.as_str()).collect()
}

#[test]
fn list_pages_and_filters() {
    let mut harness = Harness::new();
    let sessions: [(&str, Option<Principal>, &str); 5] = [
        (
            "b",
            Some(user("acme", "u1")),
            r#"{"tenant_id":"acme","kind":"x"}"#,
        ),
        (
            "a",
            Some(user("acme", "u2")),
            r#"{"tenant_id":"acme","kind":"y","n":1}"#,
        ),
        (
            "é",
            Some(user("beta", "u1")),
            r#"{"tenant_id":"beta","kind":"x","n":"1"}"#,
        ),
        ("c", None, r#"{"kind":"x"}"#),
        (
            "Z",
            Some(user("acme", "u1")),
            r#"{"tenant_id":"acme","flag":true}"#,
        ),
    ];
    for (id, creator_principal, metadata) in sessions {
        let outcome = harness.apply(Command::CreateSession {
            session: CreateSession {
                id: id.to_owned(),
                title: Some("t".to_owned()),
                creator_principal,
                metadata: object(metadata),
            },
            stamp_us: 0,
        });
        assert!(matches!(outcome, ApplyOutcome::Created(_)));
    }
    // Byte order: "Z" < "a" < "b" < "c" < "é"; limit + 1 items.
    assert_eq!(ids(&harness.group.list(&list_query(2))), ["Z", "a", "b"]);
    assert_eq!(
        ids(&harness.group.list(&list_query(1000))),
        ["Z", "a", "b", "c", "é"]
    );
    let mut query = list_query(2);
    query.cursor = Some("a".to_owned());
    assert_eq!(ids(&harness.group.list(&query)), ["b", "c", "é"]);
    query.cursor = Some("c".to_owned());
    assert_eq!(ids(&harness.group.list(&query)), ["é"]);
    query.cursor = Some("é".to_owned());
    assert!(harness.group.list(&query).is_empty());

    let mut query = list_query(10);
    query.metadata_filters = vec![("kind".to_owned(), "x".to_owned())];
    assert_eq!(ids(&harness.group.list(&query)), ["b", "c", "é"]);
    // Only JSON strings match: `"n":1` and `"flag":true` never do.
    query.metadata_filters = vec![("n".to_owned(), "1".to_owned())];
    assert_eq!(ids(&harness.group.list(&query)), ["é"]);
    query.metadata_filters = vec![("flag".to_owned(), "true".to_owned())];
    assert!(harness.group.list(&query).is_empty());

    let mut query = list_query(10);
    query.creator_tenant_id = Some("acme".to_owned());
    assert_eq!(ids(&harness.group.list(&query)), ["Z", "a", "b"]);
    query.creator_id = Some("u1".to_owned());
    assert_eq!(ids(&harness.group.list(&query)), ["Z", "b"]);
    query.metadata_filters = vec![("kind".to_owned(), "x".to_owned())];
    assert_eq!(ids(&harness.group.list(&query)), ["b"]);
    // Sessions without a creator never match a creator filter.
    let mut query = list_query(10);
    query.creator_id = Some("u1".to_owned());
    assert_eq!(ids(&harness.group.list(&query)), ["Z", "b", "é"]);
}
