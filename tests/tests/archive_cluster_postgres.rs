//! The `postgres` archive against a real PostgreSQL server on a cluster of three write nodes
//! and a router node (every node migrating at boot): catch-up and replay on every node, and a
//! 30 s outage of PostgreSQL under load (see `archive_support::cluster`).

mod archive_support;

use archive_support::cluster::{
    catch_up_and_replay, cluster_slot, outage_under_load, start_cluster,
};
use archive_support::services::PostgresServer;

fn postgres_env(postgres: &PostgresServer) -> Vec<(&'static str, String)> {
    vec![
        ("STARCITE_ARCHIVE_ADAPTER", "postgres".into()),
        (
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{}/postgres", postgres.port),
        ),
        ("MIGRATE_ON_BOOT", "true".into()),
    ]
}

/// 10,000 events in 100 sessions are archived to Postgres by the groups' leaders and evicted
/// on every replica; every node replays every session from cursor 0 through pages and tails,
/// also after all four nodes are killed and restarted.
#[test]
fn postgres_archive_on_a_cluster_catches_up_and_replays_on_every_node() {
    let _slot = cluster_slot();
    let postgres = PostgresServer::start("starcite-cluster-postgres-");
    let mut cluster = start_cluster(&postgres_env(&postgres));
    catch_up_and_replay(&mut cluster, "pg");
}

/// PostgreSQL stops for 30 s (immediate shutdown, connections cut) while six sessions take
/// appends through every node, with a 256 KiB budget: appends are accepted until the budget is
/// used, then refused with `429 event_store_backpressure` and `Retry-After`; once PostgreSQL is
/// back the archiver resumes by itself, the refusals stop, and every acknowledged event is
/// archived and readable on every node.
#[test]
fn postgres_outage_on_a_cluster_backpressures_and_loses_nothing() {
    let _slot = cluster_slot();
    let postgres = PostgresServer::start("starcite-cluster-postgres-");
    let mut env = postgres_env(&postgres);
    env.push(("STARCITE_EVENT_STORE_MAX_SIZE", "256K".into()));
    let cluster = start_cluster(&env);
    outage_under_load(
        &cluster,
        "pg-outage",
        || postgres.stop(),
        || postgres.resume(),
    );
}
