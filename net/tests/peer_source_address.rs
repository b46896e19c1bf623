//! Outbound peer connections leave from the node's own address when its node id names an IP
//! literal, so that firewall rules (and the partition tests) can match peer traffic by node.

// A failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

mod peer_support;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use peer_support::{config_for, free_port, TestNode};
use starcite_net::peer::frame::FrameDecoder;
use starcite_net::peer::handshake::{decode_handshake, Handshake};
use starcite_net::peer::PeerNode;

/// Accept the first connection on `listener` within `timeout` and return it with the node id
/// its handshake announces.
fn accept_handshake(listener: &TcpListener, timeout: Duration) -> (TcpStream, SocketAddr, String) {
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + timeout;
    let (mut stream, remote) = loop {
        match listener.accept() {
            Ok(accepted) => break accepted,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no peer connection within {timeout:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("accept: {error}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut decoder = FrameDecoder::new(1024);
    let body = loop {
        if let Some(body) = decoder.next_frame().unwrap() {
            break body;
        }
        let mut chunk = [0u8; 1024];
        let read = stream.read(&mut chunk).unwrap();
        assert!(read > 0, "connection closed before the handshake");
        decoder.extend(&chunk[..read]);
    };
    let Handshake::Current { node_id, .. } = decode_handshake(&body).unwrap() else {
        panic!("unexpected handshake version");
    };
    (stream, remote, node_id)
}

/// A node named `n1@127.0.0.2` dials its peer from 127.0.0.2 (not from the kernel's default
/// 127.0.0.1), with a port chosen by the kernel.
#[test]
fn dial_leaves_from_the_node_address() {
    let peer_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = PeerNode::new("n0@127.0.0.1", peer_listener.local_addr().unwrap().port());
    let this_node = PeerNode::new("n1@127.0.0.2", free_port());
    let topology = vec![peer, this_node.clone()];
    let node = TestNode::start(config_for(&this_node, &topology, None));

    let (_stream, remote, announced) = accept_handshake(&peer_listener, Duration::from_secs(10));
    assert_eq!(announced, "n1@127.0.0.2");
    assert_eq!(remote.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    assert_ne!(remote.port(), 0);
    node.shutdown();
}

/// A host name is not resolved for the source: the kernel picks it, as before.
#[test]
fn dial_from_a_host_name_uses_the_default_source() {
    let peer_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = PeerNode::new("n0@127.0.0.1", peer_listener.local_addr().unwrap().port());
    let this_node = PeerNode::new("n1@localhost", free_port());
    let topology = vec![peer, this_node.clone()];
    let node = TestNode::start(config_for(&this_node, &topology, None));

    let (_stream, remote, announced) = accept_handshake(&peer_listener, Duration::from_secs(10));
    assert_eq!(announced, "n1@localhost");
    assert_eq!(remote.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    node.shutdown();
}

/// A node id naming an address this machine does not own (behind NAT) still connects: the
/// kernel picks the source.
#[test]
fn dial_from_a_foreign_address_uses_the_default_source() {
    let peer_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = PeerNode::new("n0@127.0.0.1", peer_listener.local_addr().unwrap().port());
    // 192.0.2.0/24 is reserved for documentation (RFC 5737): never a local address.
    let this_node = PeerNode::new("n1@192.0.2.1", free_port());
    let topology = vec![peer, this_node.clone()];
    let node = TestNode::start(config_for(&this_node, &topology, None));

    let (_stream, remote, announced) = accept_handshake(&peer_listener, Duration::from_secs(10));
    assert_eq!(announced, "n1@192.0.2.1");
    assert_eq!(remote.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    node.shutdown();
}
