//! The public routes of http-api.md §3–§11 in auth mode `none`, against the in-memory service.

#![allow(clippy::unwrap_used)]

mod http_support;

use http_support::{create_body, event_body, Client, TestServer};
use serde_json::{json, Value};

fn append(client: &mut Client, session: &str, body: &Value) -> (u16, Value) {
    let response = client.post_json(&format!("/v1/sessions/{session}/append"), &body.to_string());
    (response.status, response.json())
}

fn event(producer: &str, producer_seq: Value) -> Value {
    json!({"type": "t", "payload": {}, "actor": "a", "producer_id": producer, "producer_seq": producer_seq})
}

#[test]
fn create_session_rules_and_response_shape() {
    let server = TestServer::start();
    let mut client = server.connect();
    let response = client.post_json("/v1/sessions", &create_body("s1"));
    assert_eq!(response.status, 201);
    assert_eq!(
        response.json(),
        json!({"id":"s1","title":null,"creator_principal":{"tenant_id":"acme","id":"u1","type":"user"},
               "metadata":{"tenant_id":"acme"},"last_seq":0,
               "created_at":"2026-01-05T10:11:12.123456Z","updated_at":"2026-01-05T10:11:12.123456Z"})
    );
    let again = client.post_json("/v1/sessions", &create_body("s1"));
    assert_eq!(again.status, 409);
    assert_eq!(
        again.text(),
        r#"{"error":"session_exists","message":"Session already exists"}"#
    );
    assert_eq!(
        client.post_json("/v1/sessions", r#"{"id":"s2"}"#).json()["error"],
        "invalid_session"
    );
    let foreign = json!({"creator_principal":{"tenant_id":"acme","id":"u1","type":"user"},"metadata":{"tenant_id":"beta"}});
    let response = client.post_json("/v1/sessions", &foreign.to_string());
    assert_eq!(response.status, 403);
    assert_eq!(response.json()["error"], "forbidden_tenant");
    let generated = client.post_json(
        "/v1/sessions",
        r#"{"creator_principal":{"tenant_id":"t","id":"u","type":"agent"}}"#,
    );
    let id = generated.json()["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ses_") && id.len() == 20, "{id}");
}

#[test]
fn form_bodies_follow_the_query_rules() {
    let server = TestServer::start();
    let mut client = server.connect();
    let form = "id=f1&title=Hello+World&creator_principal[tenant_id]=acme&creator_principal[id]=u1\
                &creator_principal[type]=user&metadata[k]=v";
    let response = client.request(
        "POST",
        "/v1/sessions",
        &["Content-Type: application/x-www-form-urlencoded"],
        Some(form),
    );
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(response.json()["title"], "Hello World");
    assert_eq!(
        response.json()["metadata"],
        json!({"k":"v","tenant_id":"acme"})
    );
}

#[test]
fn append_outcomes_follow_the_worked_examples() {
    let server = TestServer::start();
    let mut client = server.connect();
    client.post_json("/v1/sessions", &create_body("s1"));
    let single = event("p", json!(1));
    assert_eq!(
        append(&mut client, "s1", &single),
        (201, json!({"seq":1,"last_seq":1,"deduped":false}))
    );
    assert_eq!(
        append(&mut client, "s1", &single),
        (201, json!({"seq":1,"last_seq":1,"deduped":true}))
    );
    let mut changed = single.clone();
    changed["payload"] = json!({"x": 1});
    assert_eq!(
        append(&mut client, "s1", &changed).1["error"],
        "producer_replay_conflict"
    );
    let (status, body) = append(&mut client, "s1", &event("p", json!(3)));
    assert_eq!(
        (status, body["message"].as_str()),
        (409, Some("Producer p expected seq 2, got 3"))
    );
    let mut expecting = event("p", json!(2));
    expecting["expected_seq"] = json!(0);
    assert_eq!(
        append(&mut client, "s1", &expecting).1["message"],
        "Expected seq 0, current seq is 1"
    );
    expecting["expected_seq"] = json!(1);
    assert_eq!(append(&mut client, "s1", &expecting).0, 201);
    assert_eq!(append(&mut client, "s1", &expecting).1["deduped"], true);
    assert_eq!(
        append(&mut client, "s1", &event("q", json!("1"))).1["seq"],
        3
    );
    let mut no_actor = event("r", json!(1));
    no_actor.as_object_mut().unwrap().remove("actor");
    assert_eq!(
        append(&mut client, "s1", &no_actor).1["error"],
        "invalid_event"
    );
    let (status, body) = append(&mut client, "nope", &single);
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("session_not_found"))
    );
    // Validation comes before the session lookup.
    assert_eq!(
        append(&mut client, "nope", &json!({})).1["error"],
        "invalid_event"
    );
}

#[test]
fn batch_append() {
    let server = TestServer::start();
    let mut client = server.connect();
    client.post_json("/v1/sessions", &create_body("b"));
    let batch = json!({"events": [event("p", json!(1)), event("p", json!(2))]});
    assert_eq!(
        append(&mut client, "b", &batch),
        (
            201,
            json!({"results":[{"seq":1,"last_seq":1,"deduped":false},{"seq":2,"last_seq":2,"deduped":false}],"last_seq":2})
        )
    );
    assert_eq!(
        append(&mut client, "b", &json!({"events": []})).1["error"],
        "invalid_event"
    );
    let bad_refs = json!({"events": [event("p", json!(3)), {"type":"t","payload":{},"actor":"a","producer_id":"p","producer_seq":4,"refs":1}]});
    assert_eq!(
        append(&mut client, "b", &bad_refs).1["error"],
        "invalid_refs"
    );
}

#[test]
fn list_sessions_paging_and_filters() {
    let server = TestServer::start();
    let mut client = server.connect();
    for id in ["a", "b", "c"] {
        let body = json!({"id": id, "creator_principal": {"tenant_id": "acme", "id": "u1", "type": "user"},
                          "metadata": {"color": if id == "b" { "blue" } else { "red" }}});
        assert_eq!(
            client.post_json("/v1/sessions", &body.to_string()).status,
            201
        );
    }
    let page = client.get("/v1/sessions?limit=2").json();
    assert_eq!(page["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_cursor"], "b");
    assert_eq!(page["sessions"][0]["archived_seq"], 0);
    let rest = client.get("/v1/sessions?limit=2&cursor=b").json();
    assert_eq!(rest["sessions"][0]["id"], "c");
    assert_eq!(rest["next_cursor"], Value::Null);
    let red = client.get("/v1/sessions?metadata[color]=red").json();
    assert_eq!(red["sessions"].as_array().unwrap().len(), 2);
    let dotted = client
        .get("/v1/sessions?metadata[color]=red&metadata.color=blue")
        .json();
    assert_eq!(dotted["sessions"][0]["id"], "b");
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=5+", "invalid_limit"),
        ("limit=1001", "invalid_limit"),
        ("cursor=", "invalid_cursor"),
        ("metadata=x", "invalid_metadata"),
        ("metadata[a][b]=x", "invalid_metadata"),
        ("limit=x&cursor=", "invalid_limit"),
        ("cursor=&metadata=x", "invalid_cursor"),
    ] {
        let response = client.get(&format!("/v1/sessions?{query}"));
        assert_eq!(
            (response.status, response.json()["error"].as_str()),
            (400, Some(code)),
            "{query}"
        );
    }
    let response = client.request("GET", "/v1/sessions", &["Accept: text/html"], None);
    assert_eq!(response.status, 406);
}

#[test]
fn get_session_and_range_reads() {
    let server = TestServer::start();
    let mut client = server.connect();
    client.post_json("/v1/sessions", &create_body("a/b"));
    for seq in 1..=3 {
        client.post_json("/v1/sessions/a%2Fb/append", &event_body(seq));
    }
    let session = client.get("/v1/sessions/a%2Fb").json();
    assert_eq!(
        (session["id"].as_str(), session["last_seq"].as_u64()),
        (Some("a/b"), Some(3))
    );
    assert_eq!(
        client.get("/v1/sessions/missing").json()["error"],
        "session_not_found"
    );
    let page = client
        .get("/v1/sessions/a%2Fb/events?cursor=1&limit=1")
        .json();
    assert_eq!(page["events"][0]["seq"], 2);
    assert_eq!(page["next_cursor"], 2);
    let tail_page = client.get("/v1/sessions/a%2Fb/events?cursor=2").json();
    assert_eq!(tail_page["next_cursor"], Value::Null);
    let empty = client.get("/v1/sessions/a%2Fb/events?cursor=9").json();
    assert_eq!(empty, json!({"events": [], "next_cursor": null}));
    assert_eq!(
        client
            .get("/v1/sessions/a%2Fb/events?cursor=-1&limit=0")
            .json()["error"],
        "invalid_cursor"
    );
    assert_eq!(
        client.get("/v1/sessions/a%2Fb/events?limit=0").json()["error"],
        "invalid_limit"
    );
    assert_eq!(
        client.get("/v1/sessions/missing/events?limit=0").json()["error"],
        "invalid_limit"
    );
    assert_eq!(
        client.get("/v1/sessions/missing/events").json()["error"],
        "session_not_found"
    );
}

#[test]
fn tail_checks_before_the_upgrade() {
    let server = TestServer::start();
    let mut client = server.connect();
    client.post_json("/v1/sessions", &create_body("t1"));
    let plain = client.get("/v1/sessions/t1/tail");
    assert_eq!(
        plain.text(),
        r#"{"error":"invalid_websocket_upgrade","message":"WebSocket upgrade required"}"#
    );
    let upgrade = ["Upgrade: websocket", "Connection: Upgrade"];
    let bad_cursor = client.request(
        "GET",
        "/v1/sessions/missing/tail?cursor=1.5",
        &upgrade,
        None,
    );
    assert_eq!(bad_cursor.json()["error"], "invalid_cursor");
    let missing = client.request("GET", "/v1/sessions/missing/tail", &upgrade, None);
    assert_eq!(missing.json()["error"], "session_not_found");
    let no_key = client.request(
        "GET",
        "/v1/sessions/t1/tail?access_token=whatever",
        &upgrade,
        None,
    );
    assert_eq!(no_key.json()["error"], "invalid_websocket_upgrade");
    let handshake = [
        "Upgrade: WebSocket",
        "Connection: keep-alive, Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        "Authorization: Bearer nonsense",
    ];
    let switched = client.request("GET", "/v1/sessions/t1/tail?cursor=0", &handshake, None);
    assert_eq!(switched.status, 101);
    assert_eq!(
        switched.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(switched.header_count("x-request-id"), 1);
}

#[test]
fn health_and_metrics() {
    let server = TestServer::start();
    let mut client = server.connect();
    assert_eq!(
        client.get("/health/ready").text(),
        r#"{"mode":"write_node","status":"ok"}"#
    );
    let metrics = client.request("GET", "/metrics", &["Accept: text/html"], None);
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );

    let starting = TestServer::start_with(|config| config.metrics_enabled = false, true);
    let mut client = starting.connect();
    let ready = client.get("/health/ready");
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.json(),
        json!({"status":"starting","mode":"write_node","reason":"raft_sync","detail":{"probe_result":"startup_sync"}})
    );
    assert_eq!(client.get("/metrics").text(), r#"{"error":"not_found"}"#);
}

#[test]
fn token_issue_is_forbidden_in_mode_none() {
    let server = TestServer::start();
    let mut client = server.connect();
    let shaped =
        r#"{"principal":{"tenant_id":"acme","id":"u1","type":"user"},"scopes":["session:read"]}"#;
    assert_eq!(
        client.post_json("/v1/auth/issue", shaped).json()["error"],
        "forbidden"
    );
    assert_eq!(
        client
            .post_json("/v1/auth/issue", r#"{"principal":{}}"#)
            .json()["error"],
        "invalid_issue_request"
    );
}
