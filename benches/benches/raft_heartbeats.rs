//! Peer traffic of idle groups: envelopes (network messages) per heartbeat interval for 256
//! idle 3-voter groups on 3 nodes, with and without heartbeat coalescing.

use std::collections::VecDeque;

use starcite_raft::multi::{Envelope, MultiConfig, MultiRaft};
use starcite_raft::{Config, MemoryStorage, NodeId, Role};

const GROUP_COUNT: u32 = 256;
const NODE_COUNT: u64 = 3;
const HEARTBEAT_TICKS: u32 = 1;
const ELECTION_TICKS: u32 = 10;
const SETTLE_TICKS: u32 = 200;
const MEASURED_INTERVALS: u32 = 100;

struct Traffic {
    envelopes: u64,
    raft_messages: u64,
}

fn build(coalesce: bool) -> Vec<MultiRaft<MemoryStorage>> {
    let voters: Vec<NodeId> = (1..=NODE_COUNT).collect();
    voters
        .iter()
        .map(|&id| {
            let mut multi = MultiRaft::new(MultiConfig {
                node_id: id,
                coalesce_heartbeats: coalesce,
                heartbeat_flush_ticks: HEARTBEAT_TICKS,
            });
            for group in 0..GROUP_COUNT {
                let config = Config {
                    election_ticks: ELECTION_TICKS,
                    heartbeat_ticks: HEARTBEAT_TICKS,
                    seed: u64::from(group) * 7 + id,
                    ..Config::new(id, voters.clone())
                };
                if let Err(error) = multi.add_group(group, config, MemoryStorage::default()) {
                    panic!("add group {group}: {error}");
                }
            }
            multi
        })
        .collect()
}

/// Ticks every node once and runs the cluster until quiet, counting what crossed the network.
fn tick_round(nodes: &mut [MultiRaft<MemoryStorage>], traffic: &mut Traffic) {
    for node in nodes.iter_mut() {
        node.tick();
    }
    let mut network: VecDeque<Envelope> = VecDeque::new();
    loop {
        for node in nodes.iter_mut() {
            while node.has_ready() {
                let ready = node.ready();
                for (group, work) in &ready.groups {
                    let Some(raw) = node.group_mut(*group) else {
                        continue;
                    };
                    let storage = raw.storage_mut();
                    let _ = starcite_raft::LogStore::append(storage, &work.entries);
                    if let Some(hard_state) = work.hard_state {
                        let _ = starcite_raft::LogStore::set_hard_state(storage, hard_state);
                    }
                }
                for (group, work) in &ready.groups {
                    if let Some((index, term)) = work.persisted_position() {
                        let _ = node.on_persisted(*group, index, term);
                    }
                    if let Some(last) = work.committed_entries.last() {
                        let _ = node.on_applied(*group, last.index);
                    }
                }
                network.extend(ready.envelopes);
                network.extend(ready.persisted_envelopes);
            }
        }
        if network.is_empty() {
            return;
        }
        while let Some(envelope) = network.pop_front() {
            traffic.envelopes += 1;
            traffic.raft_messages += envelope.message_count() as u64;
            if let Some(node) = nodes.get_mut((envelope.to - 1) as usize) {
                let _ = node.step(envelope);
            }
        }
    }
}

fn measure(coalesce: bool) -> Traffic {
    let mut nodes = build(coalesce);
    let mut ignored = Traffic {
        envelopes: 0,
        raft_messages: 0,
    };
    for _ in 0..SETTLE_TICKS {
        tick_round(&mut nodes, &mut ignored);
    }
    let leaders = (0..GROUP_COUNT)
        .filter(|&group| {
            nodes.iter().any(|node| {
                node.group(group)
                    .is_some_and(|raw| raw.role() == Role::Leader)
            })
        })
        .count();
    assert_eq!(
        leaders, GROUP_COUNT as usize,
        "every group must have a leader before measuring"
    );
    let mut traffic = Traffic {
        envelopes: 0,
        raft_messages: 0,
    };
    for _ in 0..MEASURED_INTERVALS * HEARTBEAT_TICKS {
        tick_round(&mut nodes, &mut traffic);
    }
    traffic
}

fn main() {
    for coalesce in [false, true] {
        let traffic = measure(coalesce);
        let intervals = f64::from(MEASURED_INTERVALS);
        println!(
            "raft_heartbeats: {GROUP_COUNT} idle groups on {NODE_COUNT} nodes, coalescing {}: {:.1} envelopes and {:.1} raft messages per heartbeat interval",
            if coalesce { "on " } else { "off" },
            traffic.envelopes as f64 / intervals,
            traffic.raft_messages as f64 / intervals,
        );
    }
}
