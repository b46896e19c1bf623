//! One connection: read a request, let the handler answer, write the response, repeat.
//!
//! Pipelined requests are answered strictly in order because the loop handles one request at a
//! time and leaves the bytes of the next one in the buffer. The connection closes after
//! `Connection: close`, after any response that leaves request bytes unread, on timeouts, and
//! after an upgrade hands the stream to the handler.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncWrite, FutureExt};
use starcite_engine::metrics;

use super::body::{read_body, BodyError};
use super::input::{Input, InputError};
use super::parse::{decide_framing, parse_head, BodyFraming, RequestHead};
use super::response::{Response, ROUTE_UNMATCHED};
use super::{Body, Handler, Limits, Reply, Request, LINGER_BYTES_MAX, LINGER_TIMEOUT};
use crate::error::{FixedError, BAD_REQUEST, INTERNAL_SERVER_ERROR};
use crate::shutdown::Latch;

/// Longest incoming `x-request-id` kept (T14).
pub const REQUEST_ID_BYTES_MAX: usize = 128;

/// What to do after a response has been written.
enum After {
    /// Read the next request.
    Continue,
    /// Close now.
    Close,
    /// Close after discarding unread request bytes.
    LingerAndClose,
}

/// Serve requests on `stream` until it closes, times out or is upgraded.
pub async fn serve_connection<T, H>(stream: T, handler: H, limits: &Limits)
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    H: Handler,
{
    serve_connection_until(stream, handler, limits, None).await
}

/// [`serve_connection`] that winds down once `closing` fires (graceful shutdown, ops.md §6): an
/// idle keep-alive connection closes at once, and a request in flight gets its response with
/// `Connection: close` and then the connection closes.
pub async fn serve_connection_until<T, H>(
    stream: T,
    handler: H,
    limits: &Limits,
    closing: Option<&Latch>,
) where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    H: Handler,
{
    let mut input = Input::new(stream);
    let is_closing = || closing.is_some_and(Latch::is_fired);
    loop {
        let Some((head, received_at)) = read_head(&mut input, limits, closing).await else {
            return;
        };
        let request_deadline = received_at + limits.read_timeout;
        let request_id = choose_request_id(&head);
        let method = head.method.clone();
        let path = head.path.clone();
        let http_1_0 = head.version_minor == 0;
        let head_only = method == "HEAD";
        let framing = match decide_framing(&head) {
            Ok(framing) => framing,
            Err(error) => {
                reject(&mut input, error, &request_id, &method, received_at, limits).await;
                return;
            }
        };
        let mut after = if framing.keep_alive {
            After::Continue
        } else {
            After::Close
        };
        let body_too_large =
            matches!(framing.body, BodyFraming::Length(length) if length > limits.body_bytes_max);
        if framing.expects_continue && !body_too_large && framing.body != BodyFraming::Empty {
            let deadline = Instant::now() + limits.write_timeout;
            if input
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n", deadline)
                .await
                .is_err()
            {
                return;
            }
        }
        let body = match read_body(
            &mut input,
            framing.body,
            limits.body_bytes_max,
            request_deadline,
        )
        .await
        {
            Ok(bytes) => Body::Complete(bytes),
            Err(BodyError::TooLarge) => {
                after = After::LingerAndClose;
                Body::TooLarge
            }
            Err(BodyError::Malformed) => {
                reject(
                    &mut input,
                    BAD_REQUEST,
                    &request_id,
                    &method,
                    received_at,
                    limits,
                )
                .await;
                return;
            }
            Err(BodyError::Input(_)) => return,
        };
        let request = Request {
            head,
            body,
            request_id: request_id.clone(),
            received_at,
        };
        let reply = match AssertUnwindSafe(handler.handle(request))
            .catch_unwind()
            .await
        {
            Ok(reply) => reply,
            Err(_) => {
                tracing::error!(request_id = %request_id, "request handler panicked");
                Reply::Respond(Response::fixed(INTERNAL_SERVER_ERROR))
            }
        };
        match reply {
            Reply::Respond(mut response) => {
                if is_closing() && matches!(after, After::Continue) {
                    after = After::Close;
                }
                let close = !matches!(after, After::Continue);
                if !close && http_1_0 {
                    // HTTP/1.0 closes by default; say explicitly that this connection stays.
                    response
                        .headers
                        .push(("connection", "keep-alive".to_owned()));
                }
                if !write_response(&mut input, &response, &request_id, close, head_only, limits)
                    .await
                {
                    return;
                }
                record(&response, &method, &path, &request_id, received_at);
            }
            Reply::Upgrade(response, upgrade) => {
                if !write_response(&mut input, &response, &request_id, false, false, limits).await {
                    return;
                }
                record(&response, &method, &path, &request_id, received_at);
                let (stream, leftover) = input.into_parts();
                handler.upgraded(stream, leftover, upgrade).await;
                return;
            }
        }
        match after {
            After::Continue => {}
            After::Close => return,
            After::LingerAndClose => {
                input
                    .linger(LINGER_BYTES_MAX, Instant::now() + LINGER_TIMEOUT)
                    .await;
                return;
            }
        }
    }
}

/// Wait for and parse the next request head. `None` closes the connection (peer closed, timeout,
/// `closing` fired before any byte of a next request arrived, or an unparseable head that has
/// already been answered).
async fn read_head<T>(
    input: &mut Input<T>,
    limits: &Limits,
    closing: Option<&Latch>,
) -> Option<(RequestHead, Instant)>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let idle_deadline = Instant::now() + limits.idle_timeout;
    // Pipelined bytes already in the buffer count as the start of the next request.
    let mut received_at = (!input.buffered().is_empty()).then(Instant::now);
    loop {
        match parse_head(input.buffered(), limits) {
            Ok(Some((head, consumed))) => {
                input.consume(consumed);
                return Some((head, received_at.unwrap_or_else(Instant::now)));
            }
            Ok(None) => {}
            Err(error) => {
                let request_id = generate_request_id();
                let started = received_at.unwrap_or_else(Instant::now);
                reject(input, error, &request_id, "OTHER", started, limits).await;
                return None;
            }
        }
        let deadline = match received_at {
            Some(started) => started + limits.read_timeout,
            None => idle_deadline,
        };
        let filled = match (received_at, closing) {
            // Idle between requests: shutdown ends the connection instead of waiting for the
            // next request. A request that has started is read and answered.
            (None, Some(closing)) => {
                if closing.is_fired() {
                    return None;
                }
                let stop = async {
                    closing.wait().await;
                    Err(InputError::Closed)
                };
                input.fill(deadline).or(stop).await
            }
            _ => input.fill(deadline).await,
        };
        match filled {
            Ok(_) => {
                received_at.get_or_insert_with(Instant::now);
            }
            Err(InputError::TimedOut | InputError::Closed | InputError::Io(_)) => return None,
        }
    }
}

/// Answer a request that cannot be processed (framing errors) and close.
async fn reject<T>(
    input: &mut Input<T>,
    error: FixedError,
    request_id: &str,
    method: &str,
    received_at: Instant,
    limits: &Limits,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let response = Response::fixed(error).with_route(ROUTE_UNMATCHED);
    if write_response(input, &response, request_id, true, false, limits).await {
        record(&response, method, "-", request_id, received_at);
        input
            .linger(LINGER_BYTES_MAX, Instant::now() + LINGER_TIMEOUT)
            .await;
    }
}

/// Write one response; false when the connection is unusable.
async fn write_response<T>(
    input: &mut Input<T>,
    response: &Response,
    request_id: &str,
    close: bool,
    head_only: bool,
    limits: &Limits,
) -> bool
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let bytes = response.to_bytes(request_id, close, head_only);
    let deadline = Instant::now() + limits.write_timeout;
    match input.write_all(&bytes, deadline).await {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(request_id = %request_id, %error, "write response failed");
            false
        }
    }
}

/// Count the response in the metrics and log it. Only the path is logged, never the query, which
/// may carry an `access_token` (tail.md §1).
fn record(response: &Response, method: &str, path: &str, request_id: &str, received_at: Instant) {
    let duration = received_at.elapsed();
    metrics::global().http_request(
        response.route,
        method_label(method),
        response.status,
        duration,
    );
    // Debug, not info: one line per request at tens of thousands of requests per second would cost
    // more than the request itself. The message carries everything, so text logs show it too.
    tracing::debug!(
        request_id = %request_id,
        "request {method} {path} {} {}us request_id={request_id}",
        response.status,
        duration.as_micros()
    );
}

/// Method label for metrics: known methods as sent, anything else `OTHER`, so that clients
/// cannot grow the label set.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

/// The incoming `x-request-id` when it is 1–128 visible ASCII characters, else a new one (T14).
pub fn choose_request_id(head: &RequestHead) -> String {
    match head.header("x-request-id") {
        Some(value)
            if !value.is_empty()
                && value.len() <= REQUEST_ID_BYTES_MAX
                && value.iter().all(|byte| byte.is_ascii_graphic()) =>
        {
            String::from_utf8_lossy(value).into_owned()
        }
        _ => generate_request_id(),
    }
}

/// 32 lowercase hex characters of 128 random bits.
pub fn generate_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn head_with(value: Option<&[u8]>) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            version_minor: 1,
            headers: value
                .map(|value| ("x-request-id".to_owned(), value.to_vec()))
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn request_ids() {
        assert_eq!(choose_request_id(&head_with(Some(b"abc-123"))), "abc-123");
        let longest = vec![b'x'; REQUEST_ID_BYTES_MAX];
        assert_eq!(
            choose_request_id(&head_with(Some(&longest))).len(),
            REQUEST_ID_BYTES_MAX
        );
        for invalid in [
            &b""[..],
            b"has space",
            b"caf\xc3\xa9",
            &[b'x'; REQUEST_ID_BYTES_MAX + 1][..],
        ] {
            let chosen = choose_request_id(&head_with(Some(invalid)));
            assert_eq!(chosen.len(), 32, "{invalid:?}");
            assert!(chosen
                .bytes()
                .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')));
        }
        assert_ne!(generate_request_id(), generate_request_id());
    }
}
