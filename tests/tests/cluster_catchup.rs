//! Catch-up by snapshot (cluster.md §4.1): write node n3 is stopped, the other two take
//! `CATCHUP_EVENTS` events in batch appends (http-api.md §7) over many sessions and connections,
//! so that every group snapshots and truncates its log past n3's last index; then n3 starts
//! again and must install a snapshot of every group (`starcite_raft_snapshots_installed_total`)
//! and end up with the same state: the same unarchived bytes as the others and every event
//! readable through it. The archiver's tick is a day long, so no event is archived: every event
//! travels inside the snapshots, the case where a lost unarchived event would show. Finally n1,
//! which holds every event, restarts and must serve them all again.
//!
//! `CATCHUP_EVENTS` sets the number of events (default 40,000; the soak run uses 1,000,000).
//! The times n3 takes to be live and caught up, and n1 to be ready, are printed (`--nocapture`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use starcite_tests::appenders::metric;
use starcite_tests::cluster::{session_group, Cluster};
use starcite_tests::{event_body, wait_for, HttpClient, Server};

/// Groups of the cluster: few, so that each gets many entries.
const GROUPS: u32 = 4;
/// Sessions per group, each written by its own connection.
const SESSIONS_PER_GROUP: usize = 4;
/// Batch appends per group: more than the 2,048 entries between two snapshots
/// (`RAFT_SNAPSHOT_ENTRIES_DEFAULT`), so that each group snapshots and truncates its log past
/// everything n3 holds.
const ENTRIES_PER_GROUP: u64 = 2600;
/// Largest batch the API accepts (http-api.md §7).
const BATCH_EVENTS_MAX: u64 = 1000;
/// Events without `CATCHUP_EVENTS`.
const EVENTS_DEFAULT: u64 = 40_000;
/// Bound of each wait on the cluster (generous: the 1M-event soak runs on a shared machine).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(600);
/// Pause before re-reading a session after an ambiguous append answer.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

fn events_wanted() -> u64 {
    std::env::var("CATCHUP_EVENTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(EVENTS_DEFAULT)
}

/// Session ids, `SESSIONS_PER_GROUP` in each group.
fn sessions() -> Vec<String> {
    let mut counts = vec![0usize; GROUPS as usize];
    let mut sessions = Vec::new();
    let mut index = 0;
    while sessions.len() < GROUPS as usize * SESSIONS_PER_GROUP {
        let id = format!("catchup-{index}");
        index += 1;
        let group = session_group(&id, GROUPS) as usize;
        if counts[group] < SESSIONS_PER_GROUP {
            counts[group] += 1;
            sessions.push(id);
        }
    }
    sessions
}

fn last_seq(addr: std::net::SocketAddr, session: &str) -> Option<u64> {
    let mut client = HttpClient::connect(addr).ok()?;
    let response = client.get(&format!("/v1/sessions/{session}")).ok()?;
    (response.status == 200)
        .then(|| response.json()["last_seq"].as_u64())
        .flatten()
}

/// Appends `batches` batches of `batch_events` events to `session` (producer `p`, producer_seq
/// = seq), alternating between `targets`. An ambiguous answer (`503`, broken connection, or a
/// `409` for a re-sent batch) is settled by reading the session's `last_seq`.
fn append_batches(
    targets: &[std::net::SocketAddr],
    session: &str,
    batches: u64,
    batch_events: u64,
) {
    let path = format!("/v1/sessions/{session}/append");
    let mut clients: Vec<Option<HttpClient>> = targets.iter().map(|_| None).collect();
    let mut seq = 0u64;
    for batch in 0..batches {
        let events: Vec<serde_json::Value> = (seq + 1..=seq + batch_events)
            .map(|producer_seq| event_body("p", producer_seq))
            .collect();
        let body = serde_json::json!({ "events": events });
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        let mut attempt = batch as usize;
        loop {
            assert!(
                Instant::now() < deadline,
                "{session}: batch {batch} never committed"
            );
            let node = attempt % targets.len();
            attempt += 1;
            if clients[node].is_none() {
                clients[node] = HttpClient::connect(targets[node]).ok();
            }
            let answer = clients[node]
                .as_mut()
                .map(|client| client.post_json(&path, &body));
            match answer {
                Some(Ok(response)) if response.status == 201 => break,
                Some(Ok(response)) if matches!(response.status, 503 | 409) => {}
                Some(Ok(response)) => panic!(
                    "{session} batch {batch}: {} {}",
                    response.status,
                    response.text()
                ),
                Some(Err(_)) | None => clients[node] = None,
            }
            std::thread::sleep(RETRY_PAUSE);
            match last_seq(targets[node], session) {
                Some(last) if last == seq + batch_events => break,
                Some(last) if last == seq => {}
                Some(last) => panic!("{session}: last_seq {last} after a batch ending at {seq}"),
                None => {}
            }
        }
        seq += batch_events;
    }
}

/// Waits until `node` answers `/health/ready` with 200 (longer than the harness allows a plain
/// start: a node holding a million events may take longer on a loaded machine).
fn wait_ready(node: &Server) {
    wait_for("/health/ready = 200", CATCH_UP_TIMEOUT, || {
        let mut client = HttpClient::connect(node.http_addr).ok()?;
        (client.get("/health/ready").ok()?.status == 200).then_some(())
    });
}

fn unarchived_bytes(node: &Server) -> Option<u64> {
    metric(node, "starcite_event_store_unarchived_bytes")
}

/// Reads every session through `node` and checks seqs `1..=expected` with producer_seq = seq.
fn verify_reads(node: &Server, name: &str, sessions: &[String], expected: u64) {
    for session in sessions {
        let events = Cluster::read_all(node, session);
        assert_eq!(
            events.len() as u64,
            expected,
            "{name} {session}: event count"
        );
        for (position, event) in events.iter().enumerate() {
            let seq = position as u64 + 1;
            assert_eq!(event["seq"].as_u64(), Some(seq), "{name} {session}: gap");
            assert_eq!(
                event["producer_seq"].as_u64(),
                Some(seq),
                "{name} {session} seq {seq}: another event"
            );
        }
    }
}

#[test]
fn node_far_behind_catches_up_by_snapshot() {
    let wanted = events_wanted();
    let sessions = sessions();
    let batches_per_session = ENTRIES_PER_GROUP / SESSIONS_PER_GROUP as u64;
    let batch_total = batches_per_session * sessions.len() as u64;
    let batch_events = wanted.div_ceil(batch_total).clamp(1, BATCH_EVENTS_MAX);
    let per_session = batches_per_session * batch_events;
    let total = per_session * sessions.len() as u64;

    let cluster_starting = Instant::now();
    let mut cluster = Cluster::start_with(|options| {
        options
            .with("STARCITE_NUM_GROUPS", &GROUPS.to_string())
            .with("STARCITE_ARCHIVE_FLUSH_INTERVAL_MS", "86400000")
            .with("STARCITE_EVENT_STORE_MAX_SIZE", "16G")
    });
    println!("cluster ready in {:?}", cluster_starting.elapsed());
    for session in &sessions {
        cluster.router().create_session(session);
    }
    let status = cluster.nodes[2].terminate();
    assert!(status.is_some_and(|s| s.success()), "n3 exit: {status:?}");

    let targets = Arc::new(vec![cluster.nodes[0].http_addr, cluster.nodes[1].http_addr]);
    let appending = Instant::now();
    let writers: Vec<_> = sessions
        .iter()
        .cloned()
        .map(|session| {
            let targets = targets.clone();
            std::thread::spawn(move || {
                append_batches(&targets, &session, batches_per_session, batch_events)
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let append_time = appending.elapsed();
    println!(
        "appended {total} events in {batch_total} batches of {batch_events} over {} sessions \
         in {append_time:?} ({:.0} events/s) with n3 down",
        sessions.len(),
        total as f64 / append_time.as_secs_f64()
    );

    // A local read of every session on both survivors waits for their apply to reach the
    // commit index (read-index), so afterwards both hold every event: the same unarchived
    // bytes, which is n3's target.
    for position in 0..2 {
        for session in &sessions {
            let addr = cluster.nodes[position].http_addr;
            wait_for(
                &format!("node {position} to apply {session}"),
                CATCH_UP_TIMEOUT,
                || (last_seq(addr, session)? == per_session).then_some(()),
            );
        }
    }
    let reference = unarchived_bytes(&cluster.nodes[0]).unwrap();
    assert_eq!(
        unarchived_bytes(&cluster.nodes[1]),
        Some(reference),
        "n1 and n2 hold different unarchived bytes"
    );
    for position in 0..2 {
        let snapshots = metric(&cluster.nodes[position], "starcite_raft_snapshots_total");
        assert!(
            snapshots.is_some_and(|count| count >= u64::from(GROUPS)),
            "node {position} took {snapshots:?} snapshots"
        );
    }

    let starting = Instant::now();
    cluster.nodes[2].restart_live();
    let live_in = starting.elapsed();
    wait_for(
        "n3 to hold the same unarchived events",
        CATCH_UP_TIMEOUT,
        || (unarchived_bytes(&cluster.nodes[2]) == Some(reference)).then_some(()),
    );
    let caught_up_in = starting.elapsed();
    println!(
        "n3: live {live_in:?} after its start, caught up ({reference} unarchived bytes) after \
         {caught_up_in:?}"
    );
    let installed = metric(&cluster.nodes[2], "starcite_raft_snapshots_installed_total");
    assert!(
        installed.is_some_and(|count| count >= u64::from(GROUPS)),
        "n3 installed {installed:?} snapshots for {GROUPS} groups: it did not catch up by snapshot"
    );
    wait_ready(&cluster.nodes[2]);
    verify_reads(&cluster.nodes[2], "n3", &sessions, per_session);

    // A node holding every event restarts from its snapshots and log.
    let status = cluster.nodes[0].terminate();
    assert!(status.is_some_and(|s| s.success()), "n1 exit: {status:?}");
    let starting = Instant::now();
    cluster.nodes[0].restart_live();
    let live_in = starting.elapsed();
    wait_ready(&cluster.nodes[0]);
    let ready_in = starting.elapsed();
    println!("n1 holding {total} events: live {live_in:?}, ready {ready_in:?} after its start");
    wait_for(
        "n1 to hold every unarchived event again",
        CATCH_UP_TIMEOUT,
        || (unarchived_bytes(&cluster.nodes[0]) == Some(reference)).then_some(()),
    );
    verify_reads(&cluster.nodes[0], "n1", &sessions, per_session);
}
