//! A peer that keeps its socket open but sends nothing (a partition, a frozen process) is
//! noticed by the idle timeout and reported as disconnected.

// A failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

mod peer_support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use peer_support::{config_for, fingerprint_of, loopback_nodes, wait_until, TestNode, LOOPBACK};
use starcite_net::peer::frame::{encode_frame_into, FrameDecoder};
use starcite_net::peer::handshake::encode_handshake;

/// The silent peer answers the handshake and then never writes again (no keepalives): the node
/// connects, then drops the connection within the 5 s idle timeout plus slack.
#[test]
fn silent_peer_is_disconnected_by_the_idle_timeout() {
    let topology = loopback_nodes(2);
    let silent = TcpListener::bind((LOOPBACK, topology[1].port)).unwrap();
    let node = TestNode::start(config_for(&topology[0], &topology, None));
    let events = node.subscribe();

    let (mut stream, _) = silent.accept().unwrap();
    let mut decoder = FrameDecoder::new(1024);
    let mut buffer = [0u8; 1024];
    while decoder.next_frame().unwrap().is_none() {
        let received = stream.read(&mut buffer).unwrap();
        assert!(received > 0);
        decoder.extend(&buffer[..received]);
    }
    let mut reply = Vec::new();
    let body = encode_handshake(&topology[1].node_id, &fingerprint_of(&topology, 3)).unwrap();
    encode_frame_into(&body, &mut reply).unwrap();
    stream.write_all(&reply).unwrap();

    let connected = events.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(connected.connected);
    let started = Instant::now();
    let disconnected = events.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(!disconnected.connected);
    let silent_for = started.elapsed();
    assert!(
        silent_for >= Duration::from_secs(4) && silent_for < Duration::from_secs(8),
        "disconnected after {silent_for:?}"
    );
    wait_until(Duration::from_secs(1), "status to follow", || {
        node.connected_peers().is_empty()
    });
    drop(stream);
}
