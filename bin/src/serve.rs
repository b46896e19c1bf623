//! `starcite serve`: configuration → engine and listener settings, data directory checks,
//! starting the shards with the public listener on each, and stopping on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use starcite_engine::api::NodeMode;
use starcite_engine::config::EngineConfig;
use starcite_engine::wal::FaultPlan;
use starcite_net::server::NetConfig;

use crate::config::Config;
use crate::signals;

/// How long startup waits for every shard to bind the public listener.
const LISTENER_BIND_TIMEOUT: Duration = Duration::from_secs(30);

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

/// The public listener's settings for `config`.
pub fn net_config(config: &Config) -> NetConfig {
    NetConfig {
        http_addr: config.http_addr,
        port: config.port,
        metrics_enabled: config.metrics_enabled,
        tail_buffer_events: config.tail_buffer_events as usize,
        auth: auth_config(&config.auth),
        tls: config.tls.as_ref().map(|files| starcite_net::tls::TlsConfig {
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
    let text = |field: fn(&crate::config::JwtSettings) -> &String| jwt.map(field).cloned().unwrap_or_default();
    starcite_net::auth::AuthConfig {
        mode: if jwt.is_some() { AuthMode::Jwt } else { AuthMode::None },
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
fn ensure_port_free(address: SocketAddr) -> anyhow::Result<()> {
    std::net::TcpListener::bind(address)
        .map(drop)
        .with_context(|| format!("cannot listen on {address}"))
}

pub fn run(config: Config) -> anyhow::Result<()> {
    if config.peer_listener_enabled() {
        // Starting the shards alone would run independent single nodes under one cluster's
        // identity, which is worse than not starting.
        return Err(anyhow!(
            "CLUSTER_NODES lists {} nodes, but this build runs single-node clusters only",
            config.cluster_nodes.len()
        ));
    }
    ensure_writable_directory(&config.data_dir)?;
    if config.raft_data_dir != config.data_dir.join("raft") {
        ensure_writable_directory(&config.raft_data_dir)?;
    }
    ensure_port_free(config.http_socket())?;
    // Before any thread exists, so that every thread inherits the blocked mask.
    signals::block_termination_signals().context("block termination signals")?;

    let (stop_sender, stop_receiver) = flume::bounded::<()>(1);
    signals::spawn_watcher(
        stop_sender,
        Duration::from_millis(config.shutdown_timeout_ms),
    )
    .context("start signal watcher")?;

    // The listeners stop when this sender is dropped (every receiver then wakes).
    let (listener_stop_sender, listener_stop) = flume::bounded::<()>(1);
    let (bind_reports, bind_results) = flume::unbounded::<Result<(), String>>();
    let net = net_config(&config);
    let serve_shard = move |handle: starcite_engine::shard::EngineHandle| {
        let net = net.clone();
        let bind_reports = bind_reports.clone();
        let listener_stop = listener_stop.clone();
        async move {
            let net = Rc::new(net);
            let listener = match starcite_net::server::bind(&net) {
                Ok(listener) => {
                    let _ = bind_reports.send(Ok(()));
                    listener
                }
                Err(error) => {
                    let _ = bind_reports.send(Err(error.to_string()));
                    return;
                }
            };
            let stopped = async move {
                let _ = listener_stop.recv_async().await;
            };
            if let Err(error) =
                starcite_net::server::serve_listener(listener, net, handle, stopped).await
            {
                tracing::error!("public listener stopped: {error}");
            }
        }
    };
    let node = starcite_engine::shard::start(engine_config(&config), serve_shard)
        .map_err(|error| anyhow!("{error}"))?;

    for _ in 0..config.shards {
        let bound = bind_results
            .recv_timeout(LISTENER_BIND_TIMEOUT)
            .map_err(|_| anyhow!("public listener did not start on {}", config.http_socket()))
            .and_then(|result| result.map_err(|error| anyhow!("{error}")));
        if let Err(error) = bound {
            drop(listener_stop_sender);
            node.shutdown();
            let _ = node.join();
            return Err(error);
        }
    }
    tracing::info!(
        "starcite {} listening on http://{} (node {}, {}, {} shards, data {})",
        env!("CARGO_PKG_VERSION"),
        config.http_socket(),
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
    drop(listener_stop_sender);
    node.shutdown();
    node.join().map_err(|error| anyhow!("{error}"))?;
    tracing::info!("shutdown complete");
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
