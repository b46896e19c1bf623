//! The simulated network: per-message loss, delay, duplication and reordering, plus symmetric
//! and asymmetric partitions.
//!
//! The network does not queue anything itself; it tells the cluster driver at which delays a
//! sent envelope arrives (none, one or two copies). Reordering falls out of independent random
//! delays. A link that is blocked when a message is sent or when it would arrive drops it.

use std::collections::BTreeSet;

use super::prng::Prng;

/// Node identifier in the simulation (the same as the Raft node id).
pub type NodeId = u64;

/// How hostile the network is during the chaotic phase of a run.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Probability, per mille, that a message is lost.
    pub drop_per_mille: u64,
    /// Probability, per mille, that a delivered message arrives twice.
    pub duplicate_per_mille: u64,
    /// Smallest one-way delay.
    pub delay_min_us: u64,
    /// Largest one-way delay; delays are uniform in between, which reorders messages.
    pub delay_max_us: u64,
}

impl NetworkConfig {
    /// A network that delivers everything once, in a bounded time.
    pub fn reliable() -> NetworkConfig {
        NetworkConfig {
            drop_per_mille: 0,
            duplicate_per_mille: 0,
            delay_min_us: 100,
            delay_max_us: 1_500,
        }
    }

    /// A randomly hostile network.
    pub fn chaotic(prng: &mut Prng) -> NetworkConfig {
        NetworkConfig {
            drop_per_mille: prng.range(0, 150),
            duplicate_per_mille: prng.range(0, 50),
            delay_min_us: 100,
            delay_max_us: prng.range(1_000, 6_000),
        }
    }
}

/// The network state: its configuration and the set of blocked directed links.
#[derive(Debug, Clone)]
pub struct Network {
    /// Current loss, duplication and delay parameters.
    pub config: NetworkConfig,
    blocked: BTreeSet<(NodeId, NodeId)>,
}

impl Network {
    /// A network with no partition.
    pub fn new(config: NetworkConfig) -> Network {
        Network {
            config,
            blocked: BTreeSet::new(),
        }
    }

    /// Whether messages from `from` to `to` are currently cut.
    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Whether any link is cut.
    pub fn is_partitioned(&self) -> bool {
        !self.blocked.is_empty()
    }

    /// Delays, in microseconds, at which copies of one message sent now arrive.
    pub fn delivery_delays_us(&self, prng: &mut Prng, from: NodeId, to: NodeId) -> Vec<u64> {
        if self.is_blocked(from, to) || prng.chance_per_mille(self.config.drop_per_mille) {
            return Vec::new();
        }
        let mut delays = vec![prng.range(self.config.delay_min_us, self.config.delay_max_us)];
        if prng.chance_per_mille(self.config.duplicate_per_mille) {
            delays.push(prng.range(self.config.delay_min_us, self.config.delay_max_us));
        }
        delays
    }

    /// Splits `nodes` into two random non-empty sides cut from each other in both directions.
    pub fn partition_symmetric(&mut self, prng: &mut Prng, nodes: &[NodeId]) -> String {
        self.blocked.clear();
        let (left, right) = random_split(prng, nodes);
        for &a in &left {
            for &b in &right {
                self.blocked.insert((a, b));
                self.blocked.insert((b, a));
            }
        }
        format!("partition symmetric {left:?} | {right:?}")
    }

    /// Cuts random directed links: some nodes can send but not receive, or the reverse.
    pub fn partition_asymmetric(&mut self, prng: &mut Prng, nodes: &[NodeId]) -> String {
        self.blocked.clear();
        let (left, right) = random_split(prng, nodes);
        for &a in &left {
            for &b in &right {
                self.blocked.insert((a, b));
            }
        }
        format!("partition asymmetric {left:?} -/-> {right:?}")
    }

    /// Cuts one node off from all others in both directions.
    pub fn isolate(&mut self, node: NodeId, nodes: &[NodeId]) -> String {
        self.blocked.clear();
        for &other in nodes.iter().filter(|&&other| other != node) {
            self.blocked.insert((node, other));
            self.blocked.insert((other, node));
        }
        format!("isolate {node}")
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }
}

/// A random split of `nodes` into two non-empty sides (needs at least two nodes).
fn random_split(prng: &mut Prng, nodes: &[NodeId]) -> (Vec<NodeId>, Vec<NodeId>) {
    let mut left = Vec::new();
    let mut right = Vec::new();
    for &node in nodes {
        if prng.chance_per_mille(500) {
            left.push(node);
        } else {
            right.push(node);
        }
    }
    if left.is_empty() {
        left.push(right.remove(prng.index(right.len())));
    } else if right.is_empty() {
        right.push(left.remove(prng.index(left.len())));
    }
    (left, right)
}
