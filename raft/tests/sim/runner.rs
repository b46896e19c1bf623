//! Runs many seeds on all cores and sums their counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::cluster::{run, Failure, Stats};

/// Seeds CI runs by default (overridden by `SIM_SEEDS`).
pub const CI_SEED_COUNT: u64 = 10_000;

/// The result of running a range of seeds.
#[derive(Debug)]
pub struct Summary {
    /// Seeds that ran to completion or failure.
    pub seeds_run: u64,
    /// Summed counters of the passing seeds.
    pub stats: Stats,
    /// The lowest failing seed found, if any.
    pub failure: Option<Failure>,
    /// Wall-clock time.
    pub elapsed: Duration,
}

impl Summary {
    /// The one-line summary printed after a run.
    pub fn line(&self) -> String {
        let seconds = self.elapsed.as_secs_f64();
        format!(
            "simulated {} seeds, {} steps, {} crashes, {} partitions ({} proposals, {} acknowledged, {} reads, {} transfers) in {seconds:.1}s, {:.0} seeds/s",
            self.seeds_run,
            self.stats.steps,
            self.stats.crashes,
            self.stats.partitions,
            self.stats.proposals,
            self.stats.acknowledged,
            self.stats.reads,
            self.stats.transfers,
            self.seeds_run as f64 / seconds.max(1e-9),
        )
    }
}

/// Reads a `u64` environment variable, or `default` when it is unset or not a number.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(default)
}

/// Runs seeds `first..first + count` on every core, stopping early after the first failure.
pub fn run_seeds(first: u64, count: u64) -> Summary {
    let started = Instant::now();
    let next = AtomicU64::new(first);
    let end = first.saturating_add(count);
    let stop = AtomicBool::new(false);
    let seeds_run = AtomicU64::new(0);
    let stats = Mutex::new(Stats::default());
    let failure: Mutex<Option<Failure>> = Mutex::new(None);
    let threads = std::thread::available_parallelism().map_or(2, |count| count.get());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut local = Stats::default();
                while !stop.load(Ordering::Relaxed) {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    seeds_run.fetch_add(1, Ordering::Relaxed);
                    match run(seed, false, false) {
                        Ok(report) => local.add(&report.stats),
                        Err(found) => {
                            stop.store(true, Ordering::Relaxed);
                            let mut slot =
                                failure.lock().unwrap_or_else(|poison| poison.into_inner());
                            if slot.as_ref().is_none_or(|known| found.seed < known.seed) {
                                *slot = Some(found);
                            }
                        }
                    }
                }
                stats
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .add(&local);
            });
        }
    });
    Summary {
        seeds_run: seeds_run.into_inner(),
        stats: stats
            .into_inner()
            .unwrap_or_else(|poison| poison.into_inner()),
        failure: failure
            .into_inner()
            .unwrap_or_else(|poison| poison.into_inner()),
        elapsed: started.elapsed(),
    }
}
