//! Negative controls: with a bug planted in the core, the simulator must find a violation
//! within the CI seed budget. Run one with, for example:
//!
//! `cargo test -p starcite-raft --features bug-double-vote --test negative_controls -- --nocapture`
//!
//! Without a `bug-*` feature this file has no tests.

mod sim;

#[allow(dead_code)]
fn assert_found(bug: &str) {
    let first = sim::runner::env_u64("SIM_SEED_START", 0);
    let count = sim::runner::env_u64("SIM_SEEDS", sim::runner::CI_SEED_COUNT);
    let summary = sim::runner::run_seeds(first, count);
    println!("{}", summary.line());
    match summary.failure {
        Some(failure) => println!("{bug}: found as expected\n{failure}"),
        None => panic!("{bug}: no violation found in {} seeds", summary.seeds_run),
    }
}

#[cfg(feature = "bug-double-vote")]
#[test]
fn finds_double_vote() {
    assert_found("bug-double-vote");
}

#[cfg(feature = "bug-commit-old-term")]
#[test]
fn finds_commit_old_term() {
    assert_found("bug-commit-old-term");
}

#[cfg(feature = "bug-ack-before-persist")]
#[test]
fn finds_ack_before_persist() {
    assert_found("bug-ack-before-persist");
}
