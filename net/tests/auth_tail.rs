//! Tail authentication (tail.md §1, §6): the token from `access_token` or the header, and the
//! close with 4001 `token_expired` no earlier than `exp` and within 1 s after it.

#![allow(clippy::unwrap_used)]

mod auth_support;
mod http_support;

use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth_support::*;
use serde_json::json;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn open_tail(
    server: &http_support::TestServer,
    query_token: Option<&str>,
    header_token: Option<&str>,
) -> tungstenite::WebSocket<TcpStream> {
    let stream = TcpStream::connect(server.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let query = query_token.map_or(String::new(), |token| format!("&access_token={token}"));
    let url = format!(
        "ws://{}/v1/sessions/s-own/tail?cursor=0{query}",
        server.address
    );
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = header_token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let (socket, response) = tungstenite::client(request, stream).unwrap();
    assert_eq!(response.status(), 101);
    socket
}

/// Read until the close frame; returns it with the wall-clock time it arrived.
fn read_close(socket: &mut tungstenite::WebSocket<TcpStream>) -> (u16, String, i64) {
    loop {
        match socket.read().unwrap() {
            Message::Close(Some(frame)) => {
                return (
                    u16::from(frame.code),
                    frame.reason.to_string(),
                    unix_now_ms(),
                )
            }
            Message::Close(None) => panic!("close without a code"),
            _ => {}
        }
    }
}

fn issue_with_ttl(server: &http_support::TestServer, ttl_seconds: u64) -> (String, i64) {
    let service = service_token("acme", "auth:issue");
    let request = json!({"principal":{"tenant_id":"acme","id":"u1","type":"user"},
                         "scopes":["session:read"],"ttl_seconds":ttl_seconds});
    let response = call(
        server,
        "POST",
        "/v1/auth/issue",
        Some(&service),
        Some(&request),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    (
        body["token"].as_str().unwrap().to_owned(),
        body["expires_at"].as_i64().unwrap(),
    )
}

#[test]
fn expiry_closes_the_tail_with_4001_within_a_second_after_exp() {
    let jwks = JwksServer::start();
    let server = jwt_server(&jwks.url(), |_| {});
    create_session(&server, "acme", "u1", "s-own");
    let (query_token, query_expires_at) = issue_with_ttl(&server, 2);
    let (header_token, header_expires_at) = issue_with_ttl(&server, 3);
    let mut by_query = open_tail(&server, Some(&query_token), None);
    // The header wins over a bogus query token.
    let mut by_header = open_tail(&server, Some("bogus"), Some(&header_token));
    for (socket, expires_at) in [
        (&mut by_query, query_expires_at),
        (&mut by_header, header_expires_at),
    ] {
        let (code, reason, closed_at_ms) = read_close(socket);
        assert_eq!(code, u16::from(CloseCode::Library(4001)));
        assert_eq!(reason, "token_expired");
        let after_exp_ms = closed_at_ms - expires_at * 1000;
        assert!(
            (0..1000).contains(&after_exp_ms),
            "closed {after_exp_ms} ms after exp"
        );
    }
}
