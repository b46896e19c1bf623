//! Engine settings. `bin/` parses and validates the environment and flags (config.md) and fills
//! this in; the engine never reads the environment itself.

use std::path::PathBuf;

use crate::api::NodeMode;
use crate::wal::{FaultPlan, SEGMENT_BYTES_MAX_DEFAULT};

/// Settings the engine needs to start a node.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// `NODE_NAME` (`name@host`).
    pub node_name: String,
    /// Write node or router node.
    pub mode: NodeMode,
    /// `STARCITE_DATA_DIR`.
    pub data_dir: PathBuf,
    /// `STARCITE_RAFT_DATA_DIR` (WAL segments live in `<raft_data_dir>/shard-<n>/`).
    pub raft_data_dir: PathBuf,
    /// `STARCITE_SHARDS`: number of executors (1..=1024).
    pub shards: u32,
    /// Pin executor `n` to CPU `n % cores` (off in tests, where many nodes share the machine).
    pub pin_shards: bool,
    /// `STARCITE_NUM_GROUPS` (1..=65536).
    pub num_groups: u32,
    /// `STARCITE_EVENT_STORE_MAX_SIZE` in bytes: the 429 budget for unarchived hot events.
    pub event_store_max_bytes: u64,
    /// `STARCITE_ARCHIVE_FLUSH_INTERVAL_MS`, used for `Retry-After`.
    pub archive_flush_interval_ms: u64,
    /// `STARCITE_RAFT_HEARTBEAT_MS`.
    pub raft_heartbeat_ms: u64,
    /// `STARCITE_RAFT_ELECTION_TIMEOUT_MS`.
    pub raft_election_timeout_ms: u64,
    /// Failures to inject into every shard's write-ahead log, for tests of the fail-stop path
    /// (`bin/` sets it from a test-only environment variable). `None` in production.
    pub wal_fault: Option<FaultPlan>,
    /// Size of each write-ahead log segment file. Tests use small segments because a new
    /// segment is preallocated by writing zeros and recovery scans the whole last segment.
    pub wal_segment_bytes_max: u64,
}

impl EngineConfig {
    /// The zero-config single node of config.md §1, rooted at `data_dir`.
    pub fn single_node(data_dir: PathBuf) -> Self {
        EngineConfig {
            node_name: "starcite@localhost".to_string(),
            mode: NodeMode::WriteNode,
            raft_data_dir: data_dir.join("raft"),
            data_dir,
            shards: 1,
            pin_shards: false,
            num_groups: 256,
            event_store_max_bytes: 2 * 1024 * 1024 * 1024,
            archive_flush_interval_ms: 5000,
            raft_heartbeat_ms: 100,
            raft_election_timeout_ms: 1000,
            wal_fault: None,
            wal_segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
        }
    }

    /// `Retry-After` seconds for 429: `max(1, ceil(flush_interval_ms / 1000))`.
    pub fn retry_after_s(&self) -> u64 {
        self.archive_flush_interval_ms.div_ceil(1000).max(1)
    }
}
