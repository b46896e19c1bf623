//! Record framing: pure encode and decode, no IO.
//!
//! A frame is `crc32c: u32 | body_bytes: u32 | body`, little endian. The crc covers the
//! `body_bytes` field and the body, so a damaged length is caught too. The body starts with a
//! kind byte. A frame header of all zeros marks the end of the written part of a segment (new
//! segments are zero-filled); `body_bytes` is never 0 in a real frame.

use bytes::Bytes;

use super::{Lsn, WalRecord};

/// Bytes of the frame header (crc32c + body length).
pub const FRAME_HEADER_BYTES: u64 = 8;
/// Largest frame, header included: 4 MiB. Recovery rejects longer length fields as corrupt.
pub const RECORD_BYTES_MAX: u64 = 4 << 20;
/// Fixed part of an `Entry` body: kind, group, term, index, payload length.
const ENTRY_FIXED_BYTES: u64 = 1 + 4 + 8 + 8 + 4;
/// Body of a `HardState`: kind, group, term, vote, commit.
const HARD_STATE_BYTES: u64 = 1 + 4 + 8 + 8 + 8;
/// Largest `Entry` payload.
pub const ENTRY_PAYLOAD_BYTES_MAX: u64 = RECORD_BYTES_MAX - FRAME_HEADER_BYTES - ENTRY_FIXED_BYTES;

/// Kind byte of [`WalRecord::Entry`].
const KIND_ENTRY: u8 = 1;
/// Kind byte of [`WalRecord::HardState`].
const KIND_HARD_STATE: u8 = 2;
// Kind 3 (an explicit truncation) stays reserved: an `Entry` at an index the group already
// holds truncates the suffix implicitly on replay, exactly as Raft's append does.
/// Kind byte of [`WalRecord::SnapshotInstalled`].
const KIND_SNAPSHOT_INSTALLED: u8 = 4;
/// Body of a `SnapshotInstalled`: kind, group, index, term.
const SNAPSHOT_INSTALLED_BYTES: u64 = 1 + 4 + 8 + 8;

const _: () = assert!(RECORD_BYTES_MAX <= u32::MAX as u64);
const _: () = assert!(ENTRY_PAYLOAD_BYTES_MAX > 0);

/// Framed size of `record` in bytes (what it advances the LSN by).
pub fn frame_bytes(record: &WalRecord) -> u64 {
    FRAME_HEADER_BYTES + body_bytes(record)
}

fn body_bytes(record: &WalRecord) -> u64 {
    match record {
        WalRecord::Entry { payload, .. } => ENTRY_FIXED_BYTES + payload.len() as u64,
        WalRecord::HardState { .. } => HARD_STATE_BYTES,
        WalRecord::SnapshotInstalled { .. } => SNAPSHOT_INSTALLED_BYTES,
    }
}

/// Appends the frame of `record` to `out`. The caller checks [`frame_bytes`] against
/// [`RECORD_BYTES_MAX`] first; an oversized record here is a bug.
pub fn encode_record(record: &WalRecord, out: &mut Vec<u8>) {
    let body = body_bytes(record);
    debug_assert!(FRAME_HEADER_BYTES + body <= RECORD_BYTES_MAX);
    let start = out.len();
    out.extend_from_slice(&[0; 4]); // crc, filled in below
    out.extend_from_slice(&(body as u32).to_le_bytes());
    match record {
        WalRecord::Entry {
            group,
            term,
            index,
            payload,
        } => {
            out.push(KIND_ENTRY);
            out.extend_from_slice(&group.to_le_bytes());
            out.extend_from_slice(&term.to_le_bytes());
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(payload);
        }
        WalRecord::HardState {
            group,
            term,
            vote,
            commit,
        } => {
            out.push(KIND_HARD_STATE);
            out.extend_from_slice(&group.to_le_bytes());
            out.extend_from_slice(&term.to_le_bytes());
            out.extend_from_slice(&vote.to_le_bytes());
            out.extend_from_slice(&commit.to_le_bytes());
        }
        WalRecord::SnapshotInstalled { group, index, term } => {
            out.push(KIND_SNAPSHOT_INSTALLED);
            out.extend_from_slice(&group.to_le_bytes());
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&term.to_le_bytes());
        }
    }
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!((out.len() - start) as u64, FRAME_HEADER_BYTES + body);
}

/// Result of decoding the bytes at one position.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameDecode {
    /// A valid record occupying `frame_bytes` bytes.
    Record {
        /// The decoded record.
        record: WalRecord,
        /// Its framed size.
        frame_bytes: u64,
    },
    /// A zero frame header (or fewer than [`FRAME_HEADER_BYTES`] zero bytes): nothing written here.
    End,
    /// Not a valid frame; the reason says why.
    Invalid(&'static str),
}

/// Decodes the frame at the start of `bytes` (the rest of a segment). Never panics.
pub fn decode_frame(bytes: &[u8]) -> FrameDecode {
    let Some(header) = bytes.get(..FRAME_HEADER_BYTES as usize) else {
        return if bytes.iter().all(|&b| b == 0) {
            FrameDecode::End
        } else {
            FrameDecode::Invalid("truncated frame header")
        };
    };
    if header.iter().all(|&b| b == 0) {
        return FrameDecode::End;
    }
    let crc = read_u32(header, 0);
    let body_len = u64::from(read_u32(header, 4));
    if body_len == 0 || FRAME_HEADER_BYTES + body_len > RECORD_BYTES_MAX {
        return FrameDecode::Invalid("frame length out of bounds");
    }
    let frame_len = FRAME_HEADER_BYTES + body_len;
    let Some(frame) = bytes.get(..frame_len as usize) else {
        return FrameDecode::Invalid("frame extends past the end of the segment");
    };
    if crc32c::crc32c(&frame[4..]) != crc {
        return FrameDecode::Invalid("crc mismatch");
    }
    match decode_body(&frame[FRAME_HEADER_BYTES as usize..]) {
        Ok(record) => FrameDecode::Record {
            record,
            frame_bytes: frame_len,
        },
        Err(reason) => FrameDecode::Invalid(reason),
    }
}

fn decode_body(body: &[u8]) -> Result<WalRecord, &'static str> {
    let len = body.len() as u64;
    match body.first().copied() {
        Some(KIND_ENTRY) => {
            if len < ENTRY_FIXED_BYTES {
                return Err("entry body too short");
            }
            let payload_len = u64::from(read_u32(body, 21));
            if ENTRY_FIXED_BYTES + payload_len != len {
                return Err("entry payload length disagrees with frame length");
            }
            Ok(WalRecord::Entry {
                group: read_u32(body, 1),
                term: read_u64(body, 5),
                index: read_u64(body, 13),
                payload: Bytes::copy_from_slice(&body[ENTRY_FIXED_BYTES as usize..]),
            })
        }
        Some(KIND_HARD_STATE) => {
            if len != HARD_STATE_BYTES {
                return Err("hard state body has the wrong length");
            }
            Ok(WalRecord::HardState {
                group: read_u32(body, 1),
                term: read_u64(body, 5),
                vote: read_u64(body, 13),
                commit: read_u64(body, 21),
            })
        }
        Some(KIND_SNAPSHOT_INSTALLED) => {
            if len != SNAPSHOT_INSTALLED_BYTES {
                return Err("snapshot marker body has the wrong length");
            }
            Ok(WalRecord::SnapshotInstalled {
                group: read_u32(body, 1),
                index: read_u64(body, 5),
                term: read_u64(body, 13),
            })
        }
        _ => Err("unknown record kind"),
    }
}

/// Little-endian u32 at `at`; callers checked the length, a short slice reads as zeros.
fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        word.copy_from_slice(src);
    }
    u32::from_le_bytes(word)
}

/// Little-endian u64 at `at`; callers checked the length, a short slice reads as zeros.
fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(src) = bytes.get(at..at + 8) {
        word.copy_from_slice(src);
    }
    u64::from_le_bytes(word)
}

/// Decodes consecutive frames of `bytes` (which start at `start_lsn`) and calls `on_record`
/// with each record and its end LSN, stopping at the end marker, at the first invalid frame or
/// after the record ending at `stop_lsn`. Returns the LSN where decoding stopped and, if it
/// stopped on an invalid frame, why.
pub(crate) fn decode_frames(
    bytes: &[u8],
    start_lsn: Lsn,
    stop_lsn: Lsn,
    mut on_record: impl FnMut(Lsn, WalRecord),
) -> (Lsn, Option<&'static str>) {
    let mut offset: u64 = 0;
    let mut lsn = start_lsn;
    while lsn < stop_lsn {
        let Some(rest) = bytes.get(offset as usize..) else {
            break;
        };
        match decode_frame(rest) {
            FrameDecode::Record {
                record,
                frame_bytes,
            } => {
                offset += frame_bytes;
                lsn += frame_bytes;
                on_record(lsn, record);
            }
            FrameDecode::End => break,
            FrameDecode::Invalid(reason) => return (lsn, Some(reason)),
        }
    }
    (lsn, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<WalRecord> {
        vec![
            WalRecord::Entry {
                group: 7,
                term: 3,
                index: 42,
                payload: Bytes::from_static(b"hello world"),
            },
            WalRecord::Entry {
                group: u32::MAX,
                term: u64::MAX,
                index: 0,
                payload: Bytes::new(),
            },
            WalRecord::HardState {
                group: 1,
                term: 9,
                vote: 2,
                commit: 100,
            },
            WalRecord::SnapshotInstalled {
                group: 5,
                index: 4096,
                term: 7,
            },
        ]
    }

    #[test]
    fn round_trip_every_kind() {
        for record in samples() {
            let mut out = Vec::new();
            encode_record(&record, &mut out);
            assert_eq!(out.len() as u64, frame_bytes(&record));
            let decoded = decode_frame(&out);
            assert_eq!(
                decoded,
                FrameDecode::Record {
                    record: record.clone(),
                    frame_bytes: out.len() as u64
                }
            );
            // Trailing zeros (the rest of a segment) do not change the result.
            out.extend_from_slice(&[0; 100]);
            assert!(matches!(decode_frame(&out), FrameDecode::Record { .. }));
        }
    }

    #[test]
    fn zero_bytes_are_the_end_marker() {
        assert_eq!(decode_frame(&[]), FrameDecode::End);
        assert_eq!(decode_frame(&[0; 3]), FrameDecode::End);
        assert_eq!(decode_frame(&[0; 64]), FrameDecode::End);
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        for record in samples() {
            let mut out = Vec::new();
            encode_record(&record, &mut out);
            for byte in 0..out.len() {
                for bit in 0..8 {
                    let mut damaged = out.clone();
                    damaged[byte] ^= 1 << bit;
                    assert!(
                        !matches!(decode_frame(&damaged), FrameDecode::Record { .. }),
                        "flip of byte {byte} bit {bit} accepted"
                    );
                }
            }
        }
    }

    #[test]
    fn crc_mismatch_is_rejected() {
        let mut out = Vec::new();
        encode_record(&samples()[0], &mut out);
        out[0] ^= 0xff;
        assert_eq!(decode_frame(&out), FrameDecode::Invalid("crc mismatch"));
    }

    #[test]
    fn every_truncation_is_rejected() {
        for record in samples() {
            let mut out = Vec::new();
            encode_record(&record, &mut out);
            for len in 1..out.len() {
                let decoded = decode_frame(&out[..len]);
                assert!(
                    matches!(decoded, FrameDecode::Invalid(_)),
                    "truncation to {len} gave {decoded:?}"
                );
            }
        }
    }

    #[test]
    fn oversized_and_unknown_kind_are_rejected() {
        let mut frame = vec![0u8; 16];
        frame[4..8].copy_from_slice(&(RECORD_BYTES_MAX as u32).to_le_bytes());
        assert_eq!(
            decode_frame(&frame),
            FrameDecode::Invalid("frame length out of bounds")
        );
        // A correctly checksummed frame of an unknown kind.
        let mut frame = Vec::new();
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&1u32.to_le_bytes());
        frame.push(99);
        let crc = crc32c::crc32c(&frame[4..]);
        frame[..4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_frame(&frame),
            FrameDecode::Invalid("unknown record kind")
        );
    }

    #[test]
    fn decode_frames_stops_at_the_first_invalid_frame() {
        let mut out = Vec::new();
        for record in samples() {
            encode_record(&record, &mut out);
        }
        let first = frame_bytes(&samples()[0]);
        out[first as usize + 10] ^= 1;
        let mut seen = Vec::new();
        let (end, reason) = decode_frames(&out, 100, u64::MAX, |lsn, r| seen.push((lsn, r)));
        assert_eq!(seen, vec![(100 + first, samples()[0].clone())]);
        assert_eq!(end, 100 + first);
        assert_eq!(reason, Some("crc mismatch"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = decode_frame(&bytes);
        }
    }
}
