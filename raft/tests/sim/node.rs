//! One simulated node: a [`MultiRaft`] over in-memory storages, a disk that persists write
//! batches asynchronously, and a tiny state machine per group.
//!
//! The disk model: each `Ready` batch is queued as written; the cluster driver decides when the
//! oldest written batch becomes durable ([`SimNode::complete_persist`]). Only then is it applied
//! to the group storages (which are durable by contract), reported with `on_persisted`, and
//! are its persisted envelopes released. A crash drops every written-but-not-durable batch.

use std::collections::{BTreeMap, VecDeque};

use starcite_raft::multi::{Envelope, GroupId, GroupReady, MultiConfig, MultiRaft};
use starcite_raft::{
    Config, Entry, EntryKind, Index, LogStore, MemoryStorage, NodeId, Role, Snapshot, SnapshotMeta,
    Storage, Term,
};

use super::checker::{Checker, LogSlot, Violation};
use super::trace::{fnv1a, payload_hash};

/// Members of one group.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    /// Group id.
    pub group: GroupId,
    /// Voter node ids.
    pub voters: Vec<NodeId>,
}

/// Raft and storage settings shared by all nodes of a run.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Election timeout base, in ticks.
    pub election_ticks: u32,
    /// Heartbeat interval, in ticks.
    pub heartbeat_ticks: u32,
    /// Applied entries between two local snapshots (followed by log compaction).
    pub snapshot_interval_entries: u64,
    /// Snapshot chunk size, small so that transfers take several messages.
    pub snapshot_chunk_bytes_max: u64,
    /// Entry bytes per append message, small so that catching up takes several messages.
    pub max_entries_bytes_per_msg: u64,
    /// Appends in flight per follower; 1 serializes replication, which opens the window in
    /// which a new leader has replicated an old-term entry but not yet its own no-op.
    pub max_inflight_msgs: usize,
}

/// The state machine of one group on one node: a hash chain over applied commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct StateMachine {
    applied_index: Index,
    digest: u64,
}

impl StateMachine {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = self.applied_index.to_le_bytes().to_vec();
        bytes.extend_from_slice(&self.digest.to_le_bytes());
        bytes
    }

    fn decode(data: &[u8]) -> Option<StateMachine> {
        let applied_index = u64::from_le_bytes(data.get(0..8)?.try_into().ok()?);
        let digest = u64::from_le_bytes(data.get(8..16)?.try_into().ok()?);
        Some(StateMachine {
            applied_index,
            digest,
        })
    }
}

/// A `Ready` batch written but not yet durable.
#[derive(Debug)]
struct WrittenBatch {
    sequence: u64,
    groups: Vec<(GroupId, GroupReady)>,
    persisted_envelopes: Vec<Envelope>,
}

/// What a node hands back to the driver after doing work.
#[derive(Debug, Default)]
pub struct Output {
    /// Envelopes to put on the network.
    pub envelopes: Vec<Envelope>,
    /// Groups of the proposals newly acknowledged to clients (one item per proposal).
    pub acknowledged: Vec<GroupId>,
    /// Reads newly served (and checked).
    pub reads_served_count: u64,
    /// Entries applied for the first time on any node: (group, index, term).
    pub newly_committed: Vec<(GroupId, Index, Term)>,
}

/// A read in flight: started with this much acknowledged, confirmed at `read_index` once known.
#[derive(Debug, Clone, Copy)]
struct PendingRead {
    acknowledged_before: Index,
    read_index: Option<Index>,
}

/// One simulated node.
pub struct SimNode {
    /// Node id.
    pub id: NodeId,
    /// Simulated time between two ticks of this node's clock.
    pub tick_period_us: u64,
    /// Incremented by each crash, so that events scheduled before it are ignored.
    pub epoch: u64,
    specs: Vec<GroupSpec>,
    tuning: Tuning,
    multi: Option<MultiRaft<MemoryStorage>>,
    /// The durable storages while the node is down.
    stopped_storages: BTreeMap<GroupId, MemoryStorage>,
    machines: BTreeMap<GroupId, StateMachine>,
    written: VecDeque<WrittenBatch>,
    written_sequence: u64,
    proposals: BTreeMap<(GroupId, Index), u64>,
    reads: BTreeMap<(GroupId, u64), PendingRead>,
    commit_seen: BTreeMap<GroupId, Index>,
    leader_term_seen: BTreeMap<GroupId, Term>,
    /// Per group, the (term, commit index) last seen while this node led it.
    leader_commit_seen: BTreeMap<GroupId, (Term, Index)>,
}

impl SimNode {
    /// A fresh node hosting the groups it is a voter of.
    pub fn new(
        id: NodeId,
        tick_period_us: u64,
        all_groups: &[GroupSpec],
        tuning: Tuning,
    ) -> SimNode {
        let specs: Vec<GroupSpec> = all_groups
            .iter()
            .filter(|spec| spec.voters.contains(&id))
            .cloned()
            .collect();
        let stopped_storages = specs
            .iter()
            .map(|spec| (spec.group, MemoryStorage::new()))
            .collect();
        let mut node = SimNode {
            id,
            tick_period_us,
            epoch: 0,
            specs,
            tuning,
            multi: None,
            stopped_storages,
            machines: BTreeMap::new(),
            written: VecDeque::new(),
            written_sequence: 0,
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            commit_seen: BTreeMap::new(),
            leader_term_seen: BTreeMap::new(),
            leader_commit_seen: BTreeMap::new(),
        };
        node.start();
        node
    }

    /// Whether the node is running.
    pub fn is_up(&self) -> bool {
        self.multi.is_some()
    }

    /// Groups this node is a member of.
    pub fn group_ids(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.specs.iter().map(|spec| spec.group)
    }

    /// The sequence number of the last written batch, if some wait to become durable.
    pub fn written_upto(&self) -> Option<u64> {
        self.written.back().map(|batch| batch.sequence)
    }

    /// Role and term of `group` here, if the node is up and hosts it.
    pub fn role(&self, group: GroupId) -> Option<(Role, Term)> {
        let raw = self.multi.as_ref()?.group(group)?;
        Some((raw.role(), raw.term()))
    }

    /// Whether this node's durable storage of `group` holds (`index`, `term`), or a durable
    /// snapshot covering it.
    pub fn holds_durably(&self, group: GroupId, index: Index, term: Term) -> bool {
        let storage = match &self.multi {
            Some(multi) => multi.group(group).map(|raw| raw.storage()),
            None => self.stopped_storages.get(&group),
        };
        let Some(storage) = storage else {
            return false;
        };
        if index < storage.first_index() {
            return true;
        }
        storage.term(index).is_ok_and(|found| found == term)
    }

    /// Lowest applied index of `group` here.
    pub fn applied_index(&self, group: GroupId) -> Index {
        self.machines
            .get(&group)
            .map_or(0, |machine| machine.applied_index)
    }

    fn start(&mut self) {
        let mut multi = MultiRaft::new(MultiConfig {
            node_id: self.id,
            coalesce_heartbeats: true,
            heartbeat_flush_ticks: self.tuning.heartbeat_ticks,
        });
        for spec in &self.specs {
            let storage = self
                .stopped_storages
                .remove(&spec.group)
                .unwrap_or_default();
            let machine = storage
                .snapshot()
                .ok()
                .and_then(|snapshot| StateMachine::decode(&snapshot.data))
                .unwrap_or_default();
            self.machines.insert(spec.group, machine);
            let config = Config {
                election_ticks: self.tuning.election_ticks,
                heartbeat_ticks: self.tuning.heartbeat_ticks,
                snapshot_chunk_bytes_max: self.tuning.snapshot_chunk_bytes_max,
                max_entries_bytes_per_msg: self.tuning.max_entries_bytes_per_msg,
                max_inflight_msgs: self.tuning.max_inflight_msgs,
                seed: self.id.wrapping_mul(1_000_003) ^ u64::from(spec.group) ^ self.epoch,
                ..Config::new(self.id, spec.voters.clone())
            };
            if let Err(error) = multi.add_group(spec.group, config, storage) {
                panic!(
                    "node {} cannot start group {}: {error}",
                    self.id, spec.group
                );
            }
        }
        self.multi = Some(multi);
    }

    /// Stops the node, losing everything not durable.
    pub fn crash(&mut self) {
        let Some(mut multi) = self.multi.take() else {
            return;
        };
        for spec in &self.specs {
            if let Some(raw) = multi.remove_group(spec.group) {
                self.stopped_storages
                    .insert(spec.group, raw.storage().clone());
            }
        }
        self.epoch += 1;
        self.written.clear();
        self.proposals.clear();
        self.reads.clear();
        self.commit_seen.clear();
        self.leader_commit_seen.clear();
        self.machines.clear();
    }

    /// Starts the node again from its durable storages.
    pub fn restart(&mut self) {
        if self.multi.is_none() {
            self.start();
        }
    }

    /// Advances the node's clock by one tick.
    pub fn tick(&mut self) {
        if let Some(multi) = &mut self.multi {
            multi.tick();
        }
    }

    /// Delivers an envelope.
    pub fn step(&mut self, envelope: Envelope) {
        if let Some(multi) = &mut self.multi {
            // Refusals (stale or malformed messages) are part of normal operation here.
            let _ = multi.step(envelope);
        }
    }

    /// Proposes a client value if this node leads `group`; returns the index it got.
    pub fn propose(&mut self, group: GroupId, value: u64) -> Option<Index> {
        let multi = self.multi.as_mut()?;
        let data = value.to_le_bytes().to_vec();
        let hash = payload_hash(&data);
        let index = multi.propose(group, data).ok()?;
        self.proposals.insert((group, index), hash);
        Some(index)
    }

    /// Starts a linearizable read.
    pub fn read(&mut self, group: GroupId, context: u64, acknowledged_before: Index) -> bool {
        let Some(multi) = self.multi.as_mut() else {
            return false;
        };
        if multi.read_index(group, context).is_err() {
            return false;
        }
        let read = PendingRead {
            acknowledged_before,
            read_index: None,
        };
        self.reads.insert((group, context), read);
        true
    }

    /// Asks this node, if it leads `group`, to hand leadership to `target`.
    pub fn transfer_leader(&mut self, group: GroupId, target: NodeId) -> bool {
        self.multi
            .as_mut()
            .is_some_and(|multi| multi.transfer_leader(group, target).is_ok())
    }

    /// Makes the written batches up to `upto` durable (one fsync) and releases what waited
    /// for them.
    pub fn complete_persist(
        &mut self,
        checker: &mut Checker,
        upto: u64,
    ) -> Result<Output, Violation> {
        let mut output = Output::default();
        while self
            .written
            .front()
            .is_some_and(|batch| batch.sequence <= upto)
        {
            let Some(batch) = self.written.pop_front() else {
                break;
            };
            self.persist_batch(batch, &mut output)?;
        }
        self.drain_ready(checker, &mut output)?;
        Ok(output)
    }

    fn persist_batch(&mut self, batch: WrittenBatch, output: &mut Output) -> Result<(), Violation> {
        let Some(multi) = self.multi.as_mut() else {
            return Ok(());
        };
        for (group, work) in &batch.groups {
            let Some(raw) = multi.group_mut(*group) else {
                continue;
            };
            let result = persist(raw.storage_mut(), work);
            result.map_err(|detail| storage_violation(self.id, *group, detail))?;
        }
        for (group, work) in &batch.groups {
            if let Some((index, term)) = work.persisted_position() {
                let _ = multi.on_persisted(*group, index, term);
            }
        }
        output.envelopes.extend(batch.persisted_envelopes);
        Ok(())
    }

    /// Takes and handles every pending `Ready` (called after each input).
    pub fn drain_ready(
        &mut self,
        checker: &mut Checker,
        output: &mut Output,
    ) -> Result<(), Violation> {
        for _ in 0..READY_ROUNDS_MAX {
            let Some(multi) = self.multi.as_mut() else {
                return Ok(());
            };
            if !multi.has_ready() {
                break;
            }
            let ready = multi.ready();
            output.envelopes.extend(ready.envelopes);
            let mut groups = ready.groups;
            for (group, work) in &mut groups {
                self.check_written(checker, *group, work)?;
                self.apply(checker, *group, work, output)?;
            }
            self.written_sequence += 1;
            self.written.push_back(WrittenBatch {
                sequence: self.written_sequence,
                groups,
                persisted_envelopes: ready.persisted_envelopes,
            });
        }
        self.observe_roles(checker)
    }

    /// Log matching for each entry written, and state restore from a received snapshot.
    fn check_written(
        &mut self,
        checker: &mut Checker,
        group: GroupId,
        work: &GroupReady,
    ) -> Result<(), Violation> {
        if let Some(snapshot) = &work.snapshot {
            let machine = StateMachine::decode(&snapshot.data)
                .ok_or_else(|| storage_violation(self.id, group, "undecodable snapshot".into()))?;
            if machine.applied_index != snapshot.meta.index {
                return Err(storage_violation(
                    self.id,
                    group,
                    "snapshot index mismatch".into(),
                ));
            }
            checker.observe_state(group, self.id, machine.applied_index, machine.digest)?;
            self.machines.insert(group, machine);
        }
        let Some(first) = work.entries.first() else {
            return Ok(());
        };
        let mut previous_term = match self.log_slot(group, first.index.saturating_sub(1)) {
            LogSlot::Entry { term, .. } => Some(term),
            _ => None,
        };
        if work
            .snapshot
            .as_ref()
            .is_some_and(|snapshot| snapshot.meta.index + 1 == first.index)
        {
            previous_term = work.snapshot.as_ref().map(|snapshot| snapshot.meta.term);
        }
        for entry in &work.entries {
            let hash = payload_hash(&entry.data);
            checker.observe_written(
                group,
                self.id,
                entry.index,
                entry.term,
                hash,
                previous_term,
            )?;
            previous_term = Some(entry.term);
        }
        Ok(())
    }

    /// Applies committed entries, acknowledges own proposals, takes snapshots, serves reads.
    fn apply(
        &mut self,
        checker: &mut Checker,
        group: GroupId,
        work: &GroupReady,
        output: &mut Output,
    ) -> Result<(), Violation> {
        let node = self.id;
        let mut machine = self.machines.get(&group).copied().unwrap_or_default();
        for entry in &work.committed_entries {
            if entry.index != machine.applied_index + 1 {
                return Err(Violation {
                    property: "apply order",
                    detail: format!(
                        "group {group}: node {node} applied index {} after {}",
                        entry.index, machine.applied_index
                    ),
                });
            }
            let hash = payload_hash(&entry.data);
            if checker.observe_applied(group, node, entry.index, entry.term, hash)? {
                output
                    .newly_committed
                    .push((group, entry.index, entry.term));
            }
            machine.applied_index = entry.index;
            machine.digest = fnv1a(machine.digest, &entry.data);
            checker.observe_state(group, node, machine.applied_index, machine.digest)?;
            let proposed = self.proposals.remove(&(group, entry.index));
            if entry.kind == EntryKind::Normal && proposed == Some(hash) {
                checker.observe_acknowledged(group, entry.index, hash);
                output.acknowledged.push(group);
            }
        }
        self.machines.insert(group, machine);
        for read_state in &work.read_states {
            if let Some(read) = self.reads.get_mut(&(group, read_state.ctx)) {
                read.read_index = Some(read_state.index);
            }
        }
        let Some(multi) = self.multi.as_mut() else {
            return Ok(());
        };
        if let Some(last) = work.committed_entries.last() {
            let _ = multi.on_applied(group, last.index);
        }
        self.serve_reads(checker, group, machine.applied_index, output)?;
        if work.snapshot.is_none() && !self.has_written_snapshot(group) {
            self.maybe_snapshot(group, machine)?;
        }
        Ok(())
    }

    fn serve_reads(
        &mut self,
        checker: &mut Checker,
        group: GroupId,
        applied: Index,
        output: &mut Output,
    ) -> Result<(), Violation> {
        let ready: Vec<(u64, PendingRead, Index)> = self
            .reads
            .range((group, 0)..=(group, u64::MAX))
            .filter_map(|(&(_, context), read)| match read.read_index {
                Some(index) if index <= applied => Some((context, *read, index)),
                _ => None,
            })
            .collect();
        for (context, read, read_index) in ready {
            self.reads.remove(&(group, context));
            checker.observe_read(group, self.id, read.acknowledged_before, read_index)?;
            checker.observe_read(group, self.id, read.acknowledged_before, applied)?;
            output.reads_served_count += 1;
        }
        Ok(())
    }

    /// Whether a received snapshot of `group` waits to become durable (the log then starts
    /// after it, and a local snapshot must wait).
    fn has_written_snapshot(&self, group: GroupId) -> bool {
        self.written.iter().any(|batch| {
            batch
                .groups
                .iter()
                .any(|(batch_group, work)| *batch_group == group && work.snapshot.is_some())
        })
    }

    /// Takes a local snapshot and compacts the log once enough entries were applied.
    fn maybe_snapshot(&mut self, group: GroupId, machine: StateMachine) -> Result<(), Violation> {
        let node = self.id;
        let interval = self.tuning.snapshot_interval_entries;
        let voters = self
            .specs
            .iter()
            .find(|spec| spec.group == group)
            .map(|spec| spec.voters.clone())
            .unwrap_or_default();
        let Some(raw) = self.multi.as_mut().and_then(|multi| multi.group_mut(group)) else {
            return Ok(());
        };
        let storage = raw.storage();
        let snapshot_index = storage.first_index().saturating_sub(1);
        let index = machine.applied_index;
        if index < snapshot_index + interval || index > storage.last_index() {
            return Ok(());
        }
        let term = storage
            .term(index)
            .map_err(|error| storage_violation(node, group, error.to_string()))?;
        let meta = SnapshotMeta {
            index,
            term,
            voters,
        };
        raw.snapshot_created(Snapshot::new(meta, machine.encode()))
            .map_err(|error| storage_violation(node, group, error.to_string()))
    }

    /// Election safety, leader completeness and commit monotonicity for every hosted group.
    fn observe_roles(&mut self, checker: &mut Checker) -> Result<(), Violation> {
        let Some(multi) = self.multi.as_ref() else {
            return Ok(());
        };
        let mut new_leaderships = Vec::new();
        let mut leader_commits = Vec::new();
        for spec in &self.specs {
            let Some(raw) = multi.group(spec.group) else {
                continue;
            };
            let commit = raw.commit_index();
            let seen = self.commit_seen.entry(spec.group).or_insert(commit);
            if commit < *seen {
                return Err(Violation {
                    property: "commit monotonicity",
                    detail: format!(
                        "group {}: node {} commit went from {} to {commit}",
                        spec.group, self.id, *seen
                    ),
                });
            }
            *seen = commit;
            if raw.role() != Role::Leader {
                continue;
            }
            checker.observe_leader(spec.group, self.id, raw.term())?;
            let previous = self
                .leader_commit_seen
                .insert(spec.group, (raw.term(), commit));
            if previous.is_some_and(|(term, seen)| term == raw.term() && commit > seen) {
                leader_commits.push((spec.group, raw.term(), commit));
            }
            let seen_term = self.leader_term_seen.entry(spec.group).or_insert(0);
            if raw.term() > *seen_term {
                *seen_term = raw.term();
                new_leaderships.push((spec.group, raw.term()));
            }
        }
        for (group, term, commit) in leader_commits {
            // Raft §5.4.2: a leader commits by counting replicas only entries of its own term.
            match self.log_slot(group, commit) {
                LogSlot::Entry {
                    term: entry_term, ..
                } if entry_term != term => {
                    return Err(Violation {
                        property: "commit rule",
                        detail: format!("group {group}: leader {} of term {term} advanced its commit to index {commit} of term {entry_term}", self.id),
                    });
                }
                _ => {}
            }
        }
        for (group, term) in new_leaderships {
            checker
                .observe_new_leader(group, self.id, term, |index| self.log_slot(group, index))?;
        }
        Ok(())
    }

    /// The node's log at `index`: durable storage overlaid by written, not yet durable batches.
    fn log_slot(&self, group: GroupId, index: Index) -> LogSlot {
        for batch in self.written.iter().rev() {
            for (batch_group, work) in batch.groups.iter().rev() {
                if *batch_group != group {
                    continue;
                }
                if let Some(first) = work.entries.first() {
                    if index >= first.index {
                        return slot_of(work.entries.get((index - first.index) as usize));
                    }
                }
                if let Some(snapshot) = &work.snapshot {
                    return if index <= snapshot.meta.index {
                        LogSlot::Compacted
                    } else {
                        LogSlot::Missing
                    };
                }
            }
        }
        let Some(storage) = self
            .multi
            .as_ref()
            .and_then(|multi| multi.group(group))
            .map(|raw| raw.storage())
        else {
            return LogSlot::Missing;
        };
        if index < storage.first_index() {
            return LogSlot::Compacted;
        }
        if index > storage.last_index() {
            return LogSlot::Missing;
        }
        match storage.entries(index, index + 1, u64::MAX) {
            Ok(entries) => slot_of(entries.first()),
            Err(_) => LogSlot::Missing,
        }
    }
}

/// Bound on ready rounds per input, so a core that always has work cannot hang the run.
const READY_ROUNDS_MAX: usize = 64;

fn slot_of(entry: Option<&Entry>) -> LogSlot {
    match entry {
        Some(entry) => LogSlot::Entry {
            term: entry.term,
            hash: payload_hash(&entry.data),
        },
        None => LogSlot::Missing,
    }
}

/// Writes one group's batch to its durable storage, in the order the `Ready` contract asks.
fn persist(storage: &mut MemoryStorage, work: &GroupReady) -> Result<(), String> {
    if let Some(snapshot) = &work.snapshot {
        storage
            .apply_snapshot(snapshot.clone())
            .map_err(|error| error.to_string())?;
    }
    if !work.entries.is_empty() {
        storage
            .append(&work.entries)
            .map_err(|error| error.to_string())?;
    }
    if let Some(hard_state) = work.hard_state {
        storage
            .set_hard_state(hard_state)
            .map_err(|error| error.to_string())?;
    }
    Ok(())
}

fn storage_violation(node: NodeId, group: GroupId, detail: String) -> Violation {
    Violation {
        property: "storage contract",
        detail: format!("group {group}: node {node}: {detail}"),
    }
}
