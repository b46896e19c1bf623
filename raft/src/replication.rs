//! Log replication: pipelined appends with flow control, heartbeats, fast backtracking on
//! conflicts, and the commit rule.

use crate::error::{RaftError, StorageError};
use crate::message::{MessageBody, RejectHint};
use crate::progress::ProgressState;
use crate::raw_node::RawNode;
use crate::storage::Storage;
use crate::types::{Entry, Index, NodeId, Role, Term};

impl<S: Storage> RawNode<S> {
    /// Sends whatever each follower's flow control allows.
    pub(crate) fn broadcast_append(&mut self) {
        for peer in self.peers() {
            self.send_appends(peer, false);
        }
    }

    /// Sends appends to `peer` while its window allows and entries remain. With
    /// `allow_empty`, sends one empty append even when there is nothing new (a probe that
    /// recovers from lost messages).
    pub(crate) fn send_appends(&mut self, peer: NodeId, allow_empty: bool) {
        let mut allow_empty = allow_empty;
        loop {
            let Some(progress) = self.progress.get(&peer) else {
                return;
            };
            if progress.is_paused() {
                return;
            }
            let next_index = progress.next_index;
            let has_new = next_index <= self.log.last_index();
            if !has_new && !allow_empty {
                return;
            }
            allow_empty = false;
            if !self.send_one_append(peer, next_index) {
                return;
            }
            let Some(progress) = self.progress.get(&peer) else {
                return;
            };
            if progress.state != ProgressState::Replicate {
                return;
            }
        }
    }

    /// Sends one append starting at `next_index`; falls back to a snapshot when the entries
    /// are compacted. Returns whether an append was sent.
    fn send_one_append(&mut self, peer: NodeId, next_index: Index) -> bool {
        let prev_log_index = next_index - 1;
        let prev_log_term = self.log.term(prev_log_index);
        let entries = self.log.entries(
            next_index,
            self.log.last_index() + 1,
            self.config.max_entries_bytes_per_msg,
        );
        let (prev_log_term, entries) = match (prev_log_term, entries) {
            (Ok(term), Ok(entries)) => (term, entries),
            (Err(StorageError::Compacted), _) | (_, Err(StorageError::Compacted)) => {
                self.start_snapshot_transfer(peer);
                return false;
            }
            // Any other storage failure: try again on the next heartbeat response.
            _ => return false,
        };
        let last_index = entries.last().map_or(prev_log_index, |entry| entry.index);
        let entry_count = entries.len();
        let commit = self.log.committed;
        self.send(
            peer,
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                commit,
            },
        );
        if let Some(progress) = self.progress.get_mut(&peer) {
            progress.on_append_sent(last_index, entry_count);
        }
        true
    }

    pub(crate) fn broadcast_heartbeat(&mut self) {
        let read_context = self.reads.latest_round();
        for peer in self.peers() {
            self.send_heartbeat(peer, read_context);
        }
    }

    pub(crate) fn send_heartbeat(&mut self, peer: NodeId, read_context: Option<u64>) {
        let Some(progress) = self.progress.get(&peer) else {
            return;
        };
        // The follower may hold conflicting entries beyond what it is known to match.
        let commit = self.log.committed.min(progress.match_index);
        self.send(
            peer,
            MessageBody::Heartbeat {
                commit,
                read_context,
            },
        );
    }

    pub(crate) fn handle_append(
        &mut self,
        leader: NodeId,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: &[Entry],
        commit: Index,
    ) -> Result<(), RaftError> {
        if prev_log_index < self.log.committed {
            // Everything up to the commit index already matches the leader.
            let index = self.log.committed;
            self.send_after_persist(
                leader,
                MessageBody::AppendResponse {
                    index,
                    reject: None,
                },
            );
            return Ok(());
        }
        match self
            .log
            .maybe_append(prev_log_index, prev_log_term, commit, entries)?
        {
            Some(last_new_index) => self.send_after_persist(
                leader,
                MessageBody::AppendResponse {
                    index: last_new_index,
                    reject: None,
                },
            ),
            None => {
                let (index, term) = self
                    .log
                    .find_conflict_by_term(prev_log_index, prev_log_term);
                self.send(
                    leader,
                    MessageBody::AppendResponse {
                        index: prev_log_index,
                        reject: Some(RejectHint { index, term }),
                    },
                );
            }
        }
        Ok(())
    }

    pub(crate) fn handle_heartbeat(
        &mut self,
        leader: NodeId,
        commit: Index,
        read_context: Option<u64>,
    ) {
        self.log.commit_to(commit.min(self.log.last_index()));
        let body = MessageBody::HeartbeatResponse { read_context };
        if self.hard_state_dirty() {
            // Confirming leadership in a term this node may forget would be unsafe.
            self.send_after_persist(leader, body);
        } else {
            self.send(leader, body);
        }
    }

    pub(crate) fn handle_append_response(
        &mut self,
        peer: NodeId,
        index: Index,
        reject: Option<RejectHint>,
    ) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Ok(());
        }
        let Some(progress) = self.progress.get_mut(&peer) else {
            return Ok(());
        };
        progress.recent_active = true;
        match reject {
            Some(hint) => {
                let match_hint = self.find_leader_conflict_by_term(hint);
                let Some(progress) = self.progress.get_mut(&peer) else {
                    return Ok(());
                };
                if progress.maybe_decrease_to(index, match_hint) {
                    self.send_appends(peer, true);
                }
            }
            None => {
                let advanced = progress.maybe_update(index);
                progress.inflights.free_to(index);
                match progress.state {
                    ProgressState::Probe => progress.become_replicate(),
                    ProgressState::Snapshot => {
                        let pending = progress.snapshot.as_ref().map_or(0, |s| s.meta.index);
                        if progress.match_index >= pending {
                            progress.become_probe();
                        }
                    }
                    ProgressState::Replicate => {}
                }
                if advanced {
                    self.maybe_commit();
                    self.maybe_finish_transfer(peer);
                }
                self.send_appends(peer, false);
            }
        }
        Ok(())
    }

    /// Maps a follower's reject hint onto the leader's log: the largest index ≤ `hint.index`
    /// whose leader-side term is ≤ `hint.term`.
    fn find_leader_conflict_by_term(&self, hint: RejectHint) -> Index {
        self.log.find_conflict_by_term(hint.index, hint.term).0
    }

    pub(crate) fn handle_heartbeat_response(&mut self, peer: NodeId, read_context: Option<u64>) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&peer) else {
            return;
        };
        progress.recent_active = true;
        progress.probe_sent = false;
        if progress.state == ProgressState::Replicate && progress.inflights.is_full() {
            progress.inflights.free_first();
        }
        if progress.match_index < last_index {
            self.send_appends(peer, true);
        }
        if let Some(round) = read_context {
            self.acknowledge_read_round(peer, round);
        }
    }

    /// Commits the highest index stored on a quorum, if it is of the current term
    /// (Raft §5.4.2: older entries are committed only indirectly).
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let own_match = if cfg!(feature = "bug-ack-before-persist") {
            self.log.last_index()
        } else {
            self.log.persisted
        };
        let mut matches: Vec<Index> = self
            .progress
            .values()
            .map(|progress| progress.match_index)
            .collect();
        matches.push(own_match);
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&quorum_index) = matches.get(self.config.quorum() - 1) else {
            return false;
        };
        if quorum_index <= self.log.committed {
            return false;
        }
        let of_current_term = self.log.match_term(quorum_index, self.term);
        if !of_current_term && !cfg!(feature = "bug-commit-old-term") {
            return false;
        }
        let first_commit_of_term = !self.log.match_term(self.log.committed, self.term);
        self.log.commit_to(quorum_index);
        if first_commit_of_term && self.log.match_term(self.log.committed, self.term) {
            self.release_reads_waiting_for_commit();
        }
        true
    }
}
