//! A fixed-bucket latency histogram on atomics.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of every latency histogram, in seconds, as rendered in `le`.
pub(super) const BUCKET_BOUNDS: [(f64, &str); 14] = [
    (0.0005, "0.0005"),
    (0.001, "0.001"),
    (0.0025, "0.0025"),
    (0.005, "0.005"),
    (0.01, "0.01"),
    (0.025, "0.025"),
    (0.05, "0.05"),
    (0.1, "0.1"),
    (0.25, "0.25"),
    (0.5, "0.5"),
    (1.0, "1"),
    (2.5, "2.5"),
    (5.0, "5"),
    (10.0, "10"),
];

/// A latency histogram: per-bucket counts (not cumulative; rendering accumulates), a count and
/// a sum kept in nanoseconds so it fits an atomic integer.
pub(super) struct Histogram {
    buckets: [AtomicU64; BUCKET_BOUNDS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub(super) const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKET_BOUNDS.len()],
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub(super) fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        if let Some(slot) = BUCKET_BOUNDS
            .iter()
            .position(|(bound, _)| seconds <= *bound)
        {
            self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanoseconds = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(nanoseconds, Ordering::Relaxed);
    }

    /// Append the `_bucket`, `_sum` and `_count` lines; `labels` is `a="b",` style (possibly
    /// empty) and is prefixed to `le`.
    pub(super) fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0u64;
        for (slot, (_, bound_text)) in BUCKET_BOUNDS.iter().enumerate() {
            cumulative += self.buckets[slot].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}le=\"{bound_text}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let sum_seconds = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let trimmed = labels.trim_end_matches(',');
        if trimmed.is_empty() {
            let _ = writeln!(out, "{name}_sum {sum_seconds}");
            let _ = writeln!(out, "{name}_count {count}");
        } else {
            let _ = writeln!(out, "{name}_sum{{{trimmed}}} {sum_seconds}");
            let _ = writeln!(out, "{name}_count{{{trimmed}}} {count}");
        }
    }
}
