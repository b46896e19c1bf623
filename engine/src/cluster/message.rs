//! The body of every peer frame of a replicated cluster: a kind byte, then the kind's fields
//! (docs/format.md, "Peer messages"). Integers are little-endian and strings and byte
//! strings carry a `u32` length, as in the command encoding (docs/format.md); write
//! commands travel in exactly their command encoding.

use bytes::Bytes;
use starcite_raft::{NodeId, NO_NODE};

use crate::api::{
    AppendReply, AppendRequest, AppendResult, CreateSession, EventBatch, ListQuery, Notification,
    ServiceError, SessionRecord,
};
use crate::state::codec::{Reader, Writer};
use crate::state::command::{read_optional_principal, write_optional_principal};
use crate::state::{Command, CommandDecodeError, FieldDecodeError};

/// A multi-Raft batch in its wire encoding (`raftlog::wire`).
pub const KIND_RAFT: u8 = 1;
/// A forwarded request.
pub const KIND_REQUEST: u8 = 2;
/// The reply to a forwarded request.
pub const KIND_REPLY: u8 = 3;
/// A commit notification.
pub const KIND_NOTIFICATION: u8 = 4;
/// A node-status report of the observer (ops.md §3).
pub const KIND_NODE_STATUS: u8 = 5;
/// A forwarded drain or undrain of the receiving node.
pub const KIND_DRAIN_REQUEST: u8 = 6;
/// The answer to a forwarded drain or undrain.
pub const KIND_DRAIN_REPLY: u8 = 7;

/// Most node ids one node-status report lists (far above any supported cluster size).
pub const STATUS_NODES_MAX: usize = 4096;

const OP_CREATE: u8 = 1;
const OP_APPEND: u8 = 2;
const OP_GET: u8 = 3;
const OP_READ: u8 = 4;
const OP_LIST_GROUP: u8 = 5;
const OP_ACK_ARCHIVED: u8 = 6;

const OUTCOME_OK: u8 = 0;
const OUTCOME_NOT_LEADER: u8 = 1;
const OUTCOME_ERROR: u8 = 2;

const REPLY_SESSION: u8 = 1;
const REPLY_APPENDED: u8 = 2;
const REPLY_EVENTS: u8 = 3;
const REPLY_SESSIONS: u8 = 4;
const REPLY_ACKED: u8 = 5;

/// An operation executed on a replica of its group.
#[derive(Clone, Debug, PartialEq)]
pub enum RoutedOp {
    /// `create_session`.
    Create(CreateSession),
    /// `append_event(s)`.
    Append(AppendRequest),
    /// Read one session record.
    Get {
        /// The session.
        session_id: String,
    },
    /// Read events after `cursor`.
    Read {
        /// The session.
        session_id: String,
        /// Exclusive lower bound.
        cursor: u64,
        /// At most this many events.
        limit: u32,
    },
    /// List the matching sessions of one group.
    ListGroup {
        /// The group.
        group_id: u32,
        /// The query.
        query: ListQuery,
    },
    /// `ack_archived`.
    AckArchived {
        /// The session.
        session_id: String,
        /// Highest archived seq.
        upto: u64,
    },
}

impl RoutedOp {
    /// Whether the operation proposes a command (as opposed to reading).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            RoutedOp::Create(_) | RoutedOp::Append(_) | RoutedOp::AckArchived { .. }
        )
    }
}

/// The result of a successful [`RoutedOp`].
#[derive(Clone, Debug, PartialEq)]
pub enum RoutedReply {
    /// A session record (create, get).
    Session(SessionRecord),
    /// An append's results.
    Appended(AppendReply),
    /// Events read.
    Events(EventBatch),
    /// A group's matching sessions.
    Sessions(Vec<SessionRecord>),
    /// The `archived_seq` after an ack.
    Acked(u64),
}

/// What a replica answers to a [`RoutedOp`].
#[derive(Clone, Debug, PartialEq)]
pub enum RoutedOutcome {
    /// Executed.
    Ok(RoutedReply),
    /// This replica does not lead; try `leader_hint`.
    NotLeader {
        /// The leader as the replica knows it.
        leader_hint: Option<NodeId>,
    },
    /// Executed (or refused) with this error.
    Failed(ServiceError),
}

/// A node's drain mark as its reports carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainMark {
    /// Not draining.
    None,
    /// Marked by the operator (sticky).
    Operator,
    /// Marked by a shutdown.
    Shutdown,
}

impl DrainMark {
    fn to_byte(self) -> u8 {
        match self {
            DrainMark::None => 0,
            DrainMark::Operator => 1,
            DrainMark::Shutdown => 2,
        }
    }

    fn from_byte(tag: u8) -> Result<DrainMark, MessageError> {
        match tag {
            0 => Ok(DrainMark::None),
            1 => Ok(DrainMark::Operator),
            2 => Ok(DrainMark::Shutdown),
            tag => Err(MessageError::UnknownTag {
                field: "drain mark",
                tag,
            }),
        }
    }
}

/// What a node reports about itself to every connected node (peer message kind 5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatusReport {
    /// Its drain mark.
    pub drain: DrainMark,
    /// Its Raft readiness (a router reports its router readiness).
    pub raft_ready: bool,
    /// Groups it leads now.
    pub led_groups: u32,
    /// The nodes its observer sees as draining, ascending.
    pub draining_nodes: Vec<NodeId>,
}

/// A decoded peer message.
#[derive(Debug)]
pub enum PeerMessage<'a> {
    /// A Raft batch (still encoded).
    Raft(&'a [u8]),
    /// A forwarded request.
    Request {
        /// Echoed in the reply.
        call_id: u64,
        /// What to execute.
        op: RoutedOp,
    },
    /// A reply.
    Reply {
        /// The request's call id.
        call_id: u64,
        /// Its outcome.
        outcome: RoutedOutcome,
    },
    /// A commit notification.
    Notification {
        /// The session.
        session_id: String,
        /// Seq and `last_seq`.
        notification: Notification,
    },
    /// A node-status report.
    NodeStatus(NodeStatusReport),
    /// Drain (`draining`) or undrain the receiving node.
    DrainRequest {
        /// Echoed in the reply.
        call_id: u64,
        /// Drain (true) or undrain (false).
        draining: bool,
    },
    /// The answer to a drain request.
    DrainReply {
        /// The request's call id.
        call_id: u64,
        /// The mark was applied.
        applied: bool,
    },
}

/// Why a peer message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The body is empty.
    #[error("empty peer message")]
    Empty,
    /// Unknown kind, operation or outcome byte.
    #[error("unknown {field} {tag}")]
    UnknownTag {
        /// What was read.
        field: &'static str,
        /// The byte found.
        tag: u8,
    },
    /// A field is malformed.
    #[error(transparent)]
    Field(#[from] FieldDecodeError),
    /// An embedded command is malformed.
    #[error(transparent)]
    Command(#[from] CommandDecodeError),
    /// Bytes follow the last field.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

impl PeerMessage<'_> {
    /// Wraps a Raft batch.
    pub fn encode_raft(envelope: &[u8]) -> Vec<u8> {
        let mut body = Vec::with_capacity(envelope.len() + 1);
        body.push(KIND_RAFT);
        body.extend_from_slice(envelope);
        body
    }

    /// Encodes a forwarded request.
    pub fn encode_request(call_id: u64, op: &RoutedOp) -> Vec<u8> {
        let mut writer = Writer::new();
        writer.u8(KIND_REQUEST);
        writer.u64(call_id);
        write_op(&mut writer, op);
        writer.into_bytes()
    }

    /// Encodes a reply.
    pub fn encode_reply(call_id: u64, outcome: &RoutedOutcome) -> Vec<u8> {
        let mut writer = Writer::new();
        writer.u8(KIND_REPLY);
        writer.u64(call_id);
        match outcome {
            RoutedOutcome::Ok(reply) => {
                writer.u8(OUTCOME_OK);
                write_reply(&mut writer, reply);
            }
            RoutedOutcome::NotLeader { leader_hint } => {
                writer.u8(OUTCOME_NOT_LEADER);
                writer.u64(leader_hint.unwrap_or(NO_NODE));
            }
            RoutedOutcome::Failed(error) => {
                writer.u8(OUTCOME_ERROR);
                write_error(&mut writer, error);
            }
        }
        writer.into_bytes()
    }

    /// Encodes a commit notification.
    pub fn encode_notification(session_id: &str, notification: Notification) -> Vec<u8> {
        let mut writer = Writer::new();
        writer.u8(KIND_NOTIFICATION);
        writer.string(session_id);
        writer.u64(notification.seq);
        writer.u64(notification.last_seq);
        writer.into_bytes()
    }

    /// Encodes a node-status report.
    pub fn encode_node_status(report: &NodeStatusReport) -> Vec<u8> {
        let mut writer = Writer::new();
        writer.u8(KIND_NODE_STATUS);
        writer.u8(report.drain.to_byte());
        writer.u8(u8::from(report.raft_ready));
        writer.u32(report.led_groups);
        let listed = &report.draining_nodes[..report.draining_nodes.len().min(STATUS_NODES_MAX)];
        writer.u32(listed.len() as u32);
        for node in listed {
            writer.u64(*node);
        }
        writer.into_bytes()
    }

    /// Encodes a forwarded drain (`draining`) or undrain.
    pub fn encode_drain_request(call_id: u64, draining: bool) -> Vec<u8> {
        let mut writer = Writer::new();
        writer.u8(KIND_DRAIN_REQUEST);
        writer.u64(call_id);
        writer.u8(u8::from(draining));
        writer.into_bytes()
    }

    /// Encodes the answer to a forwarded drain or undrain.
    pub fn encode_drain_reply(call_id: u64, applied: bool) -> Vec<u8> {
        let mut writer = Writer::new();
        writer.u8(KIND_DRAIN_REPLY);
        writer.u64(call_id);
        writer.u8(u8::from(applied));
        writer.into_bytes()
    }

    /// Decodes a frame body. Never panics, whatever the input.
    pub fn decode(body: &[u8]) -> Result<PeerMessage<'_>, MessageError> {
        let (&kind, rest) = body.split_first().ok_or(MessageError::Empty)?;
        if kind == KIND_RAFT {
            return Ok(PeerMessage::Raft(rest));
        }
        let mut reader = Reader::new(rest);
        let message = match kind {
            KIND_REQUEST => PeerMessage::Request {
                call_id: reader.u64("call id")?,
                op: read_op(&mut reader)?,
            },
            KIND_REPLY => {
                let call_id = reader.u64("call id")?;
                let outcome = match reader.u8("outcome")? {
                    OUTCOME_OK => RoutedOutcome::Ok(read_reply(&mut reader)?),
                    OUTCOME_NOT_LEADER => {
                        let hint = reader.u64("leader hint")?;
                        RoutedOutcome::NotLeader {
                            leader_hint: (hint != NO_NODE).then_some(hint),
                        }
                    }
                    OUTCOME_ERROR => RoutedOutcome::Failed(read_error(&mut reader)?),
                    tag => {
                        return Err(MessageError::UnknownTag {
                            field: "outcome",
                            tag,
                        })
                    }
                };
                PeerMessage::Reply { call_id, outcome }
            }
            KIND_NOTIFICATION => PeerMessage::Notification {
                session_id: reader.string("session id")?,
                notification: Notification {
                    seq: reader.u64("seq")?,
                    last_seq: reader.u64("last seq")?,
                },
            },
            KIND_NODE_STATUS => {
                let drain = DrainMark::from_byte(reader.u8("drain mark")?)?;
                let raft_ready = read_flag(&mut reader, "raft ready")?;
                let led_groups = reader.u32("led groups")?;
                let count = reader.count("draining nodes", 8)?;
                if count > STATUS_NODES_MAX {
                    return Err(MessageError::Field(FieldDecodeError::Truncated {
                        field: "draining nodes",
                    }));
                }
                let mut draining_nodes = Vec::with_capacity(count);
                for _ in 0..count {
                    draining_nodes.push(reader.u64("draining node")?);
                }
                PeerMessage::NodeStatus(NodeStatusReport {
                    drain,
                    raft_ready,
                    led_groups,
                    draining_nodes,
                })
            }
            KIND_DRAIN_REQUEST => PeerMessage::DrainRequest {
                call_id: reader.u64("call id")?,
                draining: read_flag(&mut reader, "draining")?,
            },
            KIND_DRAIN_REPLY => PeerMessage::DrainReply {
                call_id: reader.u64("call id")?,
                applied: read_flag(&mut reader, "applied")?,
            },
            tag => return Err(MessageError::UnknownTag { field: "kind", tag }),
        };
        match reader.remaining() {
            0 => Ok(message),
            trailing => Err(MessageError::Trailing(trailing)),
        }
    }
}

/// A byte that must be 0 or 1.
fn read_flag(reader: &mut Reader<'_>, field: &'static str) -> Result<bool, MessageError> {
    match reader.u8(field)? {
        0 => Ok(false),
        1 => Ok(true),
        tag => Err(MessageError::UnknownTag { field, tag }),
    }
}

fn write_op(writer: &mut Writer, op: &RoutedOp) {
    match op {
        RoutedOp::Create(request) => {
            writer.u8(OP_CREATE);
            let command = Command::CreateSession {
                session: request.clone(),
                stamp_us: 0,
            };
            writer.bytes(&command.encode());
        }
        RoutedOp::Append(request) => {
            writer.u8(OP_APPEND);
            let command = Command::AppendEvents {
                session_id: request.session_id.clone(),
                events: request.events.clone(),
                expected_seq: request.expected_seq,
                stamp_us: 0,
            };
            writer.bytes(&command.encode());
        }
        RoutedOp::Get { session_id } => {
            writer.u8(OP_GET);
            writer.string(session_id);
        }
        RoutedOp::Read {
            session_id,
            cursor,
            limit,
        } => {
            writer.u8(OP_READ);
            writer.string(session_id);
            writer.u64(*cursor);
            writer.u32(*limit);
        }
        RoutedOp::ListGroup { group_id, query } => {
            writer.u8(OP_LIST_GROUP);
            writer.u32(*group_id);
            writer.u32(query.limit);
            writer.optional_string(query.cursor.as_deref());
            writer.u32(crate::state::codec::length_u32(
                query.metadata_filters.len(),
            ));
            for (key, value) in &query.metadata_filters {
                writer.string(key);
                writer.string(value);
            }
            writer.optional_string(query.creator_id.as_deref());
            writer.optional_string(query.creator_tenant_id.as_deref());
        }
        RoutedOp::AckArchived { session_id, upto } => {
            writer.u8(OP_ACK_ARCHIVED);
            writer.string(session_id);
            writer.u64(*upto);
        }
    }
}

fn read_op(reader: &mut Reader<'_>) -> Result<RoutedOp, MessageError> {
    Ok(match reader.u8("operation")? {
        OP_CREATE => match Command::decode(reader.bytes("command")?)? {
            Command::CreateSession { session, .. } => RoutedOp::Create(session),
            _ => {
                return Err(MessageError::UnknownTag {
                    field: "command of a create",
                    tag: 0,
                })
            }
        },
        OP_APPEND => match Command::decode(reader.bytes("command")?)? {
            Command::AppendEvents {
                session_id,
                events,
                expected_seq,
                ..
            } => RoutedOp::Append(AppendRequest {
                session_id,
                events,
                expected_seq,
            }),
            _ => {
                return Err(MessageError::UnknownTag {
                    field: "command of an append",
                    tag: 0,
                })
            }
        },
        OP_GET => RoutedOp::Get {
            session_id: reader.string("session id")?,
        },
        OP_READ => RoutedOp::Read {
            session_id: reader.string("session id")?,
            cursor: reader.u64("cursor")?,
            limit: reader.u32("limit")?,
        },
        OP_LIST_GROUP => {
            let group_id = reader.u32("group id")?;
            let limit = reader.u32("limit")?;
            let cursor = reader.optional_string("cursor")?;
            let filters = reader.count("metadata filters", 8)?;
            let mut metadata_filters = Vec::with_capacity(filters);
            for _ in 0..filters {
                metadata_filters
                    .push((reader.string("filter key")?, reader.string("filter value")?));
            }
            RoutedOp::ListGroup {
                group_id,
                query: ListQuery {
                    limit,
                    cursor,
                    metadata_filters,
                    creator_id: reader.optional_string("creator id")?,
                    creator_tenant_id: reader.optional_string("creator tenant id")?,
                },
            }
        }
        OP_ACK_ARCHIVED => RoutedOp::AckArchived {
            session_id: reader.string("session id")?,
            upto: reader.u64("upto")?,
        },
        tag => {
            return Err(MessageError::UnknownTag {
                field: "operation",
                tag,
            })
        }
    })
}

fn write_record(writer: &mut Writer, record: &SessionRecord) {
    writer.string(&record.id);
    writer.optional_string(record.title.as_deref());
    write_optional_principal(writer, record.creator_principal.as_ref());
    writer.json_object(&record.metadata);
    writer.u64(record.last_seq);
    writer.u64(record.archived_seq);
    writer.i64(record.created_at_us);
}

fn read_record(reader: &mut Reader<'_>) -> Result<SessionRecord, MessageError> {
    Ok(SessionRecord {
        id: reader.string("session id")?,
        title: reader.optional_string("title")?,
        creator_principal: read_optional_principal(reader)?,
        metadata: reader.json_object("metadata")?,
        last_seq: reader.u64("last seq")?,
        archived_seq: reader.u64("archived seq")?,
        created_at_us: reader.i64("created at")?,
    })
}

fn write_reply(writer: &mut Writer, reply: &RoutedReply) {
    match reply {
        RoutedReply::Session(record) => {
            writer.u8(REPLY_SESSION);
            write_record(writer, record);
        }
        RoutedReply::Appended(appended) => {
            writer.u8(REPLY_APPENDED);
            writer.u32(crate::state::codec::length_u32(appended.results.len()));
            for result in &appended.results {
                writer.u64(result.seq);
                writer.u64(result.last_seq);
                writer.u8(u8::from(result.deduped));
            }
            writer.u64(appended.last_seq);
        }
        RoutedReply::Events(batch) => {
            writer.u8(REPLY_EVENTS);
            writer.u64(batch.first_seq);
            writer.u32(crate::state::codec::length_u32(batch.events.len()));
            for event in &batch.events {
                writer.bytes(event);
            }
            writer.u64(batch.last_seq);
        }
        RoutedReply::Sessions(records) => {
            writer.u8(REPLY_SESSIONS);
            writer.u32(crate::state::codec::length_u32(records.len()));
            for record in records {
                write_record(writer, record);
            }
        }
        RoutedReply::Acked(archived_seq) => {
            writer.u8(REPLY_ACKED);
            writer.u64(*archived_seq);
        }
    }
}

fn read_reply(reader: &mut Reader<'_>) -> Result<RoutedReply, MessageError> {
    Ok(match reader.u8("reply")? {
        REPLY_SESSION => RoutedReply::Session(read_record(reader)?),
        REPLY_APPENDED => {
            let count = reader.count("results", 17)?;
            let mut results = Vec::with_capacity(count);
            for _ in 0..count {
                results.push(AppendResult {
                    seq: reader.u64("seq")?,
                    last_seq: reader.u64("last seq")?,
                    deduped: reader.u8("deduped")? != 0,
                });
            }
            RoutedReply::Appended(AppendReply {
                results,
                last_seq: reader.u64("last seq")?,
            })
        }
        REPLY_EVENTS => {
            let first_seq = reader.u64("first seq")?;
            let count = reader.count("events", 4)?;
            let mut events = Vec::with_capacity(count);
            for _ in 0..count {
                events.push(Bytes::copy_from_slice(reader.bytes("event")?));
            }
            RoutedReply::Events(EventBatch {
                first_seq,
                events,
                last_seq: reader.u64("last seq")?,
            })
        }
        REPLY_SESSIONS => {
            let count = reader.count("sessions", 4)?;
            let mut records = Vec::with_capacity(count);
            for _ in 0..count {
                records.push(read_record(reader)?);
            }
            RoutedReply::Sessions(records)
        }
        REPLY_ACKED => RoutedReply::Acked(reader.u64("archived seq")?),
        tag => {
            return Err(MessageError::UnknownTag {
                field: "reply",
                tag,
            })
        }
    })
}

const ERROR_SESSION_NOT_FOUND: u8 = 1;
const ERROR_SESSION_EXISTS: u8 = 2;
const ERROR_EXPECTED_SEQ_CONFLICT: u8 = 3;
const ERROR_PRODUCER_SEQ_CONFLICT: u8 = 4;
const ERROR_PRODUCER_REPLAY_CONFLICT: u8 = 5;
const ERROR_BACKPRESSURE: u8 = 6;
const ERROR_RAFT_TIMEOUT: u8 = 7;
const ERROR_RAFT_UNAVAILABLE: u8 = 8;
const ERROR_ARCHIVE_READ_UNAVAILABLE: u8 = 9;
const ERROR_EVENT_GAP_DETECTED: u8 = 10;
const ERROR_INTERNAL: u8 = 11;

fn write_error(writer: &mut Writer, error: &ServiceError) {
    match error {
        ServiceError::SessionNotFound => writer.u8(ERROR_SESSION_NOT_FOUND),
        ServiceError::SessionExists => writer.u8(ERROR_SESSION_EXISTS),
        ServiceError::ExpectedSeqConflict { expected, current } => {
            writer.u8(ERROR_EXPECTED_SEQ_CONFLICT);
            writer.u64(*expected);
            writer.u64(*current);
        }
        ServiceError::ProducerSeqConflict {
            producer_id,
            expected,
            got,
        } => {
            writer.u8(ERROR_PRODUCER_SEQ_CONFLICT);
            writer.string(producer_id);
            writer.u64(*expected);
            writer.u64(*got);
        }
        ServiceError::ProducerReplayConflict => writer.u8(ERROR_PRODUCER_REPLAY_CONFLICT),
        ServiceError::Backpressure { retry_after_s } => {
            writer.u8(ERROR_BACKPRESSURE);
            writer.u64(*retry_after_s);
        }
        ServiceError::RaftTimeout => writer.u8(ERROR_RAFT_TIMEOUT),
        ServiceError::RaftUnavailable => writer.u8(ERROR_RAFT_UNAVAILABLE),
        ServiceError::ArchiveReadUnavailable => writer.u8(ERROR_ARCHIVE_READ_UNAVAILABLE),
        ServiceError::EventGapDetected => writer.u8(ERROR_EVENT_GAP_DETECTED),
        ServiceError::Internal(reason) => {
            writer.u8(ERROR_INTERNAL);
            writer.string(reason);
        }
    }
}

fn read_error(reader: &mut Reader<'_>) -> Result<ServiceError, MessageError> {
    Ok(match reader.u8("error")? {
        ERROR_SESSION_NOT_FOUND => ServiceError::SessionNotFound,
        ERROR_SESSION_EXISTS => ServiceError::SessionExists,
        ERROR_EXPECTED_SEQ_CONFLICT => ServiceError::ExpectedSeqConflict {
            expected: reader.u64("expected")?,
            current: reader.u64("current")?,
        },
        ERROR_PRODUCER_SEQ_CONFLICT => ServiceError::ProducerSeqConflict {
            producer_id: reader.string("producer id")?,
            expected: reader.u64("expected")?,
            got: reader.u64("got")?,
        },
        ERROR_PRODUCER_REPLAY_CONFLICT => ServiceError::ProducerReplayConflict,
        ERROR_BACKPRESSURE => ServiceError::Backpressure {
            retry_after_s: reader.u64("retry after")?,
        },
        ERROR_RAFT_TIMEOUT => ServiceError::RaftTimeout,
        ERROR_RAFT_UNAVAILABLE => ServiceError::RaftUnavailable,
        ERROR_ARCHIVE_READ_UNAVAILABLE => ServiceError::ArchiveReadUnavailable,
        ERROR_EVENT_GAP_DETECTED => ServiceError::EventGapDetected,
        ERROR_INTERNAL => ServiceError::Internal(reader.string("reason")?),
        tag => {
            return Err(MessageError::UnknownTag {
                field: "error",
                tag,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map, Value};

    use super::*;
    use crate::api::NewEvent;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn round_trip_request(op: RoutedOp) {
        let body = PeerMessage::encode_request(7, &op);
        match PeerMessage::decode(&body).expect("decodes") {
            PeerMessage::Request { call_id, op: back } => {
                assert_eq!(call_id, 7);
                assert_eq!(back, op);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn round_trip_reply(outcome: RoutedOutcome) {
        let body = PeerMessage::encode_reply(9, &outcome);
        match PeerMessage::decode(&body).expect("decodes") {
            PeerMessage::Reply {
                call_id,
                outcome: back,
            } => {
                assert_eq!(call_id, 9);
                assert_eq!(back, outcome);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn record() -> SessionRecord {
        SessionRecord {
            id: "ses-1".into(),
            title: Some("t".into()),
            creator_principal: None,
            metadata: object(json!({"tenant_id": "acme"})),
            last_seq: 4,
            archived_seq: 2,
            created_at_us: 17,
        }
    }

    #[test]
    fn requests_round_trip() {
        round_trip_request(RoutedOp::Create(CreateSession {
            id: "ses-1".into(),
            title: None,
            creator_principal: None,
            metadata: object(json!({"a": 1})),
        }));
        round_trip_request(RoutedOp::Append(AppendRequest {
            session_id: "ses-1".into(),
            events: vec![NewEvent {
                event_type: "content".into(),
                payload: object(json!({"text": "hi"})),
                actor: "agent:x".into(),
                source: None,
                metadata: Map::new(),
                refs: Map::new(),
                idempotency_key: Some("k".into()),
                producer_id: "p".into(),
                producer_seq: 3,
            }],
            expected_seq: Some(2),
        }));
        round_trip_request(RoutedOp::Get {
            session_id: "s".into(),
        });
        round_trip_request(RoutedOp::Read {
            session_id: "s".into(),
            cursor: 5,
            limit: 100,
        });
        round_trip_request(RoutedOp::ListGroup {
            group_id: 3,
            query: ListQuery {
                limit: 10,
                cursor: Some("a".into()),
                metadata_filters: vec![("k".into(), "v".into())],
                creator_id: None,
                creator_tenant_id: Some("acme".into()),
            },
        });
        round_trip_request(RoutedOp::AckArchived {
            session_id: "s".into(),
            upto: 12,
        });
    }

    #[test]
    fn replies_round_trip() {
        round_trip_reply(RoutedOutcome::Ok(RoutedReply::Session(record())));
        round_trip_reply(RoutedOutcome::Ok(RoutedReply::Appended(AppendReply {
            results: vec![AppendResult {
                seq: 3,
                last_seq: 3,
                deduped: true,
            }],
            last_seq: 3,
        })));
        round_trip_reply(RoutedOutcome::Ok(RoutedReply::Events(EventBatch {
            first_seq: 1,
            events: vec![Bytes::from_static(b"{\"seq\":1}")],
            last_seq: 1,
        })));
        round_trip_reply(RoutedOutcome::Ok(RoutedReply::Sessions(vec![record()])));
        round_trip_reply(RoutedOutcome::Ok(RoutedReply::Acked(8)));
        round_trip_reply(RoutedOutcome::NotLeader {
            leader_hint: Some(2),
        });
        round_trip_reply(RoutedOutcome::NotLeader { leader_hint: None });
        for error in [
            ServiceError::SessionNotFound,
            ServiceError::ProducerSeqConflict {
                producer_id: "p".into(),
                expected: 2,
                got: 4,
            },
            ServiceError::Backpressure { retry_after_s: 5 },
            ServiceError::RaftTimeout,
            ServiceError::Internal("x".into()),
        ] {
            round_trip_reply(RoutedOutcome::Failed(error));
        }
    }

    #[test]
    fn notifications_and_raft_batches_round_trip() {
        let body = PeerMessage::encode_notification(
            "s",
            Notification {
                seq: 4,
                last_seq: 6,
            },
        );
        assert!(matches!(
            PeerMessage::decode(&body),
            Ok(PeerMessage::Notification { session_id, notification })
                if session_id == "s" && notification.seq == 4 && notification.last_seq == 6
        ));
        let body = PeerMessage::encode_raft(b"abc");
        assert!(matches!(
            PeerMessage::decode(&body),
            Ok(PeerMessage::Raft(b"abc"))
        ));
    }

    #[test]
    fn control_messages_round_trip() {
        let report = NodeStatusReport {
            drain: DrainMark::Operator,
            raft_ready: true,
            led_groups: 85,
            draining_nodes: vec![1, 3],
        };
        let body = PeerMessage::encode_node_status(&report);
        assert_eq!(
            body,
            [5, 1, 1, 85, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]
        );
        match PeerMessage::decode(&body).expect("decodes") {
            PeerMessage::NodeStatus(back) => assert_eq!(back, report),
            other => panic!("unexpected {other:?}"),
        }
        for drain in [DrainMark::None, DrainMark::Shutdown] {
            let report = NodeStatusReport {
                drain,
                raft_ready: false,
                led_groups: 0,
                draining_nodes: Vec::new(),
            };
            let body = PeerMessage::encode_node_status(&report);
            assert!(matches!(
                PeerMessage::decode(&body),
                Ok(PeerMessage::NodeStatus(back)) if back == report
            ));
        }
        let body = PeerMessage::encode_drain_request(11, true);
        assert!(matches!(
            PeerMessage::decode(&body),
            Ok(PeerMessage::DrainRequest {
                call_id: 11,
                draining: true
            })
        ));
        let body = PeerMessage::encode_drain_reply(11, false);
        assert!(matches!(
            PeerMessage::decode(&body),
            Ok(PeerMessage::DrainReply {
                call_id: 11,
                applied: false
            })
        ));
        // A bad drain mark or flag is refused.
        assert!(PeerMessage::decode(&[5, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(PeerMessage::decode(&[6, 1, 0, 0, 0, 0, 0, 0, 0, 2]).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        assert!(PeerMessage::decode(&[]).is_err());
        assert!(PeerMessage::decode(&[99]).is_err());
        let body = PeerMessage::encode_reply(1, &RoutedOutcome::Ok(RoutedReply::Session(record())));
        for cut in 1..body.len() {
            assert!(PeerMessage::decode(&body[..cut]).is_err());
        }
    }
}
