//! Send queues stay within their bounds when a peer is dead or does not read.

// A failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

mod peer_support;

use std::time::{Duration, Instant};

use peer_support::{config_for, loopback_nodes, receive, wait_until, TestNode};
use starcite_net::peer::PeerError;

const BODY_BYTES: usize = 1024;
const FRAME_BYTES: u64 = BODY_BYTES as u64 + 8;

/// A peer that never starts: the queue fills to exactly its byte bound, `send` then answers
/// `QueueFull`, and thousands of further sends leave the queue where it is.
#[test]
fn dead_peer_queue_fills_to_its_byte_bound_then_refuses() {
    let topology = loopback_nodes(2);
    let mut config = config_for(&topology[0], &topology, None);
    config.send_queue_bytes_max = 1024 * 1024;
    config.send_queue_frames_max = 1_000_000;
    let node = TestNode::start(config);
    let dead = &topology[1].node_id;

    let mut accepted = 0u64;
    let refusal = loop {
        match node.send(dead, vec![0u8; BODY_BYTES]) {
            Ok(()) => accepted += 1,
            Err(error) => break error,
        }
        assert!(accepted <= 2000, "queue never filled");
    };
    assert_eq!(accepted, 1024 * 1024 / FRAME_BYTES);
    match refusal {
        PeerError::QueueFull {
            peer,
            frames_queued,
            bytes_queued,
        } => {
            assert_eq!(&peer, dead);
            assert_eq!(frames_queued as u64, accepted);
            assert_eq!(bytes_queued, accepted * FRAME_BYTES);
        }
        other => panic!("expected QueueFull, got {other}"),
    }
    for _ in 0..5_000 {
        assert!(matches!(
            node.send(dead, vec![0u8; BODY_BYTES]),
            Err(PeerError::QueueFull { .. })
        ));
    }
    let status = node.status_of(dead);
    assert_eq!(status.bytes_queued, accepted * FRAME_BYTES);
    assert!(status.bytes_queued <= 1024 * 1024);
    assert_eq!(status.frames_refused, 5_001);
    assert!(!status.connected);
}

/// The frame-count bound applies even to tiny frames.
#[test]
fn dead_peer_queue_respects_its_frame_bound() {
    let topology = loopback_nodes(2);
    let mut config = config_for(&topology[0], &topology, None);
    config.send_queue_frames_max = 100;
    let node = TestNode::start(config);
    for _ in 0..100 {
        node.send(&topology[1].node_id, "x").unwrap();
    }
    assert!(matches!(
        node.send(&topology[1].node_id, "x"),
        Err(PeerError::QueueFull {
            frames_queued: 100,
            ..
        })
    ));
}

/// Unknown destinations and oversize bodies are refused at once.
#[test]
fn send_refuses_unknown_peers_and_oversize_bodies() {
    let topology = loopback_nodes(2);
    let node = TestNode::start(config_for(&topology[0], &topology, None));
    assert!(matches!(
        node.send("nobody@127.0.0.1", "x"),
        Err(PeerError::UnknownPeer(_))
    ));
    assert!(matches!(
        node.send(&node.id.clone(), "x"),
        Err(PeerError::UnknownPeer(_))
    ));
    let oversize = vec![0u8; 64 * 1024 * 1024 + 1];
    assert!(matches!(
        node.send(&topology[1].node_id, oversize),
        Err(PeerError::FrameTooLarge { .. })
    ));
}

/// A receiver whose inbound channel is full stops reading; the sender's socket buffers fill,
/// then its queue, and `send` answers `QueueFull` instead of growing memory. Once the receiver
/// drains, every accepted frame arrives in order.
#[test]
fn slow_receiver_applies_backpressure_up_to_the_senders_queue_bound() {
    let topology = loopback_nodes(2);
    let mut sender_config = config_for(&topology[0], &topology, None);
    sender_config.send_queue_bytes_max = 4 * 1024 * 1024;
    let sender = TestNode::start(sender_config);
    let receiver = TestNode::start_with_inbound(config_for(&topology[1], &topology, None), 4);
    wait_until(Duration::from_secs(10), "connection", || {
        sender.connected_peers().len() == 1
    });

    const BODY_BYTES: usize = 64 * 1024;
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut accepted = 0u32;
    loop {
        let mut body = vec![0u8; BODY_BYTES];
        body[..4].copy_from_slice(&accepted.to_be_bytes());
        match sender.send(&receiver.id, body) {
            Ok(()) => accepted += 1,
            Err(PeerError::QueueFull { bytes_queued, .. }) => {
                assert!(bytes_queued <= 4 * 1024 * 1024);
                break;
            }
            Err(other) => panic!("unexpected {other}"),
        }
        assert!(
            Instant::now() < deadline,
            "queue never filled: {accepted} frames accepted"
        );
    }
    for expected in 0..accepted {
        let frame = receive(&receiver, Duration::from_secs(10));
        assert_eq!(frame.body.len(), BODY_BYTES);
        assert_eq!(&frame.body[..4], &expected.to_be_bytes());
    }
}
