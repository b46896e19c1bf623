//! Acceptance scenarios that run against any node: a fresh single node, or any write or router
//! node of a cluster. Each run names its sessions (and for the worked examples its tenant) so
//! that several runs against one cluster do not see each other's data; apart from those names
//! the compared bodies are the contract's.

use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{event_body, HttpClient, Response, Server, TailClient};

/// The names one scenario run uses.
#[derive(Clone, Debug)]
pub struct ScenarioRun {
    /// Prepended to every session id of the run.
    pub session_prefix: String,
    /// `creator_principal.tenant_id` of the worked examples.
    pub tenant: String,
    /// The node holds no other sessions, so the unfiltered list shows exactly this run's.
    pub fresh_node: bool,
}

impl ScenarioRun {
    /// The contract's names verbatim (`s1`, tenant `acme`), on a node with no other sessions.
    pub fn fresh_node() -> ScenarioRun {
        ScenarioRun {
            session_prefix: String::new(),
            tenant: "acme".to_string(),
            fresh_node: true,
        }
    }

    /// Names of a run labelled `label` on a node shared with other runs.
    pub fn shared(label: &str) -> ScenarioRun {
        ScenarioRun {
            session_prefix: format!("{label}-"),
            tenant: format!("acme-{label}"),
            fresh_node: false,
        }
    }

    /// The session id `name` of this run.
    pub fn session(&self, name: &str) -> String {
        format!("{}{name}", self.session_prefix)
    }

    fn creator(&self) -> Value {
        json!({"tenant_id": self.tenant, "id": "u1", "type": "user"})
    }
}

fn assert_error(response: &Response, status: u16, code: &str, message: &str) {
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

/// The worked examples of http-api.md §13 (mode `none`) in order, then the tail example of
/// tail.md §8 over a real WebSocket client, all through `server`.
pub fn worked_examples(server: &Server, run: &ScenarioRun) {
    let mut c = server.client();
    let s1 = run.session("s1");
    let creator = run.creator();

    // Create s1.
    let created = c
        .post_json(
            "/v1/sessions",
            &json!({"id": s1, "creator_principal": creator}),
        )
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    let body = created.json();
    assert_eq!(body["id"], s1.as_str());
    assert_eq!(body["title"], Value::Null);
    assert_eq!(body["creator_principal"], creator);
    assert_eq!(body["metadata"], json!({"tenant_id": run.tenant}));
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
            &json!({"id": s1, "creator_principal": creator}),
        )
        .unwrap();
    assert_error(&again, 409, "session_exists", "Session already exists");

    // Missing creator.
    let no_creator = c
        .post_json("/v1/sessions", &json!({"id": run.session("s2")}))
        .unwrap();
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
            &json!({"creator_principal": creator, "metadata": {"tenant_id": "beta"}}),
        )
        .unwrap();
    assert_error(
        &fenced,
        403,
        "forbidden_tenant",
        "Token tenant does not match session tenant",
    );

    let append = format!("/v1/sessions/{s1}/append");
    let b = json!({"type":"t","payload":{},"actor":"a","producer_id":"p","producer_seq":1});
    let first = c.post_json(&append, &b).unwrap();
    assert_eq!(first.status, 201, "{}", first.text());
    assert_eq!(first.json(), json!({"seq":1,"last_seq":1,"deduped":false}));
    let retry = c.post_json(&append, &b).unwrap();
    assert_eq!(retry.status, 201);
    assert_eq!(retry.json(), json!({"seq":1,"last_seq":1,"deduped":true}));

    let replay = c
        .post_json(
            &append,
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
            &append,
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
            &append,
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
    let ok = c.post_json(&append, &conditional).unwrap();
    assert_eq!(ok.status, 201);
    assert_eq!(ok.json(), json!({"seq":2,"last_seq":2,"deduped":false}));
    // Same request again: dedupe wins over expected_seq.
    let deduped = c.post_json(&append, &conditional).unwrap();
    assert_eq!(deduped.status, 201);
    assert_eq!(deduped.json(), json!({"seq":2,"last_seq":2,"deduped":true}));

    let string_seq = c
        .post_json(
            &append,
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
            &append,
            &json!({"type":"t","payload":{},"producer_id":"r","producer_seq":1}),
        )
        .unwrap();
    assert_error(&no_actor, 400, "invalid_event", "Invalid event payload");

    let missing = c
        .post_json(&format!("/v1/sessions/{}/append", run.session("nope")), &b)
        .unwrap();
    assert_error(&missing, 404, "session_not_found", "Session was not found");

    // On a shared node only this run's tenant is listed, so that the page holds exactly s1.
    let list_path = if run.fresh_node {
        "/v1/sessions?limit=1".to_string()
    } else {
        format!("/v1/sessions?limit=1&metadata[tenant_id]={}", run.tenant)
    };
    let list = c.get(&list_path).unwrap();
    assert_eq!(list.status, 200, "{}", list.text());
    let list = list.json();
    assert_eq!(list["next_cursor"], Value::Null);
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(list["sessions"][0]["id"], s1.as_str());
    assert_eq!(list["sessions"][0]["last_seq"], 3);
    assert_eq!(list["sessions"][0]["archived_seq"], 0);

    let zero = c.get("/v1/sessions?limit=0").unwrap();
    assert_error(&zero, 400, "invalid_limit", "Invalid limit value");

    let tail = c.get(&format!("/v1/sessions/{s1}/tail")).unwrap();
    assert_error(
        &tail,
        400,
        "invalid_websocket_upgrade",
        "WebSocket upgrade required",
    );

    let events = c
        .get(&format!("/v1/sessions/{s1}/events?cursor=1&limit=1"))
        .unwrap();
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
    let mut tail = TailClient::connect(server.http_addr, &s1, 1);
    let replayed = tail.read_until(3, Duration::from_secs(10));
    assert_eq!(replayed.len(), 2);
    assert_eq!(replayed[0], events["events"][0]);
    let live = c
        .post_json(
            &append,
            &json!({"type":"t","payload":{"live":true},"actor":"a","producer_id":"q","producer_seq":2}),
        )
        .unwrap();
    assert_eq!(live.status, 201);
    let frames = tail.read_until(4, Duration::from_secs(10));
    assert_eq!(frames[0]["payload"], json!({"live":true}));
    tail.close();
}

/// Appends `count` events of `producer` from `producer_seq` `from` on, each with a payload of
/// `payload_bytes` filler bytes; every append must get 201.
pub fn append_n(
    server: &Server,
    session: &str,
    producer: &str,
    from: u64,
    count: u64,
    payload_bytes: usize,
) {
    let mut client = server.client();
    let filler = "x".repeat(payload_bytes);
    for producer_seq in from..from + count {
        let body = json!({"type":"t","payload":{"fill":filler},"actor":"a","producer_id":producer,"producer_seq":producer_seq});
        let response = client
            .post_json(&format!("/v1/sessions/{session}/append"), &body)
            .unwrap();
        assert_eq!(response.status, 201, "{}", response.text());
    }
}

/// tail.md §4: ten tails from cursors 0, 5, … 45 of a session with 50 events, while two
/// producers append 350 more; every tail receives every event after its cursor, contiguously.
pub fn concurrent_tails_from_different_cursors(server: &Server, session: &str) {
    server.create_session(session);
    append_n(server, session, "p", 1, 50, 16);
    let total = 400u64;
    let tails: Vec<_> = (0..10u64)
        .map(|i| {
            let addr = server.http_addr;
            let session = session.to_string();
            thread::spawn(move || {
                let cursor = i * 5;
                let mut tail = TailClient::connect(addr, &session, cursor);
                let events = tail.read_until(total, Duration::from_secs(60));
                assert_eq!(events.len() as u64, total - cursor);
                assert_eq!(events[0]["seq"], cursor + 1);
                tail.close();
            })
        })
        .collect();
    // Appends run while the tails replay and go live, from two producers.
    let writers: Vec<_> = ["q", "r"]
        .into_iter()
        .map(|producer| {
            let server_addr = server.http_addr;
            let path = format!("/v1/sessions/{session}/append");
            thread::spawn(move || {
                let mut client = HttpClient::connect(server_addr).unwrap();
                for producer_seq in 1..=175u64 {
                    let response = client
                        .post_json(&path, &event_body(producer, producer_seq))
                        .unwrap();
                    assert_eq!(response.status, 201, "{}", response.text());
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    for t in tails {
        t.join().unwrap();
    }
}

/// tail.md §5: a tail whose cursor is beyond `last_seq` receives nothing until the session
/// reaches it, then exactly the events after the cursor.
pub fn cursor_beyond_last_seq_waits_for_new_events(server: &Server, session: &str) {
    server.create_session(session);
    append_n(server, session, "p", 1, 3, 8);
    let mut tail = TailClient::connect(server.http_addr, session, 5);
    assert!(tail
        .next_event(Duration::from_millis(300))
        .unwrap()
        .is_none());
    append_n(server, session, "p", 4, 3, 8);
    let events = tail.read_until(6, Duration::from_secs(10));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["seq"], 6);
}

/// A tail of a session that does not exist is `404 session_not_found`; a negative cursor is
/// `400 invalid_cursor`. `missing` must name no session.
pub fn tail_of_missing_session_is_404(server: &Server, missing: &str) {
    let mut client = server.client();
    let response = client
        .request(
            "GET",
            &format!("/v1/sessions/{missing}/tail"),
            &[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
            None,
        )
        .unwrap();
    assert_eq!(response.status, 404);
    assert_eq!(response.json()["error"], "session_not_found");
    let bad_cursor = client
        .request(
            "GET",
            &format!("/v1/sessions/{missing}/tail?cursor=-1"),
            &[("connection", "Upgrade"), ("upgrade", "websocket")],
            None,
        )
        .unwrap();
    assert_eq!(bad_cursor.status, 400);
    assert_eq!(bad_cursor.json()["error"], "invalid_cursor");
}
