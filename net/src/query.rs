//! Query strings and form bodies (http-api.md T7) and path segments (T8).
//!
//! `a=1&b[c]=2&d[]=3&d[]=4` decodes to `{"a":"1","b":{"c":"2"},"d":["3","4"]}`. All leaf values
//! are strings. `+` means space and percent-decoding applies to keys and values. A repeated
//! scalar key keeps its last value; when a later pair needs an object (or array) where an
//! earlier pair put something else, the later pair wins, so the rule "last one wins" holds at
//! every level. A key whose brackets are not well formed (`a[b`, `a]`, `[b]`) is taken literally.

use serde_json::{Map, Value};

/// Most pairs decoded from one query string or form body; further pairs are ignored. Bodies are
/// already bounded by the body limit, so this only caps the work done per request.
pub const QUERY_PAIRS_MAX: usize = 10_000;

/// Most bracket levels of one key (`a[b][c]` has two); deeper keys are taken literally.
pub const QUERY_KEY_DEPTH_MAX: usize = 32;

/// Decode `+` as space and `%XX` escapes into bytes. A `%` not followed by two hex digits is
/// kept literally.
pub fn percent_decode_bytes(input: &[u8], plus_as_space: bool) -> Vec<u8> {
    let mut output = Vec::with_capacity(input.len());
    let mut index = 0;
    while index < input.len() {
        let byte = input[index];
        if byte == b'%' && index + 2 < input.len() {
            if let (Some(high), Some(low)) =
                (hex_value(input[index + 1]), hex_value(input[index + 2]))
            {
                output.push(high << 4 | low);
                index += 3;
                continue;
            }
        }
        if byte == b'+' && plus_as_space {
            output.push(b' ');
        } else {
            output.push(byte);
        }
        index += 1;
    }
    output
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Percent-decode one path segment (T8: `+` stays `+` in paths). `None` when the decoded bytes
/// are not UTF-8, which no route parameter can match.
pub fn decode_path_segment(segment: &str) -> Option<String> {
    String::from_utf8(percent_decode_bytes(segment.as_bytes(), false)).ok()
}

/// Decode a query string or `application/x-www-form-urlencoded` body into a JSON object.
/// Invalid UTF-8 after decoding is replaced with U+FFFD rather than rejected, since no value
/// the routes accept can contain it anyway.
pub fn parse_query(input: &[u8]) -> Map<String, Value> {
    let mut root = Value::Object(Map::new());
    for pair in input
        .split(|byte| *byte == b'&')
        .filter(|pair| !pair.is_empty())
        .take(QUERY_PAIRS_MAX)
    {
        let (raw_key, raw_value) = match pair.iter().position(|byte| *byte == b'=') {
            Some(position) => (&pair[..position], &pair[position + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        let key = String::from_utf8_lossy(&percent_decode_bytes(raw_key, true)).into_owned();
        let value = String::from_utf8_lossy(&percent_decode_bytes(raw_value, true)).into_owned();
        if key.is_empty() {
            continue;
        }
        insert_pair(&mut root, &split_key(&key), value);
    }
    match root {
        Value::Object(object) => object,
        _ => Map::new(),
    }
}

/// One step of a decoded key path.
#[derive(Debug, PartialEq, Eq)]
enum KeyPart {
    /// `name` or `[name]`.
    Name(String),
    /// `[]`: append to an array.
    Push,
}

/// Split `a[b][]` into `[Name(a), Name(b), Push]`; a malformed key is one literal name.
fn split_key(key: &str) -> Vec<KeyPart> {
    let literal = || vec![KeyPart::Name(key.to_owned())];
    let Some(open) = key.find('[') else {
        return literal();
    };
    if open == 0 {
        return literal();
    }
    let mut parts = vec![KeyPart::Name(key[..open].to_owned())];
    let mut rest = &key[open..];
    while !rest.is_empty() {
        if parts.len() > QUERY_KEY_DEPTH_MAX || !rest.starts_with('[') {
            return literal();
        }
        let Some(close) = rest.find(']') else {
            return literal();
        };
        let name = &rest[1..close];
        if name.contains('[') {
            return literal();
        }
        parts.push(if name.is_empty() {
            KeyPart::Push
        } else {
            KeyPart::Name(name.to_owned())
        });
        rest = &rest[close + 1..];
    }
    parts
}

/// Walk `parts` from `root`, creating objects and arrays as needed, and store `value` at the end.
fn insert_pair(root: &mut Value, parts: &[KeyPart], value: String) {
    let mut node = root;
    for (position, part) in parts.iter().enumerate() {
        let last = position + 1 == parts.len();
        let container_for_next = || match parts.get(position + 1) {
            Some(KeyPart::Push) => Value::Array(Vec::new()),
            _ => Value::Object(Map::new()),
        };
        match part {
            KeyPart::Name(name) => {
                if !node.is_object() {
                    *node = Value::Object(Map::new());
                }
                let Value::Object(object) = node else { return };
                if last {
                    object.insert(name.clone(), Value::String(value));
                    return;
                }
                let slot = object
                    .entry(name.clone())
                    .or_insert_with(container_for_next);
                let wants_array = matches!(parts.get(position + 1), Some(KeyPart::Push));
                if wants_array != slot.is_array() || !(slot.is_array() || slot.is_object()) {
                    *slot = container_for_next();
                }
                node = slot;
            }
            KeyPart::Push => {
                if !node.is_array() {
                    *node = Value::Array(Vec::new());
                }
                let Value::Array(array) = node else { return };
                if last {
                    array.push(Value::String(value));
                    return;
                }
                array.push(container_for_next());
                let Some(slot) = array.last_mut() else { return };
                node = slot;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(input: &str) -> Value {
        Value::Object(parse_query(input.as_bytes()))
    }

    #[test]
    fn decodes_plus_and_percent() {
        assert_eq!(parse("a=b+c&d=%41%2f%zz%"), json!({"a":"b c","d":"A/%zz%"}));
        assert_eq!(parse("limit=5+"), json!({"limit":"5 "}));
        assert_eq!(parse("k%5Bx%5D=1"), json!({"k":{"x":"1"}}));
    }

    #[test]
    fn nests_brackets_and_builds_arrays() {
        assert_eq!(parse("metadata[k]=v"), json!({"metadata":{"k":"v"}}));
        assert_eq!(parse("a[b][c]=v"), json!({"a":{"b":{"c":"v"}}}));
        assert_eq!(parse("a[]=1&a[]=2"), json!({"a":["1","2"]}));
        assert_eq!(parse("a[][b]=1"), json!({"a":[{"b":"1"}]}));
    }

    #[test]
    fn last_value_wins() {
        assert_eq!(parse("a=1&a=2"), json!({"a":"2"}));
        assert_eq!(parse("a=1&a[b]=2"), json!({"a":{"b":"2"}}));
        assert_eq!(parse("a[b]=2&a=1"), json!({"a":"1"}));
        assert_eq!(parse("a[]=1&a[b]=2"), json!({"a":{"b":"2"}}));
    }

    #[test]
    fn malformed_keys_are_literal() {
        assert_eq!(parse("a[b=1"), json!({"a[b":"1"}));
        assert_eq!(parse("[b]=1"), json!({"[b]":"1"}));
        assert_eq!(parse("a[b]c=1"), json!({"a[b]c":"1"}));
        assert_eq!(parse("metadata.k=1"), json!({"metadata.k":"1"}));
    }

    #[test]
    fn empty_pairs_and_missing_values() {
        assert_eq!(parse("&&a&b=&=c"), json!({"a":"","b":""}));
        assert_eq!(parse(""), json!({}));
    }

    #[test]
    fn path_segments_decode_without_plus() {
        assert_eq!(decode_path_segment("a%2Fb+c").as_deref(), Some("a/b+c"));
        assert_eq!(decode_path_segment("%FF"), None);
    }
}
