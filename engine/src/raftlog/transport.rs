//! The seam between the shards' Raft groups and the network.
//!
//! Outgoing: a shard encodes each [`Envelope`] it must send (see `wire`) and hands the bytes to
//! the node's [`RaftTransport`], which must not block and may drop (Raft retransmits). The peer
//! transport plugs in here; [`InProcessNetwork`] connects engines in one process for tests.
//!
//! Incoming: the transport hands received bytes to the destination node's [`RaftInbox`], which
//! decodes them, splits the envelope by owning shard (`group % shards`) and queues each part on
//! that shard's bounded inbound queue ([`RAFT_INBOUND_ENVELOPES_MAX`]); a full queue drops the
//! part, like a lost packet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use starcite_raft::multi::Envelope;
use starcite_raft::NodeId;

use super::wire::{decode_envelope, WireError};

/// Bound of each shard's queue of received envelopes.
pub const RAFT_INBOUND_ENVELOPES_MAX: usize = 4096;

/// Sends encoded envelopes to other nodes. Implementations must not block the caller (a shard
/// executor) and may drop envelopes when a peer is slow or unreachable.
pub trait RaftTransport: Send + Sync + 'static {
    /// Sends one encoded envelope to `to_node`.
    fn send(&self, to_node: NodeId, envelope: Vec<u8>);
}

/// The receiving side of a node: decodes envelopes and queues them on the owning shards.
#[derive(Clone, Debug)]
pub struct RaftInbox {
    node_id: NodeId,
    shards: Vec<flume::Sender<Envelope>>,
}

/// Why a received envelope was refused.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// The bytes are not a valid envelope.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The envelope is addressed to another node.
    #[error("envelope for node {to} delivered to node {node_id}")]
    Misrouted {
        /// The envelope's destination.
        to: NodeId,
        /// This node.
        node_id: NodeId,
    },
}

impl RaftInbox {
    pub(crate) fn new(node_id: NodeId, shards: Vec<flume::Sender<Envelope>>) -> Self {
        RaftInbox { node_id, shards }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Decodes `bytes` and queues the envelope's parts on their shards. Parts for a full or
    /// stopped shard are dropped.
    pub fn deliver(&self, bytes: &[u8]) -> Result<(), InboxError> {
        let envelope = decode_envelope(bytes)?;
        if envelope.to != self.node_id {
            return Err(InboxError::Misrouted {
                to: envelope.to,
                node_id: self.node_id,
            });
        }
        let shard_count = self.shards.len() as u32;
        if shard_count == 1 {
            let _ = self.shards[0].try_send(envelope);
            return Ok(());
        }
        let mut parts: Vec<Envelope> = (0..shard_count)
            .map(|_| Envelope {
                from: envelope.from,
                to: envelope.to,
                messages: Vec::new(),
                heartbeats: Vec::new(),
                heartbeat_responses: Vec::new(),
            })
            .collect();
        for (group, message) in envelope.messages {
            parts[(group % shard_count) as usize]
                .messages
                .push((group, message));
        }
        for heartbeat in envelope.heartbeats {
            parts[(heartbeat.group % shard_count) as usize]
                .heartbeats
                .push(heartbeat);
        }
        for response in envelope.heartbeat_responses {
            parts[(response.group % shard_count) as usize]
                .heartbeat_responses
                .push(response);
        }
        for (shard, part) in self.shards.iter().zip(parts) {
            if !part.is_empty() {
                let _ = shard.try_send(part);
            }
        }
        Ok(())
    }
}

/// Engines in one process, connected directly: `send` hands the bytes to the destination's
/// inbox. Nodes can be detached (a crashed node) and attached again (its restart).
#[derive(Default)]
pub struct InProcessNetwork {
    inboxes: Mutex<HashMap<NodeId, RaftInbox>>,
}

impl InProcessNetwork {
    /// An empty network.
    pub fn new() -> Arc<Self> {
        Arc::new(InProcessNetwork::default())
    }

    /// Routes envelopes for `inbox.node_id()` to `inbox` from now on.
    pub fn attach(&self, inbox: RaftInbox) {
        let mut inboxes = self
            .inboxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inboxes.insert(inbox.node_id(), inbox);
    }

    /// Drops every envelope for `node_id` from now on.
    pub fn detach(&self, node_id: NodeId) {
        let mut inboxes = self
            .inboxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inboxes.remove(&node_id);
    }
}

impl RaftTransport for InProcessNetwork {
    fn send(&self, to_node: NodeId, envelope: Vec<u8>) {
        let inbox = {
            let inboxes = self
                .inboxes
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            inboxes.get(&to_node).cloned()
        };
        if let Some(inbox) = inbox {
            if let Err(error) = inbox.deliver(&envelope) {
                tracing::warn!(to_node, "dropped raft envelope: {error}");
            }
        }
    }
}
