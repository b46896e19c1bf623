//! Clients that behave like a load balancer in front of a cluster's public listeners: a shared
//! view of which nodes answer `/health/ready` with 200, writers that send only to ready nodes and
//! re-send an append whose connection failed before any response to another ready node (same
//! producer fields, so dedupe makes that safe), and WebSocket tails that reconnect with their
//! last cursor. Everything is recorded; [`Load::stop`] returns the [`LoadReport`].

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

use crate::event_body;
use crate::http::{HttpClient, Response};

/// How often the readiness view is refreshed.
const READY_REFRESH_INTERVAL: Duration = Duration::from_millis(200);
/// Read timeout of one `/health/ready` probe.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connect timeout of tails (loopback: refused is immediate).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Read timeout of one append; longer means the request is lost.
const APPEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before re-sending when no node is ready or a request failed.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest `Retry-After` honoured (a bigger value would stall the test).
const RETRY_AFTER_MAX: Duration = Duration::from_secs(5);
/// How long a writer keeps retrying its current append after `stop()`.
const STOP_FINISH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long tails may take to reach the final `last_seq` after the writers stopped.
const TAIL_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `stop()` tries to read a session's final `last_seq`.
const LAST_SEQ_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval of a tail's socket (so that it notices `stop()`).
const TAIL_READ_TIMEOUT: Duration = Duration::from_millis(200);
/// Recorded failures / retries / sends / closes are capped so that a broken node cannot exhaust
/// the test's memory; counts stay exact.
const RECORDS_MAX: usize = 100_000;
/// Acknowledgements (and events per tail) kept; a soak past this stops recording, and
/// `LoadReport::acks_truncated` says so.
const ACKS_MAX: usize = 2_000_000;
/// Contiguity violations recorded per tail.
const VIOLATIONS_MAX: usize = 100;

/// A node the balancer can send to.
#[derive(Clone, Debug)]
pub struct Backend {
    /// `NODE_NAME`.
    pub name: String,
    /// Public listener.
    pub http_addr: SocketAddr,
}

/// What load to run.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Sessions (must exist); writers and tails are spread over them round robin.
    pub sessions: Vec<String>,
    /// Writer threads, each its own `producer_id`.
    pub writers: usize,
    /// Tail threads.
    pub tails: usize,
    /// Retry `503` answers (after `Retry-After` if present, same `producer_seq`) instead of
    /// counting them as failed requests.
    pub retry_503: bool,
    /// Prefix of the producer ids (distinct per load run on the same sessions).
    pub producer_prefix: String,
}

/// A `201` acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// Session.
    pub session: String,
    /// Acknowledged seq.
    pub seq: u64,
    /// `producer_id`.
    pub producer: String,
    /// `producer_seq`.
    pub producer_seq: u64,
    /// Node index that answered.
    pub node: usize,
    /// The answer was the dedupe reply.
    pub deduped: bool,
}

/// A request answered with anything but `201` (or lost to a timeout: `status` 0).
#[derive(Clone, Debug)]
pub struct FailedRequest {
    /// Node index.
    pub node: usize,
    /// HTTP status (0: no answer within the timeout, or given up at stop).
    pub status: u16,
    /// Response body or error text.
    pub body: String,
    /// Time since the load started.
    pub at: Duration,
    /// Session, producer and producer_seq of the request.
    pub request: (String, String, u64),
}

/// A request whose connection failed before any response and that was re-sent.
#[derive(Clone, Debug)]
pub struct Resend {
    /// Node index the connection failed on.
    pub node: usize,
    /// Error text.
    pub error: String,
    /// Time since the load started.
    pub at: Duration,
}

/// A readiness change seen by the refresher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyChange {
    /// Time since the load started.
    pub at: Duration,
    /// Node index.
    pub node: usize,
    /// New state.
    pub ready: bool,
    /// Why not ready: the `/health/ready` body or the connection error (empty when ready).
    pub detail: String,
}

/// What one tail saw.
#[derive(Clone, Debug, Default)]
pub struct TailReport {
    /// Session.
    pub session: String,
    /// Last seq received.
    pub cursor: u64,
    /// `last_seq` of the session when the writers stopped.
    pub target: u64,
    /// Frames out of order (`got X after Y`), capped at [`VIOLATIONS_MAX`].
    pub violations: Vec<String>,
    /// How many connections the tail opened.
    pub connections: usize,
    /// Why connections ended: (node, close code or 0 for an error, reason or error).
    pub closes: Vec<(usize, u16, String)>,
    /// Connection attempts that failed before the upgrade (a stale readiness view): (node, error).
    pub connect_failures: Vec<(usize, String)>,
    /// `(producer_id, producer_seq)` of every delivered seq (index = seq - 1).
    pub events: Vec<(String, u64)>,
}

/// Everything the load recorded.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Every `201` (up to [`ACKS_MAX`]).
    pub acks: Vec<Ack>,
    /// More than [`ACKS_MAX`] acknowledgements arrived; the rest were not kept.
    pub acks_truncated: bool,
    /// Every failed request (see [`FailedRequest`]).
    pub failures: Vec<FailedRequest>,
    /// Number of failed requests (exact even past the cap).
    pub failure_count: usize,
    /// `503`s retried in `retry_503` mode: (node, body).
    pub retried_503: Vec<(usize, String)>,
    /// Number of retried `503`s.
    pub retried_503_count: usize,
    /// Requests re-sent after a connection failure.
    pub resends: Vec<Resend>,
    /// Number of re-sends.
    pub resend_count: usize,
    /// Readiness changes, in order (the initial state counts as a change).
    pub ready_changes: Vec<ReadyChange>,
    /// Requests sent: (time since start, node index), in order per writer.
    pub sends: Vec<(Duration, usize)>,
    /// Requests sent per node.
    pub sends_per_node: Vec<usize>,
    /// One report per tail.
    pub tails: Vec<TailReport>,
    /// `last_seq` of every session after the writers stopped.
    pub last_seqs: BTreeMap<String, u64>,
    /// How long the load ran.
    pub elapsed: Duration,
}

impl LoadReport {
    /// Acknowledgements per session, keyed by seq (panics on two acks for one seq with different
    /// producer fields, which would mean a seq was reused).
    pub fn acks_by_session(&self) -> BTreeMap<String, BTreeMap<u64, (String, u64)>> {
        let mut by_session: BTreeMap<String, BTreeMap<u64, (String, u64)>> = BTreeMap::new();
        for ack in &self.acks {
            let entry = (ack.producer.clone(), ack.producer_seq);
            let previous = by_session
                .entry(ack.session.clone())
                .or_default()
                .insert(ack.seq, entry.clone());
            if let Some(previous) = previous {
                assert_eq!(
                    previous, entry,
                    "{} seq {} acknowledged for two events",
                    ack.session, ack.seq
                );
            }
        }
        by_session
    }

    /// Requests sent to `node` between `from` and `to` (times since the load started).
    pub fn sends_to(&self, node: usize, from: Duration, to: Duration) -> usize {
        self.sends
            .iter()
            .filter(|(at, n)| *n == node && *at >= from && *at <= to)
            .count()
    }

    /// Periods in which the view had `node` not ready: (from, to) since the load started; the
    /// last period ends at `elapsed` when the node never came back.
    pub fn unready_periods(&self, node: usize) -> Vec<(Duration, Duration)> {
        let mut periods = Vec::new();
        let mut down_since: Option<Duration> = None;
        for change in self.ready_changes.iter().filter(|c| c.node == node) {
            match (change.ready, down_since) {
                (false, None) => down_since = Some(change.at),
                (true, Some(from)) => {
                    periods.push((from, change.at));
                    down_since = None;
                }
                _ => {}
            }
        }
        if let Some(from) = down_since {
            periods.push((from, self.elapsed));
        }
        periods
    }

    /// Requests sent to `node` while the view had it not ready, allowing `grace` after each
    /// change for requests that picked the node just before it.
    pub fn sends_while_unready(&self, node: usize, grace: Duration) -> usize {
        self.unready_periods(node)
            .iter()
            .map(|(from, to)| self.sends_to(node, *from + grace, *to))
            .sum()
    }

    /// A one-line summary for the test output.
    pub fn summary(&self) -> String {
        let contiguous = self
            .tails
            .iter()
            .filter(|t| t.violations.is_empty())
            .count();
        let reconnects: usize = self
            .tails
            .iter()
            .map(|t| t.connections.saturating_sub(1))
            .sum();
        format!(
            "{:.1}s: {} acks ({:.0}/s), {} failed, {} retried 503, {} re-sent, sends per node {:?}, \
             {}/{} tails contiguous, {} tail reconnects",
            self.elapsed.as_secs_f64(),
            self.acks.len(),
            self.acks.len() as f64 / self.elapsed.as_secs_f64().max(0.001),
            self.failure_count,
            self.retried_503_count,
            self.resend_count,
            self.sends_per_node,
            contiguous,
            self.tails.len(),
            reconnects,
        )
    }
}

/// The shared readiness view and records.
struct Shared {
    backends: Vec<Backend>,
    started: Instant,
    ready: Mutex<Vec<bool>>,
    /// Stops the writers (and then the refresher).
    writers_stop: AtomicBool,
    /// Stops the refresher.
    refresher_stop: AtomicBool,
    /// Per session, the seq the tails must reach before they stop (set by `stop()`).
    tail_targets: Mutex<Option<BTreeMap<String, u64>>>,
    /// Tails give up at this time (set by `stop()`).
    tail_deadline: Mutex<Option<Instant>>,
    report: Mutex<LoadReport>,
    round_robin: AtomicUsize,
}

impl Shared {
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn ready_nodes(&self) -> Vec<usize> {
        let ready = self.ready.lock().unwrap();
        (0..ready.len()).filter(|n| ready[*n]).collect()
    }

    /// The next ready node in round robin, avoiding `avoid` when another node is ready.
    fn pick(&self, avoid: Option<usize>) -> Option<usize> {
        let ready = self.ready_nodes();
        if ready.is_empty() {
            return None;
        }
        let candidates: Vec<usize> = match avoid {
            Some(avoid) if ready.len() > 1 => ready.into_iter().filter(|n| *n != avoid).collect(),
            _ => ready,
        };
        let turn = self.round_robin.fetch_add(1, Ordering::Relaxed);
        Some(candidates[turn % candidates.len()])
    }

    fn record<T>(list: &mut Vec<T>, item: T) {
        if list.len() < RECORDS_MAX {
            list.push(item);
        }
    }
}

/// A running load; [`Load::stop`] ends it.
pub struct Load {
    shared: Arc<Shared>,
    refresher: Option<JoinHandle<()>>,
    writers: Vec<JoinHandle<()>>,
    tails: Vec<JoinHandle<TailReport>>,
    sessions: Vec<String>,
}

impl Load {
    /// Start the refresher, then (once at least one node is ready) the writers and tails.
    pub fn start(backends: Vec<Backend>, options: LoadOptions) -> Load {
        assert!(!options.sessions.is_empty(), "load without sessions");
        let shared = Arc::new(Shared {
            ready: Mutex::new(vec![false; backends.len()]),
            report: Mutex::new(LoadReport {
                sends_per_node: vec![0; backends.len()],
                ..LoadReport::default()
            }),
            backends,
            started: Instant::now(),
            writers_stop: AtomicBool::new(false),
            refresher_stop: AtomicBool::new(false),
            tail_targets: Mutex::new(None),
            tail_deadline: Mutex::new(None),
            round_robin: AtomicUsize::new(0),
        });
        let refresher = {
            let shared = shared.clone();
            std::thread::spawn(move || refresh_readiness(&shared))
        };
        crate::wait_for("a ready node for the load", Duration::from_secs(30), || {
            (!shared.ready_nodes().is_empty()).then_some(())
        });
        let writers = (0..options.writers)
            .map(|index| {
                let shared = shared.clone();
                let session = options.sessions[index % options.sessions.len()].clone();
                let producer = format!("{}{index}", options.producer_prefix);
                let retry_503 = options.retry_503;
                std::thread::spawn(move || write_loop(&shared, &session, &producer, retry_503))
            })
            .collect();
        let tails = (0..options.tails)
            .map(|index| {
                let shared = shared.clone();
                let session = options.sessions[index % options.sessions.len()].clone();
                std::thread::spawn(move || tail_loop(&shared, session))
            })
            .collect();
        Load {
            shared,
            refresher: Some(refresher),
            writers,
            tails,
            sessions: options.sessions,
        }
    }

    /// Indices of the nodes the balancer currently considers ready.
    pub fn ready_nodes(&self) -> Vec<usize> {
        self.shared.ready_nodes()
    }

    /// Time since the load started (the time base of the report).
    pub fn elapsed(&self) -> Duration {
        self.shared.elapsed()
    }

    /// Acknowledgements so far.
    pub fn ack_count(&self) -> usize {
        self.shared.report.lock().unwrap().acks.len()
    }

    /// Failed requests so far.
    pub fn failure_count(&self) -> usize {
        self.shared.report.lock().unwrap().failure_count
    }

    /// Wait until the balancer's view of `node` is `ready` (panics after `timeout`).
    pub fn wait_view(&self, node: usize, ready: bool, timeout: Duration) {
        crate::wait_for(
            &format!("balancer view of node {node} = ready {ready}"),
            timeout,
            || (self.shared.ready.lock().unwrap()[node] == ready).then_some(()),
        );
    }

    /// Stop the writers, read every session's final `last_seq`, let the tails catch up to it,
    /// and return the report.
    pub fn stop(mut self) -> LoadReport {
        self.shared.writers_stop.store(true, Ordering::Relaxed);
        for writer in self.writers.drain(..) {
            writer.join().expect("writer thread panicked");
        }
        let mut last_seqs = BTreeMap::new();
        for session in &self.sessions {
            last_seqs.insert(session.clone(), self.read_last_seq(session));
        }
        *self.shared.tail_deadline.lock().unwrap() = Some(Instant::now() + TAIL_CATCH_UP_TIMEOUT);
        *self.shared.tail_targets.lock().unwrap() = Some(last_seqs.clone());
        let tails: Vec<TailReport> = self
            .tails
            .drain(..)
            .map(|tail| tail.join().expect("tail thread panicked"))
            .collect();
        self.shared.refresher_stop.store(true, Ordering::Relaxed);
        if let Some(refresher) = self.refresher.take() {
            refresher.join().expect("refresher thread panicked");
        }
        let mut report = std::mem::take(&mut *self.shared.report.lock().unwrap());
        report.tails = tails;
        report.last_seqs = last_seqs;
        report.elapsed = self.shared.elapsed();
        report
    }

    /// `last_seq` of `session` from a ready node (`GET /v1/sessions/:id`).
    fn read_last_seq(&self, session: &str) -> u64 {
        crate::wait_for(&format!("last_seq of {session}"), LAST_SEQ_TIMEOUT, || {
            let node = self.shared.pick(None)?;
            let mut client = HttpClient::connect(self.shared.backends[node].http_addr).ok()?;
            let response = client.get(&format!("/v1/sessions/{session}")).ok()?;
            if response.status != 200 {
                return None;
            }
            response.json()["last_seq"].as_u64()
        })
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // A test that panicked before `stop()` must not leave threads hammering dead nodes.
        self.shared.writers_stop.store(true, Ordering::Relaxed);
        self.shared.refresher_stop.store(true, Ordering::Relaxed);
        *self.shared.tail_deadline.lock().unwrap() = Some(Instant::now());
    }
}

fn refresh_readiness(shared: &Shared) {
    let mut probed = vec![false; shared.backends.len()];
    while !shared.refresher_stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        for (node, backend) in shared.backends.iter().enumerate() {
            let (ready, detail) = probe_ready(backend.http_addr);
            let mut view = shared.ready.lock().unwrap();
            if view[node] != ready || !probed[node] {
                probed[node] = true;
                view[node] = ready;
                let change = ReadyChange {
                    at: shared.elapsed(),
                    node,
                    ready,
                    detail,
                };
                Shared::record(&mut shared.report.lock().unwrap().ready_changes, change);
            }
        }
        std::thread::sleep(READY_REFRESH_INTERVAL.saturating_sub(started.elapsed()));
    }
}

/// Whether `/health/ready` answers 200, and otherwise why not.
fn probe_ready(addr: SocketAddr) -> (bool, String) {
    let mut client = match HttpClient::connect(addr) {
        Ok(client) => client,
        Err(error) => return (false, format!("connect: {error}")),
    };
    if let Err(error) = client.stream().set_read_timeout(Some(READY_PROBE_TIMEOUT)) {
        return (false, error.to_string());
    }
    match client.get("/health/ready") {
        Ok(response) if response.status == 200 => (true, String::new()),
        Ok(response) => (false, format!("{} {}", response.status, response.text())),
        Err(error) => (false, error.to_string()),
    }
}

/// How one attempt of an append ended.
enum Attempt {
    Acknowledged(Response),
    Answered(Response),
    /// The connection failed before any response.
    ConnectionFailed(io::Error),
    /// The request was sent but no answer came within [`APPEND_TIMEOUT`].
    TimedOut(io::Error),
}

fn send_append(
    connections: &mut [Option<HttpClient>],
    backend: &Backend,
    node: usize,
    path: &str,
    body: &serde_json::Value,
) -> Attempt {
    if connections[node].is_none() {
        match HttpClient::connect(backend.http_addr) {
            Ok(mut client) => {
                if let Err(error) = client.stream().set_read_timeout(Some(APPEND_TIMEOUT)) {
                    return Attempt::ConnectionFailed(error);
                }
                connections[node] = Some(client);
            }
            Err(error) => return Attempt::ConnectionFailed(error),
        }
    }
    let Some(client) = connections[node].as_mut() else {
        return Attempt::ConnectionFailed(io::Error::other("no connection"));
    };
    match client.post_json(path, body) {
        Ok(response) => {
            if response
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            {
                connections[node] = None;
            }
            if response.status == 201 {
                Attempt::Acknowledged(response)
            } else {
                Attempt::Answered(response)
            }
        }
        Err(error) => {
            connections[node] = None;
            if matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                Attempt::TimedOut(error)
            } else {
                Attempt::ConnectionFailed(error)
            }
        }
    }
}

fn retry_after(response: &Response) -> Duration {
    response
        .header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|seconds| Duration::from_secs(seconds).min(RETRY_AFTER_MAX))
        .unwrap_or(RETRY_PAUSE)
}

fn write_loop(shared: &Shared, session: &str, producer: &str, retry_503: bool) {
    let path = format!("/v1/sessions/{session}/append");
    let mut connections: Vec<Option<HttpClient>> =
        (0..shared.backends.len()).map(|_| None).collect();
    let mut producer_seq = 1u64;
    'events: while !shared.writers_stop.load(Ordering::Relaxed) {
        let body = event_body(producer, producer_seq);
        let mut avoid = None;
        let mut stop_deadline: Option<Instant> = None;
        loop {
            if shared.writers_stop.load(Ordering::Relaxed) {
                let deadline = *stop_deadline.get_or_insert(Instant::now() + STOP_FINISH_TIMEOUT);
                if Instant::now() >= deadline {
                    let mut report = shared.report.lock().unwrap();
                    report.failure_count += 1;
                    let failure = FailedRequest {
                        node: avoid.unwrap_or(0),
                        status: 0,
                        body: "not acknowledged within the stop timeout".into(),
                        at: shared.elapsed(),
                        request: (session.into(), producer.into(), producer_seq),
                    };
                    Shared::record(&mut report.failures, failure);
                    break 'events;
                }
            }
            let Some(node) = shared.pick(avoid) else {
                std::thread::sleep(RETRY_PAUSE);
                continue;
            };
            if avoid == Some(node) {
                // No other node is ready: do not hammer the one that just failed.
                std::thread::sleep(RETRY_PAUSE);
            }
            {
                let mut report = shared.report.lock().unwrap();
                report.sends_per_node[node] += 1;
                let at = shared.elapsed();
                Shared::record(&mut report.sends, (at, node));
            }
            let backend = &shared.backends[node];
            match send_append(&mut connections, backend, node, &path, &body) {
                Attempt::Acknowledged(response) => {
                    let reply = response.json();
                    let ack = Ack {
                        session: session.into(),
                        seq: reply["seq"].as_u64().unwrap_or(0),
                        producer: producer.into(),
                        producer_seq,
                        node,
                        deduped: reply["deduped"].as_bool().unwrap_or(false),
                    };
                    let mut report = shared.report.lock().unwrap();
                    if report.acks.len() < ACKS_MAX {
                        report.acks.push(ack);
                    } else {
                        report.acks_truncated = true;
                    }
                    drop(report);
                    producer_seq += 1;
                    continue 'events;
                }
                Attempt::Answered(response) if response.status == 503 && retry_503 => {
                    let mut report = shared.report.lock().unwrap();
                    report.retried_503_count += 1;
                    Shared::record(&mut report.retried_503, (node, response.text()));
                    drop(report);
                    std::thread::sleep(retry_after(&response));
                    avoid = Some(node);
                }
                Attempt::Answered(response) => {
                    let mut report = shared.report.lock().unwrap();
                    report.failure_count += 1;
                    let failure = FailedRequest {
                        node,
                        status: response.status,
                        body: response.text(),
                        at: shared.elapsed(),
                        request: (session.into(), producer.into(), producer_seq),
                    };
                    Shared::record(&mut report.failures, failure);
                    drop(report);
                    // Same producer fields again: safe whatever the failed request did.
                    std::thread::sleep(retry_after(&response));
                    avoid = Some(node);
                }
                Attempt::ConnectionFailed(error) => {
                    let mut report = shared.report.lock().unwrap();
                    report.resend_count += 1;
                    let resend = Resend {
                        node,
                        error: error.to_string(),
                        at: shared.elapsed(),
                    };
                    Shared::record(&mut report.resends, resend);
                    avoid = Some(node);
                }
                Attempt::TimedOut(error) => {
                    let mut report = shared.report.lock().unwrap();
                    report.failure_count += 1;
                    let failure = FailedRequest {
                        node,
                        status: 0,
                        body: format!("no answer: {error}"),
                        at: shared.elapsed(),
                        request: (session.into(), producer.into(), producer_seq),
                    };
                    Shared::record(&mut report.failures, failure);
                    avoid = Some(node);
                }
            }
        }
    }
}

/// Why a tail connection ended.
enum TailEnd {
    /// Caught up with the final target, or the deadline passed.
    Done,
    /// Closed or failed; reconnect.
    Closed(u16, String),
}

fn tail_loop(shared: &Shared, session: String) -> TailReport {
    let mut report = TailReport {
        session: session.clone(),
        ..TailReport::default()
    };
    let mut avoid = None;
    loop {
        if tail_finished(shared, &session, report.cursor) {
            break;
        }
        let Some(node) = shared.pick(avoid) else {
            std::thread::sleep(RETRY_PAUSE);
            continue;
        };
        let addr = shared.backends[node].http_addr;
        let socket = match open_tail(addr, &session, report.cursor) {
            Ok(socket) => socket,
            Err(error) => {
                Shared::record(&mut report.connect_failures, (node, error));
                avoid = Some(node);
                std::thread::sleep(RETRY_PAUSE);
                continue;
            }
        };
        report.connections += 1;
        match read_tail(shared, socket, &mut report) {
            TailEnd::Done => break,
            TailEnd::Closed(code, reason) => {
                Shared::record(&mut report.closes, (node, code, reason));
                avoid = Some(node);
            }
        }
    }
    if let Some(target) = shared
        .tail_targets
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|targets| targets.get(&session).copied())
    {
        report.target = target;
    }
    report
}

/// True once `stop()` set a target this tail has reached, or the catch-up deadline passed.
fn tail_finished(shared: &Shared, session: &str, cursor: u64) -> bool {
    if shared
        .tail_deadline
        .lock()
        .unwrap()
        .is_some_and(|deadline| Instant::now() >= deadline)
    {
        return true;
    }
    shared
        .tail_targets
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|targets| targets.get(session).copied())
        .is_some_and(|target| cursor >= target)
}

fn open_tail(addr: SocketAddr, session: &str, cursor: u64) -> Result<WebSocket<TcpStream>, String> {
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let url = format!("ws://{addr}/v1/sessions/{session}/tail?cursor={cursor}");
    match tungstenite::client(url.as_str(), stream) {
        Ok((socket, response)) if response.status().as_u16() == 101 => Ok(socket),
        Ok((_, response)) => Err(format!("status {}", response.status())),
        Err(error) => Err(error.to_string()),
    }
}

fn read_tail(
    shared: &Shared,
    mut socket: WebSocket<TcpStream>,
    report: &mut TailReport,
) -> TailEnd {
    if socket
        .get_ref()
        .set_read_timeout(Some(TAIL_READ_TIMEOUT))
        .is_err()
    {
        return TailEnd::Closed(0, "set_read_timeout".into());
    }
    loop {
        if tail_finished(shared, &report.session, report.cursor) {
            let _ = socket.close(None);
            let _ = socket.flush();
            return TailEnd::Done;
        }
        match socket.read() {
            Ok(Message::Text(text)) => {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
                    return TailEnd::Closed(0, format!("frame is not JSON: {text}"));
                };
                let seq = event["seq"].as_u64().unwrap_or(0);
                if seq != report.cursor + 1 {
                    if report.violations.len() < VIOLATIONS_MAX {
                        report
                            .violations
                            .push(format!("got {seq} after {}", report.cursor));
                    }
                    if seq <= report.cursor {
                        continue;
                    }
                    // Keep the index = seq - 1 layout of `events` after a gap.
                    while (report.events.len() as u64) < seq - 1 && report.events.len() < ACKS_MAX {
                        report.events.push((String::new(), 0));
                    }
                }
                let producer = event["producer_id"].as_str().unwrap_or("").to_string();
                let producer_seq = event["producer_seq"].as_u64().unwrap_or(0);
                if report.events.len() < ACKS_MAX {
                    report.events.push((producer, producer_seq));
                }
                report.cursor = seq;
            }
            Ok(Message::Close(frame)) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return TailEnd::Closed(code, reason);
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(error))
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(error) => return TailEnd::Closed(0, error.to_string()),
        }
    }
}
