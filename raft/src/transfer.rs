//! Leadership transfer (Raft thesis §3.10): the leader stops accepting proposals, brings the
//! target up to date, then sends it `TimeoutNow`; the target campaigns at once, skipping the
//! pre-vote and overriding the voters' leader lease. The leader abandons the transfer after
//! an election timeout.

use crate::election::Campaign;
use crate::error::RaftError;
use crate::message::MessageBody;
use crate::raw_node::RawNode;
use crate::storage::Storage;
use crate::types::{NodeId, Role};

impl<S: Storage> RawNode<S> {
    pub(crate) fn transfer_leader_inner(&mut self, target: NodeId) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(self.not_leader());
        }
        if !self.is_voter(target) {
            return Err(RaftError::NotAVoter(target));
        }
        if target == self.config.id || self.transfer_target == Some(target) {
            return Ok(());
        }
        self.transfer_target = Some(target);
        // The abort timer starts now.
        self.election_elapsed = 0;
        if !self.maybe_finish_transfer(target) {
            self.send_appends(target, true);
        }
        Ok(())
    }

    /// Sends `TimeoutNow` once the transfer target holds the whole log durably.
    pub(crate) fn maybe_finish_transfer(&mut self, peer: NodeId) -> bool {
        if self.transfer_target != Some(peer) {
            return false;
        }
        let caught_up = self
            .progress
            .get(&peer)
            .is_some_and(|progress| progress.match_index == self.log.last_index());
        if caught_up {
            self.send(peer, MessageBody::TimeoutNow);
        }
        caught_up
    }

    pub(crate) fn handle_timeout_now(&mut self, leader: NodeId) {
        if self.role != Role::Leader && leader == self.leader_id {
            self.campaign(Campaign::Transfer);
        }
    }
}
