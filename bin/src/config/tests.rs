//! Every error text of config.md, the defaults and the derived values.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use super::*;

fn variables(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn config(pairs: &[(&str, &str)]) -> Config {
    match load(&variables(pairs)) {
        Ok(loaded) => loaded.config,
        Err(invalid) => panic!("expected a valid configuration, got {invalid}"),
    }
}

fn errors(pairs: &[(&str, &str)]) -> Vec<String> {
    match load(&variables(pairs)) {
        Ok(loaded) => panic!("expected errors, got {:?}", loaded.config),
        Err(invalid) => invalid.errors,
    }
}

/// Asserts that `pairs` fail with exactly one error, `expected`.
fn assert_error(pairs: &[(&str, &str)], expected: &str) {
    assert_eq!(errors(pairs), vec![expected.to_string()], "for {pairs:?}");
}

const CLUSTER3: &str = "node1@node1:4100,node2@node2:4100,node3@node3:4100";
const WRITE3: &str = "node1@node1,node2@node2,node3@node3";

/// The distributed variables of a valid 3-write-node cluster with an S3 archive.
fn cluster_base() -> Vec<(&'static str, &'static str)> {
    vec![
        ("NODE_NAME", "node1@node1"),
        ("CLUSTER_NODES", CLUSTER3),
        ("STARCITE_WRITE_NODE_IDS", WRITE3),
        ("STARCITE_ARCHIVE_ADAPTER", "s3"),
        ("STARCITE_S3_BUCKET", "bucket"),
    ]
}

fn with(
    mut base: Vec<(&'static str, &'static str)>,
    extra: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    for (name, value) in extra {
        base.retain(|(existing, _)| existing != name);
        base.push((name, value));
    }
    base
}

const JWT_VALID: &[(&str, &str)] = &[
    ("STARCITE_AUTH_MODE", "jwt"),
    ("STARCITE_AUTH_JWT_ISSUER", "https://issuer.example"),
    ("STARCITE_AUTH_JWT_AUDIENCE", "starcite"),
    (
        "STARCITE_AUTH_JWKS_URL",
        "https://issuer.example/.well-known/jwks.json",
    ),
    (
        "STARCITE_SECRET_KEY_BASE",
        "0123456789abcdef0123456789abcdef",
    ),
];

#[test]
fn zero_config_is_a_single_write_node() {
    let config = config(&[]);
    assert_eq!(config.node_name, "starcite@localhost");
    assert!(config.is_write_node());
    assert_eq!(
        config.write_node_ids,
        vec!["starcite@localhost".to_string()]
    );
    assert_eq!(config.write_replication_factor, 1);
    assert_eq!(config.num_groups, 256);
    assert!(config.auth.jwt.is_none());
    assert_eq!(
        config.archive.backend,
        ArchiveBackend::Local {
            dir: PathBuf::from("./data/archive"),
            shared: false
        }
    );
    assert_eq!(config.data_dir, PathBuf::from("./data"));
    assert_eq!(config.raft_data_dir, PathBuf::from("./data/raft"));
    assert_eq!(
        config.http_socket(),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4000)
    );
    assert_eq!(config.ops_addr, "127.0.0.1:4001".parse().expect("address"));
    assert!(config.metrics_enabled);
    assert!(!config.peer_listener_enabled());
    assert_eq!(config.peer_port, 4100);
    assert_eq!(config.peer_bind_addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    assert_eq!(config.log_level, LogLevel::Info);
    assert_eq!(config.log_format, LogFormat::Text);
    assert_eq!(config.shards as u64, cpu_count().clamp(1, SHARDS_MAX));
    assert_eq!(config.raft_heartbeat_ms, 100);
    assert_eq!(config.raft_election_timeout_ms, 1000);
    assert_eq!(config.route_leader_cache_ttl_ms, 10_000);
    assert_eq!(config.tail_buffer_events, 1000);
    assert_eq!(config.shutdown_timeout_ms, 30_000);
    assert_eq!(config.auth.jwt_leeway_seconds, 1);
    assert_eq!(config.auth.jwks_refresh_ms, 60_000);
    assert_eq!(config.auth.jwks_stale_max_ms, 300_000);
    assert_eq!(config.auth.principal_token_salt, "principal-token-v1");
    assert_eq!(config.auth.principal_token_default_ttl_seconds, 5);
    assert_eq!(config.auth.principal_token_max_ttl_seconds, 15);
    assert_eq!(config.archive.flush_interval_ms, 5000);
    assert_eq!(config.archive.batch_size, 5000);
    assert_eq!(config.archive.retry_max_ms, 60_000);
    assert_eq!(config.memory.event_store_max_bytes, 2 << 30);
    assert_eq!(config.memory.event_store_capacity_check_interval, 4);
    assert_eq!(config.memory.read_cache_max_bytes, 512 << 20);
    assert_eq!(config.memory.read_cache_reclaim_fraction, 0.25);
    assert!(config.memory.read_cache_compressed);
    assert!(config.tls.is_none() && config.peer_tls.is_none() && config.ops_token.is_none());
    assert_eq!(config.test_fail_fsync_after, None);
}

#[test]
fn values_are_trimmed_and_blank_means_unset() {
    let config = config(&[
        ("PORT", "  5000 "),
        ("STARCITE_NUM_GROUPS", "   "),
        ("NODE_NAME", ""),
    ]);
    assert_eq!(config.port, 5000);
    assert_eq!(config.num_groups, 256);
    assert_eq!(config.node_name, "starcite@localhost");
}

#[test]
fn every_problem_is_reported_at_once() {
    let invalid = load(&variables(&[
        ("PORT", "abc"),
        ("STARCITE_AUTH_MODE", "jwt"),
        ("STARCITE_AUTH_JWT_ISSUER", "i"),
        ("STARCITE_AUTH_JWT_AUDIENCE", "a"),
        (
            "STARCITE_SECRET_KEY_BASE",
            "0123456789abcdef0123456789abcdef",
        ),
    ]))
    .expect_err("two errors");
    assert_eq!(
        invalid.to_string(),
        "starcite: invalid configuration (2 errors)\n  - invalid integer for PORT: \"abc\"\n  - missing required environment variable STARCITE_AUTH_JWKS_URL"
    );
}

#[test]
fn one_error_uses_the_singular() {
    let invalid = load(&variables(&[("PORT", "0")])).expect_err("one error");
    assert_eq!(
        invalid.to_string(),
        "starcite: invalid configuration (1 error)\n  - invalid integer for PORT: \"0\""
    );
}

#[test]
fn raw_value_is_quoted_untrimmed() {
    assert_error(&[("PORT", " 7x ")], "invalid integer for PORT: \" 7x \"");
}

#[test]
fn parsing_rule_messages() {
    assert_error(
        &[("STARCITE_METRICS_ENABLED", "maybe")],
        "invalid boolean for STARCITE_METRICS_ENABLED: \"maybe\"",
    );
    assert_error(&[("PORT", "65536")], "invalid integer for PORT: \"65536\"");
    assert_error(&[("PORT", "-1")], "invalid integer for PORT: \"-1\"");
    assert_error(
        &[("STARCITE_EVENT_STORE_MAX_SIZE", "lots")],
        "invalid size for STARCITE_EVENT_STORE_MAX_SIZE: \"lots\" (examples: 256MB, 4G, 1024M)",
    );
    assert_error(
        &[("STARCITE_ARCHIVE_READ_CACHE_MAX_SIZE", "0")],
        "invalid size for STARCITE_ARCHIVE_READ_CACHE_MAX_SIZE: \"0\" (examples: 256MB, 4G, 1024M)",
    );
    assert_error(
        &[("STARCITE_ARCHIVE_READ_CACHE_RECLAIM_FRACTION", "1.5")],
        "invalid float for STARCITE_ARCHIVE_READ_CACHE_RECLAIM_FRACTION: \"1.5\" (expected 0.01..0.99)",
    );
}

#[test]
fn sizes_and_fractions_are_applied() {
    let config = config(&[
        ("STARCITE_EVENT_STORE_MAX_SIZE", "256MB"),
        ("STARCITE_ARCHIVE_READ_CACHE_MAX_SIZE", "1024"),
        ("STARCITE_ARCHIVE_READ_CACHE_RECLAIM_FRACTION", "0.5"),
        ("STARCITE_ARCHIVE_READ_CACHE_COMPRESSED", "off"),
    ]);
    assert_eq!(config.memory.event_store_max_bytes, 256 << 20);
    assert_eq!(config.memory.read_cache_max_bytes, 1024 << 20);
    assert_eq!(config.memory.read_cache_reclaim_fraction, 0.5);
    assert!(!config.memory.read_cache_compressed);
}

#[test]
fn node_name_message() {
    assert_error(
        &[("NODE_NAME", "node1")],
        "invalid NODE_NAME: \"node1\" (expected name@host)",
    );
    assert_error(
        &[("NODE_NAME", "nöde@host")],
        "invalid NODE_NAME: \"nöde@host\" (expected name@host)",
    );
    assert_eq!(config(&[("NODE_NAME", "n@[::1]")]).node_name, "n@[::1]");
    // Host names are syntax only: nothing is resolved.
    assert_eq!(
        config(&[("NODE_NAME", "n@does-not-exist.invalid")]).node_name,
        "n@does-not-exist.invalid"
    );
}

#[test]
fn cluster_nodes_messages() {
    assert_error(
        &[("NODE_NAME", "a@a"), ("CLUSTER_NODES", "a@a:4100,b@b")],
        "invalid CLUSTER_NODES entry: \"b@b\" (expected name@host:peer_port)",
    );
    assert_error(
        &[("NODE_NAME", "a@a"), ("CLUSTER_NODES", "a@a:4100,a@a:4101")],
        "duplicate node in CLUSTER_NODES: \"a@a\"",
    );
    assert_error(
        &[("NODE_NAME", "c@c"), ("CLUSTER_NODES", "a@a:4100")],
        "NODE_NAME \"c@c\" is not listed in CLUSTER_NODES",
    );
    assert_error(
        &[("CLUSTER_NODES", " , ")],
        "invalid CLUSTER_NODES entry: \" , \" (expected name@host:peer_port)",
    );
}

#[test]
fn single_entry_cluster_defaults_write_nodes_to_node_name() {
    let config = config(&[("NODE_NAME", "a@a"), ("CLUSTER_NODES", "a@a:4200")]);
    assert_eq!(config.write_node_ids, vec!["a@a".to_string()]);
    assert_eq!(config.peer_port, 4200);
    assert_eq!(config.write_replication_factor, 1);
    assert!(!config.peer_listener_enabled());
}

#[test]
fn write_node_messages() {
    assert_error(
        &with(cluster_base(), &[("STARCITE_WRITE_NODE_IDS", " , ,")]),
        "invalid node list for STARCITE_WRITE_NODE_IDS: \" , ,\" (expected comma-separated node ids)",
    );
    let mut distributed = cluster_base();
    distributed.retain(|(name, _)| *name != "STARCITE_WRITE_NODE_IDS");
    assert_error(
        &distributed,
        "invalid write-node config: STARCITE_WRITE_NODE_IDS must be configured for distributed nodes",
    );
    assert_error(
        &with(
            cluster_base(),
            &[("STARCITE_WRITE_NODE_IDS", "node1@node1,node9@node9")],
        ),
        "write node \"node9@node9\" is not listed in CLUSTER_NODES",
    );
    assert_error(
        &[("STARCITE_WRITE_NODE_IDS", "other@host")],
        "write node \"other@host\" is not listed in CLUSTER_NODES",
    );
}

#[test]
fn write_nodes_are_trimmed_and_deduplicated() {
    let config = config(&with(
        cluster_base(),
        &[(
            "STARCITE_WRITE_NODE_IDS",
            " node2@node2, ,node1@node1,node2@node2 ",
        )],
    ));
    assert_eq!(config.write_node_ids, vec!["node2@node2", "node1@node1"]);
    assert_eq!(config.write_replication_factor, 2);
}

#[test]
fn replication_factor_defaults_and_limits() {
    let config = config(&cluster_base());
    assert_eq!(config.write_replication_factor, 3);
    assert!(config.is_write_node());
    assert!(config.peer_listener_enabled());
    assert_error(
        &with(
            cluster_base(),
            &[("STARCITE_WRITE_REPLICATION_FACTOR", "4")],
        ),
        "invalid write-node config: write_replication_factor=4 exceeds write_node_ids=3",
    );
    assert_error(
        &with(
            cluster_base(),
            &[("STARCITE_WRITE_REPLICATION_FACTOR", "0")],
        ),
        "invalid integer for STARCITE_WRITE_REPLICATION_FACTOR: \"0\"",
    );
    let four = "node1@node1:4100,node2@node2:4100,node3@node3:4100,node4@node4:4100";
    let four_writers = "node1@node1,node2@node2,node3@node3,node4@node4";
    let config = super::tests::config(&with(
        cluster_base(),
        &[
            ("CLUSTER_NODES", four),
            ("STARCITE_WRITE_NODE_IDS", four_writers),
        ],
    ));
    assert_eq!(config.write_replication_factor, 3);
}

#[test]
fn router_node_is_not_a_write_node() {
    let config = config(&with(
        cluster_base(),
        &[
            ("NODE_NAME", "api1@api1"),
            (
                "CLUSTER_NODES",
                "node1@node1:4100,node2@node2:4100,node3@node3:4100,api1@api1:4100",
            ),
        ],
    ));
    assert!(!config.is_write_node());
}

#[test]
fn num_groups_messages() {
    for value in ["0", "65537", "99999999999999999999999"] {
        assert_error(
            &[("STARCITE_NUM_GROUPS", value)],
            "invalid write-node config: num_groups must be between 1 and 65536",
        );
    }
    assert_error(
        &[("STARCITE_NUM_GROUPS", "many")],
        "invalid integer for STARCITE_NUM_GROUPS: \"many\"",
    );
    assert_eq!(
        config(&[("STARCITE_NUM_GROUPS", "65536")]).num_groups,
        65536
    );
}

#[test]
fn listener_messages() {
    assert_error(
        &[("STARCITE_HTTP_ADDR", "localhost")],
        "invalid address for STARCITE_HTTP_ADDR: \"localhost\"",
    );
    assert_error(
        &[("STARCITE_OPS_ADDR", "127.0.0.1")],
        "invalid address for STARCITE_OPS_ADDR: \"127.0.0.1\" (expected ip:port)",
    );
    assert_error(
        &[("STARCITE_OPS_ADDR", "127.0.0.1:4000")],
        "STARCITE_OPS_ADDR must differ from the HTTP listener",
    );
    assert_error(
        &[
            ("STARCITE_HTTP_ADDR", "::"),
            ("PORT", "5000"),
            ("STARCITE_OPS_ADDR", "127.0.0.1:5000"),
        ],
        "STARCITE_OPS_ADDR must differ from the HTTP listener",
    );
    assert_error(
        &[("STARCITE_PEER_BIND_ADDR", "nowhere")],
        "invalid address for STARCITE_PEER_BIND_ADDR: \"nowhere\"",
    );
    let config = config(&[
        ("STARCITE_HTTP_ADDR", "::"),
        ("STARCITE_OPS_ADDR", "[::1]:9000"),
        ("STARCITE_OPS_TOKEN", "t"),
    ]);
    assert_eq!(config.http_addr, "::".parse::<IpAddr>().expect("address"));
    assert_eq!(config.ops_addr, "[::1]:9000".parse().expect("address"));
    assert_eq!(config.ops_token.as_deref(), Some("t"));
}

#[test]
fn peer_port_messages() {
    assert_error(
        &with(cluster_base(), &[("STARCITE_PEER_PORT", "4200")]),
        "STARCITE_PEER_PORT=4200 does not match the peer port of NODE_NAME in CLUSTER_NODES (4100)",
    );
    assert_error(
        &[("STARCITE_PEER_PORT", "0")],
        "invalid integer for STARCITE_PEER_PORT: \"0\"",
    );
    assert_eq!(
        config(&with(cluster_base(), &[("STARCITE_PEER_PORT", "4100")])).peer_port,
        4100
    );
    assert_eq!(config(&[("STARCITE_PEER_PORT", "4300")]).peer_port, 4300);
}

fn pem_files() -> (tempfile::TempDir, String, String, String) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let cert = directory.path().join("cert.pem");
    let key = directory.path().join("key.pem");
    let junk = directory.path().join("junk.pem");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
    )
    .expect("write cert");
    std::fs::write(
        &key,
        "-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n",
    )
    .expect("write key");
    std::fs::write(&junk, "hello").expect("write junk");
    let text = |path: PathBuf| path.display().to_string();
    (directory, text(cert), text(key), text(junk))
}

#[test]
fn tls_messages() {
    let (_directory, cert, key, junk) = pem_files();
    assert_error(
        &[("STARCITE_TLS_CERT", &cert)],
        "STARCITE_TLS_CERT and STARCITE_TLS_KEY must be set together",
    );
    assert_error(
        &[("STARCITE_TLS_CERT", &cert), ("STARCITE_TLS_KEY", &junk)],
        &format!("cannot load STARCITE_TLS_KEY: {junk}: no PEM private key (PKCS#8, PKCS#1 or SEC1) found"),
    );
    let missing = format!("{junk}.missing");
    let errors = errors(&[("STARCITE_TLS_CERT", &missing), ("STARCITE_TLS_KEY", &key)]);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with(&format!("cannot load STARCITE_TLS_CERT: {missing}: ")),
        "{errors:?}"
    );
    let config = config(&[("STARCITE_TLS_CERT", &cert), ("STARCITE_TLS_KEY", &key)]);
    assert_eq!(
        config.tls,
        Some(TlsFiles {
            cert: PathBuf::from(&cert),
            key: PathBuf::from(&key)
        })
    );
}

#[test]
fn peer_tls_messages() {
    let (_directory, cert, key, junk) = pem_files();
    assert_error(
        &[("STARCITE_PEER_TLS_CERT", &cert), ("STARCITE_PEER_TLS_KEY", &key)],
        "STARCITE_PEER_TLS_CERT, STARCITE_PEER_TLS_KEY and STARCITE_PEER_TLS_CA must be set together",
    );
    assert_error(
        &[
            ("STARCITE_PEER_TLS_CERT", &cert),
            ("STARCITE_PEER_TLS_KEY", &key),
            ("STARCITE_PEER_TLS_CA", &junk),
        ],
        &format!("cannot load STARCITE_PEER_TLS_CA: {junk}: no PEM certificate found"),
    );
    let config = config(&[
        ("STARCITE_PEER_TLS_CERT", &cert),
        ("STARCITE_PEER_TLS_KEY", &key),
        ("STARCITE_PEER_TLS_CA", &cert),
    ]);
    assert!(config.peer_tls.is_some());
}

#[test]
fn data_directories() {
    let config = config(&[("STARCITE_DATA_DIR", "/var/lib/starcite")]);
    assert_eq!(
        config.raft_data_dir,
        PathBuf::from("/var/lib/starcite/raft")
    );
    assert_eq!(
        config.archive.backend,
        ArchiveBackend::Local {
            dir: PathBuf::from("/var/lib/starcite/archive"),
            shared: false
        }
    );
    let config = super::tests::config(&[
        ("STARCITE_DATA_DIR", "/d"),
        ("STARCITE_RAFT_DATA_DIR", "/r"),
        ("STARCITE_ARCHIVE_LOCAL_DIR", "/a"),
    ]);
    assert_eq!(config.raft_data_dir, PathBuf::from("/r"));
    assert_eq!(
        config.archive.backend,
        ArchiveBackend::Local {
            dir: PathBuf::from("/a"),
            shared: false
        }
    );
}

#[test]
fn raft_timing_messages() {
    assert_error(
        &[("STARCITE_RAFT_HEARTBEAT_MS", "9")],
        "invalid integer for STARCITE_RAFT_HEARTBEAT_MS: \"9\"",
    );
    assert_error(
        &[("STARCITE_RAFT_HEARTBEAT_MS", "300")],
        "invalid raft timing: STARCITE_RAFT_ELECTION_TIMEOUT_MS=1000 must be at least 5 x STARCITE_RAFT_HEARTBEAT_MS=300",
    );
    assert_error(
        &[("STARCITE_RAFT_ELECTION_TIMEOUT_MS", "499")],
        "invalid raft timing: STARCITE_RAFT_ELECTION_TIMEOUT_MS=499 must be at least 5 x STARCITE_RAFT_HEARTBEAT_MS=100",
    );
    let config = config(&[("STARCITE_RAFT_ELECTION_TIMEOUT_MS", "500")]);
    assert_eq!(config.raft_election_timeout_ms, 500);
}

#[test]
fn integer_range_messages() {
    assert_error(
        &[("STARCITE_TAIL_BUFFER_EVENTS", "15")],
        "invalid integer for STARCITE_TAIL_BUFFER_EVENTS: \"15\"",
    );
    assert_error(
        &[("STARCITE_TAIL_BUFFER_EVENTS", "1000001")],
        "invalid integer for STARCITE_TAIL_BUFFER_EVENTS: \"1000001\"",
    );
    assert_error(
        &[("STARCITE_SHARDS", "1025")],
        "invalid integer for STARCITE_SHARDS: \"1025\"",
    );
    assert_error(
        &[("STARCITE_SHUTDOWN_TIMEOUT_MS", "0")],
        "invalid integer for STARCITE_SHUTDOWN_TIMEOUT_MS: \"0\"",
    );
    assert_error(
        &[("STARCITE_ROUTE_LEADER_CACHE_TTL_MS", "0")],
        "invalid integer for STARCITE_ROUTE_LEADER_CACHE_TTL_MS: \"0\"",
    );
    assert_error(
        &[("DB_POOL_SIZE", "1001")],
        "invalid integer for DB_POOL_SIZE: \"1001\"",
    );
    assert_error(
        &[("STARCITE_ARCHIVE_BATCH_SIZE", "100001")],
        "invalid integer for STARCITE_ARCHIVE_BATCH_SIZE: \"100001\"",
    );
    assert_error(
        &[("STARCITE_EVENT_STORE_CAPACITY_CHECK_INTERVAL", "0")],
        "invalid integer for STARCITE_EVENT_STORE_CAPACITY_CHECK_INTERVAL: \"0\"",
    );
    let config = config(&[
        ("STARCITE_SHARDS", "2"),
        ("STARCITE_AUTH_JWT_LEEWAY_SECONDS", "0"),
        ("STARCITE_AUTH_JWKS_STALE_MAX_MS", "0"),
    ]);
    assert_eq!(config.shards, 2);
    assert_eq!(config.auth.jwt_leeway_seconds, 0);
    assert_eq!(config.auth.jwks_stale_max_ms, 0);
}

#[test]
fn enum_messages_and_case() {
    assert_error(
        &[("STARCITE_LOG_LEVEL", "verbose")],
        "invalid STARCITE_LOG_LEVEL: \"verbose\" (expected error|warn|info|debug|trace)",
    );
    assert_error(
        &[("STARCITE_LOG_FORMAT", "xml")],
        "invalid STARCITE_LOG_FORMAT: \"xml\" (expected text|json)",
    );
    assert_error(
        &[("STARCITE_AUTH_MODE", "basic")],
        "invalid STARCITE_AUTH_MODE: \"basic\" (expected none|jwt)",
    );
    assert_error(
        &[("STARCITE_ARCHIVE_ADAPTER", "gcs")],
        "invalid STARCITE_ARCHIVE_ADAPTER: \"gcs\" (expected local|s3|postgres)",
    );
    let config = config(&[
        ("STARCITE_LOG_LEVEL", " DEBUG "),
        ("STARCITE_LOG_FORMAT", "Json"),
    ]);
    assert_eq!(config.log_level, LogLevel::Debug);
    assert_eq!(config.log_format, LogFormat::Json);
}

#[test]
fn jwt_mode_requirements() {
    let config = config(JWT_VALID);
    let jwt = config.auth.jwt.expect("jwt settings");
    assert_eq!(jwt.audience, "starcite");
    assert!(!format!("{jwt:?}").contains("0123456789abcdef"));

    assert_eq!(
        errors(&[("STARCITE_AUTH_MODE", "jwt")]),
        vec![
            "missing required environment variable STARCITE_AUTH_JWT_ISSUER",
            "missing required environment variable STARCITE_AUTH_JWT_AUDIENCE",
            "missing required environment variable STARCITE_AUTH_JWKS_URL",
            "missing required environment variable STARCITE_SECRET_KEY_BASE",
        ]
    );
    let mut without_secret: Vec<(&str, &str)> = JWT_VALID
        .iter()
        .copied()
        .filter(|(name, _)| *name != "STARCITE_SECRET_KEY_BASE")
        .collect();
    without_secret.push(("SECRET_KEY_BASE", "0123456789abcdef0123456789abcdef"));
    assert_error(
        &without_secret,
        "missing required environment variable STARCITE_SECRET_KEY_BASE (SECRET_KEY_BASE is no longer read)",
    );
    let mut short_secret = JWT_VALID.to_vec();
    short_secret.push(("STARCITE_SECRET_KEY_BASE", "short"));
    short_secret.remove(4);
    assert_error(
        &short_secret,
        "invalid STARCITE_SECRET_KEY_BASE: must be at least 32 bytes",
    );
    let mut bad_url = JWT_VALID.to_vec();
    bad_url[3] = ("STARCITE_AUTH_JWKS_URL", "issuer.example/jwks");
    assert_error(
        &bad_url,
        "invalid STARCITE_AUTH_JWKS_URL: \"issuer.example/jwks\" (expected http(s) URL)",
    );
}

#[test]
fn principal_token_messages() {
    assert_error(
        &[("STARCITE_AUTH_PRINCIPAL_TOKEN_SALT", "  ")],
        "invalid STARCITE_AUTH_PRINCIPAL_TOKEN_SALT: cannot be empty",
    );
    assert_error(
        &[("STARCITE_AUTH_PRINCIPAL_TOKEN_DEFAULT_TTL_SECONDS", "20")],
        "invalid principal token ttl settings: default ttl 20 exceeds max ttl 15",
    );
    assert_error(
        &[("STARCITE_AUTH_PRINCIPAL_TOKEN_MAX_TTL_SECONDS", "4")],
        "invalid principal token ttl settings: default ttl 5 exceeds max ttl 4",
    );
    assert_error(
        &[("STARCITE_AUTH_PRINCIPAL_TOKEN_MAX_TTL_SECONDS", "0")],
        "invalid integer for STARCITE_AUTH_PRINCIPAL_TOKEN_MAX_TTL_SECONDS: \"0\"",
    );
    assert_eq!(
        config(&[("STARCITE_AUTH_PRINCIPAL_TOKEN_SALT", " salt ")])
            .auth
            .principal_token_salt,
        "salt"
    );
}

#[test]
fn s3_settings() {
    assert_error(
        &[("STARCITE_ARCHIVE_ADAPTER", "s3")],
        "environment variable STARCITE_S3_BUCKET is missing (required when STARCITE_ARCHIVE_ADAPTER=s3)",
    );
    assert_error(
        &[
            ("STARCITE_ARCHIVE_ADAPTER", "s3"),
            ("STARCITE_S3_BUCKET", "b"),
            ("STARCITE_S3_ACCESS_KEY_ID", "id"),
        ],
        "STARCITE_S3_ACCESS_KEY_ID and STARCITE_S3_SECRET_ACCESS_KEY must be set together",
    );
    assert_error(
        &[
            ("STARCITE_ARCHIVE_ADAPTER", "s3"),
            ("STARCITE_S3_BUCKET", "b"),
            ("STARCITE_S3_SECRET_ACCESS_KEY", "s"),
        ],
        "STARCITE_S3_ACCESS_KEY_ID and STARCITE_S3_SECRET_ACCESS_KEY must be set together",
    );
    for endpoint in ["minio:9000", "http://minio:9000/bucket", "ftp://minio"] {
        assert_error(
            &[("STARCITE_ARCHIVE_ADAPTER", "s3"), ("STARCITE_S3_BUCKET", "b"), ("STARCITE_S3_ENDPOINT", endpoint)],
            &format!("invalid endpoint for S3 archive adapter: \"{endpoint}\" (expected http(s)://host[:port])"),
        );
    }
    let config = config(&[
        ("STARCITE_ARCHIVE_ADAPTER", "S3"),
        ("STARCITE_S3_BUCKET", "b"),
        ("STARCITE_S3_PREFIX", " /cluster3/ "),
        ("AWS_DEFAULT_REGION", "eu-west-3"),
        ("STARCITE_S3_ENDPOINT", "http://127.0.0.1:9000/"),
        ("STARCITE_S3_PATH_STYLE", "false"),
    ]);
    let ArchiveBackend::S3(s3) = config.archive.backend else {
        panic!("expected s3");
    };
    assert_eq!(s3.prefix, "cluster3");
    assert_eq!(s3.region, "eu-west-3");
    assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert!(!s3.path_style);
    assert_eq!(s3.max_write_retries, 4);
}

#[test]
fn s3_prefix_and_region_fallbacks() {
    assert_eq!(s3_prefix(Some(" /cluster3/ ")), "cluster3");
    assert_eq!(s3_prefix(Some("/ / /")), "starcite");
    assert_eq!(s3_prefix(Some("a/b/")), "a/b");
    assert_eq!(s3_prefix(None), "starcite");
    let region = |pairs: &[(&str, &str)]| {
        let mut all = vec![
            ("STARCITE_ARCHIVE_ADAPTER", "s3"),
            ("STARCITE_S3_BUCKET", "b"),
        ];
        all.extend_from_slice(pairs);
        match config(&all).archive.backend {
            ArchiveBackend::S3(s3) => s3.region,
            other => panic!("expected s3, got {other:?}"),
        }
    };
    assert_eq!(region(&[]), "us-east-1");
    assert_eq!(region(&[("AWS_DEFAULT_REGION", "x")]), "x");
    assert_eq!(
        region(&[("AWS_DEFAULT_REGION", "x"), ("AWS_REGION", "y")]),
        "y"
    );
    assert_eq!(
        region(&[("AWS_REGION", "y"), ("STARCITE_S3_REGION", "z")]),
        "z"
    );
}

#[test]
fn postgres_settings() {
    assert_error(
        &[("STARCITE_ARCHIVE_ADAPTER", "postgres")],
        "environment variable DATABASE_URL or STARCITE_POSTGRES_URL is missing (required when STARCITE_ARCHIVE_ADAPTER=postgres)",
    );
    let config = config(&[
        ("STARCITE_ARCHIVE_ADAPTER", "postgres"),
        ("DATABASE_URL", "postgres://a"),
        ("STARCITE_POSTGRES_URL", "postgres://b"),
        ("DB_POOL_SIZE", "3"),
        ("MIGRATE_ON_BOOT", "no"),
    ]);
    assert_eq!(
        config.archive.backend,
        ArchiveBackend::Postgres(PostgresSettings {
            url: "postgres://a".to_string(),
            pool_size: 3,
            migrate_on_boot: false
        })
    );
    let config = super::tests::config(&[
        ("STARCITE_ARCHIVE_ADAPTER", "postgres"),
        ("STARCITE_POSTGRES_URL", "postgres://b"),
    ]);
    let ArchiveBackend::Postgres(postgres) = config.archive.backend else {
        panic!("expected postgres");
    };
    assert_eq!(postgres.url, "postgres://b");
}

#[test]
fn local_archive_needs_one_write_node_unless_shared() {
    let local_cluster = with(cluster_base(), &[("STARCITE_ARCHIVE_ADAPTER", "local")]);
    assert_error(
        &local_cluster,
        "STARCITE_ARCHIVE_ADAPTER=local requires a single write node (set STARCITE_ARCHIVE_LOCAL_SHARED=true only if STARCITE_ARCHIVE_LOCAL_DIR is a filesystem shared by all write nodes)",
    );
    let shared = config(&with(
        local_cluster,
        &[("STARCITE_ARCHIVE_LOCAL_SHARED", "true")],
    ));
    assert!(matches!(
        shared.archive.backend,
        ArchiveBackend::Local { shared: true, .. }
    ));
}

#[test]
fn removed_variables_warn() {
    let loaded = load(&variables(&[
        ("PHX_SERVER", "true"),
        ("SLOT_LOG_DIR", "/x"),
    ]))
    .expect("valid configuration");
    assert_eq!(
        loaded.warnings,
        vec![
            "ignoring unsupported variable PHX_SERVER",
            "ignoring unsupported variable SLOT_LOG_DIR",
        ]
    );
}

#[test]
fn flags_override_variables_and_report_the_variable() {
    let mut map = variables(&[("PORT", "4000")]);
    apply_flags(&["--port".to_string(), "5000".to_string()], &mut map).expect("flags");
    assert_eq!(load(&map).expect("valid").config.port, 5000);
    let mut map = variables(&[("PORT", "4000")]);
    apply_flags(&["--port=x".to_string()], &mut map).expect("flags");
    assert_eq!(
        load(&map).expect_err("invalid").errors,
        vec!["invalid integer for PORT: \"x\""]
    );
}

#[test]
fn fault_injection_variable() {
    assert_eq!(
        config(&[("STARCITE_TEST_FAIL_FSYNC_AFTER", "3")]).test_fail_fsync_after,
        Some(3)
    );
}

#[test]
fn multiple_errors_across_sections() {
    let errors = errors(&[
        ("NODE_NAME", "bad"),
        ("PORT", "x"),
        ("STARCITE_LOG_LEVEL", "loud"),
        ("STARCITE_ARCHIVE_ADAPTER", "s3"),
        ("STARCITE_EVENT_STORE_MAX_SIZE", "1 X"),
    ]);
    assert_eq!(errors.len(), 5, "{errors:?}");
}
