//! Auth mode `jwt` end to end: a real `starcite` process, a real JWKS server started by the test,
//! service JWTs signed with the test's RSA keys, principal tokens minted by `POST /v1/auth/issue`,
//! and a WebSocket tail closed with 4001 when its token expires.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use starcite_tests::{HttpClient, Server, ServerOptions, TailClient};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "starcite";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../net/tests/fixtures")
        .join(name)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Serve `{"keys":[<jwks_one>]}` on a loopback port from a background thread.
fn start_jwks_server() -> String {
    let components: Value =
        serde_json::from_slice(&std::fs::read(fixture("rsa_public_components.json")).unwrap())
            .unwrap();
    let jwks = json!({"keys":[{"kty":"RSA","kid":"k1","use":"sig","alg":"RS256",
        "n":components["jwks_one"]["n"],"e":components["jwks_one"]["e"]}]})
    .to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{jwks}",
                jwks.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    url
}

fn service_token(tenant: &str, scope: &str) -> String {
    let claims = json!({"iss":ISSUER,"aud":AUDIENCE,"exp":now() + 300,"iat":now(),"tenant_id":tenant,"scope":scope});
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".into());
    let key =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_jwks_one.pem")).unwrap()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn call(
    client: &mut HttpClient,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> starcite_tests::Response {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(bearer) = bearer.as_deref() {
        headers.push(("authorization", bearer));
    }
    let body = body.map(|b| b.to_string());
    client
        .request(method, path, &headers, body.as_deref().map(str::as_bytes))
        .unwrap()
}

#[test]
fn jwt_mode_end_to_end() {
    let jwks_url = start_jwks_server();
    let server = Server::start_with(
        ServerOptions::default()
            .with("STARCITE_AUTH_MODE", "jwt")
            .with("STARCITE_AUTH_JWT_ISSUER", ISSUER)
            .with("STARCITE_AUTH_JWT_AUDIENCE", AUDIENCE)
            .with("STARCITE_AUTH_JWKS_URL", &jwks_url)
            .with(
                "STARCITE_SECRET_KEY_BASE",
                "end-to-end-secret-key-base-0123456789",
            ),
    );
    let mut c = server.client();
    let service = service_token("acme", "session:create session:read auth:issue");

    // No token: 401 with the challenge.
    let anonymous = call(&mut c, "POST", "/v1/sessions", None, Some(json!({})));
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.json(),
        json!({"error":"unauthorized","message":"Unauthorized"})
    );
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some(r#"Bearer realm="starcite""#)
    );

    // A token with alg none is rejected.
    let unsigned = format!(
        "{}.{}.",
        base64_url(br#"{"alg":"none","typ":"JWT"}"#),
        base64_url(json!({"iss":ISSUER,"aud":AUDIENCE,"exp":now()+300,"tenant_id":"acme","scope":"session:create"}).to_string().as_bytes())
    );
    assert_eq!(
        call(
            &mut c,
            "POST",
            "/v1/sessions",
            Some(&unsigned),
            Some(json!({}))
        )
        .status,
        401
    );

    // The service creates a session for user u1 of its tenant; another tenant is refused.
    let creator = json!({"tenant_id":"acme","id":"u1","type":"user"});
    let created = call(
        &mut c,
        "POST",
        "/v1/sessions",
        Some(&service),
        Some(json!({"id":"j1","creator_principal":creator})),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let other_tenant = call(
        &mut c,
        "POST",
        "/v1/sessions",
        Some(&service),
        Some(json!({"id":"j2","creator_principal":{"tenant_id":"beta","id":"u1","type":"user"}})),
    );
    assert_eq!(other_tenant.json()["error"], "forbidden_tenant");

    // Service tokens cannot append.
    let event = json!({"type":"t","payload":{},"producer_id":"p","producer_seq":1});
    let by_service = call(
        &mut c,
        "POST",
        "/v1/sessions/j1/append",
        Some(&service),
        Some(event.clone()),
    );
    assert_eq!(by_service.status, 403);
    assert_eq!(by_service.json()["error"], "forbidden_session");

    // Mint a short-lived user token and append with it: the actor is derived.
    let issued = call(
        &mut c,
        "POST",
        "/v1/auth/issue",
        Some(&service),
        Some(json!({
        "principal": creator, "scopes": ["session:append","session:read"], "ttl_seconds": 3})),
    );
    assert_eq!(issued.status, 200, "{}", issued.text());
    let user_token = issued.json()["token"].as_str().unwrap().to_string();
    assert_eq!(issued.json()["expires_in"], 3);
    let appended = call(
        &mut c,
        "POST",
        "/v1/sessions/j1/append",
        Some(&user_token),
        Some(event),
    );
    assert_eq!(appended.status, 201, "{}", appended.text());
    let events = call(
        &mut c,
        "GET",
        "/v1/sessions/j1/events",
        Some(&user_token),
        None,
    )
    .json();
    assert_eq!(events["events"][0]["actor"], "user:u1");
    assert_eq!(
        events["events"][0]["metadata"]["starcite_principal"]["principal_id"],
        "u1"
    );

    // A principal of another tenant cannot read the session.
    let beta_service = service_token("beta", "auth:issue");
    let beta = call(
        &mut c,
        "POST",
        "/v1/auth/issue",
        Some(&beta_service),
        Some(json!({
        "principal": {"tenant_id":"beta","id":"u1","type":"user"}, "scopes": ["session:read"]})),
    );
    let beta_token = beta.json()["token"].as_str().unwrap().to_string();
    let cross = call(
        &mut c,
        "GET",
        "/v1/sessions/j1/events",
        Some(&beta_token),
        None,
    );
    assert_eq!(cross.status, 403);
    assert_eq!(cross.json()["error"], "forbidden_tenant");

    // The tail authenticates with access_token and closes with 4001 when the token expires.
    let expires_at = issued.json()["expires_at"].as_i64().unwrap();
    let mut tail = TailClient::connect_query(
        server.http_addr,
        "j1",
        0,
        &format!("&access_token={user_token}"),
    );
    assert_eq!(
        tail.next_event(Duration::from_secs(5)).unwrap().unwrap()["seq"],
        1
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let closed = loop {
        assert!(Instant::now() < deadline, "tail not closed after expiry");
        match tail.next_event(Duration::from_secs(1)) {
            Ok(_) => {}
            Err(closed) => break closed,
        }
    };
    assert_eq!(closed.code, 4001);
    assert_eq!(closed.reason, "token_expired");
    let closed_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(closed_at_ms >= expires_at * 1000, "closed before exp");
    assert!(
        closed_at_ms <= expires_at * 1000 + 1500,
        "closed too long after exp"
    );

    // The token never appears in the server's log.
    assert!(!server.log().contains(&user_token), "token logged");
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}
