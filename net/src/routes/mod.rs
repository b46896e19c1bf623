//! Route matching and the global check order of http-api.md §1.1; the handlers live in the
//! submodules:
//! - [`sessions`]: create, list and read sessions (§3–§5) and the session record JSON;
//! - [`append`]: single and batch appends (§6, §7);
//! - [`events`]: the range read (§9) and the tail's checks before the upgrade (§8);
//! - [`system`]: health, metrics and the token issue route (§10, §11).

pub mod append;
pub mod events;
pub mod sessions;
pub mod system;

use std::rc::Rc;
use std::sync::Arc;

use futures_lite::{future, AsyncRead, AsyncWrite};
use serde_json::{Map, Value};
use starcite_engine::api::Service;

use crate::auth::bearer::{bearer_for_tail, bearer_from_header};
use crate::auth::{AuthContext, Authenticated, Authenticator, Credential, Pipeline};
use crate::error::{
    FixedError, INVALID_JSON, NOT_ACCEPTABLE, NOT_FOUND, PAYLOAD_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE,
};
use crate::http::response::ROUTE_UNMATCHED;
use crate::http::{Body, Handler, Reply, Request, RequestHead, Response};
use crate::ops::NodeState;
use crate::query::{decode_path_segment, parse_query};
use crate::server::NetConfig;
use crate::shutdown::ShutdownHooks;
use crate::tail::{ServerClose, TailParams};

/// A matched route with its path parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/auth/issue`.
    AuthIssue,
    /// `POST /v1/sessions`.
    CreateSession,
    /// `GET /v1/sessions`.
    ListSessions,
    /// `GET /v1/sessions/:id`.
    GetSession(String),
    /// `POST /v1/sessions/:id/append`.
    Append(String),
    /// `GET /v1/sessions/:id/events`.
    Events(String),
    /// `GET /v1/sessions/:id/tail`.
    Tail(String),
    /// `GET /health/live`.
    HealthLive,
    /// `GET /health/ready`.
    HealthReady,
    /// `GET /metrics`.
    Metrics,
}

impl Route {
    /// The route template, used as the metrics label.
    pub fn template(&self) -> &'static str {
        match self {
            Route::AuthIssue => "/v1/auth/issue",
            Route::CreateSession | Route::ListSessions => "/v1/sessions",
            Route::GetSession(_) => "/v1/sessions/:id",
            Route::Append(_) => "/v1/sessions/:id/append",
            Route::Events(_) => "/v1/sessions/:id/events",
            Route::Tail(_) => "/v1/sessions/:id/tail",
            Route::HealthLive => "/health/live",
            Route::HealthReady => "/health/ready",
            Route::Metrics => "/metrics",
        }
    }

    /// Routes under `/v1/*` that require a JSON-accepting client (T9).
    fn checks_accept(&self) -> bool {
        !matches!(
            self,
            Route::Tail(_) | Route::HealthLive | Route::HealthReady | Route::Metrics
        )
    }

    /// Which tokens the route accepts; `None` for routes that never authenticate (T10 and
    /// auth.md §7.1: health and metrics are open).
    fn pipeline(&self) -> Option<Pipeline> {
        match self {
            Route::AuthIssue => Some(Pipeline::ServiceRequired),
            Route::HealthLive | Route::HealthReady | Route::Metrics => None,
            _ => Some(Pipeline::ServiceElsePrincipal),
        }
    }

    /// Routes that read a request body (T4, T5).
    fn reads_body(&self) -> bool {
        matches!(
            self,
            Route::AuthIssue | Route::CreateSession | Route::Append(_)
        )
    }
}

/// Match method and raw path (T8, T10, T11, T12). HEAD matches every GET route.
pub fn match_route(method: &str, raw_path: &str, metrics_enabled: bool) -> Option<Route> {
    let is_get = method == "GET" || method == "HEAD";
    let is_post = method == "POST";
    let segments: Vec<&str> = raw_path.strip_prefix('/')?.split('/').collect();
    let session_id = |raw: &str| decode_path_segment(raw).filter(|id| !id.is_empty());
    match segments.as_slice() {
        ["v1", "auth", "issue"] if is_post => Some(Route::AuthIssue),
        ["v1", "sessions"] if is_post => Some(Route::CreateSession),
        ["v1", "sessions"] if is_get => Some(Route::ListSessions),
        ["v1", "sessions", id] if is_get => session_id(id).map(Route::GetSession),
        ["v1", "sessions", id, "append"] if is_post => session_id(id).map(Route::Append),
        ["v1", "sessions", id, "events"] if is_get => session_id(id).map(Route::Events),
        ["v1", "sessions", id, "tail"] if is_get => session_id(id).map(Route::Tail),
        ["health", "live"] if is_get => Some(Route::HealthLive),
        ["health", "ready"] if is_get => Some(Route::HealthReady),
        ["metrics"] if is_get && metrics_enabled => Some(Route::Metrics),
        _ => None,
    }
}

/// T9: no `Accept`, or one naming `*/*`, `application/*` or `application/json`.
pub fn accepts_json(head: &RequestHead) -> bool {
    let mut values = head.header_values("accept").peekable();
    if values.peek().is_none() {
        return true;
    }
    values
        .flat_map(|value| value.split(|byte| *byte == b','))
        .any(|range| {
            let media_type = range
                .split(|byte| *byte == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            [&b"*/*"[..], b"application/*", b"application/json"]
                .iter()
                .any(|accepted| media_type.eq_ignore_ascii_case(accepted))
        })
}

/// How a body is to be decoded (T4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`, `application/*+json` or no content type.
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
}

/// T4: the body format from `Content-Type`, or `None` for an unsupported type. An empty value is
/// treated like an absent header.
pub fn body_format(head: &RequestHead) -> Option<BodyFormat> {
    let Some(value) = head.header("content-type") else {
        return Some(BodyFormat::Json);
    };
    let media_type = value
        .split(|byte| *byte == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let media_type = String::from_utf8_lossy(media_type).to_ascii_lowercase();
    if media_type.is_empty() || media_type == "application/json" {
        return Some(BodyFormat::Json);
    }
    if media_type == "application/x-www-form-urlencoded" {
        return Some(BodyFormat::Form);
    }
    let structured_json = media_type
        .strip_prefix("application/")
        .and_then(|subtype| subtype.strip_suffix("+json"))
        .is_some_and(|prefix| !prefix.is_empty() && !prefix.contains('/'));
    structured_json.then_some(BodyFormat::Json)
}

/// T4/T5: decode a body into an object. Empty → `{}`; valid JSON that is not an object → `{}`;
/// malformed → `invalid_json`; duplicate keys keep the last value.
pub fn decode_body(bytes: &[u8], format: BodyFormat) -> Result<Map<String, Value>, FixedError> {
    match format {
        BodyFormat::Form => Ok(parse_query(bytes)),
        BodyFormat::Json if bytes.is_empty() => Ok(Map::new()),
        BodyFormat::Json => match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(object)) => Ok(object),
            Ok(_) => Ok(Map::new()),
            Err(_) => Err(INVALID_JSON),
        },
    }
}

/// What the handlers get besides the route: the decoded query, the body object (routes that
/// read one), the auth context and the raw head.
pub struct Call<'a> {
    /// The request head.
    pub head: &'a RequestHead,
    /// Decoded query string (T7).
    pub query: Map<String, Value>,
    /// Decoded body; `{}` for routes that do not read one.
    pub body: Map<String, Value>,
    /// Who is calling.
    pub auth: AuthContext,
    /// The verified token, kept for a tail's expiry and re-validation (`None` in mode `none`).
    pub credential: Option<Credential>,
    /// When the request arrived (append latency).
    pub received_at: std::time::Instant,
}

/// What the tail route hands to the upgraded connection: the delivery parameters and the
/// credential whose expiry ends the tail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailUpgrade {
    /// Session, cursor and buffer size.
    pub params: TailParams,
    /// The verified token (`None` in mode `none`, where tails never expire).
    pub credential: Option<Credential>,
}

/// The public API as an HTTP [`Handler`].
#[derive(Clone)]
pub struct ApiHandler<S> {
    service: S,
    config: Rc<NetConfig>,
    authenticator: Rc<Authenticator>,
    node: Option<Arc<NodeState>>,
    shutdown: ShutdownHooks,
}

impl<S: Service> ApiHandler<S> {
    /// Serve `service` with `config`, authenticating with `authenticator`.
    pub fn new(
        service: S,
        config: Rc<NetConfig>,
        authenticator: Rc<Authenticator>,
    ) -> ApiHandler<S> {
        ApiHandler {
            service,
            config,
            authenticator,
            node: None,
            shutdown: ShutdownHooks::default(),
        }
    }

    /// Compose readiness from the node's drain mark, consensus probe and observer view
    /// (ops.md §2) instead of storage alone.
    pub fn with_node(mut self, node: Option<Arc<NodeState>>) -> ApiHandler<S> {
        self.node = node;
        self
    }

    /// Count tails and close them with 1001 `server_shutdown` when the node shuts down.
    pub fn with_shutdown(mut self, shutdown: ShutdownHooks) -> ApiHandler<S> {
        self.shutdown = shutdown;
        self
    }

    /// Steps 1–6 of §1.1, then the route.
    async fn dispatch(&self, request: &Request) -> Reply<TailUpgrade> {
        let head = &request.head;
        let Some(route) = match_route(&head.method, &head.path, self.config.metrics_enabled) else {
            return respond(Response::fixed(NOT_FOUND).with_route(ROUTE_UNMATCHED));
        };
        let template = route.template();
        let reply = match self.checked_call(request, &route).await {
            Ok(call) => self.run(&route, call).await,
            Err(response) => respond(response),
        };
        match reply {
            Reply::Respond(response) => respond(response.with_route(template)),
            Reply::Upgrade(response, params) => {
                Reply::Upgrade(response.with_route(template), params)
            }
        }
    }

    /// Steps 2–6 of the global check order.
    async fn checked_call<'a>(
        &self,
        request: &'a Request,
        route: &Route,
    ) -> Result<Call<'a>, Response> {
        let head = &request.head;
        if route.checks_accept() && !accepts_json(head) {
            return Err(Response::fixed(NOT_ACCEPTABLE));
        }
        let bytes = match &request.body {
            Body::TooLarge => return Err(Response::fixed(PAYLOAD_TOO_LARGE)),
            Body::Complete(bytes) => bytes,
        };
        let query = parse_query(head.query.as_bytes());
        let authenticated = self.authenticate(head, &query, route).await?;
        let body = if route.reads_body() {
            let format = body_format(head).ok_or(Response::fixed(UNSUPPORTED_MEDIA_TYPE))?;
            decode_body(bytes, format).map_err(Response::fixed)?
        } else {
            Map::new()
        };
        Ok(Call {
            head,
            query,
            body,
            auth: authenticated.context,
            credential: authenticated.credential,
            received_at: request.received_at,
        })
    }

    /// Step 4: the route's pipeline (auth.md §3) on the bearer token, from the `Authorization`
    /// header or, on the tail route only, the `access_token` query parameter. In mode `none`
    /// the authenticator ignores whatever was sent.
    async fn authenticate(
        &self,
        head: &RequestHead,
        query: &Map<String, serde_json::Value>,
        route: &Route,
    ) -> Result<Authenticated, Response> {
        let Some(pipeline) = route.pipeline() else {
            return Ok(Authenticated::none());
        };
        let bearer = match route {
            Route::Tail(_) => bearer_for_tail(head, query),
            _ => bearer_from_header(head),
        };
        self.authenticator
            .authenticate(bearer, pipeline)
            .await
            .map_err(|failure| failure.response())
    }

    async fn run(&self, route: &Route, call: Call<'_>) -> Reply<TailUpgrade> {
        let service = &self.service;
        match route {
            Route::AuthIssue => respond(system::issue_token(&call, &self.authenticator)),
            Route::CreateSession => respond(sessions::create(service, &call).await),
            Route::ListSessions => respond(sessions::list(service, &call).await),
            Route::GetSession(id) => respond(sessions::get(service, &call, id).await),
            Route::Append(id) => respond(append::append(service, &call, id).await),
            Route::Events(id) => respond(events::read(service, &call, id).await),
            Route::Tail(id) => {
                events::tail_upgrade(service, &call, id, self.config.tail_buffer_events).await
            }
            Route::HealthLive => respond(system::live()),
            Route::HealthReady => respond(system::ready(service, self.node.as_deref())),
            Route::Metrics => respond(system::metrics(service)),
        }
    }
}

fn respond(response: Response) -> Reply<TailUpgrade> {
    Reply::Respond(response)
}

impl<S: Service> Handler for ApiHandler<S> {
    type Upgrade = TailUpgrade;

    async fn handle(&self, request: Request) -> Reply<TailUpgrade> {
        self.dispatch(&request).await
    }

    async fn upgraded<T>(&self, stream: T, leftover: Vec<u8>, upgrade: TailUpgrade)
    where
        T: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let _counted = self.shutdown.counts.tail();
        // The token's expiry and periodic re-validation end the tail with 4001, the node's
        // shutdown with 1001 (tail.md §6).
        let authenticator = self.authenticator.clone();
        let close_tails = self.shutdown.close_tails.clone();
        let shutdown = async move {
            match close_tails {
                Some(signal) => signal.wait().await,
                None => future::pending().await,
            }
            ServerClose::Shutdown
        };
        let stop = future::or(
            async move { authenticator.watch(upgrade.credential).await },
            shutdown,
        );
        crate::tail::serve_websocket_until(
            stream,
            leftover,
            upgrade.params,
            self.service.clone(),
            stop,
        )
        .await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            version_minor: 1,
            headers: headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn routes_match_by_method_and_decoded_segments() {
        assert_eq!(
            match_route("GET", "/v1/sessions", true),
            Some(Route::ListSessions)
        );
        assert_eq!(
            match_route("HEAD", "/v1/sessions", true),
            Some(Route::ListSessions)
        );
        assert_eq!(
            match_route("POST", "/v1/sessions", true),
            Some(Route::CreateSession)
        );
        assert_eq!(match_route("DELETE", "/v1/sessions", true), None);
        assert_eq!(match_route("OPTIONS", "/v1/sessions", true), None);
        assert_eq!(match_route("HEAD", "/v1/sessions/a/append", true), None);
        assert_eq!(
            match_route("POST", "/v1/sessions/a%2Fb/append", true),
            Some(Route::Append("a/b".into()))
        );
        assert_eq!(
            match_route("GET", "/v1/sessions/a+b", true),
            Some(Route::GetSession("a+b".into()))
        );
        assert_eq!(match_route("GET", "/v1/sessions/", true), None);
        assert_eq!(match_route("GET", "/v1/sessions/a/b", true), None);
        assert_eq!(match_route("GET", "/metrics", false), None);
        assert_eq!(match_route("GET", "/metrics", true), Some(Route::Metrics));
        assert_eq!(match_route("GET", "v1/sessions", true), None);
    }

    #[test]
    fn accept_rules() {
        assert!(accepts_json(&head(&[])));
        assert!(accepts_json(&head(&[("accept", "text/html, */*;q=0.1")])));
        assert!(accepts_json(&head(&[("accept", "Application/*")])));
        assert!(accepts_json(&head(&[(
            "accept",
            "application/json; charset=utf-8"
        )])));
        assert!(accepts_json(&head(&[
            ("accept", "text/html"),
            ("accept", "application/json")
        ])));
        assert!(!accepts_json(&head(&[("accept", "text/html")])));
        assert!(!accepts_json(&head(&[("accept", "application/xml")])));
        assert!(!accepts_json(&head(&[("accept", "")])));
    }

    #[test]
    fn content_type_rules() {
        assert_eq!(body_format(&head(&[])), Some(BodyFormat::Json));
        assert_eq!(
            body_format(&head(&[(
                "content-type",
                "application/json; charset=utf-8"
            )])),
            Some(BodyFormat::Json)
        );
        assert_eq!(
            body_format(&head(&[("content-type", "application/vnd.api+json")])),
            Some(BodyFormat::Json)
        );
        assert_eq!(
            body_format(&head(&[(
                "content-type",
                "application/x-www-form-urlencoded"
            )])),
            Some(BodyFormat::Form)
        );
        assert_eq!(body_format(&head(&[("content-type", "text/plain")])), None);
        assert_eq!(
            body_format(&head(&[("content-type", "application/+json")])),
            None
        );
        assert_eq!(
            body_format(&head(&[("content-type", "multipart/form-data")])),
            None
        );
    }

    #[test]
    fn body_decoding() {
        assert_eq!(decode_body(b"", BodyFormat::Json), Ok(Map::new()));
        assert_eq!(decode_body(b"[1]", BodyFormat::Json), Ok(Map::new()));
        assert_eq!(decode_body(b"\"x\"", BodyFormat::Json), Ok(Map::new()));
        assert_eq!(decode_body(b"{", BodyFormat::Json), Err(INVALID_JSON));
        assert_eq!(decode_body(b" ", BodyFormat::Json), Err(INVALID_JSON));
        let last_wins = decode_body(br#"{"a":1,"a":2}"#, BodyFormat::Json).unwrap();
        assert_eq!(
            last_wins.get("a").map(Value::to_string).as_deref(),
            Some("2")
        );
        let form = decode_body(b"type=t&payload[x]=1", BodyFormat::Form).unwrap();
        assert_eq!(
            Value::Object(form),
            serde_json::json!({"type":"t","payload":{"x":"1"}})
        );
    }
}
