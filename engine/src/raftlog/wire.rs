//! The wire encoding of a multi-Raft [`Envelope`]: everything one node sends another in one
//! go. Little endian, explicit widths, versioned; layout in docs/format.md, "Raft messages".
//! Decoding treats the bytes as untrusted and never panics.

use starcite_raft::multi::{CoalescedHeartbeat, CoalescedHeartbeatResponse, Envelope, GroupId};
use starcite_raft::{Entry, EntryKind, Message, MessageBody, NodeId, RejectHint, SnapshotMeta};

/// Version byte that starts every encoded envelope.
pub const ENVELOPE_FORMAT_VERSION: u8 = 1;
/// Largest voter list accepted in a snapshot chunk.
const VOTERS_MAX: u32 = 1024;

/// Why an envelope could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The version byte is not [`ENVELOPE_FORMAT_VERSION`].
    #[error("unsupported raft envelope version {0}")]
    UnsupportedVersion(u8),
    /// The bytes end inside a field.
    #[error("raft envelope truncated at byte {0}")]
    Truncated(usize),
    /// A field holds a value the format does not allow.
    #[error("invalid raft envelope: {0}")]
    Invalid(&'static str),
}

const BODY_REQUEST_VOTE: u8 = 1;
const BODY_REQUEST_VOTE_RESPONSE: u8 = 2;
const BODY_PRE_VOTE: u8 = 3;
const BODY_PRE_VOTE_RESPONSE: u8 = 4;
const BODY_APPEND: u8 = 5;
const BODY_APPEND_RESPONSE: u8 = 6;
const BODY_HEARTBEAT: u8 = 7;
const BODY_HEARTBEAT_RESPONSE: u8 = 8;
const BODY_TIMEOUT_NOW: u8 = 9;
const BODY_INSTALL_SNAPSHOT: u8 = 10;
const BODY_INSTALL_SNAPSHOT_RESPONSE: u8 = 11;
const BODY_READ_INDEX_REQUEST: u8 = 12;
const BODY_READ_INDEX_RESPONSE: u8 = 13;

const ENTRY_NORMAL: u8 = 1;
const ENTRY_NOOP: u8 = 2;

struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn u8(&mut self, value: u8) {
        self.out.push(value);
    }
    fn bool(&mut self, value: bool) {
        self.out.push(u8::from(value));
    }
    fn u32(&mut self, value: u32) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }
    fn count(&mut self, count: usize) {
        debug_assert!(count <= u32::MAX as usize);
        self.u32(count as u32);
    }
    fn bytes(&mut self, bytes: &[u8]) {
        self.count(bytes.len());
        self.out.extend_from_slice(bytes);
    }
    fn optional_u64(&mut self, value: Option<u64>) {
        match value {
            None => self.u8(0),
            Some(value) => {
                self.u8(1);
                self.u64(value);
            }
        }
    }
}

/// Encodes `envelope`. Every message must travel from `envelope.from` to `envelope.to`.
pub fn encode_envelope(envelope: &Envelope) -> Vec<u8> {
    let mut writer = Writer { out: Vec::new() };
    writer.u8(ENVELOPE_FORMAT_VERSION);
    writer.u64(envelope.from);
    writer.u64(envelope.to);
    writer.count(envelope.messages.len());
    for (group, message) in &envelope.messages {
        debug_assert_eq!((message.from, message.to), (envelope.from, envelope.to));
        writer.u32(*group);
        writer.u64(message.term);
        write_body(&mut writer, &message.body);
    }
    writer.count(envelope.heartbeats.len());
    for heartbeat in &envelope.heartbeats {
        writer.u32(heartbeat.group);
        writer.u64(heartbeat.term);
        writer.u64(heartbeat.commit);
        writer.optional_u64(heartbeat.read_context);
    }
    writer.count(envelope.heartbeat_responses.len());
    for response in &envelope.heartbeat_responses {
        writer.u32(response.group);
        writer.u64(response.term);
        writer.optional_u64(response.read_context);
    }
    writer.out
}

fn write_body(writer: &mut Writer, body: &MessageBody) {
    match body {
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            force,
        } => {
            writer.u8(BODY_REQUEST_VOTE);
            writer.u64(*last_log_index);
            writer.u64(*last_log_term);
            writer.bool(*force);
        }
        MessageBody::RequestVoteResponse { granted } => {
            writer.u8(BODY_REQUEST_VOTE_RESPONSE);
            writer.bool(*granted);
        }
        MessageBody::PreVote {
            last_log_index,
            last_log_term,
        } => {
            writer.u8(BODY_PRE_VOTE);
            writer.u64(*last_log_index);
            writer.u64(*last_log_term);
        }
        MessageBody::PreVoteResponse { granted } => {
            writer.u8(BODY_PRE_VOTE_RESPONSE);
            writer.bool(*granted);
        }
        MessageBody::Append {
            prev_log_index,
            prev_log_term,
            entries,
            commit,
        } => {
            writer.u8(BODY_APPEND);
            writer.u64(*prev_log_index);
            writer.u64(*prev_log_term);
            writer.u64(*commit);
            writer.count(entries.len());
            for entry in entries {
                writer.u64(entry.term);
                writer.u64(entry.index);
                writer.u8(match entry.kind {
                    EntryKind::Normal => ENTRY_NORMAL,
                    EntryKind::Noop => ENTRY_NOOP,
                });
                writer.bytes(&entry.data);
            }
        }
        MessageBody::AppendResponse { index, reject } => {
            writer.u8(BODY_APPEND_RESPONSE);
            writer.u64(*index);
            match reject {
                None => writer.u8(0),
                Some(hint) => {
                    writer.u8(1);
                    writer.u64(hint.index);
                    writer.u64(hint.term);
                }
            }
        }
        MessageBody::Heartbeat {
            commit,
            read_context,
        } => {
            writer.u8(BODY_HEARTBEAT);
            writer.u64(*commit);
            writer.optional_u64(*read_context);
        }
        MessageBody::HeartbeatResponse { read_context } => {
            writer.u8(BODY_HEARTBEAT_RESPONSE);
            writer.optional_u64(*read_context);
        }
        MessageBody::TimeoutNow => writer.u8(BODY_TIMEOUT_NOW),
        MessageBody::InstallSnapshot {
            meta,
            offset,
            data,
            done,
        } => {
            writer.u8(BODY_INSTALL_SNAPSHOT);
            writer.u64(meta.index);
            writer.u64(meta.term);
            writer.count(meta.voters.len());
            for voter in &meta.voters {
                writer.u64(*voter);
            }
            writer.u64(*offset);
            writer.bool(*done);
            writer.bytes(data);
        }
        MessageBody::InstallSnapshotResponse {
            snapshot_index,
            next_offset,
            done,
        } => {
            writer.u8(BODY_INSTALL_SNAPSHOT_RESPONSE);
            writer.u64(*snapshot_index);
            writer.u64(*next_offset);
            writer.bool(*done);
        }
        MessageBody::ReadIndexRequest { ctx } => {
            writer.u8(BODY_READ_INDEX_REQUEST);
            writer.u64(*ctx);
        }
        MessageBody::ReadIndexResponse { ctx, index } => {
            writer.u8(BODY_READ_INDEX_RESPONSE);
            writer.u64(*ctx);
            writer.u64(*index);
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(count)
            .ok_or(WireError::Truncated(self.at))?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(WireError::Truncated(self.at))?;
        self.at = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Invalid("boolean other than 0 or 1")),
        }
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let mut word = [0u8; 4];
        word.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(word))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let mut word = [0u8; 8];
        word.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(word))
    }
    /// A count of items that each take at least `item_bytes_min` bytes; refusing counts the
    /// remaining bytes cannot hold keeps a hostile count from reserving memory.
    fn count(&mut self, item_bytes_min: usize) -> Result<usize, WireError> {
        let count = self.u32()? as usize;
        let remaining = self.bytes.len() - self.at;
        if count.saturating_mul(item_bytes_min) > remaining {
            return Err(WireError::Truncated(self.at));
        }
        Ok(count)
    }
    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let length = self.count(1)?;
        self.take(length)
    }
    fn optional_u64(&mut self) -> Result<Option<u64>, WireError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            _ => Err(WireError::Invalid("option tag other than 0 or 1")),
        }
    }
}

/// Decodes an envelope produced by [`encode_envelope`].
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope, WireError> {
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.u8()?;
    if version != ENVELOPE_FORMAT_VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    let from: NodeId = reader.u64()?;
    let to: NodeId = reader.u64()?;
    let message_count = reader.count(4 + 8 + 1)?;
    let mut messages: Vec<(GroupId, Message)> = Vec::with_capacity(message_count);
    for _ in 0..message_count {
        let group = reader.u32()?;
        let term = reader.u64()?;
        let body = read_body(&mut reader)?;
        messages.push((
            group,
            Message {
                from,
                to,
                term,
                body,
            },
        ));
    }
    let heartbeat_count = reader.count(4 + 8 + 8 + 1)?;
    let mut heartbeats = Vec::with_capacity(heartbeat_count);
    for _ in 0..heartbeat_count {
        heartbeats.push(CoalescedHeartbeat {
            group: reader.u32()?,
            term: reader.u64()?,
            commit: reader.u64()?,
            read_context: reader.optional_u64()?,
        });
    }
    let response_count = reader.count(4 + 8 + 1)?;
    let mut heartbeat_responses = Vec::with_capacity(response_count);
    for _ in 0..response_count {
        heartbeat_responses.push(CoalescedHeartbeatResponse {
            group: reader.u32()?,
            term: reader.u64()?,
            read_context: reader.optional_u64()?,
        });
    }
    if reader.at != bytes.len() {
        return Err(WireError::Invalid("bytes after the envelope"));
    }
    Ok(Envelope {
        from,
        to,
        messages,
        heartbeats,
        heartbeat_responses,
    })
}

fn read_body(reader: &mut Reader<'_>) -> Result<MessageBody, WireError> {
    let body = match reader.u8()? {
        BODY_REQUEST_VOTE => MessageBody::RequestVote {
            last_log_index: reader.u64()?,
            last_log_term: reader.u64()?,
            force: reader.bool()?,
        },
        BODY_REQUEST_VOTE_RESPONSE => MessageBody::RequestVoteResponse {
            granted: reader.bool()?,
        },
        BODY_PRE_VOTE => MessageBody::PreVote {
            last_log_index: reader.u64()?,
            last_log_term: reader.u64()?,
        },
        BODY_PRE_VOTE_RESPONSE => MessageBody::PreVoteResponse {
            granted: reader.bool()?,
        },
        BODY_APPEND => {
            let prev_log_index = reader.u64()?;
            let prev_log_term = reader.u64()?;
            let commit = reader.u64()?;
            let entry_count = reader.count(8 + 8 + 1 + 4)?;
            let mut entries = Vec::with_capacity(entry_count);
            for _ in 0..entry_count {
                let term = reader.u64()?;
                let index = reader.u64()?;
                let kind = reader.u8()?;
                let data = reader.bytes()?;
                let entry = match kind {
                    ENTRY_NORMAL => Entry::normal(term, index, data.to_vec()),
                    ENTRY_NOOP if data.is_empty() => Entry::noop(term, index),
                    ENTRY_NOOP => return Err(WireError::Invalid("no-op entry with data")),
                    _ => return Err(WireError::Invalid("unknown entry kind")),
                };
                entries.push(entry);
            }
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                commit,
            }
        }
        BODY_APPEND_RESPONSE => {
            let index = reader.u64()?;
            let reject = match reader.u8()? {
                0 => None,
                1 => Some(RejectHint {
                    index: reader.u64()?,
                    term: reader.u64()?,
                }),
                _ => return Err(WireError::Invalid("reject tag other than 0 or 1")),
            };
            MessageBody::AppendResponse { index, reject }
        }
        BODY_HEARTBEAT => MessageBody::Heartbeat {
            commit: reader.u64()?,
            read_context: reader.optional_u64()?,
        },
        BODY_HEARTBEAT_RESPONSE => MessageBody::HeartbeatResponse {
            read_context: reader.optional_u64()?,
        },
        BODY_TIMEOUT_NOW => MessageBody::TimeoutNow,
        BODY_INSTALL_SNAPSHOT => {
            let index = reader.u64()?;
            let term = reader.u64()?;
            let voter_count = reader.count(8)?;
            if voter_count > VOTERS_MAX as usize {
                return Err(WireError::Invalid("too many voters"));
            }
            let mut voters = Vec::with_capacity(voter_count);
            for _ in 0..voter_count {
                voters.push(reader.u64()?);
            }
            let offset = reader.u64()?;
            let done = reader.bool()?;
            let data = reader.bytes()?.to_vec();
            MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    index,
                    term,
                    voters,
                },
                offset,
                data,
                done,
            }
        }
        BODY_INSTALL_SNAPSHOT_RESPONSE => MessageBody::InstallSnapshotResponse {
            snapshot_index: reader.u64()?,
            next_offset: reader.u64()?,
            done: reader.bool()?,
        },
        BODY_READ_INDEX_REQUEST => MessageBody::ReadIndexRequest { ctx: reader.u64()? },
        BODY_READ_INDEX_RESPONSE => MessageBody::ReadIndexResponse {
            ctx: reader.u64()?,
            index: reader.u64()?,
        },
        _ => return Err(WireError::Invalid("unknown message kind")),
    };
    Ok(body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn message(body: MessageBody) -> (GroupId, Message) {
        (
            9,
            Message {
                from: 1,
                to: 2,
                term: 4,
                body,
            },
        )
    }

    fn sample() -> Envelope {
        let meta = SnapshotMeta {
            index: 10,
            term: 3,
            voters: vec![1, 2, 3],
        };
        Envelope {
            from: 1,
            to: 2,
            messages: vec![
                message(MessageBody::RequestVote {
                    last_log_index: 5,
                    last_log_term: 2,
                    force: true,
                }),
                message(MessageBody::RequestVoteResponse { granted: true }),
                message(MessageBody::PreVote {
                    last_log_index: 5,
                    last_log_term: 2,
                }),
                message(MessageBody::PreVoteResponse { granted: false }),
                message(MessageBody::Append {
                    prev_log_index: 3,
                    prev_log_term: 1,
                    entries: vec![Entry::noop(4, 4), Entry::normal(4, 5, b"cmd".to_vec())],
                    commit: 3,
                }),
                message(MessageBody::AppendResponse {
                    index: 5,
                    reject: Some(RejectHint { index: 2, term: 1 }),
                }),
                message(MessageBody::AppendResponse {
                    index: 5,
                    reject: None,
                }),
                message(MessageBody::Heartbeat {
                    commit: 5,
                    read_context: Some(77),
                }),
                message(MessageBody::HeartbeatResponse { read_context: None }),
                message(MessageBody::TimeoutNow),
                message(MessageBody::InstallSnapshot {
                    meta,
                    offset: 0,
                    data: b"chunk".to_vec(),
                    done: true,
                }),
                message(MessageBody::InstallSnapshotResponse {
                    snapshot_index: 10,
                    next_offset: 5,
                    done: true,
                }),
                message(MessageBody::ReadIndexRequest { ctx: 3 }),
                message(MessageBody::ReadIndexResponse { ctx: 3, index: 5 }),
            ],
            heartbeats: vec![CoalescedHeartbeat {
                group: 1,
                term: 2,
                commit: 3,
                read_context: None,
            }],
            heartbeat_responses: vec![CoalescedHeartbeatResponse {
                group: 1,
                term: 2,
                read_context: Some(8),
            }],
        }
    }

    #[test]
    fn every_message_kind_round_trips() {
        let envelope = sample();
        let bytes = encode_envelope(&envelope);
        assert_eq!(decode_envelope(&bytes).unwrap(), envelope);
    }

    #[test]
    fn truncations_and_garbage_are_refused() {
        let bytes = encode_envelope(&sample());
        for len in 0..bytes.len() {
            assert!(decode_envelope(&bytes[..len]).is_err(), "cut at {len}");
        }
        let mut versioned = bytes.clone();
        versioned[0] = 2;
        assert_eq!(
            decode_envelope(&versioned),
            Err(WireError::UnsupportedVersion(2))
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = decode_envelope(&bytes);
        }
    }
}
