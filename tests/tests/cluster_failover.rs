//! Failover under load: `kill -9` the leader of a busy session's group while several clients
//! append through the surviving nodes. Appends resume within 3 s, and afterwards every
//! acknowledged event is present exactly once, in order, on every node.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use starcite_tests::cluster::Cluster;
use starcite_tests::{event_body, HttpClient, Server};

const SESSION: &str = "ses-busy";
const CLIENTS: usize = 4;
/// The contract's bound on the pause of appends after a leader is lost.
const RESUME_WITHIN: Duration = Duration::from_secs(3);

/// An acknowledged append: producer, producer_seq, seq, and when the 201 arrived.
type Acknowledgement = (String, u64, u64, Instant);

/// `starcite_routing_forwards_total{op="write",outcome="ok"}` of `node`.
fn write_forwards(node: &Server) -> u64 {
    let metrics = node.client().get("/metrics").unwrap().text();
    metrics
        .lines()
        .find(|line| {
            line.starts_with("starcite_routing_forwards_total{op=\"write\",outcome=\"ok\"}")
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// The write node that runs appends of `SESSION` without forwarding them.
fn find_leader(cluster: &Cluster, next_probe: &mut u64) -> usize {
    for attempt in 0..10 {
        for position in 0..3 {
            let node = &cluster.nodes[position];
            let before = write_forwards(node);
            *next_probe += 1;
            let (status, body) = Cluster::append_retrying(
                node,
                SESSION,
                "probe",
                *next_probe,
                Duration::from_secs(10),
            );
            assert_eq!(status, 201, "probe: {body}");
            if write_forwards(node) == before {
                return position;
            }
        }
        std::thread::sleep(Duration::from_millis(100 * attempt));
    }
    panic!("no write node leads the group of {SESSION}");
}

#[test]
fn leader_loss_under_load_loses_nothing() {
    let mut cluster = Cluster::start();
    cluster.router().create_session(SESSION);
    let mut probes = 0;
    let leader = find_leader(&cluster, &mut probes);
    let survivors: Vec<std::net::SocketAddr> = (0..4)
        .filter(|position| *position != leader)
        .map(|position| cluster.nodes[position].http_addr)
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged: Arc<Mutex<Vec<Acknowledgement>>> = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let stop = stop.clone();
            let acknowledged = acknowledged.clone();
            let target = survivors[client % survivors.len()];
            std::thread::spawn(move || {
                let producer = format!("c{client}");
                let mut producer_seq = 1;
                while !stop.load(Ordering::Relaxed) {
                    let response = HttpClient::connect(target).and_then(|mut http| {
                        http.post_json(
                            &format!("/v1/sessions/{SESSION}/append"),
                            &event_body(&producer, producer_seq),
                        )
                    });
                    match response {
                        Ok(response) if response.status == 201 => {
                            let seq = response.json()["seq"].as_u64().unwrap();
                            acknowledged.lock().unwrap().push((
                                producer.clone(),
                                producer_seq,
                                seq,
                                Instant::now(),
                            ));
                            producer_seq += 1;
                        }
                        Ok(response) => assert_eq!(response.status, 503, "{}", response.text()),
                        Err(_) => {}
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(1500));
    let killed_at = Instant::now();
    cluster.nodes[leader].kill9();
    std::thread::sleep(RESUME_WITHIN + Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let resumed = acknowledged
        .iter()
        .filter(|(.., at)| *at > killed_at)
        .map(|(.., at)| at.duration_since(killed_at))
        .min()
        .expect("no append succeeded after the leader was killed");
    assert!(
        resumed <= RESUME_WITHIN,
        "appends resumed only after {resumed:?}"
    );

    cluster.nodes[leader].restart_live();
    cluster.wait_ready();
    let expected: BTreeMap<u64, (String, u64)> = acknowledged
        .iter()
        .map(|(producer, producer_seq, seq, _)| (*seq, (producer.clone(), *producer_seq)))
        .collect();
    assert_eq!(
        expected.len(),
        acknowledged.len(),
        "two acknowledgements share a seq"
    );
    for (position, node) in cluster.nodes.iter().enumerate() {
        let events = Cluster::read_all(node, SESSION);
        let mut seen = HashSet::new();
        for (index, event) in events.iter().enumerate() {
            let seq = event["seq"].as_u64().unwrap();
            assert_eq!(seq, index as u64 + 1, "node {position}: gap or disorder");
            let producer = event["producer_id"].as_str().unwrap().to_string();
            let producer_seq = event["producer_seq"].as_u64().unwrap();
            assert!(
                seen.insert((producer.clone(), producer_seq)),
                "node {position}: duplicate {producer}/{producer_seq}"
            );
            if let Some(acked) = expected.get(&seq) {
                assert_eq!(
                    acked,
                    &(producer, producer_seq),
                    "node {position} seq {seq}"
                );
            }
        }
        for seq in expected.keys() {
            assert!(
                *seq <= events.len() as u64,
                "node {position} lost seq {seq}"
            );
        }
    }
}
