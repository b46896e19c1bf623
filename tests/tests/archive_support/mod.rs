//! Shared steps of the archive black-box tests: load sessions, wait for the archiver to catch
//! up, read everything back through `/events` and tails, and run the real S3 and Postgres
//! services (started the way the archive crate's own suite starts them).

#![allow(dead_code)]

#[path = "../../../archive/tests/suite/services.rs"]
pub mod services;

pub mod cluster;

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use starcite_tests::{wait_for, HttpClient, Server, TailClient};

/// How long the archiver may take to catch up in a test.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(90);

/// Events per append request while loading.
const LOAD_BATCH_EVENTS: u64 = 100;

/// Append `count` events of about `payload_bytes` each to `session` from producer `producer`,
/// starting at `producer_seq_first`, in batches.
pub fn append_events(
    client: &mut HttpClient,
    session: &str,
    producer: &str,
    producer_seq_first: u64,
    count: u64,
    payload_bytes: usize,
) {
    let filler = "x".repeat(payload_bytes);
    let mut next = producer_seq_first;
    let end = producer_seq_first + count;
    while next < end {
        let size = (end - next).min(LOAD_BATCH_EVENTS);
        let events: Vec<Value> = (next..next + size)
            .map(|producer_seq| {
                json!({"type":"t","payload":{"fill":filler},"actor":"a",
                       "producer_id":producer,"producer_seq":producer_seq})
            })
            .collect();
        let response = client
            .post_json(
                &format!("/v1/sessions/{session}/append"),
                &json!({ "events": events }),
            )
            .unwrap();
        assert_eq!(response.status, 201, "{}", response.text());
        next += size;
    }
}

/// Create `session_count` sessions named `<prefix>-<n>` with `events` events each.
pub fn load_sessions(
    server: &Server,
    prefix: &str,
    session_count: usize,
    events: u64,
) -> Vec<String> {
    let mut client = server.client();
    let ids: Vec<String> = (0..session_count)
        .map(|n| format!("{prefix}-{n}"))
        .collect();
    for id in &ids {
        server.create_session(id);
        append_events(&mut client, id, "p", 1, events, 32);
    }
    ids
}

/// Wait until every session shows `archived_seq == last_seq` on `GET /v1/sessions/:id`.
pub fn wait_archived(server: &Server, ids: &[String]) {
    let mut client = server.client();
    for id in ids {
        wait_for(&format!("{id} archived"), CATCH_UP_TIMEOUT, || {
            let response = client.get(&format!("/v1/sessions/{id}")).ok()?;
            let body = response.json();
            let last_seq = body["last_seq"].as_u64()?;
            let archived_seq = body["archived_seq"].as_u64()?;
            assert!(archived_seq <= last_seq, "{body}");
            (archived_seq == last_seq).then_some(())
        });
    }
}

/// The value of an unlabelled series on `/metrics`.
pub fn metric(server: &Server, name: &str) -> Option<f64> {
    let text = server.client().get("/metrics").ok()?.text();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Wait until the hot store is empty as seen from outside (archive.md §2).
pub fn wait_hot_store_empty(server: &Server) {
    for name in [
        "starcite_event_store_unarchived_bytes",
        "starcite_archive_lag_events",
        "starcite_archive_pending_sessions",
    ] {
        wait_for(&format!("{name} = 0"), CATCH_UP_TIMEOUT, || {
            (metric(server, name)? == 0.0).then_some(())
        });
    }
}

/// Read the whole session through `/events` from cursor 0; it must be exactly 1..=`count`.
pub fn assert_events_read(server: &Server, id: &str, count: u64) {
    let mut client = server.client();
    let mut cursor = 0;
    loop {
        let response = client
            .get(&format!(
                "/v1/sessions/{id}/events?cursor={cursor}&limit=1000"
            ))
            .unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        let body = response.json();
        let events = body["events"].as_array().unwrap();
        for event in events {
            assert_eq!(event["seq"].as_u64(), Some(cursor + 1), "gap in {id}");
            cursor += 1;
        }
        if body["next_cursor"].is_null() {
            break;
        }
    }
    assert_eq!(cursor, count, "events of {id}");
}

/// Tail the session from cursor 0; it must replay exactly 1..=`count`.
pub fn assert_tail_read(server: &Server, id: &str, count: u64) {
    let mut tail = TailClient::connect(server.http_addr, id, 0);
    let events = tail.read_until(count, Duration::from_secs(60));
    let seqs: Vec<u64> = events
        .iter()
        .map(|event| event["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=count).collect::<Vec<u64>>(), "tail of {id}");
    tail.close();
}

/// Wait for the archive to catch up, then check every read path.
pub fn assert_archived_and_readable(server: &Server, ids: &[String], count: u64) {
    wait_archived(server, ids);
    wait_hot_store_empty(server);
    for id in ids {
        assert_events_read(server, id, count);
        assert_tail_read(server, id, count);
    }
}

/// Credentials the test `s3s-fs` accepts.
pub const S3_BUCKET: &str = "starcite-blackbox";
pub const S3_ACCESS_KEY_ID: &str = "starcite-test-key";
pub const S3_SECRET_ACCESS_KEY: &str = "starcite-test-secret";

/// A real `s3s-fs` on a loopback port that a test can stop and start again on the same port
/// and data.
pub struct S3Service {
    binary: PathBuf,
    pub root: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl S3Service {
    pub fn start() -> S3Service {
        let cargo_bin = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
            .map(|home| home.join("bin"));
        let binary = services::find_binary("s3s-fs", &cargo_bin.into_iter().collect::<Vec<_>>())
            .expect("s3s-fs is not installed: run scripts/install-test-services");
        let root = services::persistent_temp_dir("starcite-blackbox-s3-");
        fs::create_dir_all(root.join("data").join(S3_BUCKET)).unwrap();
        let mut service = S3Service {
            binary,
            root,
            port: services::free_port(),
            child: None,
        };
        service.resume();
        service
    }

    /// Start the server again (after [`S3Service::stop`]).
    pub fn resume(&mut self) {
        let log = fs::File::create(self.root.join("s3s-fs.log")).unwrap();
        let child = Command::new(&self.binary)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--access-key",
                S3_ACCESS_KEY_ID,
                "--secret-key",
                S3_SECRET_ACCESS_KEY,
            ])
            .arg(self.root.join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        services::wait_for_port(self.port, Duration::from_secs(30), || Ok(()));
    }

    /// Kill the server.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The node settings that archive to this server.
    pub fn node_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("STARCITE_ARCHIVE_ADAPTER", "s3".into()),
            ("STARCITE_S3_BUCKET", S3_BUCKET.into()),
            (
                "STARCITE_S3_ENDPOINT",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("STARCITE_S3_REGION", "us-east-1".into()),
            ("STARCITE_S3_ACCESS_KEY_ID", S3_ACCESS_KEY_ID.into()),
            ("STARCITE_S3_SECRET_ACCESS_KEY", S3_SECRET_ACCESS_KEY.into()),
        ]
    }
}

impl Drop for S3Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Start a fresh PostgreSQL server on a loopback port (stopped when the test process exits)
/// and return the URL of its `postgres` database.
pub fn start_postgres() -> String {
    let port = services::start_postgres("starcite-blackbox-postgres-");
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}
