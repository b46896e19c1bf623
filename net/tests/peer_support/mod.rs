//! Shared harness of the peer transport tests: each node runs its transport on its own glommio
//! executor thread and is driven from the test thread through a command channel.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use starcite_net::peer::{
    PeerConfig, PeerError, PeerEvent, PeerFrame, PeerNode, PeerStatus, PeerTls, PeerTransport,
    TopologyFingerprint,
};

pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Default capacity of a test node's inbound channel.
pub const INBOUND_FRAMES_MAX: usize = 100_000;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind((LOOPBACK, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

/// `count` nodes `n0@127.0.0.1` … on fresh ports.
pub fn loopback_nodes(count: usize) -> Vec<PeerNode> {
    (0..count)
        .map(|index| PeerNode::new(format!("n{index}@127.0.0.1"), free_port()))
        .collect()
}

/// Fingerprint of a cluster where every node is a write node.
pub fn fingerprint_of(nodes: &[PeerNode], replication_factor: u32) -> TopologyFingerprint {
    let ids: Vec<String> = nodes.iter().map(|node| node.node_id.clone()).collect();
    TopologyFingerprint::compute(nodes, &ids, replication_factor, 16)
}

/// Configuration of `self_node` within `nodes`.
pub fn config_for(self_node: &PeerNode, nodes: &[PeerNode], tls: Option<PeerTls>) -> PeerConfig {
    let mut config = PeerConfig::new(
        self_node.node_id.clone(),
        nodes.to_vec(),
        LOOPBACK,
        self_node.port,
        fingerprint_of(nodes, 3),
    );
    config.tls = tls;
    config.publish_metrics = false;
    config
}

/// Poll `condition` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Receive a frame or fail after `timeout`.
pub fn receive(node: &TestNode, timeout: Duration) -> PeerFrame {
    node.frames
        .recv_timeout(timeout)
        .unwrap_or_else(|error| panic!("{}: no frame within {timeout:?}: {error}", node.id))
}

/// Log lines written by one node's executor thread.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }
}

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Command {
    Send(String, Bytes, flume::Sender<Result<(), PeerError>>),
    Statuses(flume::Sender<Vec<PeerStatus>>),
    Subscribe(flume::Sender<flume::Receiver<PeerEvent>>),
    SendBurst(String, Bytes, usize, flume::Sender<()>),
    Shutdown(flume::Sender<()>),
}

/// A transport on its own executor thread.
pub struct TestNode {
    pub id: String,
    pub address: SocketAddr,
    pub frames: flume::Receiver<PeerFrame>,
    pub logs: LogBuffer,
    commands: flume::Sender<Command>,
    executor: Option<ExecutorJoinHandle<()>>,
}

impl TestNode {
    pub fn start(config: PeerConfig) -> TestNode {
        TestNode::start_with_inbound(config, INBOUND_FRAMES_MAX)
    }

    pub fn start_with_inbound(config: PeerConfig, inbound_frames_max: usize) -> TestNode {
        let id = config.self_id.clone();
        let logs = LogBuffer::default();
        let (frames_sender, frames) = flume::bounded(inbound_frames_max);
        let (commands, command_receiver) = flume::unbounded::<Command>();
        let (started, started_receiver) = flume::bounded(1);
        let thread_logs = logs.clone();
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&id)
            .spawn(move || async move {
                let writer_logs = thread_logs.clone();
                let subscriber = tracing_subscriber::fmt()
                    .with_writer(move || writer_logs.clone())
                    .with_ansi(false)
                    .with_max_level(tracing::Level::DEBUG)
                    .finish();
                let _log_guard = tracing::subscriber::set_default(subscriber);
                let transport = match PeerTransport::start(config, frames_sender) {
                    Ok(transport) => transport,
                    Err(error) => {
                        started.send(Err(error.to_string())).ok();
                        return;
                    }
                };
                started.send(Ok(transport.local_addr())).ok();
                while let Ok(command) = command_receiver.recv_async().await {
                    match command {
                        Command::Send(to, body, reply) => {
                            reply.send(transport.send(&to, body)).ok();
                        }
                        Command::SendBurst(to, body, count, reply) => {
                            send_burst(&transport, &to, body, count).await;
                            reply.send(()).ok();
                        }
                        Command::Statuses(reply) => {
                            reply.send(transport.peer_statuses()).ok();
                        }
                        Command::Subscribe(reply) => {
                            reply.send(transport.subscribe()).ok();
                        }
                        Command::Shutdown(reply) => {
                            transport.shutdown().await;
                            reply.send(()).ok();
                            return;
                        }
                    }
                }
            })
            .unwrap();
        let address = match started_receiver.recv() {
            Ok(Ok(address)) => address,
            Ok(Err(error)) => panic!("{id}: start failed: {error}"),
            Err(_) => panic!("{id}: executor ended before the transport started"),
        };
        TestNode {
            id,
            address,
            frames,
            logs,
            commands,
            executor: Some(executor),
        }
    }

    pub fn send(&self, to: &str, body: impl Into<Bytes>) -> Result<(), PeerError> {
        let (reply, result) = flume::bounded(1);
        self.commands
            .send(Command::Send(to.to_string(), body.into(), reply))
            .unwrap();
        result.recv().unwrap()
    }

    /// Send `count` copies of `body` from the node's own executor, waiting briefly whenever
    /// the queue is full, so that the harness's command channel does not limit the rate.
    pub fn send_burst(&self, to: &str, body: Bytes, count: usize) {
        let (reply, done) = flume::bounded(1);
        self.commands
            .send(Command::SendBurst(to.to_string(), body, count, reply))
            .unwrap();
        done.recv().unwrap();
    }

    pub fn statuses(&self) -> Vec<PeerStatus> {
        let (reply, result) = flume::bounded(1);
        self.commands.send(Command::Statuses(reply)).unwrap();
        result.recv().unwrap()
    }

    pub fn status_of(&self, peer: &str) -> PeerStatus {
        self.statuses()
            .into_iter()
            .find(|status| status.node_id == peer)
            .unwrap()
    }

    pub fn connected_peers(&self) -> Vec<String> {
        self.statuses()
            .into_iter()
            .filter(|status| status.connected)
            .map(|status| status.node_id)
            .collect()
    }

    pub fn subscribe(&self) -> flume::Receiver<PeerEvent> {
        let (reply, result) = flume::bounded(1);
        self.commands.send(Command::Subscribe(reply)).unwrap();
        result.recv().unwrap()
    }

    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(executor) = self.executor.take() {
            let (reply, done) = flume::bounded(1);
            if self.commands.send(Command::Shutdown(reply)).is_ok() {
                done.recv_timeout(Duration::from_secs(10)).ok();
            }
            executor.join().unwrap();
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn send_burst(transport: &PeerTransport, to: &str, body: Bytes, count: usize) {
    let mut sent = 0;
    while sent < count {
        match transport.send(to, body.clone()) {
            Ok(()) => sent += 1,
            Err(PeerError::QueueFull { .. }) => {
                glommio::timer::sleep(Duration::from_micros(200)).await;
            }
            Err(error) => panic!("burst send failed: {error}"),
        }
    }
}
