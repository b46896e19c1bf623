//! The worked examples of http-api.md §13 (mode `none`, fresh single node), verbatim, plus the tail
//! example of tail.md §8 over a real WebSocket client. The scenario itself lives in
//! `starcite_tests::scenarios`, so that `cluster_acceptance` runs it against every cluster node.

use serde_json::json;
use starcite_tests::scenarios::{worked_examples, ScenarioRun};
use starcite_tests::Server;

#[test]
fn worked_examples_mode_none() {
    let server = Server::start();
    worked_examples(&server, &ScenarioRun::fresh_node());
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

    // A single node leads every one of its groups (the default 256) in some term.
    let metrics = c.get("/metrics").unwrap().text();
    let sample = |series: &str| -> u64 {
        metrics
            .lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse::<u64>().ok())?
            })
            .unwrap_or_else(|| panic!("metrics lack {series}"))
    };
    assert_eq!(sample("starcite_raft_groups{role=\"leader\"}"), 256);
    for role in ["follower", "candidate", "down"] {
        assert_eq!(
            sample(&format!("starcite_raft_groups{{role=\"{role}\"}}")),
            0
        );
    }
    assert!(sample("starcite_raft_term_max") >= 1);
    assert!(sample("starcite_raft_leader_changes_total") >= 256);
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
