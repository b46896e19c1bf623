//! The variables of config.md §4 and how `starcite serve` flags map onto them.

/// How a variable may be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Environment variable and flag.
    EnvironmentAndFlag,
    /// A boolean; its flag may also be given without a value, meaning `true`.
    BooleanFlag,
    /// Environment only: secrets are never put on a command line.
    EnvironmentOnly,
}

use Source::{BooleanFlag, EnvironmentAndFlag, EnvironmentOnly};

/// Every variable `starcite serve` reads, in the order of config.md §4.
pub const VARIABLES: &[(&str, Source)] = &[
    ("NODE_NAME", EnvironmentAndFlag),
    ("CLUSTER_NODES", EnvironmentAndFlag),
    ("STARCITE_WRITE_NODE_IDS", EnvironmentAndFlag),
    ("STARCITE_WRITE_REPLICATION_FACTOR", EnvironmentAndFlag),
    ("STARCITE_NUM_GROUPS", EnvironmentAndFlag),
    ("STARCITE_HTTP_ADDR", EnvironmentAndFlag),
    ("PORT", EnvironmentAndFlag),
    ("STARCITE_OPS_ADDR", EnvironmentAndFlag),
    ("STARCITE_OPS_TOKEN", EnvironmentOnly),
    ("STARCITE_PEER_PORT", EnvironmentAndFlag),
    ("STARCITE_PEER_BIND_ADDR", EnvironmentAndFlag),
    ("STARCITE_PEER_TLS_CERT", EnvironmentAndFlag),
    ("STARCITE_PEER_TLS_KEY", EnvironmentAndFlag),
    ("STARCITE_PEER_TLS_CA", EnvironmentAndFlag),
    ("STARCITE_TLS_CERT", EnvironmentAndFlag),
    ("STARCITE_TLS_KEY", EnvironmentAndFlag),
    ("STARCITE_DATA_DIR", EnvironmentAndFlag),
    ("STARCITE_RAFT_DATA_DIR", EnvironmentAndFlag),
    ("STARCITE_RAFT_HEARTBEAT_MS", EnvironmentAndFlag),
    ("STARCITE_RAFT_ELECTION_TIMEOUT_MS", EnvironmentAndFlag),
    ("STARCITE_ROUTE_LEADER_CACHE_TTL_MS", EnvironmentAndFlag),
    ("STARCITE_TAIL_BUFFER_EVENTS", EnvironmentAndFlag),
    ("STARCITE_SHUTDOWN_TIMEOUT_MS", EnvironmentAndFlag),
    ("STARCITE_METRICS_ENABLED", BooleanFlag),
    ("STARCITE_LOG_LEVEL", EnvironmentAndFlag),
    ("STARCITE_LOG_FORMAT", EnvironmentAndFlag),
    ("STARCITE_SHARDS", EnvironmentAndFlag),
    ("STARCITE_AUTH_MODE", EnvironmentAndFlag),
    ("STARCITE_AUTH_JWT_ISSUER", EnvironmentAndFlag),
    ("STARCITE_AUTH_JWT_AUDIENCE", EnvironmentAndFlag),
    ("STARCITE_AUTH_JWKS_URL", EnvironmentAndFlag),
    ("STARCITE_AUTH_JWT_LEEWAY_SECONDS", EnvironmentAndFlag),
    ("STARCITE_AUTH_JWKS_REFRESH_MS", EnvironmentAndFlag),
    ("STARCITE_AUTH_JWKS_STALE_MAX_MS", EnvironmentAndFlag),
    ("STARCITE_SECRET_KEY_BASE", EnvironmentOnly),
    ("STARCITE_AUTH_PRINCIPAL_TOKEN_SALT", EnvironmentAndFlag),
    (
        "STARCITE_AUTH_PRINCIPAL_TOKEN_DEFAULT_TTL_SECONDS",
        EnvironmentAndFlag,
    ),
    (
        "STARCITE_AUTH_PRINCIPAL_TOKEN_MAX_TTL_SECONDS",
        EnvironmentAndFlag,
    ),
    ("STARCITE_ARCHIVE_ADAPTER", EnvironmentAndFlag),
    ("STARCITE_ARCHIVE_LOCAL_DIR", EnvironmentAndFlag),
    ("STARCITE_ARCHIVE_LOCAL_SHARED", BooleanFlag),
    ("STARCITE_S3_BUCKET", EnvironmentAndFlag),
    ("STARCITE_S3_PREFIX", EnvironmentAndFlag),
    ("STARCITE_S3_REGION", EnvironmentAndFlag),
    ("STARCITE_S3_ACCESS_KEY_ID", EnvironmentAndFlag),
    ("STARCITE_S3_SECRET_ACCESS_KEY", EnvironmentOnly),
    ("STARCITE_S3_SESSION_TOKEN", EnvironmentOnly),
    ("STARCITE_S3_ENDPOINT", EnvironmentAndFlag),
    ("STARCITE_S3_PATH_STYLE", BooleanFlag),
    ("STARCITE_S3_MAX_WRITE_RETRIES", EnvironmentAndFlag),
    ("DATABASE_URL", EnvironmentOnly),
    ("STARCITE_POSTGRES_URL", EnvironmentOnly),
    ("DB_POOL_SIZE", EnvironmentAndFlag),
    ("MIGRATE_ON_BOOT", BooleanFlag),
    ("STARCITE_ARCHIVE_FLUSH_INTERVAL_MS", EnvironmentAndFlag),
    ("STARCITE_ARCHIVE_BATCH_SIZE", EnvironmentAndFlag),
    ("STARCITE_ARCHIVE_RETRY_MAX_MS", EnvironmentAndFlag),
    ("STARCITE_EVENT_STORE_MAX_SIZE", EnvironmentAndFlag),
    (
        "STARCITE_EVENT_STORE_CAPACITY_CHECK_INTERVAL",
        EnvironmentAndFlag,
    ),
    ("STARCITE_ARCHIVE_READ_CACHE_MAX_SIZE", EnvironmentAndFlag),
    (
        "STARCITE_ARCHIVE_READ_CACHE_RECLAIM_FRACTION",
        EnvironmentAndFlag,
    ),
    ("STARCITE_ARCHIVE_READ_CACHE_COMPRESSED", BooleanFlag),
    // Test-only fault injection (not part of the documented surface).
    ("STARCITE_TEST_FAIL_FSYNC_AFTER", EnvironmentOnly),
];

/// Variables that are deliberately not read (config.md §4.4); each one set logs a warning.
pub const REMOVED_VARIABLES: &[&str] = &[
    "PHX_SERVER",
    "PHX_HOST",
    "SECRET_KEY_BASE",
    "DNS_CLUSTER_QUERY",
    "DNS_CLUSTER_NODE_BASENAME",
    "DNS_POLL_INTERVAL_MS",
    "SLOT_LOG_DIR",
    "STARCITE_EMIT_ROUTING_TELEMETRY",
    "STARCITE_EMIT_EVENT_APPEND_TELEMETRY",
    "STARCITE_EMIT_EVENT_STORE_WRITE_TELEMETRY",
    "STARCITE_ROUTE_LEADER_PROBE_ON_MISS",
    "RELEASE_NODE",
    "RELEASE_COOKIE",
    "RELEASE_DISTRIBUTION",
    "RELEASE_NODE_BASENAME",
    "FLY_PRIVATE_IP",
];

/// The flag of a variable: without `STARCITE_`, lower-cased, `_` → `-`, behind `--`.
pub fn flag_name(variable: &str) -> String {
    let stem = variable.strip_prefix("STARCITE_").unwrap_or(variable);
    format!("--{}", stem.to_ascii_lowercase().replace('_', "-"))
}

/// The variable and source behind a flag (`--num-groups` → `STARCITE_NUM_GROUPS`); `None` for
/// unknown flags and for secrets, which have no flag.
pub fn variable_for_flag(flag: &str) -> Option<(&'static str, Source)> {
    VARIABLES
        .iter()
        .copied()
        .filter(|(_, source)| *source != EnvironmentOnly)
        .find(|(variable, _)| flag_name(variable) == flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_names_follow_the_rule() {
        assert_eq!(flag_name("STARCITE_NUM_GROUPS"), "--num-groups");
        assert_eq!(flag_name("PORT"), "--port");
        assert_eq!(flag_name("NODE_NAME"), "--node-name");
        assert_eq!(
            variable_for_flag("--peer-tls-ca"),
            Some(("STARCITE_PEER_TLS_CA", EnvironmentAndFlag))
        );
        assert_eq!(variable_for_flag("--secret-key-base"), None);
        assert_eq!(variable_for_flag("--database-url"), None);
    }

    #[test]
    fn flag_names_are_unique() {
        let mut flags: Vec<String> = VARIABLES.iter().map(|(name, _)| flag_name(name)).collect();
        flags.sort();
        let count = flags.len();
        flags.dedup();
        assert_eq!(flags.len(), count);
    }
}
