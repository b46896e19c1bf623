//! One shard's local state and its write path: the groups it owns, its write-ahead log, and the
//! queue of entries awaiting durability.
//!
//! # Write path (single-voter groups)
//! 1. Leader-side checks against applied state (existence, backpressure) in the handle.
//! 2. [`Shard::propose`] stamps the command, takes the group's next `(term, index)`, encodes the
//!    command into a WAL `Entry` and appends it (buffer only). The entry joins the back of the
//!    shard's *pending* queue, which is therefore in log order, and the request awaits the
//!    entry's outcome.
//! 3. The shard's applier task waits for `wal.sync(<last pending lsn>)`. The WAL batches every
//!    entry buffered while its previous write was running into one write and one fdatasync, so
//!    all requests in flight share fsyncs: request handling never serialises on the disk.
//! 4. After each sync the applier applies *every* pending entry up to the durable LSN, front to
//!    back, and sends each outcome to its request. Apply is therefore strictly in log order and
//!    never ahead of durability. Because the applier, not the request, drives apply, a request
//!    that is cancelled after its append (client gone) still gets its entry applied promptly.
//!
//! A WAL failure is fail-stop: the shard applies what the log reports durable, fails every
//! other pending entry with `Internal`, records the failure node-wide (readiness reports
//! `storage_failed`) and refuses every later write. The fsync is never retried.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::group_log::{GroupLog, SINGLE_NODE_ID};
use super::node::NodeShared;
use crate::api::{ListQuery, ServiceError, SessionRecord};
use crate::metrics;
use crate::state::{ApplyOutcome, Command, GroupState};
use crate::time;
use crate::wal::{Lsn, StorageFailure, Wal, WalError, WalRecord, WalStats};

/// Upper bound on entries appended but not yet applied on one shard. The WAL's pending-bytes
/// bound normally limits first; this keeps the queue bounded even for tiny entries.
pub const SHARD_PENDING_ENTRIES_MAX: usize = 65_536;

/// A group hosted by this shard: its applied state and its log positions.
pub(crate) struct GroupSlot {
    pub(crate) state: GroupState,
    pub(crate) log: GroupLog,
}

/// Where the outcome of one proposed entry is delivered (a one-shot channel; the request may
/// have gone away, in which case the outcome is dropped).
type OutcomeSender = flume::Sender<Result<ApplyOutcome, ServiceError>>;
type OutcomeReceiver = flume::Receiver<Result<ApplyOutcome, ServiceError>>;

/// An entry appended to the WAL whose outcome is not known yet.
struct PendingEntry {
    /// End LSN of the entry's record: it is durable once the WAL's durable LSN reaches it.
    lsn: Lsn,
    /// Index of the group in [`Shard::groups`].
    slot: usize,
    /// Raft log index of the entry.
    index: u64,
    command: Command,
    outcome: OutcomeSender,
}

/// The state of one shard, shared (`Rc`) by its handles and tasks on its executor.
pub(crate) struct Shard {
    pub(crate) shard_index: u32,
    pub(crate) node: Arc<NodeShared>,
    wal: Wal,
    /// Groups with `group_id % shards == shard_index`, at slot `group_id / shards`.
    groups: RefCell<Vec<GroupSlot>>,
    /// Entries appended but not applied, in log order.
    pending: RefCell<VecDeque<PendingEntry>>,
    /// Highest LSN known durable from a completed `sync`.
    durable_lsn: Cell<Lsn>,
    /// Last timestamp stamped into a command; stamps never go backwards on a shard.
    last_stamp_us: Cell<i64>,
    /// Set after a WAL failure: every write is refused from then on.
    failed: Cell<bool>,
    /// Released whenever entries leave the pending queue, for writers waiting on its bound.
    pending_space: RefCell<Vec<flume::Sender<()>>>,
    /// Rung after every append so the applier wakes; capacity 1 because one ring is enough.
    doorbell: flume::Sender<()>,
    /// Set by [`Shard::close`]; the applier stops and leaves the rest to `close`.
    closing: Cell<bool>,
}

impl Shard {
    /// A shard over an opened, recovered `wal` and the `groups` recovery rebuilt.
    pub(crate) fn new(
        shard_index: u32,
        node: Arc<NodeShared>,
        wal: Wal,
        groups: Vec<GroupSlot>,
        last_stamp_us: i64,
    ) -> (Self, flume::Receiver<()>) {
        let durable_lsn = wal.durable_lsn();
        let (doorbell, doorbell_receiver) = flume::bounded(1);
        let shard = Shard {
            shard_index,
            node,
            wal,
            groups: RefCell::new(groups),
            pending: RefCell::new(VecDeque::new()),
            durable_lsn: Cell::new(durable_lsn),
            last_stamp_us: Cell::new(last_stamp_us),
            failed: Cell::new(false),
            pending_space: RefCell::new(Vec::new()),
            doorbell,
            closing: Cell::new(false),
        };
        (shard, doorbell_receiver)
    }

    /// The slot of `group_id` in [`Shard::groups`]. The caller routed the group here.
    pub(crate) fn slot_of(&self, group_id: u32) -> usize {
        debug_assert_eq!(group_id % self.node.shard_count(), self.shard_index);
        (group_id / self.node.shard_count()) as usize
    }

    /// Run `read` against the applied state of `group_id`.
    pub(crate) fn with_group<T>(&self, group_id: u32, read: impl FnOnce(&GroupState) -> T) -> T {
        let groups = self.groups.borrow();
        read(&groups[self.slot_of(group_id)].state)
    }

    /// Up to `limit + 1` matching sessions over all groups of this shard, ascending by id.
    pub(crate) fn list(&self, query: &ListQuery) -> Vec<SessionRecord> {
        let groups = self.groups.borrow();
        let mut sessions: Vec<SessionRecord> = groups
            .iter()
            .flat_map(|group| group.state.list(query))
            .collect();
        sessions.sort_by(|left, right| left.id.as_bytes().cmp(right.id.as_bytes()));
        sessions.truncate(
            usize::try_from(query.limit)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        );
        sessions
    }

    /// Number of groups hosted here.
    pub(crate) fn group_count(&self) -> usize {
        self.groups.borrow().len()
    }

    /// The `(group_id, applied_index)` of every hosted group, for tests and status.
    pub(crate) fn applied_indexes(&self) -> Vec<(u32, u64)> {
        self.groups
            .borrow()
            .iter()
            .map(|group| (group.log.group_id(), group.log.applied_index()))
            .collect()
    }

    /// Notice a log failure that no write has run into yet (e.g. a failed segment preparation
    /// in the background) and poison the shard for it.
    pub(crate) fn check_storage(&self) {
        if self.failed.get() {
            return;
        }
        if let Some(failure) = self.wal.failure() {
            self.fail_storage(&WalError::Failed(failure));
        }
    }

    /// Counters of this shard's write-ahead log.
    pub(crate) fn wal_stats(&self) -> WalStats {
        self.wal.stats()
    }

    fn next_stamp_us(&self) -> i64 {
        let stamp_us = time::now_us().max(self.last_stamp_us.get());
        self.last_stamp_us.set(stamp_us);
        stamp_us
    }

    /// Stamp `command` with this shard's clock, append it as the next entry of `group_id`,
    /// wait until it is durable and applied, and return its outcome.
    pub(crate) async fn propose(
        &self,
        group_id: u32,
        mut command: Command,
    ) -> Result<ApplyOutcome, ServiceError> {
        let started = Instant::now();
        let slot = self.slot_of(group_id);
        let (outcome, label) = loop {
            if self.failed.get() {
                return Err(ServiceError::Internal(
                    "storage failed; writes refused".into(),
                ));
            }
            if self.closing.get() {
                return Err(ServiceError::RaftUnavailable);
            }
            if self.pending.borrow().len() >= SHARD_PENDING_ENTRIES_MAX {
                self.wait_for_pending_space().await;
                continue;
            }
            // Stamp only now, right before the append, so that stamps follow log order even
            // when an earlier attempt had to wait for buffer space.
            set_stamp(&mut command, self.next_stamp_us());
            match self.append_entry(slot, command) {
                Ok(appended) => break appended,
                Err(refused) => match *refused {
                    (WalError::Full, returned) => {
                        command = returned;
                        self.wal.wait_for_space().await;
                    }
                    (error, _) => return Err(self.refuse_write(error)),
                },
            }
        };
        let _ = self.doorbell.try_send(());
        let result = outcome.recv_async().await.unwrap_or_else(|_| {
            Err(ServiceError::Internal(
                "shard stopped before the entry was applied".into(),
            ))
        });
        // A committed command counts as `ok` even when apply rejected it (a conflict is a
        // committed decision); `error` means the entry's fate is unknown or it never committed.
        let metric_outcome = if result.is_ok() { "ok" } else { "error" };
        let commit_duration = result.is_ok().then(|| started.elapsed());
        metrics::global().raft_command(label, metric_outcome, commit_duration);
        result
    }

    /// The applier: after every append, wait until the last pending entry is durable and apply
    /// everything up to it. Runs until the shard closes or its storage fails.
    pub(crate) async fn run_applier(self: Rc<Self>, doorbell: flume::Receiver<()>) {
        while doorbell.recv_async().await.is_ok() {
            loop {
                if self.closing.get() || self.failed.get() {
                    return;
                }
                let Some(lsn) = self.pending.borrow().back().map(|entry| entry.lsn) else {
                    break;
                };
                self.sync_and_apply(lsn).await;
            }
        }
    }

    async fn sync_and_apply(&self, lsn: Lsn) {
        match self.wal.sync(lsn).await {
            Ok(()) => {
                self.durable_lsn.set(self.durable_lsn.get().max(lsn));
                self.apply_durable();
            }
            // Only `close` closes the log, and it settles the pending entries itself.
            Err(WalError::Closed) => {}
            Err(error) => self.fail_storage(&error),
        }
    }

    /// Append the hard state (first entry of the group only) and the entry; on success the
    /// entry is queued as pending. Nothing is queued when the append fails, and the command is
    /// handed back so that the caller can retry after waiting for space.
    fn append_entry(
        &self,
        slot: usize,
        command: Command,
    ) -> Result<(OutcomeReceiver, &'static str), Box<(WalError, Command)>> {
        let mut groups = self.groups.borrow_mut();
        let group = &mut groups[slot];
        if group.log.needs_hard_state() {
            let hard_state = WalRecord::HardState {
                group: group.log.group_id(),
                term: group.log.term(),
                vote: SINGLE_NODE_ID,
                commit: 0,
            };
            if let Err(error) = self.wal.append(&hard_state) {
                return Err(Box::new((error, command)));
            }
            group.log.hard_state_appended();
        }
        let (term, index) = group.log.next_position();
        let payload = Bytes::from(command.encode());
        let entry = WalRecord::Entry {
            group: group.log.group_id(),
            term,
            index,
            payload,
        };
        let lsn = match self.wal.append(&entry) {
            Ok(lsn) => lsn,
            Err(error) => return Err(Box::new((error, command))),
        };
        group.log.entry_appended(index);
        let (outcome, receiver) = flume::bounded(1);
        let label = command.kind_label();
        self.pending.borrow_mut().push_back(PendingEntry {
            lsn,
            slot,
            index,
            command,
            outcome,
        });
        Ok((receiver, label))
    }

    /// Apply, in log order, every pending entry covered by the durable LSN.
    fn apply_durable(&self) {
        let durable_lsn = self.durable_lsn.get();
        let mut applied_any = false;
        loop {
            let entry = {
                let mut pending = self.pending.borrow_mut();
                match pending.front() {
                    Some(front) if front.lsn <= durable_lsn => pending.pop_front(),
                    _ => None,
                }
            };
            let Some(entry) = entry else { break };
            let outcome = self.apply_entry(&entry);
            // The request may have been cancelled; the entry is applied all the same.
            let _ = entry.outcome.try_send(Ok(outcome));
            applied_any = true;
        }
        if applied_any {
            self.release_pending_space();
            metrics::global().set_unarchived_bytes(self.node.unarchived_bytes());
        }
    }

    fn apply_entry(&self, entry: &PendingEntry) -> ApplyOutcome {
        let outcome = {
            let mut groups = self.groups.borrow_mut();
            let group = &mut groups[entry.slot];
            let last_seq_before = match &entry.command {
                Command::AppendEvents { session_id, .. } => group
                    .state
                    .session(session_id)
                    .map(|record| record.last_seq),
                _ => None,
            };
            group.log.entry_durable(entry.index);
            let outcome = group.state.apply(entry.index, &entry.command);
            group.log.entry_applied(entry.index);
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
            outcome
        };
        if let ApplyOutcome::Appended { notifications, .. } = &outcome {
            let session_id = entry.command.session_id();
            for notification in notifications {
                self.node.notify.publish(session_id, *notification);
            }
        }
        outcome
    }

    /// The WAL failed: apply what it reports durable, fail the rest, refuse further writes.
    fn fail_storage(&self, error: &WalError) {
        if !self.failed.replace(true) {
            let failure = self.wal.failure().unwrap_or_else(|| StorageFailure {
                path: self.wal_dir(),
                error: error.to_string(),
            });
            // The log itself logged the failure and counted it in `starcite_storage_failures_total`.
            tracing::debug!(shard = self.shard_index, %failure, "shard refuses writes from now on");
            self.node.record_storage_failure(failure);
        }
        self.durable_lsn
            .set(self.durable_lsn.get().max(self.wal.durable_lsn()));
        self.apply_durable();
        let failed: Vec<PendingEntry> = self.pending.borrow_mut().drain(..).collect();
        for entry in failed {
            let reason = format!("write-ahead log failed: {error}");
            let _ = entry.outcome.try_send(Err(ServiceError::Internal(reason)));
        }
        self.release_pending_space();
    }

    /// Map an append error to the request's error; storage errors poison the shard.
    fn refuse_write(&self, error: WalError) -> ServiceError {
        match error {
            // Closing happens only at shutdown, after serving stopped: nothing was written.
            WalError::Closed => ServiceError::RaftUnavailable,
            WalError::RecordTooLarge { .. } => ServiceError::Internal(error.to_string()),
            _ => {
                self.fail_storage(&error);
                ServiceError::Internal(format!("write-ahead log failed: {error}"))
            }
        }
    }

    fn wal_dir(&self) -> std::path::PathBuf {
        self.node.shard_dir(self.shard_index)
    }

    async fn wait_for_pending_space(&self) {
        let (sender, receiver) = flume::bounded(1);
        self.pending_space.borrow_mut().push(sender);
        let _ = receiver.recv_async().await;
    }

    fn release_pending_space(&self) {
        // Dropping the senders wakes every waiter; they re-check the bound themselves.
        self.pending_space.borrow_mut().clear();
    }

    /// Stop taking writes, flush the log, apply everything it made durable and close it.
    pub(crate) async fn close(&self) -> Result<(), WalError> {
        self.closing.set(true);
        let _ = self.doorbell.try_send(());
        let closed = self.wal.close().await;
        match &closed {
            Ok(()) => {
                // A clean close flushed every buffered record.
                self.durable_lsn
                    .set(self.durable_lsn.get().max(self.wal.durable_lsn()));
                self.apply_durable();
            }
            Err(error) => self.fail_storage(error),
        }
        // Entries the log did not make durable (none after a clean close) have unknown outcome.
        let leftover: Vec<PendingEntry> = self.pending.borrow_mut().drain(..).collect();
        for entry in leftover {
            let _ = entry
                .outcome
                .try_send(Err(ServiceError::Internal("shard closed".into())));
        }
        if self.failed.get() {
            // The failure was already reported through readiness and the failed requests.
            return Ok(());
        }
        closed
    }
}

/// Put the leader's timestamp into a command that carries one.
fn set_stamp(command: &mut Command, now_us: i64) {
    match command {
        Command::CreateSession { stamp_us, .. } | Command::AppendEvents { stamp_us, .. } => {
            *stamp_us = now_us;
        }
        Command::AckArchived { .. } => {}
    }
}
