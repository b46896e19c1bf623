//! Bearer extraction (auth.md §2): from the `Authorization` header on every authenticating
//! route, and on the tail route from the `access_token` query parameter when no header is sent.

use serde_json::{Map, Value};

use crate::http::RequestHead;

/// Why no token could be taken from a request. Both become a `401` with their own
/// `WWW-Authenticate` form (auth.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BearerError {
    /// No `Authorization` header (and, on the tail route, no `access_token`).
    Missing,
    /// Several headers, another scheme, an empty token, or a token with a space or a comma.
    Malformed,
}

/// The token of the request's single `Authorization: Bearer <token>` header.
pub fn bearer_from_header(head: &RequestHead) -> Result<&str, BearerError> {
    let mut values = head.header_values("authorization");
    let value = values.next().ok_or(BearerError::Missing)?;
    if values.next().is_some() {
        return Err(BearerError::Malformed);
    }
    let value = std::str::from_utf8(value).map_err(|_| BearerError::Malformed)?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(BearerError::Malformed);
    }
    checked_token(token)
}

/// The tail route's token: the `Authorization` header wins whenever one is present (even a
/// malformed one); otherwise `access_token` from the decoded query, under the same token rules.
pub fn bearer_for_tail<'a>(
    head: &'a RequestHead,
    query: &'a Map<String, Value>,
) -> Result<&'a str, BearerError> {
    if head.header("authorization").is_some() {
        return bearer_from_header(head);
    }
    match query.get("access_token") {
        None => Err(BearerError::Missing),
        Some(Value::String(token)) => checked_token(token),
        // `access_token[x]=...` nests into an object (http-api.md T7): not a token.
        Some(_) => Err(BearerError::Malformed),
    }
}

fn checked_token(token: &str) -> Result<&str, BearerError> {
    if token.is_empty() || token.contains([' ', ',']) {
        Err(BearerError::Malformed)
    } else {
        Ok(token)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn head(values: &[&str]) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            version_minor: 1,
            headers: values
                .iter()
                .map(|value| ("authorization".to_owned(), value.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn header_forms_follow_auth_md_section_2() {
        assert_eq!(bearer_from_header(&head(&[])), Err(BearerError::Missing));
        assert_eq!(bearer_from_header(&head(&["Bearer abc"])), Ok("abc"));
        assert_eq!(bearer_from_header(&head(&["bEaReR abc "])), Ok("abc"));
        for malformed in [
            "Bearer",
            "Bearer ",
            "Bearer    ",
            "Bearer a b",
            "Bearer a,b",
            "Bearer  a",
            "Basic xyz",
            "",
        ] {
            assert_eq!(
                bearer_from_header(&head(&[malformed])),
                Err(BearerError::Malformed),
                "{malformed:?}"
            );
        }
        assert_eq!(
            bearer_from_header(&head(&["Bearer a", "Bearer a"])),
            Err(BearerError::Malformed)
        );
    }

    #[test]
    fn tail_header_wins_over_query() {
        let mut query = Map::new();
        query.insert("access_token".into(), "fromquery".into());
        assert_eq!(bearer_for_tail(&head(&[]), &query), Ok("fromquery"));
        assert_eq!(bearer_for_tail(&head(&["Bearer h"]), &query), Ok("h"));
        assert_eq!(
            bearer_for_tail(&head(&["Basic h"]), &query),
            Err(BearerError::Malformed)
        );
        query.insert("access_token".into(), "".into());
        assert_eq!(
            bearer_for_tail(&head(&[]), &query),
            Err(BearerError::Malformed)
        );
        assert_eq!(
            bearer_for_tail(&head(&[]), &Map::new()),
            Err(BearerError::Missing)
        );
    }
}
