//! A rough throughput figure between two transports on loopback (not asserted; printed).
//! Run with `cargo test --release -p starcite-net --test peer_throughput -- --nocapture` for
//! meaningful numbers.

// A failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

mod peer_support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use peer_support::{config_for, loopback_nodes, receive, wait_until, TestNode};

fn measure(body_bytes: usize, frames: usize) {
    let topology = loopback_nodes(2);
    let sender = TestNode::start(config_for(&topology[0], &topology, None));
    let receiver = TestNode::start(config_for(&topology[1], &topology, None));
    wait_until(Duration::from_secs(10), "connection", || {
        sender.connected_peers().len() == 1
    });
    let started = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(|| sender.send_burst(&receiver.id, Bytes::from(vec![7u8; body_bytes]), frames));
        for _ in 0..frames {
            let frame = receive(&receiver, Duration::from_secs(30));
            assert_eq!(frame.body.len(), body_bytes);
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "peer transport, {body_bytes}-byte frames: {:.0} frames/s, {:.1} MB/s ({frames} frames in {:.3} s)",
        frames as f64 / seconds,
        (frames * body_bytes) as f64 / seconds / 1e6,
        seconds
    );
}

#[test]
fn throughput_between_two_transports() {
    measure(256, 100_000);
    measure(64 * 1024, 2_000);
}
