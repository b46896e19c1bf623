//! The `s3` archive end to end against a real `s3s-fs`: the archiver catches up and reads
//! replay from the archive; with the S3 server down the 1 KiB budget gives `429` with
//! `Retry-After`, and appends are accepted again once it is back (archive.md §8); a wrong
//! secret key is reported in the log and `/ops/status`, and is not fatal.

mod archive_support;

use std::time::Duration;

use archive_support::{
    assert_archived_and_readable, assert_events_read, load_sessions, wait_archived, S3Service,
    CATCH_UP_TIMEOUT, S3_SECRET_ACCESS_KEY,
};
use serde_json::json;
use starcite_tests::{wait_for, Server, ServerOptions};

fn options(s3: &S3Service) -> ServerOptions {
    let mut options = ServerOptions::default()
        .with("STARCITE_ARCHIVE_FLUSH_INTERVAL_MS", "200")
        .with("STARCITE_ARCHIVE_RETRY_MAX_MS", "500");
    for (key, value) in s3.node_env() {
        options = options.with(key, &value);
    }
    options
}

/// Three sessions of 600 events are archived to S3 and replay from cursor 0, before and after
/// a restart.
#[test]
fn s3_archive_catches_up_and_replays_from_cursor_zero() {
    let s3 = S3Service::start();
    let mut server = Server::start_with(options(&s3));
    let ids = load_sessions(&server, "s3", 3, 600);
    assert_archived_and_readable(&server, &ids, 600);
    let stored_sessions = s3
        .root
        .join("data")
        .join(archive_support::S3_BUCKET)
        .join("starcite/events/v1")
        .read_dir()
        .unwrap()
        .count();
    assert_eq!(
        stored_sessions, 3,
        "one chunk prefix per session in the bucket"
    );
    server.restart();
    assert_archived_and_readable(&server, &ids, 600);
}

/// With `STARCITE_EVENT_STORE_MAX_SIZE=1K` and `s3s-fs` stopped, appends of ~300-byte events
/// are accepted until the budget is reached, then refused with `429` and `Retry-After`; once
/// `s3s-fs` is back the archiver acks, appends get `201` again, and every acknowledged event
/// is in a full read.
#[test]
fn s3_outage_backpressures_then_recovers() {
    let mut s3 = S3Service::start();
    let server = Server::start_with(options(&s3).with("STARCITE_EVENT_STORE_MAX_SIZE", "1K"));
    server.create_session("outage");
    s3.stop();
    let mut client = server.client();
    let filler = "y".repeat(220);
    let append = |client: &mut starcite_tests::HttpClient, producer_seq: u64| {
        let body = json!({"type":"t","payload":{"fill":filler},"actor":"a",
                          "producer_id":"p","producer_seq":producer_seq});
        client
            .post_json("/v1/sessions/outage/append", &body)
            .unwrap()
    };
    let mut accepted = 0u64;
    let refusal = loop {
        let response = append(&mut client, accepted + 1);
        if response.status != 201 {
            break response;
        }
        accepted += 1;
        assert!(accepted < 100, "the budget was never reached");
    };
    assert_eq!(refusal.status, 429, "{}", refusal.text());
    assert_eq!(refusal.json()["error"], "event_store_backpressure");
    assert_eq!(refusal.header("retry-after"), Some("1"));
    assert!(accepted >= 1);

    s3.resume();
    wait_for("appends accepted again", CATCH_UP_TIMEOUT, || {
        let response = append(&mut client, accepted + 1);
        match response.status {
            201 => Some(()),
            429 => {
                std::thread::sleep(Duration::from_millis(100));
                None
            }
            status => panic!("unexpected {status}: {}", response.text()),
        }
    });
    accepted += 1;
    wait_archived(&server, &["outage".to_string()]);
    assert_events_read(&server, "outage", accepted);
}

/// A wrong S3 secret key: every archive write is refused by `s3s-fs`; the node logs why at
/// `warn` and reports it as `archive.last_error` of `/ops/status` (with the lag it causes),
/// keeps running and serving appends, and does not restart. With the right key after a restart
/// the archive catches up and `last_error` is null again.
#[test]
fn s3_wrong_secret_key_is_reported_not_fatal() {
    let s3 = S3Service::start();
    let mut server =
        Server::start_with(options(&s3).with("STARCITE_S3_SECRET_ACCESS_KEY", "not-the-secret"));
    let pid = server.pid();
    let ids = load_sessions(&server, "secret", 2, 50);
    let status = wait_for(
        "archive.last_error in /ops/status",
        CATCH_UP_TIMEOUT,
        || {
            let response = server.ops_client().get("/ops/status").ok()?;
            assert_eq!(response.status, 200, "{}", response.text());
            let archive = response.json()["archive"].clone();
            // The lag is refreshed on the archiver's next tick after the last append.
            let complete = archive["last_error"].is_string() && archive["lag_events"] == 100;
            complete.then_some(archive)
        },
    );
    let last_error = status["last_error"].as_str().unwrap();
    assert!(
        last_error.contains("HTTP 403") && last_error.contains("secret access key"),
        "last_error should say the credentials were refused: {last_error}"
    );
    assert_eq!(status["adapter"], "s3");
    assert_eq!(status["pending_sessions"], 2, "{status}");
    let log = server.log();
    assert!(
        log.contains("archive write failed for session secret-0")
            || log.contains("archive write failed for session secret-1"),
        "the log should name the failed write:\n{log}"
    );
    assert!(log.contains("secret access key"), "{log}");

    // Several backoff rounds later the same process still runs, ready and accepting appends.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(server.pid(), pid);
    assert!(
        server.wait_exit(Duration::ZERO).is_none(),
        "the node exited"
    );
    let ready = server.client().get("/health/ready").unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text());
    let mut client = server.client();
    archive_support::append_events(&mut client, &ids[0], "p", 51, 1, 32);

    server.set_env("STARCITE_S3_SECRET_ACCESS_KEY", Some(S3_SECRET_ACCESS_KEY));
    server.restart();
    wait_archived(&server, &ids);
    wait_for(
        "no lag and no error in /ops/status",
        CATCH_UP_TIMEOUT,
        || {
            let archive = server.ops_client().get("/ops/status").ok()?.json()["archive"].clone();
            let caught_up = archive["lag_events"] == 0 && archive["pending_sessions"] == 0;
            (caught_up && archive["last_error"].is_null()).then_some(())
        },
    );
    assert_events_read(&server, &ids[0], 51);
}
