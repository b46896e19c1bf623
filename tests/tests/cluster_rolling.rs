//! Rolling restart under load (cluster.md §6, ops.md §6–§7): 16 clients append to 16 sessions
//! spread over every group, through all four nodes (re-sending a `503` or a broken connection with
//! the same `producer_seq`), while each write node in turn is stopped, started again on the same
//! data dir, and waited for until it is ready and serves local reads up to the acknowledged seqs;
//! only then the next one. Every answer other than `201` must be a `503`; afterwards nothing
//! acknowledged is lost, seqs are gapless and every node reads the same events.
//!
//! One test stops nodes with SIGTERM (graceful: exit code 0), the other with `kill -9`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use starcite_tests::appenders::{verify_replicas, Appenders};
use starcite_tests::cluster::{sessions_per_group, Cluster, CLUSTER_GROUPS};
use starcite_tests::{wait_for, Server};

/// Concurrent appending clients, one session each.
const CLIENTS: usize = 16;
/// How long a restarted node may take to serve local reads of every session again.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Load before the first restart and between restarts.
const LOAD_PAUSE: Duration = Duration::from_secs(1);

/// The two tests run one after the other: two clusters under load at once would overload a
/// small CI machine and blur the timings.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, Debug)]
enum Stop {
    Sigterm,
    Kill9,
}

/// Waits until `node` serves a local read of every session showing at least the seqs
/// acknowledged so far (a write node reads through its own member, cluster.md §5.2).
fn wait_caught_up(node: &Server, name: &str, appenders: &Appenders) {
    let acks = appenders.acks();
    for session in appenders.sessions() {
        let acked = acks
            .iter()
            .filter(|ack| ack.session == *session)
            .map(|ack| ack.seq)
            .max()
            .unwrap_or(0);
        wait_for(
            &format!("{name} to read {session} up to seq {acked}"),
            REJOIN_TIMEOUT,
            || {
                let mut client = node.client();
                let response = client.get(&format!("/v1/sessions/{session}")).ok()?;
                (response.status == 200 && response.json()["last_seq"].as_u64()? >= acked)
                    .then_some(())
            },
        );
    }
}

fn rolling_restart(stop: Stop) {
    let _serial = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut cluster = Cluster::start();
    let prefix = format!("rolling-{stop:?}").to_lowercase();
    let sessions = sessions_per_group(&prefix, CLIENTS, CLUSTER_GROUPS);
    for session in &sessions {
        cluster.router().create_session(session);
    }
    let targets = cluster.nodes.iter().map(|node| node.http_addr).collect();
    let appenders = Appenders::start(targets, &sessions);
    std::thread::sleep(LOAD_PAUSE);

    for position in 0..3 {
        let name = cluster.node_name(position);
        let acks_before = appenders.acks().len();
        let stopping = Instant::now();
        match stop {
            Stop::Sigterm => {
                let status = cluster.nodes[position].terminate();
                assert!(
                    status.is_some_and(|status| status.success()),
                    "{name} exited with {status:?} on SIGTERM; log:\n{}",
                    cluster.nodes[position].log()
                );
            }
            Stop::Kill9 => cluster.nodes[position].kill9(),
        }
        let stopped_in = stopping.elapsed();
        let starting = Instant::now();
        cluster.nodes[position].restart_live();
        let live_in = starting.elapsed();
        cluster.nodes[position].wait_ready();
        let ready_in = starting.elapsed();
        wait_caught_up(&cluster.nodes[position], name, &appenders);
        println!(
            "{stop:?} {name}: stopped in {stopped_in:?}; after start live in {live_in:?}, ready in \
             {ready_in:?}, caught up in {:?}; {} appends acknowledged meanwhile",
            starting.elapsed(),
            appenders.acks().len() - acks_before
        );
        std::thread::sleep(LOAD_PAUSE);
    }

    let report = appenders.stop();
    report.assert_only_201_or_503(&format!("{stop:?}: "));
    let readers: Vec<(&str, &Server)> = cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(index, node)| (cluster.node_name(index), node))
        .collect();
    verify_replicas(&readers, &sessions, &report.acks);
}

#[test]
fn rolling_sigterm_restart_under_load_loses_nothing() {
    rolling_restart(Stop::Sigterm);
}

#[test]
fn rolling_kill9_restart_under_load_loses_nothing() {
    rolling_restart(Stop::Kill9);
}
