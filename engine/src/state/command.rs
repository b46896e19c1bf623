//! The replicated commands of a group and their binary encoding (docs/format.md).
//!
//! A command is built and stamped by the leader, encoded into a Raft log entry, and decoded and
//! applied by every replica. The encoding is explicit (fixed-width little-endian integers,
//! length-prefixed UTF-8 strings, JSON objects as length-prefixed compact JSON text) so that it
//! does not depend on any serialization library's conventions.

use super::codec::{FieldDecodeError, Reader, Writer};
use crate::api::{CreateSession, NewEvent, Principal, PrincipalType};

/// Version byte that starts every encoded command.
pub const COMMAND_FORMAT_VERSION: u8 = 1;

const KIND_CREATE_SESSION: u8 = 1;
const KIND_APPEND_EVENTS: u8 = 2;
const KIND_ACK_ARCHIVED: u8 = 3;

const PRINCIPAL_TYPE_USER: u8 = 1;
const PRINCIPAL_TYPE_AGENT: u8 = 2;

/// Fewest bytes one encoded event can occupy: six length prefixes (type, payload, actor,
/// metadata, refs, producer id), two option tags and the producer seq. Used to refuse event
/// counts the input cannot hold before allocating.
const EVENT_ENCODED_BYTES_MIN: usize = 6 * 4 + 2 + 8;

/// A command of a group's replicated log.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Create a session (`create_session`); `stamp_us` becomes `created_at`.
    CreateSession {
        /// The validated session.
        session: CreateSession,
        /// Leader wall-clock time, microseconds since the Unix epoch.
        stamp_us: i64,
    },
    /// Append one event or a batch (`append_event` / `append_events`).
    AppendEvents {
        /// Target session.
        session_id: String,
        /// 1..=1000 events in request order.
        events: Vec<NewEvent>,
        /// Optimistic concurrency check against the pre-append `last_seq`.
        expected_seq: Option<u64>,
        /// Leader wall-clock time, microseconds since the Unix epoch; shared by the batch.
        stamp_us: i64,
    },
    /// The archive confirmed seqs `1..=upto` (`ack_archived`).
    AckArchived {
        /// Archived session.
        session_id: String,
        /// Highest contiguous seq the archive stored.
        upto: u64,
    },
}

/// Why bytes could not be decoded into a [`Command`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandDecodeError {
    /// The version byte is not [`COMMAND_FORMAT_VERSION`] (or the input is empty).
    #[error("unsupported command format version {0:?}")]
    UnsupportedVersion(Option<u8>),
    /// The kind byte is unknown.
    #[error("unknown command kind {0}")]
    UnknownKind(u8),
    /// A field could not be read.
    #[error("read command: {0}")]
    Field(#[from] FieldDecodeError),
    /// Bytes remain after the command.
    #[error("{0} unexpected bytes after the command")]
    TrailingBytes(usize),
}

impl Command {
    /// The metric label of this command: `create_session`, `append_event` (one event),
    /// `append_events` (a batch) or `ack_archived`.
    pub fn kind_label(&self) -> &'static str {
        match self {
            Command::CreateSession { .. } => "create_session",
            Command::AppendEvents { events, .. } if events.len() == 1 => "append_event",
            Command::AppendEvents { .. } => "append_events",
            Command::AckArchived { .. } => "ack_archived",
        }
    }

    /// The session this command concerns.
    pub fn session_id(&self) -> &str {
        match self {
            Command::CreateSession { session, .. } => &session.id,
            Command::AppendEvents { session_id, .. } | Command::AckArchived { session_id, .. } => {
                session_id
            }
        }
    }

    /// Encode as described in docs/format.md.
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        writer.u8(COMMAND_FORMAT_VERSION);
        match self {
            Command::CreateSession { session, stamp_us } => {
                writer.u8(KIND_CREATE_SESSION);
                writer.string(&session.id);
                writer.optional_string(session.title.as_deref());
                write_optional_principal(&mut writer, session.creator_principal.as_ref());
                writer.json_object(&session.metadata);
                writer.i64(*stamp_us);
            }
            Command::AppendEvents {
                session_id,
                events,
                expected_seq,
                stamp_us,
            } => {
                writer.u8(KIND_APPEND_EVENTS);
                writer.string(session_id);
                writer.optional_u64(*expected_seq);
                writer.i64(*stamp_us);
                writer.u32(super::codec::length_u32(events.len()));
                for event in events {
                    write_event(&mut writer, event);
                }
            }
            Command::AckArchived { session_id, upto } => {
                writer.u8(KIND_ACK_ARCHIVED);
                writer.string(session_id);
                writer.u64(*upto);
            }
        }
        writer.into_bytes()
    }

    /// Decode bytes written by [`Command::encode`]. Never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Command, CommandDecodeError> {
        let mut reader = Reader::new(bytes);
        let version = reader.u8("version").ok();
        if version != Some(COMMAND_FORMAT_VERSION) {
            return Err(CommandDecodeError::UnsupportedVersion(version));
        }
        let command = match reader.u8("kind")? {
            KIND_CREATE_SESSION => Command::CreateSession {
                session: CreateSession {
                    id: reader.string("session id")?,
                    title: reader.optional_string("title")?,
                    creator_principal: read_optional_principal(&mut reader)?,
                    metadata: reader.json_object("metadata")?,
                },
                stamp_us: reader.i64("stamp")?,
            },
            KIND_APPEND_EVENTS => {
                let session_id = reader.string("session id")?;
                let expected_seq = reader.optional_u64("expected seq")?;
                let stamp_us = reader.i64("stamp")?;
                let count = reader.count("event count", EVENT_ENCODED_BYTES_MIN)?;
                let mut events = Vec::with_capacity(count);
                for _ in 0..count {
                    events.push(read_event(&mut reader)?);
                }
                Command::AppendEvents {
                    session_id,
                    events,
                    expected_seq,
                    stamp_us,
                }
            }
            KIND_ACK_ARCHIVED => Command::AckArchived {
                session_id: reader.string("session id")?,
                upto: reader.u64("upto")?,
            },
            kind => return Err(CommandDecodeError::UnknownKind(kind)),
        };
        match reader.remaining() {
            0 => Ok(command),
            extra => Err(CommandDecodeError::TrailingBytes(extra)),
        }
    }
}

fn write_event(writer: &mut Writer, event: &NewEvent) {
    writer.string(&event.event_type);
    writer.json_object(&event.payload);
    writer.string(&event.actor);
    writer.optional_string(event.source.as_deref());
    writer.json_object(&event.metadata);
    writer.json_object(&event.refs);
    writer.optional_string(event.idempotency_key.as_deref());
    writer.string(&event.producer_id);
    writer.u64(event.producer_seq);
}

fn read_event(reader: &mut Reader<'_>) -> Result<NewEvent, FieldDecodeError> {
    Ok(NewEvent {
        event_type: reader.string("event type")?,
        payload: reader.json_object("payload")?,
        actor: reader.string("actor")?,
        source: reader.optional_string("source")?,
        metadata: reader.json_object("event metadata")?,
        refs: reader.json_object("refs")?,
        idempotency_key: reader.optional_string("idempotency key")?,
        producer_id: reader.string("producer id")?,
        producer_seq: reader.u64("producer seq")?,
    })
}

/// Tag `0` for none; tag `1`, tenant id, id and a type byte (`1` user, `2` agent) otherwise.
/// Shared with the snapshot encoding.
pub(crate) fn write_optional_principal(writer: &mut Writer, principal: Option<&Principal>) {
    match principal {
        None => writer.u8(0),
        Some(principal) => {
            writer.u8(1);
            writer.string(&principal.tenant_id);
            writer.string(&principal.id);
            writer.u8(match principal.principal_type {
                PrincipalType::User => PRINCIPAL_TYPE_USER,
                PrincipalType::Agent => PRINCIPAL_TYPE_AGENT,
            });
        }
    }
}

/// Inverse of [`write_optional_principal`].
pub(crate) fn read_optional_principal(
    reader: &mut Reader<'_>,
) -> Result<Option<Principal>, FieldDecodeError> {
    match reader.u8("creator principal")? {
        0 => Ok(None),
        1 => {
            let tenant_id = reader.string("creator tenant id")?;
            let id = reader.string("creator id")?;
            let principal_type = match reader.u8("creator type")? {
                PRINCIPAL_TYPE_USER => PrincipalType::User,
                PRINCIPAL_TYPE_AGENT => PrincipalType::Agent,
                tag => {
                    return Err(FieldDecodeError::UnknownTag {
                        field: "creator type",
                        tag,
                    })
                }
            };
            Ok(Some(Principal {
                tenant_id,
                id,
                principal_type,
            }))
        }
        tag => Err(FieldDecodeError::UnknownTag {
            field: "creator principal",
            tag,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    fn object(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).expect("test object parses")
    }

    fn event(producer_seq: u64) -> NewEvent {
        NewEvent {
            event_type: "content".to_owned(),
            payload: object(r#"{"big":123456789012345678901234567890,"f":1.0,"e":1E+3,"s":"é\n"}"#),
            actor: "user:u1".to_owned(),
            source: Some("agent".to_owned()),
            metadata: object(r#"{"starcite_principal":{"tenant_id":"acme"}}"#),
            refs: object(r#"{"to_seq":"3","step":null}"#),
            idempotency_key: None,
            producer_id: "p".to_owned(),
            producer_seq,
        }
    }

    fn samples() -> Vec<Command> {
        vec![
            Command::CreateSession {
                session: CreateSession {
                    id: "ses_demo".to_owned(),
                    title: Some(String::new()),
                    creator_principal: Some(Principal {
                        tenant_id: "acme".to_owned(),
                        id: "u1".to_owned(),
                        principal_type: PrincipalType::Agent,
                    }),
                    metadata: object(r#"{"tenant_id":"acme","n":-0}"#),
                },
                stamp_us: -5,
            },
            Command::CreateSession {
                session: CreateSession {
                    id: "s".to_owned(),
                    title: None,
                    creator_principal: None,
                    metadata: Map::new(),
                },
                stamp_us: i64::MAX,
            },
            Command::AppendEvents {
                session_id: "s1".to_owned(),
                events: vec![event(1)],
                expected_seq: Some(0),
                stamp_us: 1_767_607_872_123_456,
            },
            Command::AppendEvents {
                session_id: "s1".to_owned(),
                events: vec![event(2), event(u64::MAX)],
                expected_seq: None,
                stamp_us: 0,
            },
            Command::AckArchived {
                session_id: "s1".to_owned(),
                upto: u64::MAX,
            },
        ]
    }

    #[test]
    fn round_trip_keeps_every_field_and_number_text() {
        for command in samples() {
            let bytes = command.encode();
            let decoded = Command::decode(&bytes).expect("decodes");
            assert_eq!(decoded, command);
            assert_eq!(decoded.encode(), bytes, "re-encoding is byte-identical");
        }
        let Command::AppendEvents { events, .. } =
            Command::decode(&samples()[2].encode()).expect("decodes")
        else {
            panic!("kind changed");
        };
        assert_eq!(events[0].payload["f"].to_string(), "1.0");
        // serde_json stores the exponent marker normalised (`1E+3` → `1e+3`); the value is exact.
        assert_eq!(events[0].payload["e"].to_string(), "1e+3");
        assert_eq!(
            events[0].payload["big"].to_string(),
            "123456789012345678901234567890"
        );
    }

    #[test]
    fn kind_labels() {
        let labels: Vec<_> = samples().iter().map(Command::kind_label).collect();
        assert_eq!(
            labels,
            [
                "create_session",
                "create_session",
                "append_event",
                "append_events",
                "ack_archived"
            ]
        );
    }

    #[test]
    fn ack_archived_layout_is_exact() {
        let bytes = Command::AckArchived {
            session_id: "ab".to_owned(),
            upto: 258,
        }
        .encode();
        assert_eq!(
            bytes,
            [1, 3, 2, 0, 0, 0, b'a', b'b', 2, 1, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert_eq!(
            Command::decode(&[]),
            Err(CommandDecodeError::UnsupportedVersion(None))
        );
        assert_eq!(
            Command::decode(&[2, 3]),
            Err(CommandDecodeError::UnsupportedVersion(Some(2)))
        );
        assert_eq!(
            Command::decode(&[1, 9]),
            Err(CommandDecodeError::UnknownKind(9))
        );
        let mut bytes = samples()[4].encode();
        bytes.push(0);
        assert_eq!(
            Command::decode(&bytes),
            Err(CommandDecodeError::TrailingBytes(1))
        );
        for command in samples() {
            let bytes = command.encode();
            for length in 0..bytes.len() {
                assert!(
                    Command::decode(&bytes[..length]).is_err(),
                    "prefix of {length} bytes"
                );
            }
        }
        // An event count far beyond the input is refused without allocating.
        let huge = [
            1, 2, 1, 0, 0, 0, b's', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(matches!(
            Command::decode(&huge),
            Err(CommandDecodeError::Field(_))
        ));
        // A JSON field that is not an object is refused.
        let mut bytes = vec![1, 1, 1, 0, 0, 0, b's', 0, 0, 2, 0, 0, 0];
        bytes.extend_from_slice(b"[]");
        bytes.extend_from_slice(&[0; 8]);
        assert!(matches!(
            Command::decode(&bytes),
            Err(CommandDecodeError::Field(_))
        ));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Command::decode(&bytes);
        }

        #[test]
        fn decode_of_mutated_commands_never_panics(
            index in 0_usize..5,
            position in any::<prop::sample::Index>(),
            value in any::<u8>(),
        ) {
            let mut bytes = samples()[index].encode();
            let position = position.index(bytes.len());
            bytes[position] = value;
            if let Ok(command) = Command::decode(&bytes) {
                prop_assert_eq!(Command::decode(&command.encode()), Ok(command));
            }
        }
    }
}
