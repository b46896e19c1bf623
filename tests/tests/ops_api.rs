//! The ops API over raw HTTP (ops.md §4, http-api.md §12): routes, input validation and the exact
//! error bodies.

use serde_json::json;
use starcite_tests::{Response, Server};

fn body(response: &Response) -> (u16, serde_json::Value) {
    (response.status, response.json())
}

#[test]
fn unknown_paths_and_methods_are_404() {
    let server = Server::start();
    let mut client = server.ops_client();
    let not_found = (404, json!({"error": "not_found"}));
    for (method, path) in [
        ("GET", "/ops/nope"),
        ("GET", "/ops"),
        ("GET", "/v1/sessions"),
        ("DELETE", "/ops/status"),
        ("GET", "/ops/drain"),
        ("POST", "/ops/status"),
        ("GET", "/ops/group-replicas/1/2"),
    ] {
        let response = client.request(method, path, &[], None).unwrap();
        assert_eq!(body(&response), not_found, "{method} {path}");
    }
    let live = client.get("/health/live").unwrap();
    assert_eq!(body(&live), (200, json!({"status": "ok"})));
    let metrics = client.get("/metrics").unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text().contains("starcite_node_ready 1"),
        "{}",
        metrics.text()
    );
    assert!(metrics.text().contains("starcite_node_draining 0"));
    let head = client.request("HEAD", "/ops/status", &[], None).unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[test]
fn wait_timeouts_are_validated_and_time_out_with_504() {
    let server = Server::start();
    let mut client = server.ops_client();
    let invalid = (
        400,
        json!({"error": "invalid_timeout", "message": "Invalid timeout value"}),
    );
    for query in [
        "timeout_ms=0",
        "timeout_ms=",
        "timeout_ms=-5",
        "timeout_ms=1.5",
        "timeout_ms=abc",
        "timeout_ms[x]=5",
    ] {
        for endpoint in ["wait-ready", "wait-drained"] {
            let response = client.get(&format!("/ops/{endpoint}?{query}")).unwrap();
            assert_eq!(body(&response), invalid, "{endpoint}?{query}");
        }
    }
    let ready = client.get("/ops/wait-ready?timeout_ms=1000").unwrap();
    assert_eq!(body(&ready), (200, json!({"local_ready": true})));
    let ready = client.get("/ops/wait-ready").unwrap();
    assert_eq!(body(&ready), (200, json!({"local_ready": true})));
    // A ready node is not drained.
    let drained = client.get("/ops/wait-drained?timeout_ms=250").unwrap();
    assert_eq!(
        body(&drained),
        (
            504,
            json!({"error": "timeout", "message": "timeout waiting for local_drained after 250ms"})
        )
    );
}

#[test]
fn group_replicas_validation() {
    let server = Server::start_with(
        starcite_tests::ServerOptions::default().with("STARCITE_NUM_GROUPS", "16"),
    );
    let mut client = server.ops_client();
    let node = "starcite@localhost";
    for path in [
        "/ops/group-replicas/3",
        "/ops/group-replicas/%203%20",
        "/ops/group-replicas/003",
    ] {
        let response = client.get(path).unwrap();
        assert_eq!(
            body(&response),
            (
                200,
                json!({"group_id": 3, "replicas": [node], "leader": node})
            ),
            "{path}"
        );
    }
    let invalid_group = (
        400,
        json!({"error": "invalid_group_id", "message": "Invalid write group id"}),
    );
    for raw in ["16", "-1", "x", "1.0", "%20", "99999999999"] {
        let response = client.get(&format!("/ops/group-replicas/{raw}")).unwrap();
        assert_eq!(body(&response), invalid_group, "{raw}");
    }
    let invalid_session = (
        400,
        json!({"error": "invalid_session_id", "message": "Invalid session id"}),
    );
    for query in ["", "?session_id=", "?other=1"] {
        let response = client.get(&format!("/ops/group-replicas{query}")).unwrap();
        assert_eq!(body(&response), invalid_session, "{query}");
    }
    // cluster.md §2: "ses_demo" is group 84 of 100 and 180 of 256; of 16 groups: hash mod 16.
    let response = client
        .get("/ops/group-replicas?session_id=ses_demo")
        .unwrap();
    let (status, group) = body(&response);
    assert_eq!(status, 200);
    assert_eq!(group["group_id"], 0x8D62_2DB4_u32 % 16);
    assert_eq!(group["session_id"], "ses_demo");
    let response = client
        .get("/ops/group-replicas?session_id=never%20created")
        .unwrap();
    assert_eq!(response.status, 200, "the session need not exist");
}

#[test]
fn drain_validation_and_idempotence() {
    let server = Server::start();
    let mut client = server.ops_client();
    let node = "starcite@localhost";
    let invalid_node = (
        400,
        json!({"error": "invalid_write_node", "message": "Invalid write node"}),
    );
    for target in [json!("other@host"), json!(""), json!(7), json!({"a": 1})] {
        for path in ["/ops/drain", "/ops/undrain"] {
            let response = client.post_json(path, &json!({ "node": target })).unwrap();
            assert_eq!(body(&response), invalid_node, "{path} {target}");
        }
    }
    let malformed = client
        .request(
            "POST",
            "/ops/drain",
            &[("content-type", "application/json")],
            Some(b"{"),
        )
        .unwrap();
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.json()["error"], "invalid_json");
    let wrong_type = client
        .request(
            "POST",
            "/ops/drain",
            &[("content-type", "text/plain")],
            Some(b"x"),
        )
        .unwrap();
    assert_eq!(wrong_type.status, 415);
    assert_eq!(
        client.get("/health/ready").unwrap().status,
        200,
        "nothing drained"
    );

    let draining = (200, json!({"node": node, "status": "draining"}));
    let empty_body = client.request("POST", "/ops/drain", &[], None).unwrap();
    assert_eq!(body(&empty_body), draining);
    let explicit = client
        .post_json("/ops/drain", &json!({"node": node}))
        .unwrap();
    assert_eq!(body(&explicit), draining);
    let public = server.client().get("/health/ready").unwrap();
    assert_eq!(
        body(&public),
        (
            503,
            json!({"status": "starting", "mode": "write_node", "reason": "draining"})
        )
    );
    let metrics = client.get("/metrics").unwrap().text();
    assert!(metrics.contains("starcite_node_draining 1"), "{metrics}");
    assert!(metrics.contains("starcite_node_ready 0"), "{metrics}");
    let mark = server.data_dir.join("node").join("drain");
    assert!(mark.exists(), "operator drain is persisted");

    let ready = (200, json!({"node": node, "status": "ready"}));
    for _ in 0..2 {
        let response = client
            .post_json("/ops/undrain", &json!({"node": null}))
            .unwrap();
        assert_eq!(body(&response), ready);
    }
    assert!(!mark.exists(), "undrain removes the mark");
    assert_eq!(server.client().get("/health/ready").unwrap().status, 200);
}
