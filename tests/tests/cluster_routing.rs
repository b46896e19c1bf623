//! Three write nodes and a router node as real processes: a session created and appended to
//! through different nodes reads and tails identically, strictly contiguous, on every node.

use std::time::Duration;

use starcite_tests::cluster::Cluster;
use starcite_tests::{creator, event_body, TailClient};

const EVENTS: u64 = 30;

#[test]
fn any_node_writes_and_every_node_reads_and_tails() {
    let cluster = Cluster::start();
    let body = serde_json::json!({"id": "ses-routed", "creator_principal": creator()});
    let created = cluster.nodes[0]
        .client()
        .post_json("/v1/sessions", &body)
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    // The same id through another node is the same session.
    let again = cluster
        .router()
        .client()
        .post_json("/v1/sessions", &body)
        .unwrap();
    assert_eq!(again.status, 409, "{}", again.text());

    let mut tails: Vec<TailClient> = cluster
        .nodes
        .iter()
        .map(|node| TailClient::connect(node.http_addr, "ses-routed", 0))
        .collect();
    for seq in 1..=EVENTS {
        let node = &cluster.nodes[(seq as usize) % cluster.nodes.len()];
        let response = node
            .client()
            .post_json("/v1/sessions/ses-routed/append", &event_body("p1", seq))
            .unwrap();
        assert_eq!(response.status, 201, "append {seq}: {}", response.text());
        assert_eq!(response.json()["seq"], seq);
    }
    for (position, tail) in tails.iter_mut().enumerate() {
        let events = tail.read_until(EVENTS, Duration::from_secs(10));
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=EVENTS).collect::<Vec<_>>(),
            "tail on node {position}"
        );
    }
    for (position, node) in cluster.nodes.iter().enumerate() {
        let events = Cluster::read_all(node, "ses-routed");
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=EVENTS).collect::<Vec<_>>(),
            "read on node {position}"
        );
        let session = node.client().get("/v1/sessions/ses-routed").unwrap();
        assert_eq!(session.status, 200, "{}", session.text());
        assert_eq!(session.json()["last_seq"], EVENTS);
        let listed = node.client().get("/v1/sessions?limit=1000").unwrap();
        assert_eq!(listed.status, 200, "{}", listed.text());
        assert!(
            listed.text().contains("\"ses-routed\""),
            "list on node {position}"
        );
    }
    // A tail that connects late on the router catches up and then goes live.
    let mut late = TailClient::connect(cluster.router().http_addr, "ses-routed", EVENTS - 2);
    let response = cluster.nodes[1]
        .client()
        .post_json(
            "/v1/sessions/ses-routed/append",
            &event_body("p1", EVENTS + 1),
        )
        .unwrap();
    assert_eq!(response.status, 201, "{}", response.text());
    let seqs: Vec<u64> = late
        .read_until(EVENTS + 1, Duration::from_secs(10))
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![EVENTS - 1, EVENTS, EVENTS + 1]);
}
