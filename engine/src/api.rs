//! The narrow API between the engine and the network layer.
//!
//! `net/` is generic over [`Service`]; the engine's `EngineHandle` implements it for real, and unit
//! tests of `net/` may implement it with an in-memory fake. Everything here is plain data: no
//! glommio types, so the API stays stable when the runtime underneath changes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Kind of principal that created a session or appends to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalType {
    /// A human user.
    User,
    /// An agent acting for a session.
    Agent,
}

impl PrincipalType {
    /// The wire spelling (`user` / `agent`).
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalType::User => "user",
            PrincipalType::Agent => "agent",
        }
    }
}

/// `{"tenant_id","id","type"}` of semantics.md §1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Tenant the principal belongs to.
    pub tenant_id: String,
    /// Principal id within the tenant.
    pub id: String,
    /// User or agent.
    #[serde(rename = "type")]
    pub principal_type: PrincipalType,
}

/// A session as stored in replicated state (semantics.md §1), without producer cursors.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionRecord {
    /// Session id (non-empty, compared by bytes).
    pub id: String,
    /// Immutable title.
    pub title: Option<String>,
    /// Creator; `None` only for sessions created by internal tools.
    pub creator_principal: Option<Principal>,
    /// Immutable metadata; contains `tenant_id` when created through the API.
    pub metadata: Map<String, Value>,
    /// Highest assigned seq.
    pub last_seq: u64,
    /// Highest seq confirmed durable in the archive.
    pub archived_seq: u64,
    /// Leader-stamped creation time, microseconds since the Unix epoch (UTC).
    pub created_at_us: i64,
}

/// Validated input of `POST /v1/sessions` (after auth, validation and id generation in `net/`).
#[derive(Clone, Debug, PartialEq)]
pub struct CreateSession {
    /// Final id (caller-chosen or generated `ses_…`).
    pub id: String,
    /// Title or `None`.
    pub title: Option<String>,
    /// Resolved creator.
    pub creator_principal: Option<Principal>,
    /// Metadata after tenant fencing (`tenant_id` set).
    pub metadata: Map<String, Value>,
}

/// One validated event of an append request (http-api.md §6), before the leader stamps it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// Non-empty event type.
    pub event_type: String,
    /// JSON object payload (stored losslessly).
    pub payload: Map<String, Value>,
    /// Explicit or derived actor.
    pub actor: String,
    /// Optional non-empty source.
    pub source: Option<String>,
    /// Metadata after the principal merge.
    pub metadata: Map<String, Value>,
    /// Refs, stored exactly as sent.
    pub refs: Map<String, Value>,
    /// Stored; part of the fingerprint only.
    pub idempotency_key: Option<String>,
    /// Non-empty producer id.
    pub producer_id: String,
    /// Producer sequence number, ≥ 1, < 2^63.
    pub producer_seq: u64,
}

/// A validated append (single or batch).
#[derive(Clone, Debug, PartialEq)]
pub struct AppendRequest {
    /// Target session.
    pub session_id: String,
    /// 1..=1000 events; a single append has exactly one.
    pub events: Vec<NewEvent>,
    /// Optimistic concurrency check against the pre-append `last_seq`.
    pub expected_seq: Option<u64>,
}

/// Result of one event of an append (`{"seq","last_seq","deduped"}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// Seq of the event (the original seq for a dedupe).
    pub seq: u64,
    /// Running `last_seq` after this event.
    pub last_seq: u64,
    /// True when this was an exact retry of the producer's latest event.
    pub deduped: bool,
}

/// Reply to an accepted append: one result per event, in request order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendReply {
    /// Per-event results.
    pub results: Vec<AppendResult>,
    /// Final `last_seq` of the session.
    pub last_seq: u64,
}

/// Query of `GET /v1/sessions` after validation and auth fencing.
#[derive(Clone, Debug, PartialEq)]
pub struct ListQuery {
    /// 1..=1000.
    pub limit: u32,
    /// Exclusive lower bound on `id` (byte order).
    pub cursor: Option<String>,
    /// Metadata filters: each key must equal the stored value as a JSON string.
    pub metadata_filters: Vec<(String, String)>,
    /// Only sessions whose creator has this id (user principals).
    pub creator_id: Option<String>,
    /// Only sessions whose creator has this tenant (service/user kinds). Sessions without a creator
    /// never match when this is set.
    pub creator_tenant_id: Option<String>,
}

/// One page of sessions, ascending by id.
#[derive(Clone, Debug, PartialEq)]
pub struct ListPage {
    /// Matching sessions, at most `limit`.
    pub sessions: Vec<SessionRecord>,
    /// Id of the last item when more matching sessions exist.
    pub next_cursor: Option<String>,
}

/// A contiguous run of events read from a session, each the compact JSON frame of tail.md §3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventBatch {
    /// Seq of the first event (`cursor + 1`) when non-empty.
    pub first_seq: u64,
    /// Event frames in ascending seq order.
    pub events: Vec<Bytes>,
    /// The session's `last_seq` at read time.
    pub last_seq: u64,
}

/// Errors the engine reports to the API layer (the non-validation part of http-api.md §12).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// 404 `session_not_found`.
    #[error("Session was not found")]
    SessionNotFound,
    /// 409 `session_exists`.
    #[error("Session already exists")]
    SessionExists,
    /// 409 `expected_seq_conflict`.
    #[error("Expected seq {expected}, current seq is {current}")]
    ExpectedSeqConflict {
        /// The caller's `expected_seq`.
        expected: u64,
        /// The session's `last_seq`.
        current: u64,
    },
    /// 409 `producer_seq_conflict`.
    #[error("Producer {producer_id} expected seq {expected}, got {got}")]
    ProducerSeqConflict {
        /// Producer id as sent.
        producer_id: String,
        /// Next producer seq the session expects.
        expected: u64,
        /// Producer seq the caller sent.
        got: u64,
    },
    /// 409 `producer_replay_conflict`.
    #[error("Producer sequence was already used with different event content")]
    ProducerReplayConflict,
    /// 429 `event_store_backpressure` with `Retry-After: retry_after_s`.
    #[error("Node is backpressuring writes due to event-store capacity")]
    Backpressure {
        /// Seconds for the `Retry-After` header.
        retry_after_s: u64,
    },
    /// 503 `raft_timeout`: accepted but not committed in time (outcome unknown).
    #[error("Cluster request timed out")]
    RaftTimeout,
    /// 503 `raft_unavailable`: no replica could take the request (nothing changed).
    #[error("No available replicas")]
    RaftUnavailable,
    /// 503 `archive_read_unavailable`.
    #[error("Archive read unavailable")]
    ArchiveReadUnavailable,
    /// 503 `event_gap_detected`.
    #[error("Ordered replay gap detected")]
    EventGapDetected,
    /// 500 `internal_error`; the string is for logs only.
    #[error("Internal server error")]
    Internal(String),
}

impl ServiceError {
    /// HTTP status of this error.
    pub fn status(&self) -> u16 {
        match self {
            ServiceError::SessionNotFound => 404,
            ServiceError::SessionExists
            | ServiceError::ExpectedSeqConflict { .. }
            | ServiceError::ProducerSeqConflict { .. }
            | ServiceError::ProducerReplayConflict => 409,
            ServiceError::Backpressure { .. } => 429,
            ServiceError::RaftTimeout
            | ServiceError::RaftUnavailable
            | ServiceError::ArchiveReadUnavailable
            | ServiceError::EventGapDetected => 503,
            ServiceError::Internal(_) => 500,
        }
    }

    /// The exact `error` code of the catalogue.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::SessionNotFound => "session_not_found",
            ServiceError::SessionExists => "session_exists",
            ServiceError::ExpectedSeqConflict { .. } => "expected_seq_conflict",
            ServiceError::ProducerSeqConflict { .. } => "producer_seq_conflict",
            ServiceError::ProducerReplayConflict => "producer_replay_conflict",
            ServiceError::Backpressure { .. } => "event_store_backpressure",
            ServiceError::RaftTimeout => "raft_timeout",
            ServiceError::RaftUnavailable => "raft_unavailable",
            ServiceError::ArchiveReadUnavailable => "archive_read_unavailable",
            ServiceError::EventGapDetected => "event_gap_detected",
            ServiceError::Internal(_) => "internal_error",
        }
    }

    /// The exact `message` of the catalogue (`Display` gives the same text).
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// A commit notification (semantics.md §7): a hint for live tails, no body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notification {
    /// Seq of the committed event.
    pub seq: u64,
    /// The session's `last_seq` after the commit.
    pub last_seq: u64,
}

/// Receiving side of a session's commit notifications, bounded to the tail buffer size.
///
/// The publisher never blocks: when the channel is full it drops the notification and sets the
/// overflow flag, and the tail then falls back to replay from its cursor (tail.md §5).
pub struct Subscription {
    receiver: flume::Receiver<Notification>,
    overflowed: Arc<AtomicBool>,
}

/// Sending side of one [`Subscription`], held by the engine's notification hub.
#[derive(Clone)]
pub struct SubscriptionSender {
    sender: flume::Sender<Notification>,
    overflowed: Arc<AtomicBool>,
}

/// What happened to a published notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Queued for the subscriber.
    Delivered,
    /// The subscriber's buffer was full; its overflow flag is now set.
    Overflowed,
    /// The subscriber is gone; drop this sender.
    Closed,
}

/// Create a connected subscription pair whose buffer holds at most `capacity` notifications.
pub fn subscription_channel(capacity: usize) -> (SubscriptionSender, Subscription) {
    let (sender, receiver) = flume::bounded(capacity.max(1));
    let overflowed = Arc::new(AtomicBool::new(false));
    (
        SubscriptionSender {
            sender,
            overflowed: overflowed.clone(),
        },
        Subscription {
            receiver,
            overflowed,
        },
    )
}

impl SubscriptionSender {
    /// Queue a notification without blocking.
    pub fn publish(&self, notification: Notification) -> PublishOutcome {
        match self.sender.try_send(notification) {
            Ok(()) => PublishOutcome::Delivered,
            Err(flume::TrySendError::Full(_)) => {
                self.overflowed.store(true, Ordering::Release);
                PublishOutcome::Overflowed
            }
            Err(flume::TrySendError::Disconnected(_)) => PublishOutcome::Closed,
        }
    }

    /// True when the subscriber has been dropped.
    pub fn is_closed(&self) -> bool {
        self.sender.is_disconnected()
    }
}

impl Subscription {
    /// Wait for the next notification; `None` when the engine dropped the sender (shutdown).
    pub async fn recv(&self) -> Option<Notification> {
        self.receiver.recv_async().await.ok()
    }

    /// Take a notification if one is queued.
    pub fn try_recv(&self) -> Option<Notification> {
        self.receiver.try_recv().ok()
    }

    /// Return and clear the overflow flag; when it was set, the queued notifications are dropped
    /// too, since the caller is going to replay from its cursor anyway.
    pub fn take_overflow(&self) -> bool {
        let overflowed = self.overflowed.swap(false, Ordering::AcqRel);
        if overflowed {
            while self.receiver.try_recv().is_ok() {}
        }
        overflowed
    }
}

/// Whether this node hosts groups (`write_node`) or only routes (`router_node`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeMode {
    /// Hosts Raft group members and their data.
    WriteNode,
    /// Hosts no groups.
    RouterNode,
}

impl NodeMode {
    /// The wire spelling (`write_node` / `router_node`).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeMode::WriteNode => "write_node",
            NodeMode::RouterNode => "router_node",
        }
    }
}

/// Why the node is not ready (ops.md §2): `reason` is the exact reason string and `detail` the
/// `detail` object (omitted from the response when `None`).
#[derive(Clone, Debug, PartialEq)]
pub struct NotReady {
    /// `storage_failed`, `draining`, `raft_sync`, `router_sync` or `observer_sync`.
    pub reason: &'static str,
    /// The `detail` object of the 503 response.
    pub detail: Option<Value>,
}

/// The engine as seen by the HTTP layer. One value per shard executor; cheap to clone; its
/// futures are not `Send` (they run on the executor that called them).
#[allow(async_fn_in_trait)]
pub trait Service: Clone + 'static {
    /// Commit a `create_session` command; `SessionExists` if the id is taken.
    async fn create_session(&self, request: CreateSession) -> Result<SessionRecord, ServiceError>;

    /// Run the leader-side checks (existence, backpressure), commit the append and return the
    /// decision of semantics.md §4. Returns only after the command is durable and applied.
    async fn append(&self, request: AppendRequest) -> Result<AppendReply, ServiceError>;

    /// Linearizable read of one session record.
    async fn get_session(&self, session_id: &str) -> Result<SessionRecord, ServiceError>;

    /// Linearizable listing across all groups (semantics.md §9).
    async fn list_sessions(&self, query: ListQuery) -> Result<ListPage, ServiceError>;

    /// Read up to `limit` events with `seq > cursor`, contiguous from `cursor + 1`
    /// (archive.md §6). Empty when `last_seq <= cursor`.
    async fn read_events(
        &self,
        session_id: &str,
        cursor: u64,
        limit: u32,
    ) -> Result<EventBatch, ServiceError>;

    /// Subscribe to the session's commit notifications with a buffer of `capacity` entries.
    /// Subscribing to a session that does not exist is allowed (the tail checks existence).
    fn subscribe(&self, session_id: &str, capacity: usize) -> Subscription;

    /// Mode of this node.
    fn mode(&self) -> NodeMode;

    /// `Ok(())` when ready, else why not.
    fn readiness(&self) -> Result<(), NotReady>;
}
