//! The cluster driver: one seeded run of a whole cluster under faults.
//!
//! A run has three phases. **Chaos**: the network drops, delays, duplicates and reorders
//! messages, partitions come and go, nodes crash (losing unpersisted writes) and restart,
//! clients propose, read and transfer leadership. **Heal**: the network becomes reliable and
//! every node runs; every group must elect a leader and acknowledge a new proposal within
//! [`Scenario::liveness_bound_us`]. **Converge**: clients stop; every member must apply every
//! acknowledged proposal within the same bound. Safety is checked after every step.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};

use starcite_raft::multi::{Envelope, GroupId};
use starcite_raft::{NodeId, Role};

use super::checker::{Checker, Violation};
use super::network::{Network, NetworkConfig};
use super::node::{GroupSpec, Output, SimNode, Tuning};
use super::prng::Prng;
use super::trace::Trace;

/// Bound on events in one run, so that a livelocked core still ends the run.
const STEPS_MAX: u64 = 2_000_000;

/// The randomly chosen shape of one run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Node ids `1..=node_count`.
    pub node_count: u64,
    /// The groups and their voters.
    pub groups: Vec<GroupSpec>,
    /// Raft and storage settings.
    pub tuning: Tuning,
    /// Length of the chaotic phase.
    pub chaos_us: u64,
    /// Time allowed for each of the heal and converge phases.
    pub liveness_bound_us: u64,
    /// Network behaviour during chaos.
    pub network: NetworkConfig,
    /// Mean time between two faults (crash or partition change).
    pub fault_interval_us: u64,
    /// Longest time a batch waits to become durable.
    pub persist_delay_max_us: u64,
}

impl Scenario {
    /// The scenario of `seed`.
    pub fn generate(prng: &mut Prng) -> Scenario {
        let node_count = if prng.chance_per_mille(500) { 3 } else { 5 };
        let group_count = prng.range(2, 4) as u32;
        let nodes: Vec<NodeId> = (1..=node_count).collect();
        let groups = (1..=group_count)
            .map(|group| {
                let mut voters = nodes.clone();
                if node_count == 5 && prng.chance_per_mille(500) {
                    while voters.len() > 3 {
                        voters.remove(prng.index(voters.len()));
                    }
                }
                GroupSpec { group, voters }
            })
            .collect();
        let election_ticks = 10;
        Scenario {
            node_count,
            groups,
            tuning: Tuning {
                election_ticks,
                heartbeat_ticks: prng.range(1, 3) as u32,
                snapshot_interval_entries: prng.range(3, 40),
                snapshot_chunk_bytes_max: prng.range(4, 32),
                max_entries_bytes_per_msg: prng.range(32, 256),
                max_inflight_msgs: [1, 2, 256][prng.index(3)],
            },
            chaos_us: prng.range(100_000, 300_000),
            liveness_bound_us: 60 * u64::from(election_ticks) * 1_200,
            network: NetworkConfig::chaotic(prng),
            fault_interval_us: prng.range(10_000, 60_000),
            persist_delay_max_us: prng.range(100, 3_000),
        }
    }

    fn node_ids(&self) -> Vec<NodeId> {
        (1..=self.node_count).collect()
    }
}

/// Counters of one run (or, summed, of many).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events processed.
    pub steps: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Proposals accepted by a leader.
    pub proposals: u64,
    /// Proposals acknowledged.
    pub acknowledged: u64,
    /// Linearizable reads served.
    pub reads: u64,
    /// Leadership transfers started.
    pub transfers: u64,
}

impl Stats {
    /// Adds another run's counters.
    pub fn add(&mut self, other: &Stats) {
        self.steps += other.steps;
        self.crashes += other.crashes;
        self.partitions += other.partitions;
        self.proposals += other.proposals;
        self.acknowledged += other.acknowledged;
        self.reads += other.reads;
        self.transfers += other.transfers;
    }
}

/// A failed run: the seed, where it failed and why.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed that reproduces it.
    pub seed: u64,
    /// Step at which the violation was seen.
    pub step: u64,
    /// Simulated time of that step.
    pub time_us: u64,
    /// The broken property.
    pub violation: Violation,
}

impl fmt::Display for Failure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "seed {} failed at step {} (t={}us): {}\nreplay: SIM_SEED={} cargo test -p starcite-raft{} --test simulation -- --nocapture replay",
            self.seed, self.step, self.time_us, self.violation, self.seed, planted_bug_flag()
        )
    }
}

/// The `--features` flag that reproduces this build's planted bug, if any.
fn planted_bug_flag() -> &'static str {
    if cfg!(feature = "bug-double-vote") {
        " --features bug-double-vote"
    } else if cfg!(feature = "bug-commit-old-term") {
        " --features bug-commit-old-term"
    } else if cfg!(feature = "bug-ack-before-persist") {
        " --features bug-ack-before-persist"
    } else {
        ""
    }
}

/// A completed run.
#[derive(Debug)]
pub struct Report {
    /// Counters.
    pub stats: Stats,
    /// Hash of the event trace.
    pub trace_hash: u64,
    /// The trace text, if it was kept.
    pub trace_text: Option<String>,
}

#[derive(Debug, Clone)]
enum Event {
    Tick(NodeId),
    Deliver(Envelope),
    Persist { node: NodeId, epoch: u64, upto: u64 },
    Crash(NodeId),
    Restart(NodeId),
    Fault,
    Propose(GroupId),
    Read(GroupId),
    Transfer(GroupId),
    Heal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Chaos,
    Heal,
    Converge,
}

/// One run in progress.
struct Simulation {
    seed: u64,
    prng: Prng,
    scenario: Scenario,
    now_us: u64,
    sequence: u64,
    queue: BTreeMap<(u64, u64), Event>,
    network: Network,
    nodes: BTreeMap<NodeId, SimNode>,
    persist_scheduled: BTreeMap<NodeId, bool>,
    checker: Checker,
    trace: Trace,
    stats: Stats,
    phase: Phase,
    phase_deadline_us: u64,
    probes_acknowledged: BTreeMap<GroupId, bool>,
    next_value: u64,
    next_read_context: u64,
}

/// Runs the simulation of `seed`. `keep_trace` keeps the trace text; `echo` prints it live.
pub fn run(seed: u64, keep_trace: bool, echo: bool) -> Result<Report, Failure> {
    let mut prng = Prng::new(seed);
    let scenario = Scenario::generate(&mut prng);
    let mut simulation = Simulation::new(seed, prng, scenario, Trace::new(keep_trace, echo));
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| simulation.run()));
    let outcome = outcome.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        Err(Violation {
            property: "core panic",
            detail: message.to_string(),
        })
    });
    match outcome {
        Ok(()) => Ok(Report {
            stats: simulation.stats,
            trace_hash: simulation.trace.hash(),
            trace_text: simulation.trace.text().map(str::to_owned),
        }),
        Err(violation) => Err(Failure {
            seed,
            step: simulation.stats.steps,
            time_us: simulation.now_us,
            violation,
        }),
    }
}

impl Simulation {
    fn new(seed: u64, mut prng: Prng, scenario: Scenario, trace: Trace) -> Simulation {
        let nodes = scenario
            .node_ids()
            .into_iter()
            .map(|id| {
                let tick_period_us = prng.range(800, 1_200);
                let node = SimNode::new(
                    id,
                    tick_period_us,
                    &scenario.groups,
                    scenario.tuning.clone(),
                );
                (id, node)
            })
            .collect();
        Simulation {
            seed,
            network: Network::new(scenario.network.clone()),
            prng,
            scenario,
            now_us: 0,
            sequence: 0,
            queue: BTreeMap::new(),
            nodes,
            persist_scheduled: BTreeMap::new(),
            checker: Checker::new(),
            trace,
            stats: Stats::default(),
            phase: Phase::Chaos,
            phase_deadline_us: 0,
            probes_acknowledged: BTreeMap::new(),
            next_value: 1,
            next_read_context: 1,
        }
    }

    fn schedule(&mut self, delay_us: u64, event: Event) {
        self.sequence += 1;
        self.queue
            .insert((self.now_us + delay_us, self.sequence), event);
    }

    fn run(&mut self) -> Result<(), Violation> {
        let _ = self.seed;
        let node_ids = self.scenario.node_ids();
        for &node in &node_ids {
            let offset = self.prng.range(0, 1_000);
            self.schedule(offset, Event::Tick(node));
        }
        let group_ids: Vec<GroupId> = self.scenario.groups.iter().map(|spec| spec.group).collect();
        for &group in &group_ids {
            let delays = [
                self.prng.range(0, 5_000),
                self.prng.range(0, 10_000),
                self.prng.range(20_000, 80_000),
            ];
            self.schedule(delays[0], Event::Propose(group));
            self.schedule(delays[1], Event::Read(group));
            self.schedule(delays[2], Event::Transfer(group));
        }
        self.schedule(self.scenario.fault_interval_us, Event::Fault);
        self.schedule(self.scenario.chaos_us, Event::Heal);
        while let Some(((time_us, _), event)) = self.queue.pop_first() {
            self.now_us = time_us;
            self.stats.steps += 1;
            if self.stats.steps > STEPS_MAX {
                return Err(self.liveness("step budget exhausted"));
            }
            self.handle(event)?;
            if self.phase != Phase::Chaos && self.now_us > self.phase_deadline_us {
                return Err(self.liveness("deadline passed"));
            }
            if self.phase == Phase::Heal && self.probes_acknowledged.len() == group_ids.len() {
                self.phase = Phase::Converge;
                self.phase_deadline_us = self.now_us + self.scenario.liveness_bound_us;
                self.trace
                    .record(self.now_us, &[3], || "phase converge".into());
            }
            if self.phase == Phase::Converge && self.converged() {
                return self.check_final();
            }
        }
        Err(self.liveness("event queue ran dry"))
    }

    fn liveness(&self, what: &str) -> Violation {
        let groups: Vec<String> = self
            .scenario
            .groups
            .iter()
            .map(|spec| {
                let roles: Vec<String> = self
                    .nodes
                    .values()
                    .filter_map(|node| {
                        node.role(spec.group).map(|(role, term)| {
                            format!(
                                "{}:{role:?}@{term}/applied {}",
                                node.id,
                                node.applied_index(spec.group)
                            )
                        })
                    })
                    .collect();
                format!(
                    "group {} acknowledged ≤ {} [{}]",
                    spec.group,
                    self.checker.acknowledged_index_max(spec.group),
                    roles.join(" ")
                )
            })
            .collect();
        Violation {
            property: "liveness",
            detail: format!("{what} in phase {:?}: {}", self.phase, groups.join("; ")),
        }
    }

    fn converged(&self) -> bool {
        self.scenario.groups.iter().all(|spec| {
            let target = self.checker.acknowledged_index_max(spec.group);
            spec.voters.iter().all(|voter| {
                self.nodes
                    .get(voter)
                    .is_some_and(|node| node.applied_index(spec.group) >= target)
            })
        })
    }

    fn check_final(&self) -> Result<(), Violation> {
        for spec in &self.scenario.groups {
            let applied_min = spec
                .voters
                .iter()
                .filter_map(|voter| self.nodes.get(voter))
                .map(|node| node.applied_index(spec.group))
                .min()
                .unwrap_or(0);
            self.checker
                .check_acknowledged_applied(spec.group, applied_min)?;
        }
        Ok(())
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Tick(node) => {
                let period = self
                    .nodes
                    .get(&node)
                    .map_or(1_000, |sim_node| sim_node.tick_period_us);
                self.schedule(period, Event::Tick(node));
                self.trace
                    .record(self.now_us, &[10, node], || format!("tick {node}"));
                self.on_node(node, |sim_node, _| sim_node.tick())
            }
            Event::Deliver(envelope) => self.deliver(envelope),
            Event::Persist { node, epoch, upto } => self.persist(node, epoch, upto),
            Event::Crash(node) => {
                self.stats.crashes += 1;
                self.trace
                    .record(self.now_us, &[12, node], || format!("crash {node}"));
                if let Some(sim_node) = self.nodes.get_mut(&node) {
                    sim_node.crash();
                }
                self.persist_scheduled.insert(node, false);
                let downtime = self.prng.range(1_000, 40_000);
                self.schedule(downtime, Event::Restart(node));
                Ok(())
            }
            Event::Restart(node) => {
                self.trace
                    .record(self.now_us, &[13, node], || format!("restart {node}"));
                if let Some(sim_node) = self.nodes.get_mut(&node) {
                    sim_node.restart();
                }
                self.on_node(node, |_, _| ())
            }
            Event::Fault => {
                self.fault();
                Ok(())
            }
            Event::Propose(group) => self.propose(group),
            Event::Read(group) => self.read(group),
            Event::Transfer(group) => self.transfer(group),
            Event::Heal => {
                self.heal();
                Ok(())
            }
        }
    }

    /// Runs `action` on a live node, then drains its work and ships its output.
    fn on_node(
        &mut self,
        node: NodeId,
        action: impl FnOnce(&mut SimNode, &mut Prng),
    ) -> Result<(), Violation> {
        let Some(sim_node) = self.nodes.get_mut(&node) else {
            return Ok(());
        };
        if !sim_node.is_up() {
            return Ok(());
        }
        action(sim_node, &mut self.prng);
        let mut output = Output::default();
        sim_node.drain_ready(&mut self.checker, &mut output)?;
        self.ship(node, output)
    }

    fn deliver(&mut self, envelope: Envelope) -> Result<(), Violation> {
        let (from, to) = (envelope.from, envelope.to);
        if self.network.is_blocked(from, to) {
            return Ok(());
        }
        let count = envelope.message_count() as u64;
        self.trace.record(self.now_us, &[11, from, to, count], || {
            format!("deliver {from}->{to} {envelope:?}")
        });
        self.on_node(to, |sim_node, _| sim_node.step(envelope))
    }

    fn persist(&mut self, node: NodeId, epoch: u64, upto: u64) -> Result<(), Violation> {
        let Some(sim_node) = self.nodes.get_mut(&node) else {
            return Ok(());
        };
        if sim_node.epoch != epoch || !sim_node.is_up() {
            return Ok(());
        }
        self.persist_scheduled.insert(node, false);
        self.trace
            .record(self.now_us, &[14, node], || format!("persist {node}"));
        let output = sim_node.complete_persist(&mut self.checker, upto)?;
        self.ship(node, output)
    }

    /// Puts a node's envelopes on the network and schedules its next persistence.
    fn ship(&mut self, node: NodeId, output: Output) -> Result<(), Violation> {
        for &(group, index, term) in &output.newly_committed {
            let Some(spec) = self.scenario.groups.iter().find(|spec| spec.group == group) else {
                continue;
            };
            let durable_count = spec
                .voters
                .iter()
                .filter(|voter| {
                    self.nodes
                        .get(voter)
                        .is_some_and(|sim_node| sim_node.holds_durably(group, index, term))
                })
                .count();
            Checker::check_committed_durable(group, index, term, durable_count, spec.voters.len())?;
        }
        self.stats.acknowledged += output.acknowledged.len() as u64;
        self.stats.reads += output.reads_served_count;
        if self.phase == Phase::Heal {
            for group in &output.acknowledged {
                self.probes_acknowledged.insert(*group, true);
            }
        }
        for envelope in output.envelopes {
            let delays =
                self.network
                    .delivery_delays_us(&mut self.prng, envelope.from, envelope.to);
            for delay in delays {
                self.schedule(delay, Event::Deliver(envelope.clone()));
            }
        }
        let Some(sim_node) = self.nodes.get(&node) else {
            return Ok(());
        };
        let scheduled = self.persist_scheduled.get(&node).copied().unwrap_or(false);
        if let (Some(upto), false) = (sim_node.written_upto(), scheduled) {
            let epoch = sim_node.epoch;
            self.persist_scheduled.insert(node, true);
            let delay = self.prng.range(50, self.scenario.persist_delay_max_us);
            self.schedule(delay, Event::Persist { node, epoch, upto });
        }
        Ok(())
    }

    fn leaders(&self, group: GroupId) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|node| {
                node.role(group)
                    .is_some_and(|(role, _)| role == Role::Leader)
            })
            .map(|node| node.id)
            .collect()
    }

    fn propose(&mut self, group: GroupId) -> Result<(), Violation> {
        if self.phase != Phase::Converge {
            let delay = self.prng.range(500, 6_000);
            self.schedule(delay, Event::Propose(group));
        }
        let leaders = self.leaders(group);
        if leaders.is_empty() {
            return Ok(());
        }
        let node = leaders[self.prng.index(leaders.len())];
        let value = self.next_value;
        self.next_value += 1;
        self.trace
            .record(self.now_us, &[20, u64::from(group), node, value], || {
                format!("propose group {group} on {node}: {value}")
            });
        let mut accepted = false;
        self.on_node(node, |sim_node, _| {
            accepted = sim_node.propose(group, value).is_some()
        })?;
        self.stats.proposals += u64::from(accepted);
        Ok(())
    }

    fn read(&mut self, group: GroupId) -> Result<(), Violation> {
        if self.phase != Phase::Converge {
            let delay = self.prng.range(2_000, 12_000);
            self.schedule(delay, Event::Read(group));
        }
        let Some(spec) = self.scenario.groups.iter().find(|spec| spec.group == group) else {
            return Ok(());
        };
        let node = spec.voters[self.prng.index(spec.voters.len())];
        let context = self.next_read_context;
        self.next_read_context += 1;
        let acknowledged_before = self.checker.acknowledged_index_max(group);
        self.trace
            .record(self.now_us, &[21, u64::from(group), node, context], || {
                format!("read group {group} on {node} (acknowledged ≤ {acknowledged_before})")
            });
        self.on_node(node, |sim_node, _| {
            sim_node.read(group, context, acknowledged_before);
        })
    }

    fn transfer(&mut self, group: GroupId) -> Result<(), Violation> {
        if self.phase == Phase::Chaos {
            let delay = self.prng.range(20_000, 80_000);
            self.schedule(delay, Event::Transfer(group));
        }
        let leaders = self.leaders(group);
        let Some(spec) = self.scenario.groups.iter().find(|spec| spec.group == group) else {
            return Ok(());
        };
        let Some(&leader) = leaders.first() else {
            return Ok(());
        };
        let target = spec.voters[self.prng.index(spec.voters.len())];
        if target == leader {
            return Ok(());
        }
        self.stats.transfers += 1;
        self.trace
            .record(self.now_us, &[22, u64::from(group), leader, target], || {
                format!("transfer group {group} {leader} -> {target}")
            });
        self.on_node(leader, |sim_node, _| {
            sim_node.transfer_leader(group, target);
        })
    }

    /// One random fault: a crash, a partition of some kind, or healing the partition.
    fn fault(&mut self) {
        if self.phase != Phase::Chaos {
            return;
        }
        let interval = self.scenario.fault_interval_us;
        let delay = self.prng.range(interval / 2, interval * 3 / 2);
        self.schedule(delay, Event::Fault);
        let nodes = self.scenario.node_ids();
        let choice = self.prng.range(0, 10);
        let description = match choice {
            0..=1 => {
                let node = nodes[self.prng.index(nodes.len())];
                self.schedule(0, Event::Crash(node));
                return;
            }
            10 => {
                // Crashing leaders mid-replication produces the logs of Raft's Figure 8.
                let group = self.scenario.groups[self.prng.index(self.scenario.groups.len())].group;
                let leaders = self.leaders(group);
                if let Some(&leader) = leaders.first() {
                    self.schedule(0, Event::Crash(leader));
                }
                return;
            }
            3 => {
                self.stats.partitions += 1;
                self.network.partition_symmetric(&mut self.prng, &nodes)
            }
            4 => {
                self.stats.partitions += 1;
                self.network.partition_asymmetric(&mut self.prng, &nodes)
            }
            5 => {
                self.stats.partitions += 1;
                let node = nodes[self.prng.index(nodes.len())];
                self.network.isolate(node, &nodes)
            }
            _ => {
                self.network.heal();
                "heal partition".to_string()
            }
        };
        self.trace
            .record(self.now_us, &[30, choice], || description);
    }

    fn heal(&mut self) {
        self.phase = Phase::Heal;
        self.phase_deadline_us = self.now_us + self.scenario.liveness_bound_us;
        self.network.heal();
        self.network.config = NetworkConfig::reliable();
        self.trace.record(self.now_us, &[31], || {
            "phase heal: network healed, all nodes restart".into()
        });
        let down: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|node| !node.is_up())
            .map(|node| node.id)
            .collect();
        for node in down {
            self.schedule(0, Event::Restart(node));
        }
    }
}
