//! The process-wide Prometheus registry (contract metrics.md). Counters and histograms are
//! lock-free atomics so that any shard can record without coordination; `render` produces the
//! text exposition format 0.0.4.
//!
//! API (stable; other crates call these):
//! - [`global`] returns the registry.
//! - `Metrics::http_request`, `append`, `session_created`, `tail_*`, `raft_*`, `wal_*`,
//!   `storage_failure`, `set_node_ready`, `set_node_draining`, `render`.

use std::time::Duration;

use crate::api::NodeMode;

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

/// The registry. Obtain it with [`global`].
pub struct Metrics {
    _private: (),
}

static GLOBAL: Metrics = Metrics { _private: () };

/// The process-wide registry.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

impl Metrics {
    /// A completed HTTP request; `route` is the template (`/v1/sessions/:id/append`, `unmatched`).
    pub fn http_request(&self, _route: &'static str, _method: &str, _status: u16, _duration: Duration) {}

    /// An append request finished with `outcome` (a label value of `starcite_appends_total`);
    /// `duration` only for 201s; `events_appended` counts newly stored events.
    pub fn append(
        &self,
        _kind: AppendKind,
        _outcome: &'static str,
        _duration: Option<Duration>,
        _events_appended: u64,
    ) {
    }

    /// A successful create.
    pub fn session_created(&self) {}

    /// A tail was opened.
    pub fn tail_opened(&self, _transport: TailTransport) {}

    /// A tail was closed; `code_label` is `1000`, `1001`, `1011`, `4001` or `client`.
    pub fn tail_closed(&self, _transport: TailTransport, _code_label: &'static str) {}

    /// Frames delivered.
    pub fn tail_events_sent(&self, _phase: TailPhase, _count: u64) {}

    /// A replay pass started; `reason` is `initial`, `gap`, `overflow`, `catchup` or `lookup_failed`.
    pub fn tail_replay(&self, _reason: &'static str) {}

    /// A slow-consumer fallback to replay.
    pub fn tail_buffer_overflow(&self) {}

    /// One WAL fdatasync took `duration`.
    pub fn wal_fsync(&self, _duration: Duration) {}

    /// Bytes appended to the WAL.
    pub fn wal_bytes_written(&self, _bytes: u64) {}

    /// A storage I/O failure.
    pub fn storage_failure(&self) {}

    /// A command proposed on this node: `command` (`create_session`, `append_event`,
    /// `append_events`, `ack_archived`), `outcome` (`ok`, `error`, `timeout`, `not_leader`).
    pub fn raft_command(&self, _command: &'static str, _outcome: &'static str, _commit_duration: Option<Duration>) {}

    /// An append rejected with 429.
    pub fn backpressure(&self) {}

    /// Gauge `starcite_event_store_unarchived_bytes`.
    pub fn set_unarchived_bytes(&self, _bytes: u64) {}

    /// Gauge `starcite_event_store_budget_bytes`.
    pub fn set_budget_bytes(&self, _bytes: u64) {}

    /// Gauge `starcite_node_ready`.
    pub fn set_node_ready(&self, _ready: bool) {}

    /// Gauge `starcite_node_draining`.
    pub fn set_node_draining(&self, _draining: bool) {}

    /// Gauges `starcite_raft_groups{role}`: counts of local members by role.
    pub fn set_raft_groups(&self, _leader: u64, _follower: u64, _candidate: u64, _down: u64) {}

    /// Render everything in Prometheus text format 0.0.4.
    pub fn render(&self, _mode: NodeMode) -> String {
        String::new()
    }
}
