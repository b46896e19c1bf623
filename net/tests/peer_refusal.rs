//! Connections that must be refused or closed: a different topology, an unknown node id, and
//! frames that fail their checksum or exceed the size limit.

// A failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

mod peer_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use peer_support::{config_for, fingerprint_of, loopback_nodes, receive, wait_until, TestNode};
use starcite_net::peer::frame::{encode_frame_into, FrameDecoder, PEER_FRAME_BODY_BYTES_MAX};
use starcite_net::peer::handshake::{decode_handshake, encode_handshake, Handshake};
use starcite_net::peer::{PeerNode, TopologyFingerprint};

const MISMATCH_TEXT: &str = "cluster configuration differs";

/// Two nodes whose replication factors differ never connect. Each logs the contract's exact
/// line naming the other, and only once in a window shorter than the 10 s log interval even
/// though it keeps redialling.
#[test]
fn fingerprint_mismatch_is_refused_and_logged_once_per_interval() {
    let topology = loopback_nodes(2);
    let first = TestNode::start(config_for(&topology[0], &topology, None));
    let mut other_config = config_for(&topology[1], &topology, None);
    other_config.fingerprint = fingerprint_of(&topology, 2);
    let second = TestNode::start(other_config);

    let first_line = format!("topology mismatch with {}: {MISMATCH_TEXT}", second.id);
    let second_line = format!("topology mismatch with {}: {MISMATCH_TEXT}", first.id);
    wait_until(
        Duration::from_secs(10),
        "both nodes to log the mismatch",
        || first.logs.count(&first_line) >= 1 && second.logs.count(&second_line) >= 1,
    );
    // Backoff 100, 200, 400, 800 ms…: several more attempts happen in the next 3 s.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(first.logs.count(&first_line), 1, "{}", first.logs.text());
    assert_eq!(second.logs.count(&second_line), 1, "{}", second.logs.text());
    assert!(first.connected_peers().is_empty());
    assert!(second.connected_peers().is_empty());
    assert!(!first.status_of(&second.id).inbound_connected);

    first.send(&second.id, "never delivered").unwrap();
    assert!(second
        .frames
        .recv_timeout(Duration::from_millis(500))
        .is_err());
}

/// A node that is not in this node's `CLUSTER_NODES` is refused even with the right
/// fingerprint, and the refusal is logged.
#[test]
fn unknown_node_id_is_refused() {
    let topology = loopback_nodes(2);
    let known = TestNode::start(config_for(&topology[0], &topology, None));
    let stranger_node = PeerNode::new("stranger@127.0.0.1", peer_support::free_port());
    let stranger_view = vec![topology[0].clone(), stranger_node.clone()];
    let mut stranger_config = config_for(&stranger_node, &stranger_view, None);
    // Same fingerprint, so that only the node id can be the reason for the refusal.
    stranger_config.fingerprint = fingerprint_of(&topology, 3);
    let stranger = TestNode::start(stranger_config);

    wait_until(Duration::from_secs(10), "the refusal to be logged", || {
        known
            .logs
            .text()
            .contains("connection from unknown node \"stranger@127.0.0.1\" refused")
    });
    assert!(stranger.connected_peers().is_empty());
    stranger.send(&known.id, "never delivered").unwrap();
    assert!(known
        .frames
        .recv_timeout(Duration::from_millis(500))
        .is_err());
}

/// Connect with a std socket, handshake as `node_id`, and check the transport's reply.
fn raw_handshake(
    address: std::net::SocketAddr,
    node_id: &str,
    fingerprint: &TopologyFingerprint,
) -> TcpStream {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut wire = Vec::new();
    encode_frame_into(&encode_handshake(node_id, fingerprint).unwrap(), &mut wire).unwrap();
    stream.write_all(&wire).unwrap();
    let mut decoder = FrameDecoder::new(1024);
    let mut buffer = [0u8; 1024];
    let reply = loop {
        if let Some(body) = decoder.next_frame().unwrap() {
            break body;
        }
        let received = stream.read(&mut buffer).unwrap();
        assert!(received > 0, "closed during handshake");
        decoder.extend(&buffer[..received]);
    };
    match decode_handshake(&reply).unwrap() {
        Handshake::Current {
            fingerprint: theirs,
            ..
        } => assert_eq!(&theirs, fingerprint),
        other => panic!("unexpected handshake {other:?}"),
    }
    stream
}

/// Read until the transport closes the connection (end of stream or reset), skipping its
/// keepalives.
fn assert_closed_by_peer(stream: &mut TcpStream) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buffer = [0u8; 256];
    loop {
        assert!(Instant::now() < deadline, "connection still open");
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(received) => assert!(
                buffer[..received].iter().all(|byte| *byte == 0),
                "only keepalives expected"
            ),
        }
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    encode_frame_into(body, &mut wire).unwrap();
    wire
}

/// After a valid handshake and one valid frame, a frame whose body does not match its crc32c
/// closes the connection; nothing after it is delivered.
#[test]
fn corrupted_frame_closes_the_connection() {
    let topology = loopback_nodes(2);
    let node = TestNode::start(config_for(&topology[0], &topology, None));
    let fingerprint = fingerprint_of(&topology, 3);
    let mut stream = raw_handshake(node.address, &topology[1].node_id, &fingerprint);

    stream.write_all(&frame(b"valid")).unwrap();
    let delivered = receive(&node, Duration::from_secs(10));
    assert_eq!(
        (&*delivered.from, &delivered.body[..]),
        (topology[1].node_id.as_str(), &b"valid"[..])
    );

    let mut corrupted = frame(b"corrupted body");
    let last = corrupted.len() - 1;
    corrupted[last] ^= 0xff;
    corrupted.extend(frame(b"after the corruption"));
    stream.write_all(&corrupted).unwrap();
    assert_closed_by_peer(&mut stream);
    assert!(node
        .frames
        .recv_timeout(Duration::from_millis(300))
        .is_err());
    wait_until(Duration::from_secs(5), "the close to be logged", || {
        node.logs.text().contains("checksum mismatch")
    });
}

/// A header announcing a body over 64 MiB closes the connection before any body is read.
#[test]
fn oversize_frame_closes_the_connection() {
    let topology = loopback_nodes(2);
    let node = TestNode::start(config_for(&topology[0], &topology, None));
    let mut stream = raw_handshake(
        node.address,
        &topology[1].node_id,
        &fingerprint_of(&topology, 3),
    );
    let mut header = Vec::new();
    header.extend_from_slice(&(PEER_FRAME_BODY_BYTES_MAX + 1).to_be_bytes());
    header.extend_from_slice(&0u32.to_be_bytes());
    stream.write_all(&header).unwrap();
    assert_closed_by_peer(&mut stream);
    wait_until(Duration::from_secs(5), "the close to be logged", || {
        node.logs.text().contains("exceeds the maximum")
    });
}

/// Garbage instead of a handshake is refused without a reply.
#[test]
fn garbage_handshake_is_refused() {
    let topology = loopback_nodes(2);
    let node = TestNode::start(config_for(&topology[0], &topology, None));
    let mut stream = TcpStream::connect(node.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&frame(b"GET / HTTP/1.1\r\n\r\n")).unwrap();
    let mut buffer = [0u8; 64];
    let received = stream.read(&mut buffer).unwrap_or(0);
    assert_eq!(received, 0, "no reply to garbage");
}
