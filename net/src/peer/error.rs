//! The error type of the peer transport.

use std::io;
use std::net::SocketAddr;

use super::handshake::HandshakeError;

/// Everything that can go wrong in the peer transport.
///
/// Only [`PeerError::QueueFull`], [`PeerError::UnknownPeer`], [`PeerError::FrameTooLarge`] and
/// [`PeerError::ShutDown`] reach callers of [`super::PeerTransport::send`]; the others close one
/// connection, are logged by the transport, and end in a reconnect.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The send queue of the peer is at its byte or frame bound. Treat the frame as dropped by
    /// the network (Raft retransmits).
    #[error("send queue to {peer} is full ({frames_queued} frames, {bytes_queued} bytes queued)")]
    QueueFull {
        peer: String,
        frames_queued: usize,
        bytes_queued: u64,
    },
    /// The destination is not a configured peer of this node (or is this node itself).
    #[error("unknown peer node {0:?}")]
    UnknownPeer(String),
    /// A frame body is larger than the wire format allows.
    #[error("peer frame body of {body_bytes} bytes exceeds the maximum of {body_bytes_max} bytes")]
    FrameTooLarge {
        body_bytes: u64,
        body_bytes_max: u32,
    },
    /// The crc32c in a frame header does not match its body.
    #[error("peer frame checksum mismatch: header {expected:#010x}, body {actual:#010x}")]
    ChecksumMismatch { expected: u32, actual: u32 },
    /// The connection ended inside a frame.
    #[error("peer connection closed inside a frame")]
    TruncatedFrame,
    /// The connection ended before the handshake completed.
    #[error("peer connection closed before the handshake completed")]
    ClosedDuringHandshake,
    /// The handshake frame could not be decoded.
    #[error("invalid handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// The peer speaks another protocol version.
    #[error("peer {peer} speaks protocol version {version}, this node speaks {supported}")]
    UnsupportedVersion {
        peer: String,
        version: u16,
        supported: u16,
    },
    /// The peer's topology fingerprint differs from ours (cluster.md §8).
    #[error("topology mismatch with {0}: cluster configuration differs")]
    TopologyMismatch(String),
    /// A connecting node claimed an id that is not in `CLUSTER_NODES`.
    #[error("connection from unknown node {0:?} refused")]
    UnknownNode(String),
    /// The node that answered a dial is not the node that was dialled.
    #[error("dialled {expected} but the peer identified itself as {actual}")]
    WrongPeer { expected: String, actual: String },
    /// TLS handshake failure or a certificate that does not match the peer's node id.
    #[error("tls with {peer}: {reason}")]
    Tls { peer: String, reason: String },
    /// A step did not finish within its deadline.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The peer host did not resolve to any address.
    #[error("resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    /// The listener could not be bound.
    #[error("bind peer listener on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
    /// A socket operation failed.
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        source: io::Error,
    },
    /// The configuration handed to [`super::PeerTransport::start`] is inconsistent.
    #[error("invalid peer configuration: {0}")]
    InvalidConfig(String),
    /// The transport has been shut down.
    #[error("peer transport is shut down")]
    ShutDown,
}

impl PeerError {
    /// Wrap an IO error with the operation that failed.
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> PeerError {
        move |source| PeerError::Io { context, source }
    }
}
