//! Shared pieces of the HTTP tests: an in-memory [`Service`], a server on its own glommio
//! executor, and a raw-socket client.

#![allow(dead_code, clippy::unwrap_used)]

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use serde_json::{json, Value};
use starcite_engine::api::{
    subscription_channel, AppendReply, AppendRequest, AppendResult, CreateSession, EventBatch,
    ListPage, ListQuery, NewEvent, NodeMode, NotReady, Service, ServiceError, SessionRecord,
    Subscription,
};
use starcite_net::server::{serve_listener, NetConfig};

/// Creation stamp of every fake session: 2026-01-05T10:11:12.123456Z.
pub const CREATED_AT_US: i64 = 1_767_607_872_123_456;
/// A session id whose lookup panics, to exercise T13.
pub const PANIC_SESSION_ID: &str = "panic-now";

#[derive(Default)]
struct FakeSession {
    record: Option<SessionRecord>,
    events: Vec<(NewEvent, u64)>,
    producers: BTreeMap<String, (u64, u64, String)>,
}

/// A map-based implementation of the session semantics, good enough for the HTTP layer.
#[derive(Clone, Default)]
pub struct FakeService {
    sessions: Rc<RefCell<BTreeMap<String, FakeSession>>>,
    pub not_ready: Rc<Cell<bool>>,
}

fn fingerprint(event: &NewEvent) -> String {
    json!([
        event.event_type,
        event.payload,
        event.actor,
        event.source,
        event.metadata,
        event.refs,
        event.idempotency_key,
        event.producer_id,
        event.producer_seq
    ])
    .to_string()
}

impl Service for FakeService {
    async fn create_session(&self, request: CreateSession) -> Result<SessionRecord, ServiceError> {
        let mut sessions = self.sessions.borrow_mut();
        if sessions.contains_key(&request.id) {
            return Err(ServiceError::SessionExists);
        }
        let record = SessionRecord {
            id: request.id.clone(),
            title: request.title,
            creator_principal: request.creator_principal,
            metadata: request.metadata,
            last_seq: 0,
            archived_seq: 0,
            created_at_us: CREATED_AT_US,
        };
        sessions.insert(
            request.id,
            FakeSession {
                record: Some(record.clone()),
                ..FakeSession::default()
            },
        );
        Ok(record)
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendReply, ServiceError> {
        let mut sessions = self.sessions.borrow_mut();
        let session = sessions
            .get_mut(&request.session_id)
            .ok_or(ServiceError::SessionNotFound)?;
        let mut last_seq = session.events.len() as u64;
        let mut producers = session.producers.clone();
        let mut new_events = Vec::new();
        let mut results = Vec::new();
        let all_dedupe = request.events.iter().all(|event| {
            producers
                .get(&event.producer_id)
                .is_some_and(|(seq, _, fp)| *seq == event.producer_seq && *fp == fingerprint(event))
        });
        if let (Some(expected), false) = (request.expected_seq, all_dedupe) {
            if expected != last_seq {
                return Err(ServiceError::ExpectedSeqConflict {
                    expected,
                    current: last_seq,
                });
            }
        }
        for event in request.events {
            let fp = fingerprint(&event);
            match producers.get(&event.producer_id).cloned() {
                Some((seq, stored, stored_fp)) if seq == event.producer_seq && stored_fp == fp => {
                    results.push(AppendResult {
                        seq: stored,
                        last_seq,
                        deduped: true,
                    });
                    continue;
                }
                Some((seq, _, _)) if seq == event.producer_seq => {
                    return Err(ServiceError::ProducerReplayConflict)
                }
                Some((seq, _, _)) if seq + 1 != event.producer_seq => {
                    return Err(ServiceError::ProducerSeqConflict {
                        producer_id: event.producer_id.clone(),
                        expected: seq + 1,
                        got: event.producer_seq,
                    })
                }
                None if event.producer_seq != 1 => {
                    return Err(ServiceError::ProducerSeqConflict {
                        producer_id: event.producer_id.clone(),
                        expected: 1,
                        got: event.producer_seq,
                    })
                }
                _ => {}
            }
            last_seq += 1;
            producers.insert(
                event.producer_id.clone(),
                (event.producer_seq, last_seq, fp),
            );
            results.push(AppendResult {
                seq: last_seq,
                last_seq,
                deduped: false,
            });
            new_events.push((event, last_seq));
        }
        session.producers = producers;
        session.events.extend(new_events);
        if let Some(record) = session.record.as_mut() {
            record.last_seq = last_seq;
        }
        Ok(AppendReply { results, last_seq })
    }

    async fn get_session(&self, session_id: &str) -> Result<SessionRecord, ServiceError> {
        if session_id == PANIC_SESSION_ID {
            panic!("fake service asked to panic");
        }
        let sessions = self.sessions.borrow();
        sessions
            .get(session_id)
            .and_then(|session| session.record.clone())
            .ok_or(ServiceError::SessionNotFound)
    }

    async fn list_sessions(&self, query: ListQuery) -> Result<ListPage, ServiceError> {
        let sessions = self.sessions.borrow();
        let mut matching = sessions
            .values()
            .filter_map(|session| session.record.clone())
            .filter(|record| {
                query
                    .cursor
                    .as_ref()
                    .is_none_or(|cursor| record.id.as_str() > cursor.as_str())
                    && query.metadata_filters.iter().all(|(key, value)| {
                        record.metadata.get(key) == Some(&Value::String(value.clone()))
                    })
                    && query.creator_tenant_id.as_ref().is_none_or(|tenant_id| {
                        record
                            .creator_principal
                            .as_ref()
                            .is_some_and(|creator| creator.tenant_id == *tenant_id)
                    })
                    && query.creator_id.as_ref().is_none_or(|creator_id| {
                        record
                            .creator_principal
                            .as_ref()
                            .is_some_and(|creator| creator.id == *creator_id)
                    })
            });
        let mut page: Vec<SessionRecord> = matching.by_ref().take(query.limit as usize).collect();
        let more = matching.next().is_some();
        let next_cursor = if more {
            page.last().map(|record| record.id.clone())
        } else {
            None
        };
        page.truncate(query.limit as usize);
        Ok(ListPage {
            sessions: page,
            next_cursor,
        })
    }

    async fn read_events(
        &self,
        session_id: &str,
        cursor: u64,
        limit: u32,
    ) -> Result<EventBatch, ServiceError> {
        let sessions = self.sessions.borrow();
        let session = sessions
            .get(session_id)
            .ok_or(ServiceError::SessionNotFound)?;
        let events: Vec<Bytes> = session
            .events
            .iter()
            .filter(|(_, seq)| *seq > cursor)
            .take(limit as usize)
            .map(|(event, seq)| {
                Bytes::from(
                    json!({"seq": seq, "type": event.event_type, "payload": event.payload,
                        "actor": event.actor, "producer_id": event.producer_id,
                        "producer_seq": event.producer_seq, "metadata": event.metadata,
                        "refs": event.refs, "idempotency_key": event.idempotency_key,
                        "inserted_at": "2026-01-05T10:11:13.000001Z"})
                    .to_string(),
                )
            })
            .collect();
        Ok(EventBatch {
            first_seq: cursor + 1,
            events,
            last_seq: session.events.len() as u64,
        })
    }

    fn subscribe(&self, _session_id: &str, capacity: usize) -> Subscription {
        subscription_channel(capacity).1
    }

    fn mode(&self) -> NodeMode {
        NodeMode::WriteNode
    }

    fn readiness(&self) -> Result<(), NotReady> {
        if self.not_ready.get() {
            Err(NotReady {
                reason: "raft_sync",
                detail: Some(json!({"probe_result": "startup_sync"})),
            })
        } else {
            Ok(())
        }
    }
}

/// A server on its own executor thread; stopped and joined on drop.
pub struct TestServer {
    pub address: SocketAddr,
    stop: Option<flume::Sender<()>>,
    thread: Option<glommio::ExecutorJoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(|_| {}, false)
    }

    /// Start with a modified config; `not_ready` makes `/health/ready` answer 503.
    pub fn start_with(
        configure: impl FnOnce(&mut NetConfig) + Send + 'static,
        not_ready: bool,
    ) -> TestServer {
        let (address_sender, address_receiver) = std::sync::mpsc::channel();
        let (stop, stopped) = flume::bounded::<()>(1);
        let thread = LocalExecutorBuilder::new(Placement::Unbound)
            .name("http-test")
            .spawn(move || async move {
                let mut config = NetConfig {
                    port: 0,
                    ..NetConfig::default()
                };
                configure(&mut config);
                let listener = starcite_net::server::bind(&config).unwrap();
                address_sender.send(listener.local_addr().unwrap()).unwrap();
                let service = FakeService::default();
                service.not_ready.set(not_ready);
                let shutdown = async move {
                    let _ = stopped.recv_async().await;
                };
                serve_listener(listener, Rc::new(config), service, shutdown)
                    .await
                    .unwrap();
            })
            .unwrap();
        let address = address_receiver
            .recv_timeout(Duration::from_secs(10))
            .unwrap();
        TestServer {
            address,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.address)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One parsed response.
#[derive(Debug)]
pub struct TestResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .count()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not JSON ({error}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw HTTP/1.1 client on a std socket.
pub struct Client {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl Client {
    pub fn connect(address: SocketAddr) -> Client {
        let stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client {
            stream,
            buffer: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Send a request with a JSON body (or none) and the given extra header lines.
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        extra_headers: &[&str],
        body: Option<&str>,
    ) -> TestResponse {
        let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
        for header in extra_headers {
            raw.push_str(header);
            raw.push_str("\r\n");
        }
        if let Some(body) = body {
            raw.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        } else {
            raw.push_str("\r\n");
        }
        self.send(raw.as_bytes());
        self.read_response(method == "HEAD")
    }

    pub fn get(&mut self, target: &str) -> TestResponse {
        self.request("GET", target, &[], None)
    }

    pub fn post_json(&mut self, target: &str, body: &str) -> TestResponse {
        self.request(
            "POST",
            target,
            &["Content-Type: application/json"],
            Some(body),
        )
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0_u8; 65536];
        let read = self.stream.read(&mut chunk).unwrap_or(0);
        self.buffer.extend_from_slice(&chunk[..read]);
        read
    }

    /// Read one response (no body expected when `head_request`).
    pub fn read_response(&mut self, head_request: bool) -> TestResponse {
        let head_end = loop {
            if let Some(position) = self
                .buffer
                .windows(4)
                .position(|window| window == b"\r\n\r\n")
            {
                break position + 4;
            }
            assert!(
                self.fill() > 0,
                "connection closed before a response: {:?}",
                String::from_utf8_lossy(&self.buffer)
            );
        };
        let head = String::from_utf8(self.buffer[..head_end].to_vec()).unwrap();
        self.buffer.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter(|line| !line.is_empty())
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.trim().to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .map_or(0, |(_, value)| value.parse().unwrap());
        let body_length = if head_request || status == 101 {
            0
        } else {
            length
        };
        while self.buffer.len() < body_length {
            assert!(self.fill() > 0, "connection closed inside a body");
        }
        let body = self.buffer.drain(..body_length).collect();
        TestResponse {
            status,
            headers,
            body,
        }
    }

    /// True when the server closed the connection (reads end of stream) within the read timeout.
    pub fn is_closed_by_server(&mut self) -> bool {
        let mut chunk = [0_u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(error) => {
                    return matches!(error.kind(), std::io::ErrorKind::ConnectionReset);
                }
            }
        }
    }
}

/// A create body for session `id` of tenant `acme`.
pub fn create_body(id: &str) -> String {
    json!({"id": id, "creator_principal": {"tenant_id": "acme", "id": "u1", "type": "user"}})
        .to_string()
}

/// A minimal valid append body.
pub fn event_body(producer_seq: u64) -> String {
    json!({"type": "t", "payload": {}, "actor": "a", "producer_id": "p", "producer_seq": producer_seq}).to_string()
}
