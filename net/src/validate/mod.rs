//! Validation of request parameters and bodies. Every function is pure: a decoded JSON value
//! in, a typed value or the catalogue error out.
//!
//! - this file: `limit`, the two kinds of `cursor`, and the list metadata filter (§4, §8, §9);
//! - [`session`]: the create body (§3);
//! - [`event`]: single and batch append bodies (§6, §7).

pub mod event;
pub mod session;

use serde_json::{Map, Value};

use crate::error::{FixedError, INVALID_CURSOR, INVALID_LIMIT, INVALID_METADATA};

/// Default page size of list and range reads.
pub const LIMIT_DEFAULT: u32 = 100;
/// Largest page size of list and range reads.
pub const LIMIT_MAX: u32 = 1000;
/// Seqs, producer seqs and tail cursors are below 2^63 (semantics.md §2).
pub const SEQ_EXCLUSIVE_MAX: u64 = 1 << 63;

/// Parse an unsigned decimal made only of ASCII digits (leading zeros allowed, no sign, no
/// spaces) that is below `exclusive_max`; arbitrarily long digit strings never overflow.
pub fn parse_digits(text: &str, exclusive_max: u64) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let significant = text.trim_start_matches('0');
    if significant.len() > 20 {
        return None;
    }
    let value: u64 = if significant.is_empty() {
        0
    } else {
        significant.parse().ok()?
    };
    (value < exclusive_max).then_some(value)
}

/// `limit` of §4 and §9: digits only, 1..=1000, default 100.
pub fn parse_limit(value: Option<&Value>) -> Result<u32, FixedError> {
    let Some(value) = value else {
        return Ok(LIMIT_DEFAULT);
    };
    let text = value.as_str().ok_or(INVALID_LIMIT)?;
    match parse_digits(text, u64::from(LIMIT_MAX) + 1) {
        Some(limit) if limit >= 1 => u32::try_from(limit).map_err(|_| INVALID_LIMIT),
        _ => Err(INVALID_LIMIT),
    }
}

/// A seq cursor of §8 step 3 and §9: absent → 0, else digits only and below 2^63.
pub fn parse_seq_cursor(value: Option<&Value>) -> Result<u64, FixedError> {
    match value {
        None => Ok(0),
        Some(value) => {
            let text = value.as_str().ok_or(INVALID_CURSOR)?;
            parse_digits(text, SEQ_EXCLUSIVE_MAX).ok_or(INVALID_CURSOR)
        }
    }
}

/// The list cursor of §4: a non-empty string (exclusive lower bound on `id`).
pub fn parse_list_cursor(value: Option<&Value>) -> Result<Option<String>, FixedError> {
    match value {
        None => Ok(None),
        Some(Value::String(text)) if !text.is_empty() => Ok(Some(text.clone())),
        Some(_) => Err(INVALID_CURSOR),
    }
}

/// The metadata filter of §4 from the decoded query: `metadata[<key>]=<value>` must form an
/// object of strings with non-empty keys; `metadata.<key>=<value>` adds or overrides a key and is
/// ignored when its value is not a string. Returned sorted by key.
pub fn parse_list_metadata(
    query: &Map<String, Value>,
) -> Result<Vec<(String, String)>, FixedError> {
    let mut filters = std::collections::BTreeMap::new();
    if let Some(bracketed) = query.get("metadata") {
        let Value::Object(object) = bracketed else {
            return Err(INVALID_METADATA);
        };
        for (key, value) in object {
            let Value::String(text) = value else {
                return Err(INVALID_METADATA);
            };
            if key.is_empty() {
                return Err(INVALID_METADATA);
            }
            filters.insert(key.clone(), text.clone());
        }
    }
    for (key, value) in query {
        let Some(name) = key.strip_prefix("metadata.") else {
            continue;
        };
        if let (false, Value::String(text)) = (name.is_empty(), value) {
            filters.insert(name.to_owned(), text.clone());
        }
    }
    Ok(filters.into_iter().collect())
}

/// A value that the contract reads as "absent" (`null` counts as absent for optional fields).
pub(crate) fn is_absent(value: Option<&Value>) -> bool {
    matches!(value, None | Some(Value::Null))
}

/// A non-empty JSON string.
pub(crate) fn non_empty_string(value: Option<&Value>) -> Option<&str> {
    match value {
        Some(Value::String(text)) if !text.is_empty() => Some(text),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::query::parse_query;
    use serde_json::json;

    fn limit_of(raw_query: &str) -> Result<u32, FixedError> {
        parse_limit(parse_query(raw_query.as_bytes()).get("limit"))
    }

    fn cursor_of(raw_query: &str) -> Result<u64, FixedError> {
        parse_seq_cursor(parse_query(raw_query.as_bytes()).get("cursor"))
    }

    #[test]
    fn limit_accepts_the_valid_forms() {
        for (raw, expected) in [
            ("", 100),
            ("limit=1", 1),
            ("limit=1000", 1000),
            ("limit=007", 7),
        ] {
            assert_eq!(limit_of(raw), Ok(expected), "{raw}");
        }
    }

    #[test]
    fn limit_rejects_every_listed_invalid_example() {
        for raw in [
            "limit=0",
            "limit=1001",
            "limit=abc",
            "limit=%205",
            "limit=5%20",
            "limit=5+",
            "limit=%2B5",
            "limit=-1",
            "limit=1.0",
            "limit=1e2",
            "limit=",
            "limit=99999999999999999999",
            "limit=000000000000000000000000000000001001",
            "limit[]=5",
            "limit[a]=5",
        ] {
            assert_eq!(limit_of(raw), Err(INVALID_LIMIT), "{raw}");
        }
        assert_eq!(
            limit_of("limit=000000000000000000000000000000000005"),
            Ok(5)
        );
    }

    #[test]
    fn seq_cursor_follows_the_tail_rules() {
        for (raw, expected) in [
            ("", 0),
            ("cursor=0", 0),
            ("cursor=007", 7),
            ("cursor=9223372036854775807", (1 << 63) - 1),
        ] {
            assert_eq!(cursor_of(raw), Ok(expected), "{raw}");
        }
        for raw in [
            "cursor=-1",
            "cursor=%2B2",
            "cursor=+2",
            "cursor=1.5",
            "cursor=1e3",
            "cursor=0x10",
            "cursor=%20",
            "cursor=+",
            "cursor=%201",
            "cursor=1%20",
            "cursor=",
            "cursor=bad",
            "cursor=9223372036854775808",
            "cursor=18446744073709551616",
            "cursor=123456789012345678901234567890",
            "cursor[]=1",
        ] {
            assert_eq!(cursor_of(raw), Err(INVALID_CURSOR), "{raw}");
        }
    }

    #[test]
    fn list_cursor_must_be_a_non_empty_string() {
        assert_eq!(parse_list_cursor(None), Ok(None));
        assert_eq!(
            parse_list_cursor(Some(&json!("ses_a"))),
            Ok(Some("ses_a".to_owned()))
        );
        assert_eq!(parse_list_cursor(Some(&json!(""))), Err(INVALID_CURSOR));
        assert_eq!(
            parse_list_cursor(Some(&json!({"a":"b"}))),
            Err(INVALID_CURSOR)
        );
    }

    #[test]
    fn list_metadata_rules() {
        let filters = |raw: &str| parse_list_metadata(&parse_query(raw.as_bytes()));
        assert_eq!(
            filters("metadata[b]=2&metadata[a]=1"),
            Ok(vec![("a".into(), "1".into()), ("b".into(), "2".into())])
        );
        assert_eq!(
            filters("metadata.a=x&metadata[a]=1"),
            Ok(vec![("a".into(), "x".into())])
        );
        assert_eq!(filters("metadata.a[b]=x"), Ok(vec![]));
        assert_eq!(filters("metadata=x"), Err(INVALID_METADATA));
        assert_eq!(filters("metadata[a][b]=x"), Err(INVALID_METADATA));
        assert_eq!(filters("metadata[]=x"), Err(INVALID_METADATA));
        assert_eq!(filters("metadata[a][]=x"), Err(INVALID_METADATA));
    }
}
