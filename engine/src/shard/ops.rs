//! The operations a shard runs for the groups it owns: leader-side checks, proposing commands
//! and mapping apply outcomes to API results. Shared by local calls and forwarded requests.
//!
//! Writes run their checks on the leader once its no-op is applied; reads are confirmed as
//! linearizable first (`Shard::linearizable_read`). A member that does not lead answers
//! [`ProposeError::NotLeader`], which the API of this node reports as `raft_unavailable`.

use crate::api::{
    AppendReply, AppendRequest, CreateSession, EventBatch, ServiceError, SessionRecord,
};
use crate::archiver;
use crate::metrics;
use crate::state::{ApplyOutcome, Command};

use std::time::{Duration, Instant};

use super::local::{ProposeError, Shard, COMMIT_WAIT_MS};

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
    match shard
        .propose(group_id, command)
        .await
        .map_err(ProposeError::into_service)?
    {
        ApplyOutcome::Created(record) => {
            if let Some(archive) = &shard.node.archive {
                archive.submit_catalog(&record);
            }
            Ok(record)
        }
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
    leader_checks_ready(shard, group_id).await?;
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
    match shard
        .propose(group_id, command)
        .await
        .map_err(ProposeError::into_service)?
    {
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
    leader_checks_ready(shard, group_id).await?;
    if !shard.with_group(group_id, |group| group.contains(&session_id)) {
        return Err(ServiceError::SessionNotFound);
    }
    match shard
        .propose(group_id, Command::AckArchived { session_id, upto })
        .await
        .map_err(ProposeError::into_service)?
    {
        ApplyOutcome::Acked { archived_seq, .. } => Ok(archived_seq),
        ApplyOutcome::Rejected(error) => Err(error),
        other => Err(unexpected(&other)),
    }
}

/// Wait until this member may run leader-side checks (it leads and applied its no-op).
async fn leader_checks_ready(shard: &Shard, group_id: u32) -> Result<(), ServiceError> {
    let deadline = Instant::now() + Duration::from_millis(COMMIT_WAIT_MS);
    shard
        .wait_leader_ready(group_id, deadline)
        .await
        .map_err(ProposeError::into_service)
}

/// Read a session record from applied state, after confirming the read is linearizable.
pub(crate) async fn get(
    shard: &Shard,
    group_id: u32,
    session_id: &str,
) -> Result<SessionRecord, ServiceError> {
    shard
        .linearizable_read(group_id)
        .await
        .map_err(ProposeError::into_service)?;
    shard
        .with_group(group_id, |group| group.session(session_id))
        .ok_or(ServiceError::SessionNotFound)
}

/// Read events from applied state, after confirming the read is linearizable.
pub(crate) async fn read(
    shard: &Shard,
    group_id: u32,
    session_id: &str,
    cursor: u64,
    limit: u32,
) -> Result<EventBatch, ServiceError> {
    shard
        .linearizable_read(group_id)
        .await
        .map_err(ProposeError::into_service)?;
    let Some(archive) = &shard.node.archive else {
        return shard.with_group(group_id, |group| group.read(session_id, cursor, limit));
    };
    let view = shard.with_group(group_id, |group| {
        archiver::hot_view(group, session_id, cursor, limit)
    })?;
    archiver::read_merged(archive, session_id, cursor, view).await
}
