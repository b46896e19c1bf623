//! The operations a shard runs for the groups it owns: leader-side checks, proposing commands
//! and mapping apply outcomes to API results. Shared by local calls and forwarded requests.

use crate::api::{
    AppendReply, AppendRequest, CreateSession, EventBatch, ServiceError, SessionRecord,
};
use crate::metrics;
use crate::state::{ApplyOutcome, Command};

use super::local::Shard;

fn unexpected(outcome: &ApplyOutcome) -> ServiceError {
    ServiceError::Internal(format!("unexpected apply outcome {outcome:?}"))
}

/// Commit a `create_session`. Creates are never backpressured (archive.md §8 rule 4).
pub(crate) async fn create(
    shard: &Shard,
    group_id: u32,
    request: CreateSession,
) -> Result<SessionRecord, ServiceError> {
    let command = Command::CreateSession {
        session: request,
        stamp_us: 0,
    };
    match shard.propose(group_id, command).await? {
        ApplyOutcome::Created(record) => Ok(record),
        ApplyOutcome::Rejected(error) => Err(error),
        other => Err(unexpected(&other)),
    }
}

/// Leader checks of semantics.md §4 steps 0 and 0b, then commit the append.
pub(crate) async fn append(
    shard: &Shard,
    group_id: u32,
    request: AppendRequest,
) -> Result<AppendReply, ServiceError> {
    if !shard.with_group(group_id, |group| group.contains(&request.session_id)) {
        return Err(ServiceError::SessionNotFound);
    }
    let config = &shard.node.config;
    if shard.node.unarchived_bytes() >= config.event_store_max_bytes {
        metrics::global().backpressure();
        return Err(ServiceError::Backpressure {
            retry_after_s: config.retry_after_s(),
        });
    }
    let command = Command::AppendEvents {
        session_id: request.session_id,
        events: request.events,
        expected_seq: request.expected_seq,
        stamp_us: 0,
    };
    match shard.propose(group_id, command).await? {
        ApplyOutcome::Appended { reply, .. } => Ok(reply),
        ApplyOutcome::Rejected(error) => Err(error),
        other => Err(unexpected(&other)),
    }
}

/// Commit an `ack_archived`; returns the session's `archived_seq` afterwards.
pub(crate) async fn ack_archived(
    shard: &Shard,
    group_id: u32,
    session_id: String,
    upto: u64,
) -> Result<u64, ServiceError> {
    if !shard.with_group(group_id, |group| group.contains(&session_id)) {
        return Err(ServiceError::SessionNotFound);
    }
    match shard
        .propose(group_id, Command::AckArchived { session_id, upto })
        .await?
    {
        ApplyOutcome::Acked { archived_seq, .. } => Ok(archived_seq),
        ApplyOutcome::Rejected(error) => Err(error),
        other => Err(unexpected(&other)),
    }
}

/// Read a session record from applied state.
pub(crate) fn get(
    shard: &Shard,
    group_id: u32,
    session_id: &str,
) -> Result<SessionRecord, ServiceError> {
    shard
        .with_group(group_id, |group| group.session(session_id))
        .ok_or(ServiceError::SessionNotFound)
}

/// Read events from applied state.
pub(crate) fn read(
    shard: &Shard,
    group_id: u32,
    session_id: &str,
    cursor: u64,
    limit: u32,
) -> Result<EventBatch, ServiceError> {
    shard.with_group(group_id, |group| group.read(session_id, cursor, limit))
}
