//! The WebSocket side of a tail: drives [`Delivery`] with reads from the [`Service`], writes its
//! frames to the socket only as fast as the socket takes them, reads client frames concurrently,
//! sends pings, and performs the closes of tail.md §6.
//!
//! One connection is three futures raced against each other: delivery (the only writer of event
//! frames), the client watcher (the only reader), and the `stop` seam. The first to finish
//! decides how the tail ends; the closing handshake runs after the race.

use std::future::Future;
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use bytes::Bytes;
use futures_lite::future;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use starcite_engine::api::{EventBatch, Notification, Service, ServiceError, Subscription};
use starcite_engine::metrics::{self, TailPhase, TailTransport};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes};

use super::delivery::{
    Delivery, NotificationOutcome, ReadFailure, ReadRetry, Step, REPLAY_BATCH_EVENTS,
};
use super::{ServerClose, TailParams};

/// Interval of the catch-up check of tail.md §4 step 6.
pub const CATCHUP_INTERVAL_MS: u64 = 5000;

/// Interval of server-initiated pings (tail.md §3).
pub const PING_INTERVAL_MS: u64 = 30_000;

/// How long a close handshake may take before the connection is dropped regardless: a client that
/// stopped reading must not hold the connection open after the tail has ended.
pub const CLOSE_HANDSHAKE_TIMEOUT_MS: u64 = 5000;

/// Largest client message accepted. Clients only send control frames and small ignored frames.
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 64 * 1024;

/// Largest client frame accepted.
pub const CLIENT_FRAME_BYTES_MAX: usize = 64 * 1024;

/// Read buffer per connection. Clients send only control frames (ping, pong, close), and an idle
/// tail's pending read holds a buffer of this size in the io_uring layer too, so it is kept
/// small: with 10,000 idle tails every KiB here costs 20 MiB. Larger client frames still arrive,
/// in several reads.
pub const READ_BUFFER_BYTES: usize = 512;

/// Frames are gathered up to this many bytes before being written to the socket, so that one
/// replay batch goes out in a few large writes.
pub const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Close code for read failures (tail.md §6).
const CLOSE_CODE_READ_FAILED: u16 = 1011;

/// Close code for the shutdown of the serving node (tail.md §6).
const CLOSE_CODE_SHUTDOWN: u16 = 1001;

/// Close code for an expired or invalid token (tail.md §6).
const CLOSE_CODE_TOKEN: u16 = 4001;

/// Reason used when the engine hands out a frame that is not UTF-8 text.
const REASON_INTERNAL_ERROR: &str = "internal_error";

type Sink<T> = SplitSink<WebSocketStream<T>, Message>;
type Source<T> = SplitStream<WebSocketStream<T>>;

/// How a tail ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// The client sent a close frame; tungstenite has queued the echo of its code.
    ClientClosed,
    /// The connection failed, or the client left without a close frame.
    ConnectionLost,
    /// The server closes with this code and reason.
    ServerClosed { code: u16, reason: &'static str },
}

impl Ending {
    /// The `code` label of `starcite_tail_closes_total`.
    fn metric_label(self) -> &'static str {
        match self {
            Ending::ClientClosed | Ending::ConnectionLost => "client",
            Ending::ServerClosed {
                code: CLOSE_CODE_SHUTDOWN,
                ..
            } => "1001",
            Ending::ServerClosed {
                code: CLOSE_CODE_TOKEN,
                ..
            } => "4001",
            Ending::ServerClosed { .. } => "1011",
        }
    }

    fn read_failed(reason: &'static str) -> Self {
        Ending::ServerClosed {
            code: CLOSE_CODE_READ_FAILED,
            reason,
        }
    }
}

impl From<ServerClose> for Ending {
    fn from(close: ServerClose) -> Self {
        match close {
            ServerClose::Shutdown => Ending::ServerClosed {
                code: CLOSE_CODE_SHUTDOWN,
                reason: "server_shutdown",
            },
            ServerClose::TokenExpired => Ending::ServerClosed {
                code: CLOSE_CODE_TOKEN,
                reason: "token_expired",
            },
            ServerClose::TokenInvalid => Ending::ServerClosed {
                code: CLOSE_CODE_TOKEN,
                reason: "token_invalid",
            },
        }
    }
}

fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(Some(CLIENT_MESSAGE_BYTES_MAX))
        .max_frame_size(Some(CLIENT_FRAME_BYTES_MAX))
}

/// Serve one tail connection until it ends.
pub(crate) async fn run<S, T, F>(
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
    let metrics = metrics::global();
    metrics.tail_opened(TailTransport::WebSocket);

    // Step 1: subscribe before the first read so that nothing committed during replay is missed.
    let subscription = service.subscribe(&params.session_id, params.buffer_events);
    let mut tail = Tail::new(service, params, subscription);

    let websocket = WebSocketStream::from_partially_read(
        stream,
        leftover,
        Role::Server,
        Some(websocket_config()),
    )
    .await;
    let (mut sink, mut source) = websocket.split();

    let ending = future::or(
        tail.deliver(&mut sink),
        future::or(watch_client(&mut source), async {
            Ending::from(stop.await)
        }),
    )
    .await;

    match ending {
        Ending::ServerClosed {
            code: CLOSE_CODE_READ_FAILED,
            reason,
        } => {
            tracing::warn!(session_id = %tail.session_id, reason, "close tail after read failure");
        }
        Ending::ServerClosed { code, reason } => {
            tracing::debug!(session_id = %tail.session_id, code, reason, "close tail");
        }
        Ending::ClientClosed | Ending::ConnectionLost => {}
    }
    close(ending, &mut sink, &mut source).await;
    metrics.tail_closed(TailTransport::WebSocket, ending.metric_label());
}

/// Read client frames until the client closes or the connection fails. Reading also lets
/// tungstenite answer pings and queue the echo of a close frame.
async fn watch_client<T>(source: &mut Source<T>) -> Ending
where
    T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    loop {
        match source.next().await {
            Some(Ok(Message::Close(_))) => return Ending::ClientClosed,
            // Text and binary frames are ignored (tail.md §3). Yielding keeps a client that floods
            // frames from starving delivery on this executor.
            Some(Ok(_)) => future::yield_now().await,
            Some(Err(_)) | None => return Ending::ConnectionLost,
        }
    }
}

/// Finish the WebSocket close handshake for `ending`, bounded by [`CLOSE_HANDSHAKE_TIMEOUT_MS`].
async fn close<T>(ending: Ending, sink: &mut Sink<T>, source: &mut Source<T>)
where
    T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    let timeout = Duration::from_millis(CLOSE_HANDSHAKE_TIMEOUT_MS);
    match ending {
        Ending::ConnectionLost => {}
        Ending::ClientClosed => {
            // Flushing writes the echo tungstenite queued when it read the client's close frame.
            let _ = within(timeout, sink.flush()).await;
        }
        Ending::ServerClosed { code, reason } => {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            let sent = within(timeout, sink.send(Message::Close(Some(frame)))).await;
            if matches!(sent, Some(Ok(()))) {
                // Wait for the client's answering close frame, so the client sees a clean close.
                let _ = within(timeout, async {
                    while let Some(Ok(_)) = source.next().await {}
                })
                .await;
            }
        }
    }
}

/// `Some(output)` if `work` finishes within `timeout`.
async fn within<F: Future>(timeout: Duration, work: F) -> Option<F::Output> {
    future::or(async { Some(work.await) }, async {
        glommio::timer::sleep(timeout).await;
        None
    })
    .await
}

/// What ended a wait in live mode.
enum Wake {
    Notification(Option<Notification>),
    Timer,
}

/// Delivery state of one connection plus what it needs to perform steps.
struct Tail<S: Service> {
    service: S,
    session_id: String,
    subscription: Subscription,
    /// Most notifications taken from the subscription per step: its capacity.
    notifications_per_step_max: usize,
    /// False once the engine dropped the subscription's sender; catch-up then finds new events.
    notifications_open: bool,
    delivery: Delivery,
    retry: ReadRetry,
    started_at: Instant,
    next_ping_at: Instant,
    next_catchup_at: Instant,
}

impl<S: Service> Tail<S> {
    fn new(service: S, params: TailParams, subscription: Subscription) -> Self {
        let started_at = Instant::now();
        Tail {
            service,
            session_id: params.session_id,
            subscription,
            notifications_per_step_max: params.buffer_events.max(1),
            notifications_open: true,
            delivery: Delivery::new(params.cursor, params.buffer_events),
            retry: ReadRetry::default(),
            started_at,
            next_ping_at: started_at + Duration::from_millis(PING_INTERVAL_MS),
            next_catchup_at: started_at + Duration::from_millis(CATCHUP_INTERVAL_MS),
        }
    }

    /// Deliver events until a step ends the tail.
    async fn deliver<T>(&mut self, sink: &mut Sink<T>) -> Ending
    where
        T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
    {
        loop {
            if let Err(ending) = self.step(sink).await {
                return ending;
            }
        }
    }

    async fn step<T>(&mut self, sink: &mut Sink<T>) -> Result<(), Ending>
    where
        T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
    {
        self.take_notifications();
        self.run_timers(sink).await?;
        match self.delivery.next_step() {
            Step::Replay {
                cursor,
                starts_pass,
                delay_ms,
            } => {
                if let Some(reason) = starts_pass {
                    metrics::global().tail_replay(reason.label());
                }
                if delay_ms > 0 {
                    glommio::timer::sleep(Duration::from_millis(delay_ms)).await;
                }
                let read = self
                    .service
                    .read_events(&self.session_id, cursor, REPLAY_BATCH_EVENTS);
                let Some(batch) = self.read_outcome(read.await).await? else {
                    return Ok(());
                };
                self.delivery
                    .on_replay_read(batch.first_seq, batch.events.len())
                    .map_err(|error| Ending::read_failed(error.code()))?;
                self.send_events(sink, batch, TailPhase::Replay).await
            }
            Step::FetchBody { cursor, count } => {
                let read = self.service.read_events(&self.session_id, cursor, count);
                let Some(batch) = self.read_outcome(read.await).await? else {
                    return Ok(());
                };
                self.delivery
                    .on_fetch_read(batch.first_seq, batch.events.len())
                    .map_err(|error| Ending::read_failed(error.code()))?;
                self.send_events(sink, batch, TailPhase::Live).await
            }
            Step::CheckLastSeq => {
                let read = self.service.get_session(&self.session_id);
                if let Some(session) = self.read_outcome(read.await).await? {
                    self.delivery.on_last_seq(session.last_seq);
                }
                Ok(())
            }
            Step::Wait => {
                self.wait().await;
                Ok(())
            }
        }
    }

    /// Move queued notifications into the delivery state; bounded by the subscription capacity
    /// so that a publisher on another thread cannot keep this loop going.
    fn take_notifications(&mut self) {
        if self.subscription.take_overflow() {
            metrics::global().tail_buffer_overflow();
            self.delivery.on_subscription_overflow();
        }
        for _ in 0..self.notifications_per_step_max {
            let Some(notification) = self.subscription.try_recv() else {
                break;
            };
            self.on_notification(notification);
        }
    }

    fn on_notification(&mut self, notification: Notification) {
        if self.delivery.on_notification(notification.seq) == NotificationOutcome::Overflowed {
            metrics::global().tail_buffer_overflow();
        }
    }

    async fn run_timers<T>(&mut self, sink: &mut Sink<T>) -> Result<(), Ending>
    where
        T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
    {
        let now = Instant::now();
        if now >= self.next_catchup_at {
            self.next_catchup_at = now + Duration::from_millis(CATCHUP_INTERVAL_MS);
            self.delivery.on_catchup_due();
        }
        if now >= self.next_ping_at {
            self.next_ping_at = now + Duration::from_millis(PING_INTERVAL_MS);
            sink.send(Message::Ping(Bytes::new()))
                .await
                .map_err(|_| Ending::ConnectionLost)?;
        }
        Ok(())
    }

    /// Live mode with nothing to do: wait for a notification or the next timer.
    async fn wait(&mut self) {
        let deadline = self.next_ping_at.min(self.next_catchup_at);
        let subscription = &self.subscription;
        let notifications_open = self.notifications_open;
        let wake = future::or(
            async {
                if notifications_open {
                    Wake::Notification(subscription.recv().await)
                } else {
                    future::pending().await
                }
            },
            async {
                glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
                Wake::Timer
            },
        )
        .await;
        match wake {
            Wake::Notification(Some(notification)) => self.on_notification(notification),
            Wake::Notification(None) => self.notifications_open = false,
            Wake::Timer => {}
        }
    }

    /// `Ok(Some(value))` on success; `Ok(None)` after waiting out a transient failure (the step
    /// is then decided again); `Err` when the failure closes the tail (tail.md §6).
    async fn read_outcome<V>(
        &mut self,
        result: Result<V, ServiceError>,
    ) -> Result<Option<V>, Ending> {
        match result {
            Ok(value) => {
                self.retry.on_success();
                Ok(Some(value))
            }
            Err(error) => match self.retry.on_error(&error, self.elapsed_ms()) {
                ReadFailure::Close(code) => Err(Ending::read_failed(code)),
                ReadFailure::RetryAfterMs(delay_ms) => {
                    tracing::debug!(session_id = %self.session_id, error = error.code(), delay_ms, "retry tail read");
                    glommio::timer::sleep(Duration::from_millis(delay_ms)).await;
                    Ok(None)
                }
            },
        }
    }

    /// Send a batch that starts at `cursor + 1`, one text frame per event. Frames are fed to the
    /// sink, which writes to the socket whenever its buffer fills and waits while the socket is
    /// full, then flushed once: the client's reading speed paces delivery (tail.md §5).
    async fn send_events<T>(
        &mut self,
        sink: &mut Sink<T>,
        batch: EventBatch,
        phase: TailPhase,
    ) -> Result<(), Ending>
    where
        T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
    {
        let mut sent_count: u64 = 0;
        let mut outcome = Ok(());
        for (seq, body) in (batch.first_seq..).zip(batch.events) {
            let Ok(text) = Utf8Bytes::try_from(body) else {
                tracing::error!(session_id = %self.session_id, seq, "event frame is not UTF-8");
                outcome = Err(Ending::read_failed(REASON_INTERNAL_ERROR));
                break;
            };
            if sink.feed(Message::Text(text)).await.is_err() {
                outcome = Err(Ending::ConnectionLost);
                break;
            }
            self.delivery.on_sent(seq);
            sent_count += 1;
        }
        if outcome.is_ok() && sink.flush().await.is_err() {
            outcome = Err(Ending::ConnectionLost);
        }
        metrics::global().tail_events_sent(phase, sent_count);
        outcome
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started_at.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
