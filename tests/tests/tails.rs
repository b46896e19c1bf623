//! Tail acceptance (tail.md §4–§5) against a real node: concurrent tails from different cursors
//! while appends run, and a consumer that stops reading. The first three scenarios live in
//! `starcite_tests::scenarios`, so that `cluster_acceptance` runs them against every cluster node.

use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

use starcite_tests::scenarios::{self, append_n};
use starcite_tests::{Server, TailClient};

#[test]
fn ten_concurrent_tails_from_different_cursors() {
    let server = Server::start();
    scenarios::concurrent_tails_from_different_cursors(&server, "tail-1");
}

#[test]
fn cursor_beyond_last_seq_waits_for_new_events() {
    let server = Server::start();
    scenarios::cursor_beyond_last_seq_waits_for_new_events(&server, "tail-2");
}

#[test]
fn tail_of_missing_session_is_404() {
    let server = Server::start();
    scenarios::tail_of_missing_session_is_404(&server, "none");
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
