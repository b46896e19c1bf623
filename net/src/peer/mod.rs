//! The peer transport: framed, checksummed, optionally mutually authenticated TCP connections
//! between the nodes of a cluster (cluster.md §5.3). It carries opaque frame bodies; the
//! replicated cluster puts multi-Raft batches, forwarded requests and replies, commit
//! notifications and observer status in them.
//!
//! - One outbound connection per peer carries this node's sends; the inbound connection a peer
//!   dialled delivers that peer's sends. Each direction of use has its own connection, so a
//!   connection has one writer of frames and one reader.
//! - Every connection starts with a handshake each way (protocol version, node id, topology
//!   fingerprint); an unknown node or a different fingerprint is refused and logged.
//! - Each peer has a send queue bounded by bytes and frames; a full queue refuses the frame.
//! - Received frames go to a caller-supplied bounded `flume` channel; a full channel stops
//!   reading (backpressure) instead of buffering.
//! - The transport runs on one glommio executor per node; other shards forward to it.
//!
//! The wire format is described byte by byte in `docs/format.md`, the handshake in
//! [`handshake`] and the fingerprint in [`fingerprint`].

pub mod config;
mod connection;
pub mod error;
pub mod fingerprint;
pub mod frame;
pub mod handshake;
pub mod queue;
pub mod tls;
mod transport;

pub use config::{
    PeerConfig, PeerNode, PEER_PORT_DEFAULT, PEER_SEND_QUEUE_BYTES_MAX, PEER_SEND_QUEUE_FRAMES_MAX,
};
pub use error::PeerError;
pub use fingerprint::TopologyFingerprint;
pub use frame::PEER_FRAME_BODY_BYTES_MAX;
pub use handshake::PEER_PROTOCOL_VERSION;
pub use tls::{load_peer_tls, PeerTls, PeerTlsConfig, PeerTlsLoadError};
pub use transport::{PeerEvent, PeerFrame, PeerStatus, PeerTransport};
