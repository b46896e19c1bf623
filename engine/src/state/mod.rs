//! The deterministic session state machine of one Raft group.
//!
//! Every replica of a group applies the same committed [`Command`]s in the same order to a
//! [`GroupState`] and ends with byte-identical state: apply never reads the clock (the leader
//! stamps time into the command) and never iterates an unordered collection where the order could
//! leak into state, replies or snapshots.
//!
//! Files by concern:
//! - [`command`]: the replicated commands and their binary encoding.
//! - [`json`]: compact and canonical JSON writers shared by frames and fingerprints.
//! - [`fingerprint`]: the content fingerprint of semantics.md §3.
//! - [`frame`]: rendering of the event frame of tail.md §3.
//! - [`session`]: one session's record, producer cursors (LRU-bounded) and hot events.
//! - [`group`]: [`GroupState`], apply (semantics.md §4, §5, §8) and reads.
//! - [`snapshot`]: the full snapshot encoding of a [`GroupState`].
//! - [`codec`]: the little-endian byte reader and writer used by commands and snapshots.
//! - `tests`: apply-level tests (decision procedure, worked example, LRU, determinism).

pub(crate) mod codec;
pub mod command;
pub mod fingerprint;
pub mod frame;
pub mod group;
pub mod json;
pub mod session;
pub mod snapshot;
#[cfg(test)]
mod tests;

pub use codec::FieldDecodeError;
pub use command::{Command, CommandDecodeError};
pub use fingerprint::{canonical_json, fingerprint, Fingerprint};
pub use frame::render_event_frame;
pub use group::{ApplyOutcome, GroupState};
pub use session::{ProducerCursor, PRODUCER_CURSORS_MAX};
pub use snapshot::SnapshotDecodeError;
