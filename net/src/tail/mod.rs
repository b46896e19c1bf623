//! The WebSocket tail of tail.md, after the `101 Switching Protocols` response has been written.
//!
//! - [`delivery`]: the delivery procedure of tail.md §4 and §5 as a state machine without IO.
//! - [`socket`]: the WebSocket plumbing that drives it (reads, sends, pings, timers, closes).

pub mod delivery;
pub mod socket;

use std::future::Future;

use starcite_engine::api::Service;

/// What the HTTP layer hands over after the upgrade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailParams {
    /// Session to tail (already checked to exist before the upgrade).
    pub session_id: String,
    /// Last seq the client has processed; the first frame is `cursor + 1`.
    pub cursor: u64,
    /// `STARCITE_TAIL_BUFFER_EVENTS`: notifications buffered per connection.
    pub buffer_events: usize,
}

/// A close the server decides on its own, outside the delivery procedure (tail.md §6): the seam
/// for node shutdown and token expiry. The future passed to [`serve_websocket_until`] resolves to
/// one of these when the tail must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerClose {
    /// SIGTERM/SIGINT of this node: close 1001 `server_shutdown`.
    Shutdown,
    /// The token's `exp` was reached: close 4001 `token_expired`.
    TokenExpired,
    /// Re-validation of the token failed: close 4001 `token_invalid`.
    TokenInvalid,
}

/// Serve a tail on an upgraded connection until the client closes, the connection fails, or a
/// read error of tail.md §6 ends it.
///
/// `leftover` holds bytes the HTTP parser read past the request head (frames the client sent right
/// after the handshake); they are consumed before anything read from `stream`.
pub async fn serve_websocket<S, T>(stream: T, leftover: Vec<u8>, params: TailParams, service: S)
where
    S: Service,
    T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
{
    serve_websocket_until(
        stream,
        leftover,
        params,
        service,
        futures_lite::future::pending(),
    )
    .await
}

/// [`serve_websocket`] with a `stop` future: when it resolves, the tail is closed with the code
/// and reason of the returned [`ServerClose`] (shutdown and token expiry plug in here).
pub async fn serve_websocket_until<S, T, F>(
    stream: T,
    leftover: Vec<u8>,
    params: TailParams,
    service: S,
    stop: F,
) where
    S: Service,
    T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
    F: Future<Output = ServerClose>,
{
    socket::run(stream, leftover, params, service, stop).await
}
