//! The control-plane seam: what readiness, drain and the ops API need to know about the cluster.
//!
//! [`ControlPlane`] is the only place where the ops code asks about other nodes, Raft
//! leadership and the consensus probe. [`LocalControlPlane`] answers for a node that is the only
//! voter of each of its groups: startup sync is done once the shards recovered (a single voter
//! elects itself during recovery), this node leads every group it hosts, no other node is
//! visible, and there is no leadership to hand over. The replicated cluster replaces it with an
//! implementation backed by the Raft members and the peer transport's observer.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde_json::{Map, Value};

use super::drain::DrainReason;
use super::node::NodeState;

/// A boxed future that can be awaited on any executor or blocked on from a plain thread.
pub type ControlFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A boxed future that runs on the executor of the ops listener.
pub type LocalControlFuture<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Why a request to another node could not be carried out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The target node cannot be reached over the peer transport (`503 raft_unavailable`).
    #[error("node {node} is unreachable")]
    Unreachable {
        /// The target node id.
        node: String,
    },
}

/// Observer status of a node (ops.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    /// Connected and not draining.
    Ready,
    /// Disconnected for less than 120 s.
    Suspect,
    /// Disconnected for 120 s or more.
    Lost,
    /// Marked draining (operator or shutdown).
    Draining,
}

impl NodeStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Ready => "ready",
            NodeStatus::Suspect => "suspect",
            NodeStatus::Lost => "lost",
            NodeStatus::Draining => "draining",
        }
    }
}

/// One other node as the observer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedNode {
    /// Current status.
    pub status: NodeStatus,
    /// When the status last changed, milliseconds since the Unix epoch.
    pub changed_at_ms: u64,
    /// Connected and reporting Raft readiness (peer query with a 1 s timeout).
    pub raft_ready: bool,
    /// This node's mark as that node's observer reports it (`local_drained` needs every visible
    /// node to report this node `draining`).
    pub reports_local_draining: bool,
}

/// The observer's view of every other visible node, keyed by node id. This node itself is never
/// in it: its own status and Raft readiness are known directly.
pub type ObserverView = BTreeMap<String, ObservedNode>;

/// A failed check of the consensus probe (ops.md §2).
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeFailure {
    /// The first group that failed (`None` for failures not tied to a group).
    pub group_id: Option<u32>,
    /// `local_group_down`, `quorum_unreachable`, `raft_state`, `leader_unknown`, `membership`,
    /// `write_timeout`, …
    pub probe_result: &'static str,
    /// Extra `detail` keys of that check (`reachable_replicas`, `state`, `outcome`, …).
    pub extra: Map<String, Value>,
}

/// The result of one consensus probe.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeReport {
    /// Groups checked before the probe stopped (all local groups when it passed).
    pub checked_groups: u32,
    /// The first failure; `None` when every local group passed.
    pub failure: Option<ProbeFailure>,
}

/// What the ops code needs from the cluster. `Send + Sync`: every shard's listener asks it.
pub trait ControlPlane: Send + Sync + 'static {
    /// Startup sync finished (every local group recovered and joined its Raft group).
    fn startup_complete(&self) -> bool;

    /// Run the checks of ops.md §2 over `local_groups` (ascending), stopping at the first failure.
    fn consensus_probe(&self, local_groups: &[u32]) -> ProbeReport;

    /// The leader of `group_id` as known on this node.
    fn group_leader(&self, group_id: u32) -> Option<String>;

    /// The observer's view of the other nodes.
    fn observer(&self) -> ObserverView;

    /// Hand over leadership of every group this node leads to a ready, up-to-date replica
    /// (drain and shutdown, cluster.md §7). Resolves when done or given up.
    fn transfer_leaderships(&self) -> ControlFuture<'_, ()>;

    /// Tell the other nodes about this node's drain mark (`None`: not draining).
    fn announce_drain(&self, mark: Option<DrainReason>);

    /// Readiness just computed this node's Raft (or router) readiness; the observer reports
    /// it to the other nodes.
    fn note_local_readiness(&self, _consensus_ready: bool) {}

    /// The plane's own background work (observer maintenance, status reports, drain and
    /// leader balance), run by the ops listener's executor for as long as it serves.
    fn run<'a>(&'a self, _node: &'a NodeState) -> LocalControlFuture<'a> {
        Box::pin(std::future::pending())
    }

    /// Ask write node `node` (not this one) to set (`draining`) or clear its operator drain mark.
    fn forward_drain(
        &self,
        node: &str,
        draining: bool,
    ) -> ControlFuture<'_, Result<(), ControlError>>;
}

/// The control plane of a node that is the only voter of every group it hosts.
#[derive(Clone, Debug)]
pub struct LocalControlPlane {
    node_id: String,
    hosted_groups: Vec<bool>,
}

impl LocalControlPlane {
    /// `local_groups` are the groups this node hosts (its placement), `num_groups` the total.
    pub fn new(node_id: &str, local_groups: &[u32], num_groups: u32) -> LocalControlPlane {
        let mut hosted_groups = vec![false; num_groups as usize];
        for &group_id in local_groups {
            if let Some(hosted) = hosted_groups.get_mut(group_id as usize) {
                *hosted = true;
            }
        }
        LocalControlPlane {
            node_id: node_id.to_owned(),
            hosted_groups,
        }
    }
}

impl ControlPlane for LocalControlPlane {
    fn startup_complete(&self) -> bool {
        // The engine calls the serve closure, which builds the listeners, only after every
        // shard recovered and every single-voter group elected itself.
        true
    }

    fn consensus_probe(&self, local_groups: &[u32]) -> ProbeReport {
        // A single voter is running, is its own quorum, leads, and is a voter of its group.
        ProbeReport {
            checked_groups: u32::try_from(local_groups.len()).unwrap_or(u32::MAX),
            failure: None,
        }
    }

    fn group_leader(&self, group_id: u32) -> Option<String> {
        let hosted = self.hosted_groups.get(group_id as usize).copied();
        hosted.unwrap_or(false).then(|| self.node_id.clone())
    }

    fn observer(&self) -> ObserverView {
        ObserverView::new()
    }

    fn transfer_leaderships(&self) -> ControlFuture<'_, ()> {
        // No other voter could take over.
        Box::pin(async {})
    }

    fn announce_drain(&self, _mark: Option<DrainReason>) {
        // No peers to inform.
    }

    fn forward_drain(
        &self,
        node: &str,
        _draining: bool,
    ) -> ControlFuture<'_, Result<(), ControlError>> {
        // Other configured write nodes exist only in a cluster, which needs the peer transport
        // to reach them.
        let node = node.to_owned();
        Box::pin(async move { Err(ControlError::Unreachable { node }) })
    }
}
