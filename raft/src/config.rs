//! Configuration of one Raft group member.

use crate::error::RaftError;
use crate::types::{NodeId, NO_NODE};

/// Configuration of one member. Build with [`Config::new`] and override fields with struct
/// update syntax (`Config { pre_vote: false, ..Config::new(1, vec![1, 2, 3]) }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This member's id (non-zero).
    pub id: NodeId,
    /// Every voter of the group, including `id`. Static: there is no membership change.
    pub voters: Vec<NodeId>,
    /// Base election timeout in ticks; the randomized timeout lies in
    /// `[election_ticks, 2 * election_ticks)`. Also the check-quorum and transfer-abort period.
    pub election_ticks: u32,
    /// A leader sends heartbeats every `heartbeat_ticks` ticks.
    pub heartbeat_ticks: u32,
    /// Maximum number of append messages in flight to one follower in replicate state.
    pub max_inflight_msgs: usize,
    /// Maximum total entry bytes in one append message (at least one entry is always sent).
    pub max_entries_bytes_per_msg: u64,
    /// Maximum data bytes in one snapshot chunk.
    pub snapshot_chunk_bytes_max: u64,
    /// Run a pre-vote round before raising the term.
    pub pre_vote: bool,
    /// Leaders step down without a quorum of recent contact; followers with a live leader
    /// ignore vote requests (leader lease).
    pub check_quorum: bool,
    /// Seed of the election timeout jitter.
    pub seed: u64,
    /// Maximum number of proposed entries a leader holds beyond its commit index.
    pub uncommitted_entries_max: usize,
    /// Maximum number of reads waiting for leadership confirmation.
    pub pending_reads_max: usize,
    /// Maximum number of committed entries handed out in one `Ready`.
    pub committed_entries_per_ready_max: usize,
}

impl Config {
    /// Defaults for member `id` of a group with the given voters.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Config {
        Config {
            id,
            voters,
            election_ticks: 10,
            heartbeat_ticks: 1,
            max_inflight_msgs: 256,
            max_entries_bytes_per_msg: 1024 * 1024,
            snapshot_chunk_bytes_max: 1024 * 1024,
            pre_vote: true,
            check_quorum: true,
            seed: id,
            uncommitted_entries_max: 16 * 1024,
            pending_reads_max: 4096,
            committed_entries_per_ready_max: 4096,
        }
    }

    /// Checks the relations between fields.
    pub fn validate(&self) -> Result<(), RaftError> {
        let invalid = |reason: &str| Err(RaftError::InvalidConfig(reason.to_string()));
        if self.id == NO_NODE {
            return invalid("id must be non-zero");
        }
        if !self.voters.contains(&self.id) {
            return invalid("voters must contain id");
        }
        if self.voters.contains(&NO_NODE) {
            return invalid("voter ids must be non-zero");
        }
        let mut sorted = self.voters.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.voters.len() {
            return invalid("voters must be distinct");
        }
        if self.heartbeat_ticks == 0 {
            return invalid("heartbeat_ticks must be > 0");
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return invalid("election_ticks must be > heartbeat_ticks");
        }
        if self.max_inflight_msgs == 0 {
            return invalid("max_inflight_msgs must be > 0");
        }
        if self.snapshot_chunk_bytes_max == 0 {
            return invalid("snapshot_chunk_bytes_max must be > 0");
        }
        if self.uncommitted_entries_max == 0
            || self.pending_reads_max == 0
            || self.committed_entries_per_ready_max == 0
        {
            return invalid("queue bounds must be > 0");
        }
        Ok(())
    }

    /// Number of voters that form a quorum.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}
