//! Compact and canonical JSON writers.
//!
//! Both writers are infallible (they append to a `Vec<u8>`) and never depend on anything but the
//! value, which keeps frames and fingerprints identical on every replica and across versions.
//! `serde_json` is built with `arbitrary_precision`, so a [`Number`] carries the exact text it was
//! parsed from; the compact writer emits that text unchanged (lossless storage, semantics.md §2)
//! and the canonical writer normalises it (semantics.md §3).

use serde_json::{Map, Number, Value};

/// Append `text` as a JSON string with minimal escaping: `"` and `\`, the short escapes `\b \f \n
/// \r \t`, and `\u00xx` (lowercase hex) for the other control characters below U+0020. Everything
/// else, including non-ASCII characters and U+007F, is written as raw UTF-8.
pub fn write_string(out: &mut Vec<u8>, text: &str) {
    const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut run_start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match byte {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x00..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[run_start..index]);
        run_start = index + 1;
        match escape {
            Some(sequence) => out.extend_from_slice(sequence),
            None => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX_DIGITS[usize::from(byte >> 4)]);
                out.push(HEX_DIGITS[usize::from(byte & 0x0f)]);
            }
        }
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

/// Append `value` as compact JSON: no whitespace, object keys in the map's order (sorted, since
/// `serde_json` is built without `preserve_order`), numbers exactly as their stored text (the
/// parser keeps the literal, normalising only the exponent marker: `1E3` is stored as `1e+3`).
pub fn write_compact_value(out: &mut Vec<u8>, value: &Value) {
    write_value(out, value, Style::Compact);
}

/// Append a JSON object as compact JSON (see [`write_compact_value`]).
pub fn write_compact_object(out: &mut Vec<u8>, object: &Map<String, Value>) {
    write_object(out, object, Style::Compact);
}

/// Append `value` as canonical JSON (semantics.md §3): no whitespace, object keys sorted by their
/// UTF-8 bytes, minimal string escaping, integers in plain decimal, other numbers in shortest
/// round-trip form containing `.` or `e`.
pub fn write_canonical_value(out: &mut Vec<u8>, value: &Value) {
    write_value(out, value, Style::Canonical);
}

/// Append a JSON object as canonical JSON (see [`write_canonical_value`]).
pub fn write_canonical_object(out: &mut Vec<u8>, object: &Map<String, Value>) {
    write_object(out, object, Style::Canonical);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Compact,
    Canonical,
}

/// One pending step of the iterative writer: values are written without recursion so that the
/// writer's stack use does not depend on the input's nesting depth.
enum Step<'a> {
    Value(&'a Value),
    Key(&'a str),
    Byte(u8),
}

fn write_value(out: &mut Vec<u8>, value: &Value, style: Style) {
    run(out, vec![Step::Value(value)], style);
}

fn write_object(out: &mut Vec<u8>, object: &Map<String, Value>, style: Style) {
    out.push(b'{');
    let mut pending = vec![Step::Byte(b'}')];
    push_object_members(&mut pending, object, style);
    run(out, pending, style);
}

/// Pop and write steps until none remain; containers push their members instead of recursing.
fn run<'a>(out: &mut Vec<u8>, mut pending: Vec<Step<'a>>, style: Style) {
    while let Some(step) = pending.pop() {
        match step {
            Step::Byte(byte) => out.push(byte),
            Step::Key(key) => {
                write_string(out, key);
                out.push(b':');
            }
            Step::Value(value) => match value {
                Value::Null => out.extend_from_slice(b"null"),
                Value::Bool(true) => out.extend_from_slice(b"true"),
                Value::Bool(false) => out.extend_from_slice(b"false"),
                Value::Number(number) => match style {
                    Style::Compact => out.extend_from_slice(number.as_str().as_bytes()),
                    Style::Canonical => write_canonical_number(out, number),
                },
                Value::String(text) => write_string(out, text),
                Value::Array(items) => {
                    out.push(b'[');
                    pending.push(Step::Byte(b']'));
                    for (position, item) in items.iter().enumerate().rev() {
                        pending.push(Step::Value(item));
                        if position > 0 {
                            pending.push(Step::Byte(b','));
                        }
                    }
                }
                Value::Object(object) => {
                    out.push(b'{');
                    pending.push(Step::Byte(b'}'));
                    push_object_members(&mut pending, object, style);
                }
            },
        }
    }
}

/// Push the members of `object` onto the pending stack so that they pop in output order.
fn push_object_members<'a>(
    pending: &mut Vec<Step<'a>>,
    object: &'a Map<String, Value>,
    style: Style,
) {
    let mut members: Vec<(&'a String, &'a Value)> = object.iter().collect();
    if style == Style::Canonical {
        // `str` orders by UTF-8 bytes; sorting here keeps the fingerprint independent of the
        // map's own iteration order.
        members.sort_by(|left, right| left.0.as_bytes().cmp(right.0.as_bytes()));
    }
    for (position, (key, value)) in members.into_iter().enumerate().rev() {
        pending.push(Step::Value(value));
        pending.push(Step::Key(key));
        if position > 0 {
            pending.push(Step::Byte(b','));
        }
    }
}

/// Canonical number text: integers (no `.`, `e` or `E` in the stored text, any magnitude) in
/// plain decimal with `-0` written as `0`; other numbers in shortest round-trip form via `ryu`,
/// which always contains `.` or `e` (`1.0`, `1000.0`, `1e16`, `1.5e-7`).
fn write_canonical_number(out: &mut Vec<u8>, number: &Number) {
    let text = number.as_str();
    let is_integer = !text.bytes().any(|byte| matches!(byte, b'.' | b'e' | b'E'));
    if is_integer {
        let digits = text.strip_prefix('-').unwrap_or(text);
        if digits.bytes().all(|byte| byte == b'0') {
            out.push(b'0');
        } else {
            // JSON forbids leading zeros and `+`, so the parsed text is already plain decimal.
            out.extend_from_slice(text.as_bytes());
        }
        return;
    }
    match text.parse::<f64>() {
        Ok(float) if float.is_finite() => {
            let mut buffer = ryu::Buffer::new();
            let formatted = buffer.format_finite(float);
            out.extend_from_slice(formatted.as_bytes());
            if !formatted.bytes().any(|byte| matches!(byte, b'.' | b'e')) {
                // Not produced by the current `ryu`; kept so that the rule "always contains `.`
                // or `e`" holds whatever the formatter does.
                out.extend_from_slice(b".0");
            }
        }
        // A literal beyond the f64 range (`1e400`) has no finite shortest form; its stored text,
        // lowercased, is deterministic and still distinguishes it from every finite number.
        _ => out.extend_from_slice(text.to_ascii_lowercase().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> String {
        let value: Value = serde_json::from_str(text).expect("test JSON parses");
        let mut out = Vec::new();
        write_canonical_value(&mut out, &value);
        String::from_utf8(out).expect("canonical JSON is UTF-8")
    }

    fn compact(text: &str) -> String {
        let value: Value = serde_json::from_str(text).expect("test JSON parses");
        let mut out = Vec::new();
        write_compact_value(&mut out, &value);
        String::from_utf8(out).expect("compact JSON is UTF-8")
    }

    #[test]
    fn canonical_numbers() {
        assert_eq!(canonical("1"), "1");
        assert_eq!(canonical("-0"), "0");
        assert_eq!(canonical("1.0"), "1.0");
        assert_eq!(canonical("1e3"), "1000.0");
        assert_eq!(canonical("1E3"), "1000.0");
        assert_eq!(canonical("1.50"), "1.5");
        assert_eq!(canonical("0.1"), "0.1");
        assert_eq!(canonical("1e16"), "1e16");
        assert_eq!(canonical("-2.5e-7"), "-2.5e-7");
        assert_eq!(
            canonical("123456789012345678901234567890"),
            "123456789012345678901234567890"
        );
        assert_eq!(canonical("-18446744073709551616"), "-18446744073709551616");
        assert_eq!(canonical("1e400"), "1e+400");
    }

    #[test]
    fn canonical_sorts_keys_by_bytes_at_every_level() {
        assert_eq!(
            canonical(r#"{"b":1,"a":{"z":[1,{"y":2,"x":1}],"é":0,"Z":0}}"#),
            r#"{"a":{"Z":0,"z":[1,{"x":1,"y":2}],"é":0},"b":1}"#
        );
    }

    #[test]
    fn strings_use_minimal_escaping() {
        assert_eq!(
            compact("\"q\\\" b\\\\ \\n\\r\\t\\b\\f \\u0001 \\u007f é / \\u2028\""),
            "\"q\\\" b\\\\ \\n\\r\\t\\b\\f \\u0001 \u{7f} é / \u{2028}\""
        );
    }

    #[test]
    fn compact_keeps_number_text() {
        // The parser keeps the number text, normalising only the exponent marker to `e+`/`e-`.
        assert_eq!(
            compact(r#"{"a":[1.0,1e3,-0,1E+2,1.50,{}],"b":null}"#),
            r#"{"a":[1.0,1e+3,-0,1e+2,1.50,{}],"b":null}"#
        );
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let depth = 100_000;
        let mut value = Value::Array(Vec::new());
        for _ in 0..depth {
            value = Value::Array(vec![value]);
        }
        let mut out = Vec::new();
        write_compact_value(&mut out, &value);
        assert_eq!(out.len(), 2 * (depth + 1));
        // Dropping a deeply nested Value recurses inside serde_json; unwind it by hand.
        let mut current = value;
        while let Value::Array(mut items) = current {
            current = items.pop().unwrap_or(Value::Null);
        }
    }
}
