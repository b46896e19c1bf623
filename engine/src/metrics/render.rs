//! Rendering of the registry in the Prometheus text exposition format 0.0.4.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::process::render_process;
use super::*;

impl Metrics {
    /// Render everything in Prometheus text format 0.0.4.
    pub fn render(&self, mode: NodeMode) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.render_http(&mut out);
        self.render_appends(&mut out);
        self.render_tails(&mut out);
        self.render_raft_and_storage(&mut out);
        self.render_archive(&mut out);
        render_process(&mut out, mode);
        out
    }

    fn render_http(&self, out: &mut String) {
        let mut series: Vec<((&'static str, &'static str), Arc<HttpRouteSeries>)> =
            match self.http.read() {
                Ok(map) => map
                    .iter()
                    .map(|(key, value)| (*key, value.clone()))
                    .collect(),
                Err(poisoned) => poisoned
                    .into_inner()
                    .iter()
                    .map(|(key, value)| (*key, value.clone()))
                    .collect(),
            };
        series.sort_by(|left, right| left.0.cmp(&right.0));

        header(
            out,
            "starcite_http_requests_total",
            "counter",
            "Completed HTTP requests.",
        );
        for ((route, method), route_series) in &series {
            let statuses = match route_series.statuses.read() {
                Ok(map) => map
                    .iter()
                    .map(|(status, counter)| (*status, counter.load(Ordering::Relaxed)))
                    .collect::<Vec<_>>(),
                Err(poisoned) => poisoned
                    .into_inner()
                    .iter()
                    .map(|(status, counter)| (*status, counter.load(Ordering::Relaxed)))
                    .collect(),
            };
            let mut statuses = statuses;
            statuses.sort_unstable();
            for (status, value) in statuses {
                let _ = writeln!(
                    out,
                    "starcite_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {value}",
                    escape_label(route)
                );
            }
        }
        header(
            out,
            "starcite_http_request_duration_seconds",
            "histogram",
            "Time to response headers.",
        );
        for ((route, method), route_series) in &series {
            let labels = format!("route=\"{}\",method=\"{method}\",", escape_label(route));
            route_series
                .duration
                .render(out, "starcite_http_request_duration_seconds", &labels);
        }
    }

    fn render_appends(&self, out: &mut String) {
        header(
            out,
            "starcite_append_duration_seconds",
            "histogram",
            "Successful appends, request received to response written.",
        );
        for (slot, kind) in APPEND_KINDS.iter().enumerate() {
            let labels = format!("kind=\"{kind}\",");
            self.append_duration[slot].render(out, "starcite_append_duration_seconds", &labels);
        }
        labelled(
            out,
            "starcite_appends_total",
            "counter",
            "Append requests by result.",
            "outcome",
            &APPEND_OUTCOMES,
            &self.appends,
        );
        scalar(
            out,
            "starcite_events_appended_total",
            "counter",
            "Events newly stored.",
            self.events_appended.load(Ordering::Relaxed),
        );
        scalar(
            out,
            "starcite_sessions_created_total",
            "counter",
            "Successful creates.",
            self.sessions_created.load(Ordering::Relaxed),
        );
    }

    fn render_tails(&self, out: &mut String) {
        header(
            out,
            "starcite_tail_connections",
            "gauge",
            "Open tails on this node.",
        );
        for (slot, transport) in TAIL_TRANSPORTS.iter().enumerate() {
            let value = self.tail_connections[slot].load(Ordering::Relaxed).max(0);
            let _ = writeln!(
                out,
                "starcite_tail_connections{{transport=\"{transport}\"}} {value}"
            );
        }
        labelled(
            out,
            "starcite_tail_connections_opened_total",
            "counter",
            "Tails opened.",
            "transport",
            &TAIL_TRANSPORTS,
            &self.tail_opened,
        );
        labelled(
            out,
            "starcite_tail_closes_total",
            "counter",
            "Tails closed.",
            "code",
            &TAIL_CLOSE_CODES,
            &self.tail_closes,
        );
        labelled(
            out,
            "starcite_tail_events_sent_total",
            "counter",
            "Frames delivered.",
            "phase",
            &TAIL_PHASES,
            &self.tail_events_sent,
        );
        labelled(
            out,
            "starcite_tail_replays_total",
            "counter",
            "Replay passes started.",
            "reason",
            &TAIL_REPLAY_REASONS,
            &self.tail_replays,
        );
        scalar(
            out,
            "starcite_tail_buffer_overflows_total",
            "counter",
            "Slow-consumer fallbacks to replay.",
            self.tail_buffer_overflows.load(Ordering::Relaxed),
        );
    }

    fn render_raft_and_storage(&self, out: &mut String) {
        let storage_failed = self.storage_failures.load(Ordering::Relaxed) > 0;
        let (by_role, term_max) = match self.raft_members.summary(storage_failed) {
            Some(summary) => (summary.by_role, summary.term_max),
            None => (
                std::array::from_fn(|slot| self.raft_groups[slot].load(Ordering::Relaxed)),
                self.raft_term_max.load(Ordering::Relaxed),
            ),
        };
        header(
            out,
            "starcite_raft_groups",
            "gauge",
            "Local group members by role.",
        );
        for (role, count) in RAFT_ROLES.iter().zip(by_role) {
            let _ = writeln!(out, "starcite_raft_groups{{role=\"{role}\"}} {count}");
        }
        scalar(
            out,
            "starcite_raft_term_max",
            "gauge",
            "Highest current term across local groups.",
            term_max,
        );
        scalar(
            out,
            "starcite_raft_leader_changes_total",
            "counter",
            "Leader changes observed by local members.",
            self.raft_leader_changes.load(Ordering::Relaxed),
        );
        header(
            out,
            "starcite_raft_commit_duration_seconds",
            "histogram",
            "Propose to committed and applied.",
        );
        self.raft_commit_duration
            .render(out, "starcite_raft_commit_duration_seconds", "");
        header(
            out,
            "starcite_raft_commands_total",
            "counter",
            "Commands proposed on this node.",
        );
        for (command_slot, command) in RAFT_COMMANDS.iter().enumerate() {
            for (outcome_slot, outcome) in RAFT_OUTCOMES.iter().enumerate() {
                let value = self.raft_commands[command_slot][outcome_slot].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "starcite_raft_commands_total{{command=\"{command}\",outcome=\"{outcome}\"}} {value}"
                );
            }
        }
        scalar(
            out,
            "starcite_raft_snapshots_total",
            "counter",
            "Snapshots written.",
            self.raft_snapshots.load(Ordering::Relaxed),
        );
        scalar(
            out,
            "starcite_raft_snapshots_installed_total",
            "counter",
            "Snapshots received from a leader and installed.",
            self.raft_snapshots_installed.load(Ordering::Relaxed),
        );
        header(
            out,
            "starcite_wal_fsync_duration_seconds",
            "histogram",
            "Duration of each log fsync.",
        );
        self.wal_fsync_duration
            .render(out, "starcite_wal_fsync_duration_seconds", "");
        scalar(
            out,
            "starcite_wal_bytes_written_total",
            "counter",
            "Bytes appended to the log.",
            self.wal_bytes_written.load(Ordering::Relaxed),
        );
        scalar(
            out,
            "starcite_storage_failures_total",
            "counter",
            "Storage I/O failures.",
            self.storage_failures.load(Ordering::Relaxed),
        );
        header(
            out,
            "starcite_routing_forwards_total",
            "counter",
            "Requests forwarded to another node.",
        );
        for (op_slot, op) in FORWARD_OPS.iter().enumerate() {
            for (outcome_slot, outcome) in FORWARD_OUTCOMES.iter().enumerate() {
                let value = self.routing_forwards[op_slot][outcome_slot].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "starcite_routing_forwards_total{{op=\"{op}\",outcome=\"{outcome}\"}} {value}"
                );
            }
        }
        scalar(
            out,
            "starcite_peers_connected",
            "gauge",
            "Connected peer nodes.",
            self.peers_connected.load(Ordering::Relaxed),
        );
        scalar(
            out,
            "starcite_node_ready",
            "gauge",
            "1 if /health/ready would return 200.",
            self.node_ready.load(Ordering::Relaxed),
        );
        scalar(
            out,
            "starcite_node_draining",
            "gauge",
            "1 if marked draining.",
            self.node_draining.load(Ordering::Relaxed),
        );
    }

    fn render_archive(&self, out: &mut String) {
        scalar(
            out,
            "starcite_archive_lag_events",
            "gauge",
            "Unarchived events of sessions of groups this node leads.",
            self.archive_lag_events.load(Ordering::Relaxed),
        );
        scalar(
            out,
            "starcite_archive_pending_sessions",
            "gauge",
            "Sessions with unarchived events on groups this node leads.",
            self.archive_pending_sessions.load(Ordering::Relaxed),
        );
        let adapter_slot = usize::from(self.archive_adapter.load(Ordering::Relaxed));
        if let Some(adapter) = ARCHIVE_ADAPTERS.get(adapter_slot) {
            let labels = format!("adapter=\"{adapter}\",");
            header(
                out,
                "starcite_archive_write_duration_seconds",
                "histogram",
                "One write_events call.",
            );
            self.archive_write_duration.render(
                out,
                "starcite_archive_write_duration_seconds",
                &labels,
            );
            adapter_counter(
                out,
                "starcite_archive_events_written_total",
                "Events newly stored by the adapter.",
                adapter,
                &self.archive_events_written,
            );
            adapter_counter(
                out,
                "starcite_archive_write_failures_total",
                "Failed write_events calls.",
                adapter,
                &self.archive_write_failures,
            );
            header(
                out,
                "starcite_archive_read_duration_seconds",
                "histogram",
                "One adapter read.",
            );
            self.archive_read_duration.render(
                out,
                "starcite_archive_read_duration_seconds",
                &labels,
            );
            adapter_counter(
                out,
                "starcite_archive_read_failures_total",
                "Failed adapter reads.",
                adapter,
                &self.archive_read_failures,
            );
        }
        labelled(
            out,
            "starcite_archive_cache_requests_total",
            "counter",
            "Cold-read cache lookups per chunk.",
            "result",
            &CACHE_RESULTS,
            &self.archive_cache_requests,
        );
        scalar(
            out,
            "starcite_event_store_unarchived_bytes",
            "gauge",
            "Bytes of unarchived hot events.",
            self.event_store_unarchived_bytes.load(Ordering::Relaxed),
        );
        scalar(
            out,
            "starcite_archive_cache_bytes",
            "gauge",
            "Bytes of the archive read cache.",
            self.archive_cache_bytes.load(Ordering::Relaxed),
        );
        scalar(
            out,
            "starcite_event_store_budget_bytes",
            "gauge",
            "Memory budget for unarchived events and the read cache.",
            self.event_store_budget_bytes.load(Ordering::Relaxed),
        );
        scalar(
            out,
            "starcite_event_store_backpressure_total",
            "counter",
            "Appends rejected with 429.",
            self.event_store_backpressure.load(Ordering::Relaxed),
        );
    }
}

pub(super) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

fn labelled(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    values: &[&str],
    counters: &[AtomicU64],
) {
    header(out, name, kind, help);
    for (value, counter) in values.iter().zip(counters) {
        let _ = writeln!(
            out,
            "{name}{{{label}=\"{value}\"}} {}",
            counter.load(Ordering::Relaxed)
        );
    }
}

fn adapter_counter(out: &mut String, name: &str, help: &str, adapter: &str, counter: &AtomicU64) {
    header(out, name, "counter", help);
    let _ = writeln!(
        out,
        "{name}{{adapter=\"{adapter}\"}} {}",
        counter.load(Ordering::Relaxed)
    );
}

/// Escape a label value per the text format (backslash, double quote, newline).
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
