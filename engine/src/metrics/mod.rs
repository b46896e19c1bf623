//! The process-wide Prometheus registry (contract metrics.md). Counters and histograms are
//! lock-free atomics so that any shard can record without coordination; `render` produces the
//! text exposition format 0.0.4.
//!
//! API (stable; other crates call these):
//! - [`global`] returns the registry.
//! - `Metrics::http_request`, `append`, `session_created`, `tail_*`, `raft_*`, `wal_*`,
//!   `storage_failure`, `set_node_ready`, `set_node_draining`, `render`.
//!
//! Every label value the contract lists is a fixed array slot, so those series exist with value
//! 0 from startup. Only HTTP series are keyed dynamically (by route template, method and status),
//! and their label sets are bounded because routes are templates and methods are normalised.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use starcite_raft::{NodeId, Role};

use crate::api::NodeMode;

use self::histogram::Histogram;
use self::raft_members::RaftMembers;

mod histogram;
mod process;
mod raft_members;
mod render;

/// `kind` label of `starcite_append_duration_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendKind {
    /// One event.
    Single,
    /// `{"events":[...]}`.
    Batch,
}

/// `transport` label of tail metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TailTransport {
    /// WebSocket tail.
    WebSocket,
    /// Server-sent events tail.
    Sse,
}

/// `phase` label of `starcite_tail_events_sent_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TailPhase {
    /// Replay from the read path.
    Replay,
    /// Live delivery after a notification.
    Live,
}

const APPEND_KINDS: [&str; 2] = ["single", "batch"];
const APPEND_OUTCOMES: [&str; 13] = [
    "appended",
    "deduped",
    "expected_seq_conflict",
    "producer_seq_conflict",
    "producer_replay_conflict",
    "session_not_found",
    "invalid",
    "forbidden",
    "unauthorized",
    "backpressure",
    "raft_timeout",
    "raft_unavailable",
    "internal_error",
];
const TAIL_TRANSPORTS: [&str; 2] = ["websocket", "sse"];
const TAIL_CLOSE_CODES: [&str; 5] = ["1000", "1001", "1011", "4001", "client"];
const TAIL_PHASES: [&str; 2] = ["replay", "live"];
const TAIL_REPLAY_REASONS: [&str; 5] = ["initial", "gap", "overflow", "catchup", "lookup_failed"];
const RAFT_ROLES: [&str; 4] = ["leader", "follower", "candidate", "down"];
const RAFT_COMMANDS: [&str; 4] = [
    "create_session",
    "append_event",
    "append_events",
    "ack_archived",
];
const RAFT_OUTCOMES: [&str; 4] = ["ok", "error", "timeout", "not_leader"];
const FORWARD_OPS: [&str; 2] = ["write", "read"];
const FORWARD_OUTCOMES: [&str; 4] = ["ok", "error", "timeout", "unavailable"];
const CACHE_RESULTS: [&str; 2] = ["hit", "miss"];
const ARCHIVE_ADAPTERS: [&str; 3] = ["local", "s3", "postgres"];

/// HTTP methods kept as label values; anything else is counted as `OTHER` so that a client
/// cannot create unbounded series.
const HTTP_METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"];

/// Sentinel of [`Metrics::archive_adapter`] before `set_archive_adapter` is called.
const ARCHIVE_ADAPTER_UNSET: u8 = u8::MAX;

fn zeros<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

fn label_index(values: &[&str], value: &str) -> Option<usize> {
    values.iter().position(|candidate| *candidate == value)
}

/// Series of one HTTP route template and method.
struct HttpRouteSeries {
    duration: Histogram,
    /// Completed requests by status code.
    statuses: RwLock<HashMap<u16, Arc<AtomicU64>>>,
}

/// The registry. Obtain it with [`global`].
pub struct Metrics {
    http: RwLock<HashMap<(&'static str, &'static str), Arc<HttpRouteSeries>>>,

    append_duration: [Histogram; APPEND_KINDS.len()],
    appends: [AtomicU64; APPEND_OUTCOMES.len()],
    events_appended: AtomicU64,
    sessions_created: AtomicU64,

    tail_connections: [AtomicI64; TAIL_TRANSPORTS.len()],
    tail_opened: [AtomicU64; TAIL_TRANSPORTS.len()],
    tail_closes: [AtomicU64; TAIL_CLOSE_CODES.len()],
    tail_events_sent: [AtomicU64; TAIL_PHASES.len()],
    tail_replays: [AtomicU64; TAIL_REPLAY_REASONS.len()],
    tail_buffer_overflows: AtomicU64,

    /// Whole-node role counts for a node whose shards report no members (see
    /// [`Metrics::set_raft_groups`]); the members' reports win once there are any.
    raft_groups: [AtomicU64; RAFT_ROLES.len()],
    raft_term_max: AtomicU64,
    raft_members: RaftMembers,
    raft_leader_changes: AtomicU64,
    raft_commit_duration: Histogram,
    raft_commands: [[AtomicU64; RAFT_OUTCOMES.len()]; RAFT_COMMANDS.len()],
    raft_snapshots: AtomicU64,
    raft_snapshots_installed: AtomicU64,
    wal_fsync_duration: Histogram,
    wal_bytes_written: AtomicU64,
    storage_failures: AtomicU64,
    routing_forwards: [[AtomicU64; FORWARD_OUTCOMES.len()]; FORWARD_OPS.len()],
    peers_connected: AtomicU64,
    node_ready: AtomicU64,
    node_draining: AtomicU64,

    archive_adapter: AtomicU8,
    archive_lag_events: AtomicU64,
    archive_pending_sessions: AtomicU64,
    archive_write_duration: Histogram,
    archive_events_written: AtomicU64,
    archive_write_failures: AtomicU64,
    archive_read_duration: Histogram,
    archive_read_failures: AtomicU64,
    archive_cache_requests: [AtomicU64; CACHE_RESULTS.len()],
    event_store_unarchived_bytes: AtomicU64,
    archive_cache_bytes: AtomicU64,
    event_store_budget_bytes: AtomicU64,
    event_store_backpressure: AtomicU64,
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide registry.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// An empty registry (tests use their own; the process uses [`global`]).
    pub fn new() -> Self {
        Metrics {
            http: RwLock::new(HashMap::new()),
            append_duration: [const { Histogram::new() }; APPEND_KINDS.len()],
            appends: zeros(),
            events_appended: AtomicU64::new(0),
            sessions_created: AtomicU64::new(0),
            tail_connections: [const { AtomicI64::new(0) }; TAIL_TRANSPORTS.len()],
            tail_opened: zeros(),
            tail_closes: zeros(),
            tail_events_sent: zeros(),
            tail_replays: zeros(),
            tail_buffer_overflows: AtomicU64::new(0),
            raft_groups: zeros(),
            raft_term_max: AtomicU64::new(0),
            raft_members: RaftMembers::default(),
            raft_leader_changes: AtomicU64::new(0),
            raft_commit_duration: Histogram::new(),
            raft_commands: std::array::from_fn(|_| zeros()),
            raft_snapshots: AtomicU64::new(0),
            raft_snapshots_installed: AtomicU64::new(0),
            wal_fsync_duration: Histogram::new(),
            wal_bytes_written: AtomicU64::new(0),
            storage_failures: AtomicU64::new(0),
            routing_forwards: std::array::from_fn(|_| zeros()),
            peers_connected: AtomicU64::new(0),
            node_ready: AtomicU64::new(0),
            node_draining: AtomicU64::new(0),
            archive_adapter: AtomicU8::new(ARCHIVE_ADAPTER_UNSET),
            archive_lag_events: AtomicU64::new(0),
            archive_pending_sessions: AtomicU64::new(0),
            archive_write_duration: Histogram::new(),
            archive_events_written: AtomicU64::new(0),
            archive_write_failures: AtomicU64::new(0),
            archive_read_duration: Histogram::new(),
            archive_read_failures: AtomicU64::new(0),
            archive_cache_requests: zeros(),
            event_store_unarchived_bytes: AtomicU64::new(0),
            archive_cache_bytes: AtomicU64::new(0),
            event_store_budget_bytes: AtomicU64::new(0),
            event_store_backpressure: AtomicU64::new(0),
        }
    }

    fn http_series(&self, route: &'static str, method: &'static str) -> Arc<HttpRouteSeries> {
        let key = (route, method);
        if let Ok(map) = self.http.read() {
            if let Some(series) = map.get(&key) {
                return series.clone();
            }
        }
        // A poisoned lock only means another thread panicked while inserting; the map itself is
        // still consistent, so keep recording.
        let mut map = self
            .http
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(key)
            .or_insert_with(|| {
                Arc::new(HttpRouteSeries {
                    duration: Histogram::new(),
                    statuses: RwLock::new(HashMap::new()),
                })
            })
            .clone()
    }

    /// A completed HTTP request; `route` is the template (`/v1/sessions/:id/append`, `unmatched`).
    pub fn http_request(&self, route: &'static str, method: &str, status: u16, duration: Duration) {
        let method = HTTP_METHODS
            .iter()
            .find(|known| known.eq_ignore_ascii_case(method))
            .copied()
            .unwrap_or("OTHER");
        let series = self.http_series(route, method);
        series.duration.observe(duration);
        if let Ok(statuses) = series.statuses.read() {
            if let Some(counter) = statuses.get(&status) {
                counter.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut statuses = series
            .statuses
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        statuses
            .entry(status)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// An append request finished with `outcome` (a label value of `starcite_appends_total`);
    /// `duration` only for 201s; `events_appended` counts newly stored events.
    ///
    /// An outcome outside the contract's list is counted as `internal_error`, so that a typo in
    /// a caller cannot create a series the contract does not name.
    pub fn append(
        &self,
        kind: AppendKind,
        outcome: &'static str,
        duration: Option<Duration>,
        events_appended: u64,
    ) {
        let slot = label_index(&APPEND_OUTCOMES, outcome).unwrap_or(APPEND_OUTCOMES.len() - 1);
        self.appends[slot].fetch_add(1, Ordering::Relaxed);
        if let Some(duration) = duration {
            let kind_slot = match kind {
                AppendKind::Single => 0,
                AppendKind::Batch => 1,
            };
            self.append_duration[kind_slot].observe(duration);
        }
        self.events_appended
            .fetch_add(events_appended, Ordering::Relaxed);
    }

    /// A successful create.
    pub fn session_created(&self) {
        self.sessions_created.fetch_add(1, Ordering::Relaxed);
    }

    fn transport_slot(transport: TailTransport) -> usize {
        match transport {
            TailTransport::WebSocket => 0,
            TailTransport::Sse => 1,
        }
    }

    /// A tail was opened.
    pub fn tail_opened(&self, transport: TailTransport) {
        let slot = Self::transport_slot(transport);
        self.tail_opened[slot].fetch_add(1, Ordering::Relaxed);
        self.tail_connections[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// A tail was closed; `code_label` is `1000`, `1001`, `1011`, `4001` or `client`.
    pub fn tail_closed(&self, transport: TailTransport, code_label: &'static str) {
        let slot = Self::transport_slot(transport);
        self.tail_connections[slot].fetch_sub(1, Ordering::Relaxed);
        if let Some(code_slot) = label_index(&TAIL_CLOSE_CODES, code_label) {
            self.tail_closes[code_slot].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Frames delivered.
    pub fn tail_events_sent(&self, phase: TailPhase, count: u64) {
        let slot = match phase {
            TailPhase::Replay => 0,
            TailPhase::Live => 1,
        };
        self.tail_events_sent[slot].fetch_add(count, Ordering::Relaxed);
    }

    /// A replay pass started; `reason` is `initial`, `gap`, `overflow`, `catchup` or `lookup_failed`.
    pub fn tail_replay(&self, reason: &'static str) {
        if let Some(slot) = label_index(&TAIL_REPLAY_REASONS, reason) {
            self.tail_replays[slot].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A slow-consumer fallback to replay.
    pub fn tail_buffer_overflow(&self) {
        self.tail_buffer_overflows.fetch_add(1, Ordering::Relaxed);
    }

    /// One WAL fdatasync took `duration`.
    pub fn wal_fsync(&self, duration: Duration) {
        self.wal_fsync_duration.observe(duration);
    }

    /// Bytes appended to the WAL.
    pub fn wal_bytes_written(&self, bytes: u64) {
        self.wal_bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A storage I/O failure.
    pub fn storage_failure(&self) {
        self.storage_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A command proposed on this node: `command` (`create_session`, `append_event`,
    /// `append_events`, `ack_archived`), `outcome` (`ok`, `error`, `timeout`, `not_leader`).
    pub fn raft_command(
        &self,
        command: &'static str,
        outcome: &'static str,
        commit_duration: Option<Duration>,
    ) {
        if let (Some(command_slot), Some(outcome_slot)) = (
            label_index(&RAFT_COMMANDS, command),
            label_index(&RAFT_OUTCOMES, outcome),
        ) {
            self.raft_commands[command_slot][outcome_slot].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(duration) = commit_duration {
            self.raft_commit_duration.observe(duration);
        }
    }

    /// An append rejected with 429.
    pub fn backpressure(&self) {
        self.event_store_backpressure
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Gauge `starcite_event_store_unarchived_bytes`.
    pub fn set_unarchived_bytes(&self, bytes: u64) {
        self.event_store_unarchived_bytes
            .store(bytes, Ordering::Relaxed);
    }

    /// Gauge `starcite_event_store_budget_bytes`.
    pub fn set_budget_bytes(&self, bytes: u64) {
        self.event_store_budget_bytes
            .store(bytes, Ordering::Relaxed);
    }

    /// Gauge `starcite_node_ready`.
    pub fn set_node_ready(&self, ready: bool) {
        self.node_ready.store(u64::from(ready), Ordering::Relaxed);
    }

    /// Gauge `starcite_node_draining`.
    pub fn set_node_draining(&self, draining: bool) {
        self.node_draining
            .store(u64::from(draining), Ordering::Relaxed);
    }

    /// Gauges `starcite_raft_groups{role}`: whole-node counts of local members by role, used
    /// until members report themselves through [`Metrics::observe_raft_member`].
    pub fn set_raft_groups(&self, leader: u64, follower: u64, candidate: u64, down: u64) {
        for (slot, value) in [leader, follower, candidate, down].into_iter().enumerate() {
            self.raft_groups[slot].store(value, Ordering::Relaxed);
        }
    }

    /// The member of `group_id` on this node has `role` in `term` and knows `leader` (`NO_NODE`
    /// if none). Called by the shard drivers whenever one of these changes; feeds
    /// `starcite_raft_groups{role}`, `starcite_raft_term_max` and
    /// `starcite_raft_leader_changes_total` (a leader this member had not known before).
    pub fn observe_raft_member(&self, group_id: u32, role: Role, term: u64, leader: NodeId) {
        if self.raft_members.observe(group_id, role, term, leader) {
            self.raft_leader_change();
        }
    }

    /// Gauge `starcite_raft_term_max`, used until members report themselves.
    pub fn set_raft_term_max(&self, term: u64) {
        self.raft_term_max.store(term, Ordering::Relaxed);
    }

    /// A leader change observed by a local member.
    pub fn raft_leader_change(&self) {
        self.raft_leader_changes.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot was written.
    pub fn raft_snapshot(&self) {
        self.raft_snapshots.fetch_add(1, Ordering::Relaxed);
    }

    /// Counter `starcite_raft_snapshots_installed_total`: snapshots received from a leader and
    /// installed (a lagging member caught up by snapshot instead of by log entries).
    pub fn raft_snapshot_installed(&self) {
        self.raft_snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A request forwarded to another node: `op` (`write`, `read`), `outcome` (`ok`, `error`,
    /// `timeout`, `unavailable`).
    pub fn routing_forward(&self, op: &'static str, outcome: &'static str) {
        if let (Some(op_slot), Some(outcome_slot)) = (
            label_index(&FORWARD_OPS, op),
            label_index(&FORWARD_OUTCOMES, outcome),
        ) {
            self.routing_forwards[op_slot][outcome_slot].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Gauge `starcite_peers_connected`.
    pub fn set_peers_connected(&self, peers: u64) {
        self.peers_connected.store(peers, Ordering::Relaxed);
    }

    /// Select the active archive adapter (`local`, `s3`, `postgres`); only its series are
    /// rendered. An unknown name leaves the archive adapter series out.
    pub fn set_archive_adapter(&self, adapter: &str) {
        let slot = label_index(&ARCHIVE_ADAPTERS, adapter)
            .and_then(|slot| u8::try_from(slot).ok())
            .unwrap_or(ARCHIVE_ADAPTER_UNSET);
        self.archive_adapter.store(slot, Ordering::Relaxed);
    }

    /// One adapter `write_events` call: its duration, the events newly stored, and whether it
    /// failed.
    pub fn archive_write(&self, duration: Duration, events_written: u64, failed: bool) {
        self.archive_write_duration.observe(duration);
        self.archive_events_written
            .fetch_add(events_written, Ordering::Relaxed);
        if failed {
            self.archive_write_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One adapter read: its duration and whether it failed.
    pub fn archive_read(&self, duration: Duration, failed: bool) {
        self.archive_read_duration.observe(duration);
        if failed {
            self.archive_read_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A cold-read cache lookup of one chunk.
    pub fn archive_cache_request(&self, hit: bool) {
        let slot = if hit { 0 } else { 1 };
        self.archive_cache_requests[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Gauges `starcite_archive_lag_events` and `starcite_archive_pending_sessions`.
    pub fn set_archive_lag(&self, lag_events: u64, pending_sessions: u64) {
        self.archive_lag_events.store(lag_events, Ordering::Relaxed);
        self.archive_pending_sessions
            .store(pending_sessions, Ordering::Relaxed);
    }

    /// Gauge `starcite_archive_cache_bytes`.
    pub fn set_archive_cache_bytes(&self, bytes: u64) {
        self.archive_cache_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Value of `starcite_appends_total{outcome}` (0 for an unknown outcome); for tests and
    /// status pages.
    pub fn appends_total(&self, outcome: &str) -> u64 {
        label_index(&APPEND_OUTCOMES, outcome)
            .map(|slot| self.appends[slot].load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Value of `starcite_storage_failures_total`.
    pub fn storage_failures_total(&self) -> u64 {
        self.storage_failures.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names that metrics.md's MUST-tests look for are all present on a fresh registry
    /// (except the HTTP counter, which appears with the first request).
    #[test]
    fn render_contains_required_names() {
        let metrics = Metrics::new();
        metrics.http_request("/v1/sessions", "post", 201, Duration::from_millis(2));
        let text = metrics.render(NodeMode::WriteNode);
        for name in [
            "starcite_appends_total",
            "starcite_append_duration_seconds_bucket",
            "starcite_tail_connections",
            "starcite_raft_groups",
            "starcite_wal_fsync_duration_seconds_bucket",
            "starcite_archive_lag_events",
            "starcite_event_store_unarchived_bytes",
            "starcite_http_requests_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "starcite_build_info{version=",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert!(text.contains(
            "starcite_http_requests_total{route=\"/v1/sessions\",method=\"POST\",status=\"201\"} 1"
        ));
        assert!(text.contains("starcite_appends_total{outcome=\"internal_error\"} 0"));
        assert!(text.contains(
            "starcite_raft_commands_total{command=\"ack_archived\",outcome=\"not_leader\"} 0"
        ));
    }

    #[test]
    fn counter_increments() {
        let metrics = Metrics::new();
        metrics.append(
            AppendKind::Single,
            "appended",
            Some(Duration::from_millis(3)),
            1,
        );
        metrics.append(
            AppendKind::Batch,
            "appended",
            Some(Duration::from_secs(20)),
            4,
        );
        let text = metrics.render(NodeMode::RouterNode);
        assert!(text.contains("starcite_appends_total{outcome=\"appended\"} 2"));
        assert!(text.contains("starcite_events_appended_total 5"));
        assert!(text
            .contains("starcite_append_duration_seconds_bucket{kind=\"single\",le=\"0.005\"} 1"));
        assert!(text
            .contains("starcite_append_duration_seconds_bucket{kind=\"single\",le=\"0.0025\"} 0"));
        assert!(
            text.contains("starcite_append_duration_seconds_bucket{kind=\"batch\",le=\"10\"} 0")
        );
        assert!(
            text.contains("starcite_append_duration_seconds_bucket{kind=\"batch\",le=\"+Inf\"} 1")
        );
        assert!(text.contains("starcite_append_duration_seconds_count{kind=\"batch\"} 1"));
        assert!(text.contains("mode=\"router_node\"} 1"));
        assert_eq!(metrics.appends_total("appended"), 2);
    }

    #[test]
    fn archive_series_only_for_active_adapter() {
        let metrics = Metrics::new();
        assert!(!metrics.render(NodeMode::WriteNode).contains("adapter="));
        metrics.set_archive_adapter("s3");
        metrics.archive_write(Duration::from_millis(1), 3, true);
        let text = metrics.render(NodeMode::WriteNode);
        assert!(text.contains("starcite_archive_events_written_total{adapter=\"s3\"} 3"));
        assert!(text.contains("starcite_archive_write_failures_total{adapter=\"s3\"} 1"));
        assert!(!text.contains("adapter=\"local\""));
    }
}
