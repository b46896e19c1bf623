//! The routes of the ops listener (ops.md §4): `/ops/*` behind the optional bearer token, plus
//! `/health/live`, `/health/ready` and `/metrics` without it.
//!
//! Check order, following http-api.md §1.1 where it applies: route (`404 not_found`), body size
//! (`413`), token (`401 unauthorized`), content type (`415`), body parse (`400 invalid_json`),
//! then the route's own checks.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
use serde::Serialize;
use serde_json::{json, Map, Value};
use starcite_engine::api::{Service, ServiceError};
use starcite_engine::placement;

use super::control::ControlError;
use super::node::{GroupReplicas, NodeState};
use crate::auth::bearer::bearer_from_header;
use crate::error::{
    ApiError, FixedError, INVALID_GROUP_ID, INVALID_SESSION_ID, INVALID_TIMEOUT,
    INVALID_WRITE_NODE, NOT_FOUND, PAYLOAD_TOO_LARGE, UNAUTHORIZED, UNSUPPORTED_MEDIA_TYPE,
};
use crate::http::response::ROUTE_UNMATCHED;
use crate::http::{Body, Handler, Reply, Request, RequestHead, Response};
use crate::query::{decode_path_segment, parse_query};
use crate::routes::{body_format, decode_body, system};

/// `timeout_ms` of the wait endpoints when the query has none.
pub const WAIT_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// How often the wait endpoints re-check their condition.
pub const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A matched ops-listener route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpsRoute {
    /// `GET /health/live`.
    HealthLive,
    /// `GET /health/ready`.
    HealthReady,
    /// `GET /metrics`.
    Metrics,
    /// `GET /ops/status`.
    Status,
    /// `GET /ops/ready-nodes`.
    ReadyNodes,
    /// `POST /ops/drain`.
    Drain,
    /// `POST /ops/undrain`.
    Undrain,
    /// `GET /ops/wait-drained`.
    WaitDrained,
    /// `GET /ops/wait-ready`.
    WaitReady,
    /// `GET /ops/group-replicas/:group_id` with the decoded segment.
    GroupReplicas(String),
    /// `GET /ops/group-replicas?session_id=X`.
    SessionReplicas,
}

impl OpsRoute {
    /// The route template (metrics label).
    pub fn template(&self) -> &'static str {
        match self {
            OpsRoute::HealthLive => "/health/live",
            OpsRoute::HealthReady => "/health/ready",
            OpsRoute::Metrics => "/metrics",
            OpsRoute::Status => "/ops/status",
            OpsRoute::ReadyNodes => "/ops/ready-nodes",
            OpsRoute::Drain => "/ops/drain",
            OpsRoute::Undrain => "/ops/undrain",
            OpsRoute::WaitDrained => "/ops/wait-drained",
            OpsRoute::WaitReady => "/ops/wait-ready",
            OpsRoute::GroupReplicas(_) => "/ops/group-replicas/:group_id",
            OpsRoute::SessionReplicas => "/ops/group-replicas",
        }
    }

    /// Routes under `/ops/` need the token when one is configured.
    fn needs_token(&self) -> bool {
        !matches!(
            self,
            OpsRoute::HealthLive | OpsRoute::HealthReady | OpsRoute::Metrics
        )
    }

    fn reads_body(&self) -> bool {
        matches!(self, OpsRoute::Drain | OpsRoute::Undrain)
    }
}

/// Match method and raw path; HEAD matches every GET route. Anything else is `404`.
pub fn match_ops_route(method: &str, raw_path: &str, metrics_enabled: bool) -> Option<OpsRoute> {
    let is_get = method == "GET" || method == "HEAD";
    let is_post = method == "POST";
    let segments: Vec<&str> = raw_path.strip_prefix('/')?.split('/').collect();
    match segments.as_slice() {
        ["health", "live"] if is_get => Some(OpsRoute::HealthLive),
        ["health", "ready"] if is_get => Some(OpsRoute::HealthReady),
        ["metrics"] if is_get && metrics_enabled => Some(OpsRoute::Metrics),
        ["ops", "status"] if is_get => Some(OpsRoute::Status),
        ["ops", "ready-nodes"] if is_get => Some(OpsRoute::ReadyNodes),
        ["ops", "drain"] if is_post => Some(OpsRoute::Drain),
        ["ops", "undrain"] if is_post => Some(OpsRoute::Undrain),
        ["ops", "wait-drained"] if is_get => Some(OpsRoute::WaitDrained),
        ["ops", "wait-ready"] if is_get => Some(OpsRoute::WaitReady),
        ["ops", "group-replicas"] if is_get => Some(OpsRoute::SessionReplicas),
        ["ops", "group-replicas", raw] if is_get => {
            decode_path_segment(raw).map(OpsRoute::GroupReplicas)
        }
        _ => None,
    }
}

/// `timeout_ms` of the wait endpoints: absent → default; otherwise ASCII digits only with a
/// value of at least 1.
pub fn parse_timeout_ms(query: &Map<String, Value>) -> Result<u64, FixedError> {
    match query.get("timeout_ms") {
        None => Ok(WAIT_TIMEOUT_MS_DEFAULT),
        Some(Value::String(text)) => positive_integer(text).ok_or(INVALID_TIMEOUT),
        Some(_) => Err(INVALID_TIMEOUT),
    }
}

/// ASCII digits with a value ≥ 1 that fits `u64`.
pub fn positive_integer(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>().ok().filter(|value| *value >= 1)
}

/// A path group id: decimal after trimming whitespace, below `num_groups`.
pub fn parse_group_id(raw: &str, num_groups: u32) -> Result<u32, FixedError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || !trimmed.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(INVALID_GROUP_ID);
    }
    trimmed
        .parse::<u32>()
        .ok()
        .filter(|group_id| *group_id < num_groups)
        .ok_or(INVALID_GROUP_ID)
}

/// The `node` of a drain/undrain body: absent or null → this node; a string must name a
/// configured write node.
pub fn parse_target_node(
    body: &Map<String, Value>,
    node: &NodeState,
) -> Result<String, FixedError> {
    let settings = node.settings();
    let target = match body.get("node") {
        None | Some(Value::Null) => settings.node_id.clone(),
        Some(Value::String(target)) => target.clone(),
        Some(_) => return Err(INVALID_WRITE_NODE),
    };
    if settings.is_configured_write_node(&target) {
        Ok(target)
    } else {
        Err(INVALID_WRITE_NODE)
    }
}

/// Constant-time comparison, so that response timing does not reveal how much of a guessed
/// token was right.
fn tokens_match(expected: &[u8], given: &[u8]) -> bool {
    expected.len() == given.len()
        && expected
            .iter()
            .zip(given)
            .fold(0_u8, |difference, (left, right)| {
                difference | (left ^ right)
            })
            == 0
}

/// What the ops listener serves.
#[derive(Clone)]
pub struct OpsHandler<S> {
    service: S,
    node: Arc<NodeState>,
    token: Option<Rc<str>>,
    metrics_enabled: bool,
}

impl<S: Service> OpsHandler<S> {
    /// Serve `node`'s ops API; `token` is `STARCITE_OPS_TOKEN`.
    pub fn new(
        service: S,
        node: Arc<NodeState>,
        token: Option<&str>,
        metrics_enabled: bool,
    ) -> OpsHandler<S> {
        OpsHandler {
            service,
            node,
            token: token.map(Rc::from),
            metrics_enabled,
        }
    }

    async fn dispatch(&self, request: &Request) -> Response {
        let head = &request.head;
        let Some(route) = match_ops_route(&head.method, &head.path, self.metrics_enabled) else {
            return Response::fixed(NOT_FOUND).with_route(ROUTE_UNMATCHED);
        };
        let response = match self.checked_body(request, &route) {
            Ok(body) => self.run(&route, head, body).await,
            Err(response) => response,
        };
        response.with_route(route.template())
    }

    /// Body size, token, content type and body parse.
    fn checked_body(
        &self,
        request: &Request,
        route: &OpsRoute,
    ) -> Result<Map<String, Value>, Response> {
        let bytes = match &request.body {
            Body::TooLarge => return Err(Response::fixed(PAYLOAD_TOO_LARGE)),
            Body::Complete(bytes) => bytes,
        };
        if route.needs_token() && !self.authorized(&request.head) {
            return Err(Response::fixed(UNAUTHORIZED));
        }
        if !route.reads_body() {
            return Ok(Map::new());
        }
        let format = body_format(&request.head).ok_or(Response::fixed(UNSUPPORTED_MEDIA_TYPE))?;
        decode_body(bytes, format).map_err(Response::fixed)
    }

    fn authorized(&self, head: &RequestHead) -> bool {
        match &self.token {
            None => true,
            Some(expected) => bearer_from_header(head)
                .is_ok_and(|given| tokens_match(expected.as_bytes(), given.as_bytes())),
        }
    }

    async fn run(
        &self,
        route: &OpsRoute,
        head: &RequestHead,
        body: Map<String, Value>,
    ) -> Response {
        let node = &self.node;
        let query = || parse_query(head.query.as_bytes());
        match route {
            OpsRoute::HealthLive => system::live(),
            OpsRoute::HealthReady => system::ready(&self.service, Some(node)),
            OpsRoute::Metrics => system::metrics(&self.service),
            OpsRoute::Status => json_response(200, &node.status(self.service.readiness())),
            OpsRoute::ReadyNodes => {
                let consensus_ready = node.consensus().is_ready();
                let ready_nodes = node.ready_nodes(consensus_ready);
                Response::json_value(200, &json!({ "ready_nodes": ready_nodes }))
            }
            OpsRoute::Drain => self.set_drain(&body, true).await,
            OpsRoute::Undrain => self.set_drain(&body, false).await,
            OpsRoute::WaitDrained => {
                self.wait(&query(), "local_drained", || node.local_drained())
                    .await
            }
            OpsRoute::WaitReady => {
                let ready = || node.readiness(self.service.readiness()).is_ok();
                self.wait(&query(), "local_ready", ready).await
            }
            OpsRoute::GroupReplicas(raw) => match parse_group_id(raw, node.settings().num_groups) {
                Ok(group_id) => self.group_replicas(group_id, None),
                Err(error) => Response::fixed(error),
            },
            OpsRoute::SessionReplicas => match query().get("session_id") {
                Some(Value::String(session_id)) if !session_id.is_empty() => {
                    let group_id = placement::group_of(session_id, node.settings().num_groups);
                    self.group_replicas(group_id, Some(session_id.clone()))
                }
                _ => Response::fixed(INVALID_SESSION_ID),
            },
        }
    }

    /// `POST /ops/drain` and `/ops/undrain`: this node directly, another write node through
    /// the control plane.
    async fn set_drain(&self, body: &Map<String, Value>, draining: bool) -> Response {
        let target = match parse_target_node(body, &self.node) {
            Ok(target) => target,
            Err(error) => return Response::fixed(error),
        };
        let result = if target == self.node.settings().node_id {
            let applied = if draining {
                self.node.drain_local().await
            } else {
                self.node.undrain_local()
            };
            applied.map_err(|error| {
                tracing::error!("failed to {} node: {error}", drain_verb(draining));
                ApiError::from(ServiceError::Internal(error.to_string()))
            })
        } else {
            let forwarded = self.node.plane().forward_drain(&target, draining).await;
            forwarded.map_err(|error| {
                let ControlError::Unreachable { node } = &error;
                tracing::warn!("cannot {} node {node}: {error}", drain_verb(draining));
                ApiError::from(ServiceError::RaftUnavailable)
            })
        };
        match result {
            Ok(()) => {
                let status = if draining { "draining" } else { "ready" };
                Response::json_value(200, &json!({"node": target, "status": status}))
            }
            Err(error) => Response::error(error),
        }
    }

    /// Poll `condition` every [`WAIT_POLL_INTERVAL`] until it holds (`200 {"<name>":true}`) or
    /// `timeout_ms` passes (`504 timeout`).
    async fn wait(
        &self,
        query: &Map<String, Value>,
        name: &str,
        condition: impl Fn() -> bool,
    ) -> Response {
        let timeout_ms = match parse_timeout_ms(query) {
            Ok(timeout_ms) => timeout_ms,
            Err(error) => return Response::fixed(error),
        };
        // A timeout too large to represent waits without a deadline.
        let deadline = Instant::now().checked_add(Duration::from_millis(timeout_ms));
        loop {
            if condition() {
                let mut body = Map::new();
                body.insert(name.to_owned(), true.into());
                return Response::json_value(200, &Value::Object(body));
            }
            let remaining = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => WAIT_POLL_INTERVAL,
            };
            if remaining.is_zero() {
                return Response::error(ApiError {
                    status: 504,
                    code: "timeout",
                    message: Some(format!("timeout waiting for {name} after {timeout_ms}ms")),
                    retry_after_seconds: None,
                });
            }
            glommio::timer::sleep(remaining.min(WAIT_POLL_INTERVAL)).await;
        }
    }

    fn group_replicas(&self, group_id: u32, session_id: Option<String>) -> Response {
        let Some(group) = self.node.group_replicas(group_id) else {
            return Response::fixed(INVALID_GROUP_ID);
        };
        match session_id {
            None => json_response(200, &group),
            Some(session_id) => json_response(200, &SessionGroup { group, session_id }),
        }
    }
}

fn drain_verb(draining: bool) -> &'static str {
    if draining {
        "drain"
    } else {
        "undrain"
    }
}

/// `group-replicas` by session: the group's body plus `session_id`.
#[derive(Serialize)]
struct SessionGroup {
    #[serde(flatten)]
    group: GroupReplicas,
    session_id: String,
}

/// A JSON response from a serialisable value, keeping its field order.
fn json_response<T: Serialize>(status: u16, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => Response::json(status, body),
        Err(error) => Response::error(ServiceError::Internal(format!(
            "serialise ops response: {error}"
        ))),
    }
}

impl<S: Service> Handler for OpsHandler<S> {
    type Upgrade = ();

    async fn handle(&self, request: Request) -> Reply<()> {
        Reply::Respond(self.dispatch(&request).await)
    }

    async fn upgraded<T>(&self, _stream: T, _leftover: Vec<u8>, _upgrade: ())
    where
        T: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        // The ops listener never upgrades a connection.
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;

    use starcite_engine::api::NodeMode;

    use super::*;
    use crate::ops::control::LocalControlPlane;
    use crate::ops::drain::DrainState;
    use crate::ops::node::NodeSettings;

    fn node() -> NodeState {
        let settings = NodeSettings {
            node_id: "n1@h".into(),
            mode: NodeMode::WriteNode,
            write_nodes: vec!["n1@h".into(), "n2@h".into()],
            replication_factor: 1,
            num_groups: 16,
            data_dir: PathBuf::from("/d"),
            raft_data_dir: PathBuf::from("/d/raft"),
        };
        let plane = LocalControlPlane::new("n1@h", &settings.local_groups(), 16);
        NodeState::new(settings, Arc::new(plane), DrainState::in_memory())
    }

    fn query(text: &str) -> Map<String, Value> {
        parse_query(text.as_bytes())
    }

    #[test]
    fn routes_match_by_method_and_path() {
        assert_eq!(
            match_ops_route("GET", "/ops/status", true),
            Some(OpsRoute::Status)
        );
        assert_eq!(
            match_ops_route("HEAD", "/ops/ready-nodes", true),
            Some(OpsRoute::ReadyNodes)
        );
        assert_eq!(match_ops_route("GET", "/ops/drain", true), None);
        assert_eq!(
            match_ops_route("POST", "/ops/undrain", true),
            Some(OpsRoute::Undrain)
        );
        assert_eq!(
            match_ops_route("GET", "/ops/group-replicas/%203", true),
            Some(OpsRoute::GroupReplicas(" 3".into()))
        );
        assert_eq!(
            match_ops_route("GET", "/ops/group-replicas", true),
            Some(OpsRoute::SessionReplicas)
        );
        assert_eq!(
            match_ops_route("GET", "/ops/group-replicas/1/2", true),
            None
        );
        assert_eq!(match_ops_route("GET", "/ops/unknown", true), None);
        assert_eq!(match_ops_route("GET", "/metrics", false), None);
        assert_eq!(match_ops_route("GET", "/v1/sessions", true), None);
        assert!(!OpsRoute::HealthReady.needs_token());
        assert!(OpsRoute::WaitReady.needs_token());
    }

    #[test]
    fn timeouts_must_be_positive_integers() {
        assert_eq!(parse_timeout_ms(&query("")), Ok(WAIT_TIMEOUT_MS_DEFAULT));
        assert_eq!(parse_timeout_ms(&query("timeout_ms=1")), Ok(1));
        assert_eq!(parse_timeout_ms(&query("timeout_ms=0500")), Ok(500));
        for invalid in [
            "timeout_ms=",
            "timeout_ms=0",
            "timeout_ms=-5",
            "timeout_ms=1.5",
            "timeout_ms=abc",
            "timeout_ms=+5",
            "timeout_ms=%205",
            "timeout_ms[a]=5",
            "timeout_ms=99999999999999999999999",
        ] {
            assert_eq!(
                parse_timeout_ms(&query(invalid)),
                Err(INVALID_TIMEOUT),
                "{invalid}"
            );
        }
    }

    #[test]
    fn group_ids_are_trimmed_decimals_in_range() {
        assert_eq!(parse_group_id("3", 16), Ok(3));
        assert_eq!(parse_group_id(" 15 ", 16), Ok(15));
        assert_eq!(parse_group_id("0", 16), Ok(0));
        for invalid in ["16", "-1", "", " ", "1a", "0x1", "4294967296", "+1"] {
            assert_eq!(
                parse_group_id(invalid, 16),
                Err(INVALID_GROUP_ID),
                "{invalid:?}"
            );
        }
    }

    #[test]
    fn drain_targets_must_be_configured_write_nodes() {
        let node = node();
        let body = |value: Value| match value {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        assert_eq!(parse_target_node(&Map::new(), &node), Ok("n1@h".into()));
        assert_eq!(
            parse_target_node(&body(json!({"node": null})), &node),
            Ok("n1@h".into())
        );
        assert_eq!(
            parse_target_node(&body(json!({"node": "n2@h"})), &node),
            Ok("n2@h".into())
        );
        for invalid in [json!("n9@h"), json!(""), json!(1), json!(["n1@h"])] {
            assert_eq!(
                parse_target_node(&body(json!({ "node": invalid })), &node),
                Err(INVALID_WRITE_NODE)
            );
        }
    }

    #[test]
    fn token_comparison() {
        assert!(tokens_match(b"secret", b"secret"));
        assert!(!tokens_match(b"secret", b"secreT"));
        assert!(!tokens_match(b"secret", b"secret2"));
        assert!(!tokens_match(b"secret", b""));
    }
}
