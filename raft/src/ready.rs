//! The batch of work the application takes from a [`crate::RawNode`].

use crate::message::Message;
use crate::types::{Entry, HardState, Index, ReadState, Snapshot, SoftState, Term};

/// Work to do, taken with [`crate::RawNode::ready`]. Handle it in this order:
///
/// 1. send `messages` (they do not depend on unpersisted state);
/// 2. persist `snapshot` (with [`crate::LogStore::apply_snapshot`], and restore the state
///    machine from it), then `entries` (with [`crate::LogStore::append`]), then
///    `hard_state`; readies must be persisted in the order they were taken;
/// 3. send `persisted_messages` (they acknowledge what step 2 made durable);
/// 4. call [`crate::RawNode::on_persisted`] with [`Ready::persist_point`] if it is `Some`;
/// 5. apply `committed_entries` in order and call [`crate::RawNode::on_applied`];
/// 6. serve each `read_states` entry once applied ≥ its index.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ready {
    /// Changed role or leader, if any.
    pub soft_state: Option<SoftState>,
    /// Hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Snapshot received from the leader, to install and persist before `entries`.
    pub snapshot: Option<Snapshot>,
    /// Entries to append to the log (may overwrite a conflicting suffix).
    pub entries: Vec<Entry>,
    /// Messages to send now.
    pub messages: Vec<Message>,
    /// Messages to send only after this ready (and every earlier one) is persisted.
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Confirmed linearizable reads.
    pub read_states: Vec<ReadState>,
}

impl Ready {
    /// The `(index, term)` to pass to `on_persisted` after persisting this ready: the last
    /// entry, else the snapshot, else `None`.
    pub fn persist_point(&self) -> Option<(Index, Term)> {
        if let Some(last) = self.entries.last() {
            return Some((last.index, last.term));
        }
        self.snapshot
            .as_ref()
            .map(|snapshot| (snapshot.meta.index, snapshot.meta.term))
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
    }
}
