//! The 429 budget of archive.md §8 through the engine.

#![allow(clippy::unwrap_used)]

mod shard_support;

use shard_support::{append_one, create_request, data_dir, test_config, TestNode};
use starcite_engine::api::{Service, ServiceError};

/// With a 1 KiB budget, appends succeed until the unarchived bytes reach it, then get
/// `Backpressure` with the configured `Retry-After`; even an exact retry is refused, while
/// creates still work.
#[test]
fn appends_backpressure_over_budget() {
    let (_dir, path) = data_dir();
    let mut config = test_config(&path, 1);
    config.event_store_max_bytes = 1024;
    config.archive_flush_interval_ms = 2500;
    let node = TestNode::start(config).unwrap();
    node.run(0, |engine| async move {
        engine.create_session(create_request("bp")).await.unwrap();
        let mut accepted = 0u64;
        let refusal = loop {
            match engine.append(append_one("bp", "p", accepted + 1, 1)).await {
                Ok(_) => accepted += 1,
                Err(error) => break error,
            }
            assert!(accepted < 1000, "budget never reached");
        };
        assert_eq!(refusal, ServiceError::Backpressure { retry_after_s: 3 });
        assert!(engine.unarchived_bytes() >= 1024);
        assert!(accepted >= 1);
        assert_eq!(
            engine.append(append_one("bp", "p", accepted, 1)).await,
            Err(ServiceError::Backpressure { retry_after_s: 3 })
        );
        engine.create_session(create_request("bp2")).await.unwrap();
        assert_eq!(engine.get_session("bp").await.unwrap().last_seq, accepted);
    });
    node.stop().unwrap();
}
