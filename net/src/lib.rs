//! Starcite's network layer: a minimal HTTP/1.1 server on httparse over glommio TCP, the public
//! API routes of http-api.md, the WebSocket tail of tail.md, and health and metrics endpoints.
//!
//! Module map:
//! - [`http`]: connection handling, request parsing (limits, chunked bodies, timeouts), responses.
//! - [`query`]: query-string parsing with bracket nesting (http-api.md T7).
//! - [`auth`]: bearer tokens, service JWTs and the JWKS cache, principal tokens, the policy.
//! - [`tls`]: the optional rustls configuration of the public listener.
//! - [`error`]: the error catalogue (http-api.md §12) and JSON error responses.
//! - [`validate`]: request-body validation for create and append.
//! - [`routes`]: route matching, the global check order and the handlers.
//! - [`tail`]: the WebSocket tail: delivery procedure, slow consumers, close codes.
//! - [`server`]: the per-shard accept loop that ties it together.
//! - [`ops`]: the ops listener: readiness composition, drain, the ops API, the control-plane
//!   seam that the cluster fills in.
//! - [`shutdown`]: what the listeners observe of the graceful shutdown sequence.

pub mod auth;
pub mod error;
pub mod http;
pub mod listen;
pub mod ops;
pub mod peer;
pub mod query;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod tail;
pub mod tls;
pub mod validate;
