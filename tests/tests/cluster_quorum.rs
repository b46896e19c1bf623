//! Quorum loss and full restart: with two of three write nodes down appends answer 503 within
//! the contract's timeouts, never hang and never 201; one node back and appends succeed; after a
//! restart of every node nothing acknowledged is lost.

use std::time::{Duration, Instant};

use starcite_tests::cluster::Cluster;

#[test]
fn quorum_loss_answers_503_and_recovery_keeps_every_event() {
    let mut cluster = Cluster::start();
    cluster.router().create_session("ses-quorum");
    let mut acknowledged = 0u64;
    for seq in 1..=5 {
        let (status, body) = Cluster::append_retrying(
            cluster.router(),
            "ses-quorum",
            "p1",
            seq,
            Duration::from_secs(10),
        );
        assert_eq!(status, 201, "{body}");
        acknowledged = seq;
    }

    cluster.nodes[1].kill9();
    cluster.nodes[2].kill9();
    // Let the survivor's members notice (check-quorum) so both error kinds are exercised.
    for (attempt, node) in [0usize, 3, 0, 3].into_iter().enumerate() {
        let started = Instant::now();
        let response = cluster.nodes[node]
            .client()
            .post_json(
                "/v1/sessions/ses-quorum/append",
                &starcite_tests::event_body("p1", acknowledged + 1),
            )
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(
            response.status,
            503,
            "attempt {attempt}: {}",
            response.text()
        );
        let code = response.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            code == "raft_unavailable" || code == "raft_timeout",
            "attempt {attempt}: {code}"
        );
        assert!(
            elapsed < Duration::from_secs(6),
            "attempt {attempt} took {elapsed:?}"
        );
    }

    cluster.nodes[1].restart_live();
    let (status, body) = Cluster::append_retrying(
        cluster.router(),
        "ses-quorum",
        "p1",
        acknowledged + 1,
        Duration::from_secs(20),
    );
    assert_eq!(status, 201, "{body}");
    acknowledged += 1;
    cluster.nodes[2].restart_live();

    for node in cluster.nodes.iter_mut() {
        node.restart_live();
    }
    cluster.wait_ready();
    for (position, node) in cluster.nodes.iter().enumerate() {
        let events = Cluster::read_all(node, "ses-quorum");
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=acknowledged).collect::<Vec<_>>(),
            "node {position}"
        );
    }
}
