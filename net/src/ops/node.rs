//! [`NodeState`]: the node-wide control state every listener shares — static cluster facts, the
//! drain marks, the cached consensus probe and the control plane — and the derived views of
//! ops.md §2–§4 (readiness, `ready_nodes`, `local_drained`, group replicas, the status object).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use starcite_engine::api::{NodeMode, NotReady};
use starcite_engine::archiver::ArchiveProgress;
use starcite_engine::{metrics, placement};

use super::control::{ControlPlane, NodeStatus, ProbeFailure, ProbeReport};
use super::drain::{DrainError, DrainState};
use super::readiness::{
    compose, ConsensusState, ProbeSnapshot, ReadinessInputs, CONSENSUS_PROBE_FRESH_MS,
};
use super::status::{
    ArchiveView, DrainView, NodeStatusView, ObserverStatus, RaftStorage, StatusObject,
};

/// The configuration facts the ops code needs (identical on every node of a cluster except
/// `node_id` and the directories).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSettings {
    /// `NODE_NAME`.
    pub node_id: String,
    /// Write node or router node.
    pub mode: NodeMode,
    /// `STARCITE_WRITE_NODE_IDS` in configured order.
    pub write_nodes: Vec<String>,
    /// `STARCITE_WRITE_REPLICATION_FACTOR`.
    pub replication_factor: u32,
    /// `STARCITE_NUM_GROUPS`.
    pub num_groups: u32,
    /// `STARCITE_DATA_DIR`.
    pub data_dir: PathBuf,
    /// `STARCITE_RAFT_DATA_DIR`.
    pub raft_data_dir: PathBuf,
}

impl NodeSettings {
    /// This node is one of the configured write nodes.
    pub fn is_write_node(&self) -> bool {
        self.write_nodes.contains(&self.node_id)
    }

    /// `id` is a configured write node.
    pub fn is_configured_write_node(&self, id: &str) -> bool {
        self.write_nodes.iter().any(|node| node == id)
    }

    /// The replicas of `group_id` (cluster.md §3).
    pub fn replicas(&self, group_id: u32) -> Vec<String> {
        placement::replicas(
            group_id,
            &self.write_nodes,
            self.replication_factor as usize,
        )
    }

    /// Every group this node is a replica of, ascending.
    pub fn local_groups(&self) -> Vec<u32> {
        if !self.is_write_node() {
            return Vec::new();
        }
        (0..self.num_groups)
            .filter(|&group_id| self.replicas(group_id).contains(&self.node_id))
            .collect()
    }
}

/// One group's placement as `/ops/group-replicas` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupReplicas {
    /// The group.
    pub group_id: u32,
    /// Its voters in placement order.
    pub replicas: Vec<String>,
    /// The leader as known on this node.
    pub leader: Option<String>,
}

struct ProbeRecord {
    at: Instant,
    report: ProbeReport,
}

/// The adapter `/ops/status` names until the node's archiver is attached (config.md default).
const ARCHIVE_ADAPTER_DEFAULT: &str = "local";

/// The node-wide control state, shared by every shard (`Send + Sync`).
pub struct NodeState {
    settings: NodeSettings,
    local_groups: Vec<u32>,
    plane: Arc<dyn ControlPlane>,
    drain: DrainState,
    probe: Mutex<Option<ProbeRecord>>,
    /// Fed by the node's archiver; read by `/ops/status`.
    archive: Arc<ArchiveProgress>,
}

impl NodeState {
    /// Build the state; `drain` holds the marks loaded from the data directory.
    pub fn new(
        settings: NodeSettings,
        plane: Arc<dyn ControlPlane>,
        drain: DrainState,
    ) -> NodeState {
        let local_groups = settings.local_groups();
        let state = NodeState {
            settings,
            local_groups,
            plane,
            drain,
            probe: Mutex::new(None),
            archive: Arc::new(ArchiveProgress::new(ARCHIVE_ADAPTER_DEFAULT)),
        };
        metrics::global().set_node_draining(state.drain.is_draining());
        state
    }

    /// Report `progress` (the one the node's archiver feeds) as `archive` of `/ops/status`.
    pub fn with_archive_progress(mut self, progress: Arc<ArchiveProgress>) -> NodeState {
        self.archive = progress;
        self
    }

    /// The configuration facts.
    pub fn settings(&self) -> &NodeSettings {
        &self.settings
    }

    /// The control plane.
    pub fn plane(&self) -> &dyn ControlPlane {
        self.plane.as_ref()
    }

    /// The drain marks.
    pub fn drain(&self) -> &DrainState {
        &self.drain
    }

    /// Groups this node is a replica of, ascending.
    pub fn local_groups(&self) -> &[u32] {
        &self.local_groups
    }

    /// Raft (or router) readiness, re-running the probe when the last one is stale.
    pub fn consensus(&self) -> ConsensusState {
        if !self.plane.startup_complete() {
            return ConsensusState {
                startup_complete: false,
                probe: None,
            };
        }
        let mut record = self
            .probe
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let stale = record
            .as_ref()
            .is_none_or(|record| age_ms(record.at) > CONSENSUS_PROBE_FRESH_MS);
        if stale {
            *record = Some(ProbeRecord {
                at: Instant::now(),
                report: self.plane.consensus_probe(&self.local_groups),
            });
        }
        ConsensusState {
            startup_complete: true,
            probe: record.as_ref().map(|record| ProbeSnapshot {
                age_ms: age_ms(record.at),
                report: record.report.clone(),
            }),
        }
    }

    /// Immediate demotion (ops.md §2): readiness reports `failure` until a probe at least
    /// [`CONSENSUS_PROBE_FRESH_MS`] later succeeds. The write path calls this after a commit
    /// timeout; the observer after a disconnect that leaves a group without quorum.
    pub fn demote(&self, failure: ProbeFailure) {
        let mut record = self
            .probe
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *record = Some(ProbeRecord {
            at: Instant::now(),
            report: ProbeReport {
                checked_groups: 0,
                failure: Some(failure),
            },
        });
    }

    /// `ready_nodes` (ops.md §3): write nodes with status `ready` that are Raft-ready, sorted.
    /// This node counts directly: ready unless draining, Raft-ready per `consensus_ready`.
    pub fn ready_nodes(&self, consensus_ready: bool) -> Vec<String> {
        let local_ready = self.settings.is_write_node() && !self.drain.is_draining();
        let mut nodes: Vec<String> = self
            .plane
            .observer()
            .into_iter()
            .filter(|(node, observed)| {
                observed.status == NodeStatus::Ready
                    && observed.raft_ready
                    && self.settings.is_configured_write_node(node)
            })
            .map(|(node, _)| node)
            .collect();
        if local_ready && consensus_ready {
            nodes.push(self.settings.node_id.clone());
        }
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// Write nodes that report Raft readiness (this node directly), sorted.
    pub fn raft_ready_nodes(&self, consensus_ready: bool) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .plane
            .observer()
            .into_iter()
            .filter(|(node, observed)| {
                observed.raft_ready && self.settings.is_configured_write_node(node)
            })
            .map(|(node, _)| node)
            .collect();
        if self.settings.is_write_node() && consensus_ready {
            nodes.push(self.settings.node_id.clone());
        }
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// The composition of ops.md §2 on top of the engine's own verdict `storage`; also keeps
    /// the `starcite_node_ready` and `starcite_node_draining` gauges current.
    pub fn readiness(&self, storage: Result<(), NotReady>) -> Result<(), NotReady> {
        let consensus = self.consensus();
        let in_ready_nodes = self
            .ready_nodes(consensus.is_ready())
            .contains(&self.settings.node_id);
        let draining = self.drain.is_draining();
        self.plane.note_local_readiness(consensus.is_ready());
        let result = compose(&ReadinessInputs {
            mode: self.settings.mode,
            storage,
            draining,
            consensus,
            in_ready_nodes,
        });
        metrics::global().set_node_ready(result.is_ok());
        metrics::global().set_node_draining(draining);
        result
    }

    /// `local_drained` (ops.md §4): a write node, marked draining, not in `ready_nodes`, seen
    /// draining by every visible node, and leading no group that another ready replica could
    /// lead. A node that is merely unready is not drained.
    pub fn local_drained(&self) -> bool {
        if !self.settings.is_write_node() || !self.drain.is_draining() {
            return false;
        }
        let consensus_ready = self.consensus().is_ready();
        let ready_nodes = self.ready_nodes(consensus_ready);
        if ready_nodes.contains(&self.settings.node_id) {
            return false;
        }
        if !self
            .plane
            .observer()
            .values()
            .all(|observed| observed.reports_local_draining)
        {
            return false;
        }
        // Up-to-dateness of the other replica is the control plane's to judge when it hands
        // leadership over; here a ready replica is enough to say the hand-off is not done.
        !self.local_groups.iter().any(|&group_id| {
            self.leads(group_id)
                && self
                    .settings
                    .replicas(group_id)
                    .iter()
                    .any(|node| *node != self.settings.node_id && ready_nodes.contains(node))
        })
    }

    fn leads(&self, group_id: u32) -> bool {
        self.plane.group_leader(group_id).as_deref() == Some(self.settings.node_id.as_str())
    }

    /// The placement and known leader of `group_id` (`None` when out of range).
    pub fn group_replicas(&self, group_id: u32) -> Option<GroupReplicas> {
        (group_id < self.settings.num_groups).then(|| GroupReplicas {
            group_id,
            replicas: self.settings.replicas(group_id),
            leader: self.plane.group_leader(group_id),
        })
    }

    /// Set the operator's drain mark on this node, tell the peers, hand leaderships over.
    /// Idempotent: a second drain changes nothing.
    pub async fn drain_local(&self) -> Result<(), DrainError> {
        self.mark_draining()?;
        self.plane.transfer_leaderships().await;
        Ok(())
    }

    /// The first half of [`NodeState::drain_local`]: set the operator's mark and tell the
    /// peers, without waiting for the leadership hand-off.
    pub fn mark_draining(&self) -> Result<(), DrainError> {
        let changed = self
            .drain
            .mark_operator(&self.settings.node_id, unix_now_ms())?;
        metrics::global().set_node_draining(true);
        metrics::global().set_node_ready(false);
        if changed {
            tracing::info!("node {} marked draining by operator", self.settings.node_id);
            self.plane.announce_drain(self.drain.reason());
        }
        Ok(())
    }

    /// Clear the operator's drain mark on this node and tell the peers. Idempotent.
    pub fn undrain_local(&self) -> Result<(), DrainError> {
        let changed = self.drain.clear_operator()?;
        let draining = self.drain.is_draining();
        metrics::global().set_node_draining(draining);
        if changed {
            tracing::info!(
                "node {} drain mark cleared by operator",
                self.settings.node_id
            );
            self.plane.announce_drain(self.drain.reason());
        }
        Ok(())
    }

    /// Step 1 of the shutdown sequence (ops.md §6): mark draining with reason `shutdown`
    /// (readiness `503 draining` at once) and tell the peers.
    pub fn begin_shutdown(&self) {
        self.drain.mark_shutdown();
        metrics::global().set_node_draining(true);
        metrics::global().set_node_ready(false);
        self.plane.announce_drain(self.drain.reason());
    }

    /// The status object of `GET /ops/status`.
    pub fn status(&self, storage: Result<(), NotReady>) -> StatusObject {
        let local_ready = self.readiness(storage).is_ok();
        let consensus_ready = self.consensus().is_ready();
        let observer = self.plane.observer();
        let leaders: Vec<Option<String>> = self
            .local_groups
            .iter()
            .map(|&group_id| self.plane.group_leader(group_id))
            .collect();
        let node_id = &self.settings.node_id;
        let leader_groups = leaders
            .iter()
            .filter(|leader| leader.as_ref() == Some(node_id))
            .count() as u64;
        let groups_without_leader = leaders.iter().filter(|leader| leader.is_none()).count() as u64;
        let archive = self.archive.snapshot();
        StatusObject {
            node: node_id.clone(),
            local_write_node: self.settings.is_write_node(),
            local_mode: self.settings.mode.as_str(),
            local_ready,
            local_drained: self.local_drained(),
            write_nodes: self.settings.write_nodes.clone(),
            write_replication_factor: self.settings.replication_factor,
            num_groups: self.settings.num_groups,
            local_groups: self.local_groups.clone(),
            leader_groups,
            drain: DrainView {
                draining: self.drain.is_draining(),
                reason: self.drain.reason().map(|reason| reason.as_str()),
            },
            raft_storage: RaftStorage {
                starcite_data_dir: self.settings.data_dir.display().to_string(),
                raft_data_dir: self.settings.raft_data_dir.display().to_string(),
            },
            observer: ObserverStatus {
                status: "ok",
                visible_nodes: observer.keys().cloned().collect(),
                ready_nodes: self.ready_nodes(consensus_ready),
                node_statuses: observer
                    .iter()
                    .map(|(node, observed)| {
                        let view = NodeStatusView {
                            status: observed.status.as_str(),
                            changed_at_ms: observed.changed_at_ms,
                        };
                        (node.clone(), view)
                    })
                    .collect(),
                raft_ready_nodes: self.raft_ready_nodes(consensus_ready),
            },
            groups_without_leader,
            archive: ArchiveView {
                adapter: archive.adapter.to_owned(),
                lag_events: archive.lag_events,
                pending_sessions: archive.pending_sessions,
                last_error: archive.last_error,
            },
        }
    }
}

fn age_ms(at: Instant) -> u64 {
    u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ops::control::{LocalControlPlane, ObservedNode, ObserverView};

    fn settings(write_nodes: &[&str], node_id: &str) -> NodeSettings {
        NodeSettings {
            node_id: node_id.to_owned(),
            mode: NodeMode::WriteNode,
            write_nodes: write_nodes.iter().map(|node| node.to_string()).collect(),
            replication_factor: write_nodes.len().min(3) as u32,
            num_groups: 8,
            data_dir: PathBuf::from("/d"),
            raft_data_dir: PathBuf::from("/d/raft"),
        }
    }

    fn single_node() -> NodeState {
        let settings = settings(&["n1@h"], "n1@h");
        let plane = LocalControlPlane::new("n1@h", &settings.local_groups(), 8);
        NodeState::new(settings, Arc::new(plane), DrainState::in_memory())
    }

    #[test]
    fn a_single_node_leads_everything_and_drains_at_once() {
        let node = single_node();
        assert_eq!(node.local_groups(), (0..8).collect::<Vec<_>>());
        assert_eq!(node.readiness(Ok(())), Ok(()));
        assert_eq!(node.ready_nodes(true), ["n1@h"]);
        assert!(!node.local_drained());
        futures_lite::future::block_on(node.drain_local()).unwrap();
        assert_eq!(node.readiness(Ok(())).unwrap_err().reason, "draining");
        assert!(node.ready_nodes(true).is_empty());
        assert!(node.local_drained());
        let status = node.status(Ok(()));
        assert_eq!(status.leader_groups, 8);
        assert_eq!(status.groups_without_leader, 0);
        assert_eq!(status.drain.reason, Some("operator"));
        node.undrain_local().unwrap();
        assert_eq!(node.readiness(Ok(())), Ok(()));
        assert!(!node.local_drained(), "a ready node is not drained");
    }

    #[test]
    fn demotion_lasts_until_a_later_probe() {
        let node = single_node();
        node.demote(ProbeFailure {
            group_id: Some(3),
            probe_result: "write_timeout",
            extra: serde_json::Map::new(),
        });
        let not_ready = node.readiness(Ok(())).unwrap_err();
        assert_eq!(not_ready.reason, "raft_sync");
        assert_eq!(not_ready.detail.unwrap()["failing_group_id"], 3);
    }

    /// A plane with one other write node that is ready and leads nothing.
    struct TwoNodes(LocalControlPlane);

    impl ControlPlane for TwoNodes {
        fn startup_complete(&self) -> bool {
            true
        }
        fn consensus_probe(&self, local_groups: &[u32]) -> ProbeReport {
            self.0.consensus_probe(local_groups)
        }
        fn group_leader(&self, group_id: u32) -> Option<String> {
            self.0.group_leader(group_id)
        }
        fn observer(&self) -> ObserverView {
            let mut view = ObserverView::new();
            view.insert(
                "n2@h".into(),
                ObservedNode {
                    status: NodeStatus::Ready,
                    changed_at_ms: 5,
                    raft_ready: true,
                    reports_local_draining: true,
                },
            );
            view
        }
        fn transfer_leaderships(&self) -> super::super::control::ControlFuture<'_, ()> {
            Box::pin(async {})
        }
        fn announce_drain(&self, _mark: Option<crate::ops::drain::DrainReason>) {}
        fn forward_drain(
            &self,
            node: &str,
            draining: bool,
        ) -> super::super::control::ControlFuture<'_, Result<(), super::super::ControlError>>
        {
            self.0.forward_drain(node, draining)
        }
    }

    #[test]
    fn a_leader_with_a_ready_replica_is_not_drained() {
        let settings = settings(&["n1@h", "n2@h"], "n1@h");
        let local = LocalControlPlane::new("n1@h", &settings.local_groups(), 8);
        let node = NodeState::new(settings, Arc::new(TwoNodes(local)), DrainState::in_memory());
        assert_eq!(node.ready_nodes(true), ["n1@h", "n2@h"]);
        futures_lite::future::block_on(node.drain_local()).unwrap();
        assert_eq!(node.ready_nodes(true), ["n2@h"]);
        assert!(!node.local_drained(), "still leads groups n2 could take");
        let status = node.status(Ok(()));
        assert_eq!(status.observer.visible_nodes, ["n2@h"]);
        assert_eq!(status.observer.raft_ready_nodes, ["n1@h", "n2@h"]);
    }

    /// `/ops/status` reports what the archiver last fed into the shared progress cell: its
    /// lag, and the last write error until a write succeeds.
    #[test]
    fn status_reports_the_archivers_progress() {
        let progress = Arc::new(ArchiveProgress::new("s3"));
        let node = single_node().with_archive_progress(progress.clone());
        let idle = node.status(Ok(())).archive;
        assert_eq!(idle.adapter, "s3");
        assert_eq!((idle.lag_events, idle.pending_sessions), (0, 0));
        assert_eq!(idle.last_error, None);

        progress.set_lag(120, 3);
        progress.record_write(Some("PUT rejected: HTTP 403 SignatureDoesNotMatch".into()));
        let failing = node.status(Ok(())).archive;
        assert_eq!((failing.lag_events, failing.pending_sessions), (120, 3));
        assert_eq!(
            failing.last_error.as_deref(),
            Some("PUT rejected: HTTP 403 SignatureDoesNotMatch")
        );
        let json = serde_json::to_value(node.status(Ok(()))).unwrap();
        assert_eq!(json["archive"]["lag_events"], 120);
        assert_eq!(json["archive"]["adapter"], "s3");

        progress.record_write(None);
        progress.set_lag(0, 0);
        let caught_up = node.status(Ok(())).archive;
        assert_eq!((caught_up.lag_events, caught_up.pending_sessions), (0, 0));
        assert_eq!(caught_up.last_error, None);
    }

    #[test]
    fn group_replicas_follow_placement() {
        let node = single_node();
        let group = node.group_replicas(7).unwrap();
        assert_eq!(group.replicas, ["n1@h"]);
        assert_eq!(group.leader.as_deref(), Some("n1@h"));
        assert_eq!(node.group_replicas(8), None);
    }
}
