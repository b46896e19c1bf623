//! Requests crossing from one shard to the shard that owns the group.
//!
//! Each shard has one bounded request queue ([`SHARD_REQUEST_QUEUE_MAX`]); a sender that finds
//! it full waits (asynchronously) rather than piling up work. The owning shard runs every
//! request as its own task so that forwarded writes pipeline exactly like local ones, with at
//! most [`SHARD_REQUESTS_IN_FLIGHT_MAX`] of them at once. Every request carries a one-shot reply
//! channel.

use std::rc::Rc;

use futures_lite::future;
use glommio::sync::Semaphore;

use super::local::Shard;
use super::ops;
use crate::api::{
    AppendReply, AppendRequest, CreateSession, EventBatch, ListQuery, ServiceError, SessionRecord,
};

/// Capacity of each shard's queue of requests from other shards.
pub const SHARD_REQUEST_QUEUE_MAX: usize = 1024;

/// Forwarded requests a shard runs concurrently; beyond it, the queue fills and senders wait.
pub const SHARD_REQUESTS_IN_FLIGHT_MAX: u64 = 4096;

/// A one-shot reply channel.
pub(crate) type Reply<T> = flume::Sender<Result<T, ServiceError>>;

/// A request for a group owned by the receiving shard (or, for `List`, for all of its groups).
pub(crate) enum ShardRequest {
    /// Commit a create.
    Create {
        group_id: u32,
        request: CreateSession,
        reply: Reply<SessionRecord>,
    },
    /// Commit an append.
    Append {
        group_id: u32,
        request: AppendRequest,
        reply: Reply<AppendReply>,
    },
    /// Read one session record.
    Get {
        group_id: u32,
        session_id: String,
        reply: Reply<SessionRecord>,
    },
    /// Read events.
    Read {
        group_id: u32,
        session_id: String,
        cursor: u64,
        limit: u32,
        reply: Reply<EventBatch>,
    },
    /// List the receiving shard's groups.
    List {
        query: ListQuery,
        reply: Reply<Vec<SessionRecord>>,
    },
    /// Run an operation for the router (cluster.md §5) on this node's member of the group.
    Routed {
        group_id: u32,
        op: crate::cluster::RoutedOp,
        reply: flume::Sender<crate::cluster::RoutedOutcome>,
    },
    /// A control-plane request (leader views, leadership transfer).
    Control(super::control::ControlRequest),
    /// Commit an archive acknowledgement.
    AckArchived {
        group_id: u32,
        session_id: String,
        upto: u64,
        reply: Reply<u64>,
    },
}

/// Serve this shard's request queue until every shard's serve loop has returned, then wait for
/// the requests still running.
pub(crate) async fn serve_requests(shard: Rc<Shard>, requests: flume::Receiver<ShardRequest>) {
    let in_flight = Rc::new(Semaphore::new(SHARD_REQUESTS_IN_FLIGHT_MAX));
    loop {
        let next = future::or(async { requests.recv_async().await.ok() }, async {
            shard.node.wait_all_served().await;
            None
        })
        .await;
        let Some(request) = next else { break };
        let Ok(permit) = in_flight.clone().acquire_static_permit(1).await else {
            break;
        };
        let shard = shard.clone();
        glommio::spawn_local(async move {
            handle(&shard, request).await;
            drop(permit);
        })
        .detach();
    }
    // Every permit back means every forwarded request finished.
    let _ = in_flight.acquire(SHARD_REQUESTS_IN_FLIGHT_MAX).await;
}

async fn handle(shard: &Shard, request: ShardRequest) {
    // A send fails only when the requester gave up waiting; there is nobody left to tell.
    match request {
        ShardRequest::Create {
            group_id,
            request,
            reply,
        } => {
            let _ = reply.send(ops::create(shard, group_id, request).await);
        }
        ShardRequest::Append {
            group_id,
            request,
            reply,
        } => {
            let _ = reply.send(ops::append(shard, group_id, request).await);
        }
        ShardRequest::Get {
            group_id,
            session_id,
            reply,
        } => {
            let _ = reply.send(ops::get(shard, group_id, &session_id).await);
        }
        ShardRequest::Read {
            group_id,
            session_id,
            cursor,
            limit,
            reply,
        } => {
            let _ = reply.send(ops::read(shard, group_id, &session_id, cursor, limit).await);
        }
        ShardRequest::Routed {
            group_id,
            op,
            reply,
        } => {
            let _ = reply.send(super::routed::run(shard, group_id, op).await);
        }
        ShardRequest::Control(request) => super::control::handle(shard, request).await,
        ShardRequest::List { query, reply } => {
            let _ = reply.send(Ok(shard.list(&query)));
        }
        ShardRequest::AckArchived {
            group_id,
            session_id,
            upto,
            reply,
        } => {
            let _ = reply.send(ops::ack_archived(shard, group_id, session_id, upto).await);
        }
    }
}
