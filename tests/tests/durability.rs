//! Durability of a single node: `kill -9` at random moments under concurrent appends, and torn or
//! corrupted segment tails. Every acknowledged event must come back exactly once, in order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use starcite_tests::{HttpClient, Server, TailClient};

/// Seed from `DURABILITY_SEED` or random; printed so a failure can be replayed.
fn seed() -> u64 {
    let seed = std::env::var("DURABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("durability seed: {seed} (replay with DURABILITY_SEED={seed})");
    seed
}

/// Read every event of `session` through `/events`, asserting contiguity from seq 1.
fn read_all(client: &mut HttpClient, session: &str) -> Vec<Value> {
    let mut events: Vec<Value> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let response = client
            .get(&format!(
                "/v1/sessions/{session}/events?cursor={cursor}&limit=1000"
            ))
            .unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        let body = response.json();
        let batch = body["events"].as_array().unwrap().clone();
        for event in &batch {
            let seq = event["seq"].as_u64().unwrap();
            assert_eq!(seq, cursor + 1, "gap in {session}");
            cursor = seq;
        }
        events.extend(batch);
        if body["next_cursor"].is_null() {
            return events;
        }
    }
}

/// What a producer thread had acknowledged: producer_seq → seq.
type Acked = Arc<Mutex<BTreeMap<u64, u64>>>;

/// Append forever (until `stop`) with one producer, retrying after connection failures with the
/// same producer_seq so that unknown outcomes resolve through dedupe.
fn producer(
    addr: std::net::SocketAddr,
    session: String,
    producer_id: String,
    acked: Acked,
    stop: Arc<AtomicBool>,
) {
    // Resume after the last acknowledged producer_seq of earlier cycles. The request that was in
    // flight at the kill may or may not have committed; resending it with identical content either
    // dedupes or appends it once.
    let mut producer_seq = acked
        .lock()
        .unwrap()
        .keys()
        .next_back()
        .map_or(1, |last| last + 1);
    let mut client: Option<HttpClient> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = client.as_mut() else {
            client = HttpClient::connect(addr).ok();
            if client.is_none() {
                thread::sleep(Duration::from_millis(20));
            }
            continue;
        };
        let body = json!({"type":"t","payload":{"n":producer_seq},"actor":"a",
                          "producer_id":producer_id,"producer_seq":producer_seq});
        match c.post_json(&format!("/v1/sessions/{session}/append"), &body) {
            Ok(response) if response.status == 201 => {
                let seq = response.json()["seq"].as_u64().unwrap();
                acked.lock().unwrap().insert(producer_seq, seq);
                producer_seq += 1;
            }
            Ok(response) if response.status >= 500 => thread::sleep(Duration::from_millis(20)),
            Ok(response) => panic!("unexpected {}: {}", response.status, response.text()),
            Err(_) => {
                client = None;
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn kill9_under_load_loses_nothing_acknowledged() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    let mut server = Server::start();
    let sessions = ["d1", "d2", "d3"];
    for s in sessions {
        server.create_session(s);
    }
    let producers_per_session = 2;
    let mut acked_by_producer: BTreeMap<(String, String), Acked> = BTreeMap::new();
    let cycles = std::env::var("DURABILITY_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for s in sessions {
            for p in 0..producers_per_session {
                let key = (s.to_string(), format!("p{p}"));
                let acked = acked_by_producer.entry(key.clone()).or_default().clone();
                let (addr, stop) = (server.http_addr, stop.clone());
                threads.push(thread::spawn(move || {
                    producer(addr, key.0, key.1, acked, stop)
                }));
            }
        }
        thread::sleep(Duration::from_millis(rng.gen_range(200..900)));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        server.restart();
        eprintln!("cycle {cycle}: restarted");
    }

    // Verify: every acknowledged event is present exactly once at its acknowledged seq.
    let mut client = server.client();
    for s in sessions {
        let events = read_all(&mut client, s);
        let mut seen: BTreeMap<(String, u64), u64> = BTreeMap::new();
        for event in &events {
            let key = (
                event["producer_id"].as_str().unwrap().to_string(),
                event["producer_seq"].as_u64().unwrap(),
            );
            let seq = event["seq"].as_u64().unwrap();
            assert!(
                seen.insert(key.clone(), seq).is_none(),
                "duplicate {key:?} in {s}"
            );
        }
        for p in 0..producers_per_session {
            let producer_id = format!("p{p}");
            let acked = acked_by_producer[&(s.to_string(), producer_id.clone())]
                .lock()
                .unwrap()
                .clone();
            assert!(
                !acked.is_empty(),
                "producer {producer_id} of {s} never got an ack"
            );
            for (producer_seq, seq) in acked {
                assert_eq!(
                    seen.get(&(producer_id.clone(), producer_seq)),
                    Some(&seq),
                    "{s}/{producer_id}/{producer_seq} lost"
                );
            }
        }
        // seq continues after the last restart and tails replay everything.
        let last = events.len() as u64;
        let response = client.post_json(&format!("/v1/sessions/{s}/append"), &json!({"type":"t","payload":{},"actor":"a","producer_id":"after","producer_seq":1})).unwrap();
        assert_eq!(response.status, 201);
        assert_eq!(response.json()["seq"], last + 1);
        let mut tail = TailClient::connect(server.http_addr, s, 0);
        tail.read_until(last + 1, Duration::from_secs(20));
    }
}

/// Segment files of every shard (`<data>/raft/shard-*/…`), sorted by path.
fn segment_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(shards) = std::fs::read_dir(data_dir.join("raft")) else {
        return files;
    };
    for shard in shards.flatten() {
        if !shard.path().is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(shard.path()).unwrap().flatten() {
            if entry.path().is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    files
}

/// End of the written (non-zero) region of a preallocated segment.
fn written_end(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .map(|p| p + 1)
        .unwrap_or(0)
}

#[test]
fn torn_and_corrupt_tails_are_discarded() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    let mut server =
        Server::start_with(starcite_tests::ServerOptions::default().with("STARCITE_SHARDS", "1"));
    server.create_session("t1");
    let mut client = server.client();
    let mut last_seq = 0;
    for round in 0..6 {
        for i in 0..20 {
            let body = json!({"type":"t","payload":{"round":round,"i":i},"actor":"a","producer_id":format!("r{round}"),"producer_seq":i + 1});
            let response = client.post_json("/v1/sessions/t1/append", &body).unwrap();
            assert_eq!(response.status, 201, "{}", response.text());
            last_seq = response.json()["seq"].as_u64().unwrap();
        }
        server.kill9();
        // Damage the newest segment: truncate inside its written tail or flip bytes there.
        let files = segment_files(&server.data_dir);
        let newest = files
            .iter()
            .rev()
            .find(|f| written_end(&std::fs::read(f).unwrap()) > 0)
            .cloned();
        let newest = newest.expect("a written segment");
        let mut bytes = std::fs::read(&newest).unwrap();
        let end = written_end(&bytes);
        let damage_from = end.saturating_sub(rng.gen_range(1..600)).max(1);
        if round % 2 == 0 {
            bytes.truncate(damage_from);
        } else {
            for _ in 0..rng.gen_range(1..8) {
                let at = rng.gen_range(damage_from..end);
                bytes[at] ^= 1 << rng.gen_range(0..8);
            }
        }
        std::fs::write(&newest, &bytes).unwrap();
        server.restart();
        client = server.client();

        // The node serves a contiguous prefix, never corrupt data, and seq continues after it.
        let events = read_all(&mut client, "t1");
        assert!(events.len() as u64 <= last_seq);
        for event in &events {
            let round_of = event["payload"]["round"].as_u64().unwrap();
            let i = event["payload"]["i"].as_u64().unwrap();
            assert_eq!(event["producer_id"], format!("r{round_of}"));
            assert_eq!(event["producer_seq"].as_u64().unwrap(), i + 1);
        }
        last_seq = events.len() as u64;
        let probe = client.post_json("/v1/sessions/t1/append", &json!({"type":"t","payload":{"round":99,"i":round},"actor":"a","producer_id":"r99","producer_seq":round + 1})).unwrap();
        // The probe producer may have lost its earlier events to the damage: then it restarts at 1.
        assert!(
            probe.status == 201 || probe.status == 409,
            "{}",
            probe.text()
        );
        if probe.status == 201 {
            assert_eq!(probe.json()["seq"], last_seq + 1);
        }
    }
    assert!(server.client().get("/health/ready").unwrap().status == 200);
}
