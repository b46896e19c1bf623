//! Running `starcite ops` against a test node, and the signals of the shutdown tests.

use std::net::SocketAddr;
use std::process::Command;

use crate::server::{starcite_binary, Server};

/// What one `starcite ops` run printed and how it exited.
#[derive(Clone, Debug)]
pub struct OpsRun {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl OpsRun {
    /// Stdout parsed as JSON (for `--output json`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }

    /// Stdout lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// Run `starcite ops <arguments>` with a clean environment plus `env`.
pub fn run_ops(arguments: &[&str], env: &[(&str, &str)]) -> OpsRun {
    let output = Command::new(starcite_binary())
        .arg("ops")
        .args(arguments)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("run starcite ops");
    OpsRun {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `http://<address>` for `--node`.
pub fn node_url(address: SocketAddr) -> String {
    format!("http://{address}")
}

impl Server {
    /// Run `starcite ops --node http://<ops_addr> <arguments>`.
    pub fn ops(&self, arguments: &[&str]) -> OpsRun {
        self.ops_with_env(arguments, &[])
    }

    /// [`Server::ops`] with extra environment variables (`STARCITE_OPS_TOKEN`).
    pub fn ops_with_env(&self, arguments: &[&str], env: &[(&str, &str)]) -> OpsRun {
        let url = node_url(self.ops_addr);
        let mut all = vec!["--node", url.as_str()];
        all.extend_from_slice(arguments);
        run_ops(&all, env)
    }

    /// A new keep-alive connection to the ops listener.
    pub fn ops_client(&self) -> crate::HttpClient {
        crate::HttpClient::connect(self.ops_addr).unwrap()
    }
}

impl OpsRun {
    /// The value of the text-output line `key=value` (`None` when there is no such line).
    pub fn value(&self, key: &str) -> Option<&str> {
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
    }
}
