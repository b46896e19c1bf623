//! The operator's runbook (ops.md §7, the seed's deployment document) on a single write node,
//! scripted with `starcite ops` as an operator would type it.

use serde_json::json;
use starcite_tests::{run_ops, Server, ServerOptions};

/// `NODE_NAME` of the zero-config node.
const NODE: &str = "starcite@localhost";

fn ready_status(server: &Server) -> (u16, serde_json::Value) {
    let response = server.client().get("/health/ready").unwrap();
    (response.status, response.json())
}

fn assert_success(run: &starcite_tests::OpsRun, what: &str) {
    assert_eq!(run.code, Some(0), "{what}: {run:?}");
}

/// Bootstrap checks, then drain → wait-drained → restart → still drained (sticky) → undrain →
/// wait-ready → ready again, with the outputs of ops.md §5.
#[test]
fn single_node_rollout_runbook() {
    let mut server = Server::start();

    // Bootstrap checklist: status, ready-nodes, /health/ready.
    let status = server.ops(&["status"]);
    assert_success(&status, "status");
    let lines = status.lines();
    for expected in [
        "node=starcite@localhost",
        "local_write_node=true",
        "local_mode=write_node",
        "local_ready=true",
        "local_drained=false",
        "write_nodes=starcite@localhost",
        "write_replication_factor=1",
        "num_groups=256",
        "leader_groups=256",
        "drain.draining=false",
        "drain.reason=",
        "observer.status=ok",
        "observer.visible_nodes=",
        "observer.ready_nodes=starcite@localhost",
        "groups_without_leader=0",
        "archive.adapter=local",
        "archive.last_error=",
    ] {
        assert!(
            lines.contains(&expected),
            "{expected} missing in {lines:#?}"
        );
    }
    assert_eq!(lines[0], "node=starcite@localhost", "status order");
    let ready_nodes = server.ops(&["ready-nodes"]);
    assert_success(&ready_nodes, "ready-nodes");
    assert_eq!(ready_nodes.stdout, format!("ready_nodes={NODE}\n"));
    assert_eq!(
        ready_status(&server),
        (200, json!({"status": "ok", "mode": "write_node"}))
    );

    // 1. Drain (idempotent).
    for _ in 0..2 {
        let drain = server.ops(&["drain", NODE]);
        assert_success(&drain, "drain");
        assert_eq!(drain.stdout, format!("node {NODE} marked draining\n"));
    }
    let draining = json!({"status": "starting", "mode": "write_node", "reason": "draining"});
    assert_eq!(ready_status(&server), (503, draining.clone()));
    let ops_ready = server.ops_client().get("/health/ready").unwrap();
    assert_eq!(
        (ops_ready.status, ops_ready.json()),
        (503, draining.clone())
    );
    assert_eq!(
        server.ops(&["ready-nodes"]).stdout,
        "ready_nodes=\n",
        "a drained node leaves ready_nodes"
    );

    // 2. Wait drained.
    let drained = server.ops(&["wait-drained", "30000"]);
    assert_success(&drained, "wait-drained");
    assert_eq!(drained.stdout, "local_drained=true\n");

    // A wait that cannot succeed times out with exit 1 and a clear message.
    let not_ready = server.ops(&["wait-ready", "500"]);
    assert_eq!(not_ready.code, Some(1), "{not_ready:?}");
    assert_eq!(
        not_ready.stderr,
        "timeout waiting for local_ready after 500ms\n"
    );
    assert_eq!(not_ready.stdout, "");

    // 3. Restart (SIGTERM, then start): the operator's mark is sticky.
    let exit = server.terminate().expect("exit status");
    assert_eq!(
        exit.code(),
        Some(0),
        "SIGTERM exits 0; log:\n{}",
        server.log()
    );
    server.restart_live();
    assert_eq!(ready_status(&server), (503, draining));
    let status = server.ops(&["status"]);
    assert!(
        status.lines().contains(&"drain.reason=operator"),
        "{status:?}"
    );
    assert!(status.lines().contains(&"local_drained=true"), "{status:?}");

    // 4. Undrain (idempotent).
    for _ in 0..2 {
        let undrain = server.ops(&["undrain", NODE]);
        assert_success(&undrain, "undrain");
        assert_eq!(undrain.stdout, format!("node {NODE} marked ready\n"));
    }

    // 5. Wait ready, then the public readiness check.
    let ready = server.ops(&["wait-ready", "60000"]);
    assert_success(&ready, "wait-ready");
    assert_eq!(ready.stdout, "local_ready=true\n");
    assert_eq!(ready_status(&server).0, 200);

    // 6. Recheck.
    assert_eq!(
        server.ops(&["ready-nodes"]).stdout,
        format!("ready_nodes={NODE}\n")
    );
    let status = server.ops(&["status"]);
    assert!(
        status.lines().contains(&"drain.draining=false"),
        "{status:?}"
    );

    // A restart after undrain comes back ready: nothing of the drain is left on disk.
    server.restart();
    assert_eq!(ready_status(&server).0, 200);
}

/// Options before or after the command, the default-less node, and the CLI's failure lines.
#[test]
fn cli_arguments_and_failures() {
    let server = Server::start();
    let url = format!("http://{}", server.ops_addr);
    let after = run_ops(&["ready-nodes", "--node", &url, "--output", "json"], &[]);
    assert_eq!(after.code, Some(0), "{after:?}");
    assert_eq!(after.json(), json!({"ready_nodes": [NODE]}));
    let before = run_ops(&["--output=json", "--node", &url, "ready-nodes"], &[]);
    assert_eq!(before.json(), after.json());

    // The default node comes from STARCITE_OPS_ADDR.
    let ops_addr = server.ops_addr.to_string();
    let default = run_ops(&["ready-nodes"], &[("STARCITE_OPS_ADDR", &ops_addr)]);
    assert_eq!(default.stdout, format!("ready_nodes={NODE}\n"));

    let unknown = server.ops(&["drain", "nobody@nowhere"]);
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    assert_eq!(
        unknown.stderr,
        format!("unknown node \"nobody@nowhere\" (known nodes: {NODE})\n")
    );
    let out_of_range = server.ops(&["group-replicas", "256"]);
    assert_eq!(out_of_range.code, Some(1));
    assert_eq!(
        out_of_range.stderr,
        "invalid group id \"256\" (expected configured group range)\n"
    );

    // Usage errors exit 2 and never reach the API (an unreachable node would exit 1).
    let nowhere = "http://127.0.0.1:9";
    for (arguments, message) in [
        (
            vec!["wait-ready", "0"],
            "invalid timeout \"0\" (expected positive integer ms)",
        ),
        (
            vec!["wait-drained", "-5"],
            "invalid timeout \"-5\" (expected positive integer ms)",
        ),
        (
            vec!["wait-ready", "1.5"],
            "invalid timeout \"1.5\" (expected positive integer ms)",
        ),
        (
            vec!["status", "--output", "yaml"],
            "invalid --output \"yaml\" (expected text|json)",
        ),
        (
            vec!["status", "extra"],
            "status: unexpected argument \"extra\"",
        ),
        (
            vec!["group-replicas"],
            "group-replicas: missing <session_id|group> argument",
        ),
    ] {
        let mut all = vec!["--node", nowhere];
        all.extend(arguments.iter().copied());
        let run = run_ops(&all, &[]);
        assert_eq!(run.code, Some(2), "{arguments:?}: {run:?}");
        assert_eq!(run.stderr.lines().next(), Some(message), "{arguments:?}");
    }
    for arguments in [vec!["reboot"], vec![]] {
        let run = run_ops(&arguments, &[]);
        assert_eq!(run.code, Some(2), "{run:?}");
        for command in [
            "status",
            "ready-nodes",
            "drain",
            "undrain",
            "wait-drained",
            "wait-ready",
            "group-replicas",
        ] {
            assert!(run.stderr.contains(command), "{command}: {}", run.stderr);
        }
    }
    let unreachable = run_ops(&["--node", nowhere, "status"], &[]);
    assert_eq!(unreachable.code, Some(1));
    assert!(
        unreachable
            .stderr
            .starts_with(&format!("cannot reach ops API at {nowhere}: ")),
        "{unreachable:?}"
    );
}

/// `--output json` prints the API's bodies (success and error envelopes) with the same exit
/// codes as text output.
#[test]
fn json_output_shapes() {
    let server = Server::start();
    let json_run = |arguments: &[&str]| {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(arguments);
        server.ops(&all)
    };

    let status = json_run(&["status"]);
    assert_eq!(status.code, Some(0));
    let status = status.json();
    assert_eq!(status["node"], NODE);
    assert_eq!(status["local_ready"], true);
    assert_eq!(status["local_groups"].as_array().unwrap().len(), 256);
    assert_eq!(status["drain"], json!({"draining": false, "reason": null}));
    assert_eq!(status["observer"]["status"], "ok");
    assert_eq!(status["observer"]["ready_nodes"], json!([NODE]));
    assert_eq!(status["observer"]["node_statuses"], json!({}));
    assert_eq!(status["groups_without_leader"], 0);
    assert_eq!(status["archive"]["adapter"], "local");
    assert!(status["raft_storage"]["raft_data_dir"]
        .as_str()
        .unwrap()
        .ends_with("/raft"));

    let group = json_run(&["group-replicas", "3"]);
    assert_eq!(
        group.json(),
        json!({"group_id": 3, "replicas": [NODE], "leader": NODE})
    );
    // cluster.md §2: "ses_demo" hashes to group 180 of 256.
    let session = json_run(&["group-replicas", "ses_demo"]);
    assert_eq!(
        session.json(),
        json!({"group_id": 180, "replicas": [NODE], "leader": NODE, "session_id": "ses_demo"})
    );
    let text = server.ops(&["group-replicas", "ses_demo"]);
    assert_eq!(
        text.lines(),
        [
            "session_ses_demo_group=180",
            "group_180_replicas=starcite@localhost",
            "group_180_leader=starcite@localhost",
        ]
    );

    let drain = json_run(&["drain"]);
    assert_eq!(drain.json(), json!({"node": NODE, "status": "draining"}));
    assert_eq!(
        json_run(&["wait-drained", "5000"]).json(),
        json!({"local_drained": true})
    );
    let timeout = json_run(&["wait-ready", "300"]);
    assert_eq!(timeout.code, Some(1));
    assert_eq!(
        timeout.json(),
        json!({"error": "timeout", "message": "timeout waiting for local_ready after 300ms"})
    );
    let status = json_run(&["status"]).json();
    assert_eq!(
        status["drain"],
        json!({"draining": true, "reason": "operator"})
    );
    assert_eq!(status["local_drained"], true);
    assert_eq!(status["observer"]["ready_nodes"], json!([]));
    let undrain = json_run(&["undrain"]);
    assert_eq!(undrain.json(), json!({"node": NODE, "status": "ready"}));
    assert_eq!(
        json_run(&["wait-ready", "10000"]).json(),
        json!({"local_ready": true})
    );

    let invalid = json_run(&["group-replicas", "999999"]);
    assert_eq!(invalid.code, Some(1));
    assert_eq!(
        invalid.json(),
        json!({"error": "invalid_group_id", "message": "Invalid write group id"})
    );
}

/// `STARCITE_OPS_TOKEN` guards `/ops/*` (401 otherwise) but not health and metrics.
#[test]
fn ops_token_is_required_when_set() {
    let token = "ops-secret-1";
    let server = Server::start_with(ServerOptions::default().with("STARCITE_OPS_TOKEN", token));
    let unauthorized = json!({"error": "unauthorized", "message": "Unauthorized"});
    let mut client = server.ops_client();
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "Basic b3BzLXNlY3JldC0x")],
        vec![("authorization", "Bearer ops-secret-1x")],
    ] {
        let response = client
            .request("GET", "/ops/status", &headers, None)
            .unwrap();
        assert_eq!(
            (response.status, response.json()),
            (401, unauthorized.clone())
        );
        let response = client
            .request("POST", "/ops/drain", &headers, None)
            .unwrap();
        assert_eq!(response.status, 401);
    }
    let authorization = format!("Bearer {token}");
    let response = client
        .request(
            "GET",
            "/ops/ready-nodes",
            &[("authorization", &authorization)],
            None,
        )
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    for open in ["/health/live", "/health/ready", "/metrics"] {
        assert_eq!(client.get(open).unwrap().status, 200, "{open}");
    }
    // Unknown paths are 404 before the token is looked at.
    let response = client.get("/ops/nope").unwrap();
    assert_eq!(
        (response.status, response.json()),
        (404, json!({"error": "not_found"}))
    );

    let without = server.ops(&["status"]);
    assert_eq!(without.code, Some(1));
    assert_eq!(
        without.stderr,
        "ops API error 401: unauthorized (Unauthorized)\n"
    );
    let wrong = server.ops_with_env(&["status"], &[("STARCITE_OPS_TOKEN", "nope")]);
    assert_eq!(wrong.code, Some(1));
    let with = server.ops_with_env(&["ready-nodes"], &[("STARCITE_OPS_TOKEN", token)]);
    assert_eq!(with.code, Some(0), "{with:?}");
    assert_eq!(with.stdout, format!("ready_nodes={NODE}\n"));
    let json_error = server.ops(&["--output", "json", "ready-nodes"]);
    assert_eq!(json_error.code, Some(1));
    assert_eq!(json_error.json(), unauthorized);
}
