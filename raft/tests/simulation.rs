//! Seeded simulation of multi-Raft clusters under network faults, crashes and client load.
//!
//! - `cargo test -p starcite-raft --test simulation -- --nocapture` runs the CI budget of seeds
//!   (`SIM_SEEDS`, default 10,000, starting at `SIM_SEED_START`, default 0) and prints
//!   `simulated N seeds, M steps, K crashes, P partitions`.
//! - A failure prints its seed and the replay command:
//!   `SIM_SEED=1234 cargo test -p starcite-raft --test simulation -- --nocapture replay`,
//!   which runs that one seed and prints its whole trace.
//! - Soak: `SIM_SEEDS=1000000 SIM_SEED_START=$RANDOM cargo test --release -p starcite-raft
//!   --test simulation -- --nocapture seeds`.

mod sim;

use sim::cluster::run;
use sim::runner::{env_u64, run_seeds, CI_SEED_COUNT};

#[test]
fn seeds() {
    let first = env_u64("SIM_SEED_START", 0);
    let count = env_u64("SIM_SEEDS", CI_SEED_COUNT);
    let summary = run_seeds(first, count);
    println!("{}", summary.line());
    if let Some(failure) = summary.failure {
        panic!("{failure}");
    }
}

/// Runs the seed in `SIM_SEED` alone and prints its trace; does nothing without `SIM_SEED`.
#[test]
fn replay() {
    let Ok(seed) = std::env::var("SIM_SEED") else {
        return;
    };
    let Ok(seed) = seed.trim().parse::<u64>() else {
        panic!("SIM_SEED must be a number, got {seed:?}");
    };
    match run(seed, false, true) {
        Ok(report) => println!(
            "seed {seed} passed: {:?}, trace hash {:#018x}",
            report.stats, report.trace_hash
        ),
        Err(failure) => panic!("{failure}"),
    }
}

/// The same seed twice gives byte-identical traces.
#[test]
fn same_seed_same_trace() {
    for seed in 0..4 {
        let first = run(seed, true, false);
        let second = run(seed, true, false);
        match (first, second) {
            (Ok(first), Ok(second)) => {
                assert_eq!(first.trace_hash, second.trace_hash, "seed {seed}");
                assert_eq!(first.trace_text, second.trace_text, "seed {seed}");
                assert!(first.trace_text.is_some_and(|text| !text.is_empty()));
            }
            (first, second) => {
                let describe = |result: Result<_, sim::cluster::Failure>| {
                    result
                        .map(|report: sim::cluster::Report| report.trace_hash)
                        .map_err(|failure| failure.to_string())
                };
                assert_eq!(describe(first), describe(second), "seed {seed}");
            }
        }
    }
}
