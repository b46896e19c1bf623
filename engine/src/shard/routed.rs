//! Running a [`RoutedOp`] on this node's member of its group, for the router of this node or
//! of another node (a forwarded request). A member that cannot run the operation answers "not
//! leader" with its leader hint instead of an error, so the router tries the next candidate;
//! nothing here forwards again, so a request never loops between nodes.

use starcite_raft::{Role, NO_NODE};

use super::handle::EngineHandle;
use super::local::Shard;
use super::ops;
use super::route::ShardRequest;
use crate::api::ServiceError;
use crate::cluster::{RoutedOp, RoutedOutcome, RoutedReply};
use crate::placement;

/// The group `op` belongs to.
pub(crate) fn group_of_op(op: &RoutedOp, num_groups: u32) -> u32 {
    let session_id = match op {
        RoutedOp::Create(request) => &request.id,
        RoutedOp::Append(request) => &request.session_id,
        RoutedOp::Get { session_id }
        | RoutedOp::Read { session_id, .. }
        | RoutedOp::AckArchived { session_id, .. } => session_id,
        RoutedOp::ListGroup { group_id, .. } => return *group_id,
    };
    placement::group_of(session_id, num_groups)
}

/// "Not leader" when this node's member of `group_id` does not lead (or there is none).
fn not_leader(shard: &Shard, group_id: u32) -> Option<RoutedOutcome> {
    match shard.raft_status(group_id) {
        None => Some(RoutedOutcome::NotLeader { leader_hint: None }),
        Some((Role::Leader, ..)) => None,
        Some((_, leader, ..)) => Some(RoutedOutcome::NotLeader {
            leader_hint: (leader != NO_NODE && leader != shard.node.config.node_id())
                .then_some(leader),
        }),
    }
}

/// Runs `op` on the member of `group_id` owned by `shard`.
pub(crate) async fn run(shard: &Shard, group_id: u32, op: RoutedOp) -> RoutedOutcome {
    debug_assert_eq!(group_id % shard.node.shard_count(), shard.shard_index);
    if op.is_write() {
        if let Some(refusal) = not_leader(shard, group_id) {
            return refusal;
        }
    } else if shard.raft_status(group_id).is_none() {
        return RoutedOutcome::NotLeader { leader_hint: None };
    }
    let result = match op {
        RoutedOp::Create(request) => ops::create(shard, group_id, request)
            .await
            .map(RoutedReply::Session),
        RoutedOp::Append(request) => ops::append(shard, group_id, request)
            .await
            .map(RoutedReply::Appended),
        RoutedOp::AckArchived { session_id, upto } => {
            ops::ack_archived(shard, group_id, session_id, upto)
                .await
                .map(RoutedReply::Acked)
        }
        RoutedOp::Get { session_id } => ops::get(shard, group_id, &session_id)
            .await
            .map(RoutedReply::Session),
        RoutedOp::Read {
            session_id,
            cursor,
            limit,
        } => ops::read(shard, group_id, &session_id, cursor, limit)
            .await
            .map(RoutedReply::Events),
        RoutedOp::ListGroup { query, .. } => match shard.linearizable_read(group_id).await {
            Ok(()) => Ok(RoutedReply::Sessions(
                shard.with_group(group_id, |group| group.list(&query)),
            )),
            Err(error) => Err(error.into_service()),
        },
    };
    match result {
        Ok(reply) => RoutedOutcome::Ok(reply),
        // The member lost its leadership (or never learnt the leader) on the way: tell the
        // router to try elsewhere, with whatever this member knows now.
        Err(ServiceError::RaftUnavailable) => not_leader(shard, group_id)
            .unwrap_or(RoutedOutcome::Failed(ServiceError::RaftUnavailable)),
        Err(error) => RoutedOutcome::Failed(error),
    }
}

impl EngineHandle {
    /// Runs `op` on this node's member of its group (on whichever shard owns the group) without
    /// forwarding it to another node: the executor of forwarded requests.
    pub async fn execute_routed(&self, op: RoutedOp) -> RoutedOutcome {
        let group_id = group_of_op(&op, self.config().num_groups);
        let owner = group_id % self.shard_count();
        if owner == self.shard_index() {
            return run(self.shard(), group_id, op).await;
        }
        let (reply, receiver) = flume::bounded(1);
        let request = ShardRequest::Routed {
            group_id,
            op,
            reply,
        };
        if self.shard().node.senders[owner as usize]
            .send_async(request)
            .await
            .is_err()
        {
            return RoutedOutcome::Failed(ServiceError::RaftUnavailable);
        }
        receiver
            .recv_async()
            .await
            .unwrap_or(RoutedOutcome::Failed(ServiceError::RaftUnavailable))
    }
}
