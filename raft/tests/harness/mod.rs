//! A tiny in-test network: delivers messages between `RawNode`s over `MemoryStorage`,
//! persisting every ready at once unless a node's persistence is held back.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use starcite_raft::{
    Config, Entry, EntryKind, LogStore, MemoryStorage, Message, NodeId, RawNode, ReadState, Ready,
    Role, Snapshot, SnapshotMeta,
};

/// Upper bound on delivery rounds; a test that needs more is looping.
const DELIVERY_ROUNDS_MAX: usize = 10_000;

pub struct Network {
    pub configs: BTreeMap<NodeId, Config>,
    pub nodes: BTreeMap<NodeId, RawNode<MemoryStorage>>,
    pub in_flight: VecDeque<Message>,
    /// Directed links that drop messages.
    pub cut_links: BTreeSet<(NodeId, NodeId)>,
    /// Nodes whose readies are taken but not persisted until `release`.
    pub held: BTreeMap<NodeId, Vec<Ready>>,
    pub hold_persistence: BTreeSet<NodeId>,
    /// Application payloads applied per node, in order.
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    pub read_states: BTreeMap<NodeId, Vec<ReadState>>,
    /// Every message ever sent, for assertions and determinism checks.
    pub trace: Vec<Message>,
    /// When set, messages matching are dropped.
    pub drop_filter: Option<fn(&Message) -> bool>,
}

pub fn config(id: NodeId, voters: &[NodeId]) -> Config {
    Config::new(id, voters.to_vec())
}

impl Network {
    pub fn new(ids: &[NodeId]) -> Network {
        Network::with_config(ids, |config| config)
    }

    pub fn with_config(ids: &[NodeId], adjust: impl Fn(Config) -> Config) -> Network {
        let mut network = Network {
            configs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            in_flight: VecDeque::new(),
            cut_links: BTreeSet::new(),
            held: BTreeMap::new(),
            hold_persistence: BTreeSet::new(),
            applied: BTreeMap::new(),
            read_states: BTreeMap::new(),
            trace: Vec::new(),
            drop_filter: None,
        };
        for &id in ids {
            let config = adjust(config(id, ids));
            let node = RawNode::new(config.clone(), MemoryStorage::new()).expect("valid config");
            network.configs.insert(id, config);
            network.nodes.insert(id, node);
            network.applied.insert(id, Vec::new());
            network.read_states.insert(id, Vec::new());
        }
        network
    }

    pub fn node(&self, id: NodeId) -> &RawNode<MemoryStorage> {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut RawNode<MemoryStorage> {
        self.nodes.get_mut(&id).expect("known node")
    }

    /// Takes and handles every pending ready of `id`.
    pub fn process(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !node.has_ready() {
            return;
        }
        let ready = node.ready();
        let messages = ready.messages.clone();
        self.send_all(messages);
        if self.hold_persistence.contains(&id) {
            self.held.entry(id).or_default().push(ready);
            return;
        }
        self.persist_and_apply(id, ready);
    }

    fn persist_and_apply(&mut self, id: NodeId, ready: Ready) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let storage = node.storage_mut();
        if let Some(snapshot) = ready.snapshot.clone() {
            storage.apply_snapshot(snapshot).expect("apply snapshot");
        }
        storage.append(&ready.entries).expect("append");
        if let Some(hard_state) = ready.hard_state {
            storage.set_hard_state(hard_state).expect("hard state");
        }
        if let Some((index, term)) = ready.persist_point() {
            node.on_persisted(index, term);
        }
        let applied = self.applied.get_mut(&id).expect("known node");
        if let Some(snapshot) = &ready.snapshot {
            // The "state machine" is the list of applied entries; a snapshot's data is not
            // interpreted here, so mark the jump.
            applied.push(Entry::noop(snapshot.meta.term, snapshot.meta.index));
        }
        for entry in &ready.committed_entries {
            applied.push(entry.clone());
        }
        if let Some(last) = ready.committed_entries.last() {
            node.on_applied(last.index);
        }
        self.read_states
            .get_mut(&id)
            .expect("known node")
            .extend(ready.read_states.iter().copied());
        self.send_all(ready.persisted_messages);
    }

    /// Persists the held readies of `id` and stops holding.
    pub fn release(&mut self, id: NodeId) {
        self.hold_persistence.remove(&id);
        let readies = self.held.remove(&id).unwrap_or_default();
        for ready in readies {
            self.persist_and_apply(id, ready);
        }
    }

    fn send_all(&mut self, messages: Vec<Message>) {
        for message in messages {
            self.trace.push(message.clone());
            if self.cut_links.contains(&(message.from, message.to)) {
                continue;
            }
            if self.drop_filter.is_some_and(|filter| filter(&message)) {
                continue;
            }
            self.in_flight.push_back(message);
        }
    }

    /// Processes and delivers until quiet.
    pub fn settle(&mut self) {
        for _ in 0..DELIVERY_ROUNDS_MAX {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.process(id);
            }
            let Some(message) = self.in_flight.pop_front() else {
                if self.nodes.values().any(|node| node.has_ready())
                    && self.hold_persistence.is_empty()
                {
                    continue;
                }
                return;
            };
            self.deliver(message);
        }
        panic!("network did not settle");
    }

    pub fn deliver(&mut self, message: Message) {
        if let Some(node) = self.nodes.get_mut(&message.to) {
            node.step(message).expect("step");
        }
    }

    /// Delivers `message` as if sent by a peer, then settles.
    pub fn inject(&mut self, message: Message) {
        self.deliver(message);
        self.settle();
    }

    pub fn tick(&mut self, id: NodeId, count: u32) {
        for _ in 0..count {
            if let Some(node) = self.nodes.get_mut(&id) {
                node.tick();
            }
            self.settle();
        }
    }

    pub fn tick_all(&mut self, count: u32) {
        for _ in 0..count {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.nodes.get_mut(&id).expect("known node").tick();
            }
            self.settle();
        }
    }

    /// Ticks only `id` until it is leader.
    pub fn elect(&mut self, id: NodeId) {
        for _ in 0..200 {
            if self.node(id).role() == Role::Leader {
                return;
            }
            self.tick(id, 1);
        }
        panic!("node {id} did not become leader");
    }

    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> u64 {
        let index = self.node_mut(id).propose(data.to_vec()).expect("propose");
        self.settle();
        index
    }

    pub fn isolate(&mut self, id: NodeId) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for other in ids {
            if other != id {
                self.cut_links.insert((id, other));
                self.cut_links.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut_links.clear();
    }

    /// Crash and restart `id`: unpersisted state is lost, persisted state is kept.
    pub fn restart(&mut self, id: NodeId) {
        let storage = self.node(id).storage().clone();
        self.held.remove(&id);
        self.hold_persistence.remove(&id);
        self.in_flight.retain(|message| message.to != id);
        let config = self.configs[&id].clone();
        let node = RawNode::new(config, storage).expect("restart");
        self.nodes.insert(id, node);
        // The state machine is rebuilt from the snapshot and log on restart.
        self.applied.insert(id, Vec::new());
    }

    /// Application payloads (normal entries) applied on `id`.
    pub fn applied_data(&self, id: NodeId) -> Vec<Vec<u8>> {
        self.applied[&id]
            .iter()
            .filter(|entry| entry.kind == EntryKind::Normal)
            .map(|entry| entry.data.to_vec())
            .collect()
    }

    /// Takes a snapshot on `id` at its applied index and compacts the log.
    pub fn snapshot_and_compact(&mut self, id: NodeId, data: Vec<u8>) {
        let node = self.node_mut(id);
        let index = node.applied_index();
        let term = node.storage().term_of(index);
        let voters = node.config().voters.clone();
        let snapshot = Snapshot::new(
            SnapshotMeta {
                index,
                term,
                voters,
            },
            data,
        );
        node.snapshot_created(snapshot).expect("snapshot");
    }

    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.role() == Role::Leader)
            .map(|(&id, _)| id)
            .collect()
    }
}

/// Storage term lookup that panics in tests.
pub trait TermOf {
    fn term_of(&self, index: u64) -> u64;
}

impl TermOf for MemoryStorage {
    fn term_of(&self, index: u64) -> u64 {
        starcite_raft::Storage::term(self, index).expect("term")
    }
}
