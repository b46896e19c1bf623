//! Linearizable reads by ReadIndex (Raft thesis §6.4).
//!
//! The leader records its commit index for a read, then confirms it is still leader with a
//! heartbeat round: heartbeats carry a read round number, and once a quorum has echoed a
//! round ≥ the read's round, the read is released with the recorded index. Round numbers are
//! internal, so callers' contexts never collide (a follower's forwarded read and a local one
//! may share a `ctx`). Heartbeats for new reads go out once per [`crate::RawNode::ready`],
//! so a burst of reads costs one round. A leader that has not yet committed an entry of its
//! own term queues reads until it has (its commit index might be stale before that).

use std::collections::VecDeque;

use crate::error::RaftError;
use crate::message::MessageBody;
use crate::raw_node::RawNode;
use crate::storage::Storage;
use crate::types::{Index, NodeId, ReadState, Role, NO_NODE};

#[derive(Debug, Clone, Copy)]
struct PendingRead {
    round: u64,
    ctx: u64,
    index: Index,
    requester: NodeId,
}

/// Reads a leader has not answered yet; at most `capacity` in total.
#[derive(Debug)]
pub(crate) struct ReadQueue {
    capacity: usize,
    /// Reads that arrived before the leader committed an entry of its term.
    waiting_for_commit: VecDeque<(NodeId, u64)>,
    /// Reads waiting for a quorum of heartbeat acknowledgements, in round order.
    pending: VecDeque<PendingRead>,
    last_round: u64,
    /// A new round started since heartbeats were last sent.
    heartbeat_needed: bool,
}

impl ReadQueue {
    pub(crate) fn new(capacity: usize) -> ReadQueue {
        ReadQueue {
            capacity,
            waiting_for_commit: VecDeque::new(),
            pending: VecDeque::new(),
            last_round: 0,
            heartbeat_needed: false,
        }
    }

    fn is_full(&self) -> bool {
        self.waiting_for_commit.len() + self.pending.len() >= self.capacity
    }

    /// The round the next heartbeats should confirm, if any read is pending.
    pub(crate) fn latest_round(&self) -> Option<u64> {
        self.pending.back().map(|read| read.round)
    }

    pub(crate) fn heartbeat_needed(&self) -> bool {
        self.heartbeat_needed
    }

    /// Drops every unanswered read (leadership lost: callers time out and retry).
    pub(crate) fn clear(&mut self) {
        self.waiting_for_commit.clear();
        self.pending.clear();
        self.heartbeat_needed = false;
    }
}

impl<S: Storage> RawNode<S> {
    pub(crate) fn read_index_inner(&mut self, ctx: u64) -> Result<(), RaftError> {
        if self.role == Role::Leader {
            if self.reads.is_full() {
                return Err(RaftError::ReadQueueFull {
                    pending_reads_max: self.reads.capacity,
                });
            }
            self.serve_read(self.config.id, ctx);
            return Ok(());
        }
        if self.leader_id == NO_NODE {
            return Err(self.not_leader());
        }
        self.send(self.leader_id, MessageBody::ReadIndexRequest { ctx });
        Ok(())
    }

    pub(crate) fn handle_read_index_request(&mut self, follower: NodeId, ctx: u64) {
        // A full queue drops the request; the follower's caller times out and retries.
        if self.role == Role::Leader && !self.reads.is_full() {
            self.serve_read(follower, ctx);
        }
    }

    pub(crate) fn handle_read_index_response(&mut self, leader: NodeId, ctx: u64, index: Index) {
        if leader == self.leader_id {
            self.read_states.push(ReadState { ctx, index });
        }
    }

    fn serve_read(&mut self, requester: NodeId, ctx: u64) {
        if !self.log.match_term(self.log.committed, self.term) {
            self.reads.waiting_for_commit.push_back((requester, ctx));
            return;
        }
        let index = self.log.committed;
        if self.config.voters.len() == 1 {
            self.answer_read(requester, ctx, index);
            return;
        }
        self.reads.last_round += 1;
        let round = self.reads.last_round;
        self.reads.pending.push_back(PendingRead {
            round,
            ctx,
            index,
            requester,
        });
        self.reads.heartbeat_needed = true;
    }

    /// Sends the heartbeat round for reads that arrived since the last one.
    pub(crate) fn flush_read_heartbeats(&mut self) {
        if self.reads.heartbeat_needed {
            self.reads.heartbeat_needed = false;
            self.broadcast_heartbeat();
        }
    }

    /// The leader committed its first entry of the term: queued reads can be served.
    pub(crate) fn release_reads_waiting_for_commit(&mut self) {
        let waiting: Vec<(NodeId, u64)> = self.reads.waiting_for_commit.drain(..).collect();
        for (requester, ctx) in waiting {
            self.serve_read(requester, ctx);
        }
    }

    pub(crate) fn acknowledge_read_round(&mut self, peer: NodeId, round: u64) {
        let Some(progress) = self.progress.get_mut(&peer) else {
            return;
        };
        progress.read_round_acknowledged = progress.read_round_acknowledged.max(round);
        let mut rounds: Vec<u64> = self
            .progress
            .values()
            .map(|progress| progress.read_round_acknowledged)
            .collect();
        // The leader confirms every round for itself.
        rounds.push(u64::MAX);
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&confirmed_round) = rounds.get(self.config.quorum() - 1) else {
            return;
        };
        while let Some(read) = self.reads.pending.front().copied() {
            if read.round > confirmed_round {
                break;
            }
            self.reads.pending.pop_front();
            self.answer_read(read.requester, read.ctx, read.index);
        }
    }

    fn answer_read(&mut self, requester: NodeId, ctx: u64, index: Index) {
        if requester == self.config.id {
            self.read_states.push(ReadState { ctx, index });
        } else {
            self.send(requester, MessageBody::ReadIndexResponse { ctx, index });
        }
    }
}
