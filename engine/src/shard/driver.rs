//! The driving loop of a shard's Raft groups (one task per shard).
//!
//! Each iteration takes one [`starcite_raft::multi::MultiReady`] covering every group with
//! work and handles it in the order the Raft core requires:
//! 1. send the envelopes that depend on nothing unpersisted (a leader replicates before its own
//!    fsync);
//! 2. per group: install a received snapshot (file + marker, state machine restored), buffer
//!    its entries and hard state in the WAL, and apply its committed entries — those are
//!    already durable here, so they need not wait for this batch's fsync;
//! 3. ONE fsync for the whole batch (group commit across groups), skipped when the batch holds
//!    nothing to persist;
//! 4. report each group's persisted position and send the envelopes that acknowledge it.
//!
//! Between iterations the loop steps received envelopes and ticks every group once per
//! `raft_heartbeat_ms`. On ticks it also releases WAL segments that no group needs any more.

use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_lite::future;
use starcite_raft::multi::{Envelope, GroupId, MultiRaftError};
use starcite_raft::{
    Entry, EntryKind, HardState, LogStore, RaftError, ReadState, Role, Snapshot, SnapshotMeta,
    Storage,
};

use super::local::Shard;
use crate::api::ServiceError;
use crate::cluster::ClusterLink;
use crate::metrics;
use crate::raftlog::wire::encode_envelope;
use crate::state::{ApplyOutcome, Command, GroupState};
use crate::wal::{frame_bytes, WalRecord, PENDING_BYTES_MAX_DEFAULT};

/// Largest share of the WAL's pending-bytes bound one group's entries may take before the
/// driver waits for the log to drain; larger batches are appended in chunks of this size.
const ENTRY_CHUNK_BYTES_MAX: u64 = PENDING_BYTES_MAX_DEFAULT / 4;

/// Sealed segments a shard keeps before it snapshots the groups that pin the oldest one.
const SEGMENTS_RETAINED_TARGET: usize = 4;

/// Received envelopes stepped per iteration, so that ticks and readies keep their pace.
const INBOUND_ENVELOPES_PER_ITERATION_MAX: usize = 256;

/// A failure that stops the driver: storage (fail-stop) or an entry that cannot be applied.
pub(crate) type DriverError = String;

impl Shard {
    /// Runs the loop until the shard closes or its storage fails.
    pub(crate) async fn run_driver(
        self: Rc<Self>,
        doorbell: flume::Receiver<()>,
        inbound: flume::Receiver<Envelope>,
    ) {
        let interval = Duration::from_millis(self.node.config.raft_heartbeat_ms.max(1));
        let mut next_tick = next_tick_after(Instant::now(), interval);
        self.publish_members(true);
        loop {
            if self.closing.get() || self.failed.get() {
                self.publish_members(false);
                return;
            }
            let idle = !self.raft.borrow().has_ready() && inbound.is_empty();
            if idle {
                let remaining = next_tick.saturating_duration_since(Instant::now());
                let received = future::or(
                    async {
                        let _ = doorbell.recv_async().await;
                        None
                    },
                    future::or(async { inbound.recv_async().await.ok() }, async {
                        glommio::timer::sleep(remaining).await;
                        None
                    }),
                )
                .await;
                if let Some(envelope) = received {
                    self.step_envelope(envelope);
                }
            }
            while doorbell.try_recv().is_ok() {}
            for _ in 0..INBOUND_ENVELOPES_PER_ITERATION_MAX {
                let Ok(envelope) = inbound.try_recv() else {
                    break;
                };
                self.step_envelope(envelope);
            }
            let mut result = Ok(());
            if Instant::now() >= next_tick {
                next_tick = next_tick_after(Instant::now(), interval);
                self.raft.borrow_mut().tick();
                result = self.release_segments().await;
            }
            if result.is_ok() {
                result = self.process_ready().await;
            }
            if let Err(reason) = result {
                self.fail_storage(&reason);
                self.publish_members(false);
                return;
            }
        }
    }

    fn step_envelope(&self, envelope: Envelope) {
        let stepped = self.raft.borrow_mut().step(envelope);
        match stepped {
            Ok(()) => {}
            Err(MultiRaftError::Raft {
                group,
                source: source @ (RaftError::Storage(_) | RaftError::SafetyViolation(_)),
            }) => {
                tracing::error!(
                    shard = self.shard_index,
                    group,
                    "raft member failed: {source}"
                );
                self.fail_storage(&source.to_string());
            }
            Err(error) => {
                tracing::debug!(shard = self.shard_index, "ignored raft message: {error}")
            }
        }
    }

    /// Drives the groups that have this node as their only voter until each leads and has
    /// applied its whole log, so that a node serves nothing before its recovered state is
    /// complete. Such a group elects itself at once: it needs nobody's vote.
    pub(crate) async fn catch_up_single_voters(&self) -> Result<(), DriverError> {
        let election_ticks_max = 2 * self.node.config.election_ticks() + 2;
        let single_voters: Vec<u32> = self
            .groups
            .borrow()
            .iter()
            .filter(|group| group.member && group.single_voter)
            .map(|group| group.group_id)
            .collect();
        {
            let mut raft = self.raft.borrow_mut();
            for &group_id in &single_voters {
                let Some(node) = raft.group_mut(group_id) else {
                    continue;
                };
                for _ in 0..election_ticks_max {
                    if node.role() == Role::Leader {
                        break;
                    }
                    node.tick();
                }
            }
        }
        loop {
            let caught_up = {
                let raft = self.raft.borrow();
                single_voters.iter().all(|&group_id| {
                    raft.group(group_id).is_none_or(|node| {
                        node.role() == Role::Leader && node.applied_index() >= node.last_index()
                    })
                })
            };
            if caught_up {
                return Ok(());
            }
            if !self.raft.borrow().has_ready() {
                return Err("single-voter groups did not elect themselves".into());
            }
            self.process_ready().await?;
        }
    }

    /// Handles one batch of work of every group (see the module documentation).
    pub(crate) async fn process_ready(&self) -> Result<(), DriverError> {
        if !self.raft.borrow().has_ready() {
            return Ok(());
        }
        let ready = self.raft.borrow_mut().ready();
        self.send_envelopes(ready.envelopes);
        let mut sync_needed = !ready.persisted_envelopes.is_empty();
        let mut persisted = Vec::new();
        let mut woke = false;
        for (group_id, mut work) in ready.groups {
            let position = work.persisted_position();
            if let Some(snapshot) = work.snapshot.take() {
                self.install_snapshot(group_id, snapshot)?;
                sync_needed = true;
                woke = true;
            }
            if !work.entries.is_empty() {
                self.persist_entries(group_id, &work.entries).await?;
                sync_needed = true;
            }
            if let Some(hard_state) = work.hard_state {
                sync_needed |= self.persist_hard_state(group_id, hard_state)?;
            }
            if let Some(position) = position {
                persisted.push((group_id, position));
            }
            if !work.committed_entries.is_empty() {
                self.apply_entries(group_id, &work.committed_entries)?;
                woke = true;
            }
            for read_state in work.read_states {
                self.confirm_read(read_state);
            }
            if let (Some(soft_state), Some(link)) = (&work.soft_state, &self.node.config.link) {
                link.observe_member(group_id, soft_state.role, soft_state.leader);
            }
            woke |= work.soft_state.is_some();
            if work.soft_state.is_some() || work.hard_state.is_some() {
                if let Some(node) = self.raft.borrow().group(group_id) {
                    let (role, term, leader) = (node.role(), node.term(), node.leader_id());
                    metrics::global().observe_raft_member(group_id, role, term, leader);
                }
            }
        }
        if woke {
            self.wake_apply_watchers();
        }
        if sync_needed {
            let lsn = self.wal.stats().appended_lsn;
            self.wal
                .sync(lsn)
                .await
                .map_err(|error| format!("sync raft batch: {error}"))?;
        }
        {
            let mut raft = self.raft.borrow_mut();
            for (group_id, (index, term)) in persisted {
                // Only an unknown group can fail here, and every group in a ready is known.
                let _ = raft.on_persisted(group_id, index, term);
            }
        }
        self.send_envelopes(ready.persisted_envelopes);
        Ok(())
    }

    fn send_envelopes(&self, envelopes: Vec<Envelope>) {
        let Some(transport) = &self.transport else {
            return;
        };
        for envelope in envelopes {
            if !envelope.is_empty() {
                transport.send(envelope.to, encode_envelope(&envelope));
            }
        }
    }

    fn with_store<T>(
        &self,
        group_id: GroupId,
        action: impl FnOnce(&mut crate::raftlog::WalLogStore<crate::wal::Wal>) -> T,
    ) -> Result<T, DriverError> {
        let mut raft = self.raft.borrow_mut();
        let node = raft
            .group_mut(group_id)
            .ok_or_else(|| format!("group {group_id} is not hosted"))?;
        Ok(action(node.storage_mut()))
    }

    /// Buffers `entries` in the WAL, in chunks that fit its pending-bytes bound, waiting for
    /// the log to drain between chunks when it is full.
    async fn persist_entries(
        &self,
        group_id: GroupId,
        entries: &[Entry],
    ) -> Result<(), DriverError> {
        let mut start = 0;
        while start < entries.len() {
            let mut end = start;
            let mut chunk_bytes = 0;
            while end < entries.len() {
                let record = crate::raftlog::store::entry_record(group_id, &entries[end]);
                let bytes = frame_bytes(&record);
                if end > start && chunk_bytes + bytes > ENTRY_CHUNK_BYTES_MAX {
                    break;
                }
                chunk_bytes += bytes;
                end += 1;
            }
            let stats = self.wal.stats();
            if stats.appended_lsn - stats.durable_lsn + chunk_bytes > PENDING_BYTES_MAX_DEFAULT {
                self.wal
                    .sync(stats.appended_lsn)
                    .await
                    .map_err(|error| format!("drain write-ahead log: {error}"))?;
            }
            let chunk = &entries[start..end];
            self.with_store(group_id, |store| store.append(chunk))?
                .map_err(|error| format!("append entries of group {group_id}: {error}"))?;
            start = end;
        }
        Ok(())
    }

    /// Buffers `hard_state` when its term or vote changed and returns whether it did (then it
    /// must be synced before anything is acknowledged). A change of the commit index alone is
    /// not written: the commit index is only a restart shortcut (a restarted member learns it
    /// again from its leader, and a single voter recommits its whole log with its no-op), and
    /// writing it would cost every batch a second fsync in the log's flusher.
    fn persist_hard_state(
        &self,
        group_id: GroupId,
        hard_state: HardState,
    ) -> Result<bool, DriverError> {
        self.with_store(group_id, |store| {
            let previous = store.hard_state();
            if previous.term == hard_state.term && previous.vote == hard_state.vote {
                return Ok(false);
            }
            store.set_hard_state(hard_state).map(|()| true)
        })?
        .map_err(|error| format!("persist hard state of group {group_id}: {error}"))
    }

    /// Installs a snapshot received from the leader: persist it, then replace the group's
    /// state machine. Proposals it covers have an unknown outcome.
    fn install_snapshot(&self, group_id: GroupId, snapshot: Snapshot) -> Result<(), DriverError> {
        let index = snapshot.meta.index;
        // Decode first: a snapshot that does not decode must not replace anything.
        let state = GroupState::decode_snapshot(
            group_id,
            &snapshot.data,
            self.node.unarchived_bytes.clone(),
        )
        .map_err(|error| format!("decode snapshot of group {group_id}: {error}"))?;
        self.with_store(group_id, |store| store.apply_snapshot(snapshot))?
            .map_err(|error| format!("install snapshot of group {group_id}: {error}"))?;
        let slot = self.slot_of(group_id);
        let mut completed = 0;
        {
            let mut groups = self.groups.borrow_mut();
            let group = &mut groups[slot];
            group.state = state;
            group.snapshot_index = index;
            let later = group.waiters.split_off(&(index + 1));
            for (_, waiter) in std::mem::replace(&mut group.waiters, later) {
                completed += 1;
                let _ = waiter.outcome.try_send(Err(ServiceError::RaftTimeout));
            }
            release_reads(&mut group.reads, index);
        }
        self.waiters_completed(completed);
        metrics::global().set_unarchived_bytes(self.node.unarchived_bytes());
        metrics::global().raft_snapshot();
        metrics::global().raft_snapshot_installed();
        tracing::info!(
            shard = self.shard_index,
            group = group_id,
            index,
            "installed snapshot"
        );
        Ok(())
    }

    /// Applies committed entries in log order and completes their waiters.
    fn apply_entries(&self, group_id: GroupId, entries: &[Entry]) -> Result<(), DriverError> {
        let slot = self.slot_of(group_id);
        let mut completed = 0;
        let mut last_index = None;
        // Only the leader fans commit notifications out to the nodes without a replica
        // (cluster.md §4); replicas publish on their own apply.
        let fan_out = self.node.config.link.as_deref().filter(|_| {
            self.raft
                .borrow()
                .group(group_id)
                .is_some_and(|node| node.role() == Role::Leader)
        });
        {
            let mut groups = self.groups.borrow_mut();
            let group = &mut groups[slot];
            for entry in entries {
                debug_assert_eq!(
                    entry.index,
                    group.state.applied_index() + 1,
                    "group {group_id} applied out of order"
                );
                let waiter = group.waiters.remove(&entry.index);
                completed += usize::from(waiter.is_some());
                let waiter = match waiter {
                    Some(waiter)
                        if waiter.term == entry.term && entry.kind == EntryKind::Normal =>
                    {
                        Some(waiter)
                    }
                    Some(waiter) => {
                        // Another leader's entry took this index: the proposal never committed.
                        let _ = waiter.outcome.try_send(Err(ServiceError::RaftUnavailable));
                        None
                    }
                    None => None,
                };
                match entry.kind {
                    EntryKind::Noop => group.state.apply_empty(entry.index),
                    EntryKind::Normal => {
                        let (command, outcome_sender) = match waiter {
                            Some(waiter) => (waiter.command, Some(waiter.outcome)),
                            None => {
                                let command = Command::decode(&entry.data).map_err(|error| {
                                    format!("group {group_id} entry {}: {error}", entry.index)
                                })?;
                                (command, None)
                            }
                        };
                        let outcome = self.apply_command(
                            &mut group.state,
                            entry.index,
                            &command,
                            fan_out.map(|link| (link, group_id)),
                        );
                        if let Some(sender) = outcome_sender {
                            // The request may have gone away; the entry is applied all the same.
                            let _ = sender.try_send(Ok(outcome));
                        }
                    }
                }
                last_index = Some(entry.index);
            }
            let applied = group.state.applied_index();
            release_reads(&mut group.reads, applied);
        }
        if let Some(index) = last_index {
            let _ = self.raft.borrow_mut().on_applied(group_id, index);
        }
        self.waiters_completed(completed);
        metrics::global().set_unarchived_bytes(self.node.unarchived_bytes());
        self.maybe_snapshot(group_id)
    }

    fn apply_command(
        &self,
        state: &mut GroupState,
        index: u64,
        command: &Command,
        fan_out: Option<(&ClusterLink, GroupId)>,
    ) -> ApplyOutcome {
        let last_seq_before = match command {
            Command::AppendEvents { session_id, .. } => {
                state.session(session_id).map(|record| record.last_seq)
            }
            _ => None,
        };
        let outcome = state.apply(index, command);
        if let (
            Some(before),
            ApplyOutcome::Appended {
                reply,
                events_appended,
                ..
            },
        ) = (last_seq_before, &outcome)
        {
            debug_assert_eq!(
                reply.last_seq,
                before + events_appended,
                "seq not contiguous"
            );
        }
        if let (Some(archive), ApplyOutcome::Appended { .. }) = (&self.node.archive, &outcome) {
            archive.note_applied_write(self.node.unarchived_bytes());
        }
        if let ApplyOutcome::Appended { notifications, .. } = &outcome {
            let session_id = command.session_id();
            for notification in notifications {
                self.node.notify.publish(session_id, *notification);
                if let Some((link, group_id)) = fan_out {
                    link.fan_out_notification(group_id, session_id, *notification);
                }
            }
        }
        outcome
    }

    fn waiters_completed(&self, completed: usize) {
        if completed > 0 {
            self.waiter_count
                .set(self.waiter_count.get().saturating_sub(completed));
            self.release_pending_space();
        }
    }

    /// A read confirmed by the leader: serve it once apply reaches its index.
    fn confirm_read(&self, read_state: ReadState) {
        let Some((slot, sender)) = self.pending_reads.borrow_mut().remove(&read_state.ctx) else {
            return;
        };
        let mut groups = self.groups.borrow_mut();
        let group = &mut groups[slot];
        if group.state.applied_index() >= read_state.index {
            let _ = sender.try_send(());
        } else {
            group.reads.push((read_state.index, sender));
        }
    }

    /// Snapshots `group_id` once it applied `raft_snapshot_entries` entries since its last one.
    fn maybe_snapshot(&self, group_id: GroupId) -> Result<(), DriverError> {
        let due = {
            let groups = self.groups.borrow();
            let group = &groups[self.slot_of(group_id)];
            group.state.applied_index() - group.snapshot_index
                >= self.node.config.raft_snapshot_entries.max(1)
        };
        if due {
            self.take_snapshot(group_id)?;
        }
        Ok(())
    }

    /// Snapshots the applied state of `group_id` and releases the log entries it covers
    /// (cluster.md §4.1, full snapshot: every session and every unarchived event).
    fn take_snapshot(&self, group_id: GroupId) -> Result<(), DriverError> {
        let slot = self.slot_of(group_id);
        let (index, data) = {
            let groups = self.groups.borrow();
            let state = &groups[slot].state;
            (state.applied_index(), state.encode_snapshot())
        };
        let created = {
            let mut raft = self.raft.borrow_mut();
            let node = raft
                .group_mut(group_id)
                .ok_or_else(|| format!("group {group_id} is not hosted"))?;
            if index < node.storage().first_index() {
                return Ok(());
            }
            let term = node
                .storage()
                .term(index)
                .map_err(|error| format!("term of snapshot of group {group_id}: {error}"))?;
            let meta = SnapshotMeta {
                index,
                term,
                voters: node.config().voters.clone(),
            };
            node.snapshot_created(Snapshot::new(meta, data))
        };
        match created {
            Ok(()) => {
                self.groups.borrow_mut()[slot].snapshot_index = index;
                metrics::global().raft_snapshot();
                tracing::debug!(
                    shard = self.shard_index,
                    group = group_id,
                    index,
                    "took snapshot"
                );
                Ok(())
            }
            Err(error @ RaftError::Storage(_)) => {
                Err(format!("store snapshot of group {group_id}: {error}"))
            }
            Err(error) => {
                tracing::warn!(group = group_id, "skipped snapshot: {error}");
                Ok(())
            }
        }
    }

    /// Deletes the WAL segments that no group needs any more. Groups whose first entry pins
    /// the oldest segment while the log grows past [`SEGMENTS_RETAINED_TARGET`] segments are
    /// snapshotted first; hard state records in releasable segments are written again.
    async fn release_segments(&self) -> Result<(), DriverError> {
        let segments = self.wal.segments();
        let Some(oldest_end_lsn) = segments.first().and_then(|segment| segment.end_lsn) else {
            return Ok(());
        };
        if segments.len() < 2 {
            return Ok(());
        }
        let member_groups: Vec<u32> = self
            .groups
            .borrow()
            .iter()
            .filter(|group| group.member)
            .map(|group| group.group_id)
            .collect();
        if segments.len() > SEGMENTS_RETAINED_TARGET {
            for &group_id in &member_groups {
                let pins = self
                    .with_store(group_id, |store| {
                        store
                            .first_entry_lsn()
                            .is_some_and(|lsn| lsn < oldest_end_lsn)
                    })
                    .unwrap_or(false);
                let has_unsnapshotted = {
                    let groups = self.groups.borrow();
                    let group = &groups[self.slot_of(group_id)];
                    group.state.applied_index() > group.snapshot_index
                };
                if pins && has_unsnapshotted {
                    self.take_snapshot(group_id)?;
                }
            }
        }
        let appended_lsn = self.wal.stats().appended_lsn;
        let mut needed_lsn = appended_lsn;
        for &group_id in &member_groups {
            if let Some(lsn) = self.with_store(group_id, |store| store.first_entry_lsn())? {
                needed_lsn = needed_lsn.min(lsn);
            }
        }
        if oldest_end_lsn > needed_lsn {
            return Ok(());
        }
        let mut rewrote = false;
        for &group_id in &member_groups {
            let stale = self.with_store(group_id, |store| {
                store.hard_state_lsn().is_some_and(|lsn| lsn < needed_lsn)
            })?;
            if stale {
                self.with_store(group_id, |store| store.rewrite_hard_state())?
                    .map_err(|error| format!("rewrite hard state of group {group_id}: {error}"))?;
                rewrote = true;
            }
        }
        if rewrote {
            let lsn = self.wal.stats().appended_lsn;
            self.wal
                .sync(lsn)
                .await
                .map_err(|error| format!("sync rewritten hard states: {error}"))?;
        }
        let released = self
            .wal
            .release_segments_before(needed_lsn)
            .await
            .map_err(|error| format!("release segments: {error}"))?;
        if released > 0 {
            tracing::debug!(
                shard = self.shard_index,
                released,
                "released write-ahead log segments"
            );
        }
        Ok(())
    }
}

/// The process-wide origin of the tick grid (see [`next_tick_after`]).
static TICK_GRID_ORIGIN: OnceLock<Instant> = OnceLock::new();

/// The first tick after `now` on a grid of `interval` shared by every shard of the process.
/// Shards that tick at the same instant send their heartbeats in one burst: the peer bridge
/// writes them together and the peers answer together, so an idle node wakes a few times per
/// interval instead of a few times per shard and interval.
fn next_tick_after(now: Instant, interval: Duration) -> Instant {
    let origin = *TICK_GRID_ORIGIN.get_or_init(|| now);
    let interval_ns = interval.as_nanos().max(1);
    let elapsed_ns = now.saturating_duration_since(origin).as_nanos();
    let ticks = elapsed_ns / interval_ns + 1;
    let offset_ns = u64::try_from(ticks * interval_ns).unwrap_or(u64::MAX);
    origin + Duration::from_nanos(offset_ns)
}

/// Serves the reads waiting for apply up to `applied`.
fn release_reads(reads: &mut Vec<(u64, flume::Sender<()>)>, applied: u64) {
    reads.retain(|(index, sender)| {
        if *index <= applied {
            let _ = sender.try_send(());
            false
        } else {
            true
        }
    });
}

/// The group a WAL record belongs to.
pub(crate) fn record_group(record: &WalRecord) -> u32 {
    match record {
        WalRecord::Entry { group, .. }
        | WalRecord::HardState { group, .. }
        | WalRecord::SnapshotInstalled { group, .. } => *group,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_fall_on_one_grid_for_every_caller() {
        let interval = Duration::from_millis(100);
        let now = Instant::now();
        let first = next_tick_after(now, interval);
        assert!(first > now && first <= now + interval);
        // Another shard asking a moment later, within the same interval, gets the same tick.
        let later = now + (first - now) / 2;
        assert_eq!(next_tick_after(later, interval), first);
        assert_eq!(next_tick_after(first, interval), first + interval);
    }
}
