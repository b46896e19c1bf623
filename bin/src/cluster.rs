//! The replicated cluster of `starcite serve` (cluster.md): the engine's cluster settings from
//! the topology configuration, and the bridge between the engine's [`ClusterLink`] and the peer
//! transport.
//!
//! The peer transport is not `Send`, so it runs on one shard ([`PEER_SHARD`]); the bridge there
//! drains the link's bounded outbound queue into the transport, hands received frames to the
//! link (Raft batches to the owning shards, replies to their callers, commit notifications to
//! the local tails) and executes forwarded requests on this node, at most
//! [`FORWARDED_REQUESTS_IN_FLIGHT_MAX`] at once.
//!
//! Raft node ids: write nodes are numbered `1..=W` in ascending byte order of their names,
//! router nodes `W+1..` in the same order (see `starcite_engine::cluster`).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures_lite::future;
use glommio::sync::Semaphore;
use starcite_engine::cluster::{ClusterLink, Delivered, Topology};
use starcite_engine::config::{EngineConfig, RaftCluster};
use starcite_engine::shard::EngineHandle;
use starcite_net::peer::{
    load_peer_tls, PeerConfig, PeerFrame, PeerNode, PeerTlsConfig, PeerTransport,
    TopologyFingerprint,
};

use crate::config::Config;

/// The shard that runs the peer transport.
pub const PEER_SHARD: u32 = 0;

/// Bound of the queue of frames received from peers and not yet dispatched; while it is full the
/// transport stops reading from its connections.
pub const PEER_INBOUND_FRAMES_MAX: usize = 4096;

/// Pause between two attempts to start the peer transport.
pub const PEER_START_RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// Forwarded requests this node executes at once; beyond it, reading from peers waits.
pub const FORWARDED_REQUESTS_IN_FLIGHT_MAX: u64 = 4096;

/// Fills in the engine's cluster settings for a configuration of two or more nodes and returns
/// the peer transport's settings; `None` for a single node.
pub fn configure(config: &Config, engine: &mut EngineConfig) -> anyhow::Result<Option<PeerConfig>> {
    if !config.peer_listener_enabled() {
        return Ok(None);
    }
    let names: Vec<String> = config
        .cluster_nodes
        .iter()
        .map(|node| node.id.clone())
        .collect();
    let topology = Topology::new(
        &config.node_name,
        &names,
        &config.write_node_ids,
        config.write_replication_factor as usize,
        config.num_groups,
    )
    .context("cluster topology")?;
    let node_id = topology.node_id;
    let group_voters = Arc::new(topology.group_voters());
    let link = ClusterLink::new(
        topology,
        Duration::from_millis(config.route_leader_cache_ttl_ms),
    );
    engine.cluster = Some(RaftCluster {
        node_id,
        group_voters,
        transport: link.clone(),
    });
    engine.link = Some(link);

    let nodes: Vec<PeerNode> = config
        .cluster_nodes
        .iter()
        .map(|node| PeerNode::new(node.id.clone(), node.peer_port))
        .collect();
    let fingerprint = TopologyFingerprint::compute(
        &nodes,
        &config.write_node_ids,
        config.write_replication_factor,
        config.num_groups,
    );
    let mut peer = PeerConfig::new(
        config.node_name.clone(),
        nodes,
        config.peer_bind_addr,
        config.peer_port,
        fingerprint,
    );
    if let Some(files) = &config.peer_tls {
        let tls = load_peer_tls(&PeerTlsConfig {
            cert_path: files.cert.clone(),
            key_path: files.key.clone(),
            ca_path: files.ca.clone(),
        })?;
        peer.tls = Some(tls);
    }
    Ok(Some(peer))
}

/// Starts the bridge on [`PEER_SHARD`] (a no-op on other shards and for a single node). Must be
/// called on the shard's executor.
pub fn start_bridge(handle: &EngineHandle, peer: Option<PeerConfig>) {
    let (Some(peer), Some(link)) = (peer, handle.config().link.clone()) else {
        return;
    };
    if handle.shard_index() != PEER_SHARD {
        return;
    }
    glommio::spawn_local(run_bridge(handle.clone(), link, peer)).detach();
}

/// The bridge's life: until the node shuts down.
async fn run_bridge(handle: EngineHandle, link: Arc<ClusterLink>, peer: PeerConfig) {
    let (inbound_sender, inbound) = flume::bounded::<PeerFrame>(PEER_INBOUND_FRAMES_MAX);
    let stopped = handle.shutdown_signal();
    // Right after a crash the kernel may still hold the old process's peer connections on the
    // port for a moment; the node keeps serving (answering 503 for replicated work) and retries.
    let transport = loop {
        match PeerTransport::start(peer.clone(), inbound_sender.clone()) {
            Ok(transport) => break Rc::new(transport),
            Err(error) => tracing::warn!(
                "peer transport did not start, retrying in {} ms: {error}",
                PEER_START_RETRY_INTERVAL.as_millis()
            ),
        }
        if stopped.is_triggered() {
            return;
        }
        glommio::timer::sleep(PEER_START_RETRY_INTERVAL).await;
    };
    drop(inbound_sender);
    let Some(outbound) = link.take_outbound() else {
        tracing::error!("the cluster link is already bridged");
        return;
    };
    let events = transport.subscribe();
    for status in transport.peer_statuses() {
        link.set_connected(&status.node_id, status.connected);
    }
    link.mark_transport_started();
    let sending = {
        let link = link.clone();
        let transport = transport.clone();
        async move {
            while let Ok((to, body)) = outbound.recv_async().await {
                if let Some(name) = link.topology().name_of(to) {
                    // A full or broken queue is a message the network lost; Raft retransmits,
                    // callers time out and tails catch up.
                    let _ = transport.send(name, Bytes::from(body));
                }
            }
        }
    };
    let watching = {
        let link = link.clone();
        async move {
            while let Ok(event) = events.recv_async().await {
                link.set_connected(&event.node_id, event.connected);
            }
        }
    };
    let receiving = receive(handle.clone(), link, inbound);
    future::or(
        async move { stopped.wait().await },
        future::or(sending, future::or(watching, receiving)),
    )
    .await;
    transport.shutdown().await;
}

/// Dispatches received frames; forwarded requests run as their own tasks.
async fn receive(
    handle: EngineHandle,
    link: Arc<ClusterLink>,
    inbound: flume::Receiver<PeerFrame>,
) {
    let in_flight = Rc::new(Semaphore::new(FORWARDED_REQUESTS_IN_FLIGHT_MAX));
    while let Ok(frame) = inbound.recv_async().await {
        let Delivered::Request { from, call_id, op } = link.deliver(&frame.from, &frame.body)
        else {
            continue;
        };
        let Ok(permit) = in_flight.clone().acquire_static_permit(1).await else {
            return;
        };
        let handle = handle.clone();
        let link = link.clone();
        glommio::spawn_local(async move {
            let outcome = handle.execute_routed(op).await;
            link.reply(from, call_id, &outcome);
            drop(permit);
        })
        .detach();
    }
}
