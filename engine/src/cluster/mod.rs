//! The replicated cluster as one node sees it: node identities, group placement, the bounded
//! bridge to the peer transport, forwarded-request calls, the leader table and the leader hint
//! cache (cluster.md §5).
//!
//! The peer transport runs on one executor and is not `Send`; every shard talks to it through
//! a [`ClusterLink`] (`Send + Sync`):
//! - outgoing peer messages (Raft batches, forwarded requests and replies, commit
//!   notifications) go into one bounded queue ([`PEER_OUTBOUND_MESSAGES_MAX`]) that the
//!   executor owning the transport drains ([`ClusterLink::take_outbound`]);
//! - that executor hands received frames to [`ClusterLink::deliver`], which puts Raft batches on
//!   the owning shards' inboxes, completes pending calls with their replies, publishes commit
//!   notifications, and returns forwarded requests for the caller to execute locally.
//!
//! The control-plane side (`control`, `observer`): the members' roles as the shards publish
//! them, startup sync, the observer of ops.md §3 fed by the node-status reports, forwarded
//! drains, and the leader views and transfers of drain and leader balance.
//!
//! # Node ids
//! Raft needs numeric node ids. Write nodes get `1..=W` in ascending byte order of their
//! `NODE_NAME`; router nodes get `W+1..` in the same order. Every node derives the same ids from
//! the same (fingerprinted) topology, so ids never travel on the wire as names.

mod control;
pub mod message;
pub mod observer;
pub(crate) mod router;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use starcite_raft::{NodeId, Role, NO_NODE};

use crate::api::Notification;
use crate::notify::NotifyHub;
use crate::placement;
use crate::raftlog::{RaftInbox, RaftTransport};

pub use control::{DrainRequest, DRAIN_CALLS_MAX, DRAIN_REQUESTS_MAX};
pub use message::{
    DrainMark, MessageError, NodeStatusReport, PeerMessage, RoutedOp, RoutedOutcome, RoutedReply,
};
pub use observer::{Clock, ObservedPeer, Observer, PeerStatus};
pub use router::{FORWARD_RPC_TIMEOUT, LEADER_CACHE_TTL_DEFAULT};

/// Bound of the queue of messages waiting for the executor that owns the peer transport.
pub const PEER_OUTBOUND_MESSAGES_MAX: usize = 16_384;

/// Bound of the forwarded calls of one node waiting for their replies.
pub const PENDING_CALLS_MAX: usize = 16_384;

/// Why a node list does not make a topology.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// This node is not in the cluster list.
    #[error("node {0} is not in the cluster node list")]
    UnknownSelf(String),
    /// A write node is not in the cluster list.
    #[error("write node {0} is not in the cluster node list")]
    UnknownWriteNode(String),
    /// The replication factor is zero or exceeds the write nodes.
    #[error("replication factor {factor} does not fit {write_nodes} write nodes")]
    ReplicationFactor {
        /// The configured factor.
        factor: usize,
        /// Number of write nodes.
        write_nodes: usize,
    },
}

/// Node names, their Raft ids and every group's replicas.
#[derive(Clone, Debug)]
pub struct Topology {
    /// This node's id.
    pub node_id: NodeId,
    /// Names by id (`names[id - 1]`).
    pub names: Vec<String>,
    /// Number of write nodes (ids `1..=write_node_count`).
    pub write_node_count: usize,
    /// Replicas of each group in placement order (the first is the preferred leader).
    pub group_replicas: Vec<Vec<NodeId>>,
}

impl Topology {
    /// The topology of `cluster_nodes` (every node's `NODE_NAME`), `write_nodes` and `self_name`.
    pub fn new(
        self_name: &str,
        cluster_nodes: &[String],
        write_nodes: &[String],
        replication_factor: usize,
        num_groups: u32,
    ) -> Result<Topology, TopologyError> {
        let mut writers: Vec<String> = write_nodes.to_vec();
        writers.sort_unstable();
        writers.dedup();
        for writer in &writers {
            if !cluster_nodes.contains(writer) {
                return Err(TopologyError::UnknownWriteNode(writer.clone()));
            }
        }
        if replication_factor == 0 || replication_factor > writers.len() {
            return Err(TopologyError::ReplicationFactor {
                factor: replication_factor,
                write_nodes: writers.len(),
            });
        }
        let mut routers: Vec<String> = cluster_nodes
            .iter()
            .filter(|node| !writers.contains(node))
            .cloned()
            .collect();
        routers.sort_unstable();
        routers.dedup();
        let write_node_count = writers.len();
        let mut names = writers;
        names.extend(routers);
        let node_id = names
            .iter()
            .position(|name| name == self_name)
            .map(|position| position as NodeId + 1)
            .ok_or_else(|| TopologyError::UnknownSelf(self_name.to_string()))?;
        let writer_names = &names[..write_node_count];
        let group_replicas = (0..num_groups)
            .map(|group_id| {
                placement::replicas(group_id, writer_names, replication_factor)
                    .iter()
                    .filter_map(|name| {
                        names
                            .iter()
                            .position(|candidate| candidate == name)
                            .map(|position| position as NodeId + 1)
                    })
                    .collect()
            })
            .collect();
        Ok(Topology {
            node_id,
            names,
            write_node_count,
            group_replicas,
        })
    }

    /// The voters of every group (its replicas, sorted by id as the Raft core expects a set).
    pub fn group_voters(&self) -> Vec<Vec<NodeId>> {
        self.group_replicas
            .iter()
            .map(|replicas| {
                let mut voters = replicas.clone();
                voters.sort_unstable();
                voters
            })
            .collect()
    }

    /// The name of node `node_id`.
    pub fn name_of(&self, node_id: NodeId) -> Option<&str> {
        let position = usize::try_from(node_id).ok()?.checked_sub(1)?;
        self.names.get(position).map(String::as_str)
    }

    /// The id of the node named `name`.
    pub fn id_of(&self, name: &str) -> Option<NodeId> {
        self.names
            .iter()
            .position(|candidate| candidate == name)
            .map(|position| position as NodeId + 1)
    }

    /// Whether this node is a write node.
    pub fn is_write_node(&self) -> bool {
        usize::try_from(self.node_id).is_ok_and(|id| id <= self.write_node_count)
    }
}

/// A message for the transport's executor: destination node and frame body.
pub type OutboundMessage = (NodeId, Vec<u8>);

/// What [`ClusterLink::deliver`] leaves to the caller.
#[derive(Debug)]
pub enum Delivered {
    /// Handled (Raft batch queued, call completed, notification published, or dropped).
    Done,
    /// A forwarded request to execute on this node and answer with `call_id`.
    Request {
        /// The calling node.
        from: NodeId,
        /// The caller's call id, echoed in the reply.
        call_id: u64,
        /// What to execute.
        op: RoutedOp,
    },
}

/// The node-wide cluster state shared by every shard (see the module documentation).
pub struct ClusterLink {
    topology: Topology,
    outbound: flume::Sender<OutboundMessage>,
    outbound_receiver: Mutex<Option<flume::Receiver<OutboundMessage>>>,
    /// Per node (index `id - 1`): whether the transport currently reaches it.
    connected: Vec<AtomicBool>,
    next_call_id: AtomicU64,
    /// Forwarded calls waiting for their reply: destination and where the reply goes.
    calls: Mutex<HashMap<u64, (NodeId, flume::Sender<RoutedOutcome>)>>,
    /// Per group: the leader as this node's member last saw it (`NO_NODE` when unknown or no
    /// member here).
    leaders: Vec<AtomicU64>,
    /// Leader hints learnt from other nodes' "not leader" answers, with when they were learnt.
    hints: Mutex<HashMap<u32, (NodeId, Instant)>>,
    hint_ttl: Duration,
    inbox: OnceLock<RaftInbox>,
    notify: OnceLock<Arc<NotifyHub>>,
    /// Per group: the role of this node's member ([`ROLE_NONE`] when none runs here).
    roles: Vec<AtomicU8>,
    /// The peer transport runs (set by the bridge).
    transport_started: AtomicBool,
    observer: Observer,
    /// The shards' request queues, for leader views and leadership transfers.
    shards: OnceLock<Vec<flume::Sender<crate::shard::ShardRequest>>>,
    /// Forwarded drains waiting for their answer: destination, when sent, where it goes.
    drain_calls: Mutex<HashMap<u64, control::DrainCall>>,
    drain_requests: flume::Sender<DrainRequest>,
    drain_requests_receiver: Mutex<Option<flume::Receiver<DrainRequest>>>,
    /// The latest write that ended in a commit timeout and is not yet reported to readiness.
    write_timeout: Mutex<Option<WriteTimeout>>,
    /// Per group: since when (ms after `created`, plus one) this node's member has been
    /// electing — a candidate or without a known leader; 0 while it follows or leads a leader;
    /// [`NEVER_SETTLED`] until it first knew a leader.
    unsettled_since_ms: Vec<AtomicU64>,
    created: Instant,
}

/// A write that ended in `503 raft_timeout` on this node: readiness demotes the node at once
/// (ops.md §2, `probe_result` `write_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteTimeout {
    /// The group of the write.
    pub group_id: u32,
    /// `local_timeout` (this node was the leader) or `leader_retry_timeout` (forwarded).
    pub outcome: &'static str,
}

/// A member that has not known a leader since this node started: it is not "briefly electing".
pub(crate) const NEVER_SETTLED: u64 = u64::MAX;

/// No member of the group runs on this node.
const ROLE_NONE: u8 = 0;

fn role_to_byte(role: Role) -> u8 {
    match role {
        Role::Follower => 1,
        Role::PreCandidate => 2,
        Role::Candidate => 3,
        Role::Leader => 4,
    }
}

fn role_from_byte(byte: u8) -> Option<Role> {
    match byte {
        1 => Some(Role::Follower),
        2 => Some(Role::PreCandidate),
        3 => Some(Role::Candidate),
        4 => Some(Role::Leader),
        _ => None,
    }
}

impl std::fmt::Debug for ClusterLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLink")
            .field("node_id", &self.topology.node_id)
            .finish_non_exhaustive()
    }
}

impl ClusterLink {
    /// A link for `topology`; leader hints expire after `hint_ttl`.
    pub fn new(topology: Topology, hint_ttl: Duration) -> Arc<ClusterLink> {
        let (outbound, receiver) = flume::bounded(PEER_OUTBOUND_MESSAGES_MAX);
        let nodes = topology.names.len();
        let groups = topology.group_replicas.len();
        let (drain_requests, drain_requests_receiver) = flume::bounded(DRAIN_REQUESTS_MAX);
        Arc::new(ClusterLink {
            roles: (0..groups).map(|_| AtomicU8::new(ROLE_NONE)).collect(),
            transport_started: AtomicBool::new(false),
            observer: Observer::new(topology.node_id, nodes),
            shards: OnceLock::new(),
            drain_calls: Mutex::new(HashMap::new()),
            drain_requests,
            drain_requests_receiver: Mutex::new(Some(drain_requests_receiver)),
            write_timeout: Mutex::new(None),
            unsettled_since_ms: (0..groups).map(|_| AtomicU64::new(NEVER_SETTLED)).collect(),
            created: Instant::now(),
            outbound,
            outbound_receiver: Mutex::new(Some(receiver)),
            connected: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            next_call_id: AtomicU64::new(1),
            calls: Mutex::new(HashMap::new()),
            leaders: (0..groups).map(|_| AtomicU64::new(NO_NODE)).collect(),
            hints: Mutex::new(HashMap::new()),
            hint_ttl,
            inbox: OnceLock::new(),
            notify: OnceLock::new(),
            topology,
        })
    }

    /// The topology.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.topology.node_id
    }

    /// The queue the transport's executor drains; `None` after the first call.
    pub fn take_outbound(&self) -> Option<flume::Receiver<OutboundMessage>> {
        lock(&self.outbound_receiver).take()
    }

    /// Called by the engine at start: where Raft batches and notifications go.
    pub(crate) fn attach(&self, inbox: RaftInbox, notify: Arc<NotifyHub>) {
        let _ = self.inbox.set(inbox);
        let _ = self.notify.set(notify);
    }

    /// Records whether the transport reaches `name` now. Losing a node fails the calls
    /// waiting for its replies at once: their replies can no longer arrive.
    pub fn set_connected(&self, name: &str, connected: bool) {
        let Some(node_id) = self.topology.id_of(name) else {
            return;
        };
        if let Some(slot) = usize::try_from(node_id - 1)
            .ok()
            .and_then(|position| self.connected.get(position))
        {
            slot.store(connected, Ordering::Release);
        }
        self.observer
            .set_connected(node_id, connected, observer::Clock::now());
        if connected {
            // The new peer learns this node's status at once, not only at the next period.
            self.send_status_to(node_id);
        } else {
            // Dropping the senders wakes the callers with "no reply".
            lock(&self.calls).retain(|_, (to, _)| *to != node_id);
            lock(&self.drain_calls).retain(|_, (to, _, _)| *to != node_id);
        }
    }

    /// Whether the transport reaches `node_id` now (this node always reaches itself).
    pub fn is_connected(&self, node_id: NodeId) -> bool {
        if node_id == self.topology.node_id {
            return true;
        }
        usize::try_from(node_id)
            .ok()
            .and_then(|id| id.checked_sub(1))
            .and_then(|position| self.connected.get(position))
            .is_some_and(|slot| slot.load(Ordering::Acquire))
    }

    /// Queues `body` for `to`; false when the queue is full (the message is dropped).
    fn push(&self, to: NodeId, body: Vec<u8>) -> bool {
        debug_assert_ne!(to, self.topology.node_id, "a node never sends to itself");
        self.outbound.try_send((to, body)).is_ok()
    }

    /// Records the leader of `group_id` as this node's member sees it.
    pub(crate) fn observe_leader(&self, group_id: u32, leader: NodeId) {
        if let Some(slot) = self.leaders.get(group_id as usize) {
            slot.store(leader, Ordering::Relaxed);
        }
    }

    /// The leader of `group_id` as this node's member sees it.
    pub fn local_view_of_leader(&self, group_id: u32) -> Option<NodeId> {
        let leader = self.leaders.get(group_id as usize)?.load(Ordering::Relaxed);
        (leader != NO_NODE).then_some(leader)
    }

    /// Remembers a leader hint for `group_id`.
    pub(crate) fn cache_hint(&self, group_id: u32, leader: NodeId) {
        lock(&self.hints).insert(group_id, (leader, Instant::now()));
    }

    /// The cached hint of `group_id`, if younger than the TTL.
    pub fn cached_hint(&self, group_id: u32) -> Option<NodeId> {
        let hints = lock(&self.hints);
        let (leader, learnt) = hints.get(&group_id)?;
        (learnt.elapsed() < self.hint_ttl).then_some(*leader)
    }

    /// Sends `op` to `to` and returns the receiver of its outcome, or `None` when the message
    /// could not be queued.
    pub(crate) fn call(
        &self,
        to: NodeId,
        op: &RoutedOp,
    ) -> Option<(u64, flume::Receiver<RoutedOutcome>)> {
        let call_id = self.next_call_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = flume::bounded(1);
        {
            let mut calls = lock(&self.calls);
            if calls.len() >= PENDING_CALLS_MAX {
                return None;
            }
            calls.insert(call_id, (to, sender));
        }
        let body = PeerMessage::encode_request(call_id, op);
        if !self.push(to, body) {
            self.forget_call(call_id);
            return None;
        }
        Some((call_id, receiver))
    }

    /// Drops a call that timed out or could not be sent.
    pub(crate) fn forget_call(&self, call_id: u64) {
        lock(&self.calls).remove(&call_id);
    }

    /// Queues the reply to a forwarded request.
    pub fn reply(&self, to: NodeId, call_id: u64, outcome: &RoutedOutcome) {
        if !self.push(to, PeerMessage::encode_reply(call_id, outcome)) {
            tracing::debug!(
                to,
                call_id,
                "dropped a forwarded reply: outbound queue full"
            );
        }
    }

    /// Sends a commit notification of `session_id` to every node that does not replicate
    /// `group_id` (replicas publish on their own apply).
    pub(crate) fn fan_out_notification(
        &self,
        group_id: u32,
        session_id: &str,
        notification: Notification,
    ) {
        let Some(replicas) = self.topology.group_replicas.get(group_id as usize) else {
            return;
        };
        let node_count = self.topology.names.len() as NodeId;
        let mut body = None;
        for node_id in 1..=node_count {
            if replicas.contains(&node_id) || !self.is_connected(node_id) {
                continue;
            }
            let body = body
                .get_or_insert_with(|| PeerMessage::encode_notification(session_id, notification));
            // A lost notification is covered by the tail's periodic catch-up.
            let _ = self.push(node_id, body.clone());
        }
    }

    /// Handles a frame received from `from_name` (see [`Delivered`]).
    pub fn deliver(&self, from_name: &str, body: &[u8]) -> Delivered {
        let Some(from) = self.topology.id_of(from_name) else {
            return Delivered::Done;
        };
        let message = match PeerMessage::decode(body) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(from = from_name, "dropped a peer message: {error}");
                return Delivered::Done;
            }
        };
        match message {
            PeerMessage::Raft(envelope) => {
                if let Some(inbox) = self.inbox.get() {
                    if let Err(error) = inbox.deliver(envelope) {
                        tracing::warn!(from = from_name, "dropped a raft batch: {error}");
                    }
                }
                Delivered::Done
            }
            PeerMessage::Request { call_id, op } => Delivered::Request { from, call_id, op },
            PeerMessage::Reply { call_id, outcome } => {
                if let Some((_, waiter)) = lock(&self.calls).remove(&call_id) {
                    let _ = waiter.try_send(outcome);
                }
                Delivered::Done
            }
            PeerMessage::Notification {
                session_id,
                notification,
            } => {
                if let Some(notify) = self.notify.get() {
                    notify.publish(&session_id, notification);
                }
                Delivered::Done
            }
            PeerMessage::NodeStatus(report) => {
                self.observer
                    .receive_report(from, report, observer::Clock::now());
                Delivered::Done
            }
            PeerMessage::DrainRequest { call_id, draining } => {
                let request = DrainRequest {
                    from,
                    call_id,
                    draining,
                };
                if self.drain_requests.try_send(request).is_err() {
                    tracing::warn!(from = from_name, "dropped a forwarded drain: queue full");
                    self.reply_drain(from, call_id, false);
                }
                Delivered::Done
            }
            PeerMessage::DrainReply { call_id, applied } => {
                if let Some((_, _, waiter)) = lock(&self.drain_calls).remove(&call_id) {
                    let _ = waiter.try_send(applied);
                }
                Delivered::Done
            }
        }
    }
}

impl RaftTransport for ClusterLink {
    fn send(&self, to_node: NodeId, envelope: Vec<u8>) {
        // Raft retransmits; a batch for an unreachable peer only fills its queue with stale
        // messages, so it is dropped here like a lost packet.
        if !self.is_connected(to_node) {
            return;
        }
        let _ = self.push(to_node, PeerMessage::encode_raft(&envelope));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a thread panicked while holding it; the maps stay valid.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn ids_follow_sorted_write_nodes_then_routers() {
        let cluster = names(&["r@h", "c@h", "a@h", "b@h"]);
        let writers = names(&["c@h", "a@h", "b@h"]);
        let topology = Topology::new("r@h", &cluster, &writers, 3, 4).expect("topology");
        assert_eq!(topology.names, names(&["a@h", "b@h", "c@h", "r@h"]));
        assert_eq!(topology.node_id, 4);
        assert!(!topology.is_write_node());
        assert_eq!(topology.id_of("b@h"), Some(2));
        assert_eq!(topology.name_of(3), Some("c@h"));
        for replicas in &topology.group_replicas {
            assert_eq!(replicas.len(), 3);
        }
        assert_eq!(topology.group_voters()[0], vec![1, 2, 3]);
    }

    #[test]
    fn replicas_follow_placement_order() {
        let writers = names(&["node1@node1", "node2@node2", "node3@node3"]);
        let topology = Topology::new("node1@node1", &writers, &writers, 3, 256).expect("topology");
        // cluster.md §3: group 0 → node2, node1, node3; group 180 → node2, node3, node1.
        assert_eq!(topology.group_replicas[0], vec![2, 1, 3]);
        assert_eq!(topology.group_replicas[180], vec![2, 3, 1]);
    }

    #[test]
    fn unknown_self_is_refused() {
        let writers = names(&["a@h"]);
        assert!(Topology::new("x@h", &writers, &writers, 1, 1).is_err());
        assert!(Topology::new("a@h", &writers, &writers, 2, 1).is_err());
    }
}
