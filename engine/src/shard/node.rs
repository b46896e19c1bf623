//! Node start and stop: spawning one glommio executor per shard, the startup handshake, the
//! node-wide shared state, and the shutdown sequence.
//!
//! # Startup
//! [`start`] validates the settings, creates the raft data directory and checks the layout file,
//! then spawns the executors. Each opens and recovers its WAL and reports back; only when every
//! shard recovered does `start` release them to call `serve`. If any shard fails, all are told
//! to stop and the first error is returned, so a node never serves with part of its groups.
//!
//! # Shutdown
//! [`NodeHandle::shutdown`] fires the [`ShutdownSignal`] that serve loops observe. Each shard
//! then waits for its `serve` future to return, and keeps answering requests from other shards
//! until *every* shard's `serve` returned (a barrier), because until then another shard may
//! still forward work to it. Then it stops its request loop, waits for in-flight forwarded
//! requests, flushes and closes its WAL, and its executor exits.

use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use glommio::{LocalExecutorBuilder, Placement};
use starcite_raft::multi::Envelope;

use super::error::EngineError;
use super::handle::EngineHandle;
use super::layout;
use super::recovery;
use super::route::{self, ShardRequest, SHARD_REQUEST_QUEUE_MAX};
use crate::api::NodeMode;
use crate::archiver::{self, Archive};
use crate::config::EngineConfig;
use crate::metrics;
use crate::notify::NotifyHub;
use crate::raftlog::transport::RAFT_INBOUND_ENVELOPES_MAX;
use crate::raftlog::RaftInbox;
use crate::wal::StorageFailure;

/// Largest supported shard count (config.md: `STARCITE_SHARDS` 1..=1024).
pub const SHARDS_MAX: u32 = 1024;

/// Largest supported group count (config.md: `STARCITE_NUM_GROUPS` 1..=65536).
pub const NUM_GROUPS_MAX: u32 = 65_536;

/// Resolves when the node is asked to shut down. Cheap to clone, `Send`, usable on any
/// executor: serve loops select on [`ShutdownSignal::wait`] to stop accepting.
#[derive(Clone)]
pub struct ShutdownSignal {
    /// Never carries a message: dropping the only sender disconnects every receiver, which wakes
    /// every waiter at once.
    receiver: flume::Receiver<()>,
    triggered: Arc<AtomicBool>,
}

/// The trigger side of a [`ShutdownSignal`].
struct ShutdownTrigger {
    sender: Mutex<Option<flume::Sender<()>>>,
    triggered: Arc<AtomicBool>,
}

fn shutdown_pair() -> (ShutdownTrigger, ShutdownSignal) {
    let (sender, receiver) = flume::bounded(1);
    let triggered = Arc::new(AtomicBool::new(false));
    (
        ShutdownTrigger {
            sender: Mutex::new(Some(sender)),
            triggered: triggered.clone(),
        },
        ShutdownSignal {
            receiver,
            triggered,
        },
    )
}

impl ShutdownTrigger {
    fn fire(&self) {
        self.triggered.store(true, Ordering::Release);
        let mut sender = self
            .sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sender.take();
    }
}

impl ShutdownSignal {
    /// True once shutdown was requested.
    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::Acquire)
    }

    /// Wait until shutdown is requested (returns at once if it already was).
    pub async fn wait(&self) {
        // The channel never carries a message; `recv` returns when the trigger drops the sender.
        let _ = self.receiver.recv_async().await;
    }
}

/// Resolves once every shard has arrived; each shard arrives exactly once, even when it fails
/// or panics, because arrival is tied to dropping its [`BarrierArrival`].
struct ServeBarrier {
    remaining: AtomicUsize,
    trigger: ShutdownTrigger,
    signal: ShutdownSignal,
}

impl ServeBarrier {
    fn new(participants: usize) -> Arc<Self> {
        let (trigger, signal) = shutdown_pair();
        if participants == 0 {
            trigger.fire();
        }
        Arc::new(ServeBarrier {
            remaining: AtomicUsize::new(participants),
            trigger,
            signal,
        })
    }

    fn arrive(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.trigger.fire();
        }
    }
}

/// One shard's pending arrival at the [`ServeBarrier`].
pub(crate) struct BarrierArrival {
    barrier: Option<Arc<ServeBarrier>>,
}

impl BarrierArrival {
    /// Arrive now (idempotent).
    pub(crate) fn arrive(&mut self) {
        if let Some(barrier) = self.barrier.take() {
            barrier.arrive();
        }
    }
}

impl Drop for BarrierArrival {
    fn drop(&mut self) {
        self.arrive();
    }
}

/// State shared by every shard of the node (`Send + Sync`).
pub(crate) struct NodeShared {
    pub(crate) config: EngineConfig,
    pub(crate) notify: Arc<NotifyHub>,
    /// The node-wide unarchived bytes `U` (archive.md §8), shared by every `GroupState`.
    pub(crate) unarchived_bytes: Arc<AtomicU64>,
    /// The archive tier, when configured.
    pub(crate) archive: Option<Arc<Archive>>,
    /// Request queues of every shard, indexed by shard.
    pub(crate) senders: Vec<flume::Sender<ShardRequest>>,
    pub(crate) shutdown: ShutdownSignal,
    /// The first storage failure of any shard; once set, the node is `storage_failed`.
    storage_failure: Mutex<Option<StorageFailure>>,
    storage_failed: AtomicBool,
    serve_barrier: Arc<ServeBarrier>,
}

impl NodeShared {
    /// Number of shards.
    pub(crate) fn shard_count(&self) -> u32 {
        self.config.shards
    }

    /// The WAL directory of `shard_index`.
    pub(crate) fn shard_dir(&self, shard_index: u32) -> PathBuf {
        self.config
            .raft_data_dir
            .join(format!("shard-{shard_index}"))
    }

    /// Current `U`.
    pub(crate) fn unarchived_bytes(&self) -> u64 {
        self.unarchived_bytes.load(Ordering::Relaxed)
    }

    /// Remember the first storage failure; readiness reports it from now on.
    pub(crate) fn record_storage_failure(&self, failure: StorageFailure) {
        let mut slot = self
            .storage_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            *slot = Some(failure);
        }
        self.storage_failed.store(true, Ordering::Release);
        metrics::global().set_node_ready(false);
    }

    /// The first storage failure of any shard.
    pub(crate) fn storage_failure(&self) -> Option<StorageFailure> {
        if !self.storage_failed.load(Ordering::Acquire) {
            return None;
        }
        self.storage_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Wait until every shard's `serve` returned (or the shard stopped).
    pub(crate) async fn wait_all_served(&self) {
        self.serve_barrier.signal.wait().await;
    }
}

/// A running node. Dropping it shuts the node down and waits for it, like
/// [`NodeHandle::shutdown`] followed by [`NodeHandle::join`].
pub struct NodeHandle {
    shutdown: ShutdownTrigger,
    shared: Arc<NodeShared>,
    inbox: RaftInbox,
    executors: Vec<(u32, glommio::ExecutorJoinHandle<Result<(), EngineError>>)>,
}

impl NodeHandle {
    /// Ask every shard to stop: serve loops see [`ShutdownSignal`] fire, then shards drain and
    /// close their logs. Returns at once; [`NodeHandle::join`] waits.
    pub fn shutdown(&self) {
        self.shutdown.fire();
    }

    /// The signal serve loops observe (also available from each `EngineHandle`).
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        self.shared.shutdown.clone()
    }

    /// Where the transport delivers Raft envelopes addressed to this node.
    pub fn raft_inbox(&self) -> RaftInbox {
        self.inbox.clone()
    }

    /// Wait for every shard to stop; returns the first error (a shard panic or a failed close).
    /// Does not itself request shutdown.
    pub fn join(mut self) -> Result<(), EngineError> {
        join_executors(std::mem::take(&mut self.executors))
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        if self.executors.is_empty() {
            return;
        }
        self.shutdown.fire();
        if let Err(error) = join_executors(std::mem::take(&mut self.executors)) {
            tracing::error!("failed to stop node: {error}");
        }
    }
}

fn join_executors(
    executors: Vec<(u32, glommio::ExecutorJoinHandle<Result<(), EngineError>>)>,
) -> Result<(), EngineError> {
    let mut first_error = None;
    for (shard, executor) in executors {
        let result = match executor.join() {
            Ok(result) => result,
            Err(error) => Err(EngineError::Executor {
                shard,
                reason: error.to_string(),
            }),
        };
        if let Err(error) = result {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn validate(config: &EngineConfig) -> Result<(), EngineError> {
    if !(1..=SHARDS_MAX).contains(&config.shards) {
        return Err(EngineError::InvalidConfig(format!(
            "shards must be between 1 and {SHARDS_MAX}, got {}",
            config.shards
        )));
    }
    if !(1..=NUM_GROUPS_MAX).contains(&config.num_groups) {
        return Err(EngineError::InvalidConfig(format!(
            "num_groups must be between 1 and {NUM_GROUPS_MAX}, got {}",
            config.num_groups
        )));
    }
    if config.mode == NodeMode::RouterNode && config.link.is_none() {
        // A router hosts no groups and forwards everything to write nodes, which needs the
        // peer transport of the replicated cluster.
        return Err(EngineError::InvalidConfig(
            "router_node mode needs the cluster link; without it only write_node can start".into(),
        ));
    }
    Ok(())
}

/// What a shard reports after opening and recovering its log.
type StartupReport = (u32, Result<(), EngineError>);

/// Start a node: spawn `config.shards` executors, recover every shard's WAL, then call
/// `serve(handle)` once on each executor with that shard's [`EngineHandle`].
///
/// Returns once every shard recovered (or the first startup error, after stopping the shards
/// that did start). `serve` should return after the handle's [`ShutdownSignal`] fires.
pub fn start<F, Fut>(config: EngineConfig, serve: F) -> Result<NodeHandle, EngineError>
where
    F: Fn(EngineHandle) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    validate(&config)?;
    std::fs::create_dir_all(&config.raft_data_dir).map_err(|source| EngineError::DataDir {
        op: "create raft data dir",
        path: config.raft_data_dir.clone(),
        source,
    })?;
    layout::check_or_write(&config.raft_data_dir, config.shards, config.num_groups)?;

    let shard_count = config.shards;
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..shard_count)
        .map(|_| flume::bounded(SHARD_REQUEST_QUEUE_MAX))
        .unzip();
    let (inbound_senders, inbound_receivers): (Vec<_>, Vec<_>) = (0..shard_count)
        .map(|_| flume::bounded::<Envelope>(RAFT_INBOUND_ENVELOPES_MAX))
        .unzip();
    let inbox = RaftInbox::new(config.node_id(), inbound_senders);
    let notify = Arc::new(NotifyHub::new());
    if let Some(link) = &config.link {
        link.attach(inbox.clone(), notify.clone());
        link.attach_shards(senders.clone());
    }
    let archive = match &config.archive {
        Some(settings) => Some(Arc::new(
            Archive::start(settings.clone(), shard_count, config.event_store_max_bytes).map_err(
                |error| EngineError::Executor {
                    shard: 0,
                    reason: format!("failed to start the archive worker threads: {error}"),
                },
            )?,
        )),
        None => None,
    };
    let (shutdown, shutdown_signal) = shutdown_pair();
    let shared = Arc::new(NodeShared {
        notify,
        unarchived_bytes: Arc::new(AtomicU64::new(0)),
        archive,
        senders,
        shutdown: shutdown_signal,
        storage_failure: Mutex::new(None),
        storage_failed: AtomicBool::new(false),
        serve_barrier: ServeBarrier::new(shard_count as usize),
        config,
    });
    metrics::global().set_budget_bytes(shared.config.event_store_max_bytes);
    metrics::global().set_node_ready(false);

    let (report_sender, report_receiver) = flume::unbounded::<StartupReport>();
    let mut node = NodeHandle {
        shutdown,
        shared: shared.clone(),
        inbox,
        executors: Vec::new(),
    };
    let mut go_senders = Vec::new();
    let cores = std::thread::available_parallelism().map_or(1, |count| count.get());
    let shard_queues = receivers.into_iter().zip(inbound_receivers);
    for (shard_index, (requests, inbound)) in (0..shard_count).zip(shard_queues) {
        let placement = if shared.config.pin_shards {
            Placement::Fixed(shard_index as usize % cores)
        } else {
            Placement::Unbound
        };
        let (go_sender, go_receiver) = flume::bounded::<bool>(1);
        go_senders.push(go_sender);
        let context = ShardContext {
            shard_index,
            shared: shared.clone(),
            requests,
            inbound,
            report: report_sender.clone(),
            go: go_receiver,
            arrival: BarrierArrival {
                barrier: Some(shared.serve_barrier.clone()),
            },
        };
        let serve = serve.clone();
        let spawned = LocalExecutorBuilder::new(placement)
            .name(&format!("starcite-shard-{shard_index}"))
            .spawn(move || run_shard(context, serve));
        match spawned {
            Ok(executor) => node.executors.push((shard_index, executor)),
            Err(error) => {
                // Dropping the node stops and joins the executors spawned so far.
                drop(go_senders);
                return Err(EngineError::Executor {
                    shard: shard_index,
                    reason: error.to_string(),
                });
            }
        }
    }
    drop(report_sender);

    let mut first_error = None;
    for _ in 0..shard_count {
        match report_receiver.recv() {
            Ok((_, Ok(()))) => {}
            Ok((_, Err(error))) => {
                first_error.get_or_insert(error);
            }
            Err(_) => {
                first_error.get_or_insert(EngineError::Executor {
                    shard: 0,
                    reason: "a shard stopped before reporting its startup".into(),
                });
                break;
            }
        }
    }
    let go = first_error.is_none();
    for go_sender in go_senders {
        let _ = go_sender.send(go);
    }
    if let Some(error) = first_error {
        node.shutdown();
        let _ = join_executors(std::mem::take(&mut node.executors));
        return Err(error);
    }
    metrics::global().set_node_ready(shared.storage_failure().is_none());
    metrics::global().set_unarchived_bytes(shared.unarchived_bytes());
    if shared.config.cluster.is_none() {
        // Every group of a single node leads itself from startup on.
        let groups = u64::from(shared.config.num_groups);
        metrics::global().set_raft_groups(groups, 0, 0, 0);
    }
    Ok(node)
}

/// Everything one shard's executor starts with.
struct ShardContext {
    shard_index: u32,
    shared: Arc<NodeShared>,
    requests: flume::Receiver<ShardRequest>,
    inbound: flume::Receiver<Envelope>,
    report: flume::Sender<StartupReport>,
    go: flume::Receiver<bool>,
    arrival: BarrierArrival,
}

/// The life of one shard on its executor: recover, wait for the go, serve, drain, close.
async fn run_shard<F, Fut>(context: ShardContext, serve: F) -> Result<(), EngineError>
where
    F: Fn(EngineHandle) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let ShardContext {
        shard_index,
        shared,
        requests,
        inbound,
        report,
        go,
        mut arrival,
    } = context;
    let opened = recovery::open_shard(shard_index, shared.clone()).await;
    let (shard, doorbell) = match opened {
        Ok(opened) => {
            let _ = report.send((shard_index, Ok(())));
            opened
        }
        Err(error) => {
            let _ = report.send((shard_index, Err(error)));
            return Ok(());
        }
    };
    drop(report);
    let shard = Rc::new(shard);
    if !go.recv_async().await.unwrap_or(false) {
        return shard.close().await.map_err(|source| EngineError::Close {
            shard: shard_index,
            source,
        });
    }

    let driver = glommio::spawn_local(shard.clone().run_driver(doorbell, inbound)).detach();
    *shard.driver.borrow_mut() = Some(driver);
    let request_loop = glommio::spawn_local(route::serve_requests(shard.clone(), requests));
    let archiver = shared
        .archive
        .clone()
        .map(|archive| glommio::spawn_local(archiver::run_shard_archiver(shard.clone(), archive)));
    serve(EngineHandle::new(shard.clone())).await;
    shared.shutdown.wait().await;
    if let Some(archiver) = archiver {
        archiver.await;
    }
    arrival.arrive();
    request_loop.await;
    tracing::debug!(
        shard = shard_index,
        "shard stopped serving; closing its log"
    );
    shard.close().await.map_err(|source| EngineError::Close {
        shard: shard_index,
        source,
    })
}
