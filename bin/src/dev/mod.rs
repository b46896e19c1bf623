//! `starcite dev`: a local cluster of `--nodes` write nodes and `--routers` router nodes, each a
//! child process of this binary running `starcite serve` on loopback.
//!
//! Node `i` (0-based, write nodes first) listens on HTTP `base + i`, ops `base + 100 + i` and
//! peer `base + 200 + i`, keeps its data in `<data-dir>/<name>/`, and its output is printed with
//! a `[name]` prefix. Every node shares `<data-dir>/archive` as its local archive. The
//! environment of `starcite dev` reaches every node, except the variables set here. SIGINT or
//! SIGTERM stops every node (SIGTERM, then SIGKILL after [`CHILD_STOP_TIMEOUT`]); when any node
//! exits on its own, the others are stopped too.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Args;

/// How long the nodes get to shut down gracefully before they are killed.
pub const CHILD_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the launcher checks for signals and exited nodes.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Offset of the ops ports from the HTTP ports.
const OPS_PORT_OFFSET: u16 = 100;
/// Offset of the peer ports from the HTTP ports.
const PEER_PORT_OFFSET: u16 = 200;
/// Largest replication factor the launcher sets when `STARCITE_WRITE_REPLICATION_FACTOR` is unset.
const REPLICATION_FACTOR_DEFAULT: usize = 3;

/// Arguments of `starcite dev`.
#[derive(Args, Debug, Clone)]
pub struct DevArgs {
    /// Number of write nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Number of router nodes.
    #[arg(long, default_value_t = 0)]
    pub routers: u16,
    /// HTTP port of the first node; ops ports start at base + 100, peer ports at base + 200.
    #[arg(long, default_value_t = 4000)]
    pub base_port: u16,
    /// Directory holding every node's data directory.
    #[arg(long, default_value = "./starcite-dev")]
    pub data_dir: PathBuf,
}

/// One node to start.
struct NodePlan {
    name: String,
    http_port: u16,
    ops_port: u16,
    peer_port: u16,
}

fn plan(arguments: &DevArgs) -> anyhow::Result<Vec<NodePlan>> {
    if arguments.nodes == 0 {
        return Err(anyhow!("--nodes must be at least 1"));
    }
    let total = arguments.nodes + arguments.routers;
    if total > OPS_PORT_OFFSET {
        return Err(anyhow!("at most {OPS_PORT_OFFSET} nodes"));
    }
    let last_port = u32::from(arguments.base_port) + u32::from(PEER_PORT_OFFSET) + u32::from(total);
    if last_port > u32::from(u16::MAX) {
        return Err(anyhow!(
            "--base-port {} leaves no room for {total} nodes",
            arguments.base_port
        ));
    }
    Ok((0..total)
        .map(|index| {
            let name = if index < arguments.nodes {
                format!("node{}@127.0.0.1", index + 1)
            } else {
                format!("router{}@127.0.0.1", index - arguments.nodes + 1)
            };
            let http_port = arguments.base_port + index;
            NodePlan {
                name,
                http_port,
                ops_port: http_port + OPS_PORT_OFFSET,
                peer_port: http_port + PEER_PORT_OFFSET,
            }
        })
        .collect())
}

/// Runs the launcher until a signal or a node exit; returns the exit code.
pub fn run(arguments: DevArgs) -> ExitCode {
    match launch(&arguments) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("starcite dev: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn launch(arguments: &DevArgs) -> anyhow::Result<()> {
    let nodes = plan(arguments)?;
    let binary = std::env::current_exe().context("locate the starcite binary")?;
    std::fs::create_dir_all(&arguments.data_dir)
        .with_context(|| format!("create {}", arguments.data_dir.display()))?;
    let data_dir = std::path::absolute(&arguments.data_dir).unwrap_or(arguments.data_dir.clone());
    let cluster_nodes = nodes
        .iter()
        .map(|node| format!("{}:{}", node.name, node.peer_port))
        .collect::<Vec<_>>()
        .join(",");
    let write_nodes = nodes[..usize::from(arguments.nodes)]
        .iter()
        .map(|node| node.name.clone())
        .collect::<Vec<_>>()
        .join(",");
    let replication_factor =
        std::env::var("STARCITE_WRITE_REPLICATION_FACTOR").unwrap_or_else(|_| {
            usize::from(arguments.nodes)
                .min(REPLICATION_FACTOR_DEFAULT)
                .to_string()
        });
    // Blocked before any child exists so that the signal reaches this process's `sigtimedwait`;
    // children inherit the mask, and `starcite serve` waits for its signals the same way.
    crate::signals::block_termination_signals().context("block termination signals")?;

    let mut children: Vec<(String, Child)> = Vec::new();
    for node in &nodes {
        let mut command = Command::new(&binary);
        command
            .arg("serve")
            .env("NODE_NAME", &node.name)
            .env("STARCITE_HTTP_ADDR", "127.0.0.1")
            .env("PORT", node.http_port.to_string())
            .env("STARCITE_OPS_ADDR", format!("127.0.0.1:{}", node.ops_port))
            .env("STARCITE_DATA_DIR", data_dir.join(&node.name))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if nodes.len() > 1 {
            command
                .env("CLUSTER_NODES", &cluster_nodes)
                .env("STARCITE_WRITE_NODE_IDS", &write_nodes)
                .env("STARCITE_WRITE_REPLICATION_FACTOR", &replication_factor)
                .env("STARCITE_PEER_PORT", node.peer_port.to_string())
                .env("STARCITE_PEER_BIND_ADDR", "127.0.0.1")
                .env("STARCITE_ARCHIVE_LOCAL_SHARED", "true")
                .env("STARCITE_ARCHIVE_LOCAL_DIR", data_dir.join("archive"));
        }
        match command.spawn() {
            Ok(mut child) => {
                forward_output(&node.name, child.stdout.take());
                forward_output(&node.name, child.stderr.take());
                children.push((node.name.clone(), child));
            }
            Err(error) => {
                stop_all(&mut children);
                return Err(anyhow!("start {}: {error}", node.name));
            }
        }
    }
    for node in &nodes {
        println!(
            "{}: http://127.0.0.1:{} (ops http://127.0.0.1:{}, peer 127.0.0.1:{})",
            node.name, node.http_port, node.ops_port, node.peer_port
        );
    }
    println!("press Ctrl-C to stop the cluster");
    loop {
        if let Some(signal) = wait_for_signal(POLL_INTERVAL) {
            eprintln!("starcite dev: signal {signal}, stopping every node");
            break;
        }
        let exited = children
            .iter_mut()
            .find_map(|(name, child)| match child.try_wait() {
                Ok(Some(status)) => Some(format!("{name} exited with {status}")),
                _ => None,
            });
        if let Some(exited) = exited {
            eprintln!("starcite dev: {exited}, stopping every node");
            break;
        }
    }
    stop_all(&mut children);
    Ok(())
}

/// Prints every line of `stream` with a `[name]` prefix, on its own thread.
fn forward_output(name: &str, stream: Option<impl Read + Send + 'static>) {
    let Some(stream) = stream else { return };
    let prefix = format!("[{}]", name.split('@').next().unwrap_or(name));
    let spawned = std::thread::Builder::new()
        .name(format!("dev-log-{name}"))
        .spawn(move || {
            for line in BufReader::new(stream).lines() {
                match line {
                    Ok(line) => println!("{prefix} {line}"),
                    Err(_) => return,
                }
            }
        });
    if let Err(error) = spawned {
        eprintln!("starcite dev: cannot forward the output of {name}: {error}");
    }
}

/// Waits up to `timeout` for SIGINT or SIGTERM (blocked by `block_termination_signals`).
fn wait_for_signal(timeout: Duration) -> Option<i32> {
    // SAFETY: the set is initialised by `sigemptyset` before use and outlives the calls.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let limit = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        let signal = libc::sigtimedwait(&set, std::ptr::null_mut(), &limit);
        (signal > 0).then_some(signal)
    }
}

/// SIGTERM to every node, then SIGKILL to those still running after [`CHILD_STOP_TIMEOUT`].
fn stop_all(children: &mut [(String, Child)]) {
    for (_, child) in children.iter() {
        // SAFETY: plain kill(2) on a child this process started and has not reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + CHILD_STOP_TIMEOUT;
    for (name, child) in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!("starcite dev: {name} did not stop in time, killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_names_follow_the_base_port() {
        let arguments = DevArgs {
            nodes: 3,
            routers: 1,
            base_port: 5000,
            data_dir: PathBuf::from("d"),
        };
        let nodes = plan(&arguments).expect("plan");
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0].name, "node1@127.0.0.1");
        assert_eq!(nodes[3].name, "router1@127.0.0.1");
        assert_eq!(
            (nodes[3].http_port, nodes[3].ops_port, nodes[3].peer_port),
            (5003, 5103, 5203)
        );
        let too_high = DevArgs {
            base_port: 65_500,
            ..arguments
        };
        assert!(plan(&too_high).is_err());
    }
}
