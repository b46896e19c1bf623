//! Transport rules of http-api.md §1 against a server on loopback: keep-alive, pipelining,
//! chunked bodies, the body limit, the global check order, HEAD, request ids, timeouts, and
//! robustness against garbage.

#![allow(clippy::unwrap_used)]

mod http_support;

use std::io::Write;
use std::time::Duration;

use http_support::{create_body, event_body, TestServer, PANIC_SESSION_ID};
use proptest::prelude::*;

const BODY_LIMIT_BYTES: usize = 8_000_000;

/// A JSON append body padded with spaces to exactly `length` bytes.
fn padded_event_body(length: usize) -> Vec<u8> {
    let mut body = event_body(1).into_bytes();
    body.resize(length, b' ');
    body
}

#[test]
fn keep_alive_serves_many_requests_with_distinct_request_ids() {
    let server = TestServer::start();
    let mut client = server.connect();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let response = client.get("/health/live");
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), r#"{"status":"ok"}"#);
        assert_eq!(
            response.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(response.header_count("x-request-id"), 1);
        let id = response.header("x-request-id").unwrap().to_owned();
        assert_eq!(id.len(), 32);
        assert!(id
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')));
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start();
    let mut client = server.connect();
    let create = create_body("s1");
    let append = event_body(1);
    let pipeline = format!(
        "POST /v1/sessions HTTP/1.1\r\nContent-Length: {}\r\n\r\n{create}\
         POST /v1/sessions/s1/append HTTP/1.1\r\nContent-Length: {}\r\n\r\n{append}\
         GET /nope HTTP/1.1\r\n\r\n\
         GET /v1/sessions/s1 HTTP/1.1\r\nx-request-id: last\r\n\r\n",
        create.len(),
        append.len()
    );
    client.send(pipeline.as_bytes());
    assert_eq!(client.read_response(false).status, 201);
    assert_eq!(
        client.read_response(false).text(),
        r#"{"deduped":false,"last_seq":1,"seq":1}"#
    );
    assert_eq!(client.read_response(false).status, 404);
    let last = client.read_response(false);
    assert_eq!(last.json()["last_seq"], 1);
    assert_eq!(last.header("x-request-id"), Some("last"));
}

#[test]
fn connection_close_is_honoured() {
    let server = TestServer::start();
    let mut client = server.connect();
    let response = client.request("GET", "/health/live", &["Connection: close"], None);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(client.is_closed_by_server());
}

#[test]
fn chunked_bodies_are_decoded() {
    let server = TestServer::start();
    let mut client = server.connect();
    let body = create_body("chunky");
    let (first, second) = body.split_at(10);
    let raw = format!(
        "POST /v1/sessions HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n\
         {:x};ext=1\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\nTrailer: x\r\n\r\n",
        first.len(),
        second.len()
    );
    client.send(raw.as_bytes());
    let response = client.read_response(false);
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(response.json()["id"], "chunky");
    assert_eq!(client.get("/v1/sessions/chunky").status, 200);
}

#[test]
fn body_of_exactly_the_limit_is_processed() {
    let server = TestServer::start();
    let mut client = server.connect();
    assert_eq!(
        client.post_json("/v1/sessions", &create_body("big")).status,
        201
    );
    let body = padded_event_body(BODY_LIMIT_BYTES);
    let head = format!(
        "POST /v1/sessions/big/append HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    client.send(head.as_bytes());
    client.send(&body);
    let response = client.read_response(false);
    assert_eq!(response.status, 201, "{}", response.text());
    // The connection stays usable.
    assert_eq!(client.get("/health/live").status, 200);
}

#[test]
fn body_over_the_limit_by_content_length_gets_413() {
    let server = TestServer::start();
    let mut client = server.connect();
    assert_eq!(
        client.post_json("/v1/sessions", &create_body("big")).status,
        201
    );
    let body = padded_event_body(BODY_LIMIT_BYTES + 1);
    let head = format!(
        "POST /v1/sessions/big/append HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    client.send(head.as_bytes());
    // The server may answer before the body is sent; a failed write is fine.
    let _ = client.stream.write_all(&body);
    let response = client.read_response(false);
    assert_eq!(response.status, 413);
    assert_eq!(
        response.text(),
        r#"{"error":"payload_too_large","message":"Request body too large"}"#
    );
    // Nothing was appended.
    let mut fresh = server.connect();
    assert_eq!(fresh.get("/v1/sessions/big").json()["last_seq"], 0);
}

#[test]
fn body_over_the_limit_while_streaming_chunks_gets_413() {
    let server = TestServer::start();
    let mut client = server.connect();
    assert_eq!(
        client.post_json("/v1/sessions", &create_body("big")).status,
        201
    );
    let body = padded_event_body(BODY_LIMIT_BYTES + 1);
    client.send(b"POST /v1/sessions/big/append HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    let mut sent_all = true;
    for chunk in body.chunks(1 << 20) {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        if client.stream.write_all(&framed).is_err() {
            sent_all = false;
            break;
        }
    }
    if sent_all {
        let _ = client.stream.write_all(b"0\r\n\r\n");
    }
    let response = client.read_response(false);
    assert_eq!(response.status, 413);
    let mut fresh = server.connect();
    assert_eq!(fresh.get("/v1/sessions/big").json()["last_seq"], 0);
}

#[test]
fn global_check_order() {
    let server = TestServer::start();
    let mut client = server.connect();
    // 404 wins over 406, for unknown paths and unserved methods, with the exact body.
    for (method, target) in [
        ("GET", "/nope"),
        ("DELETE", "/v1/sessions"),
        ("OPTIONS", "/v1/sessions"),
        ("PUT", "/health/live"),
    ] {
        let response = client.request(method, target, &["Accept: text/html"], None);
        assert_eq!(response.status, 404, "{method} {target}");
        assert_eq!(response.text(), r#"{"error":"not_found"}"#);
    }
    // 406 before 415 and 400.
    let response = client.request(
        "POST",
        "/v1/sessions",
        &["Accept: text/html", "Content-Type: text/plain"],
        Some("{"),
    );
    assert_eq!(response.status, 406);
    assert_eq!(
        response.text(),
        r#"{"error":"not_acceptable","message":"Not acceptable"}"#
    );
    // Health and the tail route do no Accept check.
    assert_eq!(
        client
            .request("GET", "/health/live", &["Accept: text/html"], None)
            .status,
        200
    );
    assert_eq!(
        client
            .request("GET", "/v1/sessions/x/tail", &["Accept: text/html"], None)
            .status,
        400
    );
    // 415 before 400.
    let response = client.request(
        "POST",
        "/v1/sessions",
        &["Content-Type: text/plain"],
        Some("{"),
    );
    assert_eq!(response.status, 415);
    assert_eq!(
        response.text(),
        r#"{"error":"unsupported_media_type","message":"Unsupported media type"}"#
    );
    // Malformed JSON.
    let response = client.request(
        "POST",
        "/v1/sessions",
        &["Content-Type: application/json"],
        Some("{"),
    );
    assert_eq!(
        response.text(),
        r#"{"error":"invalid_json","message":"Malformed JSON body"}"#
    );
    // A non-object is `{}`, so the route reports its own error.
    let response = client.request("POST", "/v1/sessions", &[], Some("[1,2]"));
    assert_eq!(response.json()["error"], "invalid_session");
    // An empty body is `{}` too.
    let response = client.request(
        "POST",
        "/v1/sessions",
        &["Content-Type: application/vnd.x+json"],
        Some(""),
    );
    assert_eq!(response.json()["error"], "invalid_session");
}

#[test]
fn oversized_body_on_an_unknown_route_is_404_and_413_comes_before_415() {
    let server = TestServer::start();
    let mut client = server.connect();
    let head = format!(
        "POST /nope HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        BODY_LIMIT_BYTES + 1
    );
    client.send(head.as_bytes());
    assert_eq!(client.read_response(false).status, 404);
    let mut client = server.connect();
    let head = format!(
        "POST /v1/sessions HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        BODY_LIMIT_BYTES + 1
    );
    client.send(head.as_bytes());
    assert_eq!(client.read_response(false).status, 413);
}

#[test]
fn head_mirrors_get_without_a_body() {
    let server = TestServer::start();
    let mut client = server.connect();
    let get = client.get("/v1/sessions");
    let head = client.request("HEAD", "/v1/sessions", &[], None);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), get.header("content-length"));
    assert_eq!(head.header("content-type"), get.header("content-type"));
    assert_eq!(
        client
            .request("HEAD", "/v1/sessions/none", &[], None)
            .status,
        404
    );
    // The connection is still in sync after HEAD responses.
    assert_eq!(client.get("/health/live").status, 200);
}

#[test]
fn request_ids_are_kept_only_when_valid() {
    let server = TestServer::start();
    let mut client = server.connect();
    let kept = client.request("GET", "/health/live", &["X-Request-Id: abc-123_XYZ"], None);
    assert_eq!(kept.header("x-request-id"), Some("abc-123_XYZ"));
    let longest = "r".repeat(128);
    let kept = client.request("GET", "/nope", &[&format!("x-request-id: {longest}")], None);
    assert_eq!(kept.header("x-request-id"), Some(longest.as_str()));
    let too_long = "r".repeat(129);
    for invalid in [
        format!("x-request-id: {too_long}"),
        "x-request-id:".to_owned(),
        "x-request-id: a b".to_owned(),
    ] {
        let replaced = client.request("GET", "/health/live", &[&invalid], None);
        assert_eq!(replaced.header_count("x-request-id"), 1);
        assert_eq!(
            replaced.header("x-request-id").unwrap().len(),
            32,
            "{invalid}"
        );
    }
}

#[test]
fn a_panicking_handler_gets_500_and_the_server_survives() {
    let server = TestServer::start();
    let mut client = server.connect();
    let response = client.get(&format!("/v1/sessions/{PANIC_SESSION_ID}"));
    assert_eq!(response.status, 500);
    assert_eq!(response.text(), r#"{"error":"internal_server_error"}"#);
    assert_eq!(client.get("/health/live").status, 200);
}

#[test]
fn idle_connections_are_closed() {
    let server = TestServer::start_with(
        |config| config.limits.idle_timeout = Duration::from_millis(200),
        false,
    );
    let mut client = server.connect();
    assert_eq!(client.get("/health/live").status, 200);
    let started = std::time::Instant::now();
    assert!(client.is_closed_by_server());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn incomplete_requests_time_out() {
    let server = TestServer::start_with(
        |config| config.limits.read_timeout = Duration::from_millis(200),
        false,
    );
    let mut client = server.connect();
    client.send(b"POST /v1/sessions HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
    assert!(client.is_closed_by_server());
}

#[test]
fn oversized_heads_get_431_and_garbage_gets_400() {
    let server = TestServer::start();
    let mut client = server.connect();
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    client.send(huge.as_bytes());
    assert_eq!(client.read_response(false).status, 431);
    let mut client = server.connect();
    client.send(b"\x16\x03\x01 not http at all\r\n\r\n");
    let response = client.read_response(false);
    assert_eq!(response.status, 400);
    assert_eq!(response.header_count("x-request-id"), 1);
}

#[test]
fn expect_continue_gets_an_interim_response() {
    let server = TestServer::start();
    let mut client = server.connect();
    let body = create_body("expecting");
    let head = format!(
        "POST /v1/sessions HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    client.send(head.as_bytes());
    assert_eq!(client.read_response(true).status, 100);
    client.send(body.as_bytes());
    assert_eq!(client.read_response(false).status, 201);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

    /// Whatever bytes a client sends, the server keeps answering other clients.
    #[test]
    fn random_bytes_never_break_the_server(garbage in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let server = shared_server();
        {
            let mut client = server.connect();
            client.stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let _ = client.stream.write_all(&garbage);
            let _ = client.stream.shutdown(std::net::Shutdown::Write);
        }
        let mut client = server.connect();
        prop_assert_eq!(client.get("/health/live").status, 200);
    }
}

fn shared_server() -> &'static TestServer {
    static SERVER: std::sync::OnceLock<TestServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(TestServer::start)
}

/// Every shard binds the same port: glommio sets `SO_REUSEPORT` on its listeners.
#[test]
fn two_shards_can_bind_the_same_port() {
    let server = TestServer::start();
    let port = server.address.port();
    let bound = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            let config = starcite_net::server::NetConfig {
                port,
                ..Default::default()
            };
            starcite_net::server::bind(&config).is_ok()
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(bound);
}

#[test]
fn http_1_0_keep_alive_is_announced() {
    let server = TestServer::start();
    let mut client = server.connect();
    client.send(b"GET /health/live HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let kept = client.read_response(false);
    assert_eq!(kept.header("connection"), Some("keep-alive"));
    client.send(b"GET /health/live HTTP/1.0\r\n\r\n");
    let closed = client.read_response(false);
    assert_eq!(closed.header("connection"), Some("close"));
    assert!(client.is_closed_by_server());
}
