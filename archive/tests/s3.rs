//! The archive suite against the `s3` adapter talking to a real `s3s-fs` server, which checks SigV4
//! signatures and implements `If-None-Match: *` and `If-Match` on PUT. The suite runs twice: with
//! path-style and with virtual-host addressing.
//!
//! `s3s-fs` maps bucket `b` to the directory `<root>/b` and object key `k` to the file `<root>/b/k`,
//! which gives the tests direct access to what was stored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use starcite_archive::{ArchiveAdapter, ArchiveError, S3Adapter, S3Config, S3Credentials};
use suite::{services, Harness};

const BUCKET: &str = "starcite-test";
const ACCESS_KEY_ID: &str = "starcite-test-key";
const SECRET_ACCESS_KEY: &str = "starcite-test-secret";
const INSTALL_HINT: &str = "s3s-fs is not installed: run scripts/install-test-services \
(or `cargo install s3s-fs --version 0.14.1 --features binary --locked`)";

struct S3Server {
    data_root: PathBuf,
    port: u16,
}

/// Starts one `s3s-fs` for this test binary (stopped when the process exits).
fn server() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let cargo_bin = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
            .map(|home| home.join("bin"));
        let binary = services::find_binary("s3s-fs", &cargo_bin.into_iter().collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("{INSTALL_HINT}"));
        let root = services::persistent_temp_dir("starcite-s3s-fs-");
        let data_root = root.join("data");
        fs::create_dir_all(data_root.join(BUCKET)).unwrap();
        let log_path = root.join("s3s-fs.log");
        let log = fs::File::create(&log_path).unwrap();
        let port = services::free_port();
        let mut child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--access-key",
                ACCESS_KEY_ID,
                "--secret-key",
                SECRET_ACCESS_KEY,
            ])
            // Enables virtual-host addressing: s3s matches the whole Host header, port included, so
            // `<bucket>.localhost:<port>` needs the domain `localhost:<port>`.
            .args(["--domain", &format!("localhost:{port}")])
            .arg(&data_root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", binary.display()));
        services::wait_for_port(port, Duration::from_secs(30), || match child.try_wait() {
            Ok(Some(status)) => Err(format!(
                "s3s-fs exited with {status}: {}",
                fs::read_to_string(&log_path).unwrap_or_default()
            )),
            _ => Ok(()),
        });
        services::at_exit(move || {
            let _ = child.kill();
            let _ = child.wait();
        });
        S3Server { data_root, port }
    })
}

fn config(path_style: bool, secret_access_key: &str) -> S3Config {
    let server = server();
    let mut config = S3Config::new(BUCKET);
    config.region = "us-east-1".to_owned();
    config.endpoint = Some(if path_style {
        format!("http://127.0.0.1:{}", server.port)
    } else {
        format!("http://localhost:{}/", server.port)
    });
    config.path_style = path_style;
    // Exercises the prefix trimming of the contract.
    config.prefix = " /archive-test/ ".to_owned();
    config.credentials = Some(S3Credentials {
        access_key_id: ACCESS_KEY_ID.to_owned(),
        secret_access_key: secret_access_key.to_owned(),
        session_token: None,
    });
    config
}

struct S3Harness {
    adapter: S3Adapter,
}

fn harness(path_style: bool) -> S3Harness {
    S3Harness {
        adapter: S3Adapter::new(config(path_style, SECRET_ACCESS_KEY)).unwrap(),
    }
}

impl S3Harness {
    fn object_path(&self, key: &str) -> PathBuf {
        server().data_root.join(BUCKET).join(key)
    }

    fn store_object(&self, key: &str, body: &str) {
        let path = self.object_path(key);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }
}

impl Harness for S3Harness {
    fn adapter(&self) -> &dyn ArchiveAdapter {
        &self.adapter
    }

    fn stored_catalog(&self, session_id: &str) -> Option<serde_json::Value> {
        let body = fs::read(self.object_path(&self.adapter.catalog_key(session_id))).ok()?;
        Some(serde_json::from_slice(&body).unwrap())
    }

    fn store_raw_event(&self, session_id: &str, seq: u64, event_json: &str) {
        let chunk_start = starcite_archive::format::chunk_start(seq);
        self.store_object(&self.adapter.chunk_key(session_id, chunk_start), event_json);
    }

    fn invalid_data_kinds(&self) -> Vec<&'static str> {
        suite::INVALID_CHUNK_KINDS.to_vec()
    }

    fn store_invalid_data(&self, session_id: &str, kind: &str) {
        self.store_object(
            &self.adapter.chunk_key(session_id, 1),
            &suite::invalid_chunk_body(kind),
        );
    }
}

mod path_style {
    use super::harness;
    crate::suite::archive_suite!(harness(true));
}

mod virtual_host {
    use super::harness;
    crate::suite::archive_suite!(harness(false));
}

/// Objects have the contract's keys (prefix trimmed) and bodies, and carry the exact content types.
#[test]
fn objects_follow_the_contract_layout() {
    let harness = harness(true);
    let adapter = &harness.adapter;
    let session = suite::session_id("layout");
    let written = suite::events(1..=257, "layout");
    assert_eq!(adapter.write_events(&session, &written).unwrap(), 257);
    let encoded = starcite_archive::format::encode_session_id(&session);
    assert_eq!(
        adapter.chunk_key(&session, 257),
        format!("archive-test/events/v1/{encoded}/257.ndjson")
    );
    let first = fs::read_to_string(harness.object_path(&adapter.chunk_key(&session, 1))).unwrap();
    assert!(!first.ends_with('\n'));
    assert_eq!(first.split('\n').count(), 256);
    let second = fs::read(harness.object_path(&adapter.chunk_key(&session, 257))).unwrap();
    assert_eq!(second, written[256].json);
    adapter
        .write_catalog(&suite::catalog(&session, Some("t")))
        .unwrap();
    assert_eq!(
        adapter.catalog_key(&session),
        format!("archive-test/sessions/v1/{encoded}.json")
    );

    // s3s-fs keeps object attributes in JSON files beside the data, named after the key in base64.
    let attributes = |key: &str| -> String {
        let encoded_key = starcite_archive::format::encode_session_id(key);
        fs::read_dir(&server().data_root)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                path.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .contains(&encoded_key)
            })
            .map(|path| fs::read_to_string(path).unwrap())
            .collect()
    };
    assert!(attributes(&adapter.chunk_key(&session, 1)).contains("\"application/x-ndjson\""));
    assert!(attributes(&adapter.catalog_key(&session)).contains("\"application/json\""));
}

/// A wrong secret key is rejected by the server (it really checks signatures), and the adapter says
/// so clearly.
#[test]
fn wrong_secret_key_is_rejected() {
    let adapter = S3Adapter::new(config(true, "not-the-secret")).unwrap();
    let session = suite::session_id("wrong-secret");
    let error = adapter
        .write_events(&session, &suite::events(1..=3, "x"))
        .unwrap_err();
    match &error {
        ArchiveError::Authentication { status, code, .. } => {
            assert_eq!(*status, 403, "{error}");
            assert_eq!(code, "SignatureDoesNotMatch", "{error}");
        }
        other => panic!("expected an authentication error, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("SignatureDoesNotMatch") && message.contains("secret access key"),
        "{message}"
    );
    println!("wrong secret key: {message}");
    assert!(matches!(
        adapter.read_events(&session, 1, 3),
        Err(ArchiveError::Authentication { .. })
    ));
    let good = harness(true);
    assert!(
        good.adapter.read_events(&session, 1, 3).unwrap().is_empty(),
        "nothing was stored"
    );
}

/// An endpoint nobody listens on gives a connection error naming the endpoint.
#[test]
fn unreachable_endpoint_is_a_connect_error() {
    let mut config = config(true, SECRET_ACCESS_KEY);
    config.endpoint = Some(format!("http://127.0.0.1:{}", services::free_port()));
    let adapter = S3Adapter::new(config).unwrap();
    let error = adapter.read_events("s", 1, 10).unwrap_err();
    assert!(matches!(error, ArchiveError::Connect { .. }), "{error}");
}
