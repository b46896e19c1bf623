//! Three transports on loopback: delivery in every direction, in order, and recovery after one
//! node restarts.

// A failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

mod peer_support;

use std::time::Duration;

use bytes::Bytes;
use peer_support::{config_for, loopback_nodes, receive, wait_until, TestNode};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

fn body(from: &str, to: &str, index: usize) -> Bytes {
    Bytes::from(format!("{from}->{to}#{index}"))
}

fn wait_fully_connected(nodes: &[&TestNode]) {
    for node in nodes {
        wait_until(
            CONNECT_TIMEOUT,
            &format!("{} to connect to all", node.id),
            || node.connected_peers().len() == nodes.len() - 1,
        );
    }
}

/// Every node sends to every other node; each receiver gets each sender's frames exactly once
/// and in the order they were sent.
#[test]
fn three_nodes_exchange_frames_in_all_directions_in_order() {
    let topology = loopback_nodes(3);
    let nodes: Vec<TestNode> = topology
        .iter()
        .map(|node| TestNode::start(config_for(node, &topology, None)))
        .collect();
    let node_refs: Vec<&TestNode> = nodes.iter().collect();
    wait_fully_connected(&node_refs);

    const FRAMES_PER_PAIR: usize = 200;
    for index in 0..FRAMES_PER_PAIR {
        for sender in &nodes {
            for receiver in &nodes {
                if sender.id != receiver.id {
                    sender
                        .send(&receiver.id, body(&sender.id, &receiver.id, index))
                        .unwrap();
                }
            }
        }
    }
    for receiver in &nodes {
        let mut next_index = std::collections::HashMap::new();
        for _ in 0..FRAMES_PER_PAIR * 2 {
            let frame = receive(receiver, FRAME_TIMEOUT);
            let index = next_index.entry(frame.from.to_string()).or_insert(0usize);
            assert_eq!(frame.body, body(&frame.from, &receiver.id, *index));
            *index += 1;
        }
        assert!(receiver.frames.try_recv().is_err(), "no extra frames");
        for status in receiver.statuses() {
            assert!(status.connected && status.inbound_connected, "{status:?}");
            assert_eq!(status.frames_received, FRAMES_PER_PAIR as u64);
            assert_eq!(status.frames_sent, FRAMES_PER_PAIR as u64);
        }
    }
}

/// A node is shut down and started again on the same port. The others notice the disconnect,
/// keep the frames sent meanwhile in their queues, reconnect with backoff, and deliver them and
/// later frames in order.
#[test]
fn restarted_node_is_reconnected_and_delivery_resumes() {
    let topology = loopback_nodes(3);
    let first = TestNode::start(config_for(&topology[0], &topology, None));
    let second = TestNode::start(config_for(&topology[1], &topology, None));
    let third = TestNode::start(config_for(&topology[2], &topology, None));
    wait_fully_connected(&[&first, &second, &third]);
    let events = first.subscribe();
    let third_id = third.id.clone();

    first.send(&third_id, "before").unwrap();
    assert_eq!(receive(&third, FRAME_TIMEOUT).body, "before");
    third.shutdown();

    let event = events.recv_timeout(CONNECT_TIMEOUT).unwrap();
    assert_eq!(
        (&*event.node_id, event.connected),
        (third_id.as_str(), false)
    );
    wait_until(CONNECT_TIMEOUT, "second to see the disconnect", || {
        !second.status_of(&third_id).connected
    });
    for index in 0..10 {
        first
            .send(&third_id, format!("while-down-{index}"))
            .unwrap();
    }
    assert_eq!(first.status_of(&third_id).frames_queued, 10);
    // Let a few dials fail so that the backoff grows.
    std::thread::sleep(Duration::from_millis(700));

    let third = TestNode::start(config_for(&topology[2], &topology, None));
    let event = events.recv_timeout(CONNECT_TIMEOUT).unwrap();
    assert_eq!(
        (&*event.node_id, event.connected),
        (third_id.as_str(), true)
    );
    for index in 0..10 {
        let frame = receive(&third, FRAME_TIMEOUT);
        assert_eq!(&*frame.from, first.id.as_str());
        assert_eq!(frame.body, format!("while-down-{index}"));
    }
    wait_fully_connected(&[&first, &second, &third]);
    second.send(&third_id, "after").unwrap();
    third.send(&first.id, "back").unwrap();
    let frame = receive(&third, FRAME_TIMEOUT);
    assert_eq!(
        (&*frame.from, &frame.body[..]),
        (second.id.as_str(), &b"after"[..])
    );
    assert_eq!(receive(&first, FRAME_TIMEOUT).body, "back");
}
