//! The `local` archive on a cluster of three write nodes sharing one archive directory
//! (`STARCITE_ARCHIVE_LOCAL_SHARED=true`) and a router node: see `archive_support::cluster`.

mod archive_support;

use archive_support::cluster::{catch_up_and_replay, cluster_slot, start_cluster};

/// 10,000 events in 100 sessions are archived by the groups' leaders and evicted on every
/// replica; every node replays every session from cursor 0 through pages and tails, also after
/// all four nodes are killed and restarted.
#[test]
fn local_archive_on_a_cluster_catches_up_and_replays_on_every_node() {
    let _slot = cluster_slot();
    let mut cluster = start_cluster(&[]);
    catch_up_and_replay(&mut cluster, "local");
}
