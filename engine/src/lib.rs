//! Starcite's storage engine: thread-per-core shards on glommio, one write-ahead log per shard
//! shared by all of its groups, the session state machine, the hot event store and tail
//! notifications.
//!
//! Module map:
//! - [`api`]: the narrow API that `net/` is generic over ([`api::Service`]).
//! - [`archiver`]: the archive tier: archiver loop, cold reads, read cache, budget reclamation.
//! - [`cluster`]: node ids, placement, routing over the peer transport, forwarded requests.
//! - [`config`]: engine settings, filled in by `bin/` from the environment and flags.
//! - [`placement`]: the exact session → group hash and group → replica placement.
//! - [`time`]: the single timestamp format.
//! - [`state`]: the deterministic session state machine (commands, apply, fingerprint, hot store).
//! - [`wal`]: segment files, record framing, group commit and recovery.
//! - [`raftlog`]: each group's Raft log on the shard's WAL, snapshot files, the Raft wire
//!   encoding and the transport seam.
//! - [`shard`]: the glommio executors that own groups, the log path and the `Service` impl.
//! - [`notify`]: commit-notification fan-out to tails.
//! - [`metrics`]: the process-wide Prometheus registry.

pub mod api;
pub mod archiver;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod notify;
pub mod placement;
pub mod raftlog;
pub mod shard;
pub mod state;
pub mod time;
pub mod wal;

pub use shard::{start, EngineError, EngineHandle, NodeHandle, ShutdownSignal};
