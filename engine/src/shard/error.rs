//! The engine's error type for starting and stopping a node.

use std::path::PathBuf;

use crate::wal::WalError;

/// Why a node could not start or did not stop cleanly. Request-level failures are
/// [`crate::api::ServiceError`]s instead.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The settings cannot describe a node this engine can run.
    #[error("invalid engine configuration: {0}")]
    InvalidConfig(String),
    /// A data directory or the layout file could not be created, read or written.
    #[error("{op} {path}: {source}")]
    DataDir {
        /// Present-tense operation, e.g. "create raft data dir".
        op: &'static str,
        /// The directory or file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The data directory was written with a different shard or group count; starting would
    /// lose or misplace sessions.
    #[error("data layout mismatch in {path}: {reason}")]
    LayoutMismatch {
        /// The layout file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// A shard's write-ahead log could not be opened or recovered.
    #[error("open write-ahead log of shard {shard}: {source}")]
    Wal {
        /// Shard index.
        shard: u32,
        /// The log's error.
        #[source]
        source: WalError,
    },
    /// The log was readable but its contents are not a valid history (undecodable command,
    /// index gap, an entry of a group the shard does not own).
    #[error("recover shard {shard}: {reason}")]
    Recovery {
        /// Shard index.
        shard: u32,
        /// What is wrong.
        reason: String,
    },
    /// A shard executor could not be spawned, or its thread panicked.
    #[error("shard {shard} executor: {reason}")]
    Executor {
        /// Shard index.
        shard: u32,
        /// What happened.
        reason: String,
    },
    /// A shard's write-ahead log reported an error while closing at shutdown.
    #[error("close write-ahead log of shard {shard}: {source}")]
    Close {
        /// Shard index.
        shard: u32,
        /// The log's error.
        #[source]
        source: WalError,
    },
}
