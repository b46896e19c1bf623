//! The single-node write path end to end: create, append, read back, dedupe and conflicts, and
//! many appends in flight at once.

#![allow(clippy::unwrap_used)]

mod shard_support;

use shard_support::{append_one, create_request, data_dir, event, test_config, TestNode};
use starcite_engine::api::{AppendRequest, Service, ServiceError};

/// Create a session, append one event, read it back as a frame, and see `last_seq` move.
#[test]
fn create_append_read_back() {
    let (_dir, path) = data_dir();
    let node = TestNode::start(test_config(&path, 1)).unwrap();
    node.run(0, |engine| async move {
        let record = engine
            .create_session(create_request("ses_one"))
            .await
            .unwrap();
        assert_eq!(record.id, "ses_one");
        assert_eq!(record.last_seq, 0);
        assert!(record.created_at_us > 0);

        let reply = engine
            .append(append_one("ses_one", "p1", 1, 7))
            .await
            .unwrap();
        assert_eq!(reply.last_seq, 1);
        assert_eq!(reply.results[0].seq, 1);
        assert!(!reply.results[0].deduped);

        let batch = engine.read_events("ses_one", 0, 10).await.unwrap();
        assert_eq!(batch.first_seq, 1);
        assert_eq!(batch.last_seq, 1);
        assert_eq!(batch.events.len(), 1);
        let frame: serde_json::Value = serde_json::from_slice(&batch.events[0]).unwrap();
        assert_eq!(frame["seq"], 1);
        assert_eq!(frame["payload"]["n"], 7);

        let record = engine.get_session("ses_one").await.unwrap();
        assert_eq!(record.last_seq, 1);
        assert!(engine.readiness().is_ok());
    });
    node.stop().unwrap();
}

/// Dedupe and every conflict of semantics.md §4 through the whole path; rejections change
/// nothing.
#[test]
fn dedupe_and_conflicts() {
    let (_dir, path) = data_dir();
    let node = TestNode::start(test_config(&path, 1)).unwrap();
    node.run(0, |engine| async move {
        assert_eq!(
            engine.append(append_one("missing", "p1", 1, 1)).await,
            Err(ServiceError::SessionNotFound)
        );
        engine.create_session(create_request("s")).await.unwrap();
        assert_eq!(
            engine.create_session(create_request("s")).await,
            Err(ServiceError::SessionExists)
        );
        engine.append(append_one("s", "p1", 1, 1)).await.unwrap();

        let retry = engine.append(append_one("s", "p1", 1, 1)).await.unwrap();
        assert!(retry.results[0].deduped);
        assert_eq!(retry.results[0].seq, 1);

        assert_eq!(
            engine.append(append_one("s", "p1", 1, 2)).await,
            Err(ServiceError::ProducerReplayConflict)
        );
        assert!(matches!(
            engine.append(append_one("s", "p1", 5, 2)).await,
            Err(ServiceError::ProducerSeqConflict {
                expected: 2,
                got: 5,
                ..
            })
        ));
        let stale = AppendRequest {
            expected_seq: Some(0),
            ..append_one("s", "p2", 1, 3)
        };
        assert_eq!(
            engine.append(stale).await,
            Err(ServiceError::ExpectedSeqConflict {
                expected: 0,
                current: 1
            })
        );
        let batch = AppendRequest {
            session_id: "s".into(),
            events: vec![event("p2", 1, 10), event("p2", 2, 11)],
            expected_seq: Some(1),
        };
        let reply = engine.append(batch).await.unwrap();
        assert_eq!(reply.last_seq, 3);
        assert_eq!(engine.get_session("s").await.unwrap().last_seq, 3);
    });
    node.stop().unwrap();
}

/// Hundreds of appends in flight at once (one producer per session) all commit, and every
/// session's seqs are contiguous.
#[test]
fn many_appends_in_flight() {
    let (_dir, path) = data_dir();
    let node = TestNode::start(test_config(&path, 1)).unwrap();
    node.run(0, |engine| async move {
        let sessions: Vec<String> = (0..20).map(|n| format!("s{n}")).collect();
        for session in &sessions {
            engine
                .create_session(create_request(session))
                .await
                .unwrap();
        }
        let mut tasks = Vec::new();
        for (n, session) in sessions.iter().enumerate() {
            for producer in 0..10 {
                let engine = engine.clone();
                let session = session.clone();
                tasks.push(glommio::spawn_local(async move {
                    let producer_id = format!("p{producer}");
                    for producer_seq in 1..=3 {
                        let payload = (n * 100 + producer) as i64;
                        engine
                            .append(append_one(&session, &producer_id, producer_seq, payload))
                            .await
                            .unwrap();
                    }
                }));
            }
        }
        let fdatasyncs_before = engine.wal_stats().fdatasync_count;
        for task in tasks {
            task.await;
        }
        // Group commit: 600 appends in flight share far fewer fsyncs than one each.
        let fdatasyncs = engine.wal_stats().fdatasync_count - fdatasyncs_before;
        assert!(fdatasyncs < 300, "{fdatasyncs} fdatasyncs for 600 appends");
        for session in &sessions {
            let batch = engine.read_events(session, 0, 1000).await.unwrap();
            assert_eq!(batch.last_seq, 30);
            assert_eq!(batch.events.len(), 30);
            for (offset, frame) in batch.events.iter().enumerate() {
                let frame: serde_json::Value = serde_json::from_slice(frame).unwrap();
                assert_eq!(frame["seq"], offset as u64 + 1);
            }
        }
    });
    node.stop().unwrap();
}
