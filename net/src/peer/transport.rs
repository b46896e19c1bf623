//! The peer transport of one node: the listener, one dialler per peer, the send queues and the
//! connection status.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::mem::Discriminant;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use glommio::net::{TcpListener, TcpStream};
use glommio::task::JoinHandle;
use glommio::timer::Timer;

use super::config::{
    reconnect_backoff, PeerConfig, PeerNode, PEER_EVENTS_BUFFERED_MAX, PEER_HANDSHAKES_PENDING_MAX,
    PEER_HANDSHAKE_TIMEOUT, PEER_REFUSAL_LOG_INTERVAL,
};
use super::connection::{self, with_deadline, AcceptFailure, Direction};
use super::error::PeerError;
use super::fingerprint::TopologyFingerprint;
use super::frame::checked_body_bytes;
use super::handshake::encode_handshake;
use super::queue::SendQueue;
use super::tls::PeerTls;

/// Pause after a failed accept, so that running out of file descriptors does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// A frame received from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerFrame {
    /// Node id of the sender.
    pub from: Arc<str>,
    /// The frame body, exactly as passed to [`PeerTransport::send`] on the sender.
    pub body: Bytes,
}

/// A change of a peer's connection status. "Connected" means this node's outbound connection
/// to the peer completed its handshake, i.e. [`PeerTransport::send`] reaches the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerEvent {
    /// Node id of the peer.
    pub node_id: Arc<str>,
    /// The new status.
    pub connected: bool,
    /// When it changed (monotonic).
    pub at: Instant,
    /// When it changed (wall clock, for display).
    pub at_wall: SystemTime,
}

/// A snapshot of one peer's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// Node id of the peer.
    pub node_id: String,
    /// Whether the outbound connection is up (this node can send).
    pub connected: bool,
    /// When `connected` last changed (start of the transport if never).
    pub changed_at: Instant,
    /// The same moment on the wall clock.
    pub changed_at_wall: SystemTime,
    /// Whether an inbound connection from the peer is up (the peer can send).
    pub inbound_connected: bool,
    /// When `inbound_connected` last changed.
    pub inbound_changed_at: Instant,
    /// Frames waiting in the send queue.
    pub frames_queued: usize,
    /// Bytes waiting in the send queue, headers included.
    pub bytes_queued: u64,
    /// Frames taken from the queue and written to a connection.
    pub frames_sent: u64,
    /// Frames received from the peer and handed to the receiver.
    pub frames_received: u64,
    /// Frames refused with [`PeerError::QueueFull`].
    pub frames_refused: u64,
}

#[derive(Clone, Copy, Debug)]
struct LinkState {
    connected: bool,
    changed_at: Instant,
    changed_at_wall: SystemTime,
}

impl LinkState {
    fn now(connected: bool) -> LinkState {
        LinkState {
            connected,
            changed_at: Instant::now(),
            changed_at_wall: SystemTime::now(),
        }
    }
}

/// Everything the transport knows about one peer.
pub(super) struct PeerLink {
    pub node: PeerNode,
    pub name: Arc<str>,
    pub queue: RefCell<SendQueue>,
    outbound: Cell<LinkState>,
    inbound: Cell<LinkState>,
    /// The task serving the current inbound connection, replaced when the peer reconnects.
    inbound_task: Cell<Option<u64>>,
    pub frames_sent: Cell<u64>,
    pub frames_received: Cell<u64>,
    frames_refused: Cell<u64>,
    mismatch_logged_at: Cell<Option<Instant>>,
    dial_failure_log: FailureLog,
    accept_failure_log: FailureLog,
}

/// When a failure was last logged and of which kind: a new kind is logged at once, a repeated
/// kind once per [`PEER_REFUSAL_LOG_INTERVAL`], so "connection refused" while a peer boots does
/// not hide the TLS error that follows.
#[derive(Default)]
struct FailureLog {
    last: Cell<Option<(Instant, Discriminant<PeerError>)>>,
}

impl FailureLog {
    fn allows(&self, error: &PeerError) -> bool {
        let now = Instant::now();
        let kind = std::mem::discriminant(error);
        match self.last.get() {
            Some((logged_at, logged_kind))
                if logged_kind == kind
                    && now.duration_since(logged_at) < PEER_REFUSAL_LOG_INTERVAL =>
            {
                false
            }
            _ => {
                self.last.set(Some((now, kind)));
                true
            }
        }
    }
}

/// State shared by the transport handle and its tasks; lives on the transport's executor.
pub(super) struct Shared {
    pub fingerprint: TopologyFingerprint,
    /// This node's handshake body, encoded once.
    pub handshake_body: Vec<u8>,
    pub tls: Option<PeerTls>,
    pub peers: HashMap<String, Rc<PeerLink>>,
    pub inbound: flume::Sender<PeerFrame>,
    tasks: RefCell<HashMap<u64, JoinHandle<()>>>,
    next_task_id: Cell<u64>,
    handshakes_pending: Cell<usize>,
    subscribers: RefCell<Vec<flume::Sender<PeerEvent>>>,
    events_dropped: Cell<u64>,
    shut_down: Cell<bool>,
    publish_metrics: bool,
    stranger_logged_at: Cell<Option<Instant>>,
}

/// The peer transport of this node.
///
/// It runs on the glommio executor that calls [`PeerTransport::start`] and is not `Send`: a
/// node runs one transport on one executor, and other shards hand it their frames (and take
/// received frames from the `flume` receiver, which may live anywhere).
///
/// Delivery is in order and at most once per connection: frames queued while the peer is down
/// wait (within the queue bounds) and go out after the reconnect; frames in flight when a
/// connection breaks are lost, as if the network dropped them.
pub struct PeerTransport {
    shared: Rc<Shared>,
    local_addr: SocketAddr,
}

impl PeerTransport {
    /// Bind the listener, start dialling every other node of `config.nodes`, and hand received
    /// frames to `inbound`. A bounded `inbound` channel gives backpressure: while it is full,
    /// connections stop reading.
    ///
    /// Must be called on a glommio executor. Peer hosts are not resolved here, only when
    /// dialling, so unreachable or unresolvable peers never fail the start.
    pub fn start(
        config: PeerConfig,
        inbound: flume::Sender<PeerFrame>,
    ) -> Result<PeerTransport, PeerError> {
        let handshake_body =
            encode_handshake(&config.self_id, &config.fingerprint).map_err(|error| {
                PeerError::InvalidConfig(format!("node id {:?}: {error}", config.self_id))
            })?;
        let mut peers = HashMap::new();
        for node in &config.nodes {
            if node.node_id == config.self_id {
                continue;
            }
            encode_handshake(&node.node_id, &config.fingerprint).map_err(|error| {
                PeerError::InvalidConfig(format!("node id {:?}: {error}", node.node_id))
            })?;
            let link = Rc::new(PeerLink {
                node: node.clone(),
                name: Arc::from(node.node_id.as_str()),
                queue: RefCell::new(SendQueue::new(
                    config.send_queue_bytes_max,
                    config.send_queue_frames_max,
                )),
                outbound: Cell::new(LinkState::now(false)),
                inbound: Cell::new(LinkState::now(false)),
                inbound_task: Cell::new(None),
                frames_sent: Cell::new(0),
                frames_received: Cell::new(0),
                frames_refused: Cell::new(0),
                mismatch_logged_at: Cell::new(None),
                dial_failure_log: FailureLog::default(),
                accept_failure_log: FailureLog::default(),
            });
            if peers.insert(node.node_id.clone(), link).is_some() {
                return Err(PeerError::InvalidConfig(format!(
                    "duplicate node {:?}",
                    node.node_id
                )));
            }
        }
        let address = SocketAddr::new(config.bind_addr, config.port);
        let listener = TcpListener::bind(address).map_err(|error| PeerError::Bind {
            address,
            source: error.into(),
        })?;
        let local_addr = listener.local_addr().map_err(|error| PeerError::Bind {
            address,
            source: error.into(),
        })?;
        let shared = Rc::new(Shared {
            fingerprint: config.fingerprint,
            handshake_body,
            tls: config.tls,
            peers,
            inbound,
            tasks: RefCell::new(HashMap::new()),
            next_task_id: Cell::new(0),
            handshakes_pending: Cell::new(0),
            subscribers: RefCell::new(Vec::new()),
            events_dropped: Cell::new(0),
            shut_down: Cell::new(false),
            publish_metrics: config.publish_metrics,
            stranger_logged_at: Cell::new(None),
        });
        spawn_tracked(&shared, |_| accept_loop(shared.clone(), listener));
        for link in shared.peers.values() {
            let link = link.clone();
            spawn_tracked(&shared, |_| dial_loop(shared.clone(), link));
        }
        shared.publish_connected_count();
        tracing::info!(
            address = %local_addr,
            peers = shared.peers.len(),
            tls = shared.tls.is_some(),
            "peer transport listening"
        );
        Ok(PeerTransport { shared, local_addr })
    }

    /// Queue `body` for `to`. Never waits: a full queue answers [`PeerError::QueueFull`], which
    /// the caller treats like a message the network dropped.
    pub fn send(&self, to: &str, body: Bytes) -> Result<(), PeerError> {
        if self.shared.shut_down.get() {
            return Err(PeerError::ShutDown);
        }
        checked_body_bytes(body.len())?;
        let link = self
            .shared
            .peers
            .get(to)
            .ok_or_else(|| PeerError::UnknownPeer(to.to_string()))?;
        let pushed = link.queue.borrow_mut().push(body);
        pushed.map_err(|level| {
            link.frames_refused.set(link.frames_refused.get() + 1);
            PeerError::QueueFull {
                peer: to.to_string(),
                frames_queued: level.frames_queued,
                bytes_queued: level.bytes_queued,
            }
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Node ids of the peers this node is connected to (outbound handshake done), sorted.
    pub fn connected_peers(&self) -> Vec<String> {
        let mut connected: Vec<String> = self
            .shared
            .peers
            .values()
            .filter(|link| link.outbound.get().connected)
            .map(|link| link.node.node_id.clone())
            .collect();
        connected.sort_unstable();
        connected
    }

    /// Number of connected peers; the value of `starcite_peers_connected`.
    pub fn connected_count(&self) -> usize {
        self.shared.connected_count()
    }

    /// Status of every peer, sorted by node id.
    pub fn peer_statuses(&self) -> Vec<PeerStatus> {
        let mut statuses: Vec<PeerStatus> = self
            .shared
            .peers
            .values()
            .map(|link| {
                let outbound = link.outbound.get();
                let inbound = link.inbound.get();
                let level = link.queue.borrow().level();
                PeerStatus {
                    node_id: link.node.node_id.clone(),
                    connected: outbound.connected,
                    changed_at: outbound.changed_at,
                    changed_at_wall: outbound.changed_at_wall,
                    inbound_connected: inbound.connected,
                    inbound_changed_at: inbound.changed_at,
                    frames_queued: level.frames_queued,
                    bytes_queued: level.bytes_queued,
                    frames_sent: link.frames_sent.get(),
                    frames_received: link.frames_received.get(),
                    frames_refused: link.frames_refused.get(),
                }
            })
            .collect();
        statuses.sort_unstable_by(|left, right| left.node_id.cmp(&right.node_id));
        statuses
    }

    /// Receive every later connect and disconnect. Up to [`PEER_EVENTS_BUFFERED_MAX`] events
    /// wait per subscriber; beyond that events are dropped (counted by
    /// [`Self::events_dropped`]), so a subscriber that falls behind should re-read
    /// [`Self::peer_statuses`].
    pub fn subscribe(&self) -> flume::Receiver<PeerEvent> {
        let (sender, receiver) = flume::bounded(PEER_EVENTS_BUFFERED_MAX);
        self.shared.subscribers.borrow_mut().push(sender);
        receiver
    }

    /// Events dropped because a subscriber's buffer was full.
    pub fn events_dropped(&self) -> u64 {
        self.shared.events_dropped.get()
    }

    /// Close the listener and every connection and stop dialling. Queued frames are dropped;
    /// later sends answer [`PeerError::ShutDown`].
    pub async fn shutdown(&self) {
        if self.shared.shut_down.replace(true) {
            return;
        }
        let handles = self.shared.cancel_tasks();
        for handle in handles {
            let _ = handle.await;
        }
        for link in self.shared.peers.values() {
            if link.outbound.get().connected {
                self.shared.set_outbound(link, false);
            }
            if link.inbound.get().connected {
                link.inbound.set(LinkState::now(false));
            }
            while link.queue.borrow_mut().pop().is_some() {}
        }
        self.shared.publish_connected_count();
        tracing::info!(address = %self.local_addr, "peer transport shut down");
    }
}

impl Drop for PeerTransport {
    /// Without [`PeerTransport::shutdown`], stop the tasks anyway: they hold the shared state
    /// and would otherwise run for the life of the executor.
    fn drop(&mut self) {
        self.shared.shut_down.set(true);
        self.shared.cancel_tasks();
    }
}

impl Shared {
    fn cancel_tasks(&self) -> Vec<JoinHandle<()>> {
        let handles: Vec<JoinHandle<()>> = self
            .tasks
            .borrow_mut()
            .drain()
            .map(|(_, handle)| handle)
            .collect();
        for handle in &handles {
            handle.cancel();
        }
        handles
    }

    fn connected_count(&self) -> usize {
        self.peers
            .values()
            .filter(|link| link.outbound.get().connected)
            .count()
    }

    fn publish_connected_count(&self) {
        if self.publish_metrics {
            starcite_engine::metrics::global().set_peers_connected(self.connected_count() as u64);
        }
    }

    fn set_outbound(&self, link: &PeerLink, connected: bool) {
        let state = LinkState::now(connected);
        link.outbound.set(state);
        self.publish_connected_count();
        let event = PeerEvent {
            node_id: link.name.clone(),
            connected,
            at: state.changed_at,
            at_wall: state.changed_at_wall,
        };
        let mut dropped = 0u64;
        self.subscribers.borrow_mut().retain(|subscriber| {
            match subscriber.try_send(event.clone()) {
                Ok(()) => true,
                Err(flume::TrySendError::Full(_)) => {
                    dropped += 1;
                    true
                }
                Err(flume::TrySendError::Disconnected(_)) => false,
            }
        });
        self.events_dropped.set(self.events_dropped.get() + dropped);
    }
}

/// Spawn a task that the transport can cancel; it forgets itself when it ends.
fn spawn_tracked<F>(shared: &Rc<Shared>, make: impl FnOnce(u64) -> F)
where
    F: Future<Output = ()> + 'static,
{
    let task_id = shared.next_task_id.get();
    shared.next_task_id.set(task_id + 1);
    let work = make(task_id);
    let owner = Rc::downgrade(shared);
    let handle = glommio::spawn_local(async move {
        work.await;
        if let Some(shared) = owner.upgrade() {
            shared.tasks.borrow_mut().remove(&task_id);
        }
    })
    .detach();
    shared.tasks.borrow_mut().insert(task_id, handle);
}

/// Whether a rate-limited message may be logged now.
fn log_allowed(logged_at: &Cell<Option<Instant>>) -> bool {
    let now = Instant::now();
    match logged_at.get() {
        Some(last) if now.duration_since(last) < PEER_REFUSAL_LOG_INTERVAL => false,
        _ => {
            logged_at.set(Some(now));
            true
        }
    }
}

/// Log why a connection with a configured peer was refused or failed: a topology mismatch at
/// most once per [`PEER_REFUSAL_LOG_INTERVAL`] per peer (cluster.md §8), other failures as
/// [`FailureLog`] allows.
fn log_link_failure(link: &PeerLink, error: &PeerError, direction: Direction) {
    match error {
        PeerError::TopologyMismatch(_) => {
            if log_allowed(&link.mismatch_logged_at) {
                tracing::error!("{error}");
            }
        }
        _ => {
            let peer = &link.node.node_id;
            match direction {
                Direction::Outbound => {
                    if link.dial_failure_log.allows(error) {
                        tracing::warn!("failed to connect to peer {peer}: {error}");
                    }
                }
                Direction::Inbound => {
                    if link.accept_failure_log.allows(error) {
                        tracing::warn!("refused peer connection from {peer}: {error}");
                    }
                }
            }
        }
    }
}

async fn dial_loop(shared: Rc<Shared>, link: Rc<PeerLink>) {
    let mut failures: u32 = 0;
    loop {
        let dialled = with_deadline(
            PEER_HANDSHAKE_TIMEOUT,
            "peer handshake",
            connection::dial(&shared, &link),
        )
        .await;
        match dialled {
            Ok(established) => {
                failures = 0;
                shared.set_outbound(&link, true);
                tracing::info!(peer = %link.name, "connected to peer");
                let ended = connection::run(&shared, &link, established, Direction::Outbound).await;
                shared.set_outbound(&link, false);
                match ended {
                    Ok(()) => tracing::info!(peer = %link.name, "peer closed the connection"),
                    Err(error) => {
                        tracing::warn!(peer = %link.name, "peer connection lost: {error}")
                    }
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                log_link_failure(&link, &error, Direction::Outbound);
            }
        }
        Timer::new(reconnect_backoff(failures.saturating_sub(1))).await;
    }
}

async fn accept_loop(shared: Rc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if shared.handshakes_pending.get() >= PEER_HANDSHAKES_PENDING_MAX {
                    // Closing at once keeps a flood of half-open connections from holding
                    // memory; real peers retry with backoff.
                    tracing::debug!("too many peer handshakes in progress; connection closed");
                    continue;
                }
                shared
                    .handshakes_pending
                    .set(shared.handshakes_pending.get() + 1);
                let pending = PendingHandshake(shared.clone());
                spawn_tracked(&shared, |task_id| {
                    serve_inbound(shared.clone(), stream, task_id, pending)
                });
            }
            Err(error) => {
                if log_allowed(&shared.stranger_logged_at) {
                    tracing::warn!("failed to accept a peer connection: {error}");
                }
                Timer::new(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Counts an inbound connection as pending until its handshake ends, even when its task is
/// cancelled.
struct PendingHandshake(Rc<Shared>);

impl Drop for PendingHandshake {
    fn drop(&mut self) {
        let pending = &self.0.handshakes_pending;
        pending.set(pending.get().saturating_sub(1));
    }
}

async fn serve_inbound(
    shared: Rc<Shared>,
    stream: TcpStream,
    task_id: u64,
    pending: PendingHandshake,
) {
    let accepted = with_deadline(
        PEER_HANDSHAKE_TIMEOUT,
        "peer handshake",
        connection::accept(&shared, stream),
    )
    .await;
    drop(pending);
    let (link, established) = match accepted {
        Ok(accepted) => accepted,
        Err(AcceptFailure { link, error }) => {
            match link {
                Some(link) => log_link_failure(&link, &error, Direction::Inbound),
                None => {
                    if log_allowed(&shared.stranger_logged_at) {
                        // A node id outside CLUSTER_NODES is a configuration error; anything
                        // else from an unidentified dialler may be noise (scanners, probes).
                        match error {
                            PeerError::UnknownNode(_) => tracing::error!("{error}"),
                            _ => tracing::warn!("refused peer connection: {error}"),
                        }
                    }
                }
            }
            return;
        }
    };
    if let Some(previous) = link.inbound_task.replace(Some(task_id)) {
        // The peer reconnected; its previous connection is dead or about to be.
        if let Some(handle) = shared.tasks.borrow_mut().remove(&previous) {
            handle.cancel();
        }
    }
    link.inbound.set(LinkState::now(true));
    tracing::debug!(peer = %link.name, "accepted peer connection");
    let ended = connection::run(&shared, &link, established, Direction::Inbound).await;
    if link.inbound_task.get() == Some(task_id) {
        link.inbound_task.set(None);
        link.inbound.set(LinkState::now(false));
    }
    if let Err(error) = ended {
        tracing::warn!(peer = %link.name, "inbound peer connection closed: {error}");
    }
}
