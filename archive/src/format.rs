//! The archive formats shared by the `local` and `s3` adapters (`contract/archive.md` §3): session id
//! encoding, 256-event chunks, NDJSON chunk bodies, event line validation, timestamps and the catalog
//! record.

use std::ops::RangeInclusive;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::{ArchiveError, ArchivedEvent, SessionCatalog};

/// Events per chunk: a chunk holds seqs `chunk_start ..= chunk_start + 255`.
pub const CHUNK_EVENTS_COUNT: u64 = 256;

/// The most chunks one `read_events` call fetches. Readers ask for pages of at most a few thousand
/// events; a larger range is a caller bug that would otherwise issue millions of requests.
pub const READ_RANGE_CHUNK_COUNT_MAX: u64 = 4096;

/// Length of a timestamp in the written form `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
const WRITTEN_TIMESTAMP_LENGTH: usize = 27;

/// Length of the `YYYY-MM-DDTHH:MM:SS` part every accepted timestamp starts with.
const TIMESTAMP_SECONDS_LENGTH: usize = 19;

/// Fractional digits of the written form.
const TIMESTAMP_FRACTION_DIGITS_COUNT: usize = 6;

/// URL-safe base64 of the session id's UTF-8 bytes without padding (`ses-1` → `c2VzLTE`).
pub fn encode_session_id(session_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(session_id.as_bytes())
}

/// The first seq of the chunk holding `seq` (seqs 1–256 → 1, 257–512 → 257). `seq` must be ≥ 1.
pub fn chunk_start(seq: u64) -> u64 {
    debug_assert!(seq >= 1, "seqs start at 1");
    (seq.saturating_sub(1) / CHUNK_EVENTS_COUNT) * CHUNK_EVENTS_COUNT + 1
}

/// The seqs a chunk may hold.
pub fn chunk_seqs(chunk_start: u64) -> RangeInclusive<u64> {
    chunk_start..=chunk_start.saturating_add(CHUNK_EVENTS_COUNT - 1)
}

/// The file or object name of a chunk: `<chunk_start>.ndjson`.
pub fn chunk_file_name(chunk_start: u64) -> String {
    format!("{chunk_start}.ndjson")
}

/// The chunk starts overlapping `[from_seq, to_seq]`, ascending; empty when the range is empty.
pub fn chunk_starts(from_seq: u64, to_seq: u64) -> Result<Vec<u64>, ArchiveError> {
    let from_seq = from_seq.max(1);
    if from_seq > to_seq {
        return Ok(Vec::new());
    }
    let first = chunk_start(from_seq);
    let last = chunk_start(to_seq);
    let chunk_count = (last - first) / CHUNK_EVENTS_COUNT + 1;
    if chunk_count > READ_RANGE_CHUNK_COUNT_MAX {
        return Err(ArchiveError::RangeTooLarge {
            from_seq,
            to_seq,
            chunk_count,
            chunk_count_max: READ_RANGE_CHUNK_COUNT_MAX,
        });
    }
    Ok((0..chunk_count)
        .map(|index| first + index * CHUNK_EVENTS_COUNT)
        .collect())
}

/// Normalises an archived timestamp to the written form `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
///
/// Accepts 0–6 fractional digits and a missing `Z` (the time is UTC either way), as reads must
/// (`contract/archive.md` §3). The error is a human-readable reason.
pub fn normalize_timestamp(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    if bytes.len() < TIMESTAMP_SECONDS_LENGTH || !text.is_char_boundary(TIMESTAMP_SECONDS_LENGTH) {
        return Err(format!(
            "timestamp {text:?} is not YYYY-MM-DDTHH:MM:SS[.ffffff][Z]"
        ));
    }
    validate_date_time(&bytes[..TIMESTAMP_SECONDS_LENGTH])
        .map_err(|reason| format!("timestamp {text:?}: {reason}"))?;

    let mut rest = &bytes[TIMESTAMP_SECONDS_LENGTH..];
    let mut fraction = [b'0'; TIMESTAMP_FRACTION_DIGITS_COUNT];
    if let Some(after_dot) = rest.strip_prefix(b".") {
        let digits_count = after_dot.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits_count == 0 || digits_count > TIMESTAMP_FRACTION_DIGITS_COUNT {
            return Err(format!(
                "timestamp {text:?} must have 1 to 6 fractional digits after '.'"
            ));
        }
        fraction[..digits_count].copy_from_slice(&after_dot[..digits_count]);
        rest = &after_dot[digits_count..];
    }
    if !rest.is_empty() && rest != b"Z" {
        return Err(format!(
            "timestamp {text:?} has trailing characters (only a final 'Z' is allowed)"
        ));
    }

    let mut written = String::with_capacity(WRITTEN_TIMESTAMP_LENGTH);
    written.push_str(&text[..TIMESTAMP_SECONDS_LENGTH]);
    written.push('.');
    // The fraction holds ASCII digits only, checked above.
    written.extend(fraction.iter().map(|&digit| char::from(digit)));
    written.push('Z');
    Ok(written)
}

/// Whether `text` is a valid timestamp exactly in the written form `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn is_written_timestamp(text: &str) -> bool {
    text.len() == WRITTEN_TIMESTAMP_LENGTH
        && normalize_timestamp(text).is_ok_and(|normalized| normalized == text)
}

/// Checks `YYYY-MM-DDTHH:MM:SS` (exactly 19 bytes), including the calendar.
fn validate_date_time(text: &[u8]) -> Result<(), &'static str> {
    for (position, separator) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        if text[position] != separator {
            return Err("expected the form YYYY-MM-DDTHH:MM:SS");
        }
    }
    let number = |start: usize, end: usize| -> Result<u32, &'static str> {
        text[start..end].iter().try_fold(0_u32, |value, &byte| {
            if byte.is_ascii_digit() {
                Ok(value * 10 + u32::from(byte - b'0'))
            } else {
                Err("expected the form YYYY-MM-DDTHH:MM:SS")
            }
        })
    };
    let year = number(0, 4)?;
    let month = number(5, 7)?;
    let day = number(8, 10)?;
    if !(1..=12).contains(&month) {
        return Err("month out of range");
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err("day out of range");
    }
    if number(11, 13)? > 23 || number(14, 16)? > 59 || number(17, 19)? > 59 {
        return Err("time of day out of range");
    }
    Ok(())
}

fn days_in_month(year: u32, month: u32) -> u32 {
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// One event frame (`contract/tail.md` §3). Field order is the frame's key order, so serialising gives
/// the frame exactly as the tail sends it. `payload`, `metadata` and `refs` stay raw JSON text, which
/// keeps their bytes (and every digit of their numbers) unchanged.
#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct EventFrame {
    pub seq: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub payload: Box<RawValue>,
    pub actor: String,
    #[serde(deserialize_with = "required_nullable")]
    pub producer_id: Option<String>,
    #[serde(deserialize_with = "required_nullable")]
    pub producer_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub metadata: Box<RawValue>,
    pub refs: Box<RawValue>,
    #[serde(deserialize_with = "required_nullable")]
    pub idempotency_key: Option<String>,
    pub inserted_at: String,
}

/// Deserialises a key that must be present but may be `null`. (Plain `Option` fields would accept a
/// missing key, and line validity requires these keys.)
fn required_nullable<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}

impl EventFrame {
    /// Parses and validates one archived line. `inserted_at` is kept as found; see
    /// [`Self::normalize_inserted_at`].
    pub(crate) fn parse(line: &[u8]) -> Result<EventFrame, String> {
        if line.first() != Some(&b'{') {
            return Err("not a JSON object".to_owned());
        }
        let frame: EventFrame = serde_json::from_slice(line).map_err(|error| error.to_string())?;
        if frame.seq == 0 {
            return Err("seq must be at least 1".to_owned());
        }
        for (name, value) in [("metadata", &frame.metadata), ("refs", &frame.refs)] {
            if !value.get().starts_with('{') {
                return Err(format!("{name} is not a JSON object"));
            }
        }
        Ok(frame)
    }

    /// Rewrites `inserted_at` in the written form (reads accept shorter forms).
    pub(crate) fn normalize_inserted_at(&mut self) -> Result<(), String> {
        self.inserted_at = normalize_timestamp(&self.inserted_at)?;
        Ok(())
    }

    /// The frame as one line of compact JSON in the frame's key order.
    pub(crate) fn render(&self) -> Result<Bytes, serde_json::Error> {
        serde_json::to_vec(self).map(Bytes::from)
    }
}

/// Validates a `write_events` batch: strictly ascending seqs ≥ 1, each a one-line frame whose `seq`
/// matches and whose `inserted_at` is in the written form. Returns the parsed frames.
pub(crate) fn validate_batch(events: &[ArchivedEvent]) -> Result<Vec<EventFrame>, ArchiveError> {
    let mut previous_seq = 0_u64;
    let mut frames = Vec::with_capacity(events.len());
    for event in events {
        let invalid = |reason: String| ArchiveError::InvalidEvent {
            seq: event.seq,
            reason,
        };
        if event.seq <= previous_seq {
            return Err(invalid(format!(
                "seqs must be at least 1 and strictly ascending (previous seq {previous_seq})"
            )));
        }
        previous_seq = event.seq;
        if event.json.contains(&b'\n') {
            return Err(invalid("the JSON contains a line break".to_owned()));
        }
        let frame = EventFrame::parse(&event.json).map_err(invalid)?;
        if frame.seq != event.seq {
            return Err(invalid(format!("the JSON has seq {}", frame.seq)));
        }
        if !is_written_timestamp(&frame.inserted_at) {
            return Err(invalid(format!(
                "inserted_at {:?} is not in the form YYYY-MM-DDTHH:MM:SS.ffffffZ",
                frame.inserted_at
            )));
        }
        frames.push(frame);
    }
    Ok(frames)
}

/// Splits a validated (ascending) batch into runs that fall into the same chunk, in order.
pub(crate) fn split_by_chunk(events: &[ArchivedEvent]) -> Vec<(u64, &[ArchivedEvent])> {
    let mut runs = Vec::new();
    let mut rest = events;
    while let Some(first) = rest.first() {
        let start = chunk_start(first.seq);
        let run_length = rest
            .iter()
            .take_while(|event| chunk_start(event.seq) == start)
            .count();
        let (run, remainder) = rest.split_at(run_length);
        runs.push((start, run));
        rest = remainder;
    }
    runs
}

/// One validated line of a stored chunk: its raw bytes (kept unchanged by merges) and its frame.
pub(crate) struct ChunkLine<'a> {
    pub seq: u64,
    pub raw: &'a [u8],
    pub frame: EventFrame,
}

/// Parses a stored chunk body: NDJSON lines joined by `\n`, strictly ascending seqs inside the chunk,
/// at most 256 lines. An empty body holds no events. `location` names the file or object in errors.
pub(crate) fn parse_chunk<'a>(
    body: &'a [u8],
    chunk_start: u64,
    location: &str,
) -> Result<Vec<ChunkLine<'a>>, ArchiveError> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let allowed_seqs = chunk_seqs(chunk_start);
    let mut lines = Vec::new();
    let mut previous_seq = 0_u64;
    for (index, raw) in body.split(|&byte| byte == b'\n').enumerate() {
        let line_number = index as u64 + 1;
        let invalid = |reason: String| ArchiveError::InvalidLine {
            location: location.to_owned(),
            line_number,
            reason,
        };
        if line_number > CHUNK_EVENTS_COUNT {
            return Err(invalid(format!(
                "a chunk holds at most {CHUNK_EVENTS_COUNT} lines"
            )));
        }
        let mut frame = EventFrame::parse(raw).map_err(invalid)?;
        frame.normalize_inserted_at().map_err(invalid)?;
        if !allowed_seqs.contains(&frame.seq) {
            return Err(invalid(format!(
                "seq {} lies outside chunk {}..={}",
                frame.seq,
                allowed_seqs.start(),
                allowed_seqs.end()
            )));
        }
        if frame.seq <= previous_seq {
            return Err(invalid(format!(
                "seq {} does not ascend (previous seq {previous_seq})",
                frame.seq
            )));
        }
        previous_seq = frame.seq;
        lines.push(ChunkLine {
            seq: frame.seq,
            raw,
            frame,
        });
    }
    Ok(lines)
}

/// The events of a parsed chunk within `[from_seq, to_seq]`, re-rendered in the frame's key order with
/// `inserted_at` in the written form.
pub(crate) fn chunk_events_in_range(
    lines: &[ChunkLine<'_>],
    from_seq: u64,
    to_seq: u64,
    location: &str,
) -> Result<Vec<ArchivedEvent>, ArchiveError> {
    lines
        .iter()
        .filter(|line| (from_seq..=to_seq).contains(&line.seq))
        .map(|line| {
            let json = line
                .frame
                .render()
                .map_err(|error| ArchiveError::InvalidLine {
                    location: location.to_owned(),
                    line_number: line.seq,
                    reason: format!("cannot render the event: {error}"),
                })?;
            Ok(ArchivedEvent {
                seq: line.seq,
                json,
            })
        })
        .collect()
}

/// Merges new events into a stored chunk; stored seqs win. Returns the new body and the number of seqs
/// it adds (0 means the stored chunk already holds every seq and need not be written).
pub(crate) fn merge_chunk(
    existing: &[ChunkLine<'_>],
    incoming: &[ArchivedEvent],
) -> (Vec<u8>, u64) {
    let body_bytes = existing
        .iter()
        .map(|line| line.raw.len() + 1)
        .sum::<usize>()
        + incoming
            .iter()
            .map(|event| event.json.len() + 1)
            .sum::<usize>();
    let mut body = Vec::with_capacity(body_bytes);
    let mut new_count = 0_u64;
    let mut existing_index = 0;
    let mut incoming_index = 0;
    loop {
        let next_existing = existing.get(existing_index);
        let next_incoming = incoming.get(incoming_index);
        let line: &[u8] = match (next_existing, next_incoming) {
            (None, None) => break,
            (Some(stored), None) => {
                existing_index += 1;
                stored.raw
            }
            (None, Some(event)) => {
                incoming_index += 1;
                new_count += 1;
                &event.json
            }
            (Some(stored), Some(event)) => {
                if stored.seq <= event.seq {
                    existing_index += 1;
                    if stored.seq == event.seq {
                        // The stored event wins; the incoming copy of the same seq is dropped.
                        incoming_index += 1;
                    }
                    stored.raw
                } else {
                    incoming_index += 1;
                    new_count += 1;
                    &event.json
                }
            }
        };
        if !body.is_empty() {
            body.push(b'\n');
        }
        body.extend_from_slice(line);
    }
    (body, new_count)
}

/// The catalog record as stored: `{"id","title","creator_principal","metadata","created_at"}`.
#[derive(Serialize)]
struct CatalogRecord<'a> {
    id: &'a str,
    title: Option<&'a str>,
    creator_principal: Option<&'a serde_json::Value>,
    metadata: &'a serde_json::Map<String, serde_json::Value>,
    created_at: &'a str,
}

/// Validates a catalog record (`created_at` in the written form).
pub(crate) fn validate_catalog(session: &SessionCatalog) -> Result<(), ArchiveError> {
    if !is_written_timestamp(&session.created_at) {
        return Err(ArchiveError::InvalidCatalog {
            session_id: session.id.clone(),
            reason: format!(
                "created_at {:?} is not in the form YYYY-MM-DDTHH:MM:SS.ffffffZ",
                session.created_at
            ),
        });
    }
    Ok(())
}

/// The catalog body of `contract/archive.md` §3 as compact JSON.
pub(crate) fn render_catalog(session: &SessionCatalog) -> Result<Vec<u8>, ArchiveError> {
    validate_catalog(session)?;
    let record = CatalogRecord {
        id: &session.id,
        title: session.title.as_deref(),
        creator_principal: session.creator_principal.as_ref(),
        metadata: &session.metadata,
        created_at: &session.created_at,
    };
    serde_json::to_vec(&record).map_err(|error| ArchiveError::InvalidCatalog {
        session_id: session.id.clone(),
        reason: error.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn event(seq: u64, text: &str) -> ArchivedEvent {
        let json = format!(
            r#"{{"seq":{seq},"type":"t","payload":{{"text":"{text}"}},"actor":"user:u","producer_id":"p","producer_seq":{seq},"metadata":{{}},"refs":{{}},"idempotency_key":null,"inserted_at":"2026-01-05T10:11:12.123456Z"}}"#
        );
        ArchivedEvent {
            seq,
            json: Bytes::from(json),
        }
    }

    #[test]
    fn session_id_encoding_matches_the_contract_example() {
        assert_eq!(encode_session_id("ses-1"), "c2VzLTE");
    }

    #[test]
    fn chunk_starts_follow_the_contract() {
        assert_eq!(chunk_start(1), 1);
        assert_eq!(chunk_start(256), 1);
        assert_eq!(chunk_start(257), 257);
        assert_eq!(chunk_start(512), 257);
        assert_eq!(chunk_start(513), 513);
        assert_eq!(chunk_starts(255, 258).unwrap(), vec![1, 257]);
        assert_eq!(chunk_starts(0, 0).unwrap(), Vec::<u64>::new());
        assert_eq!(chunk_starts(5, 4).unwrap(), Vec::<u64>::new());
        assert!(matches!(
            chunk_starts(1, u64::MAX),
            Err(ArchiveError::RangeTooLarge { .. })
        ));
    }

    #[test]
    fn timestamps_are_normalized_to_the_written_form() {
        let cases = [
            ("2026-01-05T10:11:12.123456Z", "2026-01-05T10:11:12.123456Z"),
            ("2026-01-05T10:11:12.5Z", "2026-01-05T10:11:12.500000Z"),
            ("2026-01-05T10:11:12Z", "2026-01-05T10:11:12.000000Z"),
            ("2026-01-05T10:11:12", "2026-01-05T10:11:12.000000Z"),
            ("2024-02-29T23:59:59.123", "2024-02-29T23:59:59.123000Z"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_timestamp(input).unwrap(), expected, "{input}");
        }
        for invalid in [
            "",
            "2026-01-05",
            "2026-01-05 10:11:12Z",
            "2026-01-05T10:11:12.Z",
            "2026-01-05T10:11:12.1234567Z",
            "2026-01-05T10:11:12+01:00",
            "2026-13-05T10:11:12Z",
            "2023-02-29T10:11:12Z",
            "2026-01-05T24:00:00Z",
            "2026-01-05T10:11:12ZZ",
        ] {
            assert!(normalize_timestamp(invalid).is_err(), "{invalid}");
        }
        assert!(is_written_timestamp("2026-01-05T10:11:12.123456Z"));
        assert!(!is_written_timestamp("2026-01-05T10:11:12.12345Z"));
    }

    #[test]
    fn merge_keeps_stored_seqs_and_counts_new_ones() {
        let stored_events = [event(1, "old"), event(3, "old")];
        let stored_body = stored_events
            .iter()
            .map(|event| std::str::from_utf8(&event.json).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let lines = parse_chunk(stored_body.as_bytes(), 1, "test").unwrap();
        let (body, new_count) =
            merge_chunk(&lines, &[event(2, "new"), event(3, "new"), event(4, "new")]);
        assert_eq!(new_count, 2);
        let merged = parse_chunk(&body, 1, "test").unwrap();
        let seqs: Vec<u64> = merged.iter().map(|line| line.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        assert!(std::str::from_utf8(merged[2].raw).unwrap().contains("old"));
        assert!(!body.ends_with(b"\n"));
    }

    #[test]
    fn chunk_parsing_rejects_invalid_lines() {
        let valid = std::str::from_utf8(&event(1, "x").json).unwrap().to_owned();
        let missing_refs = valid.replace(r#""refs":{},"#, "");
        let cases = [
            "[1,2]".to_owned(),
            "{not json".to_owned(),
            missing_refs,
            valid.replace(r#""producer_id":"p","#, ""),
            format!("{valid}\n{valid}"),
            valid.replace(r#""seq":1,"#, r#""seq":300,"#),
            valid.replace(r#""metadata":{}"#, r#""metadata":[]"#),
            format!("{valid}\n"),
        ];
        for body in cases {
            assert!(
                matches!(
                    parse_chunk(body.as_bytes(), 1, "test"),
                    Err(ArchiveError::InvalidLine { .. })
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn rendering_keeps_the_frame_key_order_and_omits_a_missing_source() {
        let original = event(7, "hi");
        let frame = EventFrame::parse(&original.json).unwrap();
        assert_eq!(frame.render().unwrap(), original.json);
        let with_source = std::str::from_utf8(&original.json)
            .unwrap()
            .replace(r#""metadata""#, r#""source":"agent","metadata""#);
        let frame = EventFrame::parse(with_source.as_bytes()).unwrap();
        assert_eq!(frame.render().unwrap(), Bytes::from(with_source));
    }

    #[test]
    fn batches_must_ascend_and_match_their_json() {
        assert!(validate_batch(&[event(1, "a"), event(2, "b")]).is_ok());
        assert!(validate_batch(&[event(2, "a"), event(2, "b")]).is_err());
        assert!(validate_batch(&[event(0, "a")]).is_err());
        let mismatched = ArchivedEvent {
            seq: 5,
            json: event(6, "a").json,
        };
        assert!(validate_batch(&[mismatched]).is_err());
    }

    #[test]
    fn batches_split_at_chunk_boundaries() {
        let events: Vec<ArchivedEvent> = (250..=260).map(|seq| event(seq, "x")).collect();
        let runs = split_by_chunk(&events);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].0, 1);
        assert_eq!(runs[0].1.len(), 7);
        assert_eq!(runs[1].0, 257);
        assert_eq!(runs[1].1.len(), 4);
    }
}
