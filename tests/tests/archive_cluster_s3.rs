//! The `s3` archive against a real `s3s-fs` on a cluster of three write nodes and a router
//! node: catch-up and replay on every node, and a 30 s outage of `s3s-fs` under load (see
//! `archive_support::cluster`).

mod archive_support;

use archive_support::cluster::{
    catch_up_and_replay, cluster_slot, outage_under_load, start_cluster,
};
use archive_support::S3Service;

/// 10,000 events in 100 sessions are archived to S3 by the groups' leaders and evicted on
/// every replica; every node replays every session from cursor 0 through pages and tails, also
/// after all four nodes are killed and restarted.
#[test]
fn s3_archive_on_a_cluster_catches_up_and_replays_on_every_node() {
    let _slot = cluster_slot();
    let s3 = S3Service::start();
    let mut cluster = start_cluster(&s3.node_env());
    catch_up_and_replay(&mut cluster, "s3");
}

/// `s3s-fs` stops for 30 s while six sessions take appends through every node, with a 256 KiB
/// budget: appends are accepted until the budget is used, then refused with `429
/// event_store_backpressure` and `Retry-After`; once `s3s-fs` is back the archiver resumes by
/// itself, the refusals stop, and every acknowledged event is archived and readable on every
/// node.
#[test]
fn s3_outage_on_a_cluster_backpressures_and_loses_nothing() {
    let _slot = cluster_slot();
    let s3 = std::sync::Arc::new(std::sync::Mutex::new(S3Service::start()));
    let mut env = s3.lock().unwrap().node_env();
    env.push(("STARCITE_EVENT_STORE_MAX_SIZE", "256K".into()));
    let cluster = start_cluster(&env);
    outage_under_load(
        &cluster,
        "s3-outage",
        || s3.lock().unwrap().stop(),
        || s3.lock().unwrap().resume(),
    );
}
