//! One peer connection: dialling or accepting it, its handshake, and the reader and writer that
//! run while it is up.

use std::future::Future;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use futures_util::io::AsyncReadExt as _;
use glommio::net::TcpStream;
use glommio::timer::Timer;
use rustls::pki_types::CertificateDer;
use socket2::{Domain, Protocol, Socket, Type};

use super::config::{
    node_host, unbracketed_host, PEER_ADDRESSES_PER_HOST_MAX, PEER_HANDSHAKE_TIMEOUT,
    PEER_IDLE_TIMEOUT, PEER_KEEPALIVE_INTERVAL, PEER_WRITE_BATCH_BYTES_MAX,
    PEER_WRITE_COPY_BODY_BYTES_MAX, PEER_WRITE_STALL_TIMEOUT,
};
use super::error::PeerError;
use super::frame::{
    encode_frame_into, encode_header, FrameDecoder, PEER_FRAME_BODY_BYTES_MAX,
    PEER_FRAME_HEADER_BYTES,
};
use super::handshake::{
    decode_handshake, Handshake, HANDSHAKE_BODY_BYTES_MAX, PEER_PROTOCOL_VERSION,
};
use super::tls::{certificate_matches_host, server_name};
use super::transport::{PeerFrame, PeerLink, Shared};

/// A plaintext or TLS byte stream to a peer.
pub(super) trait PeerStream: AsyncRead + AsyncWrite + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + 'static> PeerStream for T {}
pub(super) type BoxedStream = Box<dyn PeerStream>;

/// The frame that keeps an idle connection alive: empty body, crc32c of nothing is 0.
const KEEPALIVE_FRAME: [u8; PEER_FRAME_HEADER_BYTES] = [0; PEER_FRAME_HEADER_BYTES];

/// Which way a connection carries frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    /// Dialled by this node; carries this node's sends (and the peer's keepalives back).
    Outbound,
    /// Accepted by this node; delivers the peer's sends (and carries keepalives back).
    Inbound,
}

/// A connection whose handshake completed.
pub(super) struct Established {
    pub stream: BoxedStream,
    pub decoder: FrameDecoder,
}

/// Run `step` with a deadline.
pub(super) async fn with_deadline<T, E: From<PeerError>>(
    deadline: Duration,
    what: &'static str,
    step: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    future::or(step, async {
        Timer::new(deadline).await;
        Err(E::from(PeerError::Timeout(what)))
    })
    .await
}

/// Resolve, connect, secure and handshake with `link`'s node.
pub(super) async fn dial(shared: &Shared, link: &PeerLink) -> Result<Established, PeerError> {
    let tcp = connect(source_address(shared), link.node.host(), link.node.port).await?;
    configure(&tcp)?;
    let mut stream: BoxedStream = match &shared.tls {
        None => Box::new(tcp),
        Some(tls) => {
            let tls_error = |reason: String| PeerError::Tls {
                peer: link.node.node_id.clone(),
                reason,
            };
            let name = server_name(link.node.host()).map_err(tls_error)?;
            let secured = tls
                .connector
                .connect(name, tcp)
                .await
                .map_err(|error| tls_error(error.to_string()))?;
            Box::new(secured)
        }
    };
    write_frame(&mut stream, &shared.handshake_body).await?;
    let mut decoder = FrameDecoder::new(HANDSHAKE_BODY_BYTES_MAX);
    let body = decoder
        .read_frame(&mut stream)
        .await?
        .ok_or(PeerError::ClosedDuringHandshake)?;
    match decode_handshake(&body)? {
        Handshake::OtherVersion(version) => Err(PeerError::UnsupportedVersion {
            peer: link.node.node_id.clone(),
            version,
            supported: PEER_PROTOCOL_VERSION,
        }),
        Handshake::Current {
            node_id,
            fingerprint,
        } => {
            if node_id != link.node.node_id {
                return Err(PeerError::WrongPeer {
                    expected: link.node.node_id.clone(),
                    actual: node_id,
                });
            }
            if fingerprint != shared.fingerprint {
                return Err(PeerError::TopologyMismatch(node_id));
            }
            decoder.set_body_bytes_max(PEER_FRAME_BODY_BYTES_MAX);
            Ok(Established { stream, decoder })
        }
    }
}

/// A refused or failed inbound handshake, with the configured node it concerns when known.
pub(super) struct AcceptFailure {
    pub link: Option<Rc<PeerLink>>,
    pub error: PeerError,
}

impl From<PeerError> for AcceptFailure {
    fn from(error: PeerError) -> AcceptFailure {
        AcceptFailure { link: None, error }
    }
}

/// Secure and handshake an accepted connection. The reply handshake is sent only to a known
/// node, and also when its fingerprint or version differs, so that the dialler can log the
/// mismatch too; a refused connection is then closed.
pub(super) async fn accept(
    shared: &Shared,
    tcp: TcpStream,
) -> Result<(Rc<PeerLink>, Established), AcceptFailure> {
    configure(&tcp)?;
    let remote = tcp
        .peer_addr()
        .map(|address| address.to_string())
        .unwrap_or_else(|_| "an unknown address".to_string());
    let (mut stream, client_certificate): (BoxedStream, Option<CertificateDer<'static>>) =
        match &shared.tls {
            None => (Box::new(tcp), None),
            Some(tls) => {
                let secured = tls
                    .acceptor
                    .accept(tcp)
                    .await
                    .map_err(|error| PeerError::Tls {
                        peer: remote.clone(),
                        reason: error.to_string(),
                    })?;
                let certificate = secured
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|leaf| leaf.clone().into_owned());
                (Box::new(secured), certificate)
            }
        };
    let mut decoder = FrameDecoder::new(HANDSHAKE_BODY_BYTES_MAX);
    let body = decoder
        .read_frame(&mut stream)
        .await?
        .ok_or(PeerError::ClosedDuringHandshake)?;
    let (node_id, fingerprint) = match decode_handshake(&body).map_err(PeerError::from)? {
        Handshake::OtherVersion(version) => {
            // Best effort: the connection is refused whether or not the reply arrives.
            let _ = write_frame(&mut stream, &shared.handshake_body).await;
            return Err(PeerError::UnsupportedVersion {
                peer: remote,
                version,
                supported: PEER_PROTOCOL_VERSION,
            }
            .into());
        }
        Handshake::Current {
            node_id,
            fingerprint,
        } => (node_id, fingerprint),
    };
    let Some(link) = shared.peers.get(&node_id).cloned() else {
        return Err(PeerError::UnknownNode(node_id).into());
    };
    let refuse = |error: PeerError| AcceptFailure {
        link: Some(link.clone()),
        error,
    };
    if shared.tls.is_some() {
        let tls_error = |reason: String| PeerError::Tls {
            peer: node_id.clone(),
            reason,
        };
        let certificate = client_certificate
            .ok_or_else(|| tls_error("no client certificate".to_string()))
            .map_err(refuse)?;
        certificate_matches_host(&certificate, link.node.host())
            .map_err(tls_error)
            .map_err(refuse)?;
    }
    if fingerprint != shared.fingerprint {
        // Best effort, as above.
        let _ = write_frame(&mut stream, &shared.handshake_body).await;
        return Err(refuse(PeerError::TopologyMismatch(node_id)));
    }
    write_frame(&mut stream, &shared.handshake_body)
        .await
        .map_err(refuse)?;
    decoder.set_body_bytes_max(PEER_FRAME_BODY_BYTES_MAX);
    Ok((link, Established { stream, decoder }))
}

/// Resolve `host` now (never cached: cluster.md §1) and connect to the first address that
/// answers, from `source` when given (see [`source_address`]).
async fn connect(source: Option<IpAddr>, host: &str, port: u16) -> Result<TcpStream, PeerError> {
    let addresses = resolve(host, port).await?;
    let mut last_error = None;
    for address in addresses {
        let connected = match source.filter(|source| source.is_ipv4() == address.is_ipv4()) {
            Some(source) => connect_from(source, address).await,
            None => TcpStream::connect_timeout(address, PEER_HANDSHAKE_TIMEOUT)
                .await
                .map_err(std::io::Error::from),
        };
        match connected {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    Err(PeerError::Io {
        context: "connect to peer",
        source: last_error.unwrap_or_else(|| std::io::Error::other("no address to connect to")),
    })
}

/// The address outbound peer connections leave from: this node's own host (the host part of
/// its id, which its handshake announces) when that is an IP literal other than the
/// unspecified address, so that firewall rules can tell the nodes of one machine apart. A host
/// name is not resolved for this: the kernel picks the source then, as for any client.
fn source_address(shared: &Shared) -> Option<IpAddr> {
    let Ok(Handshake::Current { node_id, .. }) = decode_handshake(&shared.handshake_body) else {
        return None;
    };
    unbracketed_host(node_host(&node_id))
        .parse::<IpAddr>()
        .ok()
        .filter(|ip| !ip.is_unspecified())
}

/// Connect to `address` from `source` (port chosen by the kernel), or from the kernel's choice
/// when `source` is not an address of this machine. glommio cannot bind a
/// socket before connecting, so the socket is created, bound and connected with a blocking
/// connect on glommio's blocking thread pool (the shard keeps running), then handed over.
async fn connect_from(source: IpAddr, address: SocketAddr) -> std::io::Result<TcpStream> {
    let connected = glommio::executor()
        .spawn_blocking(move || -> std::io::Result<Socket> {
            let socket = Socket::new(
                Domain::for_address(address),
                Type::STREAM.cloexec(),
                Some(Protocol::TCP),
            )?;
            match socket.bind(&SocketAddr::new(source, 0).into()) {
                // A node id may name an address this machine does not own (behind NAT, a
                // container's published address): then the kernel picks the source.
                Err(error) if error.kind() == std::io::ErrorKind::AddrNotAvailable => {}
                bound => bound?,
            }
            socket.connect_timeout(&address.into(), PEER_HANDSHAKE_TIMEOUT)?;
            Ok(socket)
        })
        .await?;
    // SAFETY: the descriptor is a freshly connected socket that we own and hand over.
    Ok(unsafe { TcpStream::from_raw_fd(connected.into_raw_fd()) })
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, PeerError> {
    let host = unbracketed_host(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    // The system resolver blocks, so it runs on glommio's blocking thread pool.
    let name = host.to_owned();
    let resolved = glommio::executor()
        .spawn_blocking(move || {
            (name.as_str(), port).to_socket_addrs().map(|addresses| {
                addresses
                    .take(PEER_ADDRESSES_PER_HOST_MAX)
                    .collect::<Vec<_>>()
            })
        })
        .await;
    match resolved {
        Ok(addresses) if !addresses.is_empty() => Ok(addresses),
        Ok(_) => Err(PeerError::Resolve {
            host: host.to_owned(),
            reason: "no addresses".to_string(),
        }),
        Err(error) => Err(PeerError::Resolve {
            host: host.to_owned(),
            reason: error.to_string(),
        }),
    }
}

/// Socket options of every peer connection: no Nagle delay (Raft messages are latency
/// sensitive and writes are already batched), and timeouts that notice a vanished or stalled
/// peer.
fn configure(tcp: &TcpStream) -> Result<(), PeerError> {
    let to_error = |error: glommio::GlommioError<()>| PeerError::Io {
        context: "configure peer socket",
        source: error.into(),
    };
    tcp.set_nodelay(true).map_err(to_error)?;
    tcp.set_read_timeout(Some(PEER_IDLE_TIMEOUT))
        .map_err(to_error)?;
    tcp.set_write_timeout(Some(PEER_WRITE_STALL_TIMEOUT))
        .map_err(to_error)?;
    Ok(())
}

async fn write_frame<W: AsyncWrite + Unpin + ?Sized>(
    writer: &mut W,
    body: &[u8],
) -> Result<(), PeerError> {
    let mut frame = Vec::with_capacity(PEER_FRAME_HEADER_BYTES + body.len());
    encode_frame_into(body, &mut frame)?;
    writer
        .write_all(&frame)
        .await
        .map_err(PeerError::io("write peer frame"))?;
    writer
        .flush()
        .await
        .map_err(PeerError::io("flush peer frame"))
}

/// Run an established connection until it fails or the peer closes it. Returns why it ended;
/// `Ok(())` is a clean close by the peer (or a dropped receiver).
pub(super) async fn run(
    shared: &Shared,
    link: &PeerLink,
    established: Established,
    direction: Direction,
) -> Result<(), PeerError> {
    let Established { stream, decoder } = established;
    let (mut reader, mut writer) = stream.split();
    let reading = read_frames(shared, link, &mut reader, decoder);
    let writing = async {
        match direction {
            Direction::Outbound => write_queued_frames(link, &mut writer).await,
            Direction::Inbound => write_keepalives(&mut writer).await,
        }
    };
    future::or(reading, writing).await
}

/// Hand every non-empty frame to the receiver. Waiting on a full receiver stops reading, so the
/// peer's writes stall instead of this node buffering without bound.
async fn read_frames<R: AsyncRead + Unpin>(
    shared: &Shared,
    link: &PeerLink,
    reader: &mut R,
    mut decoder: FrameDecoder,
) -> Result<(), PeerError> {
    loop {
        let Some(body) = decoder.read_frame(reader).await? else {
            return Ok(());
        };
        if body.is_empty() {
            continue;
        }
        link.frames_received.set(link.frames_received.get() + 1);
        let frame = PeerFrame {
            from: link.name.clone(),
            body,
        };
        if shared.inbound.send_async(frame).await.is_err() {
            return Ok(());
        }
    }
}

/// Wait until the queue holds a frame (`true`) or the keepalive interval passed (`false`).
async fn frames_or_keepalive(link: &PeerLink) -> bool {
    if !link.queue.borrow().is_empty() {
        return true;
    }
    let frames = async {
        future::poll_fn(|context| link.queue.borrow_mut().poll_non_empty(context)).await;
        true
    };
    let keepalive = async {
        Timer::new(PEER_KEEPALIVE_INTERVAL).await;
        false
    };
    future::or(frames, keepalive).await
}

/// Drain the peer's send queue, coalescing small frames into one write of up to
/// [`PEER_WRITE_BATCH_BYTES_MAX`] bytes; keepalives while idle.
async fn write_queued_frames<W: AsyncWrite + Unpin>(
    link: &PeerLink,
    writer: &mut W,
) -> Result<(), PeerError> {
    let mut batch: Vec<u8> = Vec::with_capacity(PEER_WRITE_BATCH_BYTES_MAX);
    loop {
        batch.clear();
        if !frames_or_keepalive(link).await {
            batch.extend_from_slice(&KEEPALIVE_FRAME);
        }
        while batch.len() < PEER_WRITE_BATCH_BYTES_MAX {
            let Some(body) = pop_frame(link) else {
                break;
            };
            batch.extend_from_slice(&encode_header(&body)?);
            if body.len() <= PEER_WRITE_COPY_BODY_BYTES_MAX {
                batch.extend_from_slice(&body);
            } else {
                write_bytes(writer, &batch).await?;
                batch.clear();
                write_bytes(writer, &body).await?;
            }
        }
        write_bytes(writer, &batch).await?;
        writer
            .flush()
            .await
            .map_err(PeerError::io("flush peer frames"))?;
    }
}

fn pop_frame(link: &PeerLink) -> Option<Bytes> {
    let body = link.queue.borrow_mut().pop()?;
    link.frames_sent.set(link.frames_sent.get() + 1);
    Some(body)
}

async fn write_bytes<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> Result<(), PeerError> {
    if bytes.is_empty() {
        return Ok(());
    }
    writer
        .write_all(bytes)
        .await
        .map_err(PeerError::io("write peer frames"))
}

/// An inbound connection carries nothing back but keepalives, which let the dialler notice a
/// peer that vanished without closing its sockets.
async fn write_keepalives<W: AsyncWrite + Unpin>(writer: &mut W) -> Result<(), PeerError> {
    loop {
        Timer::new(PEER_KEEPALIVE_INTERVAL).await;
        write_bytes(writer, &KEEPALIVE_FRAME).await?;
        writer
            .flush()
            .await
            .map_err(PeerError::io("flush peer keepalive"))?;
    }
}
