//! The control plane's background work, on the ops listener's executor: this node's status
//! report to every connected node every [`STATUS_INTERVAL`], observer maintenance every
//! [`MAINTENANCE_INTERVAL`], the immediate demotion when a disconnect leaves a local group
//! without quorum, forwarded drains, drain hand-offs retried while the node is
//! draining, and the leader balance of cluster.md §7.1 (whenever a write node becomes ready and
//! not draining, and every [`BALANCE_INTERVAL`]). Transfers run as their own tasks, one batch at
//! a time, so that status reports keep their pace meanwhile.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use serde_json::Map;
use starcite_engine::cluster::{Clock, ClusterLink, DrainRequest, PeerStatus, WriteTimeout};
use starcite_net::ops::control::ProbeFailure;
use starcite_net::ops::NodeState;
use starcite_raft::NodeId;

use super::{balance, transfer, FORWARD_DRAIN_TIMEOUT};

/// How often this node reports its status to every connected node (a peer's Raft readiness
/// counts for 1 s after its report).
pub const STATUS_INTERVAL: Duration = Duration::from_millis(400);

/// How often the observer ages disconnected nodes and a draining node retries its hand-offs.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// How often the leader balance runs besides when a write node becomes ready.
pub const BALANCE_INTERVAL: Duration = Duration::from_secs(5);

/// Runs until the ops listener stops (the future is dropped).
pub async fn run(link: Arc<ClusterLink>, node: &NodeState, transfer_timeout: Duration) {
    let Some(drain_requests) = link.take_drain_requests() else {
        return future::pending().await;
    };
    let transferring = Rc::new(Cell::new(false));
    let mut next_status = Instant::now();
    let mut next_maintenance = Instant::now() + MAINTENANCE_INTERVAL;
    let mut next_balance = Instant::now() + BALANCE_INTERVAL;
    let mut ready_writers_before: Vec<NodeId> = Vec::new();
    let mut connected_before = connected_nodes(&link);
    loop {
        let pause = next_status.saturating_duration_since(Instant::now());
        let request = future::or(async { drain_requests.recv_async().await.ok() }, async {
            glommio::timer::sleep(pause).await;
            None
        })
        .await;
        if let Some(request) = request {
            apply_forwarded_drain(&link, node, request);
        }
        let now = Instant::now();
        if now >= next_status {
            next_status = now + STATUS_INTERVAL;
            link.expire_drain_calls(FORWARD_DRAIN_TIMEOUT);
            link.broadcast_status();
        }
        let connected = connected_nodes(&link);
        for lost in connected_before.iter().filter(|id| !connected.contains(id)) {
            demote_if_quorum_lost(&link, node, *lost);
        }
        connected_before = connected;
        if let Some(timeout) = link.take_write_timeout() {
            demote_for_write_timeout(node, timeout);
        }
        let write_node = link.topology().is_write_node();
        let draining = node.drain().is_draining();
        if now >= next_maintenance {
            next_maintenance = now + MAINTENANCE_INTERVAL;
            link.observer().maintain(Clock::now());
            if write_node && draining && !transferring.get() && !link.led_groups().is_empty() {
                spawn_transfers(
                    &transferring,
                    transfer::drain(link.clone(), transfer_timeout),
                );
            }
        }
        let ready_writers = ready_writers(&link);
        let became_ready = ready_writers
            .iter()
            .any(|node_id| !ready_writers_before.contains(node_id));
        ready_writers_before.clone_from(&ready_writers);
        if write_node && !draining && (became_ready || now >= next_balance) {
            next_balance = now + BALANCE_INTERVAL;
            if !transferring.get() {
                let work = rebalance(link.clone(), ready_writers, transfer_timeout);
                spawn_transfers(&transferring, work);
            }
        }
    }
}

/// Other nodes the peer transport reaches now.
fn connected_nodes(link: &ClusterLink) -> Vec<NodeId> {
    let self_id = link.node_id();
    (1..=link.topology().names.len() as NodeId)
        .filter(|node_id| *node_id != self_id && link.is_connected(*node_id))
        .collect()
}

/// Immediate demotion (ops.md §2): losing `lost` left a local group without a quorum of
/// reachable replicas.
fn demote_if_quorum_lost(link: &ClusterLink, node: &NodeState, lost: NodeId) {
    let replicas = &link.topology().group_replicas;
    let failing = link.local_groups().into_iter().find_map(|group_id| {
        let placement = replicas.get(group_id as usize)?;
        if !placement.contains(&lost) {
            return None;
        }
        let reachable = placement
            .iter()
            .filter(|replica| link.is_connected(**replica))
            .count();
        let quorum = placement.len() / 2 + 1;
        (reachable < quorum).then_some((group_id, reachable, quorum))
    });
    let Some((group_id, reachable, quorum)) = failing else {
        return;
    };
    let mut extra = Map::new();
    extra.insert("reachable_replicas".into(), reachable.into());
    extra.insert("required_quorum".into(), quorum.into());
    if let Some(name) = link.topology().name_of(lost) {
        extra.insert("node".into(), name.into());
    }
    node.demote(ProbeFailure {
        group_id: Some(group_id),
        probe_result: "quorum_unreachable",
        extra,
    });
}

/// Immediate demotion (ops.md §2): a write on this node ended in a commit timeout.
fn demote_for_write_timeout(node: &NodeState, timeout: WriteTimeout) {
    let mut extra = Map::new();
    extra.insert("outcome".into(), timeout.outcome.into());
    // The contract's example names no failing group for a write timeout.
    node.demote(ProbeFailure {
        group_id: None,
        probe_result: "write_timeout",
        extra,
    });
}

/// Runs `work` as its own task; `transferring` is set meanwhile.
fn spawn_transfers(
    transferring: &Rc<Cell<bool>>,
    work: impl std::future::Future<Output = ()> + 'static,
) {
    transferring.set(true);
    let transferring = transferring.clone();
    glommio::spawn_local(async move {
        work.await;
        transferring.set(false);
    })
    .detach();
}

/// Write nodes that are ready and not draining, this node included, ascending.
fn ready_writers(link: &ClusterLink) -> Vec<NodeId> {
    let clock = Clock::now();
    let write_nodes = link.topology().write_node_count as NodeId;
    let mut nodes: Vec<NodeId> = link
        .observer()
        .view(clock)
        .into_iter()
        .filter(|peer| {
            peer.node_id <= write_nodes && peer.status == PeerStatus::Ready && peer.raft_ready
        })
        .map(|peer| peer.node_id)
        .collect();
    let self_id = link.node_id();
    if link.topology().is_write_node() && link.observer().is_ready(self_id, clock) {
        nodes.push(self_id);
    }
    nodes.sort_unstable();
    nodes
}

/// One round of the leader balance (cluster.md §7.1).
async fn rebalance(link: Arc<ClusterLink>, ready_writers: Vec<NodeId>, timeout: Duration) {
    let self_id = link.node_id();
    if !ready_writers.contains(&self_id) {
        return;
    }
    let views = link.leader_views().await;
    let mut led: BTreeMap<NodeId, usize> = link
        .observer()
        .view(Clock::now())
        .into_iter()
        .map(|peer| (peer.node_id, peer.led_groups as usize))
        .collect();
    led.insert(self_id, views.len());
    let groups = link.topology().group_replicas.len();
    let plan = balance::plan_balance(
        self_id,
        groups,
        &ready_writers,
        &led,
        &views,
        &link.topology().group_replicas,
    );
    if plan.is_empty() {
        return;
    }
    let moved = transfer::run(&link, &plan, timeout).await;
    tracing::info!(
        "leader balance: handed over {moved} of {} planned groups (led {}, fair share {})",
        plan.len(),
        views.len(),
        balance::fair_share(groups, ready_writers.len())
    );
}

/// Applies a drain or undrain that another node forwarded and answers it. The hand-off of a
/// drain follows from the maintenance loop, so that the caller does not wait for it.
fn apply_forwarded_drain(link: &ClusterLink, node: &NodeState, request: DrainRequest) {
    let applied = if request.draining {
        node.mark_draining()
    } else {
        node.undrain_local()
    };
    if let Err(error) = &applied {
        tracing::error!("failed to apply a forwarded drain mark: {error}");
    }
    link.reply_drain(request.from, request.call_id, applied.is_ok());
}
