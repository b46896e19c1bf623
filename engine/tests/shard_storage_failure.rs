//! Fail-stop on a failed fsync: readiness reports `storage_failed`, writes are refused, reads
//! keep working.

#![allow(clippy::unwrap_used)]

mod shard_support;

use shard_support::{append_one, create_request, data_dir, test_config, TestNode};
use starcite_engine::api::{Service, ServiceError};
use starcite_engine::wal::FaultPlan;

/// The third fdatasync fails (the first persists the groups' self-elections at startup, the
/// second the create): the append waiting on it gets `Internal`, readiness turns
/// `storage_failed` with the file and OS error, and every later write is refused.
#[test]
fn failed_fsync_poisons_writes_and_readiness() {
    let (_dir, path) = data_dir();
    let mut config = test_config(&path, 1);
    config.wal_fault = Some(FaultPlan::fail_fdatasync(3));
    let node = TestNode::start(config).unwrap();
    node.run(0, |engine| async move {
        engine.create_session(create_request("f")).await.unwrap();
        assert!(engine.readiness().is_ok());
        assert!(matches!(
            engine.append(append_one("f", "p", 1, 1)).await,
            Err(ServiceError::Internal(_))
        ));
        let not_ready = engine.readiness().unwrap_err();
        assert_eq!(not_ready.reason, "storage_failed");
        let detail = not_ready.detail.unwrap();
        assert!(
            detail["path"].as_str().unwrap().contains("shard-0"),
            "{detail}"
        );
        assert!(!detail["error"].as_str().unwrap().is_empty());

        assert!(matches!(
            engine.create_session(create_request("g")).await,
            Err(ServiceError::Internal(_))
        ));
        assert!(matches!(
            engine.append(append_one("f", "p", 1, 1)).await,
            Err(ServiceError::Internal(_))
        ));
        assert_eq!(engine.get_session("f").await.unwrap().last_seq, 0);
    });
    node.stop().unwrap();
}
