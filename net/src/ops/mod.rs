//! The ops listener of ops.md §4 and the node control state behind readiness and drain.
//!
//! - [`control`]: the [`ControlPlane`] seam (consensus probe, leaders, observer, leadership
//!   transfer, drain forwarding) and [`LocalControlPlane`] for a node that is the only voter of
//!   its groups.
//! - [`drain`]: the operator's sticky drain mark in `<STARCITE_DATA_DIR>/node/drain` and the
//!   shutdown mark.
//! - [`readiness`]: the composition of ops.md §2 as a pure function.
//! - [`node`]: [`NodeState`], shared by every listener: readiness, `ready_nodes`,
//!   `local_drained`, group replicas, the status object.
//! - [`status`]: the status object's shape.
//! - [`routes`]: the ops listener's routes.
//!
//! The ops listener runs on one shard only and is started before anything waits for peers or
//! quorum, so that an operator can always look at a node that is not ready.

pub mod control;
pub mod drain;
pub mod node;
pub mod readiness;
pub mod routes;
pub mod status;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use glommio::net::TcpListener;
use starcite_engine::api::Service;

pub use control::{ControlError, ControlPlane, LocalControlPlane};
pub use node::{NodeSettings, NodeState};

use crate::error::NetError;
use crate::http::Limits;
use crate::server::{accept_connections, AcceptSettings};
use crate::shutdown::ShutdownHooks;
use routes::OpsHandler;

/// Default `STARCITE_OPS_ADDR`.
pub const OPS_ADDR_DEFAULT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4001);
/// Most open connections of the ops listener; operators and probes need few.
pub const OPS_CONNECTIONS_MAX: usize = 256;
/// How often the ops shard re-evaluates readiness, which keeps the consensus probe fresh and the
/// `starcite_node_ready` / `starcite_node_draining` gauges current without any request.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// Settings of the ops listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpsConfig {
    /// `STARCITE_OPS_ADDR`.
    pub address: SocketAddr,
    /// `STARCITE_OPS_TOKEN`: when set, every `/ops/*` call needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// `STARCITE_METRICS_ENABLED`.
    pub metrics_enabled: bool,
    /// Connection limits.
    pub limits: Limits,
}

impl Default for OpsConfig {
    fn default() -> OpsConfig {
        OpsConfig {
            address: SocketAddr::V4(OPS_ADDR_DEFAULT),
            token: None,
            metrics_enabled: true,
            limits: Limits::default(),
        }
    }
}

/// Bind the ops listener.
pub fn bind(config: &OpsConfig) -> Result<TcpListener, NetError> {
    let address = config.address;
    crate::listen::bind_reusable(address).map_err(|source| NetError::Bind { address, source })
}

/// Serve the ops API on `listener` until `shutdown` resolves or `hooks.stop_accepting` fires;
/// meanwhile re-evaluate readiness every [`MAINTENANCE_INTERVAL`].
pub async fn serve<S: Service>(
    listener: TcpListener,
    config: &OpsConfig,
    service: S,
    node: Arc<NodeState>,
    hooks: ShutdownHooks,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NetError> {
    let handler = OpsHandler::new(
        service.clone(),
        node.clone(),
        config.token.as_deref(),
        config.metrics_enabled,
    );
    let settings = AcceptSettings {
        limits: config.limits.clone(),
        connections_max: OPS_CONNECTIONS_MAX,
        tls: None,
    };
    let maintenance = async {
        loop {
            let _ = node.readiness(service.readiness());
            glommio::timer::sleep(MAINTENANCE_INTERVAL).await;
        }
    };
    let plane = node.plane().run(&node);
    future::or(
        accept_connections(listener, handler, settings, &hooks, shutdown),
        async {
            // Neither ever finishes; the listener's end stops both.
            future::zip(maintenance, plane).await;
            Ok(())
        },
    )
    .await
}
