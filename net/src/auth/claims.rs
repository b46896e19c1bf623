//! Readers for JSON claims shared by service JWTs and principal tokens. Both accept only JSON
//! integer literals for times: `"exp": "1"`, `1.0` and `1e3` are invalid (auth.md §4 step 4).

use serde_json::{Map, Value};

/// The claim as a JSON integer literal that fits in `i64`; `None` when absent or not one.
pub fn integer_claim(claims: &Map<String, Value>, key: &str) -> Option<i64> {
    match claims.get(key)? {
        // With `arbitrary_precision` a number keeps its literal, so fractions and exponents
        // fail to parse as an integer here instead of being rounded.
        Value::Number(number) => number.as_i64(),
        _ => None,
    }
}

/// A non-empty array of non-empty strings.
pub fn non_empty_string_list(value: &Value) -> Option<Vec<String>> {
    let Value::Array(items) = value else {
        return None;
    };
    if items.is_empty() {
        return None;
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(text) if !text.is_empty() => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// Remove later duplicates, keeping the first occurrence of each value.
pub fn dedupe_keep_first(values: Vec<String>) -> Vec<String> {
    let mut unique: Vec<String> = Vec::with_capacity(values.len());
    for value in values {
        if !unique.contains(&value) {
            unique.push(value);
        }
    }
    unique
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_integer_literals_count() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"a":5,"b":"5","c":5.0,"d":5e0,"e":-3,"f":99999999999999999999}"#,
        )
        .unwrap();
        assert_eq!(integer_claim(&claims, "a"), Some(5));
        assert_eq!(integer_claim(&claims, "e"), Some(-3));
        for key in ["b", "c", "d", "f", "missing"] {
            assert_eq!(integer_claim(&claims, key), None, "{key}");
        }
    }

    #[test]
    fn string_lists() {
        assert_eq!(
            non_empty_string_list(&json!(["a", "b"])),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(non_empty_string_list(&json!([])), None);
        assert_eq!(non_empty_string_list(&json!(["a", ""])), None);
        assert_eq!(non_empty_string_list(&json!(["a", 1])), None);
        assert_eq!(non_empty_string_list(&json!("a")), None);
        assert_eq!(
            dedupe_keep_first(vec!["b".into(), "a".into(), "b".into()]),
            vec!["b".to_owned(), "a".to_owned()]
        );
    }
}
