//! The single-node acceptance scenarios against every node of a cluster (3 write nodes, RF 3,
//! and 1 router node): the worked examples of http-api.md §13 with the tail example of tail.md
//! §8, concurrent tails from different cursors, a cursor beyond `last_seq`, and the tail of a
//! missing session. Each node gets its own session ids (and tenant), so the runs share one
//! cluster without seeing each other's data. Also the Raft metrics of metrics.md on a cluster.

use std::time::Duration;

use starcite_tests::cluster::{Cluster, CLUSTER_GROUPS};
use starcite_tests::scenarios::{self, ScenarioRun};
use starcite_tests::{wait_for, Server};

/// Labels of `Cluster::nodes`, in order (write nodes, then the router).
const NODE_LABELS: [&str; 4] = ["n1", "n2", "n3", "r1"];

#[test]
fn single_node_scenarios_pass_against_every_node() {
    let cluster = Cluster::start();
    for (node, label) in cluster.nodes.iter().zip(NODE_LABELS) {
        eprintln!("scenarios through {label}");
        scenarios::worked_examples(node, &ScenarioRun::shared(label));
        scenarios::concurrent_tails_from_different_cursors(node, &format!("{label}-tail-1"));
        scenarios::cursor_beyond_last_seq_waits_for_new_events(node, &format!("{label}-tail-2"));
        scenarios::tail_of_missing_session_is_404(node, &format!("{label}-none"));
    }
    // The sessions written through one node read the same through every other.
    for label in NODE_LABELS {
        let session = format!("{label}-tail-1");
        let reference = Cluster::read_all(&cluster.nodes[0], &session);
        assert_eq!(reference.len(), 400, "{session}");
        for node in &cluster.nodes[1..] {
            assert_eq!(Cluster::read_all(node, &session), reference, "{session}");
        }
    }
    assert_raft_metrics(&cluster);
}

/// A sample of one metric, by its full series name (`name{labels}`).
fn metric(server: &Server, series: &str) -> u64 {
    let text = server.client().get("/metrics").unwrap().text();
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().ok())?
        })
        .unwrap_or_else(|| panic!("metrics lack {series}:\n{text}")) as u64
}

/// Role counts `[leader, follower, candidate, down]` of `starcite_raft_groups` on `server`.
fn role_counts(server: &Server) -> [u64; 4] {
    ["leader", "follower", "candidate", "down"]
        .map(|role| metric(server, &format!("starcite_raft_groups{{role=\"{role}\"}}")))
}

/// metrics.md on a settled cluster with RF 3: every write node hosts a member of each group,
/// each group has exactly one leader across the nodes, every member has seen a leader and the
/// same highest term; a router node hosts no members.
fn assert_raft_metrics(cluster: &Cluster) {
    let groups = u64::from(CLUSTER_GROUPS);
    let write_nodes = &cluster.nodes[..3];
    let settled = wait_for(
        "settled raft metrics on every write node",
        Duration::from_secs(30),
        || {
            let counts: Vec<[u64; 4]> = write_nodes.iter().map(role_counts).collect();
            let terms: Vec<u64> = write_nodes
                .iter()
                .map(|node| metric(node, "starcite_raft_term_max"))
                .collect();
            let leaders: u64 = counts.iter().map(|count| count[0]).sum();
            let complete = counts
                .iter()
                .all(|count| count[0] + count[1] == groups && count[2] == 0 && count[3] == 0);
            let same_term = terms.iter().all(|term| *term == terms[0] && *term >= 1);
            (complete && leaders == groups && same_term).then_some((counts, terms))
        },
    );
    eprintln!(
        "raft roles by write node: {:?}, term max {:?}",
        settled.0, settled.1
    );
    for node in write_nodes {
        // Every member learnt of its group's first leader at least.
        let changes = metric(node, "starcite_raft_leader_changes_total");
        assert!(changes >= groups, "leader changes {changes} < {groups}");
    }
    let router = cluster.router();
    assert_eq!(role_counts(router), [0, 0, 0, 0]);
    assert_eq!(metric(router, "starcite_raft_term_max"), 0);
    assert_eq!(metric(router, "starcite_raft_leader_changes_total"), 0);
}
