//! Snapshots and determinism: what lets replicas agree byte for byte.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;
use proptest::prelude::*;

fn populated() -> Harness {
    let mut harness = Harness::new();
    harness.apply(create("s1", 10));
    harness.apply(Command::CreateSession {
        session: CreateSession {
            id: "s2".to_owned(),
            title: Some("Draft".to_owned()),
            creator_principal: None,
            metadata: object(r#"{"n":1.0,"big":123456789012345678901234567890}"#),
        },
        stamp_us: -3,
    });
    let mut rich = event("p", 1);
    rich.source = Some("agent".to_owned());
    rich.idempotency_key = Some("k".to_owned());
    rich.payload = object(r#"{"x":[1,1.0,{"y":null}]}"#);
    harness.apply(append(
        "s1",
        vec![rich, event("q", 1), event("p", 2)],
        None,
        100,
    ));
    harness.apply(append("s2", vec![event("p", 1)], None, 50));
    harness.apply(Command::AckArchived {
        session_id: "s1".to_owned(),
        upto: 1,
    });
    harness
}

#[test]
fn snapshot_round_trips() {
    let harness = populated();
    let bytes = harness.group.encode_snapshot();
    let counter = Arc::new(AtomicU64::new(0));
    let mut restored = GroupState::decode_snapshot(7, &bytes, counter.clone()).expect("decodes");
    assert_eq!(restored.encode_snapshot(), bytes);
    assert_eq!(restored.applied_index(), harness.group.applied_index());
    assert_eq!(
        restored.unarchived_bytes(),
        harness.group.unarchived_bytes()
    );
    assert_eq!(counter.load(Ordering::Relaxed), restored.unarchived_bytes());
    for id in ["s1", "s2"] {
        assert_eq!(restored.session(id), harness.group.session(id));
        assert_eq!(restored.read(id, 1, 10), harness.group.read(id, 1, 10));
    }
    // Cursors survive: the dedupe and the conflict rules still apply after restore.
    let mut original = harness;
    for command in [
        append("s1", vec![event("p", 2)], None, 0),
        append("s1", vec![event("q", 1)], None, 0),
        append("s1", vec![event("q", 2)], None, 0),
    ] {
        let next = original.group.applied_index() + 1;
        assert_eq!(
            restored.apply(next, &command),
            original.group.apply(next, &command)
        );
    }
    assert_eq!(restored.encode_snapshot(), original.group.encode_snapshot());
    assert_eq!(
        GroupState::decode_snapshot(8, &bytes, counter.clone()).map(|_| ()),
        Err(SnapshotDecodeError::WrongGroup {
            expected: 8,
            found: 7
        })
    );
    for length in 0..bytes.len() {
        assert!(GroupState::decode_snapshot(7, &bytes[..length], counter.clone()).is_err());
    }
    drop(restored);
    assert_eq!(
        counter.load(Ordering::Relaxed),
        0,
        "failed decodes leave the counter untouched"
    );
}

/// A small command alphabet, so that random logs hit dedupes, conflicts and acks often.
fn arbitrary_command() -> impl Strategy<Value = Command> {
    let session = prop::sample::select(vec!["s1", "s2"]);
    let new_event = (
        prop::sample::select(vec!["p", "q", "r"]),
        1_u64..3,
        0_u8..2,
        any::<bool>(),
    )
        .prop_map(
            |(producer_id, producer_seq, payload_variant, with_source)| {
                let mut event = event(producer_id, producer_seq);
                event.payload = object(&format!(r#"{{"v":{payload_variant},"f":1.0}}"#));
                event.source = with_source.then(|| "agent".to_owned());
                event
            },
        );
    prop_oneof![
        2 => (session.clone(), -5_i64..5).prop_map(|(id, stamp_us)| create(id, stamp_us)),
        6 => (session.clone(), prop::collection::vec(new_event, 1..4), prop::option::weighted(0.2, 0_u64..6), 0_i64..100)
            .prop_map(|(id, events, expected_seq, stamp_us)| append(id, events, expected_seq, stamp_us)),
        1 => (session, 0_u64..8).prop_map(|(id, upto)| Command::AckArchived { session_id: id.to_owned(), upto }),
    ]
}

proptest! {
    /// The same log applied to two replicas gives identical outcomes and snapshot bytes, and a
    /// replica restored from a mid-log snapshot ends in the same state.
    #[test]
    fn apply_is_deterministic(
        commands in prop::collection::vec(arbitrary_command(), 1..60),
        split in any::<prop::sample::Index>(),
    ) {
        let mut first = Harness::new();
        let mut second = Harness::new();
        let split = split.index(commands.len());
        let mut restored: Option<GroupState> = None;
        let restored_counter = Arc::new(AtomicU64::new(0));
        for (position, command) in commands.iter().enumerate() {
            if position == split {
                let snapshot = first.group.encode_snapshot();
                restored = Some(GroupState::decode_snapshot(7, &snapshot, restored_counter.clone()).expect("decodes"));
            }
            let outcome = first.apply(command.clone());
            prop_assert_eq!(&second.apply(command.clone()), &outcome);
            if let Some(group) = restored.as_mut() {
                prop_assert_eq!(&group.apply(first.group.applied_index(), command), &outcome);
            }
            for id in ["s1", "s2", "s3"] {
                if let Some(record) = first.group.session(id) {
                    let hot = first.group.hot_events(id, 0, u64::MAX);
                    prop_assert_eq!(hot.len() as u64, record.last_seq - record.archived_seq);
                }
            }
        }
        let bytes = first.group.encode_snapshot();
        prop_assert_eq!(&second.group.encode_snapshot(), &bytes);
        prop_assert_eq!(&restored.as_ref().expect("split is inside the log").encode_snapshot(), &bytes);
        prop_assert_eq!(first.counter.load(Ordering::Relaxed), first.group.unarchived_bytes());
        prop_assert_eq!(restored_counter.load(Ordering::Relaxed), first.group.unarchived_bytes());
    }

    #[test]
    fn snapshot_decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = GroupState::decode_snapshot(7, &bytes, Arc::new(AtomicU64::new(0)));
    }

    #[test]
    fn mutated_snapshot_decode_never_panics(position in any::<prop::sample::Index>(), value in any::<u8>()) {
        let mut bytes = populated().group.encode_snapshot();
        let position = position.index(bytes.len());
        bytes[position] = value;
        let _ = GroupState::decode_snapshot(7, &bytes, Arc::new(AtomicU64::new(0)));
    }
}
