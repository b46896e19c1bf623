//! [`GroupState`]: the sessions of one Raft group, [`GroupState::apply`] and the reads served
//! from applied state.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::command::Command;
use super::session::SessionState;
use crate::api::{
    AppendReply, CreateSession, EventBatch, ListQuery, NewEvent, Notification, ServiceError,
    SessionRecord,
};

/// What applying one command did. Every variant is deterministic: the same log gives the same
/// outcomes on every replica.
#[derive(Clone, Debug, PartialEq)]
pub enum ApplyOutcome {
    /// `create_session` stored a new session.
    Created(SessionRecord),
    /// `append_event(s)` was accepted (possibly entirely as dedupes).
    Appended {
        /// The reply for the client.
        reply: AppendReply,
        /// One commit notification per newly stored event, ascending seq (none for dedupes).
        notifications: Vec<Notification>,
        /// Events newly stored by this command.
        events_appended: u64,
    },
    /// The command was rejected; state is unchanged (apart from the applied index).
    Rejected(ServiceError),
    /// `ack_archived` was applied.
    Acked {
        /// The acknowledged session.
        session_id: String,
        /// The session's `archived_seq` after the ack.
        archived_seq: u64,
    },
}

/// The replicated state of one Raft group: every session placed on it, with producer cursors and
/// unarchived (hot) events.
///
/// A `GroupState` owns its share of the node-wide unarchived-bytes counter `U`: applying appends
/// adds to it, acks and dropping the state subtract from it.
#[derive(Debug)]
pub struct GroupState {
    pub(crate) group_id: u32,
    pub(crate) applied_index: u64,
    /// Sessions by id; byte order, which is the listing order.
    pub(crate) sessions: BTreeMap<String, SessionState>,
    /// This group's share of `U`: the sum of its sessions' hot bytes.
    pub(crate) unarchived_bytes: u64,
    /// The node-wide `U`, shared by every group of the node.
    pub(crate) node_unarchived_bytes: Arc<AtomicU64>,
}

impl GroupState {
    /// An empty group that adds its unarchived bytes to the node-wide counter `node_unarchived_bytes`.
    pub fn new(group_id: u32, node_unarchived_bytes: Arc<AtomicU64>) -> GroupState {
        GroupState {
            group_id,
            applied_index: 0,
            sessions: BTreeMap::new(),
            unarchived_bytes: 0,
            node_unarchived_bytes,
        }
    }

    /// The group's id.
    pub fn group_id(&self) -> u32 {
        self.group_id
    }

    /// Index of the last applied log entry (0 before the first).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// This group's share of the node's unarchived bytes `U`.
    pub fn unarchived_bytes(&self) -> u64 {
        self.unarchived_bytes
    }

    /// Number of sessions of the group.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Record that log entry `index` carried no command (a leader's no-op or a membership entry).
    pub fn apply_empty(&mut self, index: u64) {
        self.advance_applied_index(index);
    }

    /// Apply committed log entry `index` holding `command`. Deterministic: never reads the clock
    /// or any other node-local input; never refuses (rejections are outcomes, not errors).
    pub fn apply(&mut self, index: u64, command: &Command) -> ApplyOutcome {
        self.advance_applied_index(index);
        match command {
            Command::CreateSession { session, stamp_us } => self.apply_create(session, *stamp_us),
            Command::AppendEvents {
                session_id,
                events,
                expected_seq,
                stamp_us,
            } => self.apply_append(session_id, events, *expected_seq, *stamp_us),
            Command::AckArchived { session_id, upto } => self.apply_ack(session_id, *upto),
        }
    }

    fn advance_applied_index(&mut self, index: u64) {
        debug_assert!(
            self.applied_index == 0 || index == self.applied_index + 1,
            "group {} applied {} then {index}",
            self.group_id,
            self.applied_index
        );
        self.applied_index = index;
    }

    fn apply_create(&mut self, session: &CreateSession, stamp_us: i64) -> ApplyOutcome {
        if self.sessions.contains_key(&session.id) {
            return ApplyOutcome::Rejected(ServiceError::SessionExists);
        }
        let record = SessionRecord {
            id: session.id.clone(),
            title: session.title.clone(),
            creator_principal: session.creator_principal.clone(),
            metadata: session.metadata.clone(),
            last_seq: 0,
            archived_seq: 0,
            created_at_us: stamp_us,
        };
        self.sessions
            .insert(session.id.clone(), SessionState::new(record.clone()));
        ApplyOutcome::Created(record)
    }

    fn apply_append(
        &mut self,
        session_id: &str,
        events: &[NewEvent],
        expected_seq: Option<u64>,
        stamp_us: i64,
    ) -> ApplyOutcome {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return ApplyOutcome::Rejected(ServiceError::SessionNotFound);
        };
        let applied = match session.append(events, expected_seq, stamp_us) {
            Ok(applied) => applied,
            Err(error) => return ApplyOutcome::Rejected(error),
        };
        let last_seq = session.record.last_seq;
        self.add_unarchived_bytes(applied.added_bytes);
        let notifications: Vec<Notification> = applied
            .new_seqs
            .map(|seq| Notification { seq, last_seq })
            .collect();
        ApplyOutcome::Appended {
            events_appended: notifications.len() as u64,
            notifications,
            reply: AppendReply {
                results: applied.results,
                last_seq,
            },
        }
    }

    fn apply_ack(&mut self, session_id: &str, upto: u64) -> ApplyOutcome {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return ApplyOutcome::Rejected(ServiceError::SessionNotFound);
        };
        let released_bytes = session.acknowledge_archived(upto);
        let archived_seq = session.record.archived_seq;
        self.release_unarchived_bytes(released_bytes);
        ApplyOutcome::Acked {
            session_id: session_id.to_owned(),
            archived_seq,
        }
    }

    pub(crate) fn add_unarchived_bytes(&mut self, bytes: u64) {
        self.unarchived_bytes += bytes;
        self.node_unarchived_bytes
            .fetch_add(bytes, Ordering::Relaxed);
    }

    fn release_unarchived_bytes(&mut self, bytes: u64) {
        debug_assert!(bytes <= self.unarchived_bytes);
        let bytes = bytes.min(self.unarchived_bytes);
        self.unarchived_bytes -= bytes;
        self.node_unarchived_bytes
            .fetch_sub(bytes, Ordering::Relaxed);
    }

    /// The session's record, if it exists.
    pub fn session(&self, session_id: &str) -> Option<SessionRecord> {
        self.sessions
            .get(session_id)
            .map(|session| session.record.clone())
    }

    /// True when the session exists in this group's applied state.
    pub fn contains(&self, session_id: &str) -> bool {
        self.sessions.contains_key(session_id)
    }

    /// Read up to `limit` events with `seq > cursor` from the hot store (archive.md §6).
    ///
    /// Without an archive tier this returns `EventGapDetected` when the range needs a seq at or
    /// below `archived_seq`; the cold path is merged in by the caller.
    pub fn read(
        &self,
        session_id: &str,
        cursor: u64,
        limit: u32,
    ) -> Result<EventBatch, ServiceError> {
        let session = self
            .sessions
            .get(session_id)
            .ok_or(ServiceError::SessionNotFound)?;
        let last_seq = session.record.last_seq;
        let first_seq = cursor.saturating_add(1);
        let high_seq = last_seq.min(cursor.saturating_add(u64::from(limit)));
        if high_seq <= cursor {
            return Ok(EventBatch {
                first_seq,
                events: Vec::new(),
                last_seq,
            });
        }
        if session.record.archived_seq > cursor {
            return Err(ServiceError::EventGapDetected);
        }
        let events = (first_seq..=high_seq)
            .map(|seq| session.hot_event(seq).cloned())
            .collect::<Option<Vec<Bytes>>>()
            .ok_or(ServiceError::EventGapDetected)?;
        Ok(EventBatch {
            first_seq,
            events,
            last_seq,
        })
    }

    /// The hot events of a session with seqs in `from_seq ..= to_seq` that are still in memory,
    /// ascending, with their seqs: the hot half of the read path and the archiver's input.
    /// Empty when the session is unknown.
    pub fn hot_events(&self, session_id: &str, from_seq: u64, to_seq: u64) -> Vec<(u64, Bytes)> {
        let Some(session) = self.sessions.get(session_id) else {
            return Vec::new();
        };
        let from_seq = from_seq.max(session.record.archived_seq + 1);
        let to_seq = to_seq.min(session.record.last_seq);
        if from_seq > to_seq {
            return Vec::new();
        }
        (from_seq..=to_seq)
            .filter_map(|seq| session.hot_event(seq).map(|frame| (seq, frame.clone())))
            .collect()
    }

    /// The frame of one event if it is still hot (the tail's single-event lookup).
    pub fn hot_event(&self, session_id: &str, seq: u64) -> Option<Bytes> {
        self.sessions.get(session_id)?.hot_event(seq).cloned()
    }

    /// Records of the sessions that have unarchived events (`last_seq > archived_seq`), by id:
    /// the archiver's selection.
    pub fn unarchived_sessions(&self) -> impl Iterator<Item = &SessionRecord> {
        self.sessions
            .values()
            .map(|session| &session.record)
            .filter(|record| record.last_seq > record.archived_seq)
    }

    /// Up to `limit + 1` sessions matching `query` with `id > cursor`, ascending by id (byte
    /// order); the extra item tells the router whether more matching sessions exist.
    pub fn list(&self, query: &ListQuery) -> Vec<SessionRecord> {
        let lower = match &query.cursor {
            Some(cursor) => Bound::Excluded(cursor.as_str()),
            None => Bound::Unbounded,
        };
        let count_max = usize::try_from(query.limit)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        self.sessions
            .range::<str, _>((lower, Bound::Unbounded))
            .map(|(_, session)| &session.record)
            .filter(|record| matches_query(record, query))
            .take(count_max)
            .cloned()
            .collect()
    }
}

impl Drop for GroupState {
    /// Give back this group's share of `U`, so that replacing a group (snapshot install) or
    /// removing it keeps the node-wide counter exact.
    fn drop(&mut self) {
        self.node_unarchived_bytes
            .fetch_sub(self.unarchived_bytes, Ordering::Relaxed);
    }
}

/// semantics.md §9 and http-api.md §4: every metadata filter equals the stored value as a JSON
/// string; creator filters need a creator.
fn matches_query(record: &SessionRecord, query: &ListQuery) -> bool {
    let metadata_matches = query.metadata_filters.iter().all(|(key, expected)| {
        matches!(record.metadata.get(key), Some(serde_json::Value::String(value)) if value == expected)
    });
    if !metadata_matches {
        return false;
    }
    if query.creator_tenant_id.is_none() && query.creator_id.is_none() {
        return true;
    }
    let Some(creator) = &record.creator_principal else {
        return false;
    };
    let tenant_matches = query
        .creator_tenant_id
        .as_ref()
        .is_none_or(|tenant| *tenant == creator.tenant_id);
    let id_matches = query.creator_id.as_ref().is_none_or(|id| *id == creator.id);
    tenant_matches && id_matches
}
