//! The WebSocket tail over real loopback TCP: a glommio executor serves `serve_websocket` against
//! an in-memory `Service`; clients are synchronous `tungstenite` sockets on std threads.

// A failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use starcite_engine::api::{
    AppendReply, AppendRequest, CreateSession, EventBatch, ListPage, ListQuery, NodeMode, NotReady,
    Notification, PublishOutcome, Service, ServiceError, SessionRecord, Subscription,
    SubscriptionSender,
};
use starcite_net::tail::socket::CATCHUP_INTERVAL_MS;
use starcite_net::tail::{serve_websocket, TailParams};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// How long a client waits for any single frame before the test fails.
const FRAME_WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// In-memory service

#[derive(Default)]
struct SessionLog {
    events: Vec<Bytes>,
    subscribers: Vec<SubscriptionSender>,
    read_error: Option<ServiceError>,
}

#[derive(Default)]
struct FakeState {
    sessions: HashMap<String, SessionLog>,
    notifications_overflowed: u64,
}

/// A `Service` whose sessions live in memory; the test appends and injects read errors.
#[derive(Clone, Default)]
struct FakeService {
    state: Arc<Mutex<FakeState>>,
}

impl FakeService {
    fn create(&self, session_id: &str) {
        let mut state = self.state.lock().unwrap();
        state.sessions.entry(session_id.to_string()).or_default();
    }

    /// Append `count` events whose payload carries `padding_bytes` of filler, publishing a
    /// notification for each.
    fn append(&self, session_id: &str, count: usize, padding_bytes: usize) {
        let mut state = self.state.lock().unwrap();
        let mut overflowed = 0;
        let session = state.sessions.get_mut(session_id).expect("session created");
        for _ in 0..count {
            let seq = session.events.len() as u64 + 1;
            let padding = "x".repeat(padding_bytes);
            let frame = format!(
                r#"{{"seq":{seq},"type":"t","payload":{{"padding":"{padding}"}},"actor":"a","producer_id":"p","producer_seq":{seq},"metadata":{{}},"refs":{{}},"idempotency_key":null,"inserted_at":"2026-01-05T10:11:12.000000Z"}}"#
            );
            session.events.push(Bytes::from(frame));
            let notification = Notification { seq, last_seq: seq };
            session
                .subscribers
                .retain(|sender| match sender.publish(notification) {
                    PublishOutcome::Delivered => true,
                    PublishOutcome::Overflowed => {
                        overflowed += 1;
                        true
                    }
                    PublishOutcome::Closed => false,
                });
        }
        state.notifications_overflowed += overflowed;
    }

    /// Append `count` events whose notifications are lost.
    fn append_without_notifying(&self, session_id: &str, count: usize) {
        let senders = {
            let mut state = self.state.lock().unwrap();
            let session = state.sessions.get_mut(session_id).expect("session created");
            std::mem::take(&mut session.subscribers)
        };
        self.append(session_id, count, 0);
        let mut state = self.state.lock().unwrap();
        let session = state.sessions.get_mut(session_id).expect("session created");
        session.subscribers = senders;
    }

    fn set_read_error(&self, session_id: &str, error: Option<ServiceError>) {
        let mut state = self.state.lock().unwrap();
        state
            .sessions
            .get_mut(session_id)
            .expect("session created")
            .read_error = error;
    }

    fn notifications_overflowed(&self) -> u64 {
        self.state.lock().unwrap().notifications_overflowed
    }
}

impl Service for FakeService {
    async fn create_session(&self, _request: CreateSession) -> Result<SessionRecord, ServiceError> {
        Err(ServiceError::Internal("not used by tails".into()))
    }

    async fn append(&self, _request: AppendRequest) -> Result<AppendReply, ServiceError> {
        Err(ServiceError::Internal("not used by tails".into()))
    }

    async fn get_session(&self, session_id: &str) -> Result<SessionRecord, ServiceError> {
        let state = self.state.lock().unwrap();
        let session = state
            .sessions
            .get(session_id)
            .ok_or(ServiceError::SessionNotFound)?;
        if let Some(error) = &session.read_error {
            return Err(error.clone());
        }
        Ok(SessionRecord {
            id: session_id.to_string(),
            title: None,
            creator_principal: None,
            metadata: Default::default(),
            last_seq: session.events.len() as u64,
            archived_seq: 0,
            created_at_us: 0,
        })
    }

    async fn list_sessions(&self, _query: ListQuery) -> Result<ListPage, ServiceError> {
        Err(ServiceError::Internal("not used by tails".into()))
    }

    async fn read_events(
        &self,
        session_id: &str,
        cursor: u64,
        limit: u32,
    ) -> Result<EventBatch, ServiceError> {
        let state = self.state.lock().unwrap();
        let session = state
            .sessions
            .get(session_id)
            .ok_or(ServiceError::SessionNotFound)?;
        if let Some(error) = &session.read_error {
            return Err(error.clone());
        }
        let last_seq = session.events.len() as u64;
        let start = cursor.min(last_seq) as usize;
        let end = (cursor.saturating_add(u64::from(limit))).min(last_seq) as usize;
        Ok(EventBatch {
            first_seq: cursor + 1,
            events: session.events[start..end].to_vec(),
            last_seq,
        })
    }

    fn subscribe(&self, session_id: &str, capacity: usize) -> Subscription {
        let (sender, subscription) = starcite_engine::api::subscription_channel(capacity);
        let mut state = self.state.lock().unwrap();
        if let Some(session) = state.sessions.get_mut(session_id) {
            session.subscribers.push(sender);
        }
        subscription
    }

    fn mode(&self) -> NodeMode {
        NodeMode::WriteNode
    }

    fn readiness(&self) -> Result<(), NotReady> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Server: a minimal upgrade in front of `serve_websocket`

struct Server {
    address: SocketAddr,
    service: FakeService,
}

/// Start an executor that accepts tails for `service` with a buffer of `buffer_events`.
fn start_server(buffer_events: usize) -> Server {
    let service = FakeService::default();
    let (address_sender, address_receiver) = mpsc::channel();
    let served = service.clone();
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("tail-test")
        .spawn(move || async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            address_sender.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let Ok(stream) = listener.accept().await else {
                    continue;
                };
                glommio::spawn_local(upgrade_and_serve(stream, served.clone(), buffer_events))
                    .detach();
            }
        })
        .unwrap();
    let address = address_receiver.recv_timeout(FRAME_WAIT).unwrap();
    Server { address, service }
}

/// Read the request head, answer `101`, and hand the connection to the tail together with any
/// bytes read past the head.
async fn upgrade_and_serve(
    mut stream: glommio::net::TcpStream,
    service: FakeService,
    buffer_events: usize,
) {
    let mut received = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.unwrap();
        assert!(read > 0, "client left during the handshake");
        received.extend_from_slice(&chunk[..read]);
        if let Some(position) = received.windows(4).position(|window| window == b"\r\n\r\n") {
            break position + 4;
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    request.parse(&received[..head_end]).unwrap();
    let path = request.path.unwrap().to_string();
    let key = request
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("sec-websocket-key"))
        .map(|header| header.value.to_vec())
        .unwrap();
    let (route, query) = path.split_once('?').unwrap_or((&path, ""));
    let session_id = route
        .strip_prefix("/v1/sessions/")
        .and_then(|rest| rest.strip_suffix("/tail"))
        .unwrap()
        .to_string();
    let cursor = query
        .strip_prefix("cursor=")
        .map(|value| value.parse().unwrap())
        .unwrap_or(0);
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        tungstenite::handshake::derive_accept_key(&key)
    );
    stream.write_all(response.as_bytes()).await.unwrap();
    let leftover = received[head_end..].to_vec();
    let params = TailParams {
        session_id,
        cursor,
        buffer_events,
    };
    serve_websocket(stream, leftover, params, service).await;
}

// ---------------------------------------------------------------------------------------------
// Client helpers

type Client = WebSocket<TcpStream>;

fn connect(address: SocketAddr, session_id: &str, cursor: u64) -> Client {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(FRAME_WAIT)).unwrap();
    let url = format!("ws://{address}/v1/sessions/{session_id}/tail?cursor={cursor}");
    let (client, response) = tungstenite::client(url.as_str(), stream).unwrap();
    assert_eq!(response.status(), 101);
    client
}

fn seq_of(text: &str) -> u64 {
    let value: serde_json::Value = serde_json::from_str(text).unwrap();
    value["seq"].as_u64().unwrap()
}

/// Read event frames until `last_seq` arrives, checking that every frame is the one after the
/// previous (starting at `cursor + 1`). Returns the seqs read.
fn read_through(client: &mut Client, cursor: u64, last_seq: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut expected = cursor + 1;
    while expected <= last_seq {
        match client.read() {
            Ok(Message::Text(text)) => {
                let seq = seq_of(&text);
                assert_eq!(
                    seq, expected,
                    "frames must be contiguous from cursor {cursor}"
                );
                seqs.push(seq);
                expected += 1;
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            other => panic!("waiting for seq {expected} after cursor {cursor}: got {other:?}"),
        }
    }
    seqs
}

/// Read until the server's close frame arrives, skipping event frames.
fn read_close(client: &mut Client) -> Option<CloseFrame> {
    loop {
        match client.read() {
            Ok(Message::Close(frame)) => return frame,
            Ok(_) => {}
            Err(error) => panic!("waiting for a close frame: {error}"),
        }
    }
}

/// Wait until `condition` holds, failing with `what` after a deadline.
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + FRAME_WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Stored events after the cursor are replayed, then appends arrive live, each exactly once.
#[test]
fn replay_then_live_delivers_each_event_once_in_order() {
    let server = start_server(1000);
    server.service.create("s1");
    server.service.append("s1", 5, 0);

    let mut client = connect(server.address, "s1", 2);
    assert_eq!(read_through(&mut client, 2, 5), vec![3, 4, 5]);

    server.service.append("s1", 3, 0);
    assert_eq!(read_through(&mut client, 5, 8), vec![6, 7, 8]);
    client.close(None).unwrap();
}

/// G5: a cursor beyond `last_seq` is accepted and frames start once `last_seq` exceeds it.
#[test]
fn cursor_beyond_last_seq_starts_when_the_log_reaches_it() {
    let server = start_server(1000);
    server.service.create("ahead");
    server.service.append("ahead", 2, 0);

    let mut client = connect(server.address, "ahead", 4);
    server.service.append("ahead", 4, 0);
    assert_eq!(read_through(&mut client, 4, 6), vec![5, 6]);
}

/// G3: an event whose notification was lost is still delivered, by the catch-up check.
#[test]
fn event_with_a_lost_notification_arrives_through_catchup() {
    let server = start_server(1000);
    server.service.create("lossy");
    server.service.append("lossy", 1, 0);

    let mut client = connect(server.address, "lossy", 0);
    assert_eq!(read_through(&mut client, 0, 1), vec![1]);
    let appended_at = Instant::now();
    server.service.append_without_notifying("lossy", 2);
    assert_eq!(read_through(&mut client, 1, 3), vec![2, 3]);
    let waited = appended_at.elapsed();
    let catchup_bound = Duration::from_millis(CATCHUP_INTERVAL_MS) + Duration::from_secs(3);
    assert!(waited <= catchup_bound, "catch-up took {waited:?}");
}

/// Ten tails from different cursors, opened while appends run, each receive exactly
/// `cursor + 1 ..= last`.
#[test]
fn concurrent_tails_from_different_cursors_receive_exactly_their_suffix() {
    const INITIAL_EVENTS: usize = 100;
    const TOTAL_EVENTS: u64 = 600;
    let server = start_server(64);
    server.service.create("busy");
    server.service.append("busy", INITIAL_EVENTS, 16);

    let appender = {
        let service = server.service.clone();
        thread::spawn(move || {
            for _ in INITIAL_EVENTS as u64..TOTAL_EVENTS {
                service.append("busy", 1, 16);
                thread::sleep(Duration::from_micros(300));
            }
        })
    };
    let readers: Vec<_> = (0..10u64)
        .map(|index| {
            let address = server.address;
            thread::spawn(move || {
                let cursor = index * 37;
                let mut client = connect(address, "busy", cursor);
                let seqs = read_through(&mut client, cursor, TOTAL_EVENTS);
                assert_eq!(seqs, (cursor + 1..=TOTAL_EVENTS).collect::<Vec<_>>());
                client.close(None).unwrap();
            })
        })
        .collect();
    appender.join().unwrap();
    for reader in readers {
        reader.join().unwrap();
    }
}

/// tail.md §5: a client that stops reading while far more than ten buffers of events are
/// appended keeps its connection and, once it reads again, receives everything contiguously.
#[test]
fn stalled_consumer_receives_everything_contiguously_after_resuming() {
    const BUFFER_EVENTS: usize = 16;
    const STALLED_EVENTS: u64 = 3000;
    let server = start_server(BUFFER_EVENTS);
    server.service.create("slow");
    server.service.append("slow", 10, 0);

    let mut client = connect(server.address, "slow", 0);
    assert_eq!(read_through(&mut client, 0, 10).len(), 10);

    // 3000 events of ~4 KiB: far more than the socket buffers hold, so the server blocks on the
    // socket while notifications overflow.
    for _ in 0..STALLED_EVENTS / 50 {
        server.service.append("slow", 50, 4096);
        thread::sleep(Duration::from_millis(2));
    }
    assert!(STALLED_EVENTS >= 10 * BUFFER_EVENTS as u64);
    wait_for("notification overflow", || {
        server.service.notifications_overflowed() > 0
    });

    let last_seq = 10 + STALLED_EVENTS;
    let seqs = read_through(&mut client, 10, last_seq);
    assert_eq!(seqs.len() as u64, STALLED_EVENTS);

    // Still live afterwards.
    server.service.append("slow", 1, 0);
    assert_eq!(
        read_through(&mut client, last_seq, last_seq + 1),
        vec![last_seq + 1]
    );
}

/// tail.md §6: `event_gap_detected` closes at once with 1011 and the code as the reason.
#[test]
fn permanent_read_error_closes_with_1011_and_the_error_code() {
    let server = start_server(1000);
    server.service.create("broken");
    server.service.append("broken", 3, 0);

    let mut client = connect(server.address, "broken", 0);
    assert_eq!(read_through(&mut client, 0, 3).len(), 3);
    server
        .service
        .set_read_error("broken", Some(ServiceError::EventGapDetected));
    server.service.append("broken", 1, 0);

    let frame = read_close(&mut client).expect("close frame with a code");
    assert_eq!(frame.code, CloseCode::Error);
    assert_eq!(frame.reason.as_str(), "event_gap_detected");
}

/// A session that disappears (`session_not_found`) closes the tail during the initial replay.
#[test]
fn missing_session_closes_with_1011_session_not_found() {
    let server = start_server(1000);
    let mut client = connect(server.address, "missing", 0);
    let frame = read_close(&mut client).expect("close frame with a code");
    assert_eq!(frame.code, CloseCode::Error);
    assert_eq!(frame.reason.as_str(), "session_not_found");
}

/// `raft_unavailable` is transient: the tail stays open, retries, and delivers once reads work.
#[test]
fn transient_read_errors_keep_the_tail_open() {
    let server = start_server(1000);
    server.service.create("election");
    server
        .service
        .set_read_error("election", Some(ServiceError::RaftUnavailable));
    server.service.append("election", 2, 0);

    let mut client = connect(server.address, "election", 0);
    thread::sleep(Duration::from_millis(700));
    server.service.set_read_error("election", None);
    assert_eq!(read_through(&mut client, 0, 2), vec![1, 2]);
}

/// A client's close frame is answered with the same code.
#[test]
fn client_close_code_is_echoed() {
    let server = start_server(1000);
    server.service.create("bye");
    server.service.append("bye", 2, 0);

    let mut client = connect(server.address, "bye", 0);
    assert_eq!(read_through(&mut client, 0, 2).len(), 2);
    client
        .close(Some(CloseFrame {
            code: CloseCode::from(4321),
            reason: "done".into(),
        }))
        .unwrap();
    let frame = read_close(&mut client).expect("echoed close frame");
    assert_eq!(frame.code, CloseCode::from(4321));
}

/// Client text frames are ignored and client pings are answered with pongs.
#[test]
fn client_frames_are_ignored_and_pings_answered() {
    let server = start_server(1000);
    server.service.create("chatty");

    let mut client = connect(server.address, "chatty", 0);
    client.send(Message::Text("hello".into())).unwrap();
    client
        .send(Message::Ping(Bytes::from_static(b"p1")))
        .unwrap();
    match client.read().unwrap() {
        Message::Pong(payload) => assert_eq!(&payload[..], b"p1"),
        other => panic!("expected a pong, got {other:?}"),
    }
    server.service.append("chatty", 1, 0);
    assert_eq!(read_through(&mut client, 0, 1), vec![1]);
}

/// Frames the client sends in the same packet as the upgrade request reach the tail (they are
/// in the `leftover` bytes): a close frame sent with the request is echoed.
#[test]
fn frames_sent_with_the_upgrade_request_are_read_first() {
    let server = start_server(1000);
    server.service.create("eager");

    let mut stream = TcpStream::connect(server.address).unwrap();
    stream.set_read_timeout(Some(FRAME_WAIT)).unwrap();
    let mut bytes = b"GET /v1/sessions/eager/tail?cursor=0 HTTP/1.1\r\nHost: test\r\n\
        Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        .to_vec();
    // A masked close frame with code 4000 (0x0FA0).
    let mask = [1u8, 2, 3, 4];
    bytes.extend_from_slice(&[0x88, 0x82]);
    bytes.extend_from_slice(&mask);
    bytes.extend_from_slice(&[0x0F ^ mask[0], 0xA0 ^ mask[1]]);
    stream.write_all(&bytes).unwrap();

    let mut received = Vec::new();
    let expected_frame = [0x88u8, 0x02, 0x0F, 0xA0];
    while !received.windows(4).any(|window| window == expected_frame) {
        let mut chunk = [0u8; 1024];
        let read = stream.read(&mut chunk).unwrap();
        assert!(
            read > 0,
            "connection closed before the close echo: {received:?}"
        );
        received.extend_from_slice(&chunk[..read]);
    }
    assert!(received.starts_with(b"HTTP/1.1 101 "));
}
