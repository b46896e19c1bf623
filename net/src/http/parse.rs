//! Request heads: httparse plus the framing decisions of RFC 9112 that matter here (body
//! length, persistence, `Expect: 100-continue`).

use crate::error::{FixedError, BAD_REQUEST, HEADERS_TOO_LARGE, NOT_IMPLEMENTED};

use super::Limits;

/// A parsed request head, owning its data so the read buffer can be reused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Method as sent (case-sensitive, per RFC 9110).
    pub method: String,
    /// Raw path (no query), not percent-decoded.
    pub path: String,
    /// Raw query string without the `?`; empty when absent.
    pub query: String,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub version_minor: u8,
    /// Headers in arrival order, names lowercased.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    Empty,
    /// Exactly this many bytes follow.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Framing and persistence decided from a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framing {
    /// How the body is delimited.
    pub body: BodyFraming,
    /// Whether the client wants the connection kept open after the response.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub expects_continue: bool,
}

impl RequestHead {
    /// Every value of header `name` (lowercase) in arrival order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(header, _)| header == name)
            .map(|(_, value)| value.as_slice())
    }

    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_slice())
    }

    /// Whether any value of header `name` holds `token` in its comma-separated list
    /// (case-insensitive), as for `Connection` and `Upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_values(name).any(|value| {
            value
                .split(|byte| *byte == b',')
                .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    }
}

/// Parse a head from the front of `buffer`. `Ok(None)` means more bytes are needed; `Ok(Some)`
/// also returns the number of head bytes consumed.
pub fn parse_head(
    buffer: &[u8],
    limits: &Limits,
) -> Result<Option<(RequestHead, usize)>, FixedError> {
    let mut header_slots = vec![httparse::EMPTY_HEADER; limits.header_count_max];
    let mut request = httparse::Request::new(&mut header_slots);
    let consumed = match request.parse(buffer) {
        Ok(httparse::Status::Complete(consumed)) => consumed,
        Ok(httparse::Status::Partial) if buffer.len() >= limits.head_bytes_max => {
            return Err(HEADERS_TOO_LARGE)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HEADERS_TOO_LARGE),
        Err(_) => return Err(BAD_REQUEST),
    };
    if consumed > limits.head_bytes_max {
        return Err(HEADERS_TOO_LARGE);
    }
    let (Some(method), Some(target), Some(version_minor)) =
        (request.method, request.path, request.version)
    else {
        return Err(BAD_REQUEST);
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target, ""),
    };
    let headers = request
        .headers
        .iter()
        .map(|header| (header.name.to_ascii_lowercase(), header.value.to_vec()))
        .collect();
    let head = RequestHead {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        version_minor,
        headers,
    };
    Ok(Some((head, consumed)))
}

/// Decide body framing and persistence (RFC 9112 §6.3, §9.3). Requests that could be read two
/// ways (both `Transfer-Encoding` and `Content-Length`, conflicting lengths) are rejected rather
/// than guessed, since guessing is how request smuggling starts.
pub fn decide_framing(head: &RequestHead) -> Result<Framing, FixedError> {
    let keep_alive = if head.has_token("connection", "close") {
        false
    } else {
        head.version_minor >= 1 || head.has_token("connection", "keep-alive")
    };
    let expects_continue = head.version_minor >= 1
        && head
            .header("expect")
            .is_some_and(|value| value.trim_ascii().eq_ignore_ascii_case(b"100-continue"));
    let mut codings = head
        .header_values("transfer-encoding")
        .flat_map(|value| value.split(|byte| *byte == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty())
        .peekable();
    let body = if codings.peek().is_some() {
        if head.header("content-length").is_some() {
            return Err(BAD_REQUEST);
        }
        let all: Vec<&[u8]> = codings.collect();
        match all.as_slice() {
            [only] if only.eq_ignore_ascii_case(b"chunked") => BodyFraming::Chunked,
            _ => return Err(NOT_IMPLEMENTED),
        }
    } else {
        let mut length = None;
        for value in head.header_values("content-length") {
            for item in value.split(|byte| *byte == b',') {
                let parsed = parse_content_length(item.trim_ascii()).ok_or(BAD_REQUEST)?;
                if length.is_some_and(|previous| previous != parsed) {
                    return Err(BAD_REQUEST);
                }
                length = Some(parsed);
            }
        }
        match length {
            None | Some(0) => BodyFraming::Empty,
            Some(length) => BodyFraming::Length(length),
        }
    };
    Ok(Framing {
        body,
        keep_alive,
        expects_continue,
    })
}

/// Digits only; values too large for `u64` saturate (they are over any limit anyway).
fn parse_content_length(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(text.iter().fold(0_u64, |total, digit| {
        total
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn head(raw: &str) -> RequestHead {
        parse_head(raw.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap()
            .0
    }

    #[test]
    fn parses_a_head_and_splits_the_query() {
        let raw = "GET /v1/sessions?limit=5 HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc\r\n\r\nrest";
        let (parsed, consumed) = parse_head(raw.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(consumed, raw.len() - 4);
        assert_eq!(parsed.path, "/v1/sessions");
        assert_eq!(parsed.query, "limit=5");
        assert_eq!(parsed.header("x-request-id"), Some(&b"abc"[..]));
    }

    #[test]
    fn partial_heads_wait_and_oversized_heads_fail() {
        let limits = Limits::default();
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost:", &limits), Ok(None));
        let huge = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n",
            "a".repeat(limits.head_bytes_max)
        );
        assert_eq!(parse_head(huge.as_bytes(), &limits), Err(HEADERS_TOO_LARGE));
        let many: String = (0..=limits.header_count_max)
            .map(|index| format!("H{index}: v\r\n"))
            .collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_head(raw.as_bytes(), &limits), Err(HEADERS_TOO_LARGE));
        assert_eq!(
            parse_head(b"\x00\x01garbage\r\n\r\n", &limits),
            Err(BAD_REQUEST)
        );
    }

    #[test]
    fn framing_rules() {
        let framing = |raw: &str| decide_framing(&head(raw));
        let empty = framing("GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((empty.body, empty.keep_alive), (BodyFraming::Empty, true));
        assert!(!framing("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(
            framing("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(
            !framing("GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n")
                .unwrap()
                .body,
            BodyFraming::Length(12)
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nContent-Length: 12\r\nContent-Length: 12\r\n\r\n")
                .unwrap()
                .body,
            BodyFraming::Length(12)
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(BAD_REQUEST)
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Err(BAD_REQUEST)
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap()
                .body,
            BodyFraming::Chunked
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            Err(BAD_REQUEST)
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Err(NOT_IMPLEMENTED)
        );
        assert!(
            framing("POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n")
                .unwrap()
                .expects_continue
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n")
                .unwrap()
                .body,
            BodyFraming::Length(u64::MAX)
        );
    }
}
