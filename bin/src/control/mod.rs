//! The control plane of a replicated cluster (ops.md §2–§4, cluster.md §7): the
//! [`ControlPlane`] of a node with two or more `CLUSTER_NODES`, backed by the engine's
//! [`ClusterLink`] — the members' roles and leaders the shards publish, the peer transport's
//! connections and the observer fed by the node-status reports (peer message kind 5).
//!
//! - `balance`: which leaderships to hand over on drain and for the leader balance.
//! - `transfer`: running those transfers on the shards (executor-agnostic, so that the
//!   shutdown thread can wait for them too).
//! - `runner`: the background work on the ops listener's executor: status reports, observer
//!   maintenance, forwarded drains, drain retries and the leader balance.

mod balance;
mod runner;
mod transfer;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use starcite_engine::cluster::{Clock, ClusterLink, DrainMark, PeerStatus};
use starcite_net::ops::control::{
    ControlFuture, LocalControlFuture, NodeStatus, ObservedNode, ObserverView, ProbeFailure,
    ProbeReport,
};
use starcite_net::ops::drain::DrainReason;
use starcite_net::ops::{ControlError, ControlPlane, NodeState};
use starcite_raft::{NodeId, Role};

/// How long a forwarded drain waits for the target's answer.
pub const FORWARD_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The control plane of a node of a replicated cluster.
pub struct ClusterControlPlane {
    link: Arc<ClusterLink>,
    /// How long one leadership transfer may take before it is given up (2× election timeout).
    transfer_timeout: Duration,
    /// How long a member may be electing before the probe counts it as failed: one election
    /// timeout. A planned hand-over (drain, leader balance) passes through a candidate and a
    /// leaderless moment on the replicas; failing the probe for it would keep a healthy node
    /// unready until the next fresh probe (≥ 3 s), while its requests meanwhile only wait
    /// for the new leader inside the routing budget.
    election_grace: Duration,
}

impl ClusterControlPlane {
    /// The plane over `link`; `election_timeout` is `STARCITE_RAFT_ELECTION_TIMEOUT_MS`.
    pub fn new(link: Arc<ClusterLink>, election_timeout: Duration) -> ClusterControlPlane {
        ClusterControlPlane {
            link,
            transfer_timeout: election_timeout * 2,
            election_grace: election_timeout,
        }
    }

    fn name_of(&self, node_id: NodeId) -> Option<String> {
        self.link.topology().name_of(node_id).map(str::to_owned)
    }

    /// Router readiness: connected to ⌊W/2⌋+1 of the W write nodes.
    fn router_probe(&self) -> ProbeReport {
        let topology = self.link.topology();
        let write_nodes = topology.write_node_count;
        let connected = (1..=write_nodes as NodeId)
            .filter(|node| self.link.is_connected(*node))
            .count();
        let failure = (connected < write_nodes / 2 + 1).then(|| ProbeFailure {
            group_id: None,
            probe_result: "quorum_unreachable",
            extra: Map::new(),
        });
        ProbeReport {
            checked_groups: 0,
            failure,
        }
    }

    /// The checks of ops.md §2 for one group; `None` when it passes.
    fn check_group(&self, group_id: u32) -> Option<ProbeFailure> {
        let fail = |probe_result: &'static str, extra: Map<String, Value>| {
            Some(ProbeFailure {
                group_id: Some(group_id),
                probe_result,
                extra,
            })
        };
        let Some(role) = self.link.member_role(group_id) else {
            return fail("local_group_down", Map::new());
        };
        let replicas = self
            .link
            .topology()
            .group_replicas
            .get(group_id as usize)
            .map_or(&[][..], Vec::as_slice);
        let reachable = replicas
            .iter()
            .filter(|node| self.link.is_connected(**node))
            .count();
        let quorum = replicas.len() / 2 + 1;
        if reachable < quorum {
            let mut extra = Map::new();
            extra.insert("reachable_replicas".into(), reachable.into());
            extra.insert("required_quorum".into(), quorum.into());
            return fail("quorum_unreachable", extra);
        }
        // An election younger than the grace is a hand-over in progress, not a failure.
        let electing_briefly = self
            .link
            .electing_for(group_id)
            .is_some_and(|electing| electing < self.election_grace);
        let state = match role {
            Role::Leader | Role::Follower => None,
            Role::Candidate => Some("candidate"),
            Role::PreCandidate => Some("pre_candidate"),
        };
        if let Some(state) = state.filter(|_| !electing_briefly) {
            let mut extra = Map::new();
            extra.insert("state".into(), state.into());
            return fail("raft_state", extra);
        }
        if self.link.local_view_of_leader(group_id).is_none() && !electing_briefly {
            return fail("leader_unknown", Map::new());
        }
        if !replicas.contains(&self.link.node_id()) {
            return fail("membership", Map::new());
        }
        None
    }
}

fn node_status(status: PeerStatus) -> NodeStatus {
    match status {
        PeerStatus::Ready => NodeStatus::Ready,
        PeerStatus::Suspect => NodeStatus::Suspect,
        PeerStatus::Lost => NodeStatus::Lost,
        PeerStatus::Draining => NodeStatus::Draining,
    }
}

fn drain_mark(reason: Option<DrainReason>) -> DrainMark {
    match reason {
        None => DrainMark::None,
        Some(DrainReason::Operator) => DrainMark::Operator,
        Some(DrainReason::Shutdown) => DrainMark::Shutdown,
    }
}

impl ControlPlane for ClusterControlPlane {
    fn startup_complete(&self) -> bool {
        self.link.startup_complete()
    }

    fn consensus_probe(&self, local_groups: &[u32]) -> ProbeReport {
        if !self.link.topology().is_write_node() {
            return self.router_probe();
        }
        for (checked, &group_id) in local_groups.iter().enumerate() {
            if let Some(failure) = self.check_group(group_id) {
                return ProbeReport {
                    checked_groups: u32::try_from(checked).unwrap_or(u32::MAX),
                    failure: Some(failure),
                };
            }
        }
        ProbeReport {
            checked_groups: u32::try_from(local_groups.len()).unwrap_or(u32::MAX),
            failure: None,
        }
    }

    fn group_leader(&self, group_id: u32) -> Option<String> {
        let leader = self
            .link
            .local_view_of_leader(group_id)
            .or_else(|| self.link.cached_hint(group_id))?;
        self.name_of(leader)
    }

    fn observer(&self) -> ObserverView {
        self.link
            .observer()
            .view(Clock::now())
            .into_iter()
            .filter_map(|peer| {
                let name = self.name_of(peer.node_id)?;
                let observed = ObservedNode {
                    status: node_status(peer.status),
                    changed_at_ms: peer.changed_at_ms,
                    raft_ready: peer.raft_ready,
                    reports_local_draining: peer.reports_local_draining,
                };
                Some((name, observed))
            })
            .collect()
    }

    fn transfer_leaderships(&self) -> ControlFuture<'_, ()> {
        Box::pin(transfer::drain(self.link.clone(), self.transfer_timeout))
    }

    fn announce_drain(&self, mark: Option<DrainReason>) {
        self.link.observer().set_local_drain(drain_mark(mark));
        self.link.broadcast_status();
    }

    fn note_local_readiness(&self, consensus_ready: bool) {
        self.link.observer().set_local_raft_ready(consensus_ready);
    }

    fn run<'a>(&'a self, node: &'a NodeState) -> LocalControlFuture<'a> {
        Box::pin(runner::run(self.link.clone(), node, self.transfer_timeout))
    }

    fn forward_drain(
        &self,
        node: &str,
        draining: bool,
    ) -> ControlFuture<'_, Result<(), ControlError>> {
        let target = node.to_owned();
        let answer = self
            .link
            .topology()
            .id_of(node)
            .and_then(|node_id| self.link.call_drain(node_id, draining));
        Box::pin(async move {
            // The runner expires unanswered calls after FORWARD_DRAIN_TIMEOUT, which
            // disconnects the receiver.
            match answer {
                Some(receiver) if receiver.recv_async().await == Ok(true) => Ok(()),
                _ => Err(ControlError::Unreachable { node: target }),
            }
        })
    }
}
