//! What the control plane asks of a shard (ops.md §4, cluster.md §7): the leadership views of
//! the groups this node leads, leadership transfers, and the publication of every member's
//! role and leader to the [`crate::cluster::ClusterLink`].

use std::time::{Duration, Instant};

use starcite_raft::{Index, NodeId, Role};

use super::local::Shard;

/// A group this node leads, with the replication progress of its followers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderView {
    /// The group.
    pub group_id: u32,
    /// The leader's commit index.
    pub commit_index: Index,
    /// The leader's last log index.
    pub last_index: Index,
    /// `(follower, match index)` of every other voter.
    pub followers: Vec<(NodeId, Index)>,
    /// A transfer in progress.
    pub transfer_target: Option<NodeId>,
}

impl LeaderView {
    /// `node` holds every committed entry of the group: the transfer sends it the rest and
    /// the target campaigns at once.
    pub fn is_up_to_date(&self, node: NodeId) -> bool {
        self.followers
            .iter()
            .any(|(follower, matched)| *follower == node && *matched >= self.commit_index)
    }
}

/// How a leadership transfer ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferOutcome {
    /// This member no longer leads the group.
    Transferred,
    /// It still led the group when the timeout passed.
    GaveUp,
    /// The Raft core refused the transfer (not leader, not a voter, …).
    Refused(String),
}

/// A control-plane request for a shard.
pub(crate) enum ControlRequest {
    /// The groups of the shard this node leads.
    LeaderViews {
        reply: flume::Sender<Vec<LeaderView>>,
    },
    /// Hand leadership of `group_id` to `target`, waiting at most `timeout`.
    Transfer {
        group_id: u32,
        target: NodeId,
        timeout: Duration,
        reply: flume::Sender<TransferOutcome>,
    },
}

/// Runs `request` on `shard`.
pub(crate) async fn handle(shard: &Shard, request: ControlRequest) {
    match request {
        ControlRequest::LeaderViews { reply } => {
            let _ = reply.send(shard.leader_views());
        }
        ControlRequest::Transfer {
            group_id,
            target,
            timeout,
            reply,
        } => {
            let _ = reply.send(shard.transfer_group(group_id, target, timeout).await);
        }
    }
}

impl Shard {
    /// The groups of this shard whose member leads.
    fn leader_views(&self) -> Vec<LeaderView> {
        let raft = self.raft.borrow();
        raft.group_ids()
            .filter_map(|group_id| {
                let node = raft.group(group_id)?;
                if node.role() != Role::Leader {
                    return None;
                }
                let followers = node
                    .config()
                    .voters
                    .iter()
                    .filter(|voter| **voter != node.id())
                    .map(|voter| (*voter, node.match_index(*voter).unwrap_or(0)))
                    .collect();
                Some(LeaderView {
                    group_id,
                    commit_index: node.commit_index(),
                    last_index: node.last_index(),
                    followers,
                    transfer_target: node.transfer_target(),
                })
            })
            .collect()
    }

    /// Starts the transfer and waits until this member stepped down or `timeout` passed.
    async fn transfer_group(
        &self,
        group_id: u32,
        target: NodeId,
        timeout: Duration,
    ) -> TransferOutcome {
        let deadline = Instant::now() + timeout;
        let started = self.raft.borrow_mut().transfer_leader(group_id, target);
        if let Err(error) = started {
            return TransferOutcome::Refused(error.to_string());
        }
        let _ = self.doorbell.try_send(());
        loop {
            let leads = self
                .raft_status(group_id)
                .is_some_and(|(role, ..)| role == Role::Leader);
            if !leads {
                return TransferOutcome::Transferred;
            }
            // Role changes wake the apply watchers.
            if !self.wait_for_apply(deadline).await {
                return TransferOutcome::GaveUp;
            }
        }
    }

    /// Publishes the role and leader of every member of this shard (`running`), or that they
    /// stopped.
    pub(crate) fn publish_members(&self, running: bool) {
        let Some(link) = &self.node.config.link else {
            return;
        };
        let raft = self.raft.borrow();
        for group_id in raft.group_ids() {
            if running {
                if let Some(node) = raft.group(group_id) {
                    link.observe_member(group_id, node.role(), node.leader_id());
                }
            } else {
                link.member_stopped(group_id);
            }
        }
    }
}
