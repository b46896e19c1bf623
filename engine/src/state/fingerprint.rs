//! The content fingerprint of semantics.md §3: what "same content" means for producer dedupe.
//!
//! The fingerprint is persisted in producer cursors (and snapshots), so its definition must never
//! change: SHA-256 over the canonical JSON of the array
//! `[type, payload, actor, source or null, metadata, refs, idempotency_key or null, producer_id,
//! producer_seq]`.

use sha2::{Digest, Sha256};

use super::json::{write_canonical_object, write_string};
use crate::api::NewEvent;

/// SHA-256 digest of an event's canonical content.
pub type Fingerprint = [u8; 32];

/// The canonical JSON text that [`fingerprint`] hashes.
pub fn canonical_json(event: &NewEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(b'[');
    write_string(&mut out, &event.event_type);
    out.push(b',');
    write_canonical_object(&mut out, &event.payload);
    out.push(b',');
    write_string(&mut out, &event.actor);
    out.push(b',');
    write_optional_string(&mut out, event.source.as_deref());
    out.push(b',');
    write_canonical_object(&mut out, &event.metadata);
    out.push(b',');
    write_canonical_object(&mut out, &event.refs);
    out.push(b',');
    write_optional_string(&mut out, event.idempotency_key.as_deref());
    out.push(b',');
    write_string(&mut out, &event.producer_id);
    out.push(b',');
    out.extend_from_slice(event.producer_seq.to_string().as_bytes());
    out.push(b']');
    out
}

/// SHA-256 of [`canonical_json`].
pub fn fingerprint(event: &NewEvent) -> Fingerprint {
    Sha256::digest(canonical_json(event)).into()
}

fn write_optional_string(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(text) => write_string(out, text),
        None => out.extend_from_slice(b"null"),
    }
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
            event_type: "content".to_owned(),
            payload: object(
                r#"{"text":"h\u00e9\n\"\u0001","n":1,"f":1.5,"g":1.0,"h":1e3,"big":123456789012345678901234567890,"nested":{"b":[1,2],"a":null}}"#,
            ),
            actor: "user:u1".to_owned(),
            source: Some("agent".to_owned()),
            metadata: object(r#"{"k":"v"}"#),
            refs: object(r#"{"to_seq":3}"#),
            idempotency_key: Some("idem-1".to_owned()),
            producer_id: "p".to_owned(),
            producer_seq: 2,
        }
    }

    fn hex(digest: &Fingerprint) -> String {
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn canonical_text_of_a_known_event() {
        let text = String::from_utf8(canonical_json(&event())).expect("UTF-8");
        assert_eq!(
            text,
            r#"["content",{"big":123456789012345678901234567890,"f":1.5,"g":1.0,"h":1000.0,"n":1,"nested":{"a":null,"b":[1,2]},"text":"hé\n\"\u0001"},"user:u1","agent",{"k":"v"},{"to_seq":3},"idem-1","p",2]"#
        );
    }

    /// The digest below was computed independently with Python:
    /// `hashlib.sha256(json.dumps([...], sort_keys=True, separators=(',',':'),
    /// ensure_ascii=False).encode()).hexdigest()` over the same content.
    #[test]
    fn known_digest() {
        assert_eq!(hex(&fingerprint(&event())), KNOWN_DIGEST_HEX);
    }

    const KNOWN_DIGEST_HEX: &str =
        "b40225aee0b87fab5176df61389e429d78cb2c58de7becfbb7d7498434e014a5";

    #[test]
    fn key_order_does_not_matter() {
        let mut reordered = event();
        reordered.payload = object(
            r#"{"nested":{"a":null,"b":[1,2]},"h":1000.0,"big":123456789012345678901234567890,"g":1.0,"text":"h\u00e9\n\"\u0001","f":1.5,"n":1}"#,
        );
        assert_eq!(fingerprint(&event()), fingerprint(&reordered));
    }

    #[test]
    fn integer_and_float_differ() {
        let mut integer = event();
        integer.payload = object(r#"{"x":1}"#);
        let mut float = event();
        float.payload = object(r#"{"x":1.0}"#);
        assert_ne!(fingerprint(&integer), fingerprint(&float));
        let mut exponent = event();
        exponent.payload = object(r#"{"x":1e0}"#);
        assert_eq!(fingerprint(&float), fingerprint(&exponent));
    }

    #[test]
    fn idempotency_key_and_source_matter() {
        let base = fingerprint(&event());
        let mut changed = event();
        changed.idempotency_key = Some("idem-2".to_owned());
        assert_ne!(base, fingerprint(&changed));
        changed.idempotency_key = None;
        assert_ne!(base, fingerprint(&changed));
        let mut no_source = event();
        no_source.source = None;
        assert_ne!(base, fingerprint(&no_source));
    }
}
