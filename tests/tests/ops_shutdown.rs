//! SIGTERM / SIGINT (ops.md §6, tail.md §6): graceful shutdown under load, the shutdown deadline,
//! and a second signal.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use starcite_tests::{event_body, wait_for, HttpClient, Server, ServerOptions, TailClient};

/// Producer id → producer_seq → seq of every append that got a 201.
type Acked = Arc<Mutex<BTreeMap<String, BTreeMap<u64, u64>>>>;

/// Append with one producer until the node stops answering; records every 201.
fn append_until_refused(
    server_addr: std::net::SocketAddr,
    session: &str,
    producer: String,
    acked: Acked,
) {
    let mut producer_seq = 1;
    let mut client = match HttpClient::connect(server_addr) {
        Ok(client) => client,
        Err(_) => return,
    };
    loop {
        let path = format!("/v1/sessions/{session}/append");
        let response = match client.post_json(&path, &event_body(&producer, producer_seq)) {
            Ok(response) => response,
            Err(_) => match HttpClient::connect(server_addr) {
                // The connection was closed between requests (shutdown closes idle keep-alive
                // connections); a new one is refused once the listener is gone.
                Ok(fresh) => {
                    client = fresh;
                    continue;
                }
                Err(_) => return,
            },
        };
        match response.status {
            201 => {
                let seq = response.json()["seq"].as_u64().unwrap();
                acked
                    .lock()
                    .unwrap()
                    .entry(producer.clone())
                    .or_default()
                    .insert(producer_seq, seq);
                producer_seq += 1;
            }
            // Readiness turned 503 before the listener stopped; appends may still answer.
            status => panic!("append answered {status}: {}", response.text()),
        }
        if response.header("connection") == Some("close") {
            match HttpClient::connect(server_addr) {
                Ok(fresh) => client = fresh,
                Err(_) => return,
            }
        }
    }
}

fn read_all(client: &mut HttpClient, session: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor = 0;
    loop {
        let response = client
            .get(&format!(
                "/v1/sessions/{session}/events?cursor={cursor}&limit=1000"
            ))
            .unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        let body = response.json();
        for event in body["events"].as_array().unwrap() {
            cursor = event["seq"].as_u64().unwrap();
            events.push(event.clone());
        }
        if body["next_cursor"].is_null() {
            return events;
        }
    }
}

/// Under concurrent appends and an open tail, SIGTERM closes the tail with 1001
/// `server_shutdown`, exits 0, and every append that got a 201 is there after the restart.
#[test]
fn sigterm_under_load_keeps_every_acknowledged_append() {
    let mut server = Server::start();
    let session = "shutdown-load";
    server.create_session(session);
    let mut tail = TailClient::connect(server.http_addr, session, 0);

    let acked: Acked = Arc::default();
    let producers: Vec<_> = (0..8)
        .map(|index| {
            let acked = acked.clone();
            let addr = server.http_addr;
            thread::spawn(move || append_until_refused(addr, session, format!("p{index}"), acked))
        })
        .collect();
    wait_for("appends under way", Duration::from_secs(30), || {
        let count: usize = acked.lock().unwrap().values().map(BTreeMap::len).sum();
        (count >= 200).then_some(())
    });

    server.signal(libc::SIGTERM);
    // The tail keeps delivering until it is closed with 1001 (tail.md §6).
    let deadline = Instant::now() + Duration::from_secs(30);
    let closed = loop {
        assert!(Instant::now() < deadline, "tail was not closed");
        match tail.next_event(Duration::from_secs(1)) {
            Ok(_) => {}
            Err(closed) => break closed,
        }
    };
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (1001, "server_shutdown")
    );
    let status = server.wait_exit(Duration::from_secs(30)).expect("exited");
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log());
    for producer in producers {
        producer.join().unwrap();
    }

    server.restart();
    let events = read_all(&mut server.client(), session);
    let stored: BTreeMap<(String, u64), u64> = events
        .iter()
        .map(|event| {
            let key = (
                event["producer_id"].as_str().unwrap().to_owned(),
                event["producer_seq"].as_u64().unwrap(),
            );
            (key, event["seq"].as_u64().unwrap())
        })
        .collect();
    let acked = acked.lock().unwrap();
    let mut count = 0;
    for (producer, appends) in acked.iter() {
        for (producer_seq, seq) in appends {
            assert_eq!(
                stored.get(&(producer.clone(), *producer_seq)),
                Some(seq),
                "acknowledged {producer}/{producer_seq} (seq {seq}) lost"
            );
            count += 1;
        }
    }
    assert!(count >= 200);
    assert_eq!(events.len(), stored.len(), "no event stored twice");
}

/// Start a request that cannot finish on its own (a wait for readiness while the node shuts
/// down), so that shutdown has an in-flight request to wait for.
fn hold_ops_request(server: &Server) -> TcpStream {
    let mut stream = TcpStream::connect(server.ops_addr).unwrap();
    stream
        .write_all(b"GET /ops/wait-ready?timeout_ms=120000 HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    stream
}

/// A second SIGTERM/SIGINT exits at once with code 1, without losing acknowledged appends.
#[test]
fn a_second_signal_exits_at_once() {
    let mut server =
        Server::start_with(ServerOptions::default().with("STARCITE_SHUTDOWN_TIMEOUT_MS", "60000"));
    server.create_session("second-signal");
    let mut client = server.client();
    for producer_seq in 1..=20 {
        let response = client
            .post_json(
                "/v1/sessions/second-signal/append",
                &event_body("p", producer_seq),
            )
            .unwrap();
        assert_eq!(response.status, 201);
    }
    // The node must be draining for wait-ready to hang: drain it first.
    let _held = {
        let mut ops = server.ops_client();
        assert_eq!(ops.post_json("/ops/drain", &json!({})).unwrap().status, 200);
        hold_ops_request(&server)
    };
    thread::sleep(Duration::from_millis(200));
    server.signal(libc::SIGTERM);
    assert!(
        server.wait_exit(Duration::from_millis(700)).is_none(),
        "shutdown waits for the in-flight request"
    );
    let second = Instant::now();
    server.signal(libc::SIGINT);
    let status = server.wait_exit(Duration::from_secs(5)).expect("exited");
    assert!(
        second.elapsed() < Duration::from_secs(2),
        "took {:?}",
        second.elapsed()
    );
    assert_eq!(status.code(), Some(1), "log:\n{}", server.log());

    server.restart_live();
    let ops = server.ops(&["undrain"]);
    assert_eq!(ops.code, Some(0), "{ops:?}");
    server.wait_ready();
    let events = read_all(&mut server.client(), "second-signal");
    assert_eq!(events.len(), 20);
}

/// When `STARCITE_SHUTDOWN_TIMEOUT_MS` expires, open tails still get 1001 `server_shutdown`, a
/// warning is logged and the process exits 0.
#[test]
fn the_shutdown_deadline_closes_tails_and_exits_0() {
    let mut server = Server::start_with(
        ServerOptions::default()
            .with("STARCITE_SHUTDOWN_TIMEOUT_MS", "3000")
            .with("STARCITE_LOG_LEVEL", "info"),
    );
    server.create_session("deadline");
    let mut tail = TailClient::connect(server.http_addr, "deadline", 0);
    let mut ops = server.ops_client();
    assert_eq!(ops.post_json("/ops/drain", &json!({})).unwrap().status, 200);
    let _held = hold_ops_request(&server);
    thread::sleep(Duration::from_millis(200));

    let started = Instant::now();
    server.signal(libc::SIGTERM);
    let closed = loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "tail was not closed"
        );
        if let Err(closed) = tail.next_event(Duration::from_secs(1)) {
            break closed;
        }
    };
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (1001, "server_shutdown")
    );
    let status = server.wait_exit(Duration::from_secs(10)).expect("exited");
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log());
    assert!(
        elapsed >= Duration::from_millis(900),
        "exited after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(4500),
        "exited after {elapsed:?}"
    );
    let log = server.log();
    assert!(log.contains(" warn "), "a warning is logged:\n{log}");
}
