//! Rendering of the event frame of tail.md §3.
//!
//! The hot store keeps every event as its rendered frame, so the tail, the range read and the
//! archiver send the same bytes, and the frame's length is exactly the event's contribution to
//! the node's unarchived bytes `U` (archive.md §8).

use bytes::Bytes;

use super::json::{write_compact_object, write_string};
use crate::api::NewEvent;
use crate::time::format_timestamp;

/// Render the compact JSON frame of one event. Keys in this order: `seq`, `type`, `payload`,
/// `actor`, `producer_id`, `producer_seq`, `source` (omitted when `None`, never `null`),
/// `metadata`, `refs`, `idempotency_key` (`null` when `None`), `inserted_at`.
pub fn render_event_frame(seq: u64, event: &NewEvent, inserted_at_us: i64) -> Bytes {
    let mut out = Vec::with_capacity(192);
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b",\"type\":");
    write_string(&mut out, &event.event_type);
    out.extend_from_slice(b",\"payload\":");
    write_compact_object(&mut out, &event.payload);
    out.extend_from_slice(b",\"actor\":");
    write_string(&mut out, &event.actor);
    out.extend_from_slice(b",\"producer_id\":");
    write_string(&mut out, &event.producer_id);
    out.extend_from_slice(b",\"producer_seq\":");
    out.extend_from_slice(event.producer_seq.to_string().as_bytes());
    if let Some(source) = &event.source {
        out.extend_from_slice(b",\"source\":");
        write_string(&mut out, source);
    }
    out.extend_from_slice(b",\"metadata\":");
    write_compact_object(&mut out, &event.metadata);
    out.extend_from_slice(b",\"refs\":");
    write_compact_object(&mut out, &event.refs);
    out.extend_from_slice(b",\"idempotency_key\":");
    match &event.idempotency_key {
        Some(key) => write_string(&mut out, key),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"inserted_at\":\"");
    out.extend_from_slice(format_timestamp(inserted_at_us).as_bytes());
    out.extend_from_slice(b"\"}");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    fn object(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).expect("test object parses")
    }

    fn event() -> NewEvent {
        NewEvent {
            event_type: "t".to_owned(),
            payload: Map::new(),
            actor: "a".to_owned(),
            source: None,
            metadata: Map::new(),
            refs: Map::new(),
            idempotency_key: None,
            producer_id: "p".to_owned(),
            producer_seq: 2,
        }
    }

    /// The frame of the worked example in http-api.md §13 (`events?cursor=1&limit=1`).
    #[test]
    fn worked_example_frame() {
        let inserted_at_us = crate::time::parse_timestamp("2026-01-05T10:11:13.000001Z")
            .expect("example timestamp parses");
        let frame = render_event_frame(2, &event(), inserted_at_us);
        assert_eq!(
            &frame[..],
            br#"{"seq":2,"type":"t","payload":{},"actor":"a","producer_id":"p","producer_seq":2,"metadata":{},"refs":{},"idempotency_key":null,"inserted_at":"2026-01-05T10:11:13.000001Z"}"#
        );
    }

    #[test]
    fn source_present_and_numbers_kept() {
        let mut event = event();
        event.source = Some("agent".to_owned());
        event.payload = object(r#"{"x":1.0,"y":1e3,"s":"é\n"}"#);
        event.idempotency_key = Some("k".to_owned());
        let frame = render_event_frame(7, &event, 0);
        assert_eq!(
            std::str::from_utf8(&frame).expect("frame is UTF-8"),
            "{\"seq\":7,\"type\":\"t\",\"payload\":{\"s\":\"é\\n\",\"x\":1.0,\"y\":1e+3},\"actor\":\"a\",\
             \"producer_id\":\"p\",\"producer_seq\":2,\"source\":\"agent\",\"metadata\":{},\"refs\":{},\
             \"idempotency_key\":\"k\",\"inserted_at\":\"1970-01-01T00:00:00.000000Z\"}"
        );
        let parsed: Value = serde_json::from_slice(&frame).expect("frame is JSON");
        assert_eq!(parsed["payload"]["x"].to_string(), "1.0");
    }
}
