//! The closed-loop load: one glommio executor, one task per connection, one request in flight
//! on each, a progress line per second on stderr.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

use super::archive::{self, ArchiveOutcome};
use super::client::Connection;

/// Pause before reconnecting after a transport error, so a down server is not spun on.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);
/// How long in-flight requests may still finish after the window before the run ends anyway.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Highest latency the histogram tracks (60 s); slower samples are clamped.
const LATENCY_US_MAX: u64 = 60_000_000;

/// What to run.
pub struct Plan {
    pub url: String,
    pub connections: u32,
    pub sessions: u32,
    pub payload_bytes: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub token: Option<String>,
    /// Report the archive's progress (`--archive`), waiting at most this long for it to catch
    /// up after the load.
    pub archive_catch_up_timeout: Option<Duration>,
}

/// What happened inside the measured window.
pub struct Outcome {
    pub window: Duration,
    pub successes: u64,
    pub errors_by_status: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    /// Latency of the successful (201) appends, microseconds.
    pub latency_us: Histogram<u64>,
    /// One example of a failure, for diagnosis.
    pub first_error: Option<String>,
    pub run_id: String,
    /// With `--archive`: what the archive did during and after the load.
    pub archive: Option<ArchiveOutcome>,
}

impl Outcome {
    pub fn errors(&self) -> u64 {
        self.errors_by_status.values().sum::<u64>() + self.transport_errors
    }
}

/// The server as parsed from `--url`.
pub struct Target {
    pub address: SocketAddr,
    pub host_header: String,
    pub base_path: String,
}

fn parse_target(url: &str) -> anyhow::Result<Target> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("--url must start with http:// (got {url:?})");
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    if authority.is_empty() {
        bail!("--url has no host: {url:?}");
    }
    let with_port = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:80")
    } else {
        authority.to_string()
    };
    let address = with_port
        .to_socket_addrs()
        .with_context(|| format!("resolve {authority}"))?
        .next()
        .with_context(|| format!("resolve {authority}: no address"))?;
    Ok(Target {
        address,
        host_header: authority.to_string(),
        base_path: path.trim_end_matches('/').to_string(),
    })
}

/// Counters shared by the connection tasks (all on one thread).
struct Shared {
    window_start: Instant,
    window_end: Instant,
    outcome: Outcome,
    /// Completions of any phase, for the progress line.
    completed_total: u64,
    failed_total: u64,
    active_connections: u32,
}

impl Shared {
    fn in_window(&self, at: Instant) -> bool {
        at >= self.window_start && at <= self.window_end
    }

    fn record_failure(&mut self, at: Instant, status: Option<u16>, description: String) {
        self.failed_total += 1;
        if !self.in_window(at) {
            return;
        }
        match status {
            Some(status) => *self.outcome.errors_by_status.entry(status).or_default() += 1,
            None => self.outcome.transport_errors += 1,
        }
        self.outcome.first_error.get_or_insert(description);
    }
}

/// Builds the requests of one connection.
struct RequestWriter {
    head: String,
    body_prefix: String,
}

impl RequestWriter {
    fn new(
        target: &Target,
        token: Option<&str>,
        session_id: &str,
        producer_id: &str,
        payload_bytes: usize,
    ) -> Self {
        let authorization = token
            .map(|token| format!("authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "POST {}/v1/sessions/{session_id}/append HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n{authorization}",
            target.base_path, target.host_header
        );
        let data = "x".repeat(payload_bytes);
        let body_prefix = format!(
            r#"{{"type":"bench","payload":{{"data":"{data}"}},"actor":"bench","producer_id":"{producer_id}","producer_seq":"#
        );
        RequestWriter { head, body_prefix }
    }

    fn append(&self, producer_seq: u64) -> Vec<u8> {
        let body = format!("{}{producer_seq}}}", self.body_prefix);
        format!("{}content-length: {}\r\n\r\n{body}", self.head, body.len()).into_bytes()
    }
}

fn run_id() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!("{seconds:x}{:04x}", rand::random::<u16>())
}

pub fn run(plan: &Plan) -> anyhow::Result<Outcome> {
    let target = parse_target(&plan.url)?;
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .name("starcite-bench")
        .make()
        .map_err(|error| anyhow::anyhow!("start bench executor: {error}"))?;
    executor.run(drive(plan, target))
}

async fn drive(plan: &Plan, target: Target) -> anyhow::Result<Outcome> {
    let run_id = run_id();
    let session_ids: Vec<String> = (1..=plan.sessions)
        .map(|index| format!("bench-{run_id}-{index}"))
        .collect();
    create_sessions(&target, plan.token.as_deref(), &session_ids).await?;
    let archive_baseline = match plan.archive_catch_up_timeout {
        Some(_) => Some(archive::sample(&target).await?),
        None => None,
    };

    let started = Instant::now();
    let window_start = started + plan.warmup;
    let latency_us = Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
        .map_err(|error| anyhow::anyhow!("create histogram: {error}"))?;
    let shared = Rc::new(RefCell::new(Shared {
        window_start,
        window_end: window_start + plan.duration,
        outcome: Outcome {
            window: plan.duration,
            successes: 0,
            errors_by_status: BTreeMap::new(),
            transport_errors: 0,
            latency_us,
            first_error: None,
            run_id: run_id.clone(),
            archive: None,
        },
        completed_total: 0,
        failed_total: 0,
        active_connections: plan.connections,
    }));
    let target = Rc::new(target);
    let mut tasks = Vec::new();
    for index in 0..plan.connections {
        let session_id = &session_ids[(index % plan.sessions) as usize];
        let writer = RequestWriter::new(
            &target,
            plan.token.as_deref(),
            session_id,
            &format!("bench-{run_id}-c{}", index + 1),
            plan.payload_bytes,
        );
        tasks.push(glommio::spawn_local(connection_loop(
            Rc::clone(&target),
            writer,
            Rc::clone(&shared),
        )));
    }
    let progress = glommio::spawn_local(progress_loop(Rc::clone(&shared), started));
    let window_end = shared.borrow().window_end;
    let window_samples = archive_baseline.is_some().then(|| {
        let target = Rc::clone(&target);
        glommio::spawn_local(async move {
            glommio::timer::sleep(window_start.saturating_duration_since(Instant::now())).await;
            let at_start = archive::sample(&target).await?;
            glommio::timer::sleep(window_end.saturating_duration_since(Instant::now())).await;
            let at_end = archive::sample(&target).await?;
            anyhow::Ok((at_start, at_end))
        })
    });

    glommio::timer::sleep(window_end.saturating_duration_since(Instant::now())).await;
    let grace_end = Instant::now() + DRAIN_GRACE;
    while shared.borrow().active_connections > 0 && Instant::now() < grace_end {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    drop(progress);
    drop(tasks);
    let archive = match (
        archive_baseline,
        window_samples,
        plan.archive_catch_up_timeout,
    ) {
        (Some(baseline), Some(window_samples), Some(timeout)) => {
            let (at_start, at_end) = window_samples.await?;
            let appended_total = shared.borrow().completed_total;
            let at_load_end = archive::sample(&target).await?;
            let written_total = at_load_end
                .events_written
                .saturating_sub(baseline.events_written);
            let (_, catch_up) = archive::wait_caught_up(&target, timeout).await?;
            Some(ArchiveOutcome {
                adapter: at_load_end.adapter,
                written_in_window: at_end
                    .events_written
                    .saturating_sub(at_start.events_written),
                backlog_events: appended_total.saturating_sub(written_total),
                catch_up,
                catch_up_timeout: timeout,
            })
        }
        _ => None,
    };
    shared.borrow_mut().outcome.archive = archive;
    let outcome = std::mem::replace(
        &mut shared.borrow_mut().outcome,
        Outcome {
            window: plan.duration,
            successes: 0,
            errors_by_status: BTreeMap::new(),
            transport_errors: 0,
            latency_us: Histogram::new(3).map_err(|error| anyhow::anyhow!("{error}"))?,
            first_error: None,
            run_id,
            archive: None,
        },
    );
    Ok(outcome)
}

/// Creates every session up front (201, or 409 when it already exists).
async fn create_sessions(
    target: &Target,
    token: Option<&str>,
    session_ids: &[String],
) -> anyhow::Result<()> {
    let mut connection = Connection::connect(target.address)
        .await
        .with_context(|| format!("connect to {}", target.address))?;
    let authorization = token
        .map(|token| format!("authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    for session_id in session_ids {
        let body = format!(
            r#"{{"id":"{session_id}","creator_principal":{{"tenant_id":"bench","id":"bench","type":"user"}}}}"#
        );
        let request = format!(
            "POST {}/v1/sessions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n{authorization}content-length: {}\r\n\r\n{body}",
            target.base_path,
            target.host_header,
            body.len()
        );
        let response = connection
            .round_trip(request.as_bytes())
            .await
            .with_context(|| format!("create session {session_id}"))?;
        if response.status != 201 && response.status != 409 {
            bail!(
                "create session {session_id}: HTTP {} {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            );
        }
        if response.close {
            connection = Connection::connect(target.address).await?;
        }
    }
    Ok(())
}

async fn connection_loop(target: Rc<Target>, writer: RequestWriter, shared: Rc<RefCell<Shared>>) {
    let window_end = shared.borrow().window_end;
    // Like the peer scripts: seq = acknowledged appends + 1, so a failed append is retried with
    // the same seq (a retry of a committed append is deduplicated, not a gap).
    let mut acknowledged: u64 = 0;
    let mut connection: Option<Connection> = None;
    while Instant::now() < window_end {
        let mut open = match connection.take() {
            Some(open) => open,
            None => match Connection::connect(target.address).await {
                Ok(open) => open,
                Err(error) => {
                    let description = format!("connect: {error}");
                    shared
                        .borrow_mut()
                        .record_failure(Instant::now(), None, description);
                    glommio::timer::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            },
        };
        let request = writer.append(acknowledged + 1);
        let sent = Instant::now();
        let result = open.round_trip(&request).await;
        let completed = Instant::now();
        let transport_failed = {
            let mut state = shared.borrow_mut();
            match result {
                Ok(response) if response.status == 201 => {
                    acknowledged += 1;
                    state.completed_total += 1;
                    if state.in_window(completed) {
                        state.outcome.successes += 1;
                        let latency_us = (completed - sent).as_micros() as u64;
                        state
                            .outcome
                            .latency_us
                            .saturating_record(latency_us.clamp(1, LATENCY_US_MAX));
                    }
                    if !response.close {
                        connection = Some(open);
                    }
                    false
                }
                Ok(response) => {
                    let description = format!(
                        "HTTP {}: {}",
                        response.status,
                        String::from_utf8_lossy(&response.body)
                    );
                    state.record_failure(completed, Some(response.status), description);
                    if !response.close {
                        connection = Some(open);
                    }
                    false
                }
                Err(error) => {
                    state.record_failure(completed, None, format!("request: {error}"));
                    true
                }
            }
        };
        if transport_failed {
            glommio::timer::sleep(RECONNECT_PAUSE).await;
        }
    }
    shared.borrow_mut().active_connections -= 1;
}

async fn progress_loop(shared: Rc<RefCell<Shared>>, started: Instant) {
    let mut previous_completed = 0;
    let mut tick = 1_u64;
    loop {
        let due = started + Duration::from_secs(tick);
        glommio::timer::sleep(due.saturating_duration_since(Instant::now())).await;
        let state = shared.borrow();
        if Instant::now() > state.window_end {
            return;
        }
        let phase = if Instant::now() < state.window_start {
            " (warm-up)"
        } else {
            ""
        };
        eprintln!(
            "[{:>5.1}s] {:>8} req/s, {} errors{phase}",
            started.elapsed().as_secs_f64(),
            state.completed_total - previous_completed,
            state.failed_total
        );
        previous_completed = state.completed_total;
        tick += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let target = parse_target("http://127.0.0.1:4000").expect("valid");
        assert_eq!(target.address, "127.0.0.1:4000".parse().expect("address"));
        assert_eq!(target.base_path, "");
        let target = parse_target("http://127.0.0.1/prefix/").expect("valid");
        assert_eq!(target.address.port(), 80);
        assert_eq!(target.base_path, "/prefix");
        let target = parse_target("http://[::1]:9").expect("valid");
        assert_eq!(target.address, "[::1]:9".parse().expect("address"));
        assert!(parse_target("https://x").is_err());
    }

    #[test]
    fn append_requests_are_well_formed() {
        let target = parse_target("http://127.0.0.1:4000").expect("valid");
        let writer = RequestWriter::new(&target, Some("t"), "s1", "p1", 4);
        let request = writer.append(7);
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Request::new(&mut headers);
        let head_bytes = match parsed.parse(&request) {
            Ok(httparse::Status::Complete(length)) => length,
            other => panic!("incomplete request: {other:?}"),
        };
        assert_eq!(parsed.path, Some("/v1/sessions/s1/append"));
        let body: serde_json::Value =
            serde_json::from_slice(&request[head_bytes..]).expect("json body");
        assert_eq!(
            body,
            serde_json::json!({"type":"bench","payload":{"data":"xxxx"},"actor":"bench","producer_id":"p1","producer_seq":7})
        );
    }
}
