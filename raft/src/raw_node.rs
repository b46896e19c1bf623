//! [`RawNode`]: one member of one Raft group as a pure state machine. Inputs are ticks,
//! messages, proposals and persistence/apply reports; output is a [`Ready`] batch.
//!
//! The behaviour is split by concern: `election.rs` (roles, votes, check-quorum),
//! `replication.rs` (appends, heartbeats, commit), `read_index.rs`, `snapshot.rs` and
//! `transfer.rs` each add an `impl` block to this type.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::error::{RaftError, StorageError};
use crate::log::RaftLog;
use crate::message::{Message, MessageBody};
use crate::progress::{Progress, ProgressState};
use crate::read_index::ReadQueue;
use crate::ready::Ready;
use crate::rng::SplitMix64;
use crate::snapshot::IncomingSnapshot;
use crate::storage::{LogStore, Storage};
use crate::types::{
    Entry, HardState, Index, NodeId, ReadState, Role, Snapshot, SoftState, Term, NO_NODE,
};

/// A leader's view of one follower, for observability and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerProgress {
    /// Highest index known durable on the follower and matching the leader's log.
    pub match_index: Index,
    /// Next index the leader will send.
    pub next_index: Index,
    /// Flow-control state.
    pub state: ProgressState,
    /// Append messages sent and not yet acknowledged.
    pub inflight_count: usize,
}

/// One member of one Raft group. See the crate documentation for the driving loop.
pub struct RawNode<S: Storage> {
    pub(crate) config: Config,
    pub(crate) log: RaftLog<S>,
    pub(crate) term: Term,
    pub(crate) vote: NodeId,
    pub(crate) leader_id: NodeId,
    pub(crate) role: Role,
    /// Ticks since the last contact with a leader (follower) or since the last
    /// check-quorum round (leader).
    pub(crate) election_elapsed: u32,
    pub(crate) heartbeat_elapsed: u32,
    /// Current election timeout, in `[election_ticks, 2 * election_ticks)`.
    pub(crate) randomized_election_ticks: u32,
    pub(crate) rng: SplitMix64,
    /// Votes received in the current (pre-)election.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    /// Leader only: one entry per peer (not this node).
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Leader only: target of a leadership transfer in progress.
    pub(crate) transfer_target: Option<NodeId>,
    pub(crate) reads: ReadQueue,
    pub(crate) read_states: Vec<ReadState>,
    /// Follower only: snapshot chunks received so far.
    pub(crate) incoming_snapshot: Option<IncomingSnapshot>,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    last_hard_state: HardState,
    last_soft_state: SoftState,
    storage_failure: Option<StorageError>,
}

impl<S: Storage> RawNode<S> {
    /// Starts a member from the state persisted in `storage` (or fresh if it is empty).
    pub fn new(config: Config, storage: S) -> Result<RawNode<S>, RaftError> {
        config.validate()?;
        let (hard_state, snapshot_meta) = storage.initial_state()?;
        let snapshot_index = snapshot_meta.as_ref().map_or(0, |meta| meta.index);
        let last_index = storage.last_index();
        if hard_state.commit > last_index {
            return Err(RaftError::SafetyViolation(format!(
                "persisted commit {} beyond last index {last_index}",
                hard_state.commit
            )));
        }
        let committed = hard_state.commit.max(snapshot_index);
        let log = RaftLog::new(storage, committed, snapshot_index);
        let mut rng = SplitMix64::new(config.seed ^ config.id.rotate_left(32));
        let randomized_election_ticks = rng.range(config.election_ticks, 2 * config.election_ticks);
        let soft_state = SoftState {
            role: Role::Follower,
            leader: NO_NODE,
        };
        let node = RawNode {
            reads: ReadQueue::new(config.pending_reads_max),
            config,
            log,
            term: hard_state.term,
            vote: hard_state.vote,
            leader_id: NO_NODE,
            role: Role::Follower,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_ticks,
            rng,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            transfer_target: None,
            read_states: Vec::new(),
            incoming_snapshot: None,
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            last_hard_state: HardState {
                commit: committed,
                ..hard_state
            },
            last_soft_state: soft_state,
            storage_failure: None,
        };
        node.check_invariants();
        Ok(node)
    }

    /// Advances logical time by one tick (heartbeats, election timeouts, check-quorum).
    pub fn tick(&mut self) {
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
        self.check_invariants();
    }

    /// Handles a message from a peer.
    pub fn step(&mut self, message: Message) -> Result<(), RaftError> {
        if message.to != self.config.id || !self.is_voter(message.from) {
            return Err(RaftError::NotAVoter(message.from));
        }
        let result = self.step_inner(message);
        self.check_invariants();
        result
    }

    /// Appends an application command; returns its index. Leader only.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<Index, RaftError> {
        if self.role != Role::Leader {
            return Err(self.not_leader());
        }
        if let Some(target) = self.transfer_target {
            return Err(RaftError::TransferInProgress { target });
        }
        let uncommitted = self.log.last_index() - self.log.committed;
        if uncommitted >= self.config.uncommitted_entries_max as Index {
            return Err(RaftError::ProposalQueueFull {
                uncommitted_entries_max: self.config.uncommitted_entries_max,
            });
        }
        let index = self.log.last_index() + 1;
        self.log.append(&[Entry::normal(self.term, index, data)])?;
        self.broadcast_append();
        self.maybe_commit();
        self.check_invariants();
        Ok(index)
    }

    /// Asks for a linearizable read identified by `ctx`; a [`ReadState`] with the same `ctx`
    /// appears in a later [`Ready`] once leadership is confirmed. On a follower the request
    /// is forwarded to the leader.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), RaftError> {
        let result = self.read_index_inner(ctx);
        self.check_invariants();
        result
    }

    /// Starts a leadership transfer to `target` (see `transfer.rs`).
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), RaftError> {
        let result = self.transfer_leader_inner(target);
        self.check_invariants();
        result
    }

    /// Whether [`RawNode::ready`] would return any work.
    pub fn has_ready(&self) -> bool {
        self.soft_state() != self.last_soft_state
            || self.hard_state() != self.last_hard_state
            || self.log.has_unhanded_snapshot()
            || self.log.has_entries_to_persist()
            || !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || (self.storage_failure.is_none() && self.log.has_entries_to_apply())
            || !self.read_states.is_empty()
            || self.reads.heartbeat_needed()
    }

    /// Takes the pending work. See [`Ready`] for the order in which to handle it.
    pub fn ready(&mut self) -> Ready {
        self.flush_read_heartbeats();
        let mut ready = Ready::default();
        let soft_state = self.soft_state();
        if soft_state != self.last_soft_state {
            self.last_soft_state = soft_state;
            ready.soft_state = Some(soft_state);
        }
        let hard_state = self.hard_state();
        if hard_state != self.last_hard_state {
            self.last_hard_state = hard_state;
            ready.hard_state = Some(hard_state);
        }
        ready.snapshot = self.log.take_snapshot_to_persist();
        ready.entries = self.log.take_entries_to_persist();
        ready.messages = std::mem::take(&mut self.messages);
        ready.persisted_messages = std::mem::take(&mut self.persisted_messages);
        if self.storage_failure.is_none() {
            match self
                .log
                .take_entries_to_apply(self.config.committed_entries_per_ready_max)
            {
                Ok(entries) => ready.committed_entries = entries,
                Err(error) => self.storage_failure = Some(error),
            }
        }
        ready.read_states = std::mem::take(&mut self.read_states);
        self.check_invariants();
        ready
    }

    /// Reports that everything up to `(index, term)` (entries, a received snapshot, and the
    /// hard state of the readies that carried them) is durable.
    pub fn on_persisted(&mut self, index: Index, term: Term) {
        self.log.on_persisted(index, term);
        if self.role == Role::Leader {
            self.maybe_commit();
        }
        self.check_invariants();
    }

    /// Reports that committed entries up to `index` are applied to the state machine.
    pub fn on_applied(&mut self, index: Index) {
        let index = index.min(self.log.apply_handed_out);
        self.log.applied = self.log.applied.max(index);
        self.check_invariants();
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Known leader ([`NO_NODE`] if none).
    pub fn leader_id(&self) -> NodeId {
        self.leader_id
    }

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// Current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// Vote cast in the current term ([`NO_NODE`] if none).
    pub fn vote(&self) -> NodeId {
        self.vote
    }

    /// Highest committed index known here.
    pub fn commit_index(&self) -> Index {
        self.log.committed
    }

    /// Highest index reported applied.
    pub fn applied_index(&self) -> Index {
        self.log.applied
    }

    /// Highest index reported durable in this member's log.
    pub fn persisted_index(&self) -> Index {
        self.log.persisted
    }

    /// Index of the last entry in the log (including not yet persisted entries).
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }

    /// Term of the last entry in the log.
    pub fn last_term(&self) -> Term {
        self.log.last_term()
    }

    /// Leader only: the highest index known to match on `peer` (`None` when not leader or
    /// `peer` is not a peer).
    pub fn match_index(&self, peer: NodeId) -> Option<Index> {
        if peer == self.config.id && self.role == Role::Leader {
            return Some(self.log.persisted);
        }
        self.progress
            .get(&peer)
            .map(|progress| progress.match_index)
    }

    /// Leader only: replication state of `peer`.
    pub fn peer_progress(&self, peer: NodeId) -> Option<PeerProgress> {
        self.progress.get(&peer).map(|progress| PeerProgress {
            match_index: progress.match_index,
            next_index: progress.next_index,
            state: progress.state,
            inflight_count: progress.inflights.count(),
        })
    }

    /// Leader only: the target of a leadership transfer in progress.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer_target
    }

    /// The configuration this member runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A storage read failed while preparing a [`Ready`]; the node must stop.
    pub fn storage_failure(&self) -> Option<&StorageError> {
        self.storage_failure.as_ref()
    }

    /// The storage (read access).
    pub fn storage(&self) -> &S {
        &self.log.storage
    }

    /// The storage (write access, to persist a [`Ready`]).
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.log.storage
    }

    /// Current hard state (possibly not yet persisted).
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    /// Current role and leader.
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader_id,
        }
    }

    pub(crate) fn is_voter(&self, id: NodeId) -> bool {
        self.config.voters.contains(&id)
    }

    pub(crate) fn peers(&self) -> Vec<NodeId> {
        let own_id = self.config.id;
        self.config
            .voters
            .iter()
            .copied()
            .filter(|&id| id != own_id)
            .collect()
    }

    pub(crate) fn not_leader(&self) -> RaftError {
        RaftError::NotLeader {
            leader_hint: (self.leader_id != NO_NODE).then_some(self.leader_id),
        }
    }

    /// Queues a message that depends on nothing unpersisted.
    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        let message = self.message(to, self.term, body);
        self.messages.push(message);
    }

    /// Queues a message with an explicit term (pre-vote rounds).
    pub(crate) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let message = self.message(to, term, body);
        self.messages.push(message);
    }

    /// Queues a message that acknowledges state which must be durable first.
    pub(crate) fn send_after_persist(&mut self, to: NodeId, body: MessageBody) {
        let message = self.message(to, self.term, body);
        if cfg!(feature = "bug-ack-before-persist") {
            self.messages.push(message);
        } else {
            self.persisted_messages.push(message);
        }
    }

    /// Whether the term or vote changed since the last hard state handed out.
    pub(crate) fn hard_state_dirty(&self) -> bool {
        self.term != self.last_hard_state.term || self.vote != self.last_hard_state.vote
    }

    fn message(&self, to: NodeId, term: Term, body: MessageBody) -> Message {
        Message {
            from: self.config.id,
            to,
            term,
            body,
        }
    }

    fn step_inner(&mut self, message: Message) -> Result<(), RaftError> {
        if message.term > self.term {
            if !self.accept_higher_term(&message) {
                return Ok(());
            }
        } else if message.term < self.term {
            self.answer_stale(&message);
            return Ok(());
        }
        let from = message.from;
        match message.body {
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => self.handle_request_vote(from, last_log_index, last_log_term),
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => self.handle_pre_vote(from, message.term, last_log_index, last_log_term),
            MessageBody::RequestVoteResponse { granted } => {
                self.handle_vote_response(from, Role::Candidate, granted)
            }
            MessageBody::PreVoteResponse { granted } => {
                self.handle_vote_response(from, Role::PreCandidate, granted)
            }
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                commit,
            } => {
                self.follow(from);
                self.handle_append(from, prev_log_index, prev_log_term, &entries, commit)?;
            }
            MessageBody::Heartbeat {
                commit,
                read_context,
            } => {
                self.follow(from);
                self.handle_heartbeat(from, commit, read_context);
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            } => {
                self.follow(from);
                self.handle_snapshot_chunk(from, meta, offset, data, done);
            }
            MessageBody::TimeoutNow => self.handle_timeout_now(from),
            MessageBody::AppendResponse { index, reject } => {
                self.handle_append_response(from, index, reject)?
            }
            MessageBody::HeartbeatResponse { read_context } => {
                self.handle_heartbeat_response(from, read_context)
            }
            MessageBody::InstallSnapshotResponse {
                snapshot_index,
                next_offset,
                done,
            } => self.handle_snapshot_response(from, snapshot_index, next_offset, done)?,
            MessageBody::ReadIndexRequest { ctx } => self.handle_read_index_request(from, ctx),
            MessageBody::ReadIndexResponse { ctx, index } => {
                self.handle_read_index_response(from, ctx, index)
            }
        }
        Ok(())
    }

    /// A message from the current term's leader: become (or stay) its follower.
    fn follow(&mut self, leader: NodeId) {
        if self.role != Role::Follower || self.leader_id != leader {
            self.become_follower(self.term, leader);
        }
        self.election_elapsed = 0;
    }

    /// Debug-build check of the invariants after every transition.
    pub(crate) fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        self.log.check_invariants();
        debug_assert!(
            self.role != Role::Leader || self.leader_id == self.config.id,
            "leader must know itself as leader"
        );
        debug_assert!(
            self.role != Role::Candidate || self.vote == self.config.id,
            "candidate must vote for itself"
        );
        debug_assert!(
            self.role == Role::Leader
                || (self.progress.is_empty() && self.transfer_target.is_none()),
            "only a leader tracks progress"
        );
        debug_assert!(
            self.last_hard_state.term <= self.term,
            "term went backwards"
        );
    }
}

impl<S: LogStore> RawNode<S> {
    /// Records a snapshot the application took of its applied state up to
    /// `snapshot.meta.index` and releases the log entries it covers.
    pub fn snapshot_created(&mut self, snapshot: Snapshot) -> Result<(), RaftError> {
        let index = snapshot.meta.index;
        if index > self.log.applied {
            return Err(RaftError::InvalidSnapshot {
                index,
                reason: "snapshot beyond the applied index",
            });
        }
        if index < self.log.first_index() {
            return Err(RaftError::InvalidSnapshot {
                index,
                reason: "snapshot older than the log start",
            });
        }
        if !self.log.match_term(index, snapshot.meta.term) {
            return Err(RaftError::InvalidSnapshot {
                index,
                reason: "snapshot term differs from the log",
            });
        }
        self.log.storage.store_snapshot(snapshot)?;
        self.log.storage.compact(index)?;
        self.check_invariants();
        Ok(())
    }
}
