//! The archive on a cluster of three write nodes and one router node, shared by the per-adapter
//! test files: 10,000 events in 100 sessions are archived by the groups' leaders and evicted on
//! every replica, and every node replays every session from cursor 0, also after all nodes
//! restart; and an outage of the archive's storage service under load, where appends run into
//! the memory budget (`429`), nothing acknowledged is lost, and archiving resumes by itself.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use starcite_tests::cluster::Cluster;
use starcite_tests::{creator, wait_for, HttpClient, Server, ServerOptions};

use super::{metric, CATCH_UP_TIMEOUT};

/// Sessions of the catch-up scenario.
pub const CLUSTER_SESSIONS: usize = 100;
/// Events per session of the catch-up scenario (10,000 in all).
pub const CLUSTER_EVENTS_PER_SESSION: u64 = 100;
/// The write nodes are `nodes[0..3]`; `nodes[3]` is the router node.
const WRITE_NODE_COUNT: usize = 3;
/// How long one request may keep being retried through `503`s (elections on a busy machine).
const RETRY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a tail may take to replay one session.
const TAIL_TIMEOUT: Duration = Duration::from_secs(60);

/// One cluster at a time per test binary: four nodes (plus the storage service) already load
/// the two CPUs of the CI machine.
pub fn cluster_slot() -> MutexGuard<'static, ()> {
    static SLOT: Mutex<()> = Mutex::new(());
    SLOT.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Start the cluster with `env` on every node (the adapter's settings), a short flush interval
/// and a short backoff cap so that the archiver reacts within a test's patience.
pub fn start_cluster(env: &[(&str, String)]) -> Cluster {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(key, value)| (key.to_string(), value.clone()))
        .collect();
    Cluster::start_with(move |options: ServerOptions| {
        let options = options
            .with("STARCITE_ARCHIVE_FLUSH_INTERVAL_MS", "200")
            .with("STARCITE_ARCHIVE_RETRY_MAX_MS", "1000");
        env.iter()
            .fold(options, |options, (key, value)| options.with(key, value))
    })
}

/// Send `body` to `path` on `node`, retrying transport errors and `503`s with the same body
/// (appends carry producer fields, so a retry is deduplicated, never doubled).
fn post_retrying(node: &Server, path: &str, body: &Value) -> starcite_tests::Response {
    let deadline = Instant::now() + RETRY_TIMEOUT;
    loop {
        let response =
            HttpClient::connect(node.http_addr).and_then(|mut client| client.post_json(path, body));
        if let Ok(response) = response {
            if response.status != 503 {
                return response;
            }
        }
        assert!(Instant::now() < deadline, "POST {path} kept failing");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create_session(node: &Server, id: &str) {
    let body = json!({"id": id, "creator_principal": creator()});
    let response = post_retrying(node, "/v1/sessions", &body);
    assert!(
        matches!(response.status, 201 | 409),
        "create {id}: {}",
        response.text()
    );
}

/// Σ `starcite_event_store_unarchived_bytes` over the write nodes.
fn unarchived_bytes(cluster: &Cluster) -> f64 {
    cluster.nodes[..WRITE_NODE_COUNT]
        .iter()
        .filter_map(|node| metric(node, "starcite_event_store_unarchived_bytes"))
        .sum()
}

/// Load 100 sessions of 100 events, spreading the requests over every node (the router node
/// included); returns the session ids. Each session gets one batch append of 100 events.
pub fn load_cluster(cluster: &Cluster, prefix: &str) -> Vec<String> {
    let filler = "x".repeat(64);
    let ids: Vec<String> = (0..CLUSTER_SESSIONS)
        .map(|index| format!("{prefix}-{index}"))
        .collect();
    let mut unarchived_bytes_max = 0.0_f64;
    for (index, id) in ids.iter().enumerate() {
        let node = &cluster.nodes[index % cluster.nodes.len()];
        create_session(node, id);
        let events: Vec<Value> = (1..=CLUSTER_EVENTS_PER_SESSION)
            .map(|producer_seq| {
                json!({"type":"t","payload":{"fill":filler},"actor":"a",
                       "producer_id":"p","producer_seq":producer_seq})
            })
            .collect();
        let path = format!("/v1/sessions/{id}/append");
        let response = post_retrying(node, &path, &json!({ "events": events }));
        assert_eq!(response.status, 201, "append to {id}: {}", response.text());
        assert_eq!(
            response.json()["last_seq"].as_u64(),
            Some(CLUSTER_EVENTS_PER_SESSION)
        );
        if unarchived_bytes_max == 0.0 {
            unarchived_bytes_max = unarchived_bytes(cluster);
        }
    }
    assert!(
        unarchived_bytes_max > 0.0,
        "no write node ever held an unarchived event"
    );
    ids
}

/// Every session shows `archived_seq == last_seq == count` (asked through the router), and
/// every write node reports an empty hot store: no unarchived bytes, no lag, no pending
/// session (archive.md §2).
pub fn wait_cluster_archived(cluster: &Cluster, ids: &[String], counts: &BTreeMap<String, u64>) {
    let router = cluster.router();
    let mut client = router.client();
    for id in ids {
        let expected = counts.get(id).copied();
        wait_for(&format!("{id} archived"), CATCH_UP_TIMEOUT, || {
            let response = client.get(&format!("/v1/sessions/{id}")).ok()?;
            if response.status != 200 {
                client = router.client();
                return None;
            }
            let body = response.json();
            let last_seq = body["last_seq"].as_u64()?;
            let archived_seq = body["archived_seq"].as_u64()?;
            assert!(archived_seq <= last_seq, "{body}");
            if let Some(expected) = expected {
                assert_eq!(last_seq, expected, "last_seq of {id}");
            }
            (archived_seq == last_seq).then_some(())
        });
    }
    for (index, node) in cluster.nodes[..WRITE_NODE_COUNT].iter().enumerate() {
        for name in [
            "starcite_event_store_unarchived_bytes",
            "starcite_archive_lag_events",
            "starcite_archive_pending_sessions",
        ] {
            wait_for(
                &format!("{name} = 0 on write node {index}"),
                CATCH_UP_TIMEOUT,
                || (metric(node, name)? == 0.0).then_some(()),
            );
        }
    }
}

/// Read `id` from `node` through `/events` from cursor 0 in pages; returns the events, which
/// must be exactly seqs 1..=`count`.
fn read_pages(node: &Server, id: &str, count: u64) -> Vec<Value> {
    let mut client = node.client();
    let mut events = Vec::new();
    loop {
        let cursor = events.len();
        let path = format!("/v1/sessions/{id}/events?cursor={cursor}&limit=1000");
        let response = client.get(&path).unwrap();
        assert_eq!(response.status, 200, "read {id}: {}", response.text());
        let page = response.json()["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if page.is_empty() {
            break;
        }
        events.extend(page);
    }
    let seqs: Vec<u64> = events
        .iter()
        .map(|event| event["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=count).collect::<Vec<u64>>(), "pages of {id}");
    events
}

/// Tail `id` on `node` from cursor 0; it must replay exactly seqs 1..=`count`.
fn read_tail(node: &Server, id: &str, count: u64) {
    let mut tail = starcite_tests::TailClient::connect(node.http_addr, id, 0);
    let events = tail.read_until(count, TAIL_TIMEOUT);
    let seqs: Vec<u64> = events
        .iter()
        .map(|event| event["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=count).collect::<Vec<u64>>(), "tail of {id}");
    tail.close();
}

/// Every node (write and router) replays every session through pages and a tail from cursor 0.
pub fn assert_cluster_replays(cluster: &Cluster, counts: &BTreeMap<String, u64>) {
    for node in &cluster.nodes {
        for (id, count) in counts {
            read_pages(node, id, *count);
            read_tail(node, id, *count);
        }
    }
}

/// Kill every node at once and start them again on the same data.
pub fn restart_cluster(cluster: &mut Cluster) {
    for node in cluster.nodes.iter_mut() {
        node.kill9();
    }
    for node in cluster.nodes.iter_mut() {
        node.restart();
    }
    cluster.wait_ready();
}

/// The whole catch-up scenario on a started cluster.
pub fn catch_up_and_replay(cluster: &mut Cluster, prefix: &str) {
    let started = Instant::now();
    let ids = load_cluster(cluster, prefix);
    let counts: BTreeMap<String, u64> = ids
        .iter()
        .map(|id| (id.clone(), CLUSTER_EVENTS_PER_SESSION))
        .collect();
    eprintln!("loaded in {:?}", started.elapsed());
    wait_cluster_archived(cluster, &ids, &counts);
    eprintln!("archived after {:?}", started.elapsed());
    assert_cluster_replays(cluster, &counts);
    eprintln!("replayed on every node after {:?}", started.elapsed());

    restart_cluster(cluster);
    eprintln!("restarted after {:?}", started.elapsed());
    wait_cluster_archived(cluster, &ids, &counts);
    assert_cluster_replays(cluster, &counts);
    eprintln!("replayed again after {:?}", started.elapsed());
}

/// What one appender saw.
#[derive(Debug, Default)]
pub struct AppenderReport {
    /// `producer_seq` of the last acknowledged (`201`) event; every earlier one was
    /// acknowledged too.
    pub acknowledged: u64,
    /// `201`s of events sent after the outage began, before the first `429` of the outage.
    pub accepted_before_first_refusal: u64,
    /// `429 event_store_backpressure` answers (each with `Retry-After`).
    pub refusals: u64,
    /// Of which during the outage.
    pub refusals_in_outage: u64,
    /// When the last `429` came.
    pub last_refusal_at: Option<Instant>,
    /// When the last `201` came.
    pub last_acknowledged_at: Option<Instant>,
    /// Other answers, by status, with one example body each.
    pub unexpected: BTreeMap<u16, String>,
}

/// A thread appending single events to one session until stopped, retrying refusals with the
/// same `producer_seq` after a short pause.
pub struct Appender {
    pub session: String,
    pub report: Arc<Mutex<AppenderReport>>,
    thread: Option<JoinHandle<()>>,
}

/// Pause after a `429` (shorter than `Retry-After`, so that the end of the backpressure is seen
/// quickly) or a `503`.
const APPENDER_RETRY_PAUSE: Duration = Duration::from_millis(200);

impl Appender {
    pub fn start(
        node: &Server,
        session: &str,
        outage: Arc<AtomicBool>,
        stop: Arc<AtomicBool>,
    ) -> Appender {
        let address = node.http_addr;
        let session = session.to_string();
        let report = Arc::new(Mutex::new(AppenderReport::default()));
        let thread = {
            let session = session.clone();
            let report = report.clone();
            std::thread::spawn(move || {
                append_until_stopped(address, &session, &report, &outage, &stop)
            })
        };
        Appender {
            session,
            report,
            thread: Some(thread),
        }
    }

    /// Wait for the thread to finish (after the stop flag was set).
    pub fn join(&mut self) -> AppenderReport {
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        std::mem::take(&mut *self.report.lock().unwrap())
    }
}

fn append_until_stopped(
    address: std::net::SocketAddr,
    session: &str,
    report: &Mutex<AppenderReport>,
    outage: &AtomicBool,
    stop: &AtomicBool,
) {
    let filler = "z".repeat(200);
    let path = format!("/v1/sessions/{session}/append");
    let mut client: Option<HttpClient> = None;
    while !stop.load(Ordering::SeqCst) {
        let producer_seq = report.lock().unwrap().acknowledged + 1;
        let body = json!({"type":"t","payload":{"fill":filler},"actor":"a",
                          "producer_id":"load","producer_seq":producer_seq});
        let connected = match client.take() {
            Some(open) => Ok(open),
            None => HttpClient::connect(address),
        };
        let response = connected.and_then(|mut open| {
            let response = open.post_json(&path, &body)?;
            client = Some(open);
            Ok(response)
        });
        let Ok(response) = response else {
            std::thread::sleep(APPENDER_RETRY_PAUSE);
            continue;
        };
        let in_outage = outage.load(Ordering::SeqCst);
        let mut report = report.lock().unwrap();
        match response.status {
            201 => {
                report.acknowledged = producer_seq;
                report.last_acknowledged_at = Some(Instant::now());
                if in_outage && report.refusals_in_outage == 0 {
                    report.accepted_before_first_refusal += 1;
                }
            }
            429 => {
                assert_eq!(response.json()["error"], "event_store_backpressure");
                assert_eq!(response.header("retry-after"), Some("1"));
                report.refusals += 1;
                report.refusals_in_outage += u64::from(in_outage);
                report.last_refusal_at = Some(Instant::now());
                drop(report);
                std::thread::sleep(APPENDER_RETRY_PAUSE);
            }
            status => {
                // 503 raft_timeout leaves the outcome open: the retry with the same
                // producer_seq is deduplicated or appends it once.
                report
                    .unexpected
                    .entry(status)
                    .or_insert_with(|| response.text());
                drop(report);
                std::thread::sleep(APPENDER_RETRY_PAUSE);
            }
        }
    }
}

/// How many sessions take load during the outage scenario (one appender thread each).
pub const OUTAGE_SESSIONS: usize = 6;
/// How long the storage service stays down.
pub const OUTAGE: Duration = Duration::from_secs(30);
/// How long the load runs with the storage service up before the outage.
const LOAD_BEFORE_OUTAGE: Duration = Duration::from_secs(3);
/// How long after the storage service is back the backpressure must have ended.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The outage scenario on a cluster started with a small `STARCITE_EVENT_STORE_MAX_SIZE`:
/// load through every node, `stop_service()` for [`OUTAGE`], `resume_service()`, then check
/// that appends were refused with `429` only after the budget filled, that the refusals ended
/// once the service was back, and that every acknowledged event is archived and readable on
/// every node.
pub fn outage_under_load(
    cluster: &Cluster,
    prefix: &str,
    stop_service: impl FnOnce(),
    resume_service: impl FnOnce(),
) {
    let outage = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut appenders: Vec<Appender> = (0..OUTAGE_SESSIONS)
        .map(|index| {
            let node = &cluster.nodes[index % cluster.nodes.len()];
            let id = format!("{prefix}-{index}");
            create_session(node, &id);
            Appender::start(node, &id, outage.clone(), stop.clone())
        })
        .collect();
    std::thread::sleep(LOAD_BEFORE_OUTAGE);

    stop_service();
    outage.store(true, Ordering::SeqCst);
    let outage_started = Instant::now();
    std::thread::sleep(OUTAGE);
    let refusals_during_outage: u64 = appenders
        .iter()
        .map(|appender| appender.report.lock().unwrap().refusals_in_outage)
        .sum();
    assert!(
        refusals_during_outage > 0,
        "no append was refused during a {OUTAGE:?} outage"
    );
    eprintln!(
        "outage of {:?}: {refusals_during_outage} appends refused with 429",
        outage_started.elapsed()
    );
    for node in &cluster.nodes[..WRITE_NODE_COUNT] {
        let text = node.log();
        assert!(
            !text.contains("panicked"),
            "a node panicked during the outage:\n{text}"
        );
    }

    resume_service();
    outage.store(false, Ordering::SeqCst);
    let resumed_at = Instant::now();
    // The backpressure ends by itself: every appender gets `201`s again and no more `429`s.
    wait_for(
        "appends accepted again on every session",
        RECOVERY_TIMEOUT,
        || {
            appenders
                .iter()
                .all(|appender| {
                    let report = appender.report.lock().unwrap();
                    report
                        .last_acknowledged_at
                        .is_some_and(|at| at > resumed_at + Duration::from_secs(2))
                        && report
                            .last_refusal_at
                            .is_none_or(|at| at < report.last_acknowledged_at.unwrap_or(at))
                })
                .then_some(())
        },
    );
    eprintln!(
        "backpressure ended {:?} after the service came back",
        resumed_at.elapsed()
    );
    stop.store(true, Ordering::SeqCst);
    let reports: Vec<(String, AppenderReport)> = appenders
        .iter_mut()
        .map(|appender| (appender.session.clone(), appender.join()))
        .collect();
    let accepted_into_budget: u64 = reports
        .iter()
        .map(|(_, report)| report.accepted_before_first_refusal)
        .sum();
    for (id, report) in &reports {
        eprintln!(
            "{id}: {} acknowledged, {} accepted in the outage before its first 429, {} refused \
             ({} in the outage), other answers {:?}",
            report.acknowledged,
            report.accepted_before_first_refusal,
            report.refusals,
            report.refusals_in_outage,
            report.unexpected.keys().collect::<Vec<_>>()
        );
    }
    assert!(
        accepted_into_budget > 0,
        "appends must continue during the outage until the budget is used"
    );

    let ids: Vec<String> = reports.iter().map(|(id, _)| id.clone()).collect();
    wait_cluster_archived(cluster, &ids, &BTreeMap::new());
    for (id, report) in &reports {
        for status in report.unexpected.keys() {
            assert_eq!(
                *status, 503,
                "{id}: unexpected answers {:?}",
                report.unexpected
            );
        }
        for node in &cluster.nodes {
            let events = read_pages_all(node, id);
            let producer_seqs: Vec<u64> = events
                .iter()
                .map(|event| event["producer_seq"].as_u64().unwrap())
                .collect();
            // Every acknowledged event is there once; an append whose answer was a timeout
            // just before the stop may have committed too.
            let stored = producer_seqs.len() as u64;
            assert!(
                stored == report.acknowledged || stored == report.acknowledged + 1,
                "{id}: {stored} events stored, {} acknowledged",
                report.acknowledged
            );
            assert_eq!(
                producer_seqs,
                (1..=stored).collect::<Vec<u64>>(),
                "{id}: producer seqs"
            );
        }
    }
}

/// Every event of `id` on `node`, checked contiguous from seq 1.
fn read_pages_all(node: &Server, id: &str) -> Vec<Value> {
    let mut client = node.client();
    let response = client.get(&format!("/v1/sessions/{id}")).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let last_seq = response.json()["last_seq"].as_u64().unwrap();
    read_pages(node, id, last_seq)
}
