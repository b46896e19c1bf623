//! Engine settings. `bin/` parses and validates the environment and flags (config.md) and fills
//! this in; the engine never reads the environment itself.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use starcite_archive::ArchiveAdapter;
use starcite_raft::NodeId;

use crate::api::NodeMode;
use crate::archiver::ArchiveProgress;
use crate::cluster::ClusterLink;
use crate::raftlog::RaftTransport;
use crate::wal::{FaultPlan, SEGMENT_BYTES_MAX_DEFAULT};

/// Node id of a single node (one voter per group).
pub const SINGLE_NODE_ID: NodeId = 1;

/// Applied entries between two snapshots of a group (cluster.md §4.1).
pub const RAFT_SNAPSHOT_ENTRIES_DEFAULT: u64 = 2048;

/// The replicated cluster as the engine sees it: this node's id, the voters of every group,
/// and the transport to the other nodes.
#[derive(Clone)]
pub struct RaftCluster {
    /// This node's Raft id (non-zero).
    pub node_id: NodeId,
    /// Voters of each group, indexed by group id (`num_groups` entries). A node runs a member
    /// only of the groups that list it.
    pub group_voters: Arc<Vec<Vec<NodeId>>>,
    /// Carries this node's envelopes to the others.
    pub transport: Arc<dyn RaftTransport>,
}

impl fmt::Debug for RaftCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaftCluster")
            .field("node_id", &self.node_id)
            .field("groups", &self.group_voters.len())
            .finish_non_exhaustive()
    }
}

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
    /// Applied entries between two snapshots of a group; tests lower it to force snapshots.
    pub raft_snapshot_entries: u64,
    /// The replicated cluster; `None` runs every group with this node as its only voter.
    pub cluster: Option<RaftCluster>,
    /// The archive tier; `None` keeps every event hot (no archiver, no cold reads), which only
    /// engine tests that do not exercise the archive use.
    pub archive: Option<ArchiveSettings>,
    /// Routing over the peer transport (cluster.md §5): with it, every request runs on a
    /// replica of its group chosen by the router, and commit notifications fan out to the
    /// nodes without a replica. `None` runs every request on this node.
    pub link: Option<Arc<ClusterLink>>,
}

/// Default of `STARCITE_ARCHIVE_BATCH_SIZE`: events per session per archiver tick.
pub const ARCHIVE_BATCH_EVENTS_DEFAULT: u64 = 5000;

/// Default of `STARCITE_ARCHIVE_RETRY_MAX_MS`: the cap of the per-session write backoff.
pub const ARCHIVE_RETRY_MAX_MS_DEFAULT: u64 = 60_000;

/// Default of `STARCITE_ARCHIVE_READ_CACHE_MAX_SIZE` (512 MiB).
pub const ARCHIVE_READ_CACHE_MAX_BYTES_DEFAULT: u64 = 512 * 1024 * 1024;

/// The archive tier of a node (archive.md, config.md §4.3). The flush interval is
/// [`EngineConfig::archive_flush_interval_ms`], which also sets `Retry-After`.
#[derive(Clone)]
pub struct ArchiveSettings {
    /// The opened adapter; it blocks, so the engine calls it only on its archive worker threads.
    pub adapter: Arc<dyn ArchiveAdapter>,
    /// `STARCITE_ARCHIVE_BATCH_SIZE`: at most this many events per session per tick.
    pub batch_events_max: u64,
    /// `STARCITE_ARCHIVE_RETRY_MAX_MS`: the cap of the per-session write backoff.
    pub retry_max_ms: u64,
    /// `STARCITE_ARCHIVE_READ_CACHE_MAX_SIZE`: the hard cap `C` of the read cache.
    pub read_cache_max_bytes: u64,
    /// `STARCITE_ARCHIVE_READ_CACHE_RECLAIM_FRACTION`: reclamation frees the cache until
    /// `U + C ≤ B × (1 − fraction)`.
    pub read_cache_reclaim_fraction: f64,
    /// `STARCITE_ARCHIVE_READ_CACHE_COMPRESSED`: keep cached chunks lz4-compressed.
    pub read_cache_compressed: bool,
    /// `STARCITE_EVENT_STORE_CAPACITY_CHECK_INTERVAL`: applied writes between two budget checks.
    pub capacity_check_interval_writes: u64,
    /// Lag and last write error of this node's archiver, which the ops API reports.
    pub progress: Arc<ArchiveProgress>,
}

impl ArchiveSettings {
    /// The defaults of config.md §4.3 around an opened adapter.
    pub fn new(adapter: Arc<dyn ArchiveAdapter>) -> Self {
        ArchiveSettings {
            progress: Arc::new(ArchiveProgress::new(adapter.name())),
            adapter,
            batch_events_max: ARCHIVE_BATCH_EVENTS_DEFAULT,
            retry_max_ms: ARCHIVE_RETRY_MAX_MS_DEFAULT,
            read_cache_max_bytes: ARCHIVE_READ_CACHE_MAX_BYTES_DEFAULT,
            read_cache_reclaim_fraction: 0.25,
            read_cache_compressed: true,
            capacity_check_interval_writes: 4,
        }
    }
}

impl fmt::Debug for ArchiveSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArchiveSettings")
            .field("adapter", &self.adapter.name())
            .field("batch_events_max", &self.batch_events_max)
            .field("retry_max_ms", &self.retry_max_ms)
            .field("read_cache_max_bytes", &self.read_cache_max_bytes)
            .field(
                "read_cache_reclaim_fraction",
                &self.read_cache_reclaim_fraction,
            )
            .field("read_cache_compressed", &self.read_cache_compressed)
            .field(
                "capacity_check_interval_writes",
                &self.capacity_check_interval_writes,
            )
            .finish()
    }
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
            raft_snapshot_entries: RAFT_SNAPSHOT_ENTRIES_DEFAULT,
            cluster: None,
            archive: None,
            link: None,
        }
    }

    /// This node's Raft id.
    pub fn node_id(&self) -> NodeId {
        self.cluster
            .as_ref()
            .map_or(SINGLE_NODE_ID, |cluster| cluster.node_id)
    }

    /// Voters of `group_id`.
    pub fn group_voters(&self, group_id: u32) -> Vec<NodeId> {
        match &self.cluster {
            None => vec![SINGLE_NODE_ID],
            Some(cluster) => cluster
                .group_voters
                .get(group_id as usize)
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// Election timeout in heartbeat ticks (at least 2, as the Raft core requires).
    pub fn election_ticks(&self) -> u32 {
        let ticks = self.raft_election_timeout_ms / self.raft_heartbeat_ms.max(1);
        u32::try_from(ticks).unwrap_or(u32::MAX).max(2)
    }

    /// `Retry-After` seconds for 429: `max(1, ceil(flush_interval_ms / 1000))`.
    pub fn retry_after_s(&self) -> u64 {
        self.archive_flush_interval_ms.div_ceil(1000).max(1)
    }
}
