//! `starcite serve`: configuration → engine and listener settings, data directory checks,
//! starting the shards with the public listener on each and the ops listener on shard 0, and the
//! graceful shutdown of ops.md §6 on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use starcite_archive::{
    ArchiveAdapter, LocalAdapter, PostgresAdapter, PostgresConfig, S3Adapter, S3Config,
    S3Credentials,
};
use starcite_engine::api::NodeMode;
use starcite_engine::config::{ArchiveSettings, EngineConfig};
use starcite_engine::shard::EngineHandle;
use starcite_engine::wal::FaultPlan;
use starcite_engine::NodeHandle;
use starcite_net::ops::drain::{DrainState, DRAIN_FILE, NODE_DIRECTORY};
use starcite_net::ops::{LocalControlPlane, NodeSettings, NodeState, OpsConfig};
use starcite_net::server::NetConfig;
use starcite_net::shutdown::ShutdownHooks;

use crate::config::{ArchiveBackend, Config};
use crate::signals;

/// How long startup waits for every shard to bind its listeners.
const LISTENER_BIND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long startup waits for a just-stopped predecessor's listening sockets to go away.
const PORT_RELEASE_WAIT: Duration = Duration::from_secs(2);
/// How often that is re-checked.
const PORT_RELEASE_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// The shard that runs the ops listener.
const OPS_SHARD: u32 = 0;
/// How long a shard waits for the node's tails to send their 1001 close before it closes its log.
const TAIL_CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How often the shutdown sequence re-checks open connections.
const SHUTDOWN_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// The part of `STARCITE_SHUTDOWN_TIMEOUT_MS` kept for closing tails and logs after in-flight
/// requests (at most a quarter of the budget).
const SHUTDOWN_FINAL_RESERVE: Duration = Duration::from_secs(2);

/// The engine's settings for `config`.
pub fn engine_config(config: &Config) -> EngineConfig {
    // glommio opens directories without a base descriptor, so relative paths (the default
    // `./data`) must be made absolute first.
    let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut engine = EngineConfig::single_node(absolute(&config.data_dir));
    engine.node_name = config.node_name.clone();
    engine.mode = if config.is_write_node() {
        NodeMode::WriteNode
    } else {
        NodeMode::RouterNode
    };
    engine.raft_data_dir = absolute(&config.raft_data_dir);
    engine.shards = config.shards;
    engine.pin_shards = true;
    engine.num_groups = config.num_groups;
    engine.event_store_max_bytes = config.memory.event_store_max_bytes;
    engine.archive_flush_interval_ms = config.archive.flush_interval_ms;
    engine.raft_heartbeat_ms = config.raft_heartbeat_ms;
    engine.raft_election_timeout_ms = config.raft_election_timeout_ms;
    engine.wal_fault = config.test_fail_fsync_after.map(FaultPlan::fail_fdatasync);
    engine
}

/// Open the configured archive adapter (config.md §4.3) and wrap it with the archiver and
/// read-cache settings. Postgres with `MIGRATE_ON_BOOT` migrates here.
pub fn open_archive(config: &Config) -> anyhow::Result<ArchiveSettings> {
    let adapter: Arc<dyn ArchiveAdapter> = match &config.archive.backend {
        ArchiveBackend::Local { dir, .. } => Arc::new(
            LocalAdapter::open(dir)
                .with_context(|| format!("open local archive {}", dir.display()))?,
        ),
        ArchiveBackend::S3(s3) => {
            let mut s3_config = S3Config::new(s3.bucket.clone());
            s3_config.prefix = s3.prefix.clone();
            s3_config.region = s3.region.clone();
            s3_config.endpoint = s3.endpoint.clone();
            s3_config.path_style = s3.path_style;
            s3_config.max_write_retries = u32::try_from(s3.max_write_retries).unwrap_or(u32::MAX);
            if let (Some(access_key_id), Some(secret_access_key)) =
                (&s3.access_key_id, &s3.secret_access_key)
            {
                s3_config.credentials = Some(S3Credentials {
                    access_key_id: access_key_id.clone(),
                    secret_access_key: secret_access_key.clone(),
                    session_token: s3.session_token.clone(),
                });
            }
            Arc::new(S3Adapter::new(s3_config).context("configure S3 archive")?)
        }
        ArchiveBackend::Postgres(postgres) => {
            let mut postgres_config = PostgresConfig::new(postgres.url.clone());
            postgres_config.pool_size = u32::try_from(postgres.pool_size).unwrap_or(u32::MAX);
            postgres_config.migrate_on_boot = postgres.migrate_on_boot;
            Arc::new(PostgresAdapter::connect(postgres_config).context("connect Postgres archive")?)
        }
    };
    let mut settings = ArchiveSettings::new(adapter);
    settings.batch_events_max = config.archive.batch_size;
    settings.retry_max_ms = config.archive.retry_max_ms;
    settings.read_cache_max_bytes = config.memory.read_cache_max_bytes;
    settings.read_cache_reclaim_fraction = config.memory.read_cache_reclaim_fraction;
    settings.read_cache_compressed = config.memory.read_cache_compressed;
    settings.capacity_check_interval_writes = config.memory.event_store_capacity_check_interval;
    Ok(settings)
}

/// The public listener's settings for `config`.
pub fn net_config(config: &Config) -> NetConfig {
    NetConfig {
        http_addr: config.http_addr,
        port: config.port,
        metrics_enabled: config.metrics_enabled,
        tail_buffer_events: config.tail_buffer_events as usize,
        auth: auth_config(&config.auth),
        tls: config
            .tls
            .as_ref()
            .map(|files| starcite_net::tls::TlsConfig {
                cert_path: files.cert.clone(),
                key_path: files.key.clone(),
            }),
        ..NetConfig::default()
    }
}

/// Maps the validated auth settings onto the network layer's.
fn auth_config(auth: &crate::config::AuthConfig) -> starcite_net::auth::AuthConfig {
    use starcite_net::auth::AuthMode;
    let jwt = auth.jwt.as_ref();
    let text = |field: fn(&crate::config::JwtSettings) -> &String| {
        jwt.map(field).cloned().unwrap_or_default()
    };
    starcite_net::auth::AuthConfig {
        mode: if jwt.is_some() {
            AuthMode::Jwt
        } else {
            AuthMode::None
        },
        issuer: text(|j| &j.issuer),
        audience: text(|j| &j.audience),
        jwks_url: text(|j| &j.jwks_url),
        secret_key_base: text(|j| &j.secret_key_base),
        leeway_seconds: auth.jwt_leeway_seconds,
        jwks_refresh_ms: auth.jwks_refresh_ms,
        jwks_stale_max_ms: auth.jwks_stale_max_ms,
        principal_token_salt: auth.principal_token_salt.clone(),
        default_ttl_seconds: auth.principal_token_default_ttl_seconds,
        max_ttl_seconds: auth.principal_token_max_ttl_seconds,
    }
}

/// Creates `path` if missing and proves it writable with a probe file.
fn ensure_writable_directory(path: &Path) -> anyhow::Result<()> {
    let not_writable = || anyhow!("data directory not writable: {}", path.display());
    std::fs::create_dir_all(path).map_err(|_| not_writable())?;
    let probe = path.join(format!(".starcite-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"ok").map_err(|_| not_writable())?;
    std::fs::remove_file(&probe).map_err(|_| not_writable())?;
    Ok(())
}

/// Fails when another process listens on `address`. The shards bind with `SO_REUSEPORT`, which
/// would otherwise silently share a port with another server of the same user.
///
/// The listening sockets of a predecessor that was just killed can outlive it briefly (the kernel
/// tears its io_uring down asynchronously), so a port in use is re-checked for
/// [`PORT_RELEASE_WAIT`] before giving up.
fn ensure_port_free(address: SocketAddr) -> anyhow::Result<()> {
    let give_up_at = Instant::now() + PORT_RELEASE_WAIT;
    loop {
        match starcite_net::listen::ensure_free(address) {
            Ok(()) => return Ok(()),
            Err(error)
                if error.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < give_up_at =>
            {
                std::thread::sleep(PORT_RELEASE_POLL_INTERVAL);
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot listen on {address}"));
            }
        }
    }
}

/// The ops listener's settings for `config`.
pub fn ops_config(config: &Config) -> OpsConfig {
    OpsConfig {
        address: config.ops_addr,
        token: config.ops_token.clone(),
        metrics_enabled: config.metrics_enabled,
        ..OpsConfig::default()
    }
}

/// The facts readiness, drain and the ops API need, with the directories made absolute like the
/// engine's.
pub fn node_settings(config: &Config, engine: &EngineConfig) -> NodeSettings {
    NodeSettings {
        node_id: config.node_name.clone(),
        mode: engine.mode,
        write_nodes: config.write_node_ids.clone(),
        replication_factor: config.write_replication_factor,
        num_groups: config.num_groups,
        data_dir: engine.data_dir.clone(),
        raft_data_dir: engine.raft_data_dir.clone(),
    }
}

/// The node-wide control state: the drain mark from the data directory and the control plane —
/// the cluster's (observer, probe, drain, leader balance) with two or more nodes, else that of a
/// node that is the only voter of its groups.
fn node_state(config: &Config, engine: &EngineConfig) -> anyhow::Result<NodeState> {
    let settings = node_settings(config, engine);
    let drain = DrainState::load(&settings.data_dir).context("load the drain mark")?;
    if let Some(reason) = drain.reason() {
        tracing::info!(
            "node {} starts draining ({} mark in {}); `starcite ops undrain` clears it",
            settings.node_id,
            reason.as_str(),
            settings
                .data_dir
                .join(NODE_DIRECTORY)
                .join(DRAIN_FILE)
                .display()
        );
    }
    let plane: Arc<dyn starcite_net::ops::ControlPlane> = match &engine.link {
        Some(link) => Arc::new(crate::control::ClusterControlPlane::new(
            link.clone(),
            Duration::from_millis(config.raft_election_timeout_ms),
        )),
        None => Arc::new(LocalControlPlane::new(
            &settings.node_id,
            &settings.local_groups(),
            settings.num_groups,
        )),
    };
    // Peers learn a mark that survived a restart with the first status report.
    plane.announce_drain(drain.reason());
    Ok(NodeState::new(settings, plane, drain))
}

/// Which listener a bind report is about.
type BindReport = Result<(), String>;

pub fn run(config: Config) -> anyhow::Result<()> {
    ensure_writable_directory(&config.data_dir)?;
    if config.raft_data_dir != config.data_dir.join("raft") {
        ensure_writable_directory(&config.raft_data_dir)?;
    }
    ensure_port_free(config.http_socket())?;
    ensure_port_free(config.ops_addr)?;
    let mut engine = engine_config(&config);
    let archive = open_archive(&config)?;
    let archive_progress = archive.progress.clone();
    engine.archive = Some(archive);
    let peer = crate::cluster::configure(&config, &mut engine)?;
    let node_state =
        Arc::new(node_state(&config, &engine)?.with_archive_progress(archive_progress));
    // Before any thread exists, so that every thread inherits the blocked mask.
    signals::block_termination_signals().context("block termination signals")?;

    let shutdown_timeout = Duration::from_millis(config.shutdown_timeout_ms);
    let (stop_sender, stop_receiver) = flume::bounded::<()>(1);
    signals::spawn_watcher(stop_sender, shutdown_timeout).context("start signal watcher")?;

    let hooks = ShutdownHooks::default();
    let (bind_reports, bind_results) = flume::unbounded::<BindReport>();
    let serve_shard = {
        let net = net_config(&config);
        let ops = ops_config(&config);
        let node_state = node_state.clone();
        let hooks = hooks.clone();
        move |handle: EngineHandle| {
            crate::cluster::start_bridge(&handle, peer.clone());
            serve_shard(
                handle,
                net.clone(),
                ops.clone(),
                node_state.clone(),
                hooks.clone(),
                bind_reports.clone(),
            )
        }
    };
    let node =
        starcite_engine::shard::start(engine, serve_shard).map_err(|error| anyhow!("{error}"))?;

    // One report per shard's public listener plus one for the ops listener.
    for _ in 0..=config.shards {
        let bound = bind_results
            .recv_timeout(LISTENER_BIND_TIMEOUT)
            .map_err(|_| anyhow!("listeners did not start on {}", config.http_socket()))
            .and_then(|result| result.map_err(|error| anyhow!("{error}")));
        if let Err(error) = bound {
            hooks.stop_accepting.fire();
            node.shutdown();
            let _ = node.join();
            return Err(error);
        }
    }
    tracing::info!(
        "starcite {} listening on http://{} (ops http://{}; node {}, {}, {} shards, data {})",
        env!("CARGO_PKG_VERSION"),
        config.http_socket(),
        config.ops_addr,
        config.node_name,
        if config.is_write_node() {
            "write_node"
        } else {
            "router_node"
        },
        config.shards,
        config.data_dir.display()
    );

    // Wait for SIGTERM/SIGINT; a disconnected channel (watcher gone) stops as well.
    let _ = stop_receiver.recv();
    shut_down(&node_state, &hooks, node, shutdown_timeout)
}

/// What one shard serves: the ops listener (shard 0 only, bound first so that an operator can
/// reach a node that is not ready), then the public listener. Returns once both stopped and the
/// node's tails were closed, so that the shard closes its log after their close frames went out.
async fn serve_shard(
    handle: EngineHandle,
    net: NetConfig,
    ops: OpsConfig,
    node_state: Arc<NodeState>,
    hooks: ShutdownHooks,
    bind_reports: flume::Sender<BindReport>,
) {
    let engine_shutdown = handle.shutdown_signal();
    let hooks = ShutdownHooks {
        close_tails: Some(engine_shutdown.clone()),
        ..hooks
    };
    let ops_listener = if handle.shard_index() == OPS_SHARD {
        match starcite_net::ops::bind(&ops) {
            Ok(listener) => {
                let _ = bind_reports.send(Ok(()));
                let service = handle.clone();
                let node_state = node_state.clone();
                let hooks = hooks.clone();
                let engine_shutdown = engine_shutdown.clone();
                let served = async move {
                    let stopped = engine_shutdown.wait();
                    let result = starcite_net::ops::serve(
                        listener, &ops, service, node_state, hooks, stopped,
                    )
                    .await;
                    if let Err(error) = result {
                        tracing::error!("ops listener stopped: {error}");
                    }
                };
                Some(glommio::spawn_local(served))
            }
            Err(error) => {
                let _ = bind_reports.send(Err(error.to_string()));
                return;
            }
        }
    } else {
        None
    };
    let net = Rc::new(net);
    match starcite_net::server::bind(&net) {
        Ok(listener) => {
            let _ = bind_reports.send(Ok(()));
            let stopped = engine_shutdown.wait();
            let served = starcite_net::server::serve_public(
                listener,
                net,
                handle.clone(),
                Some(node_state),
                hooks.clone(),
                stopped,
            );
            if let Err(error) = served.await {
                tracing::error!("public listener stopped: {error}");
            }
        }
        Err(error) => {
            let _ = bind_reports.send(Err(error.to_string()));
        }
    }
    if let Some(ops_listener) = ops_listener {
        ops_listener.await;
    }
    // Step 4 of ops.md §6: the engine's shutdown signal closes every tail with 1001.
    engine_shutdown.wait().await;
    let tails_closed_by = Instant::now() + TAIL_CLOSE_WAIT;
    while hooks.counts.tails() > 0 && Instant::now() < tails_closed_by {
        glommio::timer::sleep(SHUTDOWN_POLL_INTERVAL).await;
    }
}

/// The graceful shutdown of ops.md §6, bounded by `timeout` (the signal watcher exits the
/// process when it expires; a second signal exits at once).
fn shut_down(
    node_state: &Arc<NodeState>,
    hooks: &ShutdownHooks,
    node: NodeHandle,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + timeout;
    // The last part of the budget is kept for closing tails and flushing the logs.
    let requests_deadline = deadline - SHUTDOWN_FINAL_RESERVE.min(timeout / 4);

    // 1. Readiness turns `503 draining` at once; peers learn the mark.
    node_state.begin_shutdown();
    // 2. Hand leaderships over while requests still flow.
    let transferred = {
        let node_state = node_state.clone();
        let (done, finished) = flume::bounded::<()>(1);
        std::thread::Builder::new()
            .name("starcite-transfer".to_string())
            .spawn(move || {
                futures_lite::future::block_on(node_state.plane().transfer_leaderships());
                let _ = done.send(());
            })
            .map(|_| finished)
    };
    match transferred {
        Ok(finished) => {
            let remaining = requests_deadline.saturating_duration_since(Instant::now());
            if finished.recv_timeout(remaining).is_err() {
                tracing::warn!("leadership transfer did not finish before the shutdown deadline");
            }
        }
        Err(error) => tracing::warn!("cannot transfer leaderships: {error}"),
    }
    // 3. Stop accepting; idle connections close, in-flight requests finish.
    hooks.stop_accepting.fire();
    while hooks.counts.http_connections() > 0 && Instant::now() < requests_deadline {
        std::thread::sleep(SHUTDOWN_POLL_INTERVAL);
    }
    let unfinished = hooks.counts.http_connections();
    if unfinished > 0 {
        tracing::warn!(
            "shutdown: aborting {unfinished} connections with requests still in flight after {} ms",
            started.elapsed().as_millis()
        );
    }
    // 4–5. Tails close with 1001 `server_shutdown`; every shard flushes and closes its log.
    node.shutdown();
    let (joined_sender, joined) = flume::bounded(1);
    std::thread::Builder::new()
        .name("starcite-join".to_string())
        .spawn(move || {
            let _ = joined_sender.send(node.join());
        })
        .context("start the shutdown join thread")?;
    match joined.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(result) => result.map_err(|error| anyhow!("{error}"))?,
        Err(_) => {
            // Every acknowledged write was fsynced before its acknowledgement, so leaving now
            // loses nothing that was committed.
            tracing::warn!(
                "shutdown did not finish within {} ms, exiting",
                timeout.as_millis()
            );
            std::process::exit(0);
        }
    }
    tracing::info!("shutdown complete in {} ms", started.elapsed().as_millis());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let variables: BTreeMap<String, String> = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        match crate::config::load(&variables) {
            Ok(loaded) => loaded.config,
            Err(invalid) => panic!("{invalid}"),
        }
    }

    #[test]
    fn engine_settings_follow_the_configuration() {
        let engine = engine_config(&config(&[
            ("NODE_NAME", "n1@h1"),
            ("STARCITE_DATA_DIR", "/srv/data"),
            ("STARCITE_SHARDS", "3"),
            ("STARCITE_NUM_GROUPS", "16"),
            ("STARCITE_EVENT_STORE_MAX_SIZE", "1G"),
            ("STARCITE_ARCHIVE_FLUSH_INTERVAL_MS", "2500"),
            ("STARCITE_TEST_FAIL_FSYNC_AFTER", "5"),
        ]));
        assert_eq!(engine.node_name, "n1@h1");
        assert_eq!(engine.mode, NodeMode::WriteNode);
        assert_eq!(engine.data_dir, Path::new("/srv/data"));
        assert_eq!(engine.raft_data_dir, Path::new("/srv/data/raft"));
        assert_eq!(engine.shards, 3);
        assert!(engine.pin_shards);
        assert_eq!(engine.num_groups, 16);
        assert_eq!(engine.event_store_max_bytes, 1 << 30);
        assert_eq!(engine.archive_flush_interval_ms, 2500);
        assert_eq!(engine.wal_fault, Some(FaultPlan::fail_fdatasync(5)));
    }

    #[test]
    fn relative_data_directories_become_absolute() {
        let engine = engine_config(&config(&[]));
        assert!(engine.data_dir.is_absolute());
        assert!(engine.raft_data_dir.ends_with("data/raft"));
    }

    #[test]
    fn listener_settings_follow_the_configuration() {
        let net = net_config(&config(&[
            ("STARCITE_HTTP_ADDR", "::"),
            ("PORT", "4010"),
            ("STARCITE_METRICS_ENABLED", "false"),
            ("STARCITE_TAIL_BUFFER_EVENTS", "64"),
        ]));
        assert_eq!(
            net.http_addr,
            "::".parse::<std::net::IpAddr>().expect("address")
        );
        assert_eq!(net.port, 4010);
        assert!(!net.metrics_enabled);
        assert_eq!(net.tail_buffer_events, 64);
    }

    #[test]
    fn data_directory_is_created_or_refused() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let nested = directory.path().join("a/b");
        ensure_writable_directory(&nested).expect("created");
        assert!(nested.is_dir());
        let blocked = directory.path().join("file");
        std::fs::write(&blocked, b"").expect("write file");
        let error = ensure_writable_directory(&blocked.join("sub")).expect_err("refused");
        assert_eq!(
            error.to_string(),
            format!(
                "data directory not writable: {}",
                blocked.join("sub").display()
            )
        );
    }

    #[test]
    fn a_taken_port_is_reported() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = taken.local_addr().expect("address");
        let error = ensure_port_free(address).expect_err("in use");
        assert!(format!("{error:#}").starts_with(&format!("cannot listen on {address}: ")));
    }
}
