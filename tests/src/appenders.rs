//! Appenders that keep writing while the test kills and restarts nodes: each thread appends to
//! one session with its own producer, spreads its requests over the nodes that are up (round
//! robin), re-sends a request that got `503` or lost its connection to the next node with the
//! same `producer_seq` (dedupe makes that safe), and records every `201` with when it was sent
//! and answered. [`Appenders::stop`] lets every thread finish its current event, so that the
//! sessions then hold exactly the acknowledged events; [`verify_replicas`] checks that.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::event_body;
use crate::http::HttpClient;
use crate::server::Server;

/// Read timeout of one append; a longer wait means the request is lost.
const APPEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before re-sending after a `503` or a failed connection.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// How long a thread keeps re-sending its current event after [`Appenders::stop`].
const STOP_FINISH_TIMEOUT: Duration = Duration::from_secs(60);
/// Unexpected answers kept for the failure message (the count stays exact).
const UNEXPECTED_MAX: usize = 100;

/// One `201`.
#[derive(Clone, Debug)]
pub struct Ack {
    /// Session.
    pub session: String,
    /// `producer_id`.
    pub producer: String,
    /// `producer_seq`.
    pub producer_seq: u64,
    /// The acknowledged seq.
    pub seq: u64,
    /// When the answered attempt was sent (since the appenders started).
    pub sent_at: Duration,
    /// When the `201` arrived (since the appenders started).
    pub acked_at: Duration,
}

/// What the appenders saw.
#[derive(Clone, Debug, Default)]
pub struct AppendReport {
    /// Every `201`, in arrival order.
    pub acks: Vec<Ack>,
    /// Count of answers per HTTP status (`201` included).
    pub statuses: BTreeMap<u16, usize>,
    /// Requests whose connection failed or timed out before an answer (then re-sent).
    pub connection_failures: usize,
    /// Answers other than `201` and `503`: (status, body), capped at [`UNEXPECTED_MAX`].
    pub unexpected: Vec<(u16, String)>,
    /// Events a thread gave up on after [`Appenders::stop`] (none when the cluster recovered).
    pub abandoned: usize,
}

impl AppendReport {
    /// Prints the totals under `label` and asserts that every answer was a `201` or a `503` and
    /// that every event was acknowledged in the end.
    pub fn assert_only_201_or_503(&self, label: &str) {
        println!(
            "{label}{} acknowledged appends; answers {:?}; {} connection failures re-sent",
            self.acks.len(),
            self.statuses,
            self.connection_failures
        );
        assert!(
            self.unexpected.is_empty(),
            "answers other than 201/503: {:?}",
            self.unexpected
        );
        assert_eq!(
            self.abandoned, 0,
            "events never acknowledged after the load stopped"
        );
    }
}

struct Shared {
    targets: Vec<SocketAddr>,
    down: Mutex<Vec<bool>>,
    stop: AtomicBool,
    started: Instant,
    report: Mutex<AppendReport>,
    unexpected_count: AtomicUsize,
}

impl Shared {
    /// The next node that is up, after `previous` in round robin.
    fn next_target(&self, previous: usize) -> Option<usize> {
        let down = self.down.lock().unwrap();
        (1..=self.targets.len())
            .map(|step| (previous + step) % self.targets.len())
            .find(|node| !down[*node])
    }
}

/// Running appenders; [`Appenders::stop`] ends them.
pub struct Appenders {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    sessions: Vec<String>,
}

impl Appenders {
    /// Starts one thread per entry of `sessions` (a session may repeat), appending through
    /// `targets`; thread `i` uses producer `w<i>` and starts at target `i % targets`.
    pub fn start(targets: Vec<SocketAddr>, sessions: &[String]) -> Appenders {
        let shared = Arc::new(Shared {
            down: Mutex::new(vec![false; targets.len()]),
            targets,
            stop: AtomicBool::new(false),
            started: Instant::now(),
            report: Mutex::default(),
            unexpected_count: AtomicUsize::new(0),
        });
        let threads = sessions
            .iter()
            .enumerate()
            .map(|(index, session)| {
                let shared = shared.clone();
                let session = session.clone();
                std::thread::spawn(move || append_loop(&shared, index, &session))
            })
            .collect();
        let mut distinct = sessions.to_vec();
        distinct.sort();
        distinct.dedup();
        Appenders {
            shared,
            threads,
            sessions: distinct,
        }
    }

    /// Time since the appenders started (the time base of [`Ack`]).
    pub fn elapsed(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// Marks target `node` down (it is skipped) or up again.
    pub fn set_down(&self, node: usize, down: bool) {
        self.shared.down.lock().unwrap()[node] = down;
    }

    /// Acknowledgements so far.
    pub fn acks(&self) -> Vec<Ack> {
        self.shared.report.lock().unwrap().acks.clone()
    }

    /// Number of unexpected answers so far (neither `201` nor `503`).
    pub fn unexpected_count(&self) -> usize {
        self.shared.unexpected_count.load(Ordering::Relaxed)
    }

    /// The distinct sessions written.
    pub fn sessions(&self) -> &[String] {
        &self.sessions
    }

    /// Waits until every session has an acknowledgement for a request sent at or after `since`
    /// and returns, per session, how long after `since` that first `201` arrived; `None` for a
    /// session without one within `timeout`.
    pub fn wait_resumed(
        &self,
        since: Duration,
        timeout: Duration,
    ) -> BTreeMap<String, Option<Duration>> {
        let deadline = Instant::now() + timeout;
        loop {
            let resumed = self.resumed_since(since);
            if resumed.values().all(Option::is_some) || Instant::now() >= deadline {
                return resumed;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn resumed_since(&self, since: Duration) -> BTreeMap<String, Option<Duration>> {
        let report = self.shared.report.lock().unwrap();
        let mut resumed: BTreeMap<String, Option<Duration>> =
            self.sessions.iter().map(|s| (s.clone(), None)).collect();
        for ack in report.acks.iter().filter(|ack| ack.sent_at >= since) {
            let after = ack.acked_at - since;
            let slot = resumed.entry(ack.session.clone()).or_default();
            if slot.is_none_or(|best| after < best) {
                *slot = Some(after);
            }
        }
        resumed
    }

    /// Stops the threads once each has its current event acknowledged and returns the report.
    pub fn stop(mut self) -> AppendReport {
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            thread.join().expect("appender thread panicked");
        }
        std::mem::take(&mut *self.shared.report.lock().unwrap())
    }
}

impl Drop for Appenders {
    fn drop(&mut self) {
        // A test that panicked before `stop()` must not leave threads hammering dead nodes.
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.down.lock().unwrap().fill(true);
    }
}

fn append_loop(shared: &Shared, index: usize, session: &str) {
    let path = format!("/v1/sessions/{session}/append");
    let producer = format!("w{index}");
    let mut connections: Vec<Option<HttpClient>> = shared.targets.iter().map(|_| None).collect();
    let mut node = index % shared.targets.len();
    let mut producer_seq = 1u64;
    'events: while !shared.stop.load(Ordering::Relaxed) {
        let body = event_body(&producer, producer_seq);
        let mut give_up_at: Option<Instant> = None;
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                let deadline = *give_up_at.get_or_insert(Instant::now() + STOP_FINISH_TIMEOUT);
                if Instant::now() >= deadline {
                    shared.report.lock().unwrap().abandoned += 1;
                    break 'events;
                }
            }
            let Some(target) = shared.next_target(node) else {
                std::thread::sleep(RETRY_PAUSE);
                continue;
            };
            node = target;
            let sent_at = shared.started.elapsed();
            let response = connection(&mut connections, &shared.targets, node)
                .and_then(|client| client.post_json(&path, &body));
            let response = match response {
                Ok(response) => response,
                Err(_) => {
                    connections[node] = None;
                    shared.report.lock().unwrap().connection_failures += 1;
                    std::thread::sleep(RETRY_PAUSE);
                    continue;
                }
            };
            if response
                .header("connection")
                .is_some_and(|value| value.eq_ignore_ascii_case("close"))
            {
                connections[node] = None;
            }
            let mut report = shared.report.lock().unwrap();
            *report.statuses.entry(response.status).or_default() += 1;
            match response.status {
                201 => {
                    let seq = response.json()["seq"].as_u64().unwrap_or(0);
                    report.acks.push(Ack {
                        session: session.to_string(),
                        producer: producer.clone(),
                        producer_seq,
                        seq,
                        sent_at,
                        acked_at: shared.started.elapsed(),
                    });
                    producer_seq += 1;
                    continue 'events;
                }
                503 => {
                    drop(report);
                    std::thread::sleep(RETRY_PAUSE);
                }
                status => {
                    shared.unexpected_count.fetch_add(1, Ordering::Relaxed);
                    if report.unexpected.len() < UNEXPECTED_MAX {
                        report.unexpected.push((status, response.text()));
                    }
                    // A conflict would repeat forever: this producer stops.
                    break 'events;
                }
            }
        }
    }
}

fn connection<'a>(
    connections: &'a mut [Option<HttpClient>],
    targets: &[SocketAddr],
    node: usize,
) -> std::io::Result<&'a mut HttpClient> {
    if connections[node].is_none() {
        let mut client = HttpClient::connect(targets[node])?;
        client.stream().set_read_timeout(Some(APPEND_TIMEOUT))?;
        connections[node] = Some(client);
    }
    connections[node]
        .as_mut()
        .ok_or_else(|| std::io::Error::other("no connection"))
}

/// Checks, reading every session through every node in `readers`: seqs run `1..=n` without gap
/// or duplicate, each `(producer, producer_seq)` appears once, every acknowledged event is at
/// its acknowledged seq, the session holds nothing that was not acknowledged, and all nodes
/// return the same events. Panics with the first difference.
pub fn verify_replicas(readers: &[(&str, &Server)], sessions: &[String], acks: &[Ack]) {
    let mut expected: BTreeMap<&str, BTreeMap<u64, (&str, u64)>> = BTreeMap::new();
    for ack in acks {
        let previous = expected
            .entry(ack.session.as_str())
            .or_default()
            .insert(ack.seq, (ack.producer.as_str(), ack.producer_seq));
        if let Some(previous) = previous {
            assert_eq!(
                previous,
                (ack.producer.as_str(), ack.producer_seq),
                "{} seq {} acknowledged for two events",
                ack.session,
                ack.seq
            );
        }
    }
    for session in sessions {
        let acked = expected.remove(session.as_str()).unwrap_or_default();
        let mut reference: Option<(&str, Vec<serde_json::Value>)> = None;
        for (name, node) in readers {
            let events = Cluster::read_all(node, session);
            let mut seen = HashSet::new();
            for (position, event) in events.iter().enumerate() {
                let seq = event["seq"].as_u64().unwrap();
                assert_eq!(
                    seq,
                    position as u64 + 1,
                    "{name} {session}: gap or disorder"
                );
                let producer = event["producer_id"].as_str().unwrap();
                let producer_seq = event["producer_seq"].as_u64().unwrap();
                assert!(
                    seen.insert((producer.to_string(), producer_seq)),
                    "{name} {session}: duplicate {producer}/{producer_seq} at seq {seq}"
                );
                match acked.get(&seq) {
                    Some(ack) => assert_eq!(
                        *ack,
                        (producer, producer_seq),
                        "{name} {session} seq {seq} differs from its acknowledgement"
                    ),
                    None => panic!(
                        "{name} {session} seq {seq} ({producer}/{producer_seq}) was never acknowledged"
                    ),
                }
            }
            if let Some(last) = acked.keys().next_back() {
                assert!(
                    *last <= events.len() as u64,
                    "{name} {session} lost acknowledged seq {last} (holds {})",
                    events.len()
                );
            }
            match &reference {
                None => reference = Some((name, events)),
                Some((first, first_events)) => assert!(
                    *first_events == events,
                    "{name} and {first} return different events for {session}"
                ),
            }
        }
    }
}

/// `starcite_raft_commands_total{command=<command>,outcome="ok"}` of `node` (commands this
/// node proposed as leader and saw committed); 0 when unreachable.
pub fn committed_commands(node: &Server, command: &str) -> u64 {
    let prefix = format!("starcite_raft_commands_total{{command=\"{command}\",outcome=\"ok\"}}");
    metric(node, &prefix).unwrap_or(0)
}

/// The value of the first `/metrics` line of `node` that starts with `series` followed by a
/// space; `None` when unreachable or absent.
pub fn metric(node: &Server, series: &str) -> Option<u64> {
    let mut client = HttpClient::connect(node.http_addr).ok()?;
    let text = client.get("/metrics").ok()?.text();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
}
