//! Failover under load (cluster.md §6): 16 clients append to 16 sessions spread over every group,
//! through every node that is up. Each cycle `kill -9`s the write node that leads the busiest
//! groups, checks that appends of every session resume on the survivors within 3 s, restarts the
//! node on its data and waits until it serves reads again. Afterwards every acknowledged event is
//! present exactly once, in order, on every node, and seqs have no gap and no duplicate.
//!
//! `CLUSTER_FAILOVER_CYCLES` sets the number of cycles (default 3; the soak run uses 20).
//! Per-cycle resume times are printed (`--nocapture`).

use std::time::{Duration, Instant};

use starcite_tests::appenders::{committed_commands, verify_replicas, Appenders};
use starcite_tests::cluster::{sessions_per_group, Cluster, CLUSTER_GROUPS};
use starcite_tests::wait_for;

/// Concurrent appending clients, one session each.
const CLIENTS: usize = 16;
/// The contract's bound on the pause of appends after a leader is lost.
const RESUME_WITHIN: Duration = Duration::from_secs(3);
/// How long a cycle waits for every session to resume before it gives up measuring.
const RESUME_WAIT: Duration = Duration::from_secs(30);
/// How long a restarted node may take to serve local reads of every session again.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Cycles without `CLUSTER_FAILOVER_CYCLES`.
const CYCLES_DEFAULT: usize = 3;

fn cycles() -> usize {
    std::env::var("CLUSTER_FAILOVER_CYCLES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(CYCLES_DEFAULT)
}

/// The write node whose members committed the most appends over one second: the leader of
/// the busiest groups.
fn busiest_leader(cluster: &Cluster) -> usize {
    let sample = || -> Vec<u64> {
        (0..3)
            .map(|node| committed_commands(&cluster.nodes[node], "append_event"))
            .collect()
    };
    let before = sample();
    std::thread::sleep(Duration::from_secs(1));
    let after = sample();
    let deltas: Vec<u64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.saturating_sub(*b))
        .collect();
    let (node, most) = deltas
        .iter()
        .enumerate()
        .max_by_key(|(_, delta)| **delta)
        .unwrap();
    assert!(*most > 0, "no write node committed an append: {deltas:?}");
    node
}

/// Waits until `node` serves a local read of every session that shows at least the seqs
/// acknowledged so far (a write node reads through its own member, cluster.md §5.2).
fn wait_caught_up(cluster: &Cluster, node: usize, appenders: &Appenders) {
    let acks = appenders.acks();
    for session in appenders.sessions() {
        let acked = acks
            .iter()
            .filter(|ack| ack.session == *session)
            .map(|ack| ack.seq)
            .max()
            .unwrap_or(0);
        wait_for(
            &format!("node {node} to read {session} up to seq {acked}"),
            REJOIN_TIMEOUT,
            || {
                let mut client = cluster.nodes[node].client();
                let response = client.get(&format!("/v1/sessions/{session}")).ok()?;
                (response.status == 200 && response.json()["last_seq"].as_u64()? >= acked)
                    .then_some(())
            },
        );
    }
}

#[test]
fn leader_loss_under_load_loses_nothing() {
    let cycles = cycles();
    let mut cluster = Cluster::start();
    let sessions = sessions_per_group("failover", CLIENTS, CLUSTER_GROUPS);
    for session in &sessions {
        cluster.router().create_session(session);
    }
    let targets = cluster.nodes.iter().map(|node| node.http_addr).collect();
    let appenders = Appenders::start(targets, &sessions);
    std::thread::sleep(Duration::from_secs(1));

    let mut slow_cycles = Vec::new();
    for cycle in 1..=cycles {
        let victim = busiest_leader(&cluster);
        appenders.set_down(victim, true);
        let killed_at = appenders.elapsed();
        cluster.nodes[victim].kill9();
        let resumed = appenders.wait_resumed(killed_at, RESUME_WAIT);
        let mut times: Vec<Duration> = resumed
            .values()
            .map(|time| time.unwrap_or(Duration::MAX))
            .collect();
        times.sort();
        let worst = times[times.len() - 1];
        let median = times[times.len() / 2];
        println!(
            "cycle {cycle}/{cycles}: killed node {victim}; appends of all {} sessions resumed \
             within {worst:?} (median {median:?})",
            times.len()
        );
        if worst > RESUME_WITHIN {
            let stalled: Vec<_> = resumed
                .iter()
                .filter(|(_, t)| t.is_none_or(|t| t > RESUME_WITHIN))
                .collect();
            slow_cycles.push(format!("cycle {cycle} (node {victim}): {stalled:?}"));
        }

        let restarted = Instant::now();
        cluster.nodes[victim].restart_live();
        appenders.set_down(victim, false);
        cluster.nodes[victim].wait_ready();
        wait_caught_up(&cluster, victim, &appenders);
        println!(
            "cycle {cycle}/{cycles}: node {victim} ready and caught up {:?} after its restart",
            restarted.elapsed()
        );
    }

    let report = appenders.stop();
    report.assert_only_201_or_503("");
    let readers: Vec<(&str, &starcite_tests::Server)> = cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(index, node)| (cluster.node_name(index), node))
        .collect();
    verify_replicas(&readers, &sessions, &report.acks);
    assert!(
        slow_cycles.is_empty(),
        "appends did not resume within {RESUME_WITHIN:?}: {slow_cycles:?}"
    );
}
