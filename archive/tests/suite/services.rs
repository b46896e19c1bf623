//! Helpers that start real services for the tests: free ports, binary lookup, and cleanup when the
//! test process exits (statics are never dropped, so services shared by a test binary are stopped from
//! an `atexit` hook).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

type Cleanup = Box<dyn FnOnce() + Send>;

static CLEANUPS: Mutex<Vec<Cleanup>> = Mutex::new(Vec::new());
static REGISTER_HOOK: Once = Once::new();

extern "C" fn run_cleanups() {
    let cleanups = match CLEANUPS.lock() {
        Ok(mut cleanups) => std::mem::take(&mut *cleanups),
        Err(_) => return,
    };
    for cleanup in cleanups.into_iter().rev() {
        // A panic must not cross the C boundary; a failed cleanup only leaves a process or directory.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(cleanup));
    }
}

/// Runs `cleanup` when the test process exits (after all tests, pass or fail).
pub fn at_exit(cleanup: impl FnOnce() + Send + 'static) {
    REGISTER_HOOK.call_once(|| {
        // SAFETY: `run_cleanups` is a plain function without arguments, as atexit requires.
        let status = unsafe { libc::atexit(run_cleanups) };
        assert_eq!(status, 0, "atexit registration failed");
    });
    CLEANUPS.lock().unwrap().push(Box::new(cleanup));
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// Waits until something accepts TCP connections on `port`, or panics with `describe_failure()`.
pub fn wait_for_port(
    port: u16,
    timeout: Duration,
    mut still_starting: impl FnMut() -> Result<(), String>,
) {
    let deadline = Instant::now() + timeout;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Err(reason) = still_starting() {
            panic!("service on port {port} did not start: {reason}");
        }
        assert!(
            Instant::now() < deadline,
            "service on port {port} did not listen within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Finds an executable by name in `PATH`, then in `extra_directories`.
pub fn find_binary(name: &str, extra_directories: &[PathBuf]) -> Option<PathBuf> {
    let path_directories = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    path_directories
        .iter()
        .chain(extra_directories)
        .map(|directory| directory.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// A fresh directory that outlives the value (removed by an [`at_exit`] cleanup).
pub fn persistent_temp_dir(prefix: &str) -> PathBuf {
    let directory = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temp dir")
        .keep();
    let removed = directory.clone();
    at_exit(move || {
        let _ = std::fs::remove_dir_all(&removed);
    });
    directory
}

/// Runs a command to completion and panics with its output when it fails.
pub fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}:\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// What to install when the PostgreSQL server binaries are missing.
pub const POSTGRES_INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, pg_ctl) were not \
found in PATH or /usr/lib/postgresql/*/bin: run scripts/install-test-services (or `apt-get install \
-y postgresql`)";

/// `initdb` and `pg_ctl`: from `PATH`, else the newest Debian installation (by numeric version,
/// so that 15 beats 9).
pub fn postgres_binaries() -> (PathBuf, PathBuf) {
    let mut debian_directories: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    debian_directories.sort_by_key(|path| {
        let version = path
            .parent()
            .and_then(|version| version.file_name())
            .and_then(|name| name.to_string_lossy().parse::<u32>().ok())
            .unwrap_or(0);
        std::cmp::Reverse(version)
    });
    let initdb = find_binary("initdb", &debian_directories)
        .unwrap_or_else(|| panic!("{POSTGRES_INSTALL_HINT}"));
    let pg_ctl = initdb.with_file_name("pg_ctl");
    assert!(
        pg_ctl.exists(),
        "{POSTGRES_INSTALL_HINT} ({} has no pg_ctl beside it)",
        initdb.display()
    );
    (initdb, pg_ctl)
}

/// A command run as user `postgres` when this process is root (the server refuses to run as
/// root).
pub fn as_postgres_user(binary: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(binary);
        command
    } else {
        Command::new(binary)
    }
}

/// A PostgreSQL server (trust auth, user `postgres`) on a loopback port in its own directory,
/// which a test can stop and start again on the same port and data. It is stopped when the test
/// process exits.
#[derive(Clone, Debug)]
pub struct PostgresServer {
    pg_ctl: PathBuf,
    root: PathBuf,
    data: PathBuf,
    /// The loopback port it listens on.
    pub port: u16,
}

impl PostgresServer {
    /// Initialise a new cluster in a directory named with `temp_prefix` and start it.
    pub fn start(temp_prefix: &str) -> PostgresServer {
        let (initdb, pg_ctl) = postgres_binaries();
        let root = persistent_temp_dir(temp_prefix);
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&root));
        }
        let data = root.join("data");
        run(as_postgres_user(&initdb).arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]));
        let server = PostgresServer {
            pg_ctl,
            root,
            data,
            port: free_port(),
        };
        server.resume();
        let stopped = server.clone();
        at_exit(move || stopped.stop());
        server
    }

    /// Start the server (again, after [`PostgresServer::stop`]) and wait until it accepts
    /// connections.
    pub fn resume(&self) {
        let server_options = format!("-p {} -h 127.0.0.1 -k {}", self.port, self.root.display());
        run(as_postgres_user(&self.pg_ctl)
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.root.join("server.log"))
            .args(["-w", "-t", "60", "-o", &server_options, "start"]));
    }

    /// Stop the server at once (`-m immediate`: open connections are cut, like a crash).
    pub fn stop(&self) {
        let _ = as_postgres_user(&self.pg_ctl)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Start a fresh PostgreSQL server (trust auth, user `postgres`) on a free loopback port in a
/// new directory named with `temp_prefix`; it is stopped when the test process exits. Returns
/// the port.
pub fn start_postgres(temp_prefix: &str) -> u16 {
    PostgresServer::start(temp_prefix).port
}
