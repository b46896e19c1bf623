//! A small HTTP/1.1 server: exactly what the public API needs and nothing else.
//!
//! - [`parse`]: request heads (httparse) and framing decisions.
//! - [`input`]: the buffered, deadline-bounded read side of a connection.
//! - [`body`]: `Content-Length` and chunked bodies under the body limit.
//! - [`response`]: responses and their serialisation (HEAD, `x-request-id`).
//! - [`connection`]: the per-connection loop: keep-alive, pipelining, timeouts, panics,
//!   upgrades.
//!
//! The connection code is generic over `futures_lite` `AsyncRead + AsyncWrite`, so a TLS stream
//! can replace the TCP stream without changes here.
//!
//! Limits and the responses they produce (none of these are in the contract's catalogue except
//! 413):
//! - request head (request line + headers) over [`HEAD_BYTES_MAX`] bytes or more than
//!   [`HEADER_COUNT_MAX`] headers → `431 request_header_fields_too_large`, connection closed;
//! - body over [`BODY_BYTES_MAX`] → `413 payload_too_large` from the route handler (after its
//!   404/406 checks), connection closed;
//! - malformed framing → `400 bad_request`; a transfer coding other than `chunked` → `501`;
//! - no complete request within [`READ_TIMEOUT`] of its first byte, or no new request within
//!   [`IDLE_TIMEOUT`] on a kept-alive connection → the connection is closed without a response.

pub mod body;
pub mod connection;
pub mod input;
pub mod parse;
pub mod response;

use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};

pub use parse::RequestHead;
pub use response::Response;

/// Largest request head (request line plus headers) in bytes.
pub const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Most headers in one request.
pub const HEADER_COUNT_MAX: usize = 64;
/// Largest request body (http-api.md T3).
pub const BODY_BYTES_MAX: u64 = 8_000_000;
/// Time allowed from a request's first byte until its body is complete.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a kept-alive connection may wait for the next request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed to write one response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// After a response that leaves request bytes unread (413, framing errors) the connection reads
/// and discards at most this much before closing, so the client sees the response instead of a
/// reset caused by unread data.
pub const LINGER_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Time spent discarding unread request bytes before closing.
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// Connection limits; [`Limits::default`] holds the named constants above. Tests shorten the
/// timeouts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// See [`HEAD_BYTES_MAX`].
    pub head_bytes_max: usize,
    /// See [`HEADER_COUNT_MAX`].
    pub header_count_max: usize,
    /// See [`BODY_BYTES_MAX`].
    pub body_bytes_max: u64,
    /// See [`READ_TIMEOUT`].
    pub read_timeout: Duration,
    /// See [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`WRITE_TIMEOUT`].
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            head_bytes_max: HEAD_BYTES_MAX,
            header_count_max: HEADER_COUNT_MAX,
            body_bytes_max: BODY_BYTES_MAX,
            read_timeout: READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
        }
    }
}

/// The body of a request as delivered to a handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// The complete body (possibly empty).
    Complete(Vec<u8>),
    /// The body is over the limit and was not read (the handler answers 413 after its route
    /// checks; the connection is closed afterwards).
    TooLarge,
}

/// One request as seen by a handler.
#[derive(Debug)]
pub struct Request {
    /// Method, path, query and headers.
    pub head: RequestHead,
    /// The body.
    pub body: Body,
    /// The `x-request-id` this request's response will carry (T14).
    pub request_id: String,
    /// When the first byte of the request arrived.
    pub received_at: Instant,
}

/// What a handler wants done with a request.
pub enum Reply<U> {
    /// Send this response.
    Respond(Response),
    /// Send this `101` response and hand the connection to [`Handler::upgraded`].
    Upgrade(Response, U),
}

/// Application logic served by [`connection::serve_connection`].
#[allow(async_fn_in_trait)]
pub trait Handler: Clone + 'static {
    /// State carried from `handle` to `upgraded` (e.g. the tail parameters).
    type Upgrade;

    /// Produce the reply to one request. A panic inside becomes `500 internal_server_error`.
    async fn handle(&self, request: Request) -> Reply<Self::Upgrade>;

    /// Take over the connection after a `101` has been written; `leftover` holds bytes the
    /// client sent after the request head.
    async fn upgraded<T>(&self, stream: T, leftover: Vec<u8>, upgrade: Self::Upgrade)
    where
        T: AsyncRead + AsyncWrite + Unpin + 'static;
}
