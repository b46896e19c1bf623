//! Error types of the Raft core and of its storage.

use crate::types::{Index, NodeId};

/// Errors returned by [`crate::RawNode`]. Each says what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    /// This node is not the leader; retry at `leader_hint` if known.
    #[error("not leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// Known leader, if any.
        leader_hint: Option<NodeId>,
    },
    /// A leadership transfer is in progress; retry at the new leader shortly.
    #[error("leadership transfer to {target} in progress")]
    TransferInProgress {
        /// The transfer target.
        target: NodeId,
    },
    /// Too many proposals are not yet committed; back off.
    #[error("too many uncommitted entries (max {uncommitted_entries_max})")]
    ProposalQueueFull {
        /// The configured bound.
        uncommitted_entries_max: usize,
    },
    /// Too many reads are waiting for confirmation; back off.
    #[error("too many pending reads (max {pending_reads_max})")]
    ReadQueueFull {
        /// The configured bound.
        pending_reads_max: usize,
    },
    /// The node id is not a voter of this group.
    #[error("node {0} is not a voter of this group")]
    NotAVoter(NodeId),
    /// The configuration is invalid.
    #[error("invalid raft config: {0}")]
    InvalidConfig(String),
    /// A snapshot does not fit the log (for example beyond the applied index).
    #[error("invalid snapshot at index {index}: {reason}")]
    InvalidSnapshot {
        /// Snapshot index.
        index: Index,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A message would violate a safety property (for example truncate a committed entry).
    /// The node must stop: its storage or a peer is corrupt.
    #[error("safety violation: {0}")]
    SafetyViolation(String),
    /// The storage failed; the node must stop acknowledging and step down.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

/// Errors returned by [`crate::Storage`] and [`crate::LogStore`] implementations.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The requested index was released by compaction (it is covered by a snapshot).
    #[error("index compacted")]
    Compacted,
    /// The requested index is beyond the last stored entry.
    #[error("index unavailable")]
    Unavailable,
    /// No snapshot can be produced right now; the leader retries later.
    #[error("snapshot temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// The caller broke the storage contract (for example appended with a gap).
    #[error("invalid storage request: {0}")]
    InvalidRequest(String),
    /// The backing store failed (IO error, corruption). Fatal for the node.
    #[error("storage backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}
