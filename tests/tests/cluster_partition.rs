//! Network partitions between the write nodes of a cluster (cluster.md §4 check-quorum and
//! pre-vote, §6): the leader of a busy group is cut off from the other two nodes with iptables
//! DROP rules on the peer ports between the node addresses (`n1@127.0.0.1`, `n2@127.0.0.2`,
//! `n3@127.0.0.3`; peer connections leave from and listen on the node's own address, HTTP and ops
//! stay reachable on 127.0.0.1).
//!
//! - The old leader on the minority side steps down within an election timeout (+ margin) and
//!   never acknowledges an append during the partition (`503 raft_timeout`/`raft_unavailable`).
//! - The majority elects a new leader and serves appends.
//! - After healing, the minority catches up: every acknowledged event is present exactly once
//!   on every node, nothing the minority accepted alone survives, and the old minority node,
//!   made leader of every group, serves the same events from its own state.
//! - A short partition of a leader under continuous load from 8 clients loses nothing.
//!
//! Needs root and `iptables` (`scripts/install-test-services` installs it); without them the
//! tests fail with a message saying so. The rules live in a chain of their own, named after the
//! test process, that a guard removes on drop and on panic; chains left by a killed run are
//! removed by the next run.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use starcite_tests::cluster::session_group;
use starcite_tests::server::free_port;
use starcite_tests::{creator, event_body, wait_for, HttpClient, Server, ServerOptions};

/// `NODE_NAME` of each write node; the host is the node's own loopback address.
const NODE_NAMES: [&str; 3] = ["n1@127.0.0.1", "n2@127.0.0.2", "n3@127.0.0.3"];
/// Groups of the test cluster: few, so that start and elections are quick.
const GROUPS: u32 = 4;
/// `STARCITE_RAFT_ELECTION_TIMEOUT_MS` of the test cluster (the default, set explicitly because
/// the assertions depend on it).
const ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);
/// Slack on every timing bound, for a loaded 2-core machine.
const TIMING_MARGIN: Duration = Duration::from_secs(4);
/// How long a cluster may take to start, elect, reconnect or catch up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Clients of the partition-under-load test.
const LOAD_CLIENTS: usize = 8;
/// Sessions the load clients write to (two clients each).
const LOAD_SESSIONS: usize = 4;
/// Phases of the partition-under-load test.
const LOAD_BEFORE_PARTITION: Duration = Duration::from_secs(2);
const LOAD_PARTITION: Duration = Duration::from_secs(4);
const LOAD_AFTER_HEAL: Duration = Duration::from_secs(4);

/// The two tests each start a cluster and change the firewall: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn node_ip(index: usize) -> &'static str {
    NODE_NAMES[index].split_once('@').unwrap().1
}

/// Three write nodes (RF 3) whose peer listeners bind their own addresses.
struct PartitionCluster {
    nodes: Vec<Server>,
    peer_ports: Vec<u16>,
}

impl PartitionCluster {
    fn start() -> PartitionCluster {
        let peer_ports: Vec<u16> = NODE_NAMES.iter().map(|_| free_port()).collect();
        let cluster_nodes = NODE_NAMES
            .iter()
            .zip(&peer_ports)
            .map(|(name, port)| format!("{name}:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let archive = tempfile::tempdir().unwrap().keep();
        let nodes: Vec<Server> = (0..NODE_NAMES.len())
            .map(|index| {
                let mut options = ServerOptions::default()
                    .with("NODE_NAME", NODE_NAMES[index])
                    .with("CLUSTER_NODES", &cluster_nodes)
                    .with("STARCITE_WRITE_NODE_IDS", &NODE_NAMES.join(","))
                    .with("STARCITE_WRITE_REPLICATION_FACTOR", "3")
                    .with("STARCITE_PEER_PORT", &peer_ports[index].to_string())
                    .with("STARCITE_PEER_BIND_ADDR", node_ip(index))
                    .with("STARCITE_NUM_GROUPS", &GROUPS.to_string())
                    .with(
                        "STARCITE_RAFT_ELECTION_TIMEOUT_MS",
                        &ELECTION_TIMEOUT.as_millis().to_string(),
                    )
                    .with("STARCITE_ARCHIVE_LOCAL_SHARED", "true")
                    .with("STARCITE_ARCHIVE_LOCAL_DIR", archive.to_str().unwrap());
                options.wait_ready = false;
                Server::start_with(options)
            })
            .collect();
        let mut cluster = PartitionCluster { nodes, peer_ports };
        for node in cluster.nodes.iter_mut() {
            node.wait_live();
        }
        cluster.wait_every_group_writable();
        cluster
    }

    /// A session create through every node succeeds in every group.
    fn wait_every_group_writable(&self) {
        for (position, node) in self.nodes.iter().enumerate() {
            for group in 0..GROUPS {
                let id = (0..)
                    .map(|n| format!("probe-{position}-{n}"))
                    .find(|id| session_group(id, GROUPS) == group)
                    .unwrap();
                wait_for(
                    &format!("a write in group {group} through node {position}"),
                    SETTLE_TIMEOUT,
                    || {
                        let body = serde_json::json!({"id": id, "creator_principal": creator()});
                        let response = node.client().post_json("/v1/sessions", &body).ok()?;
                        matches!(response.status, 201 | 409).then_some(())
                    },
                );
            }
        }
    }

    /// The node that `nodes[via]` names as the leader of `session`'s group, if any.
    fn leader_seen_by(&self, via: usize, session: &str) -> Option<usize> {
        let path = format!("/ops/group-replicas?session_id={session}");
        let response = HttpClient::connect(self.nodes[via].ops_addr)
            .ok()?
            .get(&path)
            .ok()?;
        if response.status != 200 {
            return None;
        }
        let leader = response.json()["leader"].as_str()?.to_string();
        NODE_NAMES.iter().position(|name| *name == leader)
    }

    /// The leader of `session`'s group as every node agrees.
    fn agreed_leader(&self, session: &str) -> usize {
        wait_for(
            &format!("every node to agree on the leader of {session}"),
            SETTLE_TIMEOUT,
            || {
                let seen: Vec<Option<usize>> = (0..self.nodes.len())
                    .map(|via| self.leader_seen_by(via, session))
                    .collect();
                let first = seen[0]?;
                seen.iter().all(|s| *s == Some(first)).then_some(first)
            },
        )
    }
}

/// DROP rules on the peer traffic between one node and the others, in a chain of their own; the
/// rules are removed when this is dropped (also on panic).
struct Partition {
    chain: String,
}

fn iptables(arguments: &[&str]) -> Result<String, String> {
    let output = Command::new("iptables")
        .arg("-w")
        .args(arguments)
        .output()
        .map_err(|error| {
            format!(
                "cannot run iptables ({error}): the partition tests need root and iptables; \
                 install it with scripts/install-test-services"
            )
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "iptables {arguments:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Fails the test at once, with what to do, when iptables cannot be used here.
fn require_iptables() {
    if let Err(error) = iptables(&["-S", "INPUT"]) {
        panic!("iptables is not usable: {error}");
    }
}

/// Prefix of the chains this file creates; the rest of the name is the test process id.
const CHAIN_PREFIX: &str = "starcite-part-";

/// Removes the chain `chain` and the jump to it, ignoring what is already gone.
fn remove_chain(chain: &str) {
    while iptables(&["-D", "INPUT", "-j", chain]).is_ok() {}
    let _ = iptables(&["-F", chain]);
    let _ = iptables(&["-X", chain]);
}

/// Removes the chains of test processes that no longer run (killed before their guard ran).
fn remove_stale_chains() {
    let Ok(rules) = iptables(&["-S"]) else {
        return;
    };
    for line in rules.lines() {
        let Some(chain) = line.strip_prefix("-N ") else {
            continue;
        };
        let Some(pid) = chain.strip_prefix(CHAIN_PREFIX) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove_chain(chain);
        }
    }
}

impl Partition {
    /// Drops every packet between `nodes[isolated]` and each other node on either's peer port.
    fn isolate(cluster: &PartitionCluster, isolated: usize) -> Partition {
        require_iptables();
        remove_stale_chains();
        let chain = format!("{CHAIN_PREFIX}{}", std::process::id());
        remove_chain(&chain);
        iptables(&["-N", &chain]).unwrap();
        let partition = Partition { chain };
        let a = node_ip(isolated);
        let a_port = cluster.peer_ports[isolated].to_string();
        for other in (0..cluster.nodes.len()).filter(|other| *other != isolated) {
            let b = node_ip(other);
            let b_port = cluster.peer_ports[other].to_string();
            // Both connections of the pair (a dials b's port, b dials a's port), both directions.
            for (source, destination, port_match, port) in [
                (a, b, "--dport", &b_port),
                (b, a, "--sport", &b_port),
                (b, a, "--dport", &a_port),
                (a, b, "--sport", &a_port),
            ] {
                iptables(&[
                    "-A",
                    &partition.chain,
                    "-s",
                    source,
                    "-d",
                    destination,
                    "-p",
                    "tcp",
                    port_match,
                    port,
                    "-j",
                    "DROP",
                ])
                .unwrap();
            }
        }
        iptables(&["-I", "INPUT", "1", "-j", &partition.chain]).unwrap();
        partition
    }

    /// Removes the rules now.
    fn heal(self) {}
}

impl Drop for Partition {
    fn drop(&mut self) {
        remove_chain(&self.chain);
    }
}

/// One metric sample of `node` by full series name; 0 when absent or unreachable.
fn metric(node: &Server, series: &str) -> u64 {
    let Ok(mut client) = HttpClient::connect(node.http_addr) else {
        return 0;
    };
    let Ok(response) = client.get("/metrics") else {
        return 0;
    };
    response
        .text()
        .lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().ok())?
        })
        .unwrap_or(0.0) as u64
}

fn led_groups(node: &Server) -> u64 {
    metric(node, "starcite_raft_groups{role=\"leader\"}")
}

/// One append attempt through `node` on a fresh connection: the status and the `error` code
/// (or `seq` as text for a 201); status 0 when the request itself failed.
fn append_once(node: &Server, session: &str, producer: &str, producer_seq: u64) -> (u16, Value) {
    let Ok(mut client) = HttpClient::connect(node.http_addr) else {
        return (0, Value::Null);
    };
    let path = format!("/v1/sessions/{session}/append");
    match client.post_json(&path, &event_body(producer, producer_seq)) {
        Ok(response) => {
            let body = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
            (response.status, body)
        }
        Err(_) => (0, Value::Null),
    }
}

/// Appends `producer_seq` through `node` until it gets a 201 (retrying 503s and failed requests
/// with the same producer_seq, so a retried command that did commit is deduplicated); returns
/// the seq.
fn append_acknowledged(node: &Server, session: &str, producer: &str, producer_seq: u64) -> u64 {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let (status, body) = append_once(node, session, producer, producer_seq);
        match status {
            201 => return body["seq"].as_u64().unwrap(),
            0 | 503 => {}
            _ => panic!("append {session}/{producer}/{producer_seq}: {status} {body}"),
        }
        assert!(
            Instant::now() < deadline,
            "append {session}/{producer}/{producer_seq} not acknowledged within {SETTLE_TIMEOUT:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Acknowledged appends: session → (producer, producer_seq) → seq.
type Ledger = BTreeMap<String, BTreeMap<(String, u64), u64>>;

/// Every event of `session` through `node`, retrying until the node can serve the read.
fn read_session(node: &Server, session: &str) -> Vec<Value> {
    wait_for(&format!("a full read of {session}"), SETTLE_TIMEOUT, || {
        let mut events = Vec::new();
        let mut cursor = 0;
        loop {
            let path = format!("/v1/sessions/{session}/events?cursor={cursor}&limit=1000");
            let response = HttpClient::connect(node.http_addr).ok()?.get(&path).ok()?;
            if response.status != 200 {
                return None;
            }
            let page = response.json()["events"].as_array().cloned()?;
            let Some(last) = page.last() else {
                return Some(events);
            };
            cursor = last["seq"].as_u64()?;
            events.extend(page);
        }
    })
}

/// `events` hold seqs 1..=n without gaps, no (producer, producer_seq) twice, every
/// acknowledged append at its acknowledged seq, and nothing of the producers in `absent`.
fn assert_events_match(
    session: &str,
    events: &[Value],
    acknowledged: &BTreeMap<(String, u64), u64>,
    absent: &[&str],
) {
    let mut seen = BTreeMap::new();
    for (position, event) in events.iter().enumerate() {
        let seq = event["seq"].as_u64().unwrap();
        assert_eq!(seq, position as u64 + 1, "{session}: seqs not gapless");
        let producer = event["producer_id"].as_str().unwrap().to_string();
        assert!(
            !absent.contains(&producer.as_str()),
            "{session}: event of {producer} survived: {event}"
        );
        let producer_seq = event["producer_seq"].as_u64().unwrap();
        let key = (producer, producer_seq);
        assert!(
            seen.insert(key.clone(), seq).is_none(),
            "{session}: {key:?} stored twice"
        );
    }
    for (key, seq) in acknowledged {
        assert_eq!(
            seen.get(key),
            Some(seq),
            "{session}: acknowledged {key:?} at seq {seq} missing or moved"
        );
    }
}

/// Every node serves the same events of every session of `ledger`, and they match it.
fn assert_consistent_everywhere(cluster: &PartitionCluster, ledger: &Ledger, absent: &[&str]) {
    for (session, acknowledged) in ledger {
        let reference = read_session(&cluster.nodes[0], session);
        assert_events_match(session, &reference, acknowledged, absent);
        for node in &cluster.nodes[1..] {
            assert_eq!(read_session(node, session), reference, "{session} diverges");
        }
    }
}

/// The old minority node, made leader of every group by draining the other two, serves every
/// session of `ledger` from its own state (a leader reads locally), identical to the others.
fn assert_served_by_own_state(cluster: &PartitionCluster, node: usize, ledger: &Ledger) {
    let others: Vec<usize> = (0..cluster.nodes.len()).filter(|o| *o != node).collect();
    let reference: BTreeMap<&String, Vec<Value>> = ledger
        .keys()
        .map(|session| (session, read_session(&cluster.nodes[others[0]], session)))
        .collect();
    for &other in &others {
        let drain = cluster.nodes[other].ops(&["drain", NODE_NAMES[other]]);
        assert_eq!(drain.code, Some(0), "drain: {drain:?}");
    }
    wait_for(
        &format!("{} to lead every group", NODE_NAMES[node]),
        SETTLE_TIMEOUT,
        || (led_groups(&cluster.nodes[node]) == u64::from(GROUPS)).then_some(()),
    );
    for (session, events) in &reference {
        assert_eq!(
            &read_session(&cluster.nodes[node], session),
            events,
            "{session} as the caught-up node's own state"
        );
    }
    for &other in &others {
        let undrain = cluster.nodes[other].ops(&["undrain", NODE_NAMES[other]]);
        assert_eq!(undrain.code, Some(0), "undrain: {undrain:?}");
    }
}

/// Minority-side answers to appends during the partition: (time since the partition, status,
/// error code).
type Probe = (Duration, u16, String);

#[test]
fn minority_leader_stops_acknowledging_and_catches_up_after_heal() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    require_iptables();
    let test_started = Instant::now();
    let cluster = PartitionCluster::start();
    eprintln!("cluster started after {:?}", test_started.elapsed());
    let busy = "ses-partition";
    let mut ledger = Ledger::new();
    cluster.nodes[0].create_session(busy);
    for producer_seq in 1..=20 {
        let seq = append_acknowledged(&cluster.nodes[0], busy, "before", producer_seq);
        ledger
            .entry(busy.to_string())
            .or_default()
            .insert(("before".to_string(), producer_seq), seq);
    }
    let old_leader = cluster.agreed_leader(busy);
    let majority: Vec<usize> = (0..3).filter(|node| *node != old_leader).collect();
    let minority_changes_before = metric(
        &cluster.nodes[old_leader],
        "starcite_raft_leader_changes_total",
    );
    eprintln!("isolating {} (leader of {busy})", NODE_NAMES[old_leader]);

    let partition = Partition::isolate(&cluster, old_leader);
    let started = Instant::now();

    // Appends sent to the minority node while the partition lasts.
    let stop = Arc::new(AtomicBool::new(false));
    let probes: Arc<Mutex<Vec<Probe>>> = Arc::default();
    let prober = {
        let stop = stop.clone();
        let probes = probes.clone();
        let address = cluster.nodes[old_leader].http_addr;
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let sent = started.elapsed();
                let answer = HttpClient::connect(address).and_then(|mut client| {
                    client.post_json(
                        &format!("/v1/sessions/{busy}/append"),
                        &event_body("minority", 1),
                    )
                });
                let (status, code) = match answer {
                    Ok(response) => {
                        let body: Value =
                            serde_json::from_slice(&response.body).unwrap_or(Value::Null);
                        let code = body["error"].as_str().unwrap_or("").to_string();
                        (response.status, code)
                    }
                    Err(error) => (0, error.to_string()),
                };
                probes.lock().unwrap().push((sent, status, code));
                thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // The old leader steps down (check-quorum) within an election timeout plus margin.
    let step_down_bound = 2 * ELECTION_TIMEOUT + TIMING_MARGIN;
    wait_for(
        "the isolated node to lead no group",
        step_down_bound,
        || (led_groups(&cluster.nodes[old_leader]) == 0).then_some(()),
    );
    let stepped_down_after = started.elapsed();

    // The majority elects a new leader and serves appends.
    let new_leader = wait_for("the majority to elect a new leader", SETTLE_TIMEOUT, || {
        cluster
            .leader_seen_by(majority[0], busy)
            .filter(|leader| *leader != old_leader)
    });
    let elected_after = started.elapsed();
    for producer_seq in 1..=30 {
        let via = majority[producer_seq as usize % 2];
        let seq = append_acknowledged(&cluster.nodes[via], busy, "majority", producer_seq);
        ledger
            .entry(busy.to_string())
            .or_default()
            .insert(("majority".to_string(), producer_seq), seq);
    }
    let during = "ses-during-partition";
    cluster.nodes[majority[1]].create_session(during);
    for producer_seq in 1..=10 {
        let seq = append_acknowledged(&cluster.nodes[majority[0]], during, "p", producer_seq);
        ledger
            .entry(during.to_string())
            .or_default()
            .insert(("p".to_string(), producer_seq), seq);
    }
    // Keep probing the minority until it has answered several times after stepping down.
    wait_for(
        "three minority answers after the step-down",
        SETTLE_TIMEOUT,
        || {
            let probes = probes.lock().unwrap();
            let late = probes
                .iter()
                .filter(|(sent, ..)| *sent > stepped_down_after)
                .count();
            (late >= 3).then_some(())
        },
    );
    stop.store(true, Ordering::Relaxed);
    prober.join().unwrap();
    let healed_at = started.elapsed();
    partition.heal();

    let probes = probes.lock().unwrap().clone();
    eprintln!(
        "stepped down after {stepped_down_after:?}, new leader {} after {elected_after:?}, \
         healed after {healed_at:?}; minority answers: {probes:?}",
        NODE_NAMES[new_leader]
    );
    for (sent, status, code) in &probes {
        assert!(
            *status == 503 && (code == "raft_timeout" || code == "raft_unavailable"),
            "minority answered {status} {code} at {sent:?} during the partition"
        );
    }
    assert!(
        probes.iter().any(|(_, _, code)| code == "raft_unavailable"),
        "the stepped-down minority never answered raft_unavailable"
    );

    // After healing the minority catches up and nothing diverges; the minority's lone append
    // never committed.
    let caught_up_started = Instant::now();
    for (session, acknowledged) in &ledger {
        let expected = acknowledged.len() as u64;
        wait_for(
            &format!("{session} complete through the old minority node"),
            SETTLE_TIMEOUT,
            || {
                (read_session(&cluster.nodes[old_leader], session).len() as u64 >= expected)
                    .then_some(())
            },
        );
    }
    eprintln!(
        "minority served every session after {:?}",
        caught_up_started.elapsed()
    );
    assert_consistent_everywhere(&cluster, &ledger, &["minority"]);
    eprintln!("every node consistent after {:?}", test_started.elapsed());
    assert_served_by_own_state(&cluster, old_leader, &ledger);
    eprintln!("own state checked after {:?}", test_started.elapsed());

    // Node-local Raft state agrees too: one term, one leader per group, and the old minority
    // observed the new leaders.
    wait_for(
        "the same highest term on every node",
        SETTLE_TIMEOUT,
        || {
            let terms: Vec<u64> = cluster
                .nodes
                .iter()
                .map(|node| metric(node, "starcite_raft_term_max"))
                .collect();
            let leaders: u64 = cluster.nodes.iter().map(led_groups).sum();
            (terms.iter().all(|term| *term == terms[0]) && leaders == u64::from(GROUPS))
                .then_some(())
        },
    );
    let minority_changes_after = metric(
        &cluster.nodes[old_leader],
        "starcite_raft_leader_changes_total",
    );
    assert!(
        minority_changes_after > minority_changes_before,
        "the old minority observed no new leader ({minority_changes_before} → {minority_changes_after})"
    );
}

/// What one load client did: its acknowledged appends and the times of their 201s.
struct ClientLog {
    session: String,
    producer: String,
    acknowledged: Vec<(u64, u64, Instant)>,
    /// A producer_seq sent but not acknowledged when the client stopped (it may have committed).
    in_flight: Option<u64>,
}

#[test]
fn leader_partition_under_load_loses_nothing() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    require_iptables();
    let test_started = Instant::now();
    let cluster = Arc::new(PartitionCluster::start());
    eprintln!("cluster started after {:?}", test_started.elapsed());
    let sessions: Vec<String> = (0..LOAD_SESSIONS).map(|i| format!("load-{i}")).collect();
    for session in &sessions {
        cluster.nodes[0].create_session(session);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..LOAD_CLIENTS)
        .map(|client| {
            let cluster = cluster.clone();
            let stop = stop.clone();
            let session = sessions[client % LOAD_SESSIONS].clone();
            thread::spawn(move || {
                let node = &cluster.nodes[client % cluster.nodes.len()];
                let producer = format!("c{client}");
                let mut log = ClientLog {
                    session: session.clone(),
                    producer: producer.clone(),
                    acknowledged: Vec::new(),
                    in_flight: None,
                };
                let mut producer_seq = 1;
                while !stop.load(Ordering::Relaxed) {
                    log.in_flight = Some(producer_seq);
                    let (status, body) = append_once(node, &session, &producer, producer_seq);
                    match status {
                        201 => {
                            let seq = body["seq"].as_u64().unwrap();
                            log.acknowledged.push((producer_seq, seq, Instant::now()));
                            log.in_flight = None;
                            producer_seq += 1;
                        }
                        0 | 503 => thread::sleep(Duration::from_millis(50)),
                        _ => panic!("{producer} on {session}: {status} {body}"),
                    }
                }
                log
            })
        })
        .collect();

    thread::sleep(LOAD_BEFORE_PARTITION);
    let leader = cluster.agreed_leader(&sessions[0]);
    eprintln!("isolating {} under load", NODE_NAMES[leader]);
    let partition = Partition::isolate(&cluster, leader);
    let partitioned_at = Instant::now();
    thread::sleep(LOAD_PARTITION);
    let healed_at = Instant::now();
    partition.heal();
    thread::sleep(LOAD_AFTER_HEAL);
    stop.store(true, Ordering::Relaxed);
    let logs: Vec<ClientLog> = clients.into_iter().map(|c| c.join().unwrap()).collect();

    let mut ledger = Ledger::new();
    let mut maybe: BTreeSet<(String, String, u64)> = BTreeSet::new();
    let mut acknowledged_during_partition = 0;
    for log in &logs {
        for (producer_seq, seq, at) in &log.acknowledged {
            ledger
                .entry(log.session.clone())
                .or_default()
                .insert((log.producer.clone(), *producer_seq), *seq);
            if *at > partitioned_at && *at < healed_at {
                acknowledged_during_partition += 1;
            }
        }
        if let Some(producer_seq) = log.in_flight {
            maybe.insert((log.session.clone(), log.producer.clone(), producer_seq));
        }
    }
    let total: usize = ledger.values().map(BTreeMap::len).sum();
    eprintln!(
        "{total} appends acknowledged, {acknowledged_during_partition} while {} was cut off",
        NODE_NAMES[leader]
    );
    assert!(
        acknowledged_during_partition > 0,
        "the majority acknowledged nothing during the partition"
    );
    assert_consistent_everywhere(&cluster, &ledger, &[]);
    eprintln!("every node consistent after {:?}", test_started.elapsed());
    // Nothing beyond the acknowledged appends, except a last one in flight at the stop.
    for (session, acknowledged) in &ledger {
        let events = read_session(&cluster.nodes[0], session);
        for event in &events {
            let producer = event["producer_id"].as_str().unwrap().to_string();
            let producer_seq = event["producer_seq"].as_u64().unwrap();
            assert!(
                acknowledged.contains_key(&(producer.clone(), producer_seq))
                    || maybe.contains(&(session.clone(), producer, producer_seq)),
                "{session}: unexpected event {event}"
            );
        }
    }
}
