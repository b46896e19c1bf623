//! The log positions of one single-voter group: the seam where the replicated cluster swaps in
//! the Raft crate's `RawNode`.
//!
//! With one voter, an entry is committed as soon as it is durable on this node (a quorum of
//! one), so the only state is the term, the last assigned index, the highest durable index and
//! the highest applied index. The persistent hard state (`term = 1`, `vote = self`) is written
//! lazily, in the same group commit as the group's first entry, so that a node with many idle
//! groups writes nothing for them. `commit` is not persisted per entry: recovery treats every
//! durable entry as committed, which is exactly the single-voter rule.

/// Node id a single node votes for in its hard state (the replicated cluster uses real ids).
pub const SINGLE_NODE_ID: u64 = 1;

/// Term of every single-voter group: it elects itself once and never changes leader.
pub const SINGLE_VOTER_TERM: u64 = 1;

/// Log positions of one group hosted by this shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupLog {
    group_id: u32,
    term: u64,
    last_index: u64,
    durable_index: u64,
    applied_index: u64,
    hard_state_persisted: bool,
}

/// An entry recovered from the log did not continue the group's history.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("group {group_id}: entry index {index} term {term} does not follow index {last_index}")]
pub struct LogGap {
    /// Group id.
    pub group_id: u32,
    /// Index of the offending entry.
    pub index: u64,
    /// Term of the offending entry.
    pub term: u64,
    /// Last index before it.
    pub last_index: u64,
}

impl GroupLog {
    /// An empty log for `group_id` (nothing persisted yet).
    pub fn new(group_id: u32) -> Self {
        GroupLog {
            group_id,
            term: SINGLE_VOTER_TERM,
            last_index: 0,
            durable_index: 0,
            applied_index: 0,
            hard_state_persisted: false,
        }
    }

    /// Group id.
    pub fn group_id(&self) -> u32 {
        self.group_id
    }

    /// Current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Index of the last entry appended to the log (durable or not).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// True when the hard state must be written before the next entry.
    pub fn needs_hard_state(&self) -> bool {
        !self.hard_state_persisted
    }

    /// The hard state was appended to the log (before the entry that needed it).
    pub fn hard_state_appended(&mut self) {
        self.hard_state_persisted = true;
    }

    /// The `(term, index)` the next proposed entry gets. Does not reserve it: call
    /// [`GroupLog::entry_appended`] once the log accepted the entry.
    pub fn next_position(&self) -> (u64, u64) {
        (self.term, self.last_index + 1)
    }

    /// The entry at `index` was appended to the log.
    pub fn entry_appended(&mut self, index: u64) {
        debug_assert_eq!(
            index,
            self.last_index + 1,
            "group {} index gap",
            self.group_id
        );
        self.last_index = index;
    }

    /// The entry at `index` is durable and about to be applied.
    pub fn entry_durable(&mut self, index: u64) {
        debug_assert!(index <= self.last_index);
        self.durable_index = self.durable_index.max(index);
    }

    /// The entry at `index` was applied.
    pub fn entry_applied(&mut self, index: u64) {
        debug_assert_eq!(
            index,
            self.applied_index + 1,
            "group {} applied out of order",
            self.group_id
        );
        self.applied_index = index;
        debug_assert!(
            self.applied_index <= self.durable_index,
            "group {} applied {} beyond durable {}",
            self.group_id,
            self.applied_index,
            self.durable_index
        );
    }

    /// A hard state record was recovered.
    pub fn recovered_hard_state(&mut self, term: u64) {
        self.term = self.term.max(term);
        self.hard_state_persisted = true;
    }

    /// An entry was recovered: it is durable by definition and is applied next. Entries must be
    /// contiguous from index 1, since a single voter never truncates its log.
    pub fn recovered_entry(&mut self, term: u64, index: u64) -> Result<(), LogGap> {
        if index != self.last_index + 1 || term < self.term.min(term) {
            return Err(LogGap {
                group_id: self.group_id,
                index,
                term,
                last_index: self.last_index,
            });
        }
        self.term = self.term.max(term);
        self.last_index = index;
        self.durable_index = index;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_advance_in_order() {
        let mut log = GroupLog::new(3);
        assert!(log.needs_hard_state());
        assert_eq!(log.next_position(), (1, 1));
        log.hard_state_appended();
        log.entry_appended(1);
        log.entry_durable(1);
        log.entry_applied(1);
        assert_eq!(log.next_position(), (1, 2));
        assert_eq!(log.applied_index(), 1);
    }

    #[test]
    fn recovery_rejects_gaps() {
        let mut log = GroupLog::new(0);
        assert!(log.recovered_entry(1, 1).is_ok());
        log.entry_applied(1);
        assert!(log.recovered_entry(1, 3).is_err());
        assert!(log.recovered_entry(1, 2).is_ok());
    }
}
