//! Restart on the same directory: recovery rebuilds identical state and seqs continue.

#![allow(clippy::unwrap_used)]

mod shard_support;

use bytes::Bytes;
use shard_support::{append_one, create_request, data_dir, ids_on_shard, test_config, TestNode};
use starcite_engine::api::Service;
use starcite_engine::state::Command;
use starcite_engine::wal::{Wal, WalOptions, WalRecord};
use starcite_engine::EngineError;

/// State after a clean stop and restart equals the state before, frames byte for byte, and the
/// next append gets the next seq; dropping a node without an explicit stop also recovers.
#[test]
fn restart_recovers_state_and_continues_seq() {
    let (_dir, path) = data_dir();
    let mut ids = ids_on_shard("r", 0, 2, 2);
    ids.extend(ids_on_shard("r", 1, 2, 2));
    let node = TestNode::start(test_config(&path, 2)).unwrap();
    let written_ids = ids.clone();
    let before = node.run(0, move |engine| async move {
        let mut snapshot = Vec::new();
        for id in &written_ids {
            engine.create_session(create_request(id)).await.unwrap();
            for producer_seq in 1..=5 {
                engine
                    .append(append_one(id, "p", producer_seq, producer_seq as i64))
                    .await
                    .unwrap();
            }
            let record = engine.get_session(id).await.unwrap();
            let batch = engine.read_events(id, 0, 100).await.unwrap();
            snapshot.push((record, batch));
        }
        snapshot
    });
    node.stop().unwrap();

    let node = TestNode::start(test_config(&path, 2)).unwrap();
    let read_ids = ids.clone();
    let after = node.run(1, move |engine| async move {
        let mut snapshot = Vec::new();
        for id in &read_ids {
            let record = engine.get_session(id).await.unwrap();
            let batch = engine.read_events(id, 0, 100).await.unwrap();
            snapshot.push((record, batch));
        }
        // The producer cursor survived: a retry dedupes, the next producer seq appends seq 6.
        let retry = engine
            .append(append_one(&read_ids[0], "p", 5, 5))
            .await
            .unwrap();
        assert!(retry.results[0].deduped);
        let next = engine
            .append(append_one(&read_ids[0], "p", 6, 6))
            .await
            .unwrap();
        assert_eq!(next.last_seq, 6);
        snapshot
    });
    assert_eq!(before, after);
    drop(node);

    let node = TestNode::start(test_config(&path, 2)).unwrap();
    let first = ids[0].clone();
    let last_seq = node.run(0, move |engine| async move {
        engine.get_session(&first).await.unwrap().last_seq
    });
    assert_eq!(last_seq, 6);
    node.stop().unwrap();
}

/// A data directory written with 2 shards refuses to start with 3.
#[test]
fn shard_count_change_is_refused() {
    let (_dir, path) = data_dir();
    TestNode::start(test_config(&path, 2))
        .unwrap()
        .stop()
        .unwrap();
    let result = TestNode::start(test_config(&path, 3));
    assert!(matches!(result, Err(EngineError::LayoutMismatch { .. })));
}

/// A data directory that cannot be created is a typed startup error.
#[test]
fn unwritable_data_dir_is_a_startup_error() {
    let (dir, _) = data_dir();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let result = TestNode::start(test_config(&file, 1));
    assert!(
        matches!(result, Err(EngineError::DataDir { .. })),
        "{:?}",
        result.err()
    );
}

/// Write `records` directly into shard 0's log of a 1-shard node at `path`.
fn write_raw_records(path: &std::path::Path, records: Vec<WalRecord>) {
    let shard_dir = path.join("raft").join("shard-0");
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            let mut options = WalOptions::new(shard_dir);
            options.segment_bytes_max = 1 << 20;
            let (wal, _) = Wal::open(options, |_| {}).await.unwrap();
            let mut last = 0;
            for record in &records {
                last = wal.append(record).unwrap();
            }
            wal.sync(last).await.unwrap();
            wal.close().await.unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
}

/// A log entry whose command cannot be decoded refuses startup with a recovery error.
#[test]
fn undecodable_command_is_a_recovery_error() {
    let (_dir, path) = data_dir();
    let payload = Bytes::from_static(b"\xffnot a command");
    write_raw_records(
        &path,
        vec![WalRecord::Entry {
            group: 0,
            term: 1,
            index: 1,
            payload,
        }],
    );
    let result = TestNode::start(test_config(&path, 1));
    assert!(
        matches!(result, Err(EngineError::Recovery { shard: 0, .. })),
        "{:?}",
        result.err()
    );
}

/// Entries of a group must be contiguous from index 1.
#[test]
fn index_gap_is_a_recovery_error() {
    let (_dir, path) = data_dir();
    let command = Command::CreateSession {
        session: create_request("x"),
        stamp_us: 1,
    };
    let payload = Bytes::from(command.encode());
    write_raw_records(
        &path,
        vec![WalRecord::Entry {
            group: 0,
            term: 1,
            index: 2,
            payload,
        }],
    );
    match TestNode::start(test_config(&path, 1)) {
        Err(EngineError::Recovery { shard: 0, reason }) => {
            assert!(reason.contains("does not follow"), "{reason}")
        }
        other => panic!("expected a recovery error, got {:?}", other.err()),
    }
}
