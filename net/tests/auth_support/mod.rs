//! Shared pieces of the auth tests: a real JWKS server on a std thread serving keys from the
//! committed fixtures, service JWT signing, raw token forging, and a server in auth mode `jwt`
//! built on the HTTP test harness.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use starcite_net::auth::{AuthConfig, AuthMode};

use crate::http_support::{Client, TestResponse, TestServer};

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "starcite";
pub const SECRET_KEY_BASE: &str = "test-secret-key-base-0123456789abcdef";

/// Keys whose public halves the JWKS server publishes at start.
pub const JWKS_KEYS: [&str; 2] = ["jwks_one", "jwks_two"];
/// A key published only when a test rotates it in.
pub const ROTATED_KEY: &str = "jwks_rotated";
/// Keys never published.
pub const FOREIGN_KEYS: [&str; 3] = ["foreign_one", "foreign_two", "foreign_three"];

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The JWK of fixture key `name`, published under `kid`.
pub fn jwk(name: &str, kid: &str) -> Value {
    let components: Value =
        serde_json::from_slice(&std::fs::read(fixture("rsa_public_components.json")).unwrap())
            .unwrap();
    json!({"kty":"RSA","kid":kid,"use":"sig","alg":"RS256",
           "n":components[name]["n"],"e":components[name]["e"]})
}

pub fn encoding_key(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(fixture(&format!("rsa_{name}.pem"))).unwrap()).unwrap()
}

/// Sign `claims` with fixture key `name` under header `kid`.
pub fn sign(name: &str, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &encoding_key(name)).unwrap()
}

/// Claims of a valid service token of `tenant` granting `scope` (space-separated).
pub fn service_claims(tenant: &str, scope: &str) -> Value {
    let now = unix_now();
    json!({"iss":ISSUER,"aud":AUDIENCE,"exp":now + 300,"iat":now,"nbf":now,
           "tenant_id":tenant,"scope":scope})
}

/// A valid service token (published key `jwks_one`).
pub fn service_token(tenant: &str, scope: &str) -> String {
    sign("jwks_one", "jwks_one", &service_claims(tenant, scope))
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact token from arbitrary header, claims and signature bytes.
pub fn forge(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string()),
        b64(claims.to_string()),
        b64(signature)
    )
}

/// What the JWKS server answers.
#[derive(Clone)]
pub enum JwksAnswer {
    /// `200` with this body.
    Document(String),
    /// This status with an empty body.
    Status(u16),
}

/// A JWKS endpoint on a std thread. Counts the requests it serves.
pub struct JwksServer {
    pub address: SocketAddr,
    answer: Arc<Mutex<JwksAnswer>>,
    fetches: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl JwksServer {
    /// Serve the public halves of [`JWKS_KEYS`].
    pub fn start() -> JwksServer {
        let keys: Vec<Value> = JWKS_KEYS.iter().map(|name| jwk(name, name)).collect();
        JwksServer::start_with(JwksAnswer::Document(json!({ "keys": keys }).to_string()))
    }

    pub fn start_with(answer: JwksAnswer) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(answer));
        let fetches = Arc::new(AtomicUsize::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let answer = answer.clone();
            let fetches = fetches.clone();
            let stopping = stopping.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let current = answer.lock().unwrap().clone();
                    fetches.fetch_add(1, Ordering::SeqCst);
                    answer_one(stream, &current);
                }
            })
        };
        JwksServer {
            address,
            answer,
            fetches,
            stopping,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.address)
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    pub fn set(&self, answer: JwksAnswer) {
        *self.answer.lock().unwrap() = answer;
    }

    /// Publish fixture keys by name (kid = name).
    pub fn publish(&self, names: &[&str]) {
        let keys: Vec<Value> = names.iter().map(|name| jwk(name, name)).collect();
        self.set(JwksAnswer::Document(json!({ "keys": keys }).to_string()));
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.address);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer_one(mut stream: TcpStream, answer: &JwksAnswer) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let (status, body) = match answer {
        JwksAnswer::Document(body) => (200, body.clone()),
        JwksAnswer::Status(status) => (*status, String::new()),
    };
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// Auth settings of a `jwt` mode server against `jwks_url`.
pub fn jwt_config(jwks_url: &str) -> AuthConfig {
    AuthConfig {
        mode: AuthMode::Jwt,
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        jwks_url: jwks_url.to_owned(),
        secret_key_base: SECRET_KEY_BASE.to_owned(),
        ..AuthConfig::default()
    }
}

/// A server in mode `jwt` (settings changed by `tweak`).
pub fn jwt_server(
    jwks_url: &str,
    tweak: impl FnOnce(&mut AuthConfig) + Send + 'static,
) -> TestServer {
    let mut auth = jwt_config(jwks_url);
    tweak(&mut auth);
    TestServer::start_with(move |config| config.auth = auth, false)
}

/// Send a request with an optional bearer token and JSON body.
pub fn call(
    server: &TestServer,
    method: &str,
    target: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> TestResponse {
    let mut client = server.connect();
    let authorization = token.map(|token| format!("Authorization: Bearer {token}"));
    let mut headers: Vec<&str> = vec!["Content-Type: application/json"];
    if let Some(line) = &authorization {
        headers.push(line);
    }
    let body = body.map(Value::to_string);
    client.request(method, target, &headers, body.as_deref())
}

/// Status and `error` code of a response (`""` when the body has none).
pub fn outcome(response: &TestResponse) -> (u16, String) {
    let code = serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|body| body.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    (response.status, code)
}

/// Mint a principal token through `POST /v1/auth/issue` with a service token of `tenant`.
pub fn issue(server: &TestServer, tenant: &str, request: &Value) -> String {
    let service = service_token(tenant, "auth:issue");
    let response = call(
        server,
        "POST",
        "/v1/auth/issue",
        Some(&service),
        Some(request),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["token"].as_str().unwrap().to_owned()
}

/// A user principal token.
pub fn user_token(
    server: &TestServer,
    tenant: &str,
    user: &str,
    scopes: &[&str],
    session_ids: Option<&[&str]>,
) -> String {
    issue(
        server,
        tenant,
        &json!({"principal":{"tenant_id":tenant,"id":user,"type":"user"},
                "scopes":scopes,"session_ids":session_ids,"ttl_seconds":15}),
    )
}

/// An agent principal token bound to `session`.
pub fn agent_token(
    server: &TestServer,
    tenant: &str,
    agent: &str,
    scopes: &[&str],
    session: &str,
) -> String {
    issue(
        server,
        tenant,
        &json!({"principal":{"tenant_id":tenant,"id":agent,"type":"agent"},
                "scopes":scopes,"session_ids":[session],"ttl_seconds":15}),
    )
}

/// Create session `id` owned by `tenant`/`user` with a service token.
pub fn create_session(server: &TestServer, tenant: &str, user: &str, id: &str) {
    let service = service_token(tenant, "session:create");
    let body =
        json!({"id": id, "creator_principal": {"tenant_id": tenant, "id": user, "type": "user"}});
    let response = call(server, "POST", "/v1/sessions", Some(&service), Some(&body));
    assert_eq!(response.status, 201, "{}", response.text());
}

/// `last_seq` of a session, read with a service token of `tenant`.
pub fn last_seq(server: &TestServer, tenant: &str, id: &str) -> u64 {
    let service = service_token(tenant, "session:read");
    let response = call(
        server,
        "GET",
        &format!("/v1/sessions/{id}"),
        Some(&service),
        None,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["last_seq"].as_u64().unwrap()
}

/// Ids of all sessions as seen by a service token of `tenant`.
pub fn session_ids_of_tenant(server: &TestServer, tenant: &str) -> Vec<String> {
    let service = service_token(tenant, "session:read");
    let response = call(
        server,
        "GET",
        "/v1/sessions?limit=1000",
        Some(&service),
        None,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|session| session["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Wait until `condition` holds, failing with `what` after `deadline`.
pub fn wait_for(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !condition() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Send a request with extra header lines and an optional JSON body.
pub fn call_with_headers(
    server: &TestServer,
    method: &str,
    target: &str,
    headers: &[String],
    body: Option<&Value>,
) -> TestResponse {
    let mut client: Client = server.connect();
    let mut lines: Vec<&str> = vec!["Content-Type: application/json"];
    lines.extend(headers.iter().map(String::as_str));
    let body = body.map(Value::to_string);
    client.request(method, target, &lines, body.as_deref())
}

/// Header lines of a WebSocket upgrade request.
pub fn upgrade_headers() -> Vec<String> {
    vec![
        "Upgrade: websocket".to_owned(),
        "Connection: Upgrade".to_owned(),
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".to_owned(),
        "Sec-WebSocket-Version: 13".to_owned(),
    ]
}
