//! Start, kill and restart real `starcite` processes.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::http::HttpClient;
use crate::wait_for;

/// How long a starting node may take to report ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the `starcite` binary: `$STARCITE_BIN`, else built once with `cargo build -p starcite`
/// (same profile as the tests) so that `cargo test --workspace` alone runs everything.
pub fn starcite_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap()
                .to_path_buf();
            if let Ok(path) = std::env::var("STARCITE_BIN") {
                // Relative paths are relative to the workspace, not to this crate's directory.
                return workspace.join(path);
            }
            let release = std::env::var("STARCITE_TEST_RELEASE").is_ok_and(|v| v == "1");
            let mut command = Command::new(env!("CARGO"));
            command
                .current_dir(&workspace)
                .args(["build", "-q", "-p", "starcite"]);
            // The test profile reuses the dependencies `cargo test` just compiled (and its
            // opt-level), instead of building everything a second time with the dev profile.
            command.args(["--profile", if release { "release" } else { "test" }]);
            let status = command.status().expect("run cargo build -p starcite");
            assert!(status.success(), "cargo build -p starcite failed");
            let target = std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| workspace.join("target"));
            target
                .join(if release { "release" } else { "debug" })
                .join("starcite")
        })
        .clone()
}

/// Test ports come from below Linux's ephemeral range (32768–60999): a port taken from that
/// range and released can be reused as the source port of any outgoing connection, and then a
/// node restarted on it cannot listen.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free TCP port on 127.0.0.1, never the same twice in one test process. Each process starts
/// at its own offset so that test binaries running at the same time rarely meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = TEST_PORTS.start + offset as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free test port in {TEST_PORTS:?}");
}

/// How to start a node.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Extra environment variables (`STARCITE_*`).
    pub env: BTreeMap<String, String>,
    /// Wait for `/health/ready` = 200 before returning.
    pub wait_ready: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        let mut env = BTreeMap::new();
        // Two shards exercise cross-shard routing even on a 2-core CI machine.
        env.insert("STARCITE_SHARDS".into(), "2".into());
        env.insert("STARCITE_LOG_LEVEL".into(), "warn".into());
        ServerOptions {
            env,
            wait_ready: true,
        }
    }
}

impl ServerOptions {
    /// Set one environment variable.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_string(), value.to_string());
        self
    }
}

/// A running (or stopped) `starcite serve` process with its own data dir and ports.
pub struct Server {
    /// Temporary directory holding `data/` and the log file; removed on drop.
    pub dir: tempfile::TempDir,
    /// `STARCITE_DATA_DIR`.
    pub data_dir: PathBuf,
    /// Public HTTP address.
    pub http_addr: SocketAddr,
    /// Ops listener address.
    pub ops_addr: SocketAddr,
    options: ServerOptions,
    child: Option<Child>,
    starts: u32,
}

impl Server {
    /// Start a node with default options.
    pub fn start() -> Server {
        Server::start_with(ServerOptions::default())
    }

    /// Start a node with `options`.
    pub fn start_with(options: ServerOptions) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let http_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let ops_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut server = Server {
            dir,
            data_dir,
            http_addr,
            ops_addr,
            options,
            child: None,
            starts: 0,
        };
        server.spawn();
        server
    }

    /// Path of the combined stdout/stderr log of the `n`-th start.
    pub fn log_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("starcite-{start}.log"))
    }

    /// The log of the current (latest) start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default()
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = File::create(self.log_path(self.starts)).unwrap();
        let mut command = Command::new(starcite_binary());
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("STARCITE_DATA_DIR", &self.data_dir)
            .env("STARCITE_HTTP_ADDR", self.http_addr.ip().to_string())
            .env("PORT", self.http_addr.port().to_string())
            .env("STARCITE_OPS_ADDR", self.ops_addr.to_string())
            .envs(&self.options.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(command.spawn().expect("spawn starcite"));
        if self.options.wait_ready {
            self.wait_ready();
        }
    }

    /// Wait until `/health/ready` answers 200.
    pub fn wait_ready(&mut self) {
        let addr = self.http_addr;
        wait_for("/health/ready = 200", STARTUP_TIMEOUT, || {
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "starcite exited during startup with {status}; log:\n{}",
                    self.log()
                );
            }
            let mut client = HttpClient::connect(addr).ok()?;
            let response = client.get("/health/ready").ok()?;
            (response.status == 200).then_some(())
        });
    }

    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// A new keep-alive connection to the public listener.
    pub fn client(&self) -> HttpClient {
        HttpClient::connect(self.http_addr).unwrap()
    }

    /// Process id of the running node.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// `kill -9` the node and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same data dir and ports without waiting for readiness (a drained
    /// node never becomes ready); waits until `/health/live` answers.
    pub fn restart_live(&mut self) {
        self.kill9();
        let wait_ready = std::mem::replace(&mut self.options.wait_ready, false);
        self.spawn();
        self.options.wait_ready = wait_ready;
        self.wait_live();
    }

    /// Wait until `/health/live` answers 200 on the public listener.
    pub fn wait_live(&mut self) {
        let addr = self.http_addr;
        wait_for("/health/live = 200", STARTUP_TIMEOUT, || {
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "starcite exited during startup with {status}; log:\n{}",
                    self.log()
                );
            }
            let mut client = HttpClient::connect(addr).ok()?;
            let response = client.get("/health/live").ok()?;
            (response.status == 200).then_some(())
        });
    }

    /// Send `signal` to the node without waiting.
    pub fn signal(&self, signal: i32) {
        if let Some(child) = self.child.as_ref() {
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
        }
    }

    /// The exit status if the node exited within `timeout` (it is reaped then).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                self.child = None;
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        child.wait().ok()
    }

    /// Change (or with `None` remove) an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(value) => self.options.env.insert(key.to_string(), value.to_string()),
            None => self.options.env.remove(key),
        };
    }

    /// Start again on the same data dir and ports (after `kill9` or `terminate`).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Resident set size of the process in bytes (from /proc).
    pub fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or(0)
    }

    /// Create a session with `id` and the default creator; panics unless 201.
    pub fn create_session(&self, id: &str) {
        let body = serde_json::json!({"id": id, "creator_principal": crate::creator()});
        let response = self.client().post_json("/v1/sessions", &body).unwrap();
        assert_eq!(response.status, 201, "create {id}: {}", response.text());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "--- starcite log (start {}) ---\n{}",
                self.starts,
                self.log()
            );
        }
    }
}
