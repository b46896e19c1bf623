//! End-of-run summary: text (rates, error breakdown, percentiles, a small histogram) or one JSON
//! object with the same numbers.

use hdrhistogram::Histogram;
use serde_json::json;

use super::archive::ArchiveOutcome;
use super::fsync_floor::{FsyncFloor, WRITE_BYTES};
use super::load::{Outcome, Plan};
use super::OutputFormat;

/// Rows of the text histogram.
const HISTOGRAM_ROWS: usize = 10;
/// Width of the longest histogram bar.
const HISTOGRAM_BAR_WIDTH: u64 = 40;

/// Percentiles reported, with their JSON keys and text labels.
const PERCENTILES: [(f64, &str, &str); 4] = [
    (50.0, "p50", "p50"),
    (90.0, "p90", "p90"),
    (99.0, "p99", "p99"),
    (99.9, "p99_9", "p99.9"),
];

fn milliseconds(microseconds: u64) -> f64 {
    microseconds as f64 / 1000.0
}

fn latency_json(histogram: &Histogram<u64>) -> serde_json::Value {
    if histogram.is_empty() {
        return serde_json::Value::Null;
    }
    let mut object = serde_json::Map::new();
    for (quantile, key, _) in PERCENTILES {
        object.insert(
            key.to_string(),
            json!(milliseconds(histogram.value_at_percentile(quantile))),
        );
    }
    object.insert("max".into(), json!(milliseconds(histogram.max())));
    object.insert("mean".into(), json!(histogram.mean() / 1000.0));
    serde_json::Value::Object(object)
}

fn fsync_json(floor: &FsyncFloor) -> serde_json::Value {
    json!({
        "directory": floor.directory.display().to_string(),
        "write_bytes": WRITE_BYTES,
        "samples": floor.samples,
        "latency_ms": latency_json(&floor.latency_us),
        "ops_per_s": ops_per_second(&floor.latency_us),
    })
}

/// 1 / mean latency, as the peer benchmark reports the fsync rows.
fn ops_per_second(histogram: &Histogram<u64>) -> f64 {
    let mean_us = histogram.mean();
    if mean_us > 0.0 {
        1_000_000.0 / mean_us
    } else {
        0.0
    }
}

pub fn print_fsync_floor(floor: &FsyncFloor, output: OutputFormat) {
    match output {
        OutputFormat::Json => println!("{}", fsync_json(floor)),
        OutputFormat::Text => print!("{}", fsync_text(floor)),
    }
}

fn fsync_text(floor: &FsyncFloor) -> String {
    let histogram = &floor.latency_us;
    format!(
        "Fsync floor ({} KiB write + fdatasync, {} samples, {}):\n  p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, {:.0} ops/s\n",
        WRITE_BYTES / 1024,
        floor.samples,
        floor.directory.display(),
        milliseconds(histogram.value_at_percentile(50.0)),
        milliseconds(histogram.value_at_percentile(99.0)),
        milliseconds(histogram.max()),
        ops_per_second(histogram),
    )
}

fn requests_per_second(outcome: &Outcome) -> f64 {
    outcome.successes as f64 / outcome.window.as_secs_f64()
}

pub fn print_load(
    plan: &Plan,
    outcome: &Outcome,
    floor: Option<&FsyncFloor>,
    output: OutputFormat,
) {
    match output {
        OutputFormat::Json => {
            let errors_by_status: serde_json::Map<String, serde_json::Value> = outcome
                .errors_by_status
                .iter()
                .map(|(status, count)| (status.to_string(), json!(count)))
                .collect();
            let mut object = json!({
                "url": plan.url,
                "run_id": outcome.run_id,
                "connections": plan.connections,
                "sessions": plan.sessions,
                "payload_bytes": plan.payload_bytes,
                "warmup_s": plan.warmup.as_secs_f64(),
                "duration_s": outcome.window.as_secs_f64(),
                "requests": outcome.successes,
                "requests_per_s": requests_per_second(outcome),
                "errors": outcome.errors(),
                "errors_by_status": errors_by_status,
                "transport_errors": outcome.transport_errors,
                "latency_ms": latency_json(&outcome.latency_us),
                "histogram": histogram_rows(&outcome.latency_us)
                    .iter()
                    .map(|(upper_us, count)| json!({"upper_ms": milliseconds(*upper_us), "count": count}))
                    .collect::<Vec<_>>(),
            });
            if let (Some(floor), Some(map)) = (floor, object.as_object_mut()) {
                map.insert("fsync_floor".into(), fsync_json(floor));
            }
            if let (Some(archive), Some(map)) = (&outcome.archive, object.as_object_mut()) {
                map.insert("archive".into(), archive_json(archive, outcome.window));
            }
            println!("{object}");
        }
        OutputFormat::Text => print!("{}", load_text(plan, outcome, floor)),
    }
}

fn load_text(plan: &Plan, outcome: &Outcome, floor: Option<&FsyncFloor>) -> String {
    let mut text = String::new();
    let mut line = |content: String| {
        text.push_str(&content);
        text.push('\n');
    };
    line("Summary:".into());
    line(format!(
        "  Target:       {} (durable append, {}-byte payload)",
        plan.url, plan.payload_bytes
    ));
    line(format!(
        "  Connections:  {} ({} sessions, one request in flight each)",
        plan.connections, plan.sessions
    ));
    line(format!(
        "  Window:       {:.2} s (after {:.2} s warm-up)",
        outcome.window.as_secs_f64(),
        plan.warmup.as_secs_f64()
    ));
    line(format!(
        "  Requests:     {} succeeded (201), {} failed",
        outcome.successes,
        outcome.errors()
    ));
    line(format!(
        "  Requests/s:   {:.1}",
        requests_per_second(outcome)
    ));
    if outcome.errors() > 0 {
        line(String::new());
        line("Errors:".into());
        for (status, count) in &outcome.errors_by_status {
            line(format!("  HTTP {status}: {count}"));
        }
        if outcome.transport_errors > 0 {
            line(format!("  transport: {}", outcome.transport_errors));
        }
        if let Some(example) = &outcome.first_error {
            line(format!("  first: {example}"));
        }
    }
    let histogram = &outcome.latency_us;
    if !histogram.is_empty() {
        line(String::new());
        line("Latency of successful appends (ms):".into());
        for (quantile, _, label) in PERCENTILES {
            line(format!(
                "  {label:<6} {:>9.3}",
                milliseconds(histogram.value_at_percentile(quantile))
            ));
        }
        line(format!(
            "  {:<6} {:>9.3}",
            "max",
            milliseconds(histogram.max())
        ));
        line(String::new());
        line("Histogram (ms, upper bound):".into());
        let rows = histogram_rows(histogram);
        let largest = rows
            .iter()
            .map(|(_, count)| *count)
            .max()
            .unwrap_or(1)
            .max(1);
        for (upper_us, count) in rows {
            let bar = "■".repeat((count * HISTOGRAM_BAR_WIDTH / largest) as usize);
            line(format!(
                "  {:>9.3} [{count:>8}] |{bar}",
                milliseconds(upper_us)
            ));
        }
    }
    if let Some(archive) = &outcome.archive {
        text.push('\n');
        text.push_str(&archive_text(archive, outcome.window));
    }
    if let Some(floor) = floor {
        text.push('\n');
        text.push_str(&fsync_text(floor));
    }
    text
}

fn archive_json(archive: &ArchiveOutcome, window: std::time::Duration) -> serde_json::Value {
    json!({
        "adapter": archive.adapter,
        "events_written_in_window": archive.written_in_window,
        "events_written_per_s": archive.window_events_per_second(window),
        "backlog_events": archive.backlog_events,
        "catch_up_s": archive.catch_up.map(|catch_up| catch_up.as_secs_f64()),
        "catch_up_events_per_s": archive.catch_up_events_per_second(),
    })
}

fn archive_text(archive: &ArchiveOutcome, window: std::time::Duration) -> String {
    let catch_up = match (archive.catch_up, archive.catch_up_events_per_second()) {
        (Some(catch_up), Some(rate)) => {
            format!("{:.2} s ({rate:.1} events/s)", catch_up.as_secs_f64())
        }
        (Some(catch_up), None) => format!("{:.2} s", catch_up.as_secs_f64()),
        (None, _) => format!("not within {:.0} s", archive.catch_up_timeout.as_secs_f64()),
    };
    format!(
        "Archive ({}, from /metrics):\n  Stored in window:  {} events ({:.1} events/s)\n  Backlog at end:    {} events\n  Caught up in:      {catch_up}\n",
        archive.adapter,
        archive.written_in_window,
        archive.window_events_per_second(window),
        archive.backlog_events,
    )
}

/// Counts in `HISTOGRAM_ROWS` buckets spaced geometrically from the fastest to the slowest
/// sample (latency tails are long, so linear buckets would put nearly everything in the first).
fn histogram_rows(histogram: &Histogram<u64>) -> Vec<(u64, u64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let lowest = histogram.min().max(1) as f64;
    let highest = histogram.max().max(1) as f64;
    let ratio = (highest / lowest).powf(1.0 / HISTOGRAM_ROWS as f64);
    let mut rows = Vec::with_capacity(HISTOGRAM_ROWS);
    let mut previous_upper = 0_u64;
    for row in 1..=HISTOGRAM_ROWS {
        let upper = if row == HISTOGRAM_ROWS {
            histogram.max()
        } else {
            (lowest * ratio.powi(row as i32)).round() as u64
        };
        if upper <= previous_upper && row != HISTOGRAM_ROWS {
            continue;
        }
        let count = histogram.count_between(previous_upper.saturating_add(1), upper);
        rows.push((upper, count));
        previous_upper = upper;
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_rows_cover_every_sample() {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
        for value in [100, 120, 150, 400, 9000] {
            histogram.record(value).expect("record");
        }
        let rows = histogram_rows(&histogram);
        assert_eq!(rows.iter().map(|(_, count)| count).sum::<u64>(), 5);
        assert_eq!(rows.last().map(|(upper, _)| *upper), Some(histogram.max()));
    }
}
