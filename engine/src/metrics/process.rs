//! Standard process metrics from `/proc/self`, and `starcite_build_info`.

use std::fmt::Write as _;

use super::render::header;
use crate::api::NodeMode;

/// Standard process metrics read from `/proc`; a metric whose source cannot be read is left out
/// rather than reported as a wrong value.
pub(super) fn render_process(out: &mut String, mode: NodeMode) {
    header(out, "starcite_build_info", "gauge", "Build information.");
    let _ = writeln!(
        out,
        "starcite_build_info{{version=\"{}\",mode=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        mode.as_str()
    );
    let process = ProcessStats::read();
    if let Some(bytes) = process.resident_memory_bytes {
        header(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {bytes}");
    }
    if let Some(seconds) = process.cpu_seconds {
        header(
            out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time in seconds.",
        );
        let _ = writeln!(out, "process_cpu_seconds_total {seconds}");
    }
    if let Some(count) = process.open_fds {
        header(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        let _ = writeln!(out, "process_open_fds {count}");
    }
    if let Some(seconds) = process.start_time_seconds {
        header(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch in seconds.",
        );
        let _ = writeln!(out, "process_start_time_seconds {seconds}");
    }
}

#[derive(Default)]
struct ProcessStats {
    resident_memory_bytes: Option<u64>,
    cpu_seconds: Option<f64>,
    open_fds: Option<u64>,
    start_time_seconds: Option<f64>,
}

impl ProcessStats {
    fn read() -> Self {
        let mut stats = ProcessStats::default();
        // SAFETY: sysconf has no preconditions; it only reads system configuration.
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // SAFETY: as above.
        let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
            let resident_pages = statm
                .split_whitespace()
                .nth(1)
                .and_then(|field| field.parse::<u64>().ok());
            if let (Some(pages), Ok(page_bytes)) = (resident_pages, u64::try_from(page_bytes)) {
                stats.resident_memory_bytes = Some(pages * page_bytes);
            }
        }
        if let (Ok(stat), true) = (
            std::fs::read_to_string("/proc/self/stat"),
            ticks_per_second > 0,
        ) {
            // The command name (field 2) may contain spaces; the fields after its closing
            // parenthesis are space-separated, starting with field 3 (state).
            if let Some(rest) = stat.rfind(')').map(|position| &stat[position + 1..]) {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let field = |number: usize| {
                    fields
                        .get(number - 3)
                        .and_then(|text| text.parse::<u64>().ok())
                };
                let ticks = ticks_per_second as f64;
                if let (Some(user), Some(system)) = (field(14), field(15)) {
                    stats.cpu_seconds = Some((user + system) as f64 / ticks);
                }
                if let (Some(start_ticks), Some(boot_seconds)) = (field(22), boot_time_seconds()) {
                    stats.start_time_seconds =
                        Some(boot_seconds as f64 + start_ticks as f64 / ticks);
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            stats.open_fds = Some(entries.count() as u64);
        }
        stats
    }
}

fn boot_time_seconds() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}
