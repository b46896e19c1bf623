//! The status object of `GET /ops/status` (ops.md §4). Plain structs so that the JSON keys come
//! out in the contract's order (the CLI prints them in that order).

use std::collections::BTreeMap;

use serde::Serialize;

/// The whole status object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusObject {
    /// `NODE_NAME`.
    pub node: String,
    /// This node is a configured write node.
    pub local_write_node: bool,
    /// `write_node` or `router_node`.
    pub local_mode: &'static str,
    /// `/health/ready` would answer 200.
    pub local_ready: bool,
    /// `local_drained` of ops.md §4.
    pub local_drained: bool,
    /// Configured write nodes.
    pub write_nodes: Vec<String>,
    /// Voters per group.
    pub write_replication_factor: u32,
    /// Number of groups.
    pub num_groups: u32,
    /// Every group this node is a replica of.
    pub local_groups: Vec<u32>,
    /// Groups this node currently leads.
    pub leader_groups: u64,
    /// Drain mark.
    pub drain: DrainView,
    /// Storage directories.
    pub raft_storage: RaftStorage,
    /// Observer view.
    pub observer: ObserverStatus,
    /// Local groups with no known leader.
    pub groups_without_leader: u64,
    /// Archive progress.
    pub archive: ArchiveView,
}

/// `drain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DrainView {
    /// Marked draining for any reason.
    pub draining: bool,
    /// `operator`, `shutdown` or null.
    pub reason: Option<&'static str>,
}

/// `raft_storage`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RaftStorage {
    /// `STARCITE_DATA_DIR`.
    pub starcite_data_dir: String,
    /// `STARCITE_RAFT_DATA_DIR`.
    pub raft_data_dir: String,
}

/// `observer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObserverStatus {
    /// Always `ok` while the observer runs.
    pub status: &'static str,
    /// Other nodes the observer knows about.
    pub visible_nodes: Vec<String>,
    /// `ready_nodes` of ops.md §3.
    pub ready_nodes: Vec<String>,
    /// Status of each visible node.
    pub node_statuses: BTreeMap<String, NodeStatusView>,
    /// Write nodes reporting Raft readiness.
    pub raft_ready_nodes: Vec<String>,
}

/// One entry of `observer.node_statuses`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeStatusView {
    /// `ready`, `suspect`, `lost` or `draining`.
    pub status: &'static str,
    /// Milliseconds since the Unix epoch.
    pub changed_at_ms: u64,
}

/// `archive`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArchiveView {
    /// `local`, `s3` or `postgres`.
    pub adapter: String,
    /// Committed events not yet archived.
    pub lag_events: u64,
    /// Sessions waiting for the archive.
    pub pending_sessions: u64,
    /// Most recent archive write error.
    pub last_error: Option<String>,
}
