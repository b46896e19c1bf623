//! Roles and elections: randomized timeouts, pre-vote, votes, the leader lease that makes
//! followers of a live leader ignore vote requests, and check-quorum.

use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::raw_node::RawNode;
use crate::storage::Storage;
use crate::types::{Entry, Index, NodeId, Role, Term, NO_NODE};

/// How a campaign starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Campaign {
    /// Ask for pre-votes first (when enabled), after an election timeout.
    Election,
    /// Skip the pre-vote and ignore leases: ordered by the leader (leadership transfer).
    Transfer,
}

impl<S: Storage> RawNode<S> {
    pub(crate) fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.randomized_election_ticks {
            self.election_elapsed = 0;
            self.campaign(Campaign::Election);
        }
    }

    pub(crate) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        self.tick_outgoing_snapshots();
        if self.election_elapsed >= self.config.election_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                self.become_follower(self.term, NO_NODE);
                return;
            }
            // A transfer that did not finish within an election timeout is abandoned.
            self.transfer_target = None;
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Whether a quorum (this node included) was heard from since the last round; resets the
    /// activity flags for the next round.
    fn quorum_recently_active(&mut self) -> bool {
        let mut active = 1;
        for progress in self.progress.values_mut() {
            if progress.recent_active {
                active += 1;
            }
            progress.recent_active = false;
        }
        active >= self.config.quorum()
    }

    /// Whether this node heard from a live leader within the election timeout, in which case
    /// it ignores vote requests (only meaningful with check-quorum, which bounds how long a
    /// deposed leader believes it leads).
    fn in_lease(&self) -> bool {
        self.config.check_quorum
            && self.leader_id != NO_NODE
            && self.election_elapsed < self.config.election_ticks
    }

    /// Decides whether a message with a higher term is processed; if so, adopts the term
    /// where the message requires it.
    pub(crate) fn accept_higher_term(&mut self, message: &Message) -> bool {
        match message.body {
            MessageBody::RequestVote { force, .. } if !force && self.in_lease() => return false,
            MessageBody::PreVote { .. } if self.in_lease() => return false,
            // Pre-votes and granted pre-vote answers do not change anyone's term.
            MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { granted: true } => {
                return true
            }
            _ => {}
        }
        let leader = if message.body.is_from_leader() {
            message.from
        } else {
            NO_NODE
        };
        self.become_follower(message.term, leader);
        true
    }

    /// Answers a message from an older term so that its sender can catch up.
    pub(crate) fn answer_stale(&mut self, message: &Message) {
        match message.body {
            // A deposed leader cut off by a partition learns the new term and steps down;
            // without this, pre-vote + lease would let it stay stuck.
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. }
                if self.config.check_quorum || self.config.pre_vote =>
            {
                self.send(
                    message.from,
                    MessageBody::AppendResponse {
                        index: 0,
                        reject: None,
                    },
                );
            }
            MessageBody::PreVote { .. } => {
                self.send(
                    message.from,
                    MessageBody::PreVoteResponse { granted: false },
                );
            }
            _ => {}
        }
    }

    pub(crate) fn handle_request_vote(
        &mut self,
        candidate: NodeId,
        last_log_index: Index,
        last_log_term: Term,
    ) {
        let can_vote = if cfg!(feature = "bug-double-vote") {
            // Planted bug: an earlier vote in this term is ignored.
            self.vote == candidate || self.role != Role::Leader
        } else {
            self.vote == candidate || (self.vote == NO_NODE && self.leader_id == NO_NODE)
        };
        let granted = can_vote && self.log.is_up_to_date(last_log_index, last_log_term);
        if granted {
            self.vote = candidate;
            self.election_elapsed = 0;
        }
        // The vote must be durable before the candidate may count it.
        self.send_after_persist(candidate, MessageBody::RequestVoteResponse { granted });
    }

    pub(crate) fn handle_pre_vote(
        &mut self,
        candidate: NodeId,
        pre_vote_term: Term,
        last_log_index: Index,
        last_log_term: Term,
    ) {
        let granted =
            pre_vote_term > self.term && self.log.is_up_to_date(last_log_index, last_log_term);
        let answer_term = if granted { pre_vote_term } else { self.term };
        self.send_with_term(
            candidate,
            answer_term,
            MessageBody::PreVoteResponse { granted },
        );
    }

    pub(crate) fn handle_vote_response(&mut self, voter: NodeId, round: Role, granted: bool) {
        if self.role != round {
            return;
        }
        self.votes.entry(voter).or_insert(granted);
        self.tally_votes();
    }

    fn tally_votes(&mut self) {
        let quorum = self.config.quorum();
        let granted = self.votes.values().filter(|&&granted| granted).count();
        let rejected = self.votes.len() - granted;
        if granted >= quorum {
            match self.role {
                Role::PreCandidate => self.start_election(false),
                Role::Candidate => self.become_leader(),
                _ => {}
            }
        } else if rejected >= quorum {
            self.become_follower(self.term, NO_NODE);
        }
    }

    pub(crate) fn campaign(&mut self, kind: Campaign) {
        if kind == Campaign::Election && self.config.pre_vote {
            self.start_pre_election();
        } else {
            self.start_election(kind == Campaign::Transfer);
        }
    }

    fn start_pre_election(&mut self) {
        self.reset_volatile();
        self.role = Role::PreCandidate;
        self.leader_id = NO_NODE;
        self.votes.insert(self.config.id, true);
        let pre_vote_term = self.term + 1;
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term();
        for peer in self.peers() {
            self.send_with_term(
                peer,
                pre_vote_term,
                MessageBody::PreVote {
                    last_log_index,
                    last_log_term,
                },
            );
        }
        self.tally_votes();
    }

    fn start_election(&mut self, force: bool) {
        self.reset_volatile();
        self.term += 1;
        self.vote = self.config.id;
        self.role = Role::Candidate;
        self.leader_id = NO_NODE;
        self.votes.insert(self.config.id, true);
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term();
        for peer in self.peers() {
            // The self-vote and new term must be durable before any vote is collected.
            self.send_after_persist(
                peer,
                MessageBody::RequestVote {
                    last_log_index,
                    last_log_term,
                    force,
                },
            );
        }
        self.tally_votes();
    }

    /// Becomes a follower in `term` (raising the term clears the vote).
    pub(crate) fn become_follower(&mut self, term: Term, leader: NodeId) {
        if term > self.term {
            self.term = term;
            self.vote = NO_NODE;
        }
        self.reset_volatile();
        self.role = Role::Follower;
        self.leader_id = leader;
    }

    pub(crate) fn become_leader(&mut self) {
        self.reset_volatile();
        self.role = Role::Leader;
        self.leader_id = self.config.id;
        let next_index = self.log.last_index() + 1;
        for peer in self.peers() {
            let mut progress = Progress::new(next_index, self.config.max_inflight_msgs);
            // Everyone gets a full check-quorum round before being counted as silent.
            progress.recent_active = true;
            self.progress.insert(peer, progress);
        }
        let noop = Entry::noop(self.term, next_index);
        // The no-op follows on from the log and is above the commit index.
        if let Err(error) = self.log.append(&[noop]) {
            debug_assert!(false, "leader no-op append failed: {error}");
        }
        self.broadcast_append();
        self.maybe_commit();
    }

    /// Clears per-role state on every role change.
    fn reset_volatile(&mut self) {
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_election_ticks = self
            .rng
            .range(self.config.election_ticks, 2 * self.config.election_ticks);
        self.votes.clear();
        self.progress.clear();
        self.transfer_target = None;
        self.reads.clear();
        self.incoming_snapshot = None;
    }
}
