//! `starcite bench`: the bundled load generator. Closed loop, one request in flight per
//! connection, durable appends (`POST /v1/sessions/<id>/append`, success = 201), measured like the
//! peer benchmark (peers/README.md): only requests completing inside the window count, latency is
//! send → full response parsed.

mod archive;
mod client;
mod fsync_floor;
mod load;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};

/// Most connections one run opens.
const CONNECTIONS_MAX: u32 = 10_000;
/// Largest payload string.
const PAYLOAD_BYTES_MAX: usize = 8 * 1024 * 1024;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Measure the disk's raw durable-write floor (4 KiB write + fdatasync) and exit.
    FsyncFloor(FsyncFloorArgs),
}

#[derive(Args, Debug)]
struct FsyncFloorArgs {
    /// Directory on the disk to measure (e.g. the node's STARCITE_DATA_DIR).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Measured samples (a warm-up of up to 200 more is discarded).
    #[arg(long, default_value_t = 2000)]
    samples: u64,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Base URL of the node (http only).
    #[arg(long, default_value = "http://127.0.0.1:4000")]
    url: String,
    /// Concurrent connections, each with one request in flight.
    #[arg(short = 'c', long, default_value_t = 1)]
    connections: u32,
    /// Measured window (e.g. 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Load before the window that is not recorded.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    warmup: Duration,
    /// Length of the `payload.data` string of each event.
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// Sessions appended to (default: one per connection); connection i uses session i mod N.
    #[arg(long)]
    sessions: Option<u32>,
    /// Bearer token for jwt mode.
    #[arg(long, env = "STARCITE_BENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Also measure the fdatasync floor in this directory before the load, and report both.
    #[arg(long, value_name = "DIR")]
    fsync_floor: Option<PathBuf>,
    /// Samples of the fsync floor measurement.
    #[arg(long, default_value_t = 2000)]
    fsync_samples: u64,
    /// Also report the archive's progress from the node's /metrics: events stored per second in
    /// the window, the backlog left by the load and how long the archiver takes to drain it.
    #[arg(long)]
    archive: bool,
    /// With --archive: how long to wait for the archive to catch up after the load.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    archive_catch_up_timeout: Duration,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
}

/// `10s`, `500ms`, `2m`, `1h`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits_end = text
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(text.len());
    let amount: u64 = text[..digits_end]
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (examples: 10s, 500ms, 2m)"))?;
    let milliseconds = match &text[digits_end..] {
        "ms" => Some(amount),
        "" | "s" => amount.checked_mul(1000),
        "m" => amount.checked_mul(60_000),
        "h" => amount.checked_mul(3_600_000),
        _ => None,
    };
    milliseconds
        .map(Duration::from_millis)
        .ok_or_else(|| format!("invalid duration {text:?} (examples: 10s, 500ms, 2m)"))
}

pub fn run(arguments: BenchArgs) -> anyhow::Result<()> {
    if let Some(BenchCommand::FsyncFloor(floor)) = arguments.command {
        let measured = fsync_floor::measure(&floor.dir, floor.samples.max(1))?;
        report::print_fsync_floor(&measured, floor.output);
        return Ok(());
    }
    let load = arguments.load;
    if load.connections == 0 || load.connections > CONNECTIONS_MAX {
        bail!("--connections must be between 1 and {CONNECTIONS_MAX}");
    }
    if load.payload_bytes > PAYLOAD_BYTES_MAX {
        bail!("--payload-bytes must be at most {PAYLOAD_BYTES_MAX}");
    }
    if load.duration.is_zero() {
        bail!("--duration must be positive");
    }
    let sessions = load.sessions.unwrap_or(load.connections);
    if sessions == 0 {
        bail!("--sessions must be positive");
    }
    let floor = match &load.fsync_floor {
        Some(directory) => Some(
            fsync_floor::measure(directory, load.fsync_samples.max(1))
                .context("measure fsync floor")?,
        ),
        None => None,
    };
    let plan = load::Plan {
        url: load.url.clone(),
        connections: load.connections,
        sessions,
        payload_bytes: load.payload_bytes,
        warmup: load.warmup,
        duration: load.duration,
        token: load.token.clone(),
        archive_catch_up_timeout: load.archive.then_some(load.archive_catch_up_timeout),
    };
    let outcome = load::run(&plan)?;
    report::print_load(&plan, &outcome, floor.as_ref(), load.output);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("1d").is_err());
    }
}
