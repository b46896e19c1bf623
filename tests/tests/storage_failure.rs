//! A failed fdatasync is fail-stop (architecture rule; cluster.md §4 "Storage failure"): the node
//! stops acknowledging writes and `/health/ready` reports `storage_failed` until restart. The
//! fault is injected with the test-only `STARCITE_TEST_FAIL_FSYNC_AFTER` variable.

use serde_json::json;
use starcite_tests::{event_body, Server, ServerOptions};

#[test]
fn failed_fsync_stops_writes_and_fails_readiness() {
    // One shard, so that every write goes through the one poisoned log.
    let mut server = Server::start_with(
        ServerOptions::default()
            .with("STARCITE_SHARDS", "1")
            .with("STARCITE_TEST_FAIL_FSYNC_AFTER", "6"),
    );
    server.create_session("f1");
    let mut client = server.client();
    let mut acknowledged = Vec::new();
    let mut failed_at = None;
    for producer_seq in 1..=50u64 {
        let response = client
            .post_json("/v1/sessions/f1/append", &event_body("p", producer_seq))
            .unwrap();
        if response.status == 201 {
            acknowledged.push(response.json()["seq"].as_u64().unwrap());
        } else {
            assert!(response.status >= 500, "{}", response.text());
            failed_at = Some(producer_seq);
            break;
        }
    }
    let failed_at = failed_at.expect("the injected fsync failure never surfaced");

    // Readiness reports the failure with the path and the OS error.
    let ready = client.get("/health/ready").unwrap();
    assert_eq!(ready.status, 503, "{}", ready.text());
    let body = ready.json();
    assert_eq!(body["reason"], "storage_failed");
    assert!(
        body["detail"]["path"].is_string() && body["detail"]["error"].is_string(),
        "{body}"
    );

    // Later writes are refused, never acknowledged; the fsync is not retried behind our back.
    for producer_seq in failed_at..failed_at + 3 {
        let response = client
            .post_json("/v1/sessions/f1/append", &event_body("p", producer_seq))
            .unwrap();
        assert_ne!(
            response.status, 201,
            "a write was acknowledged after a failed fsync"
        );
    }
    let created = client
        .post_json(
            "/v1/sessions",
            &json!({"id":"f2","creator_principal":starcite_tests::creator()}),
        )
        .unwrap();
    assert_ne!(created.status, 201);

    // After a restart (without the fault) every acknowledged event is there and writes resume.
    server.kill9();
    server.set_env("STARCITE_TEST_FAIL_FSYNC_AFTER", None);
    server.restart();
    let mut client = server.client();
    let events = client
        .get("/v1/sessions/f1/events?limit=1000")
        .unwrap()
        .json();
    let seqs: Vec<u64> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    for seq in &acknowledged {
        assert!(seqs.contains(seq), "acknowledged seq {seq} lost");
    }
    assert_eq!(client.get("/health/ready").unwrap().status, 200);
}
