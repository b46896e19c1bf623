//! Tail acceptance (tail.md §4–§5) against a real node: concurrent tails from different cursors
//! while appends run, and a consumer that stops reading.

use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

use serde_json::json;
use starcite_tests::{event_body, Server, TailClient};

fn append_n(
    server: &Server,
    session: &str,
    producer: &str,
    from: u64,
    count: u64,
    payload_bytes: usize,
) {
    let mut client = server.client();
    let filler = "x".repeat(payload_bytes);
    for producer_seq in from..from + count {
        let body = json!({"type":"t","payload":{"fill":filler},"actor":"a","producer_id":producer,"producer_seq":producer_seq});
        let response = client
            .post_json(&format!("/v1/sessions/{session}/append"), &body)
            .unwrap();
        assert_eq!(response.status, 201, "{}", response.text());
    }
}

#[test]
fn ten_concurrent_tails_from_different_cursors() {
    let server = Server::start();
    server.create_session("tail-1");
    append_n(&server, "tail-1", "p", 1, 50, 16);
    let total = 400u64;
    let tails: Vec<_> = (0..10u64)
        .map(|i| {
            let addr = server.http_addr;
            thread::spawn(move || {
                let cursor = i * 5;
                let mut tail = TailClient::connect(addr, "tail-1", cursor);
                let events = tail.read_until(total, Duration::from_secs(60));
                assert_eq!(events.len() as u64, total - cursor);
                assert_eq!(events[0]["seq"], cursor + 1);
                tail.close();
            })
        })
        .collect();
    // Appends run while the tails replay and go live, from two producers.
    let writers: Vec<_> = ["q", "r"]
        .into_iter()
        .map(|producer| {
            let server_addr = server.http_addr;
            thread::spawn(move || {
                let mut client = starcite_tests::HttpClient::connect(server_addr).unwrap();
                for producer_seq in 1..=175u64 {
                    let response = client
                        .post_json(
                            "/v1/sessions/tail-1/append",
                            &event_body(producer, producer_seq),
                        )
                        .unwrap();
                    assert_eq!(response.status, 201, "{}", response.text());
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    for t in tails {
        t.join().unwrap();
    }
}

#[test]
fn cursor_beyond_last_seq_waits_for_new_events() {
    let server = Server::start();
    server.create_session("tail-2");
    append_n(&server, "tail-2", "p", 1, 3, 8);
    let mut tail = TailClient::connect(server.http_addr, "tail-2", 5);
    assert!(tail
        .next_event(Duration::from_millis(300))
        .unwrap()
        .is_none());
    append_n(&server, "tail-2", "p", 4, 3, 8);
    let events = tail.read_until(6, Duration::from_secs(10));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["seq"], 6);
}

#[test]
fn tail_of_missing_session_is_404() {
    let server = Server::start();
    let mut client = server.client();
    let response = client
        .request(
            "GET",
            "/v1/sessions/none/tail",
            &[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
            None,
        )
        .unwrap();
    assert_eq!(response.status, 404);
    assert_eq!(response.json()["error"], "session_not_found");
    let bad_cursor = client
        .request(
            "GET",
            "/v1/sessions/none/tail?cursor=-1",
            &[("connection", "Upgrade"), ("upgrade", "websocket")],
            None,
        )
        .unwrap();
    assert_eq!(bad_cursor.status, 400);
    assert_eq!(bad_cursor.json()["error"], "invalid_cursor");
}

/// A consumer that stops reading while far more than the tail buffer is appended: the server's
/// memory must not grow with the appended events beyond what the events themselves occupy, and
/// once the client reads again it receives everything contiguously.
#[test]
fn stalled_consumer_resumes_contiguously_with_bounded_memory() {
    let server = Server::start_with(
        starcite_tests::ServerOptions::default().with("STARCITE_TAIL_BUFFER_EVENTS", "16"),
    );
    let count = 2000u64;
    // Baseline: the growth caused by storing `count` events with nobody tailing them.
    server.create_session("plain");
    server.create_session("slow");
    append_n(&server, "plain", "warmup", 1, 200, 1024);
    thread::sleep(Duration::from_millis(300));
    let rss_before_plain = server.rss_bytes();
    append_n(&server, "plain", "p", 1, count, PAYLOAD_BYTES);
    thread::sleep(Duration::from_millis(300));
    let rss_after_plain = server.rss_bytes();
    // Open a raw WebSocket and never read from it; a tiny receive buffer makes the server's
    // socket writes block quickly.
    // Three tails that never read: if a tail queued the events it cannot send, each would hold a
    // copy of them and memory would grow about four times as much as without tails.
    let stalled: Vec<std::net::TcpStream> = (0..STALLED_TAILS)
        .map(|_| open_stalled_tail(&server))
        .collect();

    // Far more than 10× the buffer (16), and more bytes than the socket buffers hold, while the
    // consumer is stalled.
    let started = std::time::Instant::now();
    append_n(&server, "slow", "p", 1, count, PAYLOAD_BYTES);
    eprintln!("appends while stalled took {:?}", started.elapsed());
    thread::sleep(Duration::from_millis(300));
    let rss_stalled = server.rss_bytes();

    // Now read everything with a real client on a fresh connection from the stalled client's
    // position — the resume contract — and also drain the stalled socket and check it too.
    let mut resumed = TailClient::connect(server.http_addr, "slow", 0);
    let started = std::time::Instant::now();
    resumed.read_until(count, Duration::from_secs(60));
    eprintln!("fresh tail read took {:?}", started.elapsed());
    let started = std::time::Instant::now();

    // The stalled sockets are still open and deliver contiguously once read.
    for stream in stalled {
        let mut socket = tungstenite::WebSocket::from_raw_socket(
            stream,
            tungstenite::protocol::Role::Client,
            None,
        );
        socket
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut last = 0u64;
        while last < count {
            if let tungstenite::Message::Text(text) = socket.read().unwrap() {
                let event: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                let seq = event["seq"].as_u64().unwrap();
                assert_eq!(seq, last + 1, "stalled tail not contiguous");
                last = seq;
            }
        }
    }
    eprintln!("stalled tail drain took {:?}", started.elapsed());
    // The slow-consumer path really ran: notifications overflowed and the tail fell back to replay.
    let metrics = server.client().get("/metrics").unwrap().text();
    let overflows: f64 = metrics
        .lines()
        .find(|l| l.starts_with("starcite_tail_buffer_overflows_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(
        overflows >= 1.0,
        "no overflow happened; the test did not stall the tail"
    );
    // The events themselves live in the hot store either way; the stalled tail must not add a copy
    // of them. Compare the growth with and without the stalled tail, with slack for the allocator.
    let growth_plain = rss_after_plain.saturating_sub(rss_before_plain);
    let growth_stalled = rss_stalled.saturating_sub(rss_after_plain);
    eprintln!(
        "rss growth for {count} events: without tail {} KiB, with stalled tail {} KiB",
        growth_plain / 1024,
        growth_stalled / 1024
    );
    assert!(
        growth_stalled <= growth_plain * 2 + 8 * 1024 * 1024,
        "stalled tail grew memory: {growth_stalled} vs {growth_plain}"
    );
}

/// Tails that stop reading in the stalled-consumer test.
const STALLED_TAILS: usize = 3;

/// Open a tail of session `slow` from cursor 0 whose client never reads, with a small receive
/// buffer so that the server's writes block quickly.
fn open_stalled_tail(server: &Server) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(server.http_addr).unwrap();
    set_receive_buffer(&stream, 64 * 1024);
    (&stream)
        .write_all(
            b"GET /v1/sessions/slow/tail?cursor=0 HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
              sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .unwrap();
    // Read the whole 101 response head, byte by byte, so no frame bytes are consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        (&stream).read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Payload size of the stalled-consumer test: 2,000 events of this size exceed the socket buffers.
const PAYLOAD_BYTES: usize = 4096;

fn set_receive_buffer(stream: &std::net::TcpStream, bytes: i32) {
    use std::os::fd::AsRawFd;
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &bytes as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as u32,
        );
    }
}
