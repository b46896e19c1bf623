//! Responses and their wire form.

use crate::error::{ApiError, FixedError};

/// `Content-Type` of every JSON response (http-api.md T2).
pub const CONTENT_TYPE_JSON: &str = "application/json; charset=utf-8";
/// Route label for requests that matched no route (metrics.md).
pub const ROUTE_UNMATCHED: &str = "unmatched";

/// A response before serialisation. `x-request-id`, `content-length` and `connection` are added
/// by the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra headers (lowercase names).
    pub headers: Vec<(&'static str, String)>,
    /// Body bytes (omitted on the wire for HEAD and 101).
    pub body: Vec<u8>,
    /// Route template for metrics (`/v1/sessions/:id`, `unmatched`).
    pub route: &'static str,
}

impl Response {
    /// A JSON response with `body` already serialised.
    pub fn json(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("content-type", CONTENT_TYPE_JSON.to_owned())],
            body,
            route: ROUTE_UNMATCHED,
        }
    }

    /// A JSON response from a value.
    pub fn json_value(status: u16, value: &serde_json::Value) -> Response {
        Response::json(status, value.to_string().into_bytes())
    }

    /// An error response in the catalogue envelope (plus `Retry-After` for 429).
    pub fn error(error: impl Into<ApiError>) -> Response {
        let error = error.into();
        let mut response = Response::json(error.status, error.body());
        if let Some(seconds) = error.retry_after_seconds {
            response.headers.push(("retry-after", seconds.to_string()));
        }
        response
    }

    /// An error response for a fixed catalogue entry.
    pub fn fixed(error: FixedError) -> Response {
        Response::error(error)
    }

    /// Set the metrics route label.
    pub fn with_route(mut self, route: &'static str) -> Response {
        self.route = route;
        self
    }

    /// Serialise the status line and headers, then the body unless `head_only`.
    /// `Content-Length` is always the full body length, so HEAD answers carry the same headers
    /// as GET (T11). A `101` carries no body and no length.
    pub fn to_bytes(&self, request_id: &str, close: bool, head_only: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(
            format!(
                "HTTP/1.1 {} {}\r\n",
                self.status,
                reason_phrase(self.status)
            )
            .as_bytes(),
        );
        for (name, value) in &self.headers {
            push_header(&mut out, name, value);
        }
        push_header(&mut out, "x-request-id", request_id);
        if self.status != 101 {
            push_header(&mut out, "content-length", &self.body.len().to_string());
            if close {
                push_header(&mut out, "connection", "close");
            }
        }
        out.extend_from_slice(b"\r\n");
        if !head_only && self.status != 101 {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Standard reason phrases for the statuses this server produces.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::error::NOT_FOUND;

    #[test]
    fn head_keeps_length_but_drops_body() {
        let response = Response::fixed(NOT_FOUND);
        let full = String::from_utf8(response.to_bytes("r1", false, false)).unwrap();
        assert!(full.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(full.contains("x-request-id: r1\r\n"));
        assert!(full.contains("content-length: 21\r\n"));
        assert!(full.ends_with("\r\n\r\n{\"error\":\"not_found\"}"));
        let head = String::from_utf8(response.to_bytes("r1", true, true)).unwrap();
        assert!(head.contains("content-length: 21\r\n"));
        assert!(head.contains("connection: close\r\n"));
        assert!(head.ends_with("\r\n\r\n"));
    }
}
