//! The worked examples of http-api.md §13 (mode `none`, fresh single node), verbatim, plus the tail
//! example of tail.md §8 over a real WebSocket client.

use std::time::Duration;

use serde_json::{json, Value};
use starcite_tests::{Server, TailClient};

fn creator() -> Value {
    json!({"tenant_id":"acme","id":"u1","type":"user"})
}

fn assert_error(response: &starcite_tests::Response, status: u16, code: &str, message: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.json(), json!({"error": code, "message": message}));
    assert_eq!(
        response.header("content-type"),
        Some("application/json; charset=utf-8"),
        "content type of {status}"
    );
}

fn is_timestamp(value: &Value) -> bool {
    let text = value.as_str().unwrap_or("");
    // YYYY-MM-DDTHH:MM:SS.ffffffZ
    text.len() == 27
        && text.ends_with('Z')
        && text.as_bytes()[10] == b'T'
        && text.as_bytes()[19] == b'.'
        && text[20..26].bytes().all(|b| b.is_ascii_digit())
}

#[test]
fn worked_examples_mode_none() {
    let server = Server::start();
    let mut c = server.client();

    // Create s1.
    let created = c
        .post_json(
            "/v1/sessions",
            &json!({"id":"s1","creator_principal":creator()}),
        )
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    let body = created.json();
    assert_eq!(body["id"], "s1");
    assert_eq!(body["title"], Value::Null);
    assert_eq!(body["creator_principal"], creator());
    assert_eq!(body["metadata"], json!({"tenant_id":"acme"}));
    assert_eq!(body["last_seq"], 0);
    assert!(is_timestamp(&body["created_at"]), "{body}");
    assert_eq!(body["created_at"], body["updated_at"]);
    let mut keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "created_at",
            "creator_principal",
            "id",
            "last_seq",
            "metadata",
            "title",
            "updated_at"
        ]
    );

    // Duplicate create.
    let again = c
        .post_json(
            "/v1/sessions",
            &json!({"id":"s1","creator_principal":creator()}),
        )
        .unwrap();
    assert_error(&again, 409, "session_exists", "Session already exists");

    // Missing creator.
    let no_creator = c.post_json("/v1/sessions", &json!({"id":"s2"})).unwrap();
    assert_error(
        &no_creator,
        400,
        "invalid_session",
        "Invalid session payload",
    );

    // Tenant fencing.
    let fenced = c
        .post_json(
            "/v1/sessions",
            &json!({"creator_principal":creator(),"metadata":{"tenant_id":"beta"}}),
        )
        .unwrap();
    assert_error(
        &fenced,
        403,
        "forbidden_tenant",
        "Token tenant does not match session tenant",
    );

    let b = json!({"type":"t","payload":{},"actor":"a","producer_id":"p","producer_seq":1});
    let first = c.post_json("/v1/sessions/s1/append", &b).unwrap();
    assert_eq!(first.status, 201, "{}", first.text());
    assert_eq!(first.json(), json!({"seq":1,"last_seq":1,"deduped":false}));
    let retry = c.post_json("/v1/sessions/s1/append", &b).unwrap();
    assert_eq!(retry.status, 201);
    assert_eq!(retry.json(), json!({"seq":1,"last_seq":1,"deduped":true}));

    let replay = c
        .post_json(
            "/v1/sessions/s1/append",
            &json!({"type":"t","payload":{"x":1},"actor":"a","producer_id":"p","producer_seq":1}),
        )
        .unwrap();
    assert_error(
        &replay,
        409,
        "producer_replay_conflict",
        "Producer sequence was already used with different event content",
    );

    let gap = c
        .post_json(
            "/v1/sessions/s1/append",
            &json!({"type":"t","payload":{},"actor":"a","producer_id":"p","producer_seq":3}),
        )
        .unwrap();
    assert_error(
        &gap,
        409,
        "producer_seq_conflict",
        "Producer p expected seq 2, got 3",
    );

    let expected = c
        .post_json(
            "/v1/sessions/s1/append",
            &json!({"type":"t","payload":{},"actor":"a","producer_id":"p","producer_seq":2,"expected_seq":0}),
        )
        .unwrap();
    assert_error(
        &expected,
        409,
        "expected_seq_conflict",
        "Expected seq 0, current seq is 1",
    );

    let conditional = json!({"type":"t","payload":{},"actor":"a","producer_id":"p","producer_seq":2,"expected_seq":1});
    let ok = c.post_json("/v1/sessions/s1/append", &conditional).unwrap();
    assert_eq!(ok.status, 201);
    assert_eq!(ok.json(), json!({"seq":2,"last_seq":2,"deduped":false}));
    // Same request again: dedupe wins over expected_seq.
    let deduped = c.post_json("/v1/sessions/s1/append", &conditional).unwrap();
    assert_eq!(deduped.status, 201);
    assert_eq!(deduped.json(), json!({"seq":2,"last_seq":2,"deduped":true}));

    let string_seq = c
        .post_json(
            "/v1/sessions/s1/append",
            &json!({"type":"t","payload":{},"actor":"a","producer_id":"q","producer_seq":"1"}),
        )
        .unwrap();
    assert_eq!(string_seq.status, 201);
    assert_eq!(
        string_seq.json(),
        json!({"seq":3,"last_seq":3,"deduped":false})
    );

    let no_actor = c
        .post_json(
            "/v1/sessions/s1/append",
            &json!({"type":"t","payload":{},"producer_id":"r","producer_seq":1}),
        )
        .unwrap();
    assert_error(&no_actor, 400, "invalid_event", "Invalid event payload");

    let missing = c.post_json("/v1/sessions/nope/append", &b).unwrap();
    assert_error(&missing, 404, "session_not_found", "Session was not found");

    let list = c.get("/v1/sessions?limit=1").unwrap();
    assert_eq!(list.status, 200);
    let list = list.json();
    assert_eq!(list["next_cursor"], Value::Null);
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(list["sessions"][0]["id"], "s1");
    assert_eq!(list["sessions"][0]["last_seq"], 3);
    assert_eq!(list["sessions"][0]["archived_seq"], 0);

    let zero = c.get("/v1/sessions?limit=0").unwrap();
    assert_error(&zero, 400, "invalid_limit", "Invalid limit value");

    let tail = c.get("/v1/sessions/s1/tail").unwrap();
    assert_error(
        &tail,
        400,
        "invalid_websocket_upgrade",
        "WebSocket upgrade required",
    );

    let events = c.get("/v1/sessions/s1/events?cursor=1&limit=1").unwrap();
    assert_eq!(events.status, 200, "{}", events.text());
    let events = events.json();
    assert_eq!(events["next_cursor"], 2);
    let event = &events["events"][0];
    assert_eq!(event["seq"], 2);
    assert_eq!(event["type"], "t");
    assert_eq!(event["payload"], json!({}));
    assert_eq!(event["actor"], "a");
    assert_eq!(event["producer_id"], "p");
    assert_eq!(event["producer_seq"], 2);
    assert_eq!(event["metadata"], json!({}));
    assert_eq!(event["refs"], json!({}));
    assert_eq!(event["idempotency_key"], Value::Null);
    assert!(
        event.get("source").is_none(),
        "source must be omitted: {event}"
    );
    assert!(is_timestamp(&event["inserted_at"]));

    let delete = c.request("DELETE", "/v1/sessions", &[], None).unwrap();
    assert_eq!(delete.status, 404);
    assert_eq!(delete.text(), r#"{"error":"not_found"}"#);

    let html = c
        .request("GET", "/v1/sessions", &[("accept", "text/html")], None)
        .unwrap();
    assert_error(&html, 406, "not_acceptable", "Not acceptable");

    // tail.md §8: replay from cursor 1, then live frames.
    let mut tail = TailClient::connect(server.http_addr, "s1", 1);
    let replayed = tail.read_until(3, Duration::from_secs(10));
    assert_eq!(replayed.len(), 2);
    assert_eq!(replayed[0], events["events"][0]);
    let live = c
        .post_json(
            "/v1/sessions/s1/append",
            &json!({"type":"t","payload":{"live":true},"actor":"a","producer_id":"q","producer_seq":2}),
        )
        .unwrap();
    assert_eq!(live.status, 201);
    let frames = tail.read_until(4, Duration::from_secs(10));
    assert_eq!(frames[0]["payload"], json!({"live":true}));
    tail.close();
}

#[test]
fn health_and_metrics() {
    let server = Server::start();
    let mut c = server.client();
    let live = c.get("/health/live").unwrap();
    assert_eq!(live.status, 200);
    assert_eq!(live.json(), json!({"status":"ok"}));
    let ready = c.get("/health/ready").unwrap();
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json(), json!({"status":"ok","mode":"write_node"}));

    let metrics = c.get("/metrics").unwrap();
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = metrics.text();
    for name in [
        "starcite_appends_total",
        "starcite_append_duration_seconds_bucket",
        "starcite_tail_connections",
        "starcite_raft_groups",
        "starcite_wal_fsync_duration_seconds_bucket",
        "starcite_archive_lag_events",
        "starcite_event_store_unarchived_bytes",
        "starcite_http_requests_total",
    ] {
        assert!(text.contains(name), "metrics lack {name}");
    }
    let appended = |text: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with("starcite_appends_total{outcome=\"appended\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let before = appended(&text);
    server.create_session("m1");
    let response = c
        .post_json(
            "/v1/sessions/m1/append",
            &starcite_tests::event_body("p", 1),
        )
        .unwrap();
    assert_eq!(response.status, 201);
    let after = appended(&c.get("/metrics").unwrap().text());
    assert_eq!(after, before + 1.0);
}

#[test]
fn metrics_can_be_disabled() {
    let server = Server::start_with(
        starcite_tests::ServerOptions::default().with("STARCITE_METRICS_ENABLED", "false"),
    );
    let response = server.client().get("/metrics").unwrap();
    assert_eq!(response.status, 404);
    assert_eq!(response.text(), r#"{"error":"not_found"}"#);
}
