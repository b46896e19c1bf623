//! A cluster of real `starcite serve` processes on loopback: three write nodes and one router
//! node, each with its own data directory and ports, wired by `CLUSTER_NODES`.

use std::time::Duration;

use crate::server::{free_port, Server, ServerOptions};
use crate::{creator, event_body, wait_for};

/// Names of the write nodes (`NODE_NAME`).
pub const WRITE_NODES: [&str; 3] = ["n1@127.0.0.1", "n2@127.0.0.1", "n3@127.0.0.1"];
/// Name of the router node.
pub const ROUTER_NODE: &str = "r1@127.0.0.1";
/// Groups per cluster: few, so that startup and elections are quick.
pub const CLUSTER_GROUPS: u32 = 8;
/// How long a cluster may take to elect every group's leader.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Three write nodes (`nodes[0..3]`) and one router node (`nodes[3]`).
pub struct Cluster {
    /// Every node, write nodes first.
    pub nodes: Vec<Server>,
}

impl Cluster {
    /// Starts the four nodes and waits until each answers `/health/ready` = 200 and a write
    /// succeeds through the router in every group.
    pub fn start() -> Cluster {
        Cluster::start_with(|options| options)
    }

    /// [`Cluster::start`] with every node's options passed through `configure` last (for
    /// settings such as another archive adapter).
    pub fn start_with(configure: impl Fn(ServerOptions) -> ServerOptions) -> Cluster {
        let names: Vec<&str> = WRITE_NODES.iter().copied().chain([ROUTER_NODE]).collect();
        let nodes = node_options(&names, CLUSTER_GROUPS)
            .into_iter()
            .map(|options| Server::start_with(configure(options)))
            .collect();
        let mut cluster = Cluster { nodes };
        cluster.wait_ready();
        cluster
    }

    /// Waits until every running node is live and every group accepts writes.
    pub fn wait_ready(&mut self) {
        for node in self.nodes.iter_mut() {
            node.wait_live();
        }
        // A session per group proves that every group has a leader reachable from the router.
        self.wait_writable(3, CLUSTER_GROUPS);
    }

    /// The router node.
    pub fn router(&self) -> &Server {
        &self.nodes[3]
    }

    /// Three write nodes only (`WRITE_NODES`, RF 3, `groups` groups, no router node), started
    /// together; waits until each is live and every group accepts a write through node 0.
    pub fn start_write_nodes(groups: u32) -> Cluster {
        let nodes = node_options(&WRITE_NODES, groups)
            .into_iter()
            .map(|options| {
                Server::start_with(options.with("STARCITE_WRITE_REPLICATION_FACTOR", "3"))
            })
            .collect();
        let cluster = Cluster { nodes };
        for node in &cluster.nodes {
            wait_for("/health/live = 200", CLUSTER_READY_TIMEOUT, || {
                let mut client = crate::HttpClient::connect(node.http_addr).ok()?;
                let response = client.get("/health/live").ok()?;
                (response.status == 200).then_some(())
            });
        }
        cluster.wait_writable(0, groups);
        cluster
    }

    /// Waits until a session create through `nodes[via]` succeeds in every one of `groups`.
    pub fn wait_writable(&self, via: usize, groups: u32) {
        let node = &self.nodes[via];
        let mut covered = vec![false; groups as usize];
        let mut index = 0u32;
        while covered.iter().any(|done| !done) {
            let id = format!("probe-{index}");
            index += 1;
            let group = session_group(&id, groups) as usize;
            if covered[group] {
                continue;
            }
            wait_for(
                &format!("a write in group {group}"),
                CLUSTER_READY_TIMEOUT,
                || {
                    let mut client = node.client();
                    let body = serde_json::json!({"id": id, "creator_principal": creator()});
                    let response = client.post_json("/v1/sessions", &body).ok()?;
                    matches!(response.status, 201 | 409).then_some(())
                },
            );
            covered[group] = true;
        }
    }

    /// `NODE_NAME` of `nodes[index]`.
    pub fn node_name(&self, index: usize) -> &'static str {
        WRITE_NODES.get(index).copied().unwrap_or(ROUTER_NODE)
    }

    /// Every node as a load-balancer backend, in `nodes` order.
    pub fn backends(&self) -> Vec<crate::balancer::Backend> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(index, node)| crate::balancer::Backend {
                name: self.node_name(index).to_string(),
                http_addr: node.http_addr,
            })
            .collect()
    }

    /// Appends one event through `node`, retrying 503s with the same `producer_seq` until
    /// `timeout`; returns the final status and body.
    pub fn append_retrying(
        node: &Server,
        session: &str,
        producer: &str,
        producer_seq: u64,
        timeout: Duration,
    ) -> (u16, serde_json::Value) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let path = format!("/v1/sessions/{session}/append");
            let response = node
                .client()
                .post_json(&path, &event_body(producer, producer_seq));
            if let Ok(response) = response {
                if response.status != 503 || std::time::Instant::now() >= deadline {
                    return (response.status, response.json());
                }
            }
            if std::time::Instant::now() >= deadline {
                return (0, serde_json::Value::Null);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every event of `session` read from `node` (`GET …/events`, paged).
    pub fn read_all(node: &Server, session: &str) -> Vec<serde_json::Value> {
        let mut events = Vec::new();
        let mut cursor = 0;
        loop {
            let path = format!("/v1/sessions/{session}/events?cursor={cursor}&limit=1000");
            let response = node.client().get(&path).unwrap();
            assert_eq!(response.status, 200, "read {session}: {}", response.text());
            let body = response.json();
            let page = body["events"].as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                return events;
            }
            cursor = page.last().unwrap()["seq"].as_u64().unwrap();
            events.extend(page);
        }
    }
}

/// The options of every node of a cluster of `names` (the write nodes are [`WRITE_NODES`]),
/// each on its own peer port, sharing one local archive, not waiting for readiness.
fn node_options(names: &[&str], groups: u32) -> Vec<ServerOptions> {
    let peer_ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let cluster_nodes = names
        .iter()
        .zip(&peer_ports)
        .map(|(name, port)| format!("{name}:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let write_nodes = WRITE_NODES.join(",");
    let archive = tempfile::tempdir().unwrap().keep();
    names
        .iter()
        .zip(&peer_ports)
        .map(|(name, port)| {
            let mut options = ServerOptions::default()
                .with("NODE_NAME", name)
                .with("CLUSTER_NODES", &cluster_nodes)
                .with("STARCITE_WRITE_NODE_IDS", &write_nodes)
                .with("STARCITE_PEER_PORT", &port.to_string())
                .with("STARCITE_PEER_BIND_ADDR", "127.0.0.1")
                .with("STARCITE_NUM_GROUPS", &groups.to_string())
                .with("STARCITE_ARCHIVE_LOCAL_SHARED", "true")
                .with("STARCITE_ARCHIVE_LOCAL_DIR", archive.to_str().unwrap());
            // More detail in the node logs when diagnosing a failure.
            if let Ok(level) = std::env::var("STARCITE_TEST_LOG_LEVEL") {
                options = options.with("STARCITE_LOG_LEVEL", &level);
            }
            options.wait_ready = false;
            options
        })
        .collect()
}

/// The session → group placement of cluster.md §2 (the engine's, whose vectors are tested there),
/// for picking sessions of distinct groups.
pub fn session_group(session_id: &str, groups: u32) -> u32 {
    starcite_engine::placement::group_of(session_id, groups)
}

/// `count` session ids `<prefix>-<n>`, the same number in each of `groups` groups.
pub fn sessions_per_group(prefix: &str, count: usize, groups: u32) -> Vec<String> {
    let per_group = count / groups as usize;
    let mut counts = vec![0usize; groups as usize];
    let mut sessions = Vec::new();
    let mut index = 0;
    while sessions.len() < count {
        let id = format!("{prefix}-{index}");
        index += 1;
        let group = session_group(&id, groups) as usize;
        if counts[group] < per_group {
            counts[group] += 1;
            sessions.push(id);
        }
    }
    sessions
}
