//! The full snapshot of a [`GroupState`] (cluster.md §4.1, "full snapshot"): every session
//! record with its producer cursors and every unarchived event, so that the log can be truncated
//! up to the snapshot's index. Layout byte by byte in docs/format.md.
//!
//! Encoding iterates only ordered collections (sessions by id, cursors by seq, events by seq), so
//! two replicas with the same applied log produce byte-identical snapshots.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;

use super::codec::{length_u32, FieldDecodeError, Reader, Writer};
use super::command::{read_optional_principal, write_optional_principal};
use super::group::GroupState;
use super::session::{ProducerCursor, SessionState, PRODUCER_CURSORS_MAX};
use crate::api::SessionRecord;

/// Leading bytes of every group snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"SCGS";
/// Version byte following the magic.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 1;

/// Fewest bytes one encoded session occupies (id prefix, title tag, principal tag, metadata
/// prefix, created_at, last_seq, archived_seq, inserted-at tag, cursor count, event count).
const SESSION_ENCODED_BYTES_MIN: usize = 4 + 1 + 1 + 4 + 8 + 8 + 8 + 1 + 4 + 4;
/// Fewest bytes one encoded producer cursor occupies.
const CURSOR_ENCODED_BYTES_MIN: usize = 4 + 8 + 8 + 32;
/// Fewest bytes one encoded hot event occupies (its length prefix).
const EVENT_ENCODED_BYTES_MIN: usize = 4;

/// Why a snapshot could not be decoded. A snapshot that fails to decode must not be installed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotDecodeError {
    /// The magic bytes or version are wrong.
    #[error("not a group snapshot of format version {SNAPSHOT_FORMAT_VERSION}")]
    UnsupportedFormat,
    /// The snapshot belongs to another group.
    #[error("snapshot of group {found} offered to group {expected}")]
    WrongGroup {
        /// Group being restored.
        expected: u32,
        /// Group recorded in the snapshot.
        found: u32,
    },
    /// A field could not be read.
    #[error("read snapshot: {0}")]
    Field(#[from] FieldDecodeError),
    /// The decoded state breaks an invariant (order, counts, seq bounds).
    #[error("inconsistent snapshot: {0}")]
    Inconsistent(String),
    /// Bytes remain after the snapshot.
    #[error("{0} unexpected bytes after the snapshot")]
    TrailingBytes(usize),
}

impl GroupState {
    /// Encode the whole state (docs/format.md, "Group snapshot").
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        for byte in SNAPSHOT_MAGIC {
            writer.u8(byte);
        }
        writer.u8(SNAPSHOT_FORMAT_VERSION);
        writer.u32(self.group_id);
        writer.u64(self.applied_index);
        writer.u32(length_u32(self.sessions.len()));
        for session in self.sessions.values() {
            write_session(&mut writer, session);
        }
        writer.into_bytes()
    }

    /// Rebuild a group from [`GroupState::encode_snapshot`] bytes, adding its unarchived bytes to
    /// `node_unarchived_bytes`. Never panics on arbitrary input.
    pub fn decode_snapshot(
        group_id: u32,
        bytes: &[u8],
        node_unarchived_bytes: Arc<AtomicU64>,
    ) -> Result<GroupState, SnapshotDecodeError> {
        let mut reader = Reader::new(bytes);
        let magic: [u8; 4] = reader
            .fixed("magic")
            .map_err(|_| SnapshotDecodeError::UnsupportedFormat)?;
        let version = reader
            .u8("version")
            .map_err(|_| SnapshotDecodeError::UnsupportedFormat)?;
        if magic != SNAPSHOT_MAGIC || version != SNAPSHOT_FORMAT_VERSION {
            return Err(SnapshotDecodeError::UnsupportedFormat);
        }
        let found = reader.u32("group id")?;
        if found != group_id {
            return Err(SnapshotDecodeError::WrongGroup {
                expected: group_id,
                found,
            });
        }
        let applied_index = reader.u64("applied index")?;
        let session_count = reader.count("session count", SESSION_ENCODED_BYTES_MIN)?;
        let mut sessions = BTreeMap::new();
        let mut unarchived_bytes = 0_u64;
        let mut previous_id: Option<String> = None;
        for _ in 0..session_count {
            let session = read_session(&mut reader)?;
            if previous_id
                .as_deref()
                .is_some_and(|previous| previous >= session.record.id.as_str())
            {
                return Err(inconsistent("session ids are not strictly ascending"));
            }
            previous_id = Some(session.record.id.clone());
            unarchived_bytes += session.hot_bytes;
            sessions.insert(session.record.id.clone(), session);
        }
        if reader.remaining() != 0 {
            return Err(SnapshotDecodeError::TrailingBytes(reader.remaining()));
        }
        let mut group = GroupState::new(group_id, node_unarchived_bytes);
        group.applied_index = applied_index;
        group.sessions = sessions;
        group.add_unarchived_bytes(unarchived_bytes);
        Ok(group)
    }
}

fn inconsistent(reason: &str) -> SnapshotDecodeError {
    SnapshotDecodeError::Inconsistent(reason.to_owned())
}

fn write_session(writer: &mut Writer, session: &SessionState) {
    let record = &session.record;
    writer.string(&record.id);
    writer.optional_string(record.title.as_deref());
    write_optional_principal(writer, record.creator_principal.as_ref());
    writer.json_object(&record.metadata);
    writer.i64(record.created_at_us);
    writer.u64(record.last_seq);
    writer.u64(record.archived_seq);
    match session.last_inserted_at_us {
        None => writer.u8(0),
        Some(inserted_at_us) => {
            writer.u8(1);
            writer.i64(inserted_at_us);
        }
    }
    writer.u32(length_u32(session.cursors.len()));
    for (producer_id, cursor) in session.cursors.iter_by_seq() {
        writer.string(producer_id);
        writer.u64(cursor.producer_seq);
        writer.u64(cursor.seq);
        for byte in cursor.fingerprint {
            writer.u8(byte);
        }
    }
    writer.u32(length_u32(session.hot_events.len()));
    for frame in &session.hot_events {
        writer.bytes(frame);
    }
}

fn read_session(reader: &mut Reader<'_>) -> Result<SessionState, SnapshotDecodeError> {
    let record = SessionRecord {
        id: reader.string("session id")?,
        title: reader.optional_string("title")?,
        creator_principal: read_optional_principal(reader)?,
        metadata: reader.json_object("metadata")?,
        created_at_us: reader.i64("created at")?,
        last_seq: reader.u64("last seq")?,
        archived_seq: reader.u64("archived seq")?,
    };
    if record.archived_seq > record.last_seq {
        return Err(inconsistent("archived_seq above last_seq"));
    }
    let last_inserted_at_us = match reader.u8("last inserted at")? {
        0 => None,
        1 => Some(reader.i64("last inserted at")?),
        tag => {
            return Err(FieldDecodeError::UnknownTag {
                field: "last inserted at",
                tag,
            }
            .into())
        }
    };
    if last_inserted_at_us.is_some() != (record.last_seq > 0) {
        return Err(inconsistent(
            "last inserted at present exactly when events exist",
        ));
    }
    let mut session = SessionState::new(record);
    session.last_inserted_at_us = last_inserted_at_us;
    read_cursors(reader, &mut session)?;
    let event_count = reader.count("event count", EVENT_ENCODED_BYTES_MIN)?;
    if event_count as u64 != session.record.last_seq - session.record.archived_seq {
        return Err(inconsistent(
            "hot event count is not last_seq - archived_seq",
        ));
    }
    let mut hot_events = VecDeque::with_capacity(event_count);
    for _ in 0..event_count {
        let frame = Bytes::copy_from_slice(reader.bytes("event frame")?);
        session.hot_bytes += frame.len() as u64;
        hot_events.push_back(frame);
    }
    session.hot_events = hot_events;
    session.debug_check_invariants();
    Ok(session)
}

fn read_cursors(
    reader: &mut Reader<'_>,
    session: &mut SessionState,
) -> Result<(), SnapshotDecodeError> {
    let cursor_count = reader.count("cursor count", CURSOR_ENCODED_BYTES_MIN)?;
    if cursor_count > PRODUCER_CURSORS_MAX {
        return Err(inconsistent("more producer cursors than the bound"));
    }
    let mut previous_seq = 0_u64;
    for _ in 0..cursor_count {
        let producer_id = reader.string("producer id")?;
        let cursor = ProducerCursor {
            producer_seq: reader.u64("producer seq")?,
            seq: reader.u64("cursor seq")?,
            fingerprint: reader.fixed("fingerprint")?,
        };
        if cursor.seq <= previous_seq
            || cursor.seq > session.record.last_seq
            || cursor.producer_seq == 0
        {
            return Err(inconsistent(
                "producer cursor seqs not ascending within 1..=last_seq",
            ));
        }
        previous_seq = cursor.seq;
        if session
            .cursors
            .replace(&producer_id, Some(cursor))
            .is_some()
        {
            return Err(inconsistent("producer id repeated"));
        }
    }
    Ok(())
}
