//! Configuration and bounds of the peer transport.

use std::net::IpAddr;
use std::time::Duration;

use super::fingerprint::TopologyFingerprint;
use super::tls::PeerTls;

/// Default peer port (`STARCITE_PEER_PORT`).
pub const PEER_PORT_DEFAULT: u16 = 4100;
/// Default byte bound of one peer's send queue, frame headers included.
pub const PEER_SEND_QUEUE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Default frame-count bound of one peer's send queue.
pub const PEER_SEND_QUEUE_FRAMES_MAX: usize = 65_536;
/// First pause after a failed dial; doubled after every further failure.
pub const RECONNECT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Longest pause between dials (cluster.md §5.3).
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Budget for resolving, connecting, TLS and the handshake of one dial or one accept.
pub const PEER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that has written nothing for this long writes a keepalive frame.
pub const PEER_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// A connection that has received nothing (not even a keepalive) for this long is closed, so a
/// peer that vanished without closing its sockets is noticed.
pub const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// A write that makes no progress for this long closes the connection: the peer is not reading.
pub const PEER_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Refusals (topology mismatch, unknown node, failed dials) are logged at most this often per
/// peer, so a misconfigured node does not flood the log while it keeps reconnecting.
pub const PEER_REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Most inbound connections in their handshake at once; further ones are closed at once.
pub const PEER_HANDSHAKES_PENDING_MAX: usize = 64;
/// Most bytes coalesced into one write call.
pub const PEER_WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;
/// Bodies up to this size are copied into the write batch; larger ones are written from their
/// own buffer, because copying them costs more than the extra write call.
pub const PEER_WRITE_COPY_BODY_BYTES_MAX: usize = 16 * 1024;
/// Connection events buffered per subscriber before further events for it are dropped.
pub const PEER_EVENTS_BUFFERED_MAX: usize = 1024;
/// Most addresses tried per resolution of a peer host.
pub const PEER_ADDRESSES_PER_HOST_MAX: usize = 8;

const _: () = assert!(PEER_WRITE_COPY_BODY_BYTES_MAX < PEER_WRITE_BATCH_BYTES_MAX);
const _: () = assert!(PEER_KEEPALIVE_INTERVAL.as_millis() * 2 < PEER_IDLE_TIMEOUT.as_millis());

/// One `CLUSTER_NODES` entry: `name@host:peer_port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerNode {
    /// Node id, `name@host`.
    pub node_id: String,
    /// Peer port of the node.
    pub port: u16,
}

impl PeerNode {
    /// An entry for `node_id` (`name@host`) listening on `port`.
    pub fn new(node_id: impl Into<String>, port: u16) -> PeerNode {
        PeerNode {
            node_id: node_id.into(),
            port,
        }
    }

    /// The host part of the node id as written (`[::1]` keeps its brackets).
    pub fn host(&self) -> &str {
        node_host(&self.node_id)
    }
}

/// The host part of a node id `name@host`: everything after the first `@` (names cannot
/// contain `@`), or the whole id when there is none.
pub fn node_host(node_id: &str) -> &str {
    match node_id.split_once('@') {
        Some((_, host)) => host,
        None => node_id,
    }
}

/// The host to resolve or to match a certificate against: brackets of an IPv6 literal removed.
pub fn unbracketed_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host)
}

/// Everything [`super::PeerTransport::start`] needs.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// This node's id (`NODE_NAME`).
    pub self_id: String,
    /// Every `CLUSTER_NODES` entry; the entry of `self_id` is skipped.
    pub nodes: Vec<PeerNode>,
    /// `STARCITE_PEER_BIND_ADDR`.
    pub bind_addr: IpAddr,
    /// `STARCITE_PEER_PORT`; `0` picks a free port (tests).
    pub port: u16,
    /// This node's topology fingerprint ([`TopologyFingerprint::compute`]).
    pub fingerprint: TopologyFingerprint,
    /// Mutual TLS on every connection when set (`STARCITE_PEER_TLS_*`).
    pub tls: Option<PeerTls>,
    /// Byte bound of each peer's send queue, headers included.
    pub send_queue_bytes_max: u64,
    /// Frame-count bound of each peer's send queue.
    pub send_queue_frames_max: usize,
    /// Publish the number of connected peers as `starcite_peers_connected`. Off when a process
    /// runs several transports (tests).
    pub publish_metrics: bool,
}

impl PeerConfig {
    /// A configuration with the default queue bounds, no TLS and metrics published.
    pub fn new(
        self_id: impl Into<String>,
        nodes: Vec<PeerNode>,
        bind_addr: IpAddr,
        port: u16,
        fingerprint: TopologyFingerprint,
    ) -> PeerConfig {
        PeerConfig {
            self_id: self_id.into(),
            nodes,
            bind_addr,
            port,
            fingerprint,
            tls: None,
            send_queue_bytes_max: PEER_SEND_QUEUE_BYTES_MAX,
            send_queue_frames_max: PEER_SEND_QUEUE_FRAMES_MAX,
            publish_metrics: true,
        }
    }
}

/// The pause before dial attempt `failures + 1`: 100 ms doubling up to 5 s.
pub fn reconnect_backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.min(16);
    RECONNECT_BACKOFF_INITIAL
        .saturating_mul(factor)
        .min(RECONNECT_BACKOFF_MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100_ms_to_5_s() {
        let pauses_ms: Vec<u128> = (0..8).map(|n| reconnect_backoff(n).as_millis()).collect();
        assert_eq!(pauses_ms, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(reconnect_backoff(u32::MAX), RECONNECT_BACKOFF_MAX);
    }

    #[test]
    fn hosts_of_node_ids() {
        assert_eq!(node_host("node1@10.0.0.1"), "10.0.0.1");
        assert_eq!(node_host("node1@[::1]"), "[::1]");
        assert_eq!(unbracketed_host("[::1]"), "::1");
        assert_eq!(unbracketed_host("example.com"), "example.com");
    }
}
