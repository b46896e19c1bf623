//! One shard's local state: the Raft members of the groups it owns (a [`MultiRaft`] over
//! [`WalLogStore`]s on the shard's one write-ahead log), their applied state machines, and the
//! requests waiting for their entries or reads.
//!
//! # Write path
//! 1. Leader-side checks against applied state (existence, backpressure) in `ops`; they run only
//!    once this member leads and has applied an entry of its own term (its no-op), so the
//!    applied state includes every entry committed by earlier leaders.
//! 2. [`Shard::propose`] stamps the command and proposes it to the group's Raft member; the
//!    request registers a waiter at the entry's index and rings the driver.
//! 3. The driver (`driver.rs`) persists the batch of every group with one fsync, commits, applies
//!    committed entries in log order and completes the waiters. A single-voter group commits as
//!    soon as the fsync returns; a replicated one once a quorum has it.
//! 4. The request waits at most [`COMMIT_WAIT_MS`]; then it answers `raft_timeout` (the entry may
//!    still commit). A request cancelled after its proposal does not stop the entry.
//!
//! A storage failure is fail-stop: the driver stops (this member stops acknowledging and its
//! followers elect a new leader), every waiter fails with `Internal`, the failure is recorded
//! node-wide (readiness reports `storage_failed`) and every later write is refused.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use starcite_raft::multi::{MultiRaft, MultiRaftError};
use starcite_raft::{Index, NodeId, RaftError, Role, Storage, Term, NO_NODE};

use super::node::NodeShared;
use crate::api::{ListQuery, ServiceError, SessionRecord};
use crate::metrics;
use crate::raftlog::{RaftTransport, WalLogStore};
use crate::state::{ApplyOutcome, Command, GroupState};
use crate::time;
use crate::wal::{StorageFailure, Wal, WalError, WalStats, ENTRY_PAYLOAD_BYTES_MAX};

/// Upper bound on proposals of one shard waiting for their entries to apply.
pub const SHARD_PENDING_ENTRIES_MAX: usize = 65_536;

/// How long a request waits for its entry to commit and apply, or for a read to be confirmed
/// (cluster.md §5.1 step 4), before answering `raft_timeout`.
pub const COMMIT_WAIT_MS: u64 = 2000;

/// The group's Raft members on this shard.
pub(crate) type ShardRaft = MultiRaft<WalLogStore<Wal>>;

/// Where the outcome of one proposed entry is delivered (a one-shot channel; the request may
/// have gone away, in which case the outcome is dropped).
pub(crate) type OutcomeSender = flume::Sender<Result<ApplyOutcome, ServiceError>>;

/// A proposal of this node waiting for its entry to apply.
pub(crate) struct Waiter {
    /// Term the entry was proposed in: an entry applied at the same index with another term
    /// replaced it, and the proposal did not commit.
    pub(crate) term: Term,
    /// The command, kept so that apply does not decode what it just encoded.
    pub(crate) command: Command,
    pub(crate) outcome: OutcomeSender,
}

/// A group hosted by this shard.
pub(crate) struct GroupSlot {
    pub(crate) group_id: u32,
    pub(crate) state: GroupState,
    /// Whether this node runs a member of the group (it is one of the group's voters).
    pub(crate) member: bool,
    /// Whether the group has this node as its only voter.
    pub(crate) single_voter: bool,
    /// Proposals awaiting apply, by log index.
    pub(crate) waiters: BTreeMap<Index, Waiter>,
    /// Confirmed reads waiting for apply to reach their index.
    pub(crate) reads: Vec<(Index, flume::Sender<()>)>,
    /// Index of the group's latest snapshot.
    pub(crate) snapshot_index: Index,
}

/// Why a request could not be run by this member.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// This node's member is not the group's leader (or hosts no member); retry at
    /// `leader_hint` if known. The router forwards there.
    #[error("not leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// Known leader of the group.
        leader_hint: Option<NodeId>,
    },
    /// Any other outcome, as the API reports it.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl ProposeError {
    /// The API error for a client of this node (without a router, "not leader" means that no
    /// replica here can take the request).
    pub fn into_service(self) -> ServiceError {
        match self {
            ProposeError::NotLeader { .. } => ServiceError::RaftUnavailable,
            ProposeError::Service(error) => error,
        }
    }
}

/// The state of one shard, shared (`Rc`) by its handles and tasks on its executor.
pub(crate) struct Shard {
    pub(crate) shard_index: u32,
    pub(crate) node: Arc<NodeShared>,
    pub(crate) wal: Wal,
    pub(crate) raft: RefCell<ShardRaft>,
    /// Groups with `group_id % shards == shard_index`, at slot `group_id / shards`.
    pub(crate) groups: RefCell<Vec<GroupSlot>>,
    /// Reads waiting for the leader's confirmation, by read context.
    pub(crate) pending_reads: RefCell<HashMap<u64, (usize, flume::Sender<()>)>>,
    next_read_context: Cell<u64>,
    /// Proposals registered in some slot's `waiters`.
    pub(crate) waiter_count: Cell<usize>,
    /// Last timestamp stamped into a command; stamps never go backwards on a shard.
    last_stamp_us: Cell<i64>,
    /// Set after a storage failure: every write is refused from then on.
    pub(crate) failed: Cell<bool>,
    /// Released whenever waiters complete, for writers waiting on the bound.
    pending_space: RefCell<Vec<flume::Sender<()>>>,
    /// Released after every driver iteration that applied something or changed roles.
    apply_watchers: RefCell<Vec<flume::Sender<()>>>,
    /// Rung after every proposal or read so the driver wakes; capacity 1 is enough.
    pub(crate) doorbell: flume::Sender<()>,
    /// Set by [`Shard::close`]; the driver stops.
    pub(crate) closing: Cell<bool>,
    pub(crate) transport: Option<Arc<dyn RaftTransport>>,
    /// The driver task, awaited by [`Shard::close`].
    pub(crate) driver: RefCell<Option<glommio::task::JoinHandle<()>>>,
}

impl Shard {
    /// A shard over an opened, recovered `wal` and the groups recovery rebuilt.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shard_index: u32,
        node: Arc<NodeShared>,
        wal: Wal,
        raft: ShardRaft,
        groups: Vec<GroupSlot>,
        last_stamp_us: i64,
    ) -> (Self, flume::Receiver<()>) {
        let (doorbell, doorbell_receiver) = flume::bounded(1);
        let transport = node
            .config
            .cluster
            .as_ref()
            .map(|cluster| cluster.transport.clone());
        let shard = Shard {
            shard_index,
            node,
            wal,
            raft: RefCell::new(raft),
            groups: RefCell::new(groups),
            pending_reads: RefCell::new(HashMap::new()),
            next_read_context: Cell::new(1),
            waiter_count: Cell::new(0),
            last_stamp_us: Cell::new(last_stamp_us),
            failed: Cell::new(false),
            pending_space: RefCell::new(Vec::new()),
            apply_watchers: RefCell::new(Vec::new()),
            doorbell,
            closing: Cell::new(false),
            transport,
            driver: RefCell::new(None),
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
            .filter(|group| group.member)
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
            .map(|group| (group.group_id, group.state.applied_index()))
            .collect()
    }

    /// `(role, leader, term, commit index, applied index)` of this node's member of
    /// `group_id`, or `None` when it hosts none.
    pub(crate) fn raft_status(&self, group_id: u32) -> Option<(Role, NodeId, Term, Index, Index)> {
        let raft = self.raft.borrow();
        raft.group(group_id).map(|node| {
            (
                node.role(),
                node.leader_id(),
                node.term(),
                node.commit_index(),
                node.applied_index(),
            )
        })
    }

    /// Notice a log failure that no write has run into yet (e.g. a failed segment preparation
    /// in the background) and poison the shard for it.
    pub(crate) fn check_storage(&self) {
        if self.failed.get() {
            return;
        }
        if let Some(failure) = self.wal.failure() {
            self.fail_storage(&WalError::Failed(failure).to_string());
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

    fn refuse_if_stopped(&self) -> Result<(), ProposeError> {
        if self.failed.get() {
            return Err(ServiceError::Internal("storage failed; writes refused".into()).into());
        }
        if self.closing.get() {
            return Err(ServiceError::RaftUnavailable.into());
        }
        Ok(())
    }

    /// Whether this node's member of `group_id` leads and has applied an entry of its own term;
    /// `Err` when it does not lead.
    fn leader_ready(&self, group_id: u32) -> Result<bool, ProposeError> {
        let raft = self.raft.borrow();
        let Some(node) = raft.group(group_id) else {
            return Err(ProposeError::NotLeader { leader_hint: None });
        };
        if node.role() != Role::Leader {
            let leader = node.leader_id();
            return Err(ProposeError::NotLeader {
                leader_hint: (leader != NO_NODE).then_some(leader),
            });
        }
        let applied = node.applied_index();
        Ok(matches!(node.storage().term(applied), Ok(term) if term == node.term()))
    }

    /// Wait (at most until `deadline`) until this member leads `group_id` with its no-op
    /// applied (cluster.md §4, "Leader start").
    pub(crate) async fn wait_leader_ready(
        &self,
        group_id: u32,
        deadline: Instant,
    ) -> Result<(), ProposeError> {
        loop {
            self.refuse_if_stopped()?;
            if self.leader_ready(group_id)? {
                return Ok(());
            }
            if !self.wait_for_apply(deadline).await {
                return Err(ServiceError::RaftTimeout.into());
            }
        }
    }

    /// Like [`Shard::wait_leader_ready`], but also after a storage failure: a single voter's
    /// applied state stays the latest committed state, so reads keep working.
    async fn wait_single_voter_readable(
        &self,
        group_id: u32,
        deadline: Instant,
    ) -> Result<(), ProposeError> {
        loop {
            if self.failed.get() && self.leader_ready(group_id).is_ok() {
                return Ok(());
            }
            if self.leader_ready(group_id)? {
                return Ok(());
            }
            if !self.wait_for_apply(deadline).await {
                return Err(ServiceError::RaftTimeout.into());
            }
        }
    }

    /// Waits until the driver applied something or roles changed; false once `deadline` passed.
    pub(crate) async fn wait_for_apply(&self, deadline: Instant) -> bool {
        let Some(remaining) = deadline.checked_duration_since(Instant::now()) else {
            return false;
        };
        let (sender, receiver) = flume::bounded::<()>(1);
        self.apply_watchers.borrow_mut().push(sender);
        future::or(
            async {
                let _ = receiver.recv_async().await;
                true
            },
            async {
                glommio::timer::sleep(remaining).await;
                false
            },
        )
        .await
    }

    /// Wakes every task waiting in [`Shard::wait_for_apply`].
    pub(crate) fn wake_apply_watchers(&self) {
        // Dropping the senders wakes the waiters; they re-check their condition.
        self.apply_watchers.borrow_mut().clear();
    }

    /// Confirm that a read of `group_id` may be served from applied state now: every write
    /// acknowledged before this call is applied (cluster.md §5.2). A single voter that leads
    /// with its no-op applied is always up to date; replicated groups use ReadIndex, which
    /// also works on followers.
    pub(crate) async fn linearizable_read(&self, group_id: u32) -> Result<(), ProposeError> {
        let deadline = Instant::now() + Duration::from_millis(COMMIT_WAIT_MS);
        let slot = self.slot_of(group_id);
        let (member, single_voter) = {
            let groups = self.groups.borrow();
            (groups[slot].member, groups[slot].single_voter)
        };
        if !member {
            return Err(ProposeError::NotLeader { leader_hint: None });
        }
        if single_voter {
            return self.wait_single_voter_readable(group_id, deadline).await;
        }
        self.refuse_if_stopped()?;
        let context = self.next_read_context.get();
        self.next_read_context.set(context + 1);
        let (sender, receiver) = flume::bounded(1);
        let asked = self.raft.borrow_mut().read_index(group_id, context);
        if let Err(error) = asked {
            return Err(map_raft_error(error));
        }
        self.pending_reads
            .borrow_mut()
            .insert(context, (slot, sender));
        let _ = self.doorbell.try_send(());
        let remaining = deadline.saturating_duration_since(Instant::now());
        let confirmed = future::or(async { receiver.recv_async().await.is_ok() }, async {
            glommio::timer::sleep(remaining).await;
            false
        })
        .await;
        self.pending_reads.borrow_mut().remove(&context);
        if confirmed {
            Ok(())
        } else {
            Err(ServiceError::RaftTimeout.into())
        }
    }

    /// Stamp `command` with this shard's clock, propose it to `group_id`, wait until it is
    /// committed and applied (at most [`COMMIT_WAIT_MS`]), and return its outcome.
    pub(crate) async fn propose(
        &self,
        group_id: u32,
        mut command: Command,
    ) -> Result<ApplyOutcome, ProposeError> {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(COMMIT_WAIT_MS);
        let slot = self.slot_of(group_id);
        while self.waiter_count.get() >= SHARD_PENDING_ENTRIES_MAX {
            self.refuse_if_stopped()?;
            self.wait_for_pending_space().await;
        }
        self.wait_leader_ready(group_id, deadline).await?;
        // Stamp only now, right before the proposal, so that stamps follow log order.
        set_stamp(&mut command, self.next_stamp_us());
        let label = command.kind_label();
        let data = command.encode();
        if data.len() as u64 > ENTRY_PAYLOAD_BYTES_MAX {
            return Err(ServiceError::Internal(format!(
                "command of {} bytes exceeds the entry maximum of {ENTRY_PAYLOAD_BYTES_MAX}",
                data.len()
            ))
            .into());
        }
        let (index, term) = {
            let mut raft = self.raft.borrow_mut();
            let index = raft.propose(group_id, data).map_err(map_raft_error)?;
            let term = raft.group(group_id).map_or(0, |node| node.term());
            (index, term)
        };
        let (outcome, receiver) = flume::bounded(1);
        let replaced = self.groups.borrow_mut()[slot].waiters.insert(
            index,
            Waiter {
                term,
                command,
                outcome,
            },
        );
        debug_assert!(replaced.is_none(), "two waiters at index {index}");
        if replaced.is_none() {
            self.waiter_count.set(self.waiter_count.get() + 1);
        }
        let _ = self.doorbell.try_send(());
        let remaining = deadline.saturating_duration_since(Instant::now());
        let result = future::or(
            async {
                receiver.recv_async().await.unwrap_or_else(|_| {
                    Err(ServiceError::Internal(
                        "shard stopped before the entry was applied".into(),
                    ))
                })
            },
            async {
                glommio::timer::sleep(remaining).await;
                Err(ServiceError::RaftTimeout)
            },
        )
        .await;
        // A committed command counts as `ok` even when apply rejected it (a conflict is a
        // committed decision); `error` means the entry's fate is unknown or it never committed.
        let metric_outcome = if result.is_ok() { "ok" } else { "error" };
        let commit_duration = result.is_ok().then(|| started.elapsed());
        metrics::global().raft_command(label, metric_outcome, commit_duration);
        result.map_err(ProposeError::from)
    }

    /// A storage failure: stop acknowledging, fail every waiter, refuse further writes.
    pub(crate) fn fail_storage(&self, reason: &str) {
        if !self.failed.replace(true) {
            let failure = self.wal.failure().unwrap_or_else(|| StorageFailure {
                path: self.node.shard_dir(self.shard_index),
                error: reason.to_string(),
            });
            tracing::error!(shard = self.shard_index, %failure, "shard refuses writes from now on");
            self.node.record_storage_failure(failure);
        }
        self.fail_waiters(&format!("storage failed: {reason}"));
    }

    /// Fail every waiting proposal and read (shutdown or storage failure).
    pub(crate) fn fail_waiters(&self, reason: &str) {
        let mut groups = self.groups.borrow_mut();
        for group in groups.iter_mut() {
            for (_, waiter) in std::mem::take(&mut group.waiters) {
                let _ = waiter
                    .outcome
                    .try_send(Err(ServiceError::Internal(reason.to_string())));
            }
            group.reads.clear();
        }
        drop(groups);
        self.pending_reads.borrow_mut().clear();
        self.waiter_count.set(0);
        self.release_pending_space();
        self.wake_apply_watchers();
    }

    async fn wait_for_pending_space(&self) {
        let (sender, receiver) = flume::bounded(1);
        self.pending_space.borrow_mut().push(sender);
        let _ = receiver.recv_async().await;
    }

    /// Wakes writers waiting for the waiter bound.
    pub(crate) fn release_pending_space(&self) {
        // Dropping the senders wakes every waiter; they re-check the bound themselves.
        self.pending_space.borrow_mut().clear();
    }

    /// Stop the driver, fail what is still waiting, and close the log.
    pub(crate) async fn close(&self) -> Result<(), WalError> {
        self.closing.set(true);
        let _ = self.doorbell.try_send(());
        let driver = self.driver.borrow_mut().take();
        if let Some(driver) = driver {
            driver.await;
        }
        self.fail_waiters("shard closed");
        let closed = self.wal.close().await;
        if self.failed.get() {
            // The failure was already reported through readiness and the failed requests.
            return Ok(());
        }
        closed
    }
}

/// Maps a refusal of the Raft core to the request's error.
pub(crate) fn map_raft_error(error: MultiRaftError) -> ProposeError {
    match error {
        MultiRaftError::UnknownGroup { .. } => ProposeError::NotLeader { leader_hint: None },
        MultiRaftError::Raft { source, .. } => match source {
            RaftError::NotLeader { leader_hint } => ProposeError::NotLeader { leader_hint },
            RaftError::TransferInProgress { target } => ProposeError::NotLeader {
                leader_hint: Some(target),
            },
            RaftError::ProposalQueueFull { .. } | RaftError::ReadQueueFull { .. } => {
                ServiceError::RaftUnavailable.into()
            }
            other => ServiceError::Internal(other.to_string()).into(),
        },
        other => ServiceError::Internal(other.to_string()).into(),
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
