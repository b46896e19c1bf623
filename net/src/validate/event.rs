//! Append bodies (http-api.md §6 single, §7 batch). Fields are checked in the contract's order
//! and the first failure decides the error.

use serde_json::{Map, Number, Value};
use starcite_engine::api::{AppendRequest, NewEvent};

use super::{is_absent, non_empty_string, parse_digits, SEQ_EXCLUSIVE_MAX};
use crate::auth::{principal_actor, AuthContext};
use crate::error::{FixedError, INVALID_EVENT, INVALID_METADATA, INVALID_REFS};

/// Most events in one batch append.
pub const BATCH_EVENTS_MAX: usize = 1000;

/// Whether a body is a batch (it has the key `events`).
pub fn is_batch(body: &Map<String, Value>) -> bool {
    body.contains_key("events")
}

/// Validate a single or batch append body for `session_id`.
pub fn validate_append(
    session_id: &str,
    body: &Map<String, Value>,
    auth: &AuthContext,
) -> Result<AppendRequest, FixedError> {
    let events = if is_batch(body) {
        let Some(Value::Array(elements)) = body.get("events") else {
            return Err(INVALID_EVENT);
        };
        if elements.is_empty() || elements.len() > BATCH_EVENTS_MAX {
            return Err(INVALID_EVENT);
        }
        let empty = Map::new();
        let mut events = Vec::with_capacity(elements.len());
        for element in elements {
            let object = element.as_object().unwrap_or(&empty);
            let event = validate_event(object, auth)?;
            if !is_absent(object.get("expected_seq")) {
                return Err(INVALID_EVENT);
            }
            events.push(event);
        }
        events
    } else {
        vec![validate_event(body, auth)?]
    };
    let expected_seq = parse_expected_seq(body.get("expected_seq"))?;
    Ok(AppendRequest {
        session_id: session_id.to_owned(),
        events,
        expected_seq,
    })
}

/// The per-event fields of §6 in order: `type`, `payload`, `producer_id`, `producer_seq`,
/// `actor`, `source`, `metadata`, `refs`, `idempotency_key` (`expected_seq` is the caller's).
fn validate_event(object: &Map<String, Value>, auth: &AuthContext) -> Result<NewEvent, FixedError> {
    let event_type = non_empty_string(object.get("type"))
        .ok_or(INVALID_EVENT)?
        .to_owned();
    let Some(Value::Object(payload)) = object.get("payload") else {
        return Err(INVALID_EVENT);
    };
    let producer_id = non_empty_string(object.get("producer_id"))
        .ok_or(INVALID_EVENT)?
        .to_owned();
    let producer_seq = parse_producer_seq(object.get("producer_seq")).ok_or(INVALID_EVENT)?;
    let actor = resolve_actor(object.get("actor"), auth)?;
    let source = match object.get("source") {
        None | Some(Value::Null) => None,
        value => Some(non_empty_string(value).ok_or(INVALID_EVENT)?.to_owned()),
    };
    let mut metadata = match object.get("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(metadata)) => metadata.clone(),
        Some(_) => return Err(INVALID_METADATA),
    };
    let refs = match object.get("refs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(refs)) => validate_refs(refs)?.clone(),
        Some(_) => return Err(INVALID_REFS),
    };
    let idempotency_key = match object.get("idempotency_key") {
        None | Some(Value::Null) => None,
        value => Some(non_empty_string(value).ok_or(INVALID_EVENT)?.to_owned()),
    };
    if let AuthContext::Principal { principal, .. } = auth {
        // Merged into a caller object with the server values winning; a non-object caller
        // value is replaced (http-api.md §6 storage rules).
        let stamp = [
            ("tenant_id", principal.tenant_id.clone()),
            (
                "principal_type",
                principal.principal_type.as_str().to_owned(),
            ),
            ("principal_id", principal.id.clone()),
            ("actor", actor.clone()),
        ];
        let entry = metadata
            .entry("starcite_principal")
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        if let Value::Object(object) = entry {
            for (key, value) in stamp {
                object.insert(key.to_owned(), Value::String(value));
            }
        }
    }
    Ok(NewEvent {
        event_type,
        payload: payload.clone(),
        actor,
        source,
        metadata,
        refs,
        idempotency_key,
        producer_id,
        producer_seq,
    })
}

/// `actor`: required non-empty string in mode `none` (and for service tokens, which never get
/// this far); derived and checked against the token for principals.
fn resolve_actor(value: Option<&Value>, auth: &AuthContext) -> Result<String, FixedError> {
    match auth {
        AuthContext::Principal { principal, .. } => {
            let derived = principal_actor(principal);
            match value {
                None | Some(Value::Null) => Ok(derived),
                Some(Value::String(actor)) if *actor == derived => Ok(derived),
                Some(_) => Err(INVALID_EVENT),
            }
        }
        AuthContext::None | AuthContext::Service { .. } => {
            Ok(non_empty_string(value).ok_or(INVALID_EVENT)?.to_owned())
        }
    }
}

/// `producer_seq`: a JSON integer literal or a digit string, ≥ 1 and below 2^63.
pub fn parse_producer_seq(value: Option<&Value>) -> Option<u64> {
    let seq = match value? {
        Value::Number(number) => integer_literal(number, SEQ_EXCLUSIVE_MAX)?,
        Value::String(text) => parse_digits(text, SEQ_EXCLUSIVE_MAX)?,
        _ => return None,
    };
    (seq >= 1).then_some(seq)
}

/// `expected_seq`: absent/`null`, or an integer ≥ 0 or digit string that fits in 64 bits.
pub fn parse_expected_seq(value: Option<&Value>) -> Result<Option<u64>, FixedError> {
    let parsed = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(number)) => integer_literal(number, u64::MAX),
        Some(Value::String(text)) => parse_digits(text, u64::MAX),
        Some(_) => None,
    };
    parsed.map(Some).ok_or(INVALID_EVENT)
}

/// A non-negative JSON integer literal (no sign, fraction or exponent) below `exclusive_max`.
/// With `arbitrary_precision` the number keeps its literal text, so `1.0` and `1e2` are seen as
/// written.
fn integer_literal(number: &Number, exclusive_max: u64) -> Option<u64> {
    parse_digits(&number.to_string(), exclusive_max)
}

/// `refs` sub-fields: `to_seq`/`step` are a non-negative integer, a digit string or `null`;
/// `request_id`/`sequence_id` are a string or `null`. Other keys are free.
fn validate_refs(refs: &Map<String, Value>) -> Result<&Map<String, Value>, FixedError> {
    for key in ["to_seq", "step"] {
        let valid = match refs.get(key) {
            None | Some(Value::Null) => true,
            Some(Value::Number(number)) => {
                number.to_string().bytes().all(|byte| byte.is_ascii_digit())
            }
            Some(Value::String(text)) => {
                !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
            }
            Some(_) => false,
        };
        if !valid {
            return Err(INVALID_EVENT);
        }
    }
    for key in ["request_id", "sequence_id"] {
        if !matches!(
            refs.get(key),
            None | Some(Value::Null) | Some(Value::String(_))
        ) {
            return Err(INVALID_EVENT);
        }
    }
    Ok(refs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(object) => object,
            _ => panic!("test bodies are objects"),
        }
    }

    fn parse_json(text: &str) -> Map<String, Value> {
        object(serde_json::from_str(text).unwrap())
    }

    fn base() -> Value {
        json!({"type":"t","payload":{},"actor":"a","producer_id":"p","producer_seq":1})
    }

    fn with(field: &str, value: Value) -> Map<String, Value> {
        let mut body = object(base());
        body.insert(field.to_owned(), value);
        body
    }

    fn without(field: &str) -> Map<String, Value> {
        let mut body = object(base());
        body.remove(field);
        body
    }

    fn check(body: &Map<String, Value>) -> Result<AppendRequest, FixedError> {
        validate_append("s1", body, &AuthContext::None)
    }

    #[test]
    fn accepts_the_minimal_event() {
        let request = check(&object(base())).unwrap();
        assert_eq!(request.events.len(), 1);
        assert_eq!(request.events[0].producer_seq, 1);
        assert_eq!(request.expected_seq, None);
    }

    #[test]
    fn rejects_each_field_with_its_error() {
        let cases: Vec<(Map<String, Value>, FixedError)> = vec![
            (without("type"), INVALID_EVENT),
            (with("type", json!("")), INVALID_EVENT),
            (with("type", json!(1)), INVALID_EVENT),
            (without("payload"), INVALID_EVENT),
            (with("payload", json!([])), INVALID_EVENT),
            (with("payload", json!("x")), INVALID_EVENT),
            (with("payload", json!(null)), INVALID_EVENT),
            (without("producer_id"), INVALID_EVENT),
            (with("producer_id", json!("")), INVALID_EVENT),
            (without("producer_seq"), INVALID_EVENT),
            (without("actor"), INVALID_EVENT),
            (with("actor", json!("")), INVALID_EVENT),
            (with("actor", json!(null)), INVALID_EVENT),
            (with("source", json!("")), INVALID_EVENT),
            (with("source", json!(1)), INVALID_EVENT),
            (with("metadata", json!([])), INVALID_METADATA),
            (with("metadata", json!("x")), INVALID_METADATA),
            (with("refs", json!([])), INVALID_REFS),
            (with("refs", json!({"to_seq": -1})), INVALID_EVENT),
            (with("refs", json!({"to_seq": 1.5})), INVALID_EVENT),
            (with("refs", json!({"step": "x"})), INVALID_EVENT),
            (with("refs", json!({"step": ""})), INVALID_EVENT),
            (with("refs", json!({"request_id": 1})), INVALID_EVENT),
            (with("refs", json!({"sequence_id": {}})), INVALID_EVENT),
            (with("idempotency_key", json!("")), INVALID_EVENT),
            (with("idempotency_key", json!(5)), INVALID_EVENT),
            (with("expected_seq", json!(-1)), INVALID_EVENT),
            (with("expected_seq", json!("x")), INVALID_EVENT),
            (with("expected_seq", json!(1.0)), INVALID_EVENT),
        ];
        for (body, expected) in cases {
            assert_eq!(check(&body), Err(expected), "{body:?}");
        }
    }

    #[test]
    fn first_invalid_field_in_order_decides() {
        let mut body = with("payload", json!([]));
        body.insert("metadata".to_owned(), json!(1));
        assert_eq!(check(&body), Err(INVALID_EVENT));
        let mut body = with("metadata", json!(1));
        body.insert("refs".to_owned(), json!(1));
        assert_eq!(check(&body), Err(INVALID_METADATA));
    }

    #[test]
    fn accepts_the_optional_forms() {
        let mut body = object(base());
        for (key, value) in [
            ("source", json!("agent")),
            ("metadata", json!(null)),
            (
                "refs",
                json!({"to_seq": "12", "step": 0, "request_id": null, "sequence_id": "x", "other": [1]}),
            ),
            ("idempotency_key", json!("k")),
            ("expected_seq", json!("0")),
        ] {
            body.insert(key.to_owned(), value);
        }
        let request = check(&body).unwrap();
        assert_eq!(request.expected_seq, Some(0));
        assert_eq!(request.events[0].refs.get("to_seq"), Some(&json!("12")));
    }

    #[test]
    fn producer_seq_forms() {
        let seq_of = |literal: &str| {
            let body = parse_json(&format!(
                r#"{{"type":"t","payload":{{}},"actor":"a","producer_id":"p","producer_seq":{literal}}}"#
            ));
            check(&body).map(|request| request.events[0].producer_seq)
        };
        assert_eq!(seq_of("1"), Ok(1));
        assert_eq!(seq_of("\"1\""), Ok(1));
        assert_eq!(seq_of("\"007\""), Ok(7));
        assert_eq!(seq_of("9223372036854775807"), Ok((1 << 63) - 1));
        for invalid in [
            "0",
            "\"0\"",
            "-1",
            "1.0",
            "1e2",
            "1E2",
            "\"\"",
            "\" 1\"",
            "\"1 \"",
            "\"+1\"",
            "\"1.0\"",
            "9223372036854775808",
            "\"9223372036854775808\"",
            "123456789012345678901234567890",
            "null",
            "true",
            "[1]",
            "{}",
        ] {
            assert_eq!(seq_of(invalid), Err(INVALID_EVENT), "{invalid}");
        }
    }

    #[test]
    fn batch_rules() {
        let batch = |events: Value| object(json!({"events": events}));
        assert_eq!(
            check(&batch(json!([base(), base()]))).unwrap().events.len(),
            2
        );
        assert_eq!(check(&batch(json!([]))), Err(INVALID_EVENT));
        assert_eq!(check(&batch(json!({}))), Err(INVALID_EVENT));
        assert_eq!(check(&batch(json!(null))), Err(INVALID_EVENT));
        assert_eq!(check(&batch(json!([base(), 5]))), Err(INVALID_EVENT));
        let too_many: Vec<Value> = (0..=BATCH_EVENTS_MAX).map(|_| base()).collect();
        assert_eq!(check(&batch(Value::Array(too_many))), Err(INVALID_EVENT));
        let exactly_max: Vec<Value> = (0..BATCH_EVENTS_MAX).map(|_| base()).collect();
        assert!(check(&batch(Value::Array(exactly_max))).is_ok());
        let mut element_with_expected = object(base());
        element_with_expected.insert("expected_seq".to_owned(), json!(1));
        assert_eq!(
            check(&batch(json!([base(), element_with_expected]))),
            Err(INVALID_EVENT)
        );
        let mut bad_metadata = object(base());
        bad_metadata.insert("metadata".to_owned(), json!(1));
        let mut bad_refs = object(base());
        bad_refs.insert("refs".to_owned(), json!(1));
        assert_eq!(
            check(&batch(json!([base(), bad_metadata, bad_refs]))),
            Err(INVALID_METADATA)
        );
        let mut top = batch(json!([base()]));
        top.insert("expected_seq".to_owned(), json!("3"));
        assert_eq!(check(&top).unwrap().expected_seq, Some(3));
        top.insert("expected_seq".to_owned(), json!("x"));
        assert_eq!(check(&top), Err(INVALID_EVENT));
    }
}
