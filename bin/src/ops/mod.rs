//! `starcite ops`: the operator CLI of ops.md §5 against a node's ops API.
//!
//! - [`arguments`]: command line → [`arguments::Invocation`] (usage errors exit 2 without
//!   contacting the API).
//! - [`client`]: a blocking one-request HTTP/1.1 client.
//! - [`render`]: the text form of the API's answers.
//!
//! Success output goes to stdout, failure text to stderr. Exit codes: 0 success, 1 failure or
//! timeout (unreachable node, any error answer), 2 usage error.

pub mod arguments;
pub mod client;
pub mod render;

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use arguments::{GroupTarget, Invocation, OpsCommand, OutputFormat, Parsed, UsageError, USAGE};
use client::{ApiResponse, OpsTarget};

/// Exit code of a failure or timeout.
const EXIT_FAILURE: u8 = 1;
/// Exit code of a usage error.
const EXIT_USAGE: u8 = 2;
/// `--node` when neither it nor `STARCITE_OPS_ADDR` is given.
const DEFAULT_OPS_ADDR: &str = "127.0.0.1:4001";
/// HTTP timeout of the commands that do not wait (drain includes the leadership hand-off).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The wait commands' HTTP timeout is the wait time plus this.
const WAIT_REQUEST_GRACE: Duration = Duration::from_secs(5);
/// Pause between attempts of a wait command to reach an ops listener that is not up yet.
const WAIT_CONNECT_RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// What a command prints and how it exits.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Lines for stdout.
    pub stdout: Vec<String>,
    /// Lines for stderr.
    pub stderr: Vec<String>,
    /// 0, 1 or 2.
    pub exit: u8,
}

impl Outcome {
    fn success(lines: Vec<String>) -> Outcome {
        Outcome {
            stdout: lines,
            ..Outcome::default()
        }
    }

    fn failure(line: String) -> Outcome {
        Outcome {
            stderr: vec![line],
            exit: EXIT_FAILURE,
            ..Outcome::default()
        }
    }
}

/// Run `starcite ops` with the arguments after `ops`.
pub fn run(arguments: &[String]) -> ExitCode {
    let outcome = match arguments::parse(arguments) {
        Ok(Parsed::Help) => Outcome::success(vec![USAGE.trim_end().to_owned()]),
        Ok(Parsed::Run(invocation)) => execute(&invocation, token_from_environment()),
        Err(error) => usage_failure(&error),
    };
    // A closed pipe (`| head`) is not worth a panic; the exit code still tells the outcome.
    let mut stdout = std::io::stdout().lock();
    for line in &outcome.stdout {
        let _ = writeln!(stdout, "{line}");
    }
    let mut stderr = std::io::stderr().lock();
    for line in &outcome.stderr {
        let _ = writeln!(stderr, "{line}");
    }
    ExitCode::from(outcome.exit)
}

fn usage_failure(error: &UsageError) -> Outcome {
    let UsageError(message) = error;
    // Argument errors print their own line only, so that scripts can match it; a missing or
    // unknown command also gets the list of commands.
    let mut stderr = vec![message.clone()];
    if message == "missing command" || message.starts_with("unknown command") {
        stderr.push(String::new());
        stderr.push(USAGE.trim_end().to_owned());
    }
    Outcome {
        stderr,
        exit: EXIT_USAGE,
        ..Outcome::default()
    }
}

/// `STARCITE_OPS_TOKEN`, trimmed; empty counts as unset.
fn token_from_environment() -> Option<String> {
    std::env::var("STARCITE_OPS_TOKEN")
        .ok()
        .map(|token| token.trim().to_owned())
        .filter(|token| !token.is_empty())
}

/// `http://<STARCITE_OPS_ADDR>`, i.e. `http://127.0.0.1:4001` when the variable is unset.
fn default_node_url() -> String {
    let address = std::env::var("STARCITE_OPS_ADDR")
        .ok()
        .map(|address| address.trim().to_owned())
        .filter(|address| !address.is_empty())
        .unwrap_or_else(|| DEFAULT_OPS_ADDR.to_owned());
    format!("http://{address}")
}

/// Run one invocation against its node.
pub fn execute(invocation: &Invocation, token: Option<String>) -> Outcome {
    let url = invocation.node.clone().unwrap_or_else(default_node_url);
    let target = match OpsTarget::parse(&url) {
        Ok(target) => target,
        Err(error) => return usage_failure(&UsageError(error.to_string())),
    };
    let api = Api {
        target,
        token,
        output: invocation.output,
    };
    match &invocation.command {
        OpsCommand::Status => api.get("/ops/status", REQUEST_TIMEOUT, |body| {
            Some(render::status_lines(body.as_object()?))
        }),
        OpsCommand::ReadyNodes => api.get("/ops/ready-nodes", REQUEST_TIMEOUT, |body| {
            Some(vec![format!(
                "ready_nodes={}",
                render::leaf_text(body.get("ready_nodes")?)
            )])
        }),
        OpsCommand::Drain(node) => api.set_drain(node.as_deref(), true),
        OpsCommand::Undrain(node) => api.set_drain(node.as_deref(), false),
        OpsCommand::WaitDrained { timeout_ms } => api.wait("local_drained", *timeout_ms),
        OpsCommand::WaitReady { timeout_ms } => api.wait("local_ready", *timeout_ms),
        OpsCommand::GroupReplicas(target) => api.group_replicas(target),
    }
}

/// One node's ops API as the CLI talks to it.
struct Api {
    target: OpsTarget,
    token: Option<String>,
    output: OutputFormat,
}

/// Text shaping of a successful answer; `None` when the body lacks what it needs.
type Shape<'a> = &'a dyn Fn(&Value) -> Option<Vec<String>>;

impl Api {
    fn call(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<ApiResponse, Outcome> {
        client::request(
            &self.target,
            method,
            path_and_query,
            body,
            self.token.as_deref(),
            timeout,
        )
        .map_err(|error| {
            Outcome::failure(format!(
                "cannot reach ops API at {}: {error}",
                self.target.url
            ))
        })
    }

    fn get(
        &self,
        path_and_query: &str,
        timeout: Duration,
        shape: impl Fn(&Value) -> Option<Vec<String>>,
    ) -> Outcome {
        match self.call("GET", path_and_query, None, timeout) {
            Ok(response) => self.answer(&response, &shape, &|_| None),
            Err(outcome) => outcome,
        }
    }

    /// Print an answer: the body as it came with `--output json`, else `shape` for a success and
    /// `explain` (falling back to the generic line) for an error.
    fn answer(
        &self,
        response: &ApiResponse,
        shape: Shape<'_>,
        explain: &dyn Fn(&ErrorAnswer) -> Option<String>,
    ) -> Outcome {
        let success = (200..300).contains(&response.status);
        if self.output == OutputFormat::Json {
            let body = String::from_utf8_lossy(&response.body)
                .trim_end()
                .to_owned();
            return Outcome {
                stdout: vec![body],
                exit: if success { 0 } else { EXIT_FAILURE },
                ..Outcome::default()
            };
        }
        let body: Option<Value> = serde_json::from_slice(&response.body).ok();
        if success {
            return match body.as_ref().and_then(shape) {
                Some(lines) => Outcome::success(lines),
                None => Outcome::failure(format!(
                    "unexpected answer of the ops API at {}: {}",
                    self.target.url,
                    String::from_utf8_lossy(&response.body)
                )),
            };
        }
        let error = ErrorAnswer::new(response.status, body.as_ref(), &response.body);
        Outcome::failure(explain(&error).unwrap_or_else(|| error.generic_line()))
    }

    fn set_drain(&self, node: Option<&str>, draining: bool) -> Outcome {
        let body = match node {
            Some(node) => json!({ "node": node }),
            None => json!({}),
        };
        let path = if draining {
            "/ops/drain"
        } else {
            "/ops/undrain"
        };
        let response = match self.call(
            "POST",
            path,
            Some(body.to_string().as_bytes()),
            REQUEST_TIMEOUT,
        ) {
            Ok(response) => response,
            Err(outcome) => return outcome,
        };
        let marked = if draining { "draining" } else { "ready" };
        let shape = |body: &Value| {
            let node = body.get("node")?.as_str()?;
            Some(vec![format!("node {node} marked {marked}")])
        };
        let explain = |error: &ErrorAnswer| {
            (error.code == "invalid_write_node").then(|| self.unknown_node(node))?
        };
        self.answer(&response, &shape, &explain)
    }

    /// `unknown node "<x>" (known nodes: <a>, <b>)`, with the known nodes from `/ops/status`.
    fn unknown_node(&self, node: Option<&str>) -> Option<String> {
        let response = self
            .call("GET", "/ops/status", None, REQUEST_TIMEOUT)
            .ok()?;
        let status: Value = serde_json::from_slice(&response.body).ok()?;
        let known: Vec<&str> = status
            .get("write_nodes")?
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let node = node.or_else(|| status.get("node")?.as_str())?;
        Some(format!(
            "unknown node \"{node}\" (known nodes: {})",
            known.join(", ")
        ))
    }

    fn wait(&self, condition: &str, timeout_ms: u64) -> Outcome {
        let endpoint = condition.replace("local_", "wait-");
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        // A node that is starting has no ops listener yet: the wait covers that too, so that
        // `wait-ready` can follow the start command at once.
        let mut remaining_ms = timeout_ms;
        let response = loop {
            let path = format!("/ops/{endpoint}?timeout_ms={remaining_ms}");
            let timeout = Duration::from_millis(remaining_ms).saturating_add(WAIT_REQUEST_GRACE);
            match self.call("GET", &path, None, timeout) {
                Ok(response) => break response,
                Err(_) if Instant::now() + WAIT_CONNECT_RETRY_INTERVAL < deadline => {
                    std::thread::sleep(WAIT_CONNECT_RETRY_INTERVAL);
                    let left_ms = deadline
                        .saturating_duration_since(Instant::now())
                        .as_millis();
                    remaining_ms = u64::try_from(left_ms).unwrap_or(timeout_ms).max(1);
                }
                Err(outcome) => return outcome,
            }
        };
        let shape = |body: &Value| {
            let reached = body.get(condition)?.as_bool()?;
            Some(vec![format!("{condition}={reached}")])
        };
        let explain = |error: &ErrorAnswer| {
            (error.status == 504 && error.code == "timeout")
                .then(|| format!("timeout waiting for {condition} after {timeout_ms}ms"))
        };
        self.answer(&response, &shape, &explain)
    }

    fn group_replicas(&self, target: &GroupTarget) -> Outcome {
        let path = match target {
            GroupTarget::Group(group) => format!("/ops/group-replicas/{group}"),
            GroupTarget::Session(session_id) => format!(
                "/ops/group-replicas?session_id={}",
                percent_encode(session_id)
            ),
        };
        let response = match self.call("GET", &path, None, REQUEST_TIMEOUT) {
            Ok(response) => response,
            Err(outcome) => return outcome,
        };
        let shape = |body: &Value| group_lines(body.as_object()?);
        let explain = |error: &ErrorAnswer| match target {
            GroupTarget::Group(group) if error.code == "invalid_group_id" => Some(format!(
                "invalid group id \"{group}\" (expected configured group range)"
            )),
            _ => None,
        };
        self.answer(&response, &shape, &explain)
    }
}

/// `session_<id>_group=<g>` (by session), `group_<g>_replicas=…`, `group_<g>_leader=…`.
fn group_lines(body: &Map<String, Value>) -> Option<Vec<String>> {
    let group_id = body.get("group_id")?.as_u64()?;
    let mut lines = Vec::new();
    if let Some(session_id) = body.get("session_id").and_then(Value::as_str) {
        lines.push(format!("session_{session_id}_group={group_id}"));
    }
    lines.push(format!(
        "group_{group_id}_replicas={}",
        render::leaf_text(body.get("replicas")?)
    ));
    lines.push(format!(
        "group_{group_id}_leader={}",
        render::leaf_text(body.get("leader").unwrap_or(&Value::Null))
    ));
    Some(lines)
}

/// An error answer of the API.
struct ErrorAnswer {
    status: u16,
    code: String,
    message: Option<String>,
    raw: String,
}

impl ErrorAnswer {
    fn new(status: u16, body: Option<&Value>, raw: &[u8]) -> ErrorAnswer {
        let text = |key: &str| {
            body.and_then(|body| body.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        ErrorAnswer {
            status,
            code: text("error").unwrap_or_default(),
            message: text("message"),
            raw: String::from_utf8_lossy(raw).trim().to_owned(),
        }
    }

    /// `ops API error <status>: <error> (<message>)`.
    fn generic_line(&self) -> String {
        match (&self.code, &self.message) {
            (code, Some(message)) if !code.is_empty() => {
                format!("ops API error {}: {code} ({message})", self.status)
            }
            (code, None) if !code.is_empty() => format!("ops API error {}: {code}", self.status),
            _ => format!("ops API error {}: {}", self.status, self.raw),
        }
    }
}

/// Percent-encode everything but unreserved characters (RFC 3986), for a query value.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation(node: &str, command: OpsCommand) -> Invocation {
        Invocation {
            node: Some(node.to_owned()),
            output: OutputFormat::Text,
            command,
        }
    }

    #[test]
    fn usage_errors_exit_2_without_contacting_the_api() {
        let arguments: Vec<String> = ["wait-ready", "0"].map(str::to_owned).to_vec();
        let Err(error) = arguments::parse(&arguments) else {
            panic!("usage error expected");
        };
        let outcome = usage_failure(&error);
        assert_eq!(outcome.exit, EXIT_USAGE);
        assert_eq!(
            outcome.stderr,
            ["invalid timeout \"0\" (expected positive integer ms)"]
        );
        let Err(error) = arguments::parse(&["bogus".to_owned()]) else {
            panic!("usage error expected");
        };
        let outcome = usage_failure(&error);
        assert_eq!(outcome.exit, EXIT_USAGE);
        assert!(outcome.stderr.join("\n").contains("group-replicas"));
        let outcome = execute(&invocation("https://h:1", OpsCommand::Status), None);
        assert_eq!(outcome.exit, EXIT_USAGE);
    }

    #[test]
    fn an_unreachable_node_exits_1() {
        let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = unused.local_addr().expect("address");
        drop(unused);
        let url = format!("http://{address}");
        let outcome = execute(&invocation(&url, OpsCommand::ReadyNodes), None);
        assert_eq!(outcome.exit, EXIT_FAILURE);
        assert!(
            outcome.stderr[0].starts_with(&format!("cannot reach ops API at {url}: ")),
            "{:?}",
            outcome.stderr
        );
    }

    #[test]
    fn error_lines() {
        let body = json!({"error": "unauthorized", "message": "Unauthorized"});
        let error = ErrorAnswer::new(401, Some(&body), b"");
        assert_eq!(
            error.generic_line(),
            "ops API error 401: unauthorized (Unauthorized)"
        );
        let body = json!({"error": "not_found"});
        let error = ErrorAnswer::new(404, Some(&body), b"");
        assert_eq!(error.generic_line(), "ops API error 404: not_found");
        let error = ErrorAnswer::new(502, None, b"bad gateway\n");
        assert_eq!(error.generic_line(), "ops API error 502: bad gateway");
    }

    #[test]
    fn group_output() {
        let body =
            json!({"group_id": 3, "replicas": ["a@a", "b@b"], "leader": null, "session_id": "s 1"});
        assert_eq!(
            group_lines(body.as_object().expect("object")),
            Some(vec![
                "session_s 1_group=3".to_owned(),
                "group_3_replicas=a@a,b@b".to_owned(),
                "group_3_leader=".to_owned(),
            ])
        );
        assert_eq!(percent_encode("a b/ü"), "a%20b%2F%C3%BC");
    }
}
