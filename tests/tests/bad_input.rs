//! Bad input against a real node: a table of malformed requests with their exact contract errors,
//! random JSON bodies and random bytes on raw sockets. Afterwards the server still answers and no
//! rejected request changed state.

use std::io::{Read, Write};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};
use starcite_tests::{creator, HttpClient, Server};

/// `(method, path, headers, body, status, error code)`; `None` code = check status only.
type Case = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    Option<String>,
    u16,
    Option<&'static str>,
);

fn append(body: Value) -> Option<String> {
    Some(body.to_string())
}

fn cases() -> Vec<Case> {
    let json_ct = vec![("content-type", "application/json")];
    let ev = |extra: Value| {
        let mut base =
            json!({"type":"t","payload":{},"actor":"a","producer_id":"bad","producer_seq":1});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() && k.starts_with('-') {
                base.as_object_mut().unwrap().remove(&k[1..]);
            } else {
                base[k] = v.clone();
            }
        }
        append(base)
    };
    let ap = "/v1/sessions/b1/append";
    vec![
        (
            "POST",
            "/v1/sessions",
            json_ct.clone(),
            Some("{".into()),
            400,
            Some("invalid_json"),
        ),
        (
            "POST",
            "/v1/sessions",
            json_ct.clone(),
            Some("[1,2]".into()),
            400,
            Some("invalid_session"),
        ),
        (
            "POST",
            "/v1/sessions",
            vec![("content-type", "text/plain")],
            Some("{}".into()),
            415,
            Some("unsupported_media_type"),
        ),
        (
            "POST",
            "/v1/sessions",
            json_ct.clone(),
            append(json!({"id":"","creator_principal":creator()})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            "/v1/sessions",
            json_ct.clone(),
            append(json!({"id":5,"creator_principal":creator()})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            "/v1/sessions",
            json_ct.clone(),
            append(json!({"title":7,"creator_principal":creator()})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            "/v1/sessions",
            json_ct.clone(),
            append(json!({"metadata":[1],"creator_principal":creator()})),
            400,
            Some("invalid_metadata"),
        ),
        (
            "POST",
            "/v1/sessions",
            json_ct.clone(),
            append(json!({"creator_principal":{"tenant_id":"acme","id":"u1","type":"robot"}})),
            400,
            Some("invalid_session"),
        ),
        (
            "POST",
            "/v1/sessions",
            json_ct.clone(),
            append(json!({"creator_principal":{"tenant_id":"","id":"u1","type":"user"}})),
            400,
            Some("invalid_session"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            ev(json!({"type":""})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            ev(json!({"payload":[1]})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            ev(json!({"payload":null})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            ev(json!({"producer_id":""})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            ev(json!({"producer_seq":0})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            ev(json!({"producer_seq":1.5})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            ev(json!({"producer_seq":"1a"})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            ev(json!({"producer_seq":9223372036854775808u64})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            ev(json!({"actor":""})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            ev(json!({"source":""})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            ev(json!({"metadata":"x"})),
            400,
            Some("invalid_metadata"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            ev(json!({"refs":[]})),
            400,
            Some("invalid_refs"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            ev(json!({"refs":{"to_seq":-1}})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            ev(json!({"refs":{"request_id":5}})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            ev(json!({"idempotency_key":""})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            ev(json!({"expected_seq":-1})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            ev(json!({"expected_seq":"x"})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            append(json!({"events":[]})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            append(json!({"events":"x"})),
            400,
            Some("invalid_event"),
        ),
        (
            "POST",
            ap,
            json_ct.clone(),
            Some("{\"type\":".into()),
            400,
            Some("invalid_json"),
        ),
        (
            "POST",
            ap,
            vec![("content-type", "application/xml")],
            Some("<a/>".into()),
            415,
            Some("unsupported_media_type"),
        ),
        (
            "POST",
            ap,
            vec![("accept", "text/html")],
            ev(json!({})),
            406,
            Some("not_acceptable"),
        ),
        ("GET", ap, vec![], None, 404, None),
        ("PUT", "/v1/sessions", vec![], None, 404, None),
        ("OPTIONS", "/v1/sessions", vec![], None, 404, None),
        ("GET", "/nope", vec![], None, 404, None),
        (
            "GET",
            "/v1/sessions?limit=abc",
            vec![],
            None,
            400,
            Some("invalid_limit"),
        ),
        (
            "GET",
            "/v1/sessions?limit=1001",
            vec![],
            None,
            400,
            Some("invalid_limit"),
        ),
        (
            "GET",
            "/v1/sessions?limit=5+",
            vec![],
            None,
            400,
            Some("invalid_limit"),
        ),
        (
            "GET",
            "/v1/sessions?limit=99999999999999999999",
            vec![],
            None,
            400,
            Some("invalid_limit"),
        ),
        (
            "GET",
            "/v1/sessions?cursor=",
            vec![],
            None,
            400,
            Some("invalid_cursor"),
        ),
        (
            "GET",
            "/v1/sessions?metadata=x",
            vec![],
            None,
            400,
            Some("invalid_metadata"),
        ),
        (
            "GET",
            "/v1/sessions/b1/events?cursor=1e3",
            vec![],
            None,
            400,
            Some("invalid_cursor"),
        ),
        (
            "GET",
            "/v1/sessions/b1/events?cursor=9223372036854775808",
            vec![],
            None,
            400,
            Some("invalid_cursor"),
        ),
        (
            "GET",
            "/v1/sessions/b1/events?limit=0",
            vec![],
            None,
            400,
            Some("invalid_limit"),
        ),
        (
            "GET",
            "/v1/sessions/b1/tail",
            vec![],
            None,
            400,
            Some("invalid_websocket_upgrade"),
        ),
    ]
}

fn state_of(client: &mut HttpClient) -> Value {
    let session = client.get("/v1/sessions/b1").unwrap();
    let events = client.get("/v1/sessions/b1/events?limit=1000").unwrap();
    let list = client.get("/v1/sessions?limit=1000").unwrap();
    json!([session.json(), events.json(), list.json()])
}

#[test]
fn table_of_bad_requests() {
    let server = Server::start();
    server.create_session("b1");
    let mut client = server.client();
    let ok = client
        .post_json(
            "/v1/sessions/b1/append",
            &starcite_tests::event_body("good", 1),
        )
        .unwrap();
    assert_eq!(ok.status, 201);
    let before = state_of(&mut client);
    for (method, path, headers, body, status, code) in cases() {
        let response = client
            .request(method, path, &headers, body.as_deref().map(str::as_bytes))
            .unwrap();
        assert_eq!(
            response.status,
            status,
            "{method} {path} {body:?}: {}",
            response.text()
        );
        if let Some(code) = code {
            assert_eq!(response.json()["error"], code, "{method} {path} {body:?}");
            assert!(response.json()["message"].is_string());
        } else if status == 404 {
            assert_eq!(response.text(), r#"{"error":"not_found"}"#);
        }
        assert_eq!(response.header_count("x-request-id"), 1);
    }
    assert_eq!(
        state_of(&mut client),
        before,
        "a rejected request changed state"
    );
}

#[test]
fn body_size_limit_is_exact() {
    let server = Server::start();
    server.create_session("big");
    let mut client = server.client();
    // Exactly 8,000,000 bytes is processed: a valid event padded with whitespace.
    let body = starcite_tests::event_body("big", 1).to_string();
    let mut exact = body.clone().into_bytes();
    exact.resize(8_000_000, b' ');
    let response = client
        .request(
            "POST",
            "/v1/sessions/big/append",
            &[("content-type", "application/json")],
            Some(&exact),
        )
        .unwrap();
    assert_eq!(response.status, 201, "{}", response.text());
    // One more byte is 413 and not processed.
    let mut over = starcite_tests::event_body("big", 2)
        .to_string()
        .into_bytes();
    over.resize(8_000_001, b' ');
    let mut client = server.client();
    let response = client
        .request(
            "POST",
            "/v1/sessions/big/append",
            &[("content-type", "application/json")],
            Some(&over),
        )
        .unwrap();
    assert_eq!(response.status, 413);
    assert_eq!(
        response.json(),
        json!({"error":"payload_too_large","message":"Request body too large"})
    );
    // Chunked over the limit is 413 too.
    let mut client = server.client();
    let mut request = b"POST /v1/sessions/big/append HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    let chunk = vec![b' '; 1_000_000];
    for _ in 0..9 {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let _ = client.send_raw(&request);
    let response = client.read_response(false).unwrap();
    assert_eq!(response.status, 413);
    let events = server
        .client()
        .get("/v1/sessions/big/events")
        .unwrap()
        .json();
    assert_eq!(events["events"].as_array().unwrap().len(), 1);
}

#[test]
fn slow_and_silent_clients_do_not_hold_the_server() {
    let server = Server::start();
    // Many connections that send half a request head and stop.
    let mut silent = Vec::new();
    for _ in 0..200 {
        let mut stream = std::net::TcpStream::connect(server.http_addr).unwrap();
        stream
            .write_all(b"POST /v1/sessions HTTP/1.1\r\ncontent-length: 100\r\n")
            .unwrap();
        silent.push(stream);
    }
    // The server still answers others.
    let response = server.client().get("/health/live").unwrap();
    assert_eq!(response.status, 200);
    drop(silent);
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![Just("t"), Just("a"), Just("p"), Just("1")].prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_string()),
                    Just("payload".to_string()),
                    Just("actor".to_string()),
                    Just("producer_id".to_string()),
                    Just("producer_seq".to_string()),
                    Just("metadata".to_string()),
                    Just("refs".to_string()),
                    Just("events".to_string()),
                    Just("expected_seq".to_string()),
                    ".{0,6}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn random_bodies_and_random_bytes_never_break_the_server() {
    let server = Server::start();
    server.create_session("fz");
    let addr = server.http_addr;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        ..ProptestConfig::default()
    });
    let client = std::cell::RefCell::new(server.client());
    runner
        .run(&arbitrary_json(), |body| {
            for path in ["/v1/sessions/fz/append", "/v1/sessions"] {
                let response = client.borrow_mut().post_json(path, &body).unwrap();
                prop_assert!(
                    response.status != 500,
                    "500 for {body}: {}",
                    response.text()
                );
                prop_assert!(response.status < 600);
            }
            Ok(())
        })
        .unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 200,
        ..ProptestConfig::default()
    });
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..2048), |bytes| {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let _ = stream.write_all(&bytes);
            let _ = stream.write_all(b"\r\n\r\n");
            let mut sink = [0u8; 4096];
            let _ = stream.read(&mut sink);
            Ok(())
        })
        .unwrap();
    // Still healthy, and valid requests still work.
    let mut client = server.client();
    assert_eq!(client.get("/health/live").unwrap().status, 200);
    let created = client
        .post_json(
            "/v1/sessions",
            &json!({"id":"after-fuzz","creator_principal":creator()}),
        )
        .unwrap();
    assert_eq!(created.status, 201);
}
