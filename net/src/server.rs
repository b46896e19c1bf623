//! The per-shard accept loop of the public listener (also used by the ops listener).
//!
//! Every shard executor calls [`serve`] with the same address. [`crate::listen::bind_reusable`]
//! sets `SO_REUSEPORT`, so each shard owns a listening socket on the same port and the kernel
//! spreads incoming connections across them; a connection then lives on the shard that
//! accepted it.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use glommio::net::TcpListener;
use glommio::sync::Semaphore;
use starcite_engine::api::Service;

use crate::auth::{AuthConfig, Authenticator};
use crate::error::NetError;
use crate::http::connection::serve_connection_until;
use crate::http::{Handler, Limits};
use crate::ops::NodeState;
use crate::routes::ApiHandler;
use crate::shutdown::ShutdownHooks;
use crate::tls::{load_tls, TlsConfig};

/// Default public listener port (`PORT`).
pub const PORT_DEFAULT: u16 = 4000;
/// Default `STARCITE_TAIL_BUFFER_EVENTS`.
pub const TAIL_BUFFER_EVENTS_DEFAULT: usize = 1000;
/// Most open connections per shard; further clients wait in the kernel's accept backlog.
pub const CONNECTIONS_PER_SHARD_MAX: usize = 10_000;

/// Pause after a failed accept, so that running out of file descriptors does not spin.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Settings of the public listener (config.md: `STARCITE_HTTP_ADDR`, `PORT`,
/// `STARCITE_METRICS_ENABLED`, `STARCITE_TAIL_BUFFER_EVENTS`, the auth variables of §4.2 and
/// `STARCITE_TLS_CERT`/`STARCITE_TLS_KEY`) plus connection limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Address to listen on (`::` = dual-stack any).
    pub http_addr: IpAddr,
    /// Port; `0` picks a free one (tests).
    pub port: u16,
    /// When false, `/metrics` is `404 not_found`.
    pub metrics_enabled: bool,
    /// Notifications buffered per tail connection.
    pub tail_buffer_events: usize,
    /// Head, body and timeout limits of each connection.
    pub limits: Limits,
    /// Most open connections per shard.
    pub connections_max: usize,
    /// Authentication (mode `none` by default).
    pub auth: AuthConfig,
    /// HTTPS/WSS only when set; plaintext otherwise.
    pub tls: Option<TlsConfig>,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            http_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: PORT_DEFAULT,
            metrics_enabled: true,
            tail_buffer_events: TAIL_BUFFER_EVENTS_DEFAULT,
            limits: Limits::default(),
            connections_max: CONNECTIONS_PER_SHARD_MAX,
            auth: AuthConfig::default(),
            tls: None,
        }
    }
}

/// Bind the public listener of this shard (`SO_REUSEPORT`, see the module documentation).
pub fn bind(config: &NetConfig) -> Result<TcpListener, NetError> {
    let address = SocketAddr::new(config.http_addr, config.port);
    crate::listen::bind_reusable(address).map_err(|source| NetError::Bind { address, source })
}

/// Bind and serve the public API on this shard until `shutdown` resolves.
pub async fn serve<S: Service>(
    config: Rc<NetConfig>,
    service: S,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NetError> {
    let listener = bind(&config)?;
    serve_listener(listener, config, service, shutdown).await
}

/// Serve the public API on an already bound listener until `shutdown` resolves. Connections
/// that are open at that point keep running on the executor until they finish or time out.
pub async fn serve_listener<S: Service>(
    listener: TcpListener,
    config: Rc<NetConfig>,
    service: S,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NetError> {
    serve_public(
        listener,
        config,
        service,
        None,
        ShutdownHooks::default(),
        shutdown,
    )
    .await
}

/// [`serve_listener`] for a node: readiness composed from `node` (ops.md §2; storage only when
/// `None`), and the graceful shutdown of ops.md §6 through `hooks`. Stops accepting when
/// `shutdown` resolves or [`ShutdownHooks::stop_accepting`] fires.
pub async fn serve_public<S: Service>(
    listener: TcpListener,
    config: Rc<NetConfig>,
    service: S,
    node: Option<Arc<NodeState>>,
    hooks: ShutdownHooks,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NetError> {
    let authenticator = Authenticator::new(&config.auth)?;
    let tls = match &config.tls {
        Some(tls) => Some(futures_rustls::TlsAcceptor::from(load_tls(tls)?)),
        None => None,
    };
    let handler = ApiHandler::new(service, config.clone(), Rc::new(authenticator))
        .with_node(node)
        .with_shutdown(hooks.clone());
    let settings = AcceptSettings {
        limits: config.limits.clone(),
        connections_max: config.connections_max,
        tls,
    };
    accept_connections(listener, handler, settings, &hooks, shutdown).await
}

/// How a listener accepts and serves its connections.
pub(crate) struct AcceptSettings {
    /// Limits of each connection.
    pub(crate) limits: Limits,
    /// Most open connections of this listener on this shard.
    pub(crate) connections_max: usize,
    /// HTTPS when set.
    pub(crate) tls: Option<futures_rustls::TlsAcceptor>,
}

/// The accept loop shared by the public and the ops listener: one task per connection, at most
/// `connections_max` at once, until `shutdown` resolves or `hooks.stop_accepting` fires (the
/// listening socket is closed when this returns).
pub(crate) async fn accept_connections<H: Handler>(
    listener: TcpListener,
    handler: H,
    settings: AcceptSettings,
    hooks: &ShutdownHooks,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NetError> {
    let address = listener
        .local_addr()
        .map_err(|error| NetError::Io(error.into()))?;
    let limits = Rc::new(settings.limits);
    let permits = Rc::new(Semaphore::new(settings.connections_max as u64));
    let accept_loop = async {
        loop {
            // Taking the permit before accepting leaves excess clients in the kernel backlog
            // instead of accepting connections that cannot be served.
            let Ok(permit) = permits.acquire_static_permit(1).await else {
                return Ok(());
            };
            let stream = match listener.accept().await {
                Ok(stream) => stream,
                Err(error) if is_transient(&error) => {
                    tracing::warn!(%address, %error, "accept failed; continuing");
                    drop(permit);
                    glommio::timer::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
                Err(source) => return Err(NetError::Accept { address, source }),
            };
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "set TCP_NODELAY failed");
            }
            let counted = hooks.counts.connection();
            let handler = handler.clone();
            let limits = limits.clone();
            let tls = settings.tls.clone();
            let closing = hooks.stop_accepting.clone();
            glommio::spawn_local(async move {
                match tls {
                    None => serve_connection_until(stream, handler, &limits, Some(&closing)).await,
                    Some(acceptor) => {
                        let handshake = async { Some(acceptor.accept(stream).await) };
                        let deadline = async {
                            glommio::timer::sleep(limits.read_timeout).await;
                            None
                        };
                        // A client that is not speaking TLS (or stalls in the handshake) is
                        // dropped without an answer.
                        match future::or(handshake, deadline).await {
                            Some(Ok(stream)) => {
                                serve_connection_until(stream, handler, &limits, Some(&closing))
                                    .await;
                            }
                            Some(Err(error)) => {
                                tracing::debug!(%error, "TLS handshake failed");
                            }
                            None => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
                drop(counted);
                drop(permit);
            })
            .detach();
        }
    };
    let stop = async {
        future::or(shutdown, hooks.stop_accepting.wait()).await;
        Ok(())
    };
    future::or(accept_loop, stop).await
}

/// Accept errors that concern one connection or a momentary resource shortage (too many open
/// files, no buffers); the listener keeps working after a short pause.
fn is_transient(error: &glommio::GlommioError<()>) -> bool {
    matches!(error, glommio::GlommioError::IoError(_))
}
