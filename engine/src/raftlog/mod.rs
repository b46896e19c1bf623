//! Raft on the engine: the write-ahead-log-backed Raft log store of each group, its recovery,
//! snapshot files, the wire encoding of Raft envelopes and the transport seam.
//!
//! - [`store`]: [`WalLogStore`], a group's `starcite_raft::LogStore` on the shard's shared WAL.
//! - [`replay`]: rebuilding a group's store from its snapshot file and the WAL records.
//! - [`snapshot_file`]: one atomically replaced snapshot file per group.
//! - [`wire`]: the versioned byte encoding of a multi-Raft envelope.
//! - [`transport`]: [`RaftTransport`] (outgoing), [`RaftInbox`] (incoming) and
//!   [`InProcessNetwork`] for several engines in one process.

pub mod replay;
pub mod snapshot_file;
pub mod store;
pub mod transport;
pub mod wire;

pub use replay::{GroupReplay, ReplayError};
pub use store::{RecordLog, WalLogStore};
pub use transport::{InProcessNetwork, InboxError, RaftInbox, RaftTransport};
