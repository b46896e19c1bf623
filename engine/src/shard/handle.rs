//! [`EngineHandle`]: one shard's implementation of [`Service`], routing each request to the
//! shard that owns the session's group.

use std::rc::Rc;
use std::sync::Arc;

use serde_json::json;

use super::local::Shard;
use super::node::ShutdownSignal;
use super::ops;
use super::route::{Reply, ShardRequest};
use crate::api::{
    AppendReply, AppendRequest, CreateSession, EventBatch, ListPage, ListQuery, NodeMode, NotReady,
    Service, ServiceError, SessionRecord, Subscription,
};
use crate::cluster::{router, ClusterLink, RoutedOp, RoutedReply};
use crate::config::EngineConfig;
use crate::notify::NotifyHub;
use crate::placement;
use crate::wal::WalStats;

/// The engine as seen from one shard's executor. Cheap to clone; not `Send` (it holds this
/// shard's local state). Requests for groups owned by another shard are forwarded to it.
#[derive(Clone)]
pub struct EngineHandle {
    shard: Rc<Shard>,
}

impl EngineHandle {
    pub(crate) fn new(shard: Rc<Shard>) -> Self {
        EngineHandle { shard }
    }

    /// This shard's state.
    pub(crate) fn shard(&self) -> &Rc<Shard> {
        &self.shard
    }

    /// The cluster link, when requests are routed over the peer transport.
    fn link(&self) -> Option<Arc<ClusterLink>> {
        self.shard.node.config.link.clone()
    }

    /// Index of the shard this handle runs on.
    pub fn shard_index(&self) -> u32 {
        self.shard.shard_index
    }

    /// Number of shards of the node.
    pub fn shard_count(&self) -> u32 {
        self.shard.node.shard_count()
    }

    /// The node's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.shard.node.config
    }

    /// Fires when the node is asked to shut down; serve loops stop accepting then.
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        self.shard.node.shutdown.clone()
    }

    /// The node-wide notification hub.
    pub fn notify_hub(&self) -> Arc<NotifyHub> {
        self.shard.node.notify.clone()
    }

    /// Current node-wide unarchived bytes `U` (archive.md §8).
    pub fn unarchived_bytes(&self) -> u64 {
        self.shard.node.unarchived_bytes()
    }

    /// Current bytes `C` of the archive read cache (0 without an archive tier).
    pub fn archive_cache_bytes(&self) -> u64 {
        self.shard
            .node
            .archive
            .as_ref()
            .map_or(0, |archive| archive.cache_bytes())
    }

    /// `(group_id, applied_index)` of every group of this shard, for tests and status.
    pub fn applied_indexes(&self) -> Vec<(u32, u64)> {
        self.shard.applied_indexes()
    }

    /// This node's Raft member of `group_id` (owned by this shard): `(role, leader, term,
    /// commit index, applied index)`, or `None` when the node hosts no member of it.
    pub fn raft_status(&self, group_id: u32) -> Option<(starcite_raft::Role, u64, u64, u64, u64)> {
        self.shard.raft_status(group_id)
    }

    /// Counters of this shard's write-ahead log (group-commit effectiveness, bytes written).
    pub fn wal_stats(&self) -> WalStats {
        self.shard.wal_stats()
    }

    /// Number of groups this shard hosts.
    pub fn local_group_count(&self) -> usize {
        self.shard.group_count()
    }

    /// The group of `session_id` and the shard that owns it.
    pub fn owner_of(&self, session_id: &str) -> (u32, u32) {
        let group_id = placement::group_of(session_id, self.shard.node.config.num_groups);
        (group_id, group_id % self.shard_count())
    }

    /// Commit `ack_archived(session, upto)` (semantics.md §8); returns the session's
    /// `archived_seq` afterwards. Only the archiver calls this.
    pub async fn ack_archived(&self, session_id: &str, upto: u64) -> Result<u64, ServiceError> {
        if let Some(link) = self.link() {
            let op = RoutedOp::AckArchived {
                session_id: session_id.to_string(),
                upto,
            };
            return match router::route(self, &link, op).await? {
                RoutedReply::Acked(archived_seq) => Ok(archived_seq),
                other => Err(router::unexpected(&other)),
            };
        }
        let (group_id, owner) = self.owner_of(session_id);
        let session_id = session_id.to_string();
        if owner == self.shard_index() {
            return ops::ack_archived(&self.shard, group_id, session_id, upto).await;
        }
        self.forward(owner, |reply| ShardRequest::AckArchived {
            group_id,
            session_id,
            upto,
            reply,
        })
        .await
    }

    /// Send a request to shard `owner` and wait for its reply.
    async fn forward<T>(
        &self,
        owner: u32,
        request: impl FnOnce(Reply<T>) -> ShardRequest,
    ) -> Result<T, ServiceError> {
        let (reply, receiver) = flume::bounded(1);
        let sender = &self.shard.node.senders[owner as usize];
        // A closed queue means the owner stopped (shutdown): the request was not taken.
        sender
            .send_async(request(reply))
            .await
            .map_err(|_| ServiceError::RaftUnavailable)?;
        receiver.recv_async().await.unwrap_or_else(|_| {
            Err(ServiceError::Internal(format!(
                "shard {owner} stopped before replying"
            )))
        })
    }
}

impl Service for EngineHandle {
    async fn create_session(&self, request: CreateSession) -> Result<SessionRecord, ServiceError> {
        if let Some(link) = self.link() {
            return match router::route(self, &link, RoutedOp::Create(request)).await? {
                RoutedReply::Session(record) => Ok(record),
                other => Err(router::unexpected(&other)),
            };
        }
        let (group_id, owner) = self.owner_of(&request.id);
        if owner == self.shard_index() {
            return ops::create(&self.shard, group_id, request).await;
        }
        self.forward(owner, |reply| ShardRequest::Create {
            group_id,
            request,
            reply,
        })
        .await
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendReply, ServiceError> {
        if let Some(link) = self.link() {
            return match router::route(self, &link, RoutedOp::Append(request)).await? {
                RoutedReply::Appended(reply) => Ok(reply),
                other => Err(router::unexpected(&other)),
            };
        }
        let (group_id, owner) = self.owner_of(&request.session_id);
        if owner == self.shard_index() {
            return ops::append(&self.shard, group_id, request).await;
        }
        self.forward(owner, |reply| ShardRequest::Append {
            group_id,
            request,
            reply,
        })
        .await
    }

    async fn get_session(&self, session_id: &str) -> Result<SessionRecord, ServiceError> {
        if let Some(link) = self.link() {
            let op = RoutedOp::Get {
                session_id: session_id.to_string(),
            };
            return match router::route(self, &link, op).await? {
                RoutedReply::Session(record) => Ok(record),
                other => Err(router::unexpected(&other)),
            };
        }
        let (group_id, owner) = self.owner_of(session_id);
        if owner == self.shard_index() {
            return ops::get(&self.shard, group_id, session_id).await;
        }
        let session_id = session_id.to_string();
        self.forward(owner, |reply| ShardRequest::Get {
            group_id,
            session_id,
            reply,
        })
        .await
    }

    async fn list_sessions(&self, query: ListQuery) -> Result<ListPage, ServiceError> {
        if let Some(link) = self.link() {
            let sessions = router::list_all(self, &link, &query).await?;
            return Ok(merge_page(sessions, query.limit));
        }
        // Ask every other shard first so that they work while this one lists its own groups.
        let mut replies = Vec::new();
        for owner in (0..self.shard_count()).filter(|owner| *owner != self.shard_index()) {
            let (reply, receiver) = flume::bounded(1);
            let request = ShardRequest::List {
                query: query.clone(),
                reply,
            };
            self.shard.node.senders[owner as usize]
                .send_async(request)
                .await
                .map_err(|_| ServiceError::RaftUnavailable)?;
            replies.push((owner, receiver));
        }
        let mut sessions = self.shard.list(&query);
        for (owner, receiver) in replies {
            let shard_sessions = receiver.recv_async().await.unwrap_or_else(|_| {
                Err(ServiceError::Internal(format!(
                    "shard {owner} stopped before replying"
                )))
            })?;
            sessions.extend(shard_sessions);
        }
        Ok(merge_page(sessions, query.limit))
    }

    async fn read_events(
        &self,
        session_id: &str,
        cursor: u64,
        limit: u32,
    ) -> Result<EventBatch, ServiceError> {
        if let Some(link) = self.link() {
            let op = RoutedOp::Read {
                session_id: session_id.to_string(),
                cursor,
                limit,
            };
            return match router::route(self, &link, op).await? {
                RoutedReply::Events(batch) => Ok(batch),
                other => Err(router::unexpected(&other)),
            };
        }
        let (group_id, owner) = self.owner_of(session_id);
        if owner == self.shard_index() {
            return ops::read(&self.shard, group_id, session_id, cursor, limit).await;
        }
        let session_id = session_id.to_string();
        self.forward(owner, |reply| ShardRequest::Read {
            group_id,
            session_id,
            cursor,
            limit,
            reply,
        })
        .await
    }

    fn subscribe(&self, session_id: &str, capacity: usize) -> Subscription {
        self.shard.node.notify.subscribe(session_id, capacity)
    }

    fn mode(&self) -> NodeMode {
        self.shard.node.config.mode
    }

    fn readiness(&self) -> Result<(), NotReady> {
        self.shard.check_storage();
        match self.shard.node.storage_failure() {
            Some(failure) => Err(NotReady {
                reason: "storage_failed",
                detail: Some(json!({
                    "path": failure.path.display().to_string(),
                    "error": failure.error,
                })),
            }),
            None => Ok(()),
        }
    }
}

/// Merge per-shard candidates (each up to `limit + 1`, any order) into one page: ascending by id
/// bytes, at most `limit`, with `next_cursor` set when more matching sessions exist
/// (semantics.md §9).
fn merge_page(mut sessions: Vec<SessionRecord>, limit: u32) -> ListPage {
    sessions.sort_by(|left, right| left.id.as_bytes().cmp(right.id.as_bytes()));
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = if sessions.len() > limit {
        sessions.truncate(limit);
        sessions.last().map(|session| session.id.clone())
    } else {
        None
    };
    ListPage {
        sessions,
        next_cursor,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;

    fn record(id: &str) -> SessionRecord {
        SessionRecord {
            id: id.to_string(),
            title: None,
            creator_principal: None,
            metadata: Map::new(),
            last_seq: 0,
            archived_seq: 0,
            created_at_us: 0,
        }
    }

    #[test]
    fn merge_sorts_by_bytes_and_sets_cursor() {
        let page = merge_page(vec![record("b"), record("B"), record("a"), record("c")], 2);
        let ids: Vec<&str> = page
            .sessions
            .iter()
            .map(|session| session.id.as_str())
            .collect();
        assert_eq!(ids, ["B", "a"]);
        assert_eq!(page.next_cursor.as_deref(), Some("a"));
        let page = merge_page(vec![record("a")], 1);
        assert_eq!(page.next_cursor, None);
    }
}
