//! Starcite's Raft: a sans-IO, deterministic implementation of one Raft group member
//! ([`RawNode`]), driven by the application.
//!
//! The crate performs no IO, reads no clock and spawns no thread. Time is a number of
//! [`RawNode::tick`] calls; randomness (election timeout jitter) comes from a small generator
//! seeded by [`Config::seed`]. The same inputs therefore always produce the same outputs.
//!
//! # Driving loop
//!
//! ```text
//! loop {
//!     on timer:    node.tick()
//!     on message:  node.step(message)?
//!     on request:  node.propose(data)? / node.read_index(ctx)? / node.transfer_leader(id)?
//!     if node.has_ready() {
//!         let ready = node.ready();
//!         send(ready.messages);                     // safe before persisting
//!         store.apply_snapshot(ready.snapshot)?;    // if any; restore the state machine
//!         store.append(&ready.entries)?;            // truncates a conflicting suffix
//!         store.set_hard_state(ready.hard_state)?;  // if any
//!         send(ready.persisted_messages);           // only after the above are durable
//!         if let Some((index, term)) = ready.persist_point() { node.on_persisted(index, term) }
//!         apply(ready.committed_entries); node.on_applied(last applied index);
//!         serve(ready.read_states);                 // once applied >= read_state.index
//!     }
//! }
//! ```
//!
//! Persistence is asynchronous from the core's point of view: a leader replicates entries
//! before they are durable locally but counts itself towards a quorum only after
//! [`RawNode::on_persisted`]; a follower's acknowledgements travel in
//! `Ready::persisted_messages`, sent only once the ready is durable.
//!
//! The store is reachable through [`RawNode::storage_mut`]; the core reads durable entries
//! from it ([`Storage`]) and keeps entries that are not yet reported durable in memory.
//!
//! Features: pre-vote, check-quorum with leader lease, pipelined replication with a bounded
//! inflight window, fast backtracking, leadership transfer, ReadIndex reads, chunked
//! snapshot transfer. Membership is static.

mod config;
mod election;
mod error;
mod log;
mod memory_storage;
mod message;
mod progress;
mod raw_node;
mod read_index;
mod ready;
mod replication;
mod rng;
mod snapshot;
mod storage;
pub mod testing;
mod transfer;
mod types;

pub mod multi;

pub use config::Config;
pub use error::{RaftError, StorageError};
pub use memory_storage::MemoryStorage;
pub use message::{Message, MessageBody, RejectHint};
pub use progress::ProgressState;
pub use raw_node::{PeerProgress, RawNode};
pub use ready::Ready;
pub use snapshot::INCOMING_SNAPSHOT_BYTES_MAX;
pub use storage::{LogStore, Storage};
pub use types::{
    Entry, EntryKind, HardState, Index, NodeId, ReadState, Role, Snapshot, SnapshotMeta, SoftState,
    Term, NO_NODE,
};
