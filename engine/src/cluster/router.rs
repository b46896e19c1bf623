//! The router of cluster.md §5: every request of this node runs on a replica of its group.
//!
//! Candidates, each tried at most once:
//! 1. this node, when its member leads the group (a read also starts here when this node hosts
//!    a member at all: ReadIndex serves it on a follower at the cost of one leader round trip,
//!    which a forward would pay as well);
//! 2. the leader this node's member knows, else the cached hint (`STARCITE_ROUTE_LEADER_CACHE_TTL_MS`);
//! 3. the replicas that are ready (observer `ready` and Raft-ready), then those not draining,
//!    then draining ones as a last resort, each in placement order; nodes the peer transport
//!    does not reach are skipped.
//!
//! A "not leader" answer puts its hint next in line (and in the cache). Business outcomes
//! return at once. A write that a leader accepted but did not commit in time answers
//! `raft_timeout` and is never resubmitted, and so is a forwarded write whose connection broke
//! or whose forwarding call timed out ([`FORWARD_RPC_TIMEOUT`]), since it may have been
//! accepted. When every candidate failed without accepting (a leadership transfer or an
//! election in progress), the router tries them all again after a short backoff within
//! [`RETRY_BUDGET`]; only then the answer is `raft_unavailable`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use starcite_raft::NodeId;

use super::{Clock, ClusterLink, RoutedOp, RoutedOutcome, RoutedReply, WriteTimeout};
use crate::api::{ListQuery, ServiceError, SessionRecord};
use crate::metrics;
use crate::shard::EngineHandle;

/// How long a forwarded request waits for its reply (cluster.md §5.1 step 4).
pub const FORWARD_RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Default of `STARCITE_ROUTE_LEADER_CACHE_TTL_MS`.
pub const LEADER_CACHE_TTL_DEFAULT: Duration = Duration::from_millis(10_000);

/// How long a request keeps retrying when no candidate accepted it (the commit wait of
/// cluster.md §5.1 step 4): a leadership change in progress settles well within it.
pub const RETRY_BUDGET: Duration = Duration::from_millis(2000);

/// First pause between two rounds over the candidates; doubled each round.
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(25);

/// Longest pause between two rounds.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(200);

/// Groups a cluster-wide list asks at once.
pub const LIST_GROUPS_IN_FLIGHT_MAX: u32 = 32;

/// What one candidate did with the request.
enum Attempt {
    /// It answered.
    Answered(RoutedOutcome),
    /// The request never left this node (peer unreachable, queues full).
    NotSent,
    /// The request left, but no reply came: the connection broke or the call timed out.
    NoReply,
}

/// Runs `op` on a replica of its group (see the module documentation).
pub(crate) async fn route(
    handle: &EngineHandle,
    link: &ClusterLink,
    op: RoutedOp,
) -> Result<RoutedReply, ServiceError> {
    let group_id = crate::shard::group_of_op(&op, handle.config().num_groups);
    let metric_op = if op.is_write() { "write" } else { "read" };
    let deadline = Instant::now() + RETRY_BUDGET;
    let mut backoff = RETRY_BACKOFF_MIN;
    let mut forwarded = false;
    loop {
        let round = route_round(handle, link, group_id, &op, &mut forwarded).await;
        let retry = match &round {
            // Nobody accepted the command: a leadership change (drain, rebalance, election)
            // may be under way; a new leader usually appears within a few heartbeats.
            Err(ServiceError::RaftUnavailable) => Instant::now() + backoff < deadline,
            _ => false,
        };
        if !retry {
            if op.is_write() && matches!(round, Err(ServiceError::RaftTimeout)) {
                link.note_write_timeout(WriteTimeout {
                    group_id,
                    outcome: if forwarded {
                        "leader_retry_timeout"
                    } else {
                        "local_timeout"
                    },
                });
            }
            if forwarded {
                let outcome = match &round {
                    Ok(_) => "ok",
                    Err(ServiceError::RaftTimeout) => "timeout",
                    Err(ServiceError::RaftUnavailable) => "unavailable",
                    Err(error) if error.status() >= 500 => "error",
                    Err(_) => "ok",
                };
                metrics::global().routing_forward(metric_op, outcome);
            } else if matches!(round, Err(ServiceError::RaftUnavailable)) {
                metrics::global().routing_forward(metric_op, "unavailable");
            }
            return round;
        }
        glommio::timer::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
    }
}

/// The candidates of `group_id` in the order of cluster.md §5.1 step 2.
fn candidates(link: &ClusterLink, group_id: u32, write: bool) -> Vec<NodeId> {
    let self_id = link.node_id();
    let replicas: &[NodeId] = link
        .topology()
        .group_replicas
        .get(group_id as usize)
        .map_or(&[], Vec::as_slice);
    let known_leader = link.local_view_of_leader(group_id);
    let mut order: Vec<NodeId> = Vec::with_capacity(replicas.len() + 2);
    let push = |order: &mut Vec<NodeId>, node: NodeId| {
        if !order.contains(&node) {
            order.push(node);
        }
    };
    if known_leader == Some(self_id) || (!write && replicas.contains(&self_id)) {
        push(&mut order, self_id);
    }
    if let Some(leader) = known_leader.or_else(|| link.cached_hint(group_id)) {
        push(&mut order, leader);
    }
    // Ready replicas, then the ones not draining, then draining ones as a last resort; each
    // tier in placement order.
    let clock = Clock::now();
    let observer = link.observer();
    let tier = |node: NodeId| {
        if observer.is_ready(node, clock) {
            0
        } else if !observer.is_draining(node) {
            1
        } else {
            2
        }
    };
    let mut ranked: Vec<(u8, usize, NodeId)> = replicas
        .iter()
        .enumerate()
        .map(|(position, node)| (tier(*node), position, *node))
        .collect();
    ranked.sort_unstable();
    for (_, _, replica) in ranked {
        push(&mut order, replica);
    }
    order
}

/// One pass over the candidates (see the module documentation).
async fn route_round(
    handle: &EngineHandle,
    link: &ClusterLink,
    group_id: u32,
    op: &RoutedOp,
    forwarded: &mut bool,
) -> Result<RoutedReply, ServiceError> {
    let write = op.is_write();
    let self_id = link.node_id();
    let mut order = candidates(link, group_id, write);
    let mut timed_out = false;
    let mut position = 0;
    while let Some(&candidate) = order.get(position) {
        position += 1;
        let attempt = if candidate == self_id {
            Attempt::Answered(handle.execute_routed(op.clone()).await)
        } else if !link.is_connected(candidate) {
            Attempt::NotSent
        } else {
            *forwarded = true;
            call(link, candidate, op).await
        };
        match attempt {
            Attempt::Answered(RoutedOutcome::Ok(reply)) => return Ok(reply),
            Attempt::Answered(RoutedOutcome::NotLeader { leader_hint }) => {
                if let Some(hint) = leader_hint.filter(|hint| *hint != candidate) {
                    link.cache_hint(group_id, hint);
                    // Next in line unless already tried.
                    if !order[..position].contains(&hint) {
                        order.retain(|node| *node != hint);
                        order.insert(position, hint);
                    }
                }
            }
            Attempt::Answered(RoutedOutcome::Failed(ServiceError::RaftUnavailable))
            | Attempt::NotSent => {}
            Attempt::Answered(RoutedOutcome::Failed(ServiceError::RaftTimeout))
            | Attempt::NoReply
                if !write =>
            {
                timed_out = true;
            }
            Attempt::Answered(RoutedOutcome::Failed(ServiceError::RaftTimeout))
            | Attempt::NoReply => return Err(ServiceError::RaftTimeout),
            Attempt::Answered(RoutedOutcome::Failed(error)) => return Err(error),
        }
    }
    if timed_out {
        return Err(ServiceError::RaftTimeout);
    }
    Err(ServiceError::RaftUnavailable)
}

/// Forwards `op` to `to` and waits for the reply, at most [`FORWARD_RPC_TIMEOUT`].
async fn call(link: &ClusterLink, to: NodeId, op: &RoutedOp) -> Attempt {
    let Some((call_id, receiver)) = link.call(to, op) else {
        return Attempt::NotSent;
    };
    let reply = future::or(async { receiver.recv_async().await.ok() }, async {
        glommio::timer::sleep(FORWARD_RPC_TIMEOUT).await;
        None
    })
    .await;
    match reply {
        Some(outcome) => Attempt::Answered(outcome),
        None => {
            link.forget_call(call_id);
            Attempt::NoReply
        }
    }
}

/// Up to `limit + 1` matching sessions of every group (each read linearizably on a replica).
pub(crate) async fn list_all(
    handle: &EngineHandle,
    link: &Arc<ClusterLink>,
    query: &ListQuery,
) -> Result<Vec<SessionRecord>, ServiceError> {
    let groups = handle.config().num_groups;
    let mut sessions = Vec::new();
    let mut next = 0;
    while next < groups {
        let end = next.saturating_add(LIST_GROUPS_IN_FLIGHT_MAX).min(groups);
        let tasks: Vec<_> = (next..end)
            .map(|group_id| {
                let handle = handle.clone();
                let link = link.clone();
                let op = RoutedOp::ListGroup {
                    group_id,
                    query: query.clone(),
                };
                glommio::spawn_local(async move { route(&handle, &link, op).await })
            })
            .collect();
        for task in tasks {
            match task.await? {
                RoutedReply::Sessions(records) => sessions.extend(records),
                other => return Err(unexpected(&other)),
            }
        }
        next = end;
    }
    Ok(sessions)
}

/// A reply of the wrong kind for its request (a peer bug).
pub(crate) fn unexpected(reply: &RoutedReply) -> ServiceError {
    ServiceError::Internal(format!("unexpected routed reply {reply:?}"))
}
