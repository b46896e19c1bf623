//! The shard runtime: one glommio executor per shard, each owning the groups with
//! `group_id % shards == shard`, one write-ahead log shared by those groups, and an
//! [`EngineHandle`] that implements [`crate::api::Service`] for the HTTP server running on the
//! same executor.
//!
//! Files by concern:
//! - `node`: [`start`], [`NodeHandle`], [`ShutdownSignal`], the startup handshake
//!   and the shutdown sequence.
//! - `recovery`: opening a shard's WAL and replaying it into its groups.
//! - `local`: a shard's state: its Raft members, applied state machines, waiting requests, and
//!   the write and read entry points (leader checks, 2 s commit wait, ReadIndex).
//! - `driver`: the per-shard Raft loop (ticks, received envelopes, one fsync per batch of all
//!   groups, apply in log order, snapshots, segment release).
//! - `ops`: leader-side checks and outcome mapping for each operation.
//! - `route`: the bounded queues that carry requests to the owning shard.
//! - `handle`: [`EngineHandle`] and its `Service` implementation.
//! - `layout`: the file that pins the shard and group counts of a data directory.
//! - `control`: what the control plane asks of a shard: leader views, leadership transfers,
//!   and publishing every member's role and leader to the cluster link.

mod control;
mod driver;
mod error;
mod handle;
mod layout;
mod local;
mod node;
mod ops;
mod recovery;
mod route;
mod routed;

pub(crate) use control::ControlRequest;
pub use control::{LeaderView, TransferOutcome};
pub use error::EngineError;
pub use handle::EngineHandle;
pub(crate) use local::Shard;
pub use local::{ProposeError, COMMIT_WAIT_MS, SHARD_PENDING_ENTRIES_MAX};
pub use node::{start, NodeHandle, ShutdownSignal, NUM_GROUPS_MAX, SHARDS_MAX};
pub(crate) use ops::ack_archived as propose_ack_archived;
pub(crate) use route::ShardRequest;
pub use route::{SHARD_REQUESTS_IN_FLIGHT_MAX, SHARD_REQUEST_QUEUE_MAX};
pub(crate) use routed::group_of_op;
