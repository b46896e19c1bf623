//! Drain and undrain in a cluster of three write nodes and a router (ops.md §3–§4, cluster.md
//! §7, §7.1): the drained node hands every leadership over, leaves `ready_nodes` and answers
//! `503 draining`; after an undrain it becomes ready again and the leader balance gives it its
//! share back; drain and undrain of another node are forwarded over the peer transport; a
//! writer appending through the router meanwhile sees only `201`s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use starcite_tests::cluster::{session_group, Cluster, WRITE_NODES};
use starcite_tests::server::Server;
use starcite_tests::{creator, event_body, wait_for};

/// Groups of the test cluster: ⌈16/3⌉ + ⌈16/10⌉ = 8 is the most one node may lead after the
/// balance.
const GROUPS: u32 = 16;
const LEADERS_MAX: u64 = 6 + 2;
/// The balance MUST converge within 30 s of an undrain; the margin covers a loaded machine.
const BALANCE_DEADLINE: Duration = Duration::from_secs(45);

fn status(node: &Server) -> serde_json::Value {
    let response = node.ops_client().get("/ops/status").unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

fn leader_groups(cluster: &Cluster) -> Vec<u64> {
    cluster.nodes[..3]
        .iter()
        .map(|node| status(node)["leader_groups"].as_u64().unwrap())
        .collect()
}

fn ops_ok(node: &Server, arguments: &[&str]) -> String {
    let run = node.ops(arguments);
    assert_eq!(
        run.code,
        Some(0),
        "ops {arguments:?}: {} {}",
        run.stdout,
        run.stderr
    );
    run.stdout
}

/// Appends through the router in a loop until stopped; returns every non-201 answer.
fn start_writer(cluster: &Cluster, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<String>> {
    let router_addr = cluster.router().http_addr;
    // One session per group, so that every leadership change is crossed.
    let mut sessions = Vec::new();
    let mut index = 0;
    let mut covered = vec![false; GROUPS as usize];
    while covered.iter().any(|done| !done) {
        let id = format!("drain-writer-{index}");
        index += 1;
        let group = session_group(&id, GROUPS) as usize;
        if !covered[group] {
            covered[group] = true;
            sessions.push(id);
        }
    }
    let mut client = starcite_tests::HttpClient::connect(router_addr).unwrap();
    for id in &sessions {
        let body = serde_json::json!({"id": id, "creator_principal": creator()});
        let response = client.post_json("/v1/sessions", &body).unwrap();
        assert_eq!(response.status, 201, "{}", response.text());
    }
    let failures = Arc::new(Mutex::new(Vec::new()));
    thread::spawn(move || {
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            seq += 1;
            for id in &sessions {
                let path = format!("/v1/sessions/{id}/append");
                let started = Instant::now();
                let response = client.post_json(&path, &event_body("writer", seq));
                match response {
                    Ok(response) if response.status == 201 => {}
                    Ok(response) => failures.lock().unwrap().push(format!(
                        "{id} seq {seq}: {} after {:?}: {}",
                        response.status,
                        started.elapsed(),
                        response.text()
                    )),
                    Err(error) => {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{id} seq {seq}: {error}"));
                        client = starcite_tests::HttpClient::connect(router_addr).unwrap();
                    }
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        let failures = failures.lock().unwrap().clone();
        failures
    })
}

/// Drains `target` through `via`'s ops API and checks the drained state.
fn drain(cluster: &Cluster, via: usize, target: usize) {
    let name = WRITE_NODES[target];
    let out = ops_ok(&cluster.nodes[via], &["drain", name]);
    assert_eq!(out.trim(), format!("node {name} marked draining"));
    let node = &cluster.nodes[target];
    let out = ops_ok(node, &["wait-drained", "30000"]);
    assert_eq!(out.trim(), "local_drained=true");
    let status = status(node);
    assert_eq!(status["leader_groups"], 0, "{status}");
    assert_eq!(status["drain"]["reason"], "operator");
    for other in &cluster.nodes {
        let ready = other.ops(&["ready-nodes"]);
        let listed = ready.value("ready_nodes").unwrap_or_default().to_string();
        assert!(!listed.split(',').any(|n| n == name), "{listed}");
    }
    let response = node.client().get("/health/ready").unwrap();
    assert_eq!(response.status, 503);
    assert_eq!(response.json()["reason"], "draining");
}

/// Undrains `target` through `via`'s ops API; it becomes ready and takes back its share.
fn undrain(cluster: &Cluster, via: usize, target: usize) {
    let name = WRITE_NODES[target];
    let out = ops_ok(&cluster.nodes[via], &["undrain", name]);
    assert_eq!(out.trim(), format!("node {name} marked ready"));
    let undrained_at = Instant::now();
    let node = &cluster.nodes[target];
    let out = ops_ok(node, &["wait-ready", "60000"]);
    assert_eq!(out.trim(), "local_ready=true");
    let response = node.client().get("/health/ready").unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let counts = wait_for(
        "the leader balance after an undrain",
        BALANCE_DEADLINE,
        || {
            let counts = leader_groups(cluster);
            let balanced = counts.iter().all(|count| *count <= LEADERS_MAX) && counts[target] > 0;
            balanced.then_some(counts)
        },
    );
    eprintln!(
        "leaders per node {counts:?} {:?} after the undrain of {name}",
        undrained_at.elapsed()
    );
}

#[test]
fn drain_hands_leadership_over_and_undrain_rebalances() {
    let cluster =
        Cluster::start_with(|options| options.with("STARCITE_NUM_GROUPS", &GROUPS.to_string()));
    cluster.wait_writable(3, GROUPS);
    for node in &cluster.nodes[..3] {
        ops_ok(node, &["wait-ready", "60000"]);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = start_writer(&cluster, stop.clone());

    // On the node itself.
    drain(&cluster, 0, 0);
    undrain(&cluster, 0, 0);
    // Forwarded: n3 drained and undrained through n2's ops API.
    drain(&cluster, 1, 2);
    let status = status(&cluster.nodes[1]);
    assert_eq!(
        status["observer"]["node_statuses"][WRITE_NODES[2]]["status"], "draining",
        "{status}"
    );
    undrain(&cluster, 1, 2);

    stop.store(true, Ordering::Relaxed);
    let failures = writer.join().unwrap();
    assert!(failures.is_empty(), "non-201 appends: {failures:#?}");
}

/// One write node of three started alone: its ops listener and `/health/ready` answer
/// `503 raft_sync` while no quorum is reachable, and `wait-ready` times out with exit 1.
#[test]
fn a_node_without_quorum_answers_raft_sync() {
    use starcite_tests::server::{free_port, ServerOptions};
    let cluster_nodes = WRITE_NODES
        .iter()
        .map(|name| format!("{name}:{}", free_port()))
        .collect::<Vec<_>>();
    let peer_port = cluster_nodes[0].rsplit(':').next().unwrap().to_string();
    let mut options = ServerOptions::default()
        .with("NODE_NAME", WRITE_NODES[0])
        .with("CLUSTER_NODES", &cluster_nodes.join(","))
        .with("STARCITE_WRITE_NODE_IDS", &WRITE_NODES.join(","))
        .with("STARCITE_PEER_PORT", &peer_port)
        .with("STARCITE_PEER_BIND_ADDR", "127.0.0.1")
        .with("STARCITE_NUM_GROUPS", "4")
        .with("STARCITE_ARCHIVE_LOCAL_SHARED", "true");
    options.wait_ready = false;
    let node = Server::start_with(options);
    let body = wait_for(
        "/health/ready on the ops listener",
        Duration::from_secs(30),
        || {
            let mut client = starcite_tests::HttpClient::connect(node.ops_addr).ok()?;
            let response = client.get("/health/ready").ok()?;
            let body = response.json();
            (response.status == 503 && body["detail"]["probe_result"] == "quorum_unreachable")
                .then_some(body)
        },
    );
    assert_eq!(body["reason"], "raft_sync", "{body}");
    assert_eq!(body["detail"]["required_quorum"], 2, "{body}");
    assert_eq!(body["detail"]["reachable_replicas"], 1, "{body}");
    let response = node.client().get("/health/ready").unwrap();
    assert_eq!(response.status, 503);
    assert_eq!(response.json()["reason"], "raft_sync");
    let run = node.ops(&["wait-ready", "1000"]);
    assert_eq!(run.code, Some(1), "{} {}", run.stdout, run.stderr);
    assert_eq!(
        run.stderr.trim(),
        "timeout waiting for local_ready after 1000ms"
    );
    let status = status(&node);
    assert_eq!(status["local_ready"], false);
    assert_eq!(status["groups_without_leader"], 4, "{status}");
}
