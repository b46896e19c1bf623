//! What a leader knows about each follower: how far its log matches, and the flow-control
//! state that decides what to send next.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::types::{Index, SnapshotMeta};

/// Flow-control state of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// Match position unknown: one append at a time until one succeeds.
    Probe,
    /// Match position known: appends are pipelined up to the inflight window.
    Replicate,
    /// The follower needs a snapshot; appends pause until it is installed.
    Snapshot,
}

/// A snapshot being streamed to one follower, one chunk in flight at a time.
#[derive(Debug, Clone)]
pub(crate) struct OutgoingSnapshot {
    pub(crate) meta: SnapshotMeta,
    pub(crate) data: Arc<[u8]>,
    /// Offset of the chunk in flight (the follower's last reported next offset).
    pub(crate) next_offset: u64,
    /// Ticks since the follower last acknowledged a chunk; the chunk is resent after an
    /// election timeout.
    pub(crate) stalled_ticks: u32,
}

/// Bounded window of in-flight appends, identified by their last entry index.
#[derive(Debug, Clone)]
pub(crate) struct Inflights {
    capacity: usize,
    last_indexes: VecDeque<Index>,
}

impl Inflights {
    pub(crate) fn new(capacity: usize) -> Inflights {
        Inflights {
            capacity,
            last_indexes: VecDeque::with_capacity(capacity.min(64)),
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.last_indexes.len() >= self.capacity
    }

    pub(crate) fn count(&self) -> usize {
        self.last_indexes.len()
    }

    pub(crate) fn add(&mut self, last_index: Index) {
        debug_assert!(!self.is_full(), "inflight window overflow");
        self.last_indexes.push_back(last_index);
    }

    /// Frees every message whose entries are all acknowledged by `index`.
    pub(crate) fn free_to(&mut self, index: Index) {
        while matches!(self.last_indexes.front(), Some(&last) if last <= index) {
            self.last_indexes.pop_front();
        }
    }

    /// Frees the oldest message (the follower is alive but a message may have been lost).
    pub(crate) fn free_first(&mut self) {
        self.last_indexes.pop_front();
    }

    pub(crate) fn reset(&mut self) {
        self.last_indexes.clear();
    }
}

/// The leader's view of one follower.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    /// Highest index known to match the leader's log (durable on the follower).
    pub(crate) match_index: Index,
    /// Next index to send.
    pub(crate) next_index: Index,
    pub(crate) state: ProgressState,
    /// In probe state: an append was sent and no answer arrived yet.
    pub(crate) probe_sent: bool,
    pub(crate) inflights: Inflights,
    /// Heard from since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// Highest read-index round the follower confirmed.
    pub(crate) read_round_acknowledged: u64,
    /// In snapshot state: the snapshot being sent.
    pub(crate) snapshot: Option<OutgoingSnapshot>,
}

impl Progress {
    pub(crate) fn new(next_index: Index, inflight_capacity: usize) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(inflight_capacity),
            recent_active: false,
            read_round_acknowledged: 0,
            snapshot: None,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let snapshot_index = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
            self.next_index = (self.match_index + 1).max(snapshot_index + 1);
        } else {
            self.next_index = self.match_index + 1;
        }
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot = None;
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot = None;
    }

    pub(crate) fn become_snapshot(&mut self, snapshot: OutgoingSnapshot) {
        self.state = ProgressState::Snapshot;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot = Some(snapshot);
    }

    /// Records a successful append up to `index`; returns whether anything advanced.
    pub(crate) fn maybe_update(&mut self, index: Index) -> bool {
        let advanced = index > self.match_index;
        if advanced {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        advanced
    }

    /// Handles a rejection of the append at `rejected_index`, given the follower's hint mapped
    /// onto the leader's log (`match_hint`). Returns false for a stale rejection.
    pub(crate) fn maybe_decrease_to(&mut self, rejected_index: Index, match_hint: Index) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected_index <= self.match_index {
                return false;
            }
            self.become_probe();
            return true;
        }
        // In probe state only the answer to the last probe counts.
        if self.next_index == 0 || self.next_index - 1 != rejected_index {
            return false;
        }
        self.next_index = (match_hint + 1)
            .min(rejected_index)
            .max(self.match_index + 1);
        self.probe_sent = false;
        true
    }

    /// Whether nothing may be sent right now.
    pub(crate) fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot => true,
        }
    }

    /// Records an append with entries up to `last_index` sent.
    pub(crate) fn on_append_sent(&mut self, last_index: Index, entry_count: usize) {
        match self.state {
            ProgressState::Replicate => {
                if entry_count > 0 {
                    self.next_index = last_index + 1;
                }
                self.inflights.add(last_index);
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_bound_and_free() {
        let mut inflights = Inflights::new(3);
        inflights.add(5);
        inflights.add(7);
        inflights.add(9);
        assert!(inflights.is_full());
        inflights.free_to(7);
        assert_eq!(inflights.count(), 1);
        inflights.free_first();
        assert_eq!(inflights.count(), 0);
    }

    #[test]
    fn probe_ignores_stale_rejection_and_uses_hint() {
        let mut progress = Progress::new(11, 4);
        assert!(!progress.maybe_decrease_to(5, 2));
        assert!(progress.maybe_decrease_to(10, 4));
        assert_eq!(progress.next_index, 5);
    }
}
