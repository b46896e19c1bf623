//! The error catalogue of http-api.md §12 (validation and transport codes; the engine's own
//! errors come from [`ServiceError`]) and the crate's typed [`NetError`].
//!
//! Every code and message here is part of the public contract: change them only together with
//! the contract.

use std::io;

use starcite_engine::api::ServiceError;

/// An application error response: status, `error` code, optional `message`, optional
/// `Retry-After` seconds. Serialised as `{"error":..,"message":..}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// The exact `error` code.
    pub code: &'static str,
    /// The exact `message`; `None` for the two codes that have no message key.
    pub message: Option<String>,
    /// Seconds for a `Retry-After` header (429 only).
    pub retry_after_seconds: Option<u64>,
}

impl ApiError {
    const fn fixed(status: u16, code: &'static str) -> FixedError {
        FixedError {
            status,
            code,
            message: None,
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> Vec<u8> {
        let mut object = serde_json::Map::new();
        object.insert("error".to_owned(), self.code.into());
        if let Some(message) = &self.message {
            object.insert("message".to_owned(), message.clone().into());
        }
        serde_json::Value::Object(object).to_string().into_bytes()
    }
}

/// A catalogue entry known at compile time; converted into an [`ApiError`] when used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedError {
    status: u16,
    code: &'static str,
    message: Option<&'static str>,
}

impl FixedError {
    const fn with_message(self, message: &'static str) -> FixedError {
        FixedError {
            message: Some(message),
            ..self
        }
    }

    /// The HTTP status of this entry.
    pub fn status(self) -> u16 {
        self.status
    }

    /// The `error` code of this entry.
    pub fn code(self) -> &'static str {
        self.code
    }
}

impl From<FixedError> for ApiError {
    fn from(fixed: FixedError) -> ApiError {
        ApiError {
            status: fixed.status,
            code: fixed.code,
            message: fixed.message.map(str::to_owned),
            retry_after_seconds: None,
        }
    }
}

impl From<&ServiceError> for ApiError {
    fn from(error: &ServiceError) -> ApiError {
        let retry_after_seconds = match error {
            ServiceError::Backpressure { retry_after_s } => Some(*retry_after_s),
            _ => None,
        };
        ApiError {
            status: error.status(),
            code: error.code(),
            message: Some(error.message()),
            retry_after_seconds,
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        ApiError::from(&error)
    }
}

/// 400 `invalid_event`.
pub const INVALID_EVENT: FixedError =
    ApiError::fixed(400, "invalid_event").with_message("Invalid event payload");
/// 400 `invalid_metadata`.
pub const INVALID_METADATA: FixedError =
    ApiError::fixed(400, "invalid_metadata").with_message("Invalid metadata payload");
/// 400 `invalid_refs`.
pub const INVALID_REFS: FixedError =
    ApiError::fixed(400, "invalid_refs").with_message("Invalid refs payload");
/// 400 `invalid_cursor`.
pub const INVALID_CURSOR: FixedError =
    ApiError::fixed(400, "invalid_cursor").with_message("Invalid cursor value");
/// 400 `invalid_limit`.
pub const INVALID_LIMIT: FixedError =
    ApiError::fixed(400, "invalid_limit").with_message("Invalid limit value");
/// 400 `invalid_issue_request`.
pub const INVALID_ISSUE_REQUEST: FixedError = ApiError::fixed(400, "invalid_issue_request")
    .with_message("Invalid token issue request payload");
/// 400 `invalid_websocket_upgrade`.
pub const INVALID_WEBSOCKET_UPGRADE: FixedError =
    ApiError::fixed(400, "invalid_websocket_upgrade").with_message("WebSocket upgrade required");
/// 400 `invalid_session`.
pub const INVALID_SESSION: FixedError =
    ApiError::fixed(400, "invalid_session").with_message("Invalid session payload");
/// 400 `invalid_write_node` (ops API: not a configured write node).
pub const INVALID_WRITE_NODE: FixedError =
    ApiError::fixed(400, "invalid_write_node").with_message("Invalid write node");
/// 400 `invalid_group_id` (ops API: not a decimal group id below `num_groups`).
pub const INVALID_GROUP_ID: FixedError =
    ApiError::fixed(400, "invalid_group_id").with_message("Invalid write group id");
/// 400 `invalid_session_id` (ops API: empty `session_id`).
pub const INVALID_SESSION_ID: FixedError =
    ApiError::fixed(400, "invalid_session_id").with_message("Invalid session id");
/// 400 `invalid_timeout` (ops API: `timeout_ms` not a positive integer).
pub const INVALID_TIMEOUT: FixedError =
    ApiError::fixed(400, "invalid_timeout").with_message("Invalid timeout value");
/// 400 `invalid_json`.
pub const INVALID_JSON: FixedError =
    ApiError::fixed(400, "invalid_json").with_message("Malformed JSON body");
/// 401 `unauthorized` (the caller adds `WWW-Authenticate`).
pub const UNAUTHORIZED: FixedError =
    ApiError::fixed(401, "unauthorized").with_message("Unauthorized");
/// 403 `forbidden`.
pub const FORBIDDEN: FixedError = ApiError::fixed(403, "forbidden").with_message("Forbidden");
/// 403 `forbidden_scope`.
pub const FORBIDDEN_SCOPE: FixedError = ApiError::fixed(403, "forbidden_scope")
    .with_message("Token scope does not allow this operation");
/// 403 `forbidden_session`.
pub const FORBIDDEN_SESSION: FixedError = ApiError::fixed(403, "forbidden_session")
    .with_message("Token is not allowed to access this session");
/// 403 `forbidden_tenant`.
pub const FORBIDDEN_TENANT: FixedError = ApiError::fixed(403, "forbidden_tenant")
    .with_message("Token tenant does not match session tenant");
/// 404 `not_found` (no message key): no route, metrics disabled.
pub const NOT_FOUND: FixedError = ApiError::fixed(404, "not_found");
/// 406 `not_acceptable`.
pub const NOT_ACCEPTABLE: FixedError =
    ApiError::fixed(406, "not_acceptable").with_message("Not acceptable");
/// 413 `payload_too_large`.
pub const PAYLOAD_TOO_LARGE: FixedError =
    ApiError::fixed(413, "payload_too_large").with_message("Request body too large");
/// 415 `unsupported_media_type`.
pub const UNSUPPORTED_MEDIA_TYPE: FixedError =
    ApiError::fixed(415, "unsupported_media_type").with_message("Unsupported media type");
/// 500 `internal_server_error` (no message key): a panic while handling a request (T13).
pub const INTERNAL_SERVER_ERROR: FixedError = ApiError::fixed(500, "internal_server_error");

/// 400 for a request that is not valid HTTP/1.1 framing. Not in the catalogue because the
/// contract's routes never see such a request; chosen to keep the JSON envelope.
pub const BAD_REQUEST: FixedError =
    ApiError::fixed(400, "bad_request").with_message("Malformed HTTP request");
/// 431 for a request head over the size or header-count bound (see `crate::http`).
pub const HEADERS_TOO_LARGE: FixedError = ApiError::fixed(431, "request_header_fields_too_large")
    .with_message("Request header fields too large");
/// 501 for a `Transfer-Encoding` other than `chunked`.
pub const NOT_IMPLEMENTED: FixedError =
    ApiError::fixed(501, "not_implemented").with_message("Transfer encoding not supported");

/// Failures of the network layer itself (not request errors, which are responses).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Binding the public listener failed.
    #[error("bind {address}: {source}")]
    Bind {
        /// The address that was being bound.
        address: std::net::SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Accepting a connection failed in a way that stops the listener.
    #[error("accept on {address}: {source}")]
    Accept {
        /// The listener address.
        address: std::net::SocketAddr,
        /// The underlying error.
        source: glommio::GlommioError<()>,
    },
    /// A socket read or write failed.
    #[error("connection io: {0}")]
    Io(#[from] io::Error),
    /// Authentication could not be set up (see [`crate::auth::AuthSetupError`]).
    #[error("{0}")]
    Auth(#[from] crate::auth::AuthSetupError),
    /// The TLS certificate or key could not be loaded.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsLoadError),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn not_found_has_no_message_key() {
        assert_eq!(
            ApiError::from(NOT_FOUND).body(),
            br#"{"error":"not_found"}"#.to_vec()
        );
        assert_eq!(
            ApiError::from(INTERNAL_SERVER_ERROR).body(),
            br#"{"error":"internal_server_error"}"#.to_vec()
        );
    }

    #[test]
    fn envelope_has_code_and_message() {
        assert_eq!(
            String::from_utf8(ApiError::from(PAYLOAD_TOO_LARGE).body()).unwrap(),
            r#"{"error":"payload_too_large","message":"Request body too large"}"#
        );
    }

    #[test]
    fn service_errors_keep_their_catalogue_text() {
        let error = ApiError::from(ServiceError::ProducerSeqConflict {
            producer_id: "p".to_owned(),
            expected: 2,
            got: 3,
        });
        assert_eq!(error.status, 409);
        assert_eq!(
            error.message.as_deref(),
            Some("Producer p expected seq 2, got 3")
        );
        let backpressure = ApiError::from(ServiceError::Backpressure { retry_after_s: 1 });
        assert_eq!(backpressure.retry_after_seconds, Some(1));
    }
}
