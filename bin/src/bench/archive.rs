//! `--archive`: the archive's progress around a load run, read from the node's `/metrics`
//! (metrics.md "Archive and memory"): events the adapter stored per second inside the window,
//! the backlog the load left behind and how long the archiver took to drain it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::client::Connection;
use super::load::Target;

/// How often the catch-up wait reads `/metrics`.
const CATCH_UP_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Counter of events newly stored by the adapter (one series, labelled with the adapter).
const EVENTS_WRITTEN_METRIC: &str = "starcite_archive_events_written_total";
/// Gauge `U`: bytes of committed events not archived yet; updated on every apply.
const UNARCHIVED_BYTES_METRIC: &str = "starcite_event_store_unarchived_bytes";

/// One reading of the node's archive metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiveSample {
    /// `adapter` label of the events-written counter (`local`, `s3`, `postgres`).
    pub adapter: String,
    /// Events the adapter stored since the node started.
    pub events_written: u64,
    /// `U` in bytes.
    pub unarchived_bytes: u64,
}

/// The archive's part of a run's outcome.
#[derive(Clone, Debug)]
pub struct ArchiveOutcome {
    pub adapter: String,
    /// Events stored by the adapter inside the measured window.
    pub written_in_window: u64,
    /// Acknowledged appends of the whole run not yet stored when the load stopped.
    pub backlog_events: u64,
    /// From the end of the load until `U` was 0; `None` if that did not happen in time.
    pub catch_up: Option<Duration>,
    /// How long the catch-up wait was allowed to take.
    pub catch_up_timeout: Duration,
}

impl ArchiveOutcome {
    /// Events stored per second inside the window.
    pub fn window_events_per_second(&self, window: Duration) -> f64 {
        self.written_in_window as f64 / window.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Backlog drained per second after the load (`None` without a backlog or a catch-up).
    pub fn catch_up_events_per_second(&self) -> Option<f64> {
        let catch_up = self.catch_up?;
        (self.backlog_events > 0 && !catch_up.is_zero())
            .then(|| self.backlog_events as f64 / catch_up.as_secs_f64())
    }
}

/// Read the archive metrics once over a fresh connection.
pub async fn sample(target: &Target) -> anyhow::Result<ArchiveSample> {
    let mut connection = Connection::connect(target.address)
        .await
        .with_context(|| format!("connect to {}", target.address))?;
    let request = format!(
        "GET {}/metrics HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
        target.base_path, target.host_header
    );
    let response = connection
        .round_trip(request.as_bytes())
        .await
        .context("read /metrics")?;
    if response.status != 200 {
        bail!(
            "GET /metrics: HTTP {} (the archive report needs STARCITE_METRICS_ENABLED=true)",
            response.status
        );
    }
    parse_sample(&String::from_utf8_lossy(&response.body))
}

/// The archive metrics out of a Prometheus text page.
fn parse_sample(text: &str) -> anyhow::Result<ArchiveSample> {
    let mut adapter = None;
    let mut events_written = 0_u64;
    let mut unarchived_bytes = None;
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        if let Some(labels) = series.strip_prefix(EVENTS_WRITTEN_METRIC) {
            adapter = label_value(labels, "adapter").or(adapter);
            events_written += value;
        } else if series == UNARCHIVED_BYTES_METRIC {
            unarchived_bytes = Some(value);
        }
    }
    let Some(unarchived_bytes) = unarchived_bytes else {
        bail!("/metrics has no {UNARCHIVED_BYTES_METRIC}");
    };
    Ok(ArchiveSample {
        adapter: adapter.unwrap_or_else(|| "unknown".into()),
        events_written,
        unarchived_bytes,
    })
}

/// `value` of `name="value"` inside `{…}`.
fn label_value(labels: &str, name: &str) -> Option<String> {
    let inner = labels.strip_prefix('{')?.strip_suffix('}')?;
    inner.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"').to_string())
    })
}

/// Poll until `U` is 0 or `timeout` passed; returns the last sample and how long it took
/// (`None` on timeout).
pub async fn wait_caught_up(
    target: &Target,
    timeout: Duration,
) -> anyhow::Result<(ArchiveSample, Option<Duration>)> {
    let started = Instant::now();
    loop {
        let current = sample(target).await?;
        if current.unarchived_bytes == 0 {
            return Ok((current, Some(started.elapsed())));
        }
        if started.elapsed() >= timeout {
            return Ok((current, None));
        }
        glommio::timer::sleep(CATCH_UP_POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_come_from_the_prometheus_page() {
        let page = "# TYPE starcite_archive_events_written_total counter\n\
                    starcite_archive_events_written_total{adapter=\"s3\"} 1200\n\
                    starcite_event_store_unarchived_bytes 4096\n\
                    starcite_event_store_unarchived_bytes_other 7\n";
        let parsed = parse_sample(page).expect("valid page");
        assert_eq!(
            parsed,
            ArchiveSample {
                adapter: "s3".into(),
                events_written: 1200,
                unarchived_bytes: 4096,
            }
        );
        assert!(parse_sample("starcite_up 1\n").is_err());
    }

    #[test]
    fn rates() {
        let outcome = ArchiveOutcome {
            adapter: "local".into(),
            written_in_window: 5000,
            backlog_events: 300,
            catch_up: Some(Duration::from_millis(1500)),
            catch_up_timeout: Duration::from_secs(60),
        };
        assert_eq!(
            outcome.window_events_per_second(Duration::from_secs(10)),
            500.0
        );
        assert_eq!(outcome.catch_up_events_per_second(), Some(200.0));
    }
}
