//! The control-plane side of [`ClusterLink`]: the members' roles as the shards publish them,
//! startup sync, the observer and its node-status reports, forwarded drains, and the
//! leadership views and transfers the drain and the leader balance run on the shards.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use starcite_raft::{NodeId, Role, NO_NODE};

use super::message::NodeStatusReport;
use super::observer::Observer;
use super::{
    lock, role_from_byte, role_to_byte, ClusterLink, PeerMessage, WriteTimeout, NEVER_SETTLED,
    ROLE_NONE,
};
use crate::shard::{ControlRequest, LeaderView, ShardRequest, TransferOutcome};

/// Bound of the forwarded drains this node waits for at once.
pub const DRAIN_CALLS_MAX: usize = 64;

/// Bound of the forwarded drains received and not yet applied.
pub const DRAIN_REQUESTS_MAX: usize = 64;

/// A forwarded drain waiting for its answer: destination, when it was sent, where the answer
/// goes.
pub(crate) type DrainCall = (NodeId, Instant, flume::Sender<bool>);

/// A drain or undrain of this node that another node forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainRequest {
    /// The node that forwarded it (the answer goes there).
    pub from: NodeId,
    /// Echoed in the answer.
    pub call_id: u64,
    /// Drain (true) or undrain (false).
    pub draining: bool,
}

impl ClusterLink {
    /// The observer of this node.
    pub fn observer(&self) -> &Observer {
        &self.observer
    }

    /// Records the role and leader of this node's member of `group_id` (the shard that owns
    /// it calls this when the member starts and whenever they change).
    pub(crate) fn observe_member(&self, group_id: u32, role: Role, leader: NodeId) {
        if let Some(slot) = self.roles.get(group_id as usize) {
            slot.store(role_to_byte(role), Ordering::Relaxed);
        }
        if let Some(since) = self.unsettled_since_ms.get(group_id as usize) {
            let settled = matches!(role, Role::Leader | Role::Follower) && leader != NO_NODE;
            if settled {
                since.store(0, Ordering::Relaxed);
            } else if since.load(Ordering::Relaxed) == 0 {
                let now_ms = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
                since.store(now_ms.saturating_add(1), Ordering::Relaxed);
            }
        }
        self.observe_leader(group_id, leader);
    }

    /// How long this node's member of `group_id` has been electing (a candidate, or without a
    /// known leader); `None` while it follows or leads a known leader; `Duration::MAX` when it
    /// has not known a leader since this node started.
    pub fn electing_for(&self, group_id: u32) -> Option<Duration> {
        let since = self
            .unsettled_since_ms
            .get(group_id as usize)?
            .load(Ordering::Relaxed);
        if since == 0 {
            return None;
        }
        if since == NEVER_SETTLED {
            return Some(Duration::MAX);
        }
        let since = Duration::from_millis(since - 1);
        Some(self.created.elapsed().saturating_sub(since))
    }

    /// Records that this node's member of `group_id` stopped (its shard's driver ended).
    pub(crate) fn member_stopped(&self, group_id: u32) {
        if let Some(slot) = self.roles.get(group_id as usize) {
            slot.store(ROLE_NONE, Ordering::Relaxed);
        }
    }

    /// The role of this node's member of `group_id`; `None` when no member runs here.
    pub fn member_role(&self, group_id: u32) -> Option<Role> {
        role_from_byte(self.roles.get(group_id as usize)?.load(Ordering::Relaxed))
    }

    /// Groups whose member on this node leads.
    pub fn led_groups(&self) -> Vec<u32> {
        self.roles
            .iter()
            .enumerate()
            .filter(|(_, role)| role_from_byte(role.load(Ordering::Relaxed)) == Some(Role::Leader))
            .map(|(group_id, _)| group_id as u32)
            .collect()
    }

    /// Groups this node is a replica of, ascending.
    pub fn local_groups(&self) -> Vec<u32> {
        let self_id = self.topology.node_id;
        self.topology
            .group_replicas
            .iter()
            .enumerate()
            .filter(|(_, replicas)| replicas.contains(&self_id))
            .map(|(group_id, _)| group_id as u32)
            .collect()
    }

    /// The bridge calls this once the peer transport runs.
    pub fn mark_transport_started(&self) {
        self.transport_started.store(true, Ordering::Release);
    }

    /// Startup sync is complete: the peer transport runs and every local group's member runs.
    pub fn startup_complete(&self) -> bool {
        self.transport_started.load(Ordering::Acquire)
            && self
                .local_groups()
                .iter()
                .all(|&group_id| self.member_role(group_id).is_some())
    }

    /// This node's status report, as it goes to every connected node.
    pub fn status_report(&self) -> NodeStatusReport {
        NodeStatusReport {
            drain: self.observer.local_drain(),
            raft_ready: self.observer.local_raft_ready(),
            led_groups: u32::try_from(self.led_groups().len()).unwrap_or(u32::MAX),
            draining_nodes: self.observer.draining_nodes(),
        }
    }

    /// Sends this node's status report to every connected node.
    pub fn broadcast_status(&self) {
        let body = PeerMessage::encode_node_status(&self.status_report());
        let node_count = self.topology.names.len() as NodeId;
        for node_id in 1..=node_count {
            if node_id != self.topology.node_id && self.is_connected(node_id) {
                // A lost report is replaced by the next period's.
                let _ = self.push(node_id, body.clone());
            }
        }
    }

    /// Sends this node's status report to `node_id`.
    pub(crate) fn send_status_to(&self, node_id: NodeId) {
        if node_id != self.topology.node_id {
            let body = PeerMessage::encode_node_status(&self.status_report());
            let _ = self.push(node_id, body);
        }
    }

    /// Asks `to` to drain (`draining`) or undrain itself; the receiver gets whether it applied
    /// the mark, or disconnects when `to` is lost or the call expires
    /// ([`ClusterLink::expire_drain_calls`]). `None` when the request could not be queued.
    pub fn call_drain(&self, to: NodeId, draining: bool) -> Option<flume::Receiver<bool>> {
        if to == self.topology.node_id || !self.is_connected(to) {
            return None;
        }
        let call_id = self.next_call_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = flume::bounded(1);
        {
            let mut calls = lock(&self.drain_calls);
            if calls.len() >= DRAIN_CALLS_MAX {
                return None;
            }
            calls.insert(call_id, (to, Instant::now(), sender));
        }
        if !self.push(to, PeerMessage::encode_drain_request(call_id, draining)) {
            lock(&self.drain_calls).remove(&call_id);
            return None;
        }
        Some(receiver)
    }

    /// Fails the forwarded drains older than `max_age` (their callers see a disconnect).
    pub fn expire_drain_calls(&self, max_age: Duration) {
        lock(&self.drain_calls).retain(|_, (_, sent, _)| sent.elapsed() < max_age);
    }

    /// Answers a forwarded drain.
    pub fn reply_drain(&self, to: NodeId, call_id: u64, applied: bool) {
        let _ = self.push(to, PeerMessage::encode_drain_reply(call_id, applied));
    }

    /// Records a write that ended in a commit timeout on this node (the latest one wins).
    pub(crate) fn note_write_timeout(&self, timeout: WriteTimeout) {
        *lock(&self.write_timeout) = Some(timeout);
    }

    /// The write timeout recorded since the last call, if any.
    pub fn take_write_timeout(&self) -> Option<WriteTimeout> {
        lock(&self.write_timeout).take()
    }

    /// The queue of forwarded drains for this node; `None` after the first call.
    pub fn take_drain_requests(&self) -> Option<flume::Receiver<DrainRequest>> {
        lock(&self.drain_requests_receiver).take()
    }

    /// Called by the engine at start: the shards' request queues.
    pub(crate) fn attach_shards(&self, shards: Vec<flume::Sender<ShardRequest>>) {
        let _ = self.shards.set(shards);
    }

    /// Every group this node leads, with its followers' replication progress.
    pub async fn leader_views(&self) -> Vec<LeaderView> {
        let Some(shards) = self.shards.get() else {
            return Vec::new();
        };
        let mut replies = Vec::with_capacity(shards.len());
        for shard in shards {
            let (reply, receiver) = flume::bounded(1);
            let request = ShardRequest::Control(ControlRequest::LeaderViews { reply });
            if shard.send_async(request).await.is_ok() {
                replies.push(receiver);
            }
        }
        let mut views = Vec::new();
        for receiver in replies {
            if let Ok(shard_views) = receiver.recv_async().await {
                views.extend(shard_views);
            }
        }
        views.sort_by_key(|view| view.group_id);
        views
    }

    /// Starts handing leadership of `group_id` to `target`; the receiver gets the outcome
    /// once the member stepped down or `timeout` passed. `None` when the shard is gone.
    pub async fn start_transfer(
        &self,
        group_id: u32,
        target: NodeId,
        timeout: Duration,
    ) -> Option<flume::Receiver<TransferOutcome>> {
        let shards = self.shards.get()?;
        let owner = group_id as usize % shards.len().max(1);
        let (reply, receiver) = flume::bounded(1);
        let request = ShardRequest::Control(ControlRequest::Transfer {
            group_id,
            target,
            timeout,
            reply,
        });
        shards.get(owner)?.send_async(request).await.ok()?;
        Some(receiver)
    }
}
