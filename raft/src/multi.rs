//! Many Raft groups on one node, sharing one transport and one persistence batch.
//!
//! [`MultiRaft`] owns one [`RawNode`] per group and turns their per-group work into per-node
//! work:
//!
//! - **Batching.** [`MultiRaft::ready`] collects every group's outgoing messages into one
//!   [`Envelope`] per destination node, and every group's persistence work into one
//!   [`MultiReady`], so a shard persists all groups' entries and hard states with a single
//!   fsync and then calls [`MultiRaft::on_persisted`] per group.
//! - **Heartbeat coalescing.** Idle leaders only send heartbeats. Instead of one message per
//!   group, heartbeats to a node are held and flushed together once per
//!   [`MultiConfig::heartbeat_flush_ticks`] node ticks as compact `(group, term, commit)`
//!   tuples. The receiver holds its answers the same way and sends them with its own next
//!   flush, so an idle node pair exchanges one envelope each way per heartbeat interval (6 for
//!   3 nodes) instead of one message per group and follower each way (1,024 with 256 groups),
//!   and a node wakes once per peer and interval rather than once for the heartbeats and once
//!   for their answers. Holding an answer delays it by less than one flush interval, far below
//!   the election timeout that check-quorum measures. Heartbeats and answers that carry a read
//!   context (ReadIndex) are never held back, nor is anything that must wait for persistence.
//!   Idle groups are not quiesced.
//!
//! The work-batch loop of a shard:
//!
//! ```text
//! loop {
//!     multi.tick() / multi.step(envelope) / multi.propose(group, data) ...
//!     let ready = multi.ready();
//!     send(ready.envelopes);                       // safe before persisting
//!     for (group, work) in &ready.groups { write(work.hard_state, work.snapshot, work.entries) }
//!     fsync();                                     // one fsync for every group
//!     for (group, work) in &ready.groups { multi.on_persisted(group, last index, last term) }
//!     send(ready.persisted_envelopes);             // only after the fsync
//!     for (group, work) in ready.groups { apply(work.committed_entries); multi.on_applied(..) }
//! }
//! ```

use std::collections::BTreeMap;

use crate::{
    Config, Entry, HardState, Index, LogStore, Message, MessageBody, NodeId, RaftError, RawNode,
    ReadState, Ready, Snapshot, SoftState, Term,
};

/// Identifies one Raft group; every node hosting a member of the group uses the same id.
pub type GroupId = u32;

/// Node-level settings of a [`MultiRaft`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiConfig {
    /// This node's id; every group added must use it as its [`Config::id`].
    pub node_id: NodeId,
    /// Whether heartbeats are coalesced per node pair (see the module documentation). When
    /// false every Raft message travels in its own envelope, which is only useful to measure
    /// what coalescing saves.
    pub coalesce_heartbeats: bool,
    /// Node ticks between two flushes of held heartbeats. Should equal the groups'
    /// `heartbeat_ticks`, so that coalescing delays a heartbeat by less than one interval.
    pub heartbeat_flush_ticks: u32,
}

/// Heartbeat of one group, coalesced into an [`Envelope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalescedHeartbeat {
    /// The group whose leader sends it.
    pub group: GroupId,
    /// The leader's term.
    pub term: Term,
    /// The leader's commit index, as far as the follower may learn it.
    pub commit: Index,
    /// ReadIndex context the follower must echo, if the heartbeat confirms a read.
    pub read_context: Option<u64>,
}

/// Answer to one [`CoalescedHeartbeat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalescedHeartbeatResponse {
    /// The group whose follower answers.
    pub group: GroupId,
    /// The follower's term.
    pub term: Term,
    /// The echoed ReadIndex context.
    pub read_context: Option<u64>,
}

/// Everything one node sends to another in one go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Sending node.
    pub from: NodeId,
    /// Receiving node.
    pub to: NodeId,
    /// Raft messages other than heartbeats, in the order the groups produced them.
    pub messages: Vec<(GroupId, Message)>,
    /// Coalesced heartbeats, one per group the sender leads.
    pub heartbeats: Vec<CoalescedHeartbeat>,
    /// Coalesced heartbeat answers.
    pub heartbeat_responses: Vec<CoalescedHeartbeatResponse>,
}

impl Envelope {
    fn new(from: NodeId, to: NodeId) -> Envelope {
        Envelope {
            from,
            to,
            messages: Vec::new(),
            heartbeats: Vec::new(),
            heartbeat_responses: Vec::new(),
        }
    }

    /// Whether the envelope carries nothing.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.heartbeats.is_empty()
            && self.heartbeat_responses.is_empty()
    }

    /// How many Raft messages the envelope stands for.
    pub fn message_count(&self) -> usize {
        self.messages.len() + self.heartbeats.len() + self.heartbeat_responses.len()
    }
}

/// One group's share of a [`MultiReady`]: a [`Ready`] whose messages were moved into envelopes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupReady {
    /// Term, vote and commit to persist, if they changed.
    pub hard_state: Option<HardState>,
    /// Entries to append to the log (truncating any conflicting suffix).
    pub entries: Vec<Entry>,
    /// Snapshot to install, if the leader sent one.
    pub snapshot: Option<Snapshot>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Completed ReadIndex requests.
    pub read_states: Vec<ReadState>,
    /// Role and leader, if they changed.
    pub soft_state: Option<SoftState>,
}

impl GroupReady {
    /// The index and term of the last entry to persist, which [`MultiRaft::on_persisted`]
    /// takes once they are durable.
    pub fn persisted_position(&self) -> Option<(Index, Term)> {
        if let Some(entry) = self.entries.last() {
            return Some((entry.index, entry.term));
        }
        self.snapshot
            .as_ref()
            .map(|snapshot| (snapshot.meta.index, snapshot.meta.term))
    }

    fn from_ready(ready: Ready) -> (GroupReady, Vec<Message>, Vec<Message>) {
        let group_ready = GroupReady {
            hard_state: ready.hard_state,
            entries: ready.entries,
            snapshot: ready.snapshot,
            committed_entries: ready.committed_entries,
            read_states: ready.read_states,
            soft_state: ready.soft_state,
        };
        (group_ready, ready.messages, ready.persisted_messages)
    }
}

/// The work of all groups of a node, ready to be done in one batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MultiReady {
    /// Per-group persistence and apply work, in group order.
    pub groups: Vec<(GroupId, GroupReady)>,
    /// Envelopes that may be sent right away.
    pub envelopes: Vec<Envelope>,
    /// Envelopes that may be sent only after every group's `entries` and `hard_state` of this
    /// batch are durable (votes and append acknowledgements).
    pub persisted_envelopes: Vec<Envelope>,
}

/// Errors of [`MultiRaft`].
#[derive(Debug, thiserror::Error)]
pub enum MultiRaftError {
    /// The group is not hosted here; route the request to a node that hosts it.
    #[error("group {group} is not hosted on this node")]
    UnknownGroup {
        /// The group asked for.
        group: GroupId,
    },
    /// The group is already hosted here; add it only once.
    #[error("group {group} is already hosted on this node")]
    GroupExists {
        /// The group asked for.
        group: GroupId,
    },
    /// The group's configuration names another node; fix the configuration.
    #[error("group {group} is configured for node {config_id}, this node is {node_id}")]
    WrongNode {
        /// The group asked for.
        group: GroupId,
        /// The id in the group's configuration.
        config_id: NodeId,
        /// This node's id.
        node_id: NodeId,
    },
    /// The envelope was addressed to another node; the transport misrouted it.
    #[error("envelope for node {to} delivered to node {node_id}")]
    Misrouted {
        /// The envelope's destination.
        to: NodeId,
        /// This node's id.
        node_id: NodeId,
    },
    /// The group's Raft core refused the request.
    #[error("group {group}: {source}")]
    Raft {
        /// The group asked for.
        group: GroupId,
        /// What the core said.
        #[source]
        source: RaftError,
    },
}

/// All Raft groups of one node (see the module documentation).
pub struct MultiRaft<S: LogStore> {
    config: MultiConfig,
    groups: BTreeMap<GroupId, RawNode<S>>,
    /// Heartbeats and answers waiting for the next flush.
    held: Held,
    ticks_since_flush: u32,
}

impl<S: LogStore> MultiRaft<S> {
    /// A node hosting no group yet.
    pub fn new(config: MultiConfig) -> MultiRaft<S> {
        MultiRaft {
            config,
            groups: BTreeMap::new(),
            held: Held::default(),
            ticks_since_flush: 0,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// Starts hosting `group`, restarting from whatever `storage` holds.
    pub fn add_group(
        &mut self,
        group: GroupId,
        config: Config,
        storage: S,
    ) -> Result<(), MultiRaftError> {
        if config.id != self.config.node_id {
            return Err(MultiRaftError::WrongNode {
                group,
                config_id: config.id,
                node_id: self.config.node_id,
            });
        }
        if self.groups.contains_key(&group) {
            return Err(MultiRaftError::GroupExists { group });
        }
        let node = RawNode::new(config, storage)
            .map_err(|source| MultiRaftError::Raft { group, source })?;
        self.groups.insert(group, node);
        Ok(())
    }

    /// Stops hosting `group` and hands back its core (and with it, its storage).
    pub fn remove_group(&mut self, group: GroupId) -> Option<RawNode<S>> {
        self.groups.remove(&group)
    }

    /// The ids of the hosted groups, in order.
    pub fn group_ids(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.keys().copied()
    }

    /// The core of one group, to inspect its role, term or storage.
    pub fn group(&self, group: GroupId) -> Option<&RawNode<S>> {
        self.groups.get(&group)
    }

    /// The core of one group, mutably (e.g. to compact its storage).
    pub fn group_mut(&mut self, group: GroupId) -> Option<&mut RawNode<S>> {
        self.groups.get_mut(&group)
    }

    fn node_mut(&mut self, group: GroupId) -> Result<&mut RawNode<S>, MultiRaftError> {
        self.groups
            .get_mut(&group)
            .ok_or(MultiRaftError::UnknownGroup { group })
    }

    /// Advances every group's logical clock by one tick.
    pub fn tick(&mut self) {
        for node in self.groups.values_mut() {
            node.tick();
        }
        self.ticks_since_flush = self.ticks_since_flush.saturating_add(1);
    }

    /// Delivers every message of an envelope to its group. Messages for groups not hosted
    /// here are skipped; the first refusal is returned after everything was delivered.
    pub fn step(&mut self, envelope: Envelope) -> Result<(), MultiRaftError> {
        if envelope.to != self.config.node_id {
            return Err(MultiRaftError::Misrouted {
                to: envelope.to,
                node_id: self.config.node_id,
            });
        }
        let (from, to) = (envelope.from, envelope.to);
        let mut first_error = None;
        let heartbeats = envelope.heartbeats.into_iter().map(|heartbeat| {
            let body = MessageBody::Heartbeat {
                commit: heartbeat.commit,
                read_context: heartbeat.read_context,
            };
            (
                heartbeat.group,
                Message {
                    from,
                    to,
                    term: heartbeat.term,
                    body,
                },
            )
        });
        let responses = envelope.heartbeat_responses.into_iter().map(|response| {
            let body = MessageBody::HeartbeatResponse {
                read_context: response.read_context,
            };
            (
                response.group,
                Message {
                    from,
                    to,
                    term: response.term,
                    body,
                },
            )
        });
        let all = envelope
            .messages
            .into_iter()
            .chain(heartbeats)
            .chain(responses);
        for (group, message) in all {
            let Some(node) = self.groups.get_mut(&group) else {
                continue;
            };
            if let Err(source) = node.step(message) {
                first_error.get_or_insert(MultiRaftError::Raft { group, source });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Proposes `data` to `group`; returns the index it will have if it commits.
    pub fn propose(&mut self, group: GroupId, data: Vec<u8>) -> Result<Index, MultiRaftError> {
        self.node_mut(group)?
            .propose(data)
            .map_err(|source| MultiRaftError::Raft { group, source })
    }

    /// Starts a linearizable read of `group`; the answer comes back as a read state with the
    /// same `context` in a later [`MultiReady`].
    pub fn read_index(&mut self, group: GroupId, context: u64) -> Result<(), MultiRaftError> {
        self.node_mut(group)?
            .read_index(context)
            .map_err(|source| MultiRaftError::Raft { group, source })
    }

    /// Asks the leader of `group` (this node) to hand leadership to `target`.
    pub fn transfer_leader(
        &mut self,
        group: GroupId,
        target: NodeId,
    ) -> Result<(), MultiRaftError> {
        self.node_mut(group)?
            .transfer_leader(target)
            .map_err(|source| MultiRaftError::Raft { group, source })
    }

    /// Reports that `group`'s entries up to (`index`, `term`) and its hard state are durable.
    pub fn on_persisted(
        &mut self,
        group: GroupId,
        index: Index,
        term: Term,
    ) -> Result<(), MultiRaftError> {
        self.node_mut(group)?.on_persisted(index, term);
        Ok(())
    }

    /// Reports that `group`'s state machine has applied everything up to `index`.
    pub fn on_applied(&mut self, group: GroupId, index: Index) -> Result<(), MultiRaftError> {
        self.node_mut(group)?.on_applied(index);
        Ok(())
    }

    /// Whether [`MultiRaft::ready`] has anything to return.
    pub fn has_ready(&self) -> bool {
        self.groups.values().any(|node| node.has_ready()) || self.flush_due()
    }

    fn flush_due(&self) -> bool {
        self.ticks_since_flush >= self.config.heartbeat_flush_ticks && !self.held.is_empty()
    }

    /// Collects the work of every group into one batch.
    pub fn ready(&mut self) -> MultiReady {
        let node_id = self.config.node_id;
        let coalesce = self.config.coalesce_heartbeats;
        let mut batch = MultiReady::default();
        let mut now = Outbox::new(node_id, coalesce);
        // Messages that may leave only after this batch is durable are never held: the flush
        // below sends held messages before the batch is persisted.
        let mut later = Outbox::new(node_id, coalesce);
        later.holds = false;
        for (&group, node) in self.groups.iter_mut() {
            if !node.has_ready() {
                continue;
            }
            let (group_ready, messages, persisted_messages) = GroupReady::from_ready(node.ready());
            for message in messages {
                now.add(group, message, &mut self.held);
            }
            for message in persisted_messages {
                later.add(group, message, &mut self.held);
            }
            batch.groups.push((group, group_ready));
        }
        if self.ticks_since_flush >= self.config.heartbeat_flush_ticks {
            self.ticks_since_flush = 0;
            let held = std::mem::take(&mut self.held);
            for (to, heartbeats) in held.heartbeats {
                now.envelope(to).heartbeats.extend(heartbeats);
            }
            for (to, responses) in held.responses {
                now.envelope(to).heartbeat_responses.extend(responses);
            }
        }
        batch.envelopes = now.into_envelopes();
        batch.persisted_envelopes = later.into_envelopes();
        batch
    }
}

/// Heartbeats and heartbeat answers held for the next flush, per destination node.
#[derive(Debug, Default)]
struct Held {
    heartbeats: BTreeMap<NodeId, Vec<CoalescedHeartbeat>>,
    responses: BTreeMap<NodeId, Vec<CoalescedHeartbeatResponse>>,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.heartbeats.is_empty() && self.responses.is_empty()
    }
}

/// Envelopes being built for one send point (now, or after persisting).
struct Outbox {
    node_id: NodeId,
    coalesce: bool,
    /// Whether heartbeats and answers without a read context wait for the next flush.
    holds: bool,
    by_destination: BTreeMap<NodeId, Envelope>,
    /// Without coalescing every message gets its own envelope.
    single: Vec<Envelope>,
}

impl Outbox {
    fn new(node_id: NodeId, coalesce: bool) -> Outbox {
        Outbox {
            node_id,
            coalesce,
            holds: true,
            by_destination: BTreeMap::new(),
            single: Vec::new(),
        }
    }

    fn envelope(&mut self, to: NodeId) -> &mut Envelope {
        let node_id = self.node_id;
        self.by_destination
            .entry(to)
            .or_insert_with(|| Envelope::new(node_id, to))
    }

    fn add(&mut self, group: GroupId, message: Message, held: &mut Held) {
        if !self.coalesce {
            let mut envelope = Envelope::new(self.node_id, message.to);
            envelope.messages.push((group, message));
            self.single.push(envelope);
            return;
        }
        let to = message.to;
        match message.body {
            MessageBody::Heartbeat {
                commit,
                read_context,
            } => {
                let heartbeat = CoalescedHeartbeat {
                    group,
                    term: message.term,
                    commit,
                    read_context,
                };
                if read_context.is_some() || !self.holds {
                    self.envelope(to).heartbeats.push(heartbeat);
                } else {
                    hold(&mut held.heartbeats, to, heartbeat, |held| held.group);
                }
            }
            MessageBody::HeartbeatResponse { read_context } => {
                let response = CoalescedHeartbeatResponse {
                    group,
                    term: message.term,
                    read_context,
                };
                if read_context.is_some() || !self.holds {
                    self.envelope(to).heartbeat_responses.push(response);
                } else {
                    hold(&mut held.responses, to, response, |held| held.group);
                }
            }
            _ => self.envelope(to).messages.push((group, message)),
        }
    }

    fn into_envelopes(self) -> Vec<Envelope> {
        let mut envelopes: Vec<Envelope> = self.by_destination.into_values().collect();
        envelopes.extend(self.single);
        envelopes
    }
}

/// Holds a heartbeat or an answer for the next flush; a newer one of the same group replaces
/// an older one, since only the latest term and commit index matter.
fn hold<T>(
    held: &mut BTreeMap<NodeId, Vec<T>>,
    to: NodeId,
    message: T,
    group_of: impl Fn(&T) -> GroupId,
) {
    let held = held.entry(to).or_default();
    let group = group_of(&message);
    match held.iter_mut().find(|existing| group_of(existing) == group) {
        Some(existing) => *existing = message,
        None => held.push(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStorage;

    fn heartbeat(to: NodeId, term: Term, commit: Index, read_context: Option<u64>) -> Message {
        let body = MessageBody::Heartbeat {
            commit,
            read_context,
        };
        Message {
            from: 1,
            to,
            term,
            body,
        }
    }

    #[test]
    fn heartbeats_of_many_groups_share_one_envelope_per_node() {
        let mut held = Held::default();
        let mut outbox = Outbox::new(1, true);
        for group in 0..256 {
            outbox.add(group, heartbeat(2, 3, 7, None), &mut held);
            outbox.add(group, heartbeat(3, 3, 7, None), &mut held);
        }
        assert!(
            outbox.into_envelopes().is_empty(),
            "idle heartbeats wait for the flush"
        );
        assert_eq!(held.heartbeats.len(), 2);
        assert!(held
            .heartbeats
            .values()
            .all(|heartbeats| heartbeats.len() == 256));
    }

    #[test]
    fn a_newer_heartbeat_replaces_the_held_one() {
        let mut held = Held::default();
        let mut outbox = Outbox::new(1, true);
        outbox.add(5, heartbeat(2, 3, 7, None), &mut held);
        outbox.add(5, heartbeat(2, 3, 9, None), &mut held);
        assert_eq!(held.heartbeats.get(&2).map(Vec::len), Some(1));
        assert_eq!(
            held.heartbeats
                .get(&2)
                .and_then(|h| h.first())
                .map(|h| h.commit),
            Some(9)
        );
    }

    #[test]
    fn read_confirming_heartbeats_are_not_held() {
        let mut held = Held::default();
        let mut outbox = Outbox::new(1, true);
        outbox.add(5, heartbeat(2, 3, 7, Some(11)), &mut held);
        assert!(held.is_empty());
        let envelopes = outbox.into_envelopes();
        assert_eq!(envelopes.len(), 1);
        assert_eq!(envelopes[0].heartbeats[0].read_context, Some(11));
    }

    fn heartbeat_response(to: NodeId, term: Term, read_context: Option<u64>) -> Message {
        Message {
            from: 1,
            to,
            term,
            body: MessageBody::HeartbeatResponse { read_context },
        }
    }

    #[test]
    fn heartbeat_answers_wait_for_the_flush_unless_they_confirm_a_read() {
        let mut held = Held::default();
        let mut outbox = Outbox::new(1, true);
        for group in 0..256 {
            outbox.add(group, heartbeat_response(2, 3, None), &mut held);
        }
        outbox.add(7, heartbeat_response(2, 4, None), &mut held);
        outbox.add(9, heartbeat_response(2, 3, Some(11)), &mut held);
        let envelopes = outbox.into_envelopes();
        assert_eq!(envelopes.len(), 1);
        assert_eq!(envelopes[0].heartbeat_responses.len(), 1);
        assert_eq!(envelopes[0].heartbeat_responses[0].read_context, Some(11));
        let answers = held.responses.get(&2).expect("held answers");
        assert_eq!(answers.len(), 256);
        assert_eq!(
            answers
                .iter()
                .find(|answer| answer.group == 7)
                .map(|a| a.term),
            Some(4)
        );
    }

    #[test]
    fn messages_sent_after_persisting_are_not_held() {
        let mut held = Held::default();
        let mut outbox = Outbox::new(1, true);
        outbox.holds = false;
        outbox.add(5, heartbeat_response(2, 3, None), &mut held);
        outbox.add(6, heartbeat(2, 3, 7, None), &mut held);
        assert!(held.is_empty());
        let envelopes = outbox.into_envelopes();
        assert_eq!(envelopes[0].heartbeat_responses.len(), 1);
        assert_eq!(envelopes[0].heartbeats.len(), 1);
    }

    #[test]
    fn held_heartbeats_and_answers_leave_together_on_the_flush() {
        let mut multi: MultiRaft<MemoryStorage> = MultiRaft::new(MultiConfig {
            node_id: 1,
            coalesce_heartbeats: true,
            heartbeat_flush_ticks: 1,
        });
        hold(
            &mut multi.held.heartbeats,
            2,
            CoalescedHeartbeat {
                group: 1,
                term: 3,
                commit: 0,
                read_context: None,
            },
            |held| held.group,
        );
        hold(
            &mut multi.held.responses,
            2,
            CoalescedHeartbeatResponse {
                group: 2,
                term: 3,
                read_context: None,
            },
            |held| held.group,
        );
        assert!(!multi.has_ready(), "nothing leaves before the flush tick");
        multi.tick();
        assert!(multi.has_ready());
        let ready = multi.ready();
        assert_eq!(ready.envelopes.len(), 1);
        assert_eq!(ready.envelopes[0].heartbeats.len(), 1);
        assert_eq!(ready.envelopes[0].heartbeat_responses.len(), 1);
        assert!(multi.held.is_empty());
    }

    #[test]
    fn without_coalescing_every_message_travels_alone() {
        let mut held = Held::default();
        let mut outbox = Outbox::new(1, false);
        for group in 0..4 {
            outbox.add(group, heartbeat(2, 3, 7, None), &mut held);
        }
        let envelopes = outbox.into_envelopes();
        assert_eq!(envelopes.len(), 4);
        assert!(envelopes
            .iter()
            .all(|envelope| envelope.messages.len() == 1));
    }

    #[test]
    fn a_misrouted_envelope_is_refused() {
        let mut multi: MultiRaft<MemoryStorage> = MultiRaft::new(MultiConfig {
            node_id: 1,
            coalesce_heartbeats: true,
            heartbeat_flush_ticks: 1,
        });
        let result = multi.step(Envelope::new(2, 3));
        assert!(matches!(
            result,
            Err(MultiRaftError::Misrouted { to: 3, node_id: 1 })
        ));
    }

    #[test]
    fn a_group_configured_for_another_node_is_refused() {
        let mut multi: MultiRaft<MemoryStorage> = MultiRaft::new(MultiConfig {
            node_id: 1,
            coalesce_heartbeats: true,
            heartbeat_flush_ticks: 1,
        });
        let config = Config::new(2, vec![1, 2, 3]);
        let result = multi.add_group(7, config, MemoryStorage::new());
        assert!(matches!(
            result,
            Err(MultiRaftError::WrongNode { group: 7, .. })
        ));
    }
}
