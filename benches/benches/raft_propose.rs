//! Proposal throughput of one 3-node group driven through `MultiRaft` in memory.
//!
//! Persistence is instant and the network is a queue, so the number measures the Raft core
//! and the batching layer alone. Prints one line per batch size.

use std::collections::VecDeque;
use std::time::Instant;

use starcite_raft::multi::{Envelope, GroupId, MultiConfig, MultiRaft};
use starcite_raft::{Config, MemoryStorage, NodeId, Role};

const GROUP: GroupId = 1;
const NODE_COUNT: u64 = 3;
const PAYLOAD_BYTES: usize = 256;
const PROPOSALS_TOTAL: u64 = 200_000;
const ELECTION_TICKS_MAX: u32 = 1_000;

struct Cluster {
    nodes: Vec<MultiRaft<MemoryStorage>>,
    network: VecDeque<Envelope>,
    applied_count: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let voters: Vec<NodeId> = (1..=NODE_COUNT).collect();
        let nodes = voters
            .iter()
            .map(|&id| {
                let mut multi = MultiRaft::new(MultiConfig {
                    node_id: id,
                    coalesce_heartbeats: true,
                    heartbeat_flush_ticks: 1,
                });
                let config = Config {
                    max_inflight_msgs: 4096,
                    ..Config::new(id, voters.clone())
                };
                if let Err(error) = multi.add_group(GROUP, config, MemoryStorage::default()) {
                    panic!("add group: {error}");
                }
                multi
            })
            .collect();
        Cluster {
            nodes,
            network: VecDeque::new(),
            applied_count: 0,
        }
    }

    /// Handles every node's work and delivers every message until the cluster is quiet.
    fn settle(&mut self) {
        loop {
            for node in &mut self.nodes {
                while node.has_ready() {
                    let ready = node.ready();
                    self.network.extend(ready.envelopes);
                    for (group, work) in &ready.groups {
                        let Some(raw) = node.group_mut(*group) else {
                            continue;
                        };
                        let storage = raw.storage_mut();
                        if let Some(snapshot) = &work.snapshot {
                            let _ =
                                starcite_raft::LogStore::apply_snapshot(storage, snapshot.clone());
                        }
                        let _ = starcite_raft::LogStore::append(storage, &work.entries);
                        if let Some(hard_state) = work.hard_state {
                            let _ = starcite_raft::LogStore::set_hard_state(storage, hard_state);
                        }
                    }
                    for (group, work) in &ready.groups {
                        if let Some((index, term)) = work.persisted_position() {
                            let _ = node.on_persisted(*group, index, term);
                        }
                    }
                    self.network.extend(ready.persisted_envelopes);
                    for (group, work) in &ready.groups {
                        if let Some(last) = work.committed_entries.last() {
                            if node
                                .group(*group)
                                .is_some_and(|raw| raw.role() == Role::Leader)
                            {
                                self.applied_count += work.committed_entries.len() as u64;
                            }
                            let _ = node.on_applied(*group, last.index);
                        }
                    }
                }
            }
            if self.network.is_empty() {
                return;
            }
            while let Some(envelope) = self.network.pop_front() {
                let to = envelope.to;
                if let Some(node) = self.nodes.get_mut((to - 1) as usize) {
                    let _ = node.step(envelope);
                }
            }
        }
    }

    fn leader(&self) -> Option<usize> {
        self.nodes.iter().position(|node| {
            node.group(GROUP)
                .is_some_and(|raw| raw.role() == Role::Leader)
        })
    }

    fn elect(&mut self) -> usize {
        for _ in 0..ELECTION_TICKS_MAX {
            if let Some(leader) = self.leader() {
                return leader;
            }
            for node in &mut self.nodes {
                node.tick();
            }
            self.settle();
        }
        panic!("no leader after {ELECTION_TICKS_MAX} ticks");
    }
}

fn measure(batch_size: u64) {
    let mut cluster = Cluster::new();
    let leader = cluster.elect();
    cluster.settle();
    cluster.applied_count = 0;
    let payload = vec![0xAB_u8; PAYLOAD_BYTES];
    let started = Instant::now();
    let mut proposed = 0;
    while proposed < PROPOSALS_TOTAL {
        for _ in 0..batch_size {
            if let Err(error) = cluster.nodes[leader].propose(GROUP, payload.clone()) {
                panic!("propose: {error}");
            }
            proposed += 1;
        }
        cluster.settle();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "raft_propose: 3 nodes, {PAYLOAD_BYTES} B payload, batch {batch_size:>4}: {} applied in {seconds:.2} s = {:.0} proposals/s",
        cluster.applied_count,
        cluster.applied_count as f64 / seconds
    );
}

fn main() {
    for batch_size in [1, 16, 256] {
        measure(batch_size);
    }
}
