//! Configuration of `starcite serve` (config.md): every variable and flag parsed from one map of
//! environment ∪ flags, every problem collected, then the combination rules of §5 applied.
//!
//! Loading is pure apart from reading the TLS files named by the TLS variables, so tests build the
//! map directly and never touch the process environment.

mod flags;
mod parse;
mod variables;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

pub use flags::{apply as apply_flags, help_text};

/// Node name when `NODE_NAME` is unset.
pub const DEFAULT_NODE_NAME: &str = "starcite@localhost";
/// Peer port when neither `STARCITE_PEER_PORT` nor a `CLUSTER_NODES` entry gives one.
pub const DEFAULT_PEER_PORT: u16 = 4100;
/// Replication factor cap of the derived default: min(3, write nodes).
pub const DEFAULT_REPLICATION_FACTOR_MAX: u32 = 3;
/// Upper bound of `STARCITE_NUM_GROUPS`.
pub const NUM_GROUPS_MAX: u64 = 65_536;
/// Upper bound of `STARCITE_SHARDS`.
pub const SHARDS_MAX: u64 = 1024;
/// Election timeout must be at least this many heartbeats.
pub const ELECTION_TIMEOUT_HEARTBEATS_MIN: u64 = 5;
/// Minimum length of `STARCITE_SECRET_KEY_BASE`.
pub const SECRET_KEY_BASE_BYTES_MIN: usize = 32;

const PORT_MAX: u64 = u16::MAX as u64;
const POSITIVE_MAX: u64 = u64::MAX;

/// Log verbosity (`STARCITE_LOG_LEVEL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Log line format (`STARCITE_LOG_FORMAT`), ops.md §8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// One `CLUSTER_NODES` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    /// `name@host`.
    pub id: String,
    pub peer_port: u16,
}

/// Paths of the public listener's certificate chain and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Paths of the peer transport's mutual TLS material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// `jwt` mode settings (auth.md).
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSettings {
    pub issuer: String,
    pub audience: String,
    pub jwks_url: String,
    pub secret_key_base: String,
}

// Hand-written so that the secret never reaches a log line through `{:?}`.
impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("JwtSettings")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("jwks_url", &self.jwks_url)
            .field("secret_key_base", &"<redacted>")
            .finish()
    }
}

/// Authentication settings (config.md §4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    /// `None` = auth mode `none`.
    pub jwt: Option<JwtSettings>,
    pub jwt_leeway_seconds: u64,
    pub jwks_refresh_ms: u64,
    pub jwks_stale_max_ms: u64,
    pub principal_token_salt: String,
    pub principal_token_default_ttl_seconds: u64,
    pub principal_token_max_ttl_seconds: u64,
}

/// S3 adapter settings.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// Trimmed of whitespace and `/` at both ends; never empty.
    pub prefix: String,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// `http(s)://host[:port]`, `None` = AWS.
    pub endpoint: Option<String>,
    pub path_style: bool,
    pub max_write_retries: u64,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("max_write_retries", &self.max_write_retries)
            .finish_non_exhaustive()
    }
}

/// Postgres adapter settings.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// `DATABASE_URL`, else `STARCITE_POSTGRES_URL`.
    pub url: String,
    pub pool_size: u64,
    pub migrate_on_boot: bool,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PostgresSettings")
            .field("url", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .field("migrate_on_boot", &self.migrate_on_boot)
            .finish()
    }
}

/// The archive backend and its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchiveBackend {
    Local { dir: PathBuf, shared: bool },
    S3(S3Settings),
    Postgres(PostgresSettings),
}

/// Archive settings (config.md §4.3).
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiveConfig {
    pub backend: ArchiveBackend,
    pub flush_interval_ms: u64,
    pub batch_size: u64,
    pub retry_max_ms: u64,
}

/// Memory budget settings (config.md §4.3).
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryConfig {
    pub event_store_max_bytes: u64,
    pub event_store_capacity_check_interval: u64,
    pub read_cache_max_bytes: u64,
    pub read_cache_reclaim_fraction: f64,
    pub read_cache_compressed: bool,
}

/// A validated configuration of `starcite serve`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub node_name: String,
    /// Every write and router node; just this node when `CLUSTER_NODES` is unset.
    pub cluster_nodes: Vec<ClusterNode>,
    pub write_node_ids: Vec<String>,
    pub write_replication_factor: u32,
    pub num_groups: u32,
    pub http_addr: IpAddr,
    pub port: u16,
    pub ops_addr: SocketAddr,
    pub ops_token: Option<String>,
    pub peer_port: u16,
    pub peer_bind_addr: IpAddr,
    pub peer_tls: Option<PeerTlsFiles>,
    pub tls: Option<TlsFiles>,
    pub data_dir: PathBuf,
    pub raft_data_dir: PathBuf,
    pub raft_heartbeat_ms: u64,
    pub raft_election_timeout_ms: u64,
    pub route_leader_cache_ttl_ms: u64,
    pub tail_buffer_events: u32,
    pub shutdown_timeout_ms: u64,
    pub metrics_enabled: bool,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    pub shards: u32,
    pub auth: AuthConfig,
    pub archive: ArchiveConfig,
    pub memory: MemoryConfig,
    /// `STARCITE_TEST_FAIL_FSYNC_AFTER`: fail the n-th WAL fsync (tests only).
    pub test_fail_fsync_after: Option<u64>,
}

impl Config {
    /// Whether this node hosts Raft groups.
    pub fn is_write_node(&self) -> bool {
        self.write_node_ids.contains(&self.node_name)
    }

    /// The peer listener runs only in clusters of two or more nodes.
    pub fn peer_listener_enabled(&self) -> bool {
        self.cluster_nodes.len() >= 2
    }

    /// The public HTTP listener.
    pub fn http_socket(&self) -> SocketAddr {
        SocketAddr::new(self.http_addr, self.port)
    }
}

/// A configuration that parsed, with the warnings to log once logging is set up.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// `ignoring unsupported variable <NAME>` lines (config.md §4.4).
    pub warnings: Vec<String>,
}

/// Every problem found, in variable order (config.md §3).
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidConfig {
    pub errors: Vec<String>,
}

impl std::fmt::Display for InvalidConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.errors.len();
        let noun = if count == 1 { "error" } else { "errors" };
        write!(
            formatter,
            "starcite: invalid configuration ({count} {noun})"
        )?;
        for error in &self.errors {
            write!(formatter, "\n  - {error}")?;
        }
        Ok(())
    }
}

/// The process environment as a map (non-UTF-8 variables cannot be Starcite settings).
pub fn environment() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .collect()
}

/// Number of CPUs, the default of `STARCITE_SHARDS`.
pub fn cpu_count() -> u64 {
    std::thread::available_parallelism()
        .map(|count| count.get() as u64)
        .unwrap_or(1)
}

/// Parses and validates `variables` (environment ∪ flags).
pub fn load(variables: &BTreeMap<String, String>) -> Result<Loaded, InvalidConfig> {
    let mut reader = Reader {
        variables,
        errors: Vec::new(),
        invalid: BTreeSet::new(),
    };
    let config = read_config(&mut reader);
    if !reader.errors.is_empty() {
        return Err(InvalidConfig {
            errors: reader.errors,
        });
    }
    let warnings = variables::REMOVED_VARIABLES
        .iter()
        .filter(|name| {
            variables
                .get(**name)
                .is_some_and(|value| !value.trim().is_empty())
        })
        .map(|name| format!("ignoring unsupported variable {name}"))
        .collect();
    Ok(Loaded { config, warnings })
}

/// Looks variables up and records every problem instead of stopping at the first.
struct Reader<'a> {
    variables: &'a BTreeMap<String, String>,
    errors: Vec<String>,
    /// Variables whose value failed to parse: combination rules skip them.
    invalid: BTreeSet<&'static str>,
}

impl<'a> Reader<'a> {
    /// `(raw, trimmed)` when set to something other than blanks.
    fn get(&self, name: &str) -> Option<(&'a str, &'a str)> {
        let raw = self.variables.get(name)?.as_str();
        let trimmed = raw.trim();
        (!trimmed.is_empty()).then_some((raw, trimmed))
    }

    fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(|(_, trimmed)| trimmed.to_string())
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).map(|(_, trimmed)| PathBuf::from(trimmed))
    }

    fn fail(&mut self, name: &'static str, message: String) {
        self.invalid.insert(name);
        self.errors.push(message);
    }

    fn is_invalid(&self, name: &str) -> bool {
        self.invalid.contains(name)
    }

    /// An integer in `minimum..=maximum`: `invalid integer for X: "<raw>"` otherwise.
    fn integer(&mut self, name: &'static str, minimum: u64, maximum: u64, default: u64) -> u64 {
        let Some((raw, trimmed)) = self.get(name) else {
            return default;
        };
        match parse::integer(trimmed, minimum, maximum) {
            Some(value) => value,
            None => {
                self.fail(name, format!("invalid integer for {name}: \"{raw}\""));
                default
            }
        }
    }

    fn boolean(&mut self, name: &'static str, default: bool) -> bool {
        let Some((raw, trimmed)) = self.get(name) else {
            return default;
        };
        match parse::boolean(trimmed) {
            Some(value) => value,
            None => {
                self.fail(name, format!("invalid boolean for {name}: \"{raw}\""));
                default
            }
        }
    }

    fn size_bytes(&mut self, name: &'static str, default: u64) -> u64 {
        let Some((raw, trimmed)) = self.get(name) else {
            return default;
        };
        match parse::size_bytes(trimmed) {
            Some(value) => value,
            None => {
                self.fail(
                    name,
                    format!("invalid size for {name}: \"{raw}\" (examples: 256MB, 4G, 1024M)"),
                );
                default
            }
        }
    }

    fn fraction(&mut self, name: &'static str, default: f64) -> f64 {
        let Some((raw, trimmed)) = self.get(name) else {
            return default;
        };
        match parse::fraction(trimmed) {
            Some(value) => value,
            None => {
                self.fail(
                    name,
                    format!("invalid float for {name}: \"{raw}\" (expected 0.01..0.99)"),
                );
                default
            }
        }
    }

    /// One of `allowed` (trimmed, lower-cased): `invalid X: "<raw>" (expected a|b)` otherwise.
    fn choice(
        &mut self,
        name: &'static str,
        allowed: &[&'static str],
        default: &'static str,
    ) -> &'static str {
        let Some((raw, trimmed)) = self.get(name) else {
            return default;
        };
        let lowered = trimmed.to_ascii_lowercase();
        match allowed.iter().find(|choice| **choice == lowered) {
            Some(choice) => choice,
            None => {
                let expected = allowed.join("|");
                self.fail(
                    name,
                    format!("invalid {name}: \"{raw}\" (expected {expected})"),
                );
                default
            }
        }
    }

    fn ip_address(&mut self, name: &'static str, default: IpAddr) -> IpAddr {
        let Some((raw, trimmed)) = self.get(name) else {
            return default;
        };
        match parse::ip_address(trimmed) {
            Some(address) => address,
            None => {
                self.fail(name, format!("invalid address for {name}: \"{raw}\""));
                default
            }
        }
    }
}

fn read_config(reader: &mut Reader<'_>) -> Config {
    let node_name = read_node_name(reader);
    let cluster_nodes = read_cluster_nodes(reader, &node_name);
    let write_node_ids = read_write_nodes(reader, &node_name, &cluster_nodes);
    let write_replication_factor = read_replication_factor(reader, write_node_ids.len());
    let num_groups = read_num_groups(reader);

    let http_addr = reader.ip_address("STARCITE_HTTP_ADDR", IpAddr::V4(Ipv4Addr::LOCALHOST));
    let port = reader.integer("PORT", 1, PORT_MAX, 4000) as u16;
    let ops_addr = read_ops_addr(reader, http_addr, port);
    let ops_token = reader.string("STARCITE_OPS_TOKEN");
    let peer_port = read_peer_port(reader, &node_name, &cluster_nodes);
    let peer_bind_addr =
        reader.ip_address("STARCITE_PEER_BIND_ADDR", IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let peer_tls = read_peer_tls(reader);
    let tls = read_tls(reader);

    let data_dir = reader
        .path("STARCITE_DATA_DIR")
        .unwrap_or_else(|| PathBuf::from("./data"));
    let raft_data_dir = reader
        .path("STARCITE_RAFT_DATA_DIR")
        .unwrap_or_else(|| data_dir.join("raft"));
    let (raft_heartbeat_ms, raft_election_timeout_ms) = read_raft_timing(reader);
    let route_leader_cache_ttl_ms = reader.integer(
        "STARCITE_ROUTE_LEADER_CACHE_TTL_MS",
        1,
        POSITIVE_MAX,
        10_000,
    );
    let tail_buffer_events =
        reader.integer("STARCITE_TAIL_BUFFER_EVENTS", 16, 1_000_000, 1000) as u32;
    let shutdown_timeout_ms =
        reader.integer("STARCITE_SHUTDOWN_TIMEOUT_MS", 1, POSITIVE_MAX, 30_000);
    let metrics_enabled = reader.boolean("STARCITE_METRICS_ENABLED", true);
    let log_level = match reader.choice(
        "STARCITE_LOG_LEVEL",
        &["error", "warn", "info", "debug", "trace"],
        "info",
    ) {
        "error" => LogLevel::Error,
        "warn" => LogLevel::Warn,
        "debug" => LogLevel::Debug,
        "trace" => LogLevel::Trace,
        _ => LogLevel::Info,
    };
    let log_format = match reader.choice("STARCITE_LOG_FORMAT", &["text", "json"], "text") {
        "json" => LogFormat::Json,
        _ => LogFormat::Text,
    };
    let shards = reader.integer(
        "STARCITE_SHARDS",
        1,
        SHARDS_MAX,
        cpu_count().clamp(1, SHARDS_MAX),
    ) as u32;
    let auth = read_auth(reader);
    let archive = read_archive(reader, &data_dir, write_node_ids.len());
    let memory = read_memory(reader);
    let test_fail_fsync_after = reader
        .get("STARCITE_TEST_FAIL_FSYNC_AFTER")
        .map(|_| reader.integer("STARCITE_TEST_FAIL_FSYNC_AFTER", 0, POSITIVE_MAX, 0));

    Config {
        node_name,
        cluster_nodes,
        write_node_ids,
        write_replication_factor,
        num_groups,
        http_addr,
        port,
        ops_addr,
        ops_token,
        peer_port,
        peer_bind_addr,
        peer_tls,
        tls,
        data_dir,
        raft_data_dir,
        raft_heartbeat_ms,
        raft_election_timeout_ms,
        route_leader_cache_ttl_ms,
        tail_buffer_events,
        shutdown_timeout_ms,
        metrics_enabled,
        log_level,
        log_format,
        shards,
        auth,
        archive,
        memory,
        test_fail_fsync_after,
    }
}

fn read_node_name(reader: &mut Reader<'_>) -> String {
    let Some((raw, trimmed)) = reader.get("NODE_NAME") else {
        return DEFAULT_NODE_NAME.to_string();
    };
    match parse::node_id(trimmed) {
        Some(id) => id,
        None => {
            reader.fail(
                "NODE_NAME",
                format!("invalid NODE_NAME: \"{raw}\" (expected name@host)"),
            );
            DEFAULT_NODE_NAME.to_string()
        }
    }
}

/// `CLUSTER_NODES`, or a cluster of this node alone (peer port 4100) when unset.
fn read_cluster_nodes(reader: &mut Reader<'_>, node_name: &str) -> Vec<ClusterNode> {
    let alone = || {
        vec![ClusterNode {
            id: node_name.to_string(),
            peer_port: DEFAULT_PEER_PORT,
        }]
    };
    let Some((raw, _)) = reader.get("CLUSTER_NODES") else {
        return alone();
    };
    let mut nodes: Vec<ClusterNode> = Vec::new();
    let mut entry_failed = false;
    for entry in raw
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        match parse::cluster_entry(entry) {
            Some((id, _)) if nodes.iter().any(|node| node.id == id) => {
                reader.fail(
                    "CLUSTER_NODES",
                    format!("duplicate node in CLUSTER_NODES: \"{id}\""),
                );
            }
            Some((id, peer_port)) => nodes.push(ClusterNode { id, peer_port }),
            None => {
                entry_failed = true;
                reader.fail(
                    "CLUSTER_NODES",
                    format!(
                        "invalid CLUSTER_NODES entry: \"{entry}\" (expected name@host:peer_port)"
                    ),
                );
            }
        }
    }
    if nodes.is_empty() && !entry_failed {
        // Only separators: there is no entry to quote but the value itself.
        reader.fail(
            "CLUSTER_NODES",
            format!("invalid CLUSTER_NODES entry: \"{raw}\" (expected name@host:peer_port)"),
        );
    }
    if reader.is_invalid("CLUSTER_NODES") {
        return if nodes.is_empty() { alone() } else { nodes };
    }
    if !reader.is_invalid("NODE_NAME") && !nodes.iter().any(|node| node.id == node_name) {
        reader.fail(
            "CLUSTER_NODES",
            format!("NODE_NAME \"{node_name}\" is not listed in CLUSTER_NODES"),
        );
    }
    nodes
}

fn read_write_nodes(
    reader: &mut Reader<'_>,
    node_name: &str,
    cluster_nodes: &[ClusterNode],
) -> Vec<String> {
    const NAME: &str = "STARCITE_WRITE_NODE_IDS";
    let Some((raw, _)) = reader.get(NAME) else {
        if cluster_nodes.len() >= 2 {
            reader.fail(
                NAME,
                "invalid write-node config: STARCITE_WRITE_NODE_IDS must be configured for distributed nodes"
                    .to_string(),
            );
        }
        return vec![node_name.to_string()];
    };
    let mut ids: Vec<String> = Vec::new();
    let mut syntax_ok = true;
    for entry in raw
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        match parse::node_id(entry) {
            Some(id) if ids.contains(&id) => {}
            Some(id) => ids.push(id),
            None => syntax_ok = false,
        }
    }
    if ids.is_empty() || !syntax_ok {
        reader.fail(
            NAME,
            format!("invalid node list for {NAME}: \"{raw}\" (expected comma-separated node ids)"),
        );
        return vec![node_name.to_string()];
    }
    if !reader.is_invalid("CLUSTER_NODES") && !reader.is_invalid("NODE_NAME") {
        for id in &ids {
            if !cluster_nodes.iter().any(|node| &node.id == id) {
                reader.fail(
                    NAME,
                    format!("write node \"{id}\" is not listed in CLUSTER_NODES"),
                );
            }
        }
    }
    ids
}

fn read_replication_factor(reader: &mut Reader<'_>, write_node_count: usize) -> u32 {
    const NAME: &str = "STARCITE_WRITE_REPLICATION_FACTOR";
    let write_nodes = write_node_count as u64;
    let default = write_nodes.min(u64::from(DEFAULT_REPLICATION_FACTOR_MAX));
    let factor = reader.integer(NAME, 1, POSITIVE_MAX, default);
    if reader.get(NAME).is_some()
        && !reader.is_invalid(NAME)
        && !reader.is_invalid("STARCITE_WRITE_NODE_IDS")
        && factor > write_nodes
    {
        reader.fail(
            NAME,
            format!(
                "invalid write-node config: write_replication_factor={factor} exceeds write_node_ids={write_nodes}"
            ),
        );
    }
    u32::try_from(factor.min(write_nodes)).unwrap_or(1).max(1)
}

fn read_num_groups(reader: &mut Reader<'_>) -> u32 {
    const NAME: &str = "STARCITE_NUM_GROUPS";
    let Some((raw, trimmed)) = reader.get(NAME) else {
        return 256;
    };
    let digits_only = trimmed.bytes().all(|byte| byte.is_ascii_digit());
    if !digits_only {
        reader.fail(NAME, format!("invalid integer for {NAME}: \"{raw}\""));
        return 256;
    }
    match parse::integer(trimmed, 1, NUM_GROUPS_MAX) {
        Some(value) => value as u32,
        None => {
            reader.fail(
                NAME,
                "invalid write-node config: num_groups must be between 1 and 65536".to_string(),
            );
            256
        }
    }
}

fn read_ops_addr(reader: &mut Reader<'_>, http_addr: IpAddr, port: u16) -> SocketAddr {
    const NAME: &str = "STARCITE_OPS_ADDR";
    let default = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4001);
    let ops_addr = match reader.get(NAME) {
        None => default,
        Some((raw, trimmed)) => match parse::socket_address(trimmed) {
            Some(address) => address,
            None => {
                reader.fail(
                    NAME,
                    format!("invalid address for {NAME}: \"{raw}\" (expected ip:port)"),
                );
                return default;
            }
        },
    };
    if reader.is_invalid("STARCITE_HTTP_ADDR") || reader.is_invalid("PORT") {
        return ops_addr;
    }
    // Two listeners on one port collide when their addresses are equal or either is a wildcard.
    let overlapping = ops_addr.port() == port
        && (ops_addr.ip() == http_addr
            || ops_addr.ip().is_unspecified()
            || http_addr.is_unspecified());
    if overlapping {
        reader.fail(NAME, format!("{NAME} must differ from the HTTP listener"));
    }
    ops_addr
}

fn read_peer_port(reader: &mut Reader<'_>, node_name: &str, cluster_nodes: &[ClusterNode]) -> u16 {
    const NAME: &str = "STARCITE_PEER_PORT";
    let own_entry_port = cluster_nodes
        .iter()
        .find(|node| node.id == node_name)
        .map(|node| node.peer_port);
    let default = own_entry_port.unwrap_or(DEFAULT_PEER_PORT);
    let peer_port = reader.integer(NAME, 1, PORT_MAX, u64::from(default)) as u16;
    let cluster_listed =
        reader.get("CLUSTER_NODES").is_some() && !reader.is_invalid("CLUSTER_NODES");
    if let (true, false, true, Some(entry_port)) = (
        reader.get(NAME).is_some(),
        reader.is_invalid(NAME),
        cluster_listed,
        own_entry_port,
    ) {
        if entry_port != peer_port {
            reader.fail(
                NAME,
                format!(
                    "{NAME}={peer_port} does not match the peer port of NODE_NAME in CLUSTER_NODES ({entry_port})"
                ),
            );
        }
    }
    peer_port
}

/// What a PEM file must contain.
#[derive(Clone, Copy)]
enum PemKind {
    Certificate,
    PrivateKey,
}

/// Reads a PEM file and checks that it holds the expected block; the error is the `<reason>` of
/// `cannot load X: <path>: <reason>`.
fn check_pem(path: &Path, kind: PemKind) -> Result<(), String> {
    let contents = std::fs::read(path).map_err(|error| error.to_string())?;
    let text = String::from_utf8_lossy(&contents);
    let found = match kind {
        PemKind::Certificate => text.contains("-----BEGIN CERTIFICATE-----"),
        PemKind::PrivateKey => [
            "PRIVATE KEY-----",
            "RSA PRIVATE KEY-----",
            "EC PRIVATE KEY-----",
        ]
        .iter()
        .any(|label| text.contains(&format!("-----BEGIN {label}"))),
    };
    if found {
        return Ok(());
    }
    Err(match kind {
        PemKind::Certificate => "no PEM certificate found".to_string(),
        PemKind::PrivateKey => "no PEM private key (PKCS#8, PKCS#1 or SEC1) found".to_string(),
    })
}

fn load_pem(reader: &mut Reader<'_>, name: &'static str, path: &Path, kind: PemKind) {
    if let Err(reason) = check_pem(path, kind) {
        reader.fail(
            name,
            format!("cannot load {name}: {}: {reason}", path.display()),
        );
    }
}

fn read_peer_tls(reader: &mut Reader<'_>) -> Option<PeerTlsFiles> {
    let cert = reader.path("STARCITE_PEER_TLS_CERT");
    let key = reader.path("STARCITE_PEER_TLS_KEY");
    let ca = reader.path("STARCITE_PEER_TLS_CA");
    match (cert, key, ca) {
        (None, None, None) => None,
        (Some(cert), Some(key), Some(ca)) => {
            load_pem(
                reader,
                "STARCITE_PEER_TLS_CERT",
                &cert,
                PemKind::Certificate,
            );
            load_pem(reader, "STARCITE_PEER_TLS_KEY", &key, PemKind::PrivateKey);
            load_pem(reader, "STARCITE_PEER_TLS_CA", &ca, PemKind::Certificate);
            Some(PeerTlsFiles { cert, key, ca })
        }
        _ => {
            reader.fail(
                "STARCITE_PEER_TLS_CERT",
                "STARCITE_PEER_TLS_CERT, STARCITE_PEER_TLS_KEY and STARCITE_PEER_TLS_CA must be set together"
                    .to_string(),
            );
            None
        }
    }
}

fn read_tls(reader: &mut Reader<'_>) -> Option<TlsFiles> {
    let cert = reader.path("STARCITE_TLS_CERT");
    let key = reader.path("STARCITE_TLS_KEY");
    match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            load_pem(reader, "STARCITE_TLS_CERT", &cert, PemKind::Certificate);
            load_pem(reader, "STARCITE_TLS_KEY", &key, PemKind::PrivateKey);
            Some(TlsFiles { cert, key })
        }
        _ => {
            reader.fail(
                "STARCITE_TLS_CERT",
                "STARCITE_TLS_CERT and STARCITE_TLS_KEY must be set together".to_string(),
            );
            None
        }
    }
}

fn read_raft_timing(reader: &mut Reader<'_>) -> (u64, u64) {
    const HEARTBEAT: &str = "STARCITE_RAFT_HEARTBEAT_MS";
    const ELECTION: &str = "STARCITE_RAFT_ELECTION_TIMEOUT_MS";
    let heartbeat_ms = reader.integer(HEARTBEAT, 10, POSITIVE_MAX, 100);
    let election_timeout_ms = reader.integer(ELECTION, 1, POSITIVE_MAX, 1000);
    let both_valid = !reader.is_invalid(HEARTBEAT) && !reader.is_invalid(ELECTION);
    let required_ms = heartbeat_ms.saturating_mul(ELECTION_TIMEOUT_HEARTBEATS_MIN);
    if both_valid && election_timeout_ms < required_ms {
        reader.fail(
            ELECTION,
            format!(
                "invalid raft timing: {ELECTION}={election_timeout_ms} must be at least 5 x {HEARTBEAT}={heartbeat_ms}"
            ),
        );
    }
    (heartbeat_ms, election_timeout_ms)
}

fn read_auth(reader: &mut Reader<'_>) -> AuthConfig {
    let jwt_mode = reader.choice("STARCITE_AUTH_MODE", &["none", "jwt"], "none") == "jwt";
    let issuer = reader.string("STARCITE_AUTH_JWT_ISSUER");
    let audience = reader.string("STARCITE_AUTH_JWT_AUDIENCE");
    let jwks_url = match reader.get("STARCITE_AUTH_JWKS_URL") {
        None => None,
        Some((raw, trimmed)) => match parse::http_url(trimmed) {
            Some(_) => Some(trimmed.to_string()),
            None => {
                reader.fail(
                    "STARCITE_AUTH_JWKS_URL",
                    format!("invalid STARCITE_AUTH_JWKS_URL: \"{raw}\" (expected http(s) URL)"),
                );
                None
            }
        },
    };
    let secret_key_base = reader.string("STARCITE_SECRET_KEY_BASE");
    let jwt_leeway_seconds = reader.integer("STARCITE_AUTH_JWT_LEEWAY_SECONDS", 0, POSITIVE_MAX, 1);
    let jwks_refresh_ms = reader.integer("STARCITE_AUTH_JWKS_REFRESH_MS", 1, POSITIVE_MAX, 60_000);
    let jwks_stale_max_ms =
        reader.integer("STARCITE_AUTH_JWKS_STALE_MAX_MS", 0, POSITIVE_MAX, 300_000);

    let missing = |reader: &mut Reader<'_>, name: &'static str, suffix: &str| {
        reader.fail(
            name,
            format!("missing required environment variable {name}{suffix}"),
        );
    };
    if jwt_mode {
        if issuer.is_none() {
            missing(reader, "STARCITE_AUTH_JWT_ISSUER", "");
        }
        if audience.is_none() {
            missing(reader, "STARCITE_AUTH_JWT_AUDIENCE", "");
        }
        if jwks_url.is_none() && !reader.is_invalid("STARCITE_AUTH_JWKS_URL") {
            missing(reader, "STARCITE_AUTH_JWKS_URL", "");
        }
        if secret_key_base.is_none() {
            let suffix = if reader.get("SECRET_KEY_BASE").is_some() {
                " (SECRET_KEY_BASE is no longer read)"
            } else {
                ""
            };
            missing(reader, "STARCITE_SECRET_KEY_BASE", suffix);
        }
    }
    if secret_key_base
        .as_ref()
        .is_some_and(|secret| secret.len() < SECRET_KEY_BASE_BYTES_MIN)
    {
        reader.fail(
            "STARCITE_SECRET_KEY_BASE",
            "invalid STARCITE_SECRET_KEY_BASE: must be at least 32 bytes".to_string(),
        );
    }

    // A salt set to blanks is an error, unlike other variables where blank means unset.
    let principal_token_salt = match reader.variables.get("STARCITE_AUTH_PRINCIPAL_TOKEN_SALT") {
        None => "principal-token-v1".to_string(),
        Some(value) if value.trim().is_empty() => {
            reader.fail(
                "STARCITE_AUTH_PRINCIPAL_TOKEN_SALT",
                "invalid STARCITE_AUTH_PRINCIPAL_TOKEN_SALT: cannot be empty".to_string(),
            );
            "principal-token-v1".to_string()
        }
        Some(value) => value.trim().to_string(),
    };
    const DEFAULT_TTL: &str = "STARCITE_AUTH_PRINCIPAL_TOKEN_DEFAULT_TTL_SECONDS";
    const MAX_TTL: &str = "STARCITE_AUTH_PRINCIPAL_TOKEN_MAX_TTL_SECONDS";
    let default_ttl = reader.integer(DEFAULT_TTL, 1, POSITIVE_MAX, 5);
    let max_ttl = reader.integer(MAX_TTL, 1, POSITIVE_MAX, 15);
    if !reader.is_invalid(DEFAULT_TTL) && !reader.is_invalid(MAX_TTL) && default_ttl > max_ttl {
        reader.fail(
            DEFAULT_TTL,
            format!(
                "invalid principal token ttl settings: default ttl {default_ttl} exceeds max ttl {max_ttl}"
            ),
        );
    }

    let jwt = match (jwt_mode, issuer, audience, jwks_url, secret_key_base) {
        (true, Some(issuer), Some(audience), Some(jwks_url), Some(secret_key_base)) => {
            Some(JwtSettings {
                issuer,
                audience,
                jwks_url,
                secret_key_base,
            })
        }
        _ => None,
    };
    AuthConfig {
        jwt,
        jwt_leeway_seconds,
        jwks_refresh_ms,
        jwks_stale_max_ms,
        principal_token_salt,
        principal_token_default_ttl_seconds: default_ttl,
        principal_token_max_ttl_seconds: max_ttl,
    }
}

/// `STARCITE_S3_PREFIX` without whitespace and `/` at either end; `starcite` when nothing remains.
pub fn s3_prefix(raw: Option<&str>) -> String {
    let trimmed = raw
        .unwrap_or("")
        .trim_matches(|character: char| character.is_whitespace() || character == '/');
    if trimmed.is_empty() {
        "starcite".to_string()
    } else {
        trimmed.to_string()
    }
}

fn read_s3(reader: &mut Reader<'_>, s3_mode: bool) -> Option<S3Settings> {
    let bucket = reader.string("STARCITE_S3_BUCKET");
    if s3_mode && bucket.is_none() {
        reader.fail(
            "STARCITE_S3_BUCKET",
            "environment variable STARCITE_S3_BUCKET is missing (required when STARCITE_ARCHIVE_ADAPTER=s3)"
                .to_string(),
        );
    }
    let prefix = s3_prefix(
        reader
            .variables
            .get("STARCITE_S3_PREFIX")
            .map(String::as_str),
    );
    let region = ["STARCITE_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|name| reader.string(name))
        .unwrap_or_else(|| "us-east-1".to_string());
    let access_key_id = reader.string("STARCITE_S3_ACCESS_KEY_ID");
    let secret_access_key = reader.string("STARCITE_S3_SECRET_ACCESS_KEY");
    if access_key_id.is_some() != secret_access_key.is_some() {
        reader.fail(
            "STARCITE_S3_ACCESS_KEY_ID",
            "STARCITE_S3_ACCESS_KEY_ID and STARCITE_S3_SECRET_ACCESS_KEY must be set together"
                .to_string(),
        );
    }
    let session_token = reader.string("STARCITE_S3_SESSION_TOKEN");
    let endpoint = match reader.get("STARCITE_S3_ENDPOINT") {
        None => None,
        Some((raw, trimmed)) => match parse::http_url(trimmed) {
            Some(url) if url.path.is_empty() || url.path == "/" => {
                Some(trimmed.trim_end_matches('/').to_string())
            }
            _ => {
                reader.fail(
                    "STARCITE_S3_ENDPOINT",
                    format!(
                        "invalid endpoint for S3 archive adapter: \"{raw}\" (expected http(s)://host[:port])"
                    ),
                );
                None
            }
        },
    };
    let path_style = reader.boolean("STARCITE_S3_PATH_STYLE", true);
    let max_write_retries = reader.integer("STARCITE_S3_MAX_WRITE_RETRIES", 1, POSITIVE_MAX, 4);
    Some(S3Settings {
        bucket: bucket?,
        prefix,
        region,
        access_key_id,
        secret_access_key,
        session_token,
        endpoint,
        path_style,
        max_write_retries,
    })
}

fn read_archive(
    reader: &mut Reader<'_>,
    data_dir: &Path,
    write_node_count: usize,
) -> ArchiveConfig {
    let adapter = reader.choice(
        "STARCITE_ARCHIVE_ADAPTER",
        &["local", "s3", "postgres"],
        "local",
    );
    let local_dir = reader
        .path("STARCITE_ARCHIVE_LOCAL_DIR")
        .unwrap_or_else(|| data_dir.join("archive"));
    let local_shared = reader.boolean("STARCITE_ARCHIVE_LOCAL_SHARED", false);
    let s3 = read_s3(reader, adapter == "s3");
    let postgres_url = reader
        .string("DATABASE_URL")
        .or_else(|| reader.string("STARCITE_POSTGRES_URL"));
    let pool_size = reader.integer("DB_POOL_SIZE", 1, 1000, 10);
    let migrate_on_boot = reader.boolean("MIGRATE_ON_BOOT", true);
    let flush_interval_ms =
        reader.integer("STARCITE_ARCHIVE_FLUSH_INTERVAL_MS", 1, POSITIVE_MAX, 5000);
    let batch_size = reader.integer("STARCITE_ARCHIVE_BATCH_SIZE", 1, 100_000, 5000);
    let retry_max_ms = reader.integer("STARCITE_ARCHIVE_RETRY_MAX_MS", 1, POSITIVE_MAX, 60_000);

    let local = ArchiveBackend::Local {
        dir: local_dir,
        shared: local_shared,
    };
    let backend = match adapter {
        "s3" => s3.map(ArchiveBackend::S3).unwrap_or(local),
        "postgres" => match postgres_url {
            Some(url) => ArchiveBackend::Postgres(PostgresSettings {
                url,
                pool_size,
                migrate_on_boot,
            }),
            None => {
                reader.fail(
                    "DATABASE_URL",
                    "environment variable DATABASE_URL or STARCITE_POSTGRES_URL is missing (required when STARCITE_ARCHIVE_ADAPTER=postgres)"
                        .to_string(),
                );
                local
            }
        },
        _ => {
            let write_nodes_known = !reader.is_invalid("STARCITE_WRITE_NODE_IDS");
            if write_nodes_known && write_node_count > 1 && !local_shared {
                reader.fail(
                    "STARCITE_ARCHIVE_ADAPTER",
                    "STARCITE_ARCHIVE_ADAPTER=local requires a single write node (set STARCITE_ARCHIVE_LOCAL_SHARED=true only if STARCITE_ARCHIVE_LOCAL_DIR is a filesystem shared by all write nodes)"
                        .to_string(),
                );
            }
            local
        }
    };
    ArchiveConfig {
        backend,
        flush_interval_ms,
        batch_size,
        retry_max_ms,
    }
}

fn read_memory(reader: &mut Reader<'_>) -> MemoryConfig {
    const GIB_BYTES: u64 = 1 << 30;
    const MIB_BYTES: u64 = 1 << 20;
    MemoryConfig {
        event_store_max_bytes: reader.size_bytes("STARCITE_EVENT_STORE_MAX_SIZE", 2 * GIB_BYTES),
        event_store_capacity_check_interval: reader.integer(
            "STARCITE_EVENT_STORE_CAPACITY_CHECK_INTERVAL",
            1,
            POSITIVE_MAX,
            4,
        ),
        read_cache_max_bytes: reader
            .size_bytes("STARCITE_ARCHIVE_READ_CACHE_MAX_SIZE", 512 * MIB_BYTES),
        read_cache_reclaim_fraction: reader
            .fraction("STARCITE_ARCHIVE_READ_CACHE_RECLAIM_FRACTION", 0.25),
        read_cache_compressed: reader.boolean("STARCITE_ARCHIVE_READ_CACHE_COMPRESSED", true),
    }
}
