//! The policy matrix of auth.md §7.1 in auth mode `jwt`: every route × auth kind (service,
//! user principal, agent principal) × tenant and session scoping, asserting status and error
//! code in the contract's check order; plus the same routes in mode `none`.

#![allow(clippy::unwrap_used)]

mod auth_support;
mod http_support;

use auth_support::*;
use http_support::TestServer;
use serde_json::{json, Value};

const ALL_SCOPES: [&str; 3] = ["session:create", "session:read", "session:append"];

struct Case {
    label: &'static str,
    method: &'static str,
    target: String,
    token: Option<String>,
    body: Option<Value>,
    upgrade: bool,
    expected: (u16, &'static str),
}

fn case(
    label: &'static str,
    method: &'static str,
    target: &str,
    token: Option<&String>,
    body: Option<Value>,
    expected: (u16, &'static str),
) -> Case {
    Case {
        label,
        method,
        target: target.to_owned(),
        token: token.cloned(),
        body,
        upgrade: false,
        expected,
    }
}

fn tail(
    label: &'static str,
    session: &str,
    token: Option<&String>,
    expected: (u16, &'static str),
) -> Case {
    Case {
        upgrade: true,
        ..case(
            label,
            "GET",
            &format!("/v1/sessions/{session}/tail"),
            token,
            None,
            expected,
        )
    }
}

fn run(server: &TestServer, cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let mut headers = if case.upgrade {
            upgrade_headers()
        } else {
            Vec::new()
        };
        if let Some(token) = &case.token {
            headers.push(format!("Authorization: Bearer {token}"));
        }
        let response = call_with_headers(
            server,
            case.method,
            &case.target,
            &headers,
            case.body.as_ref(),
        );
        let (status, code) = outcome(&response);
        if (status, code.as_str()) != case.expected {
            failures.push(format!(
                "{}: {} {} → {status} {code:?}, expected {:?} ({})",
                case.label,
                case.method,
                case.target,
                case.expected,
                response.text()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "matrix cells failed:\n{}",
        failures.join("\n")
    );
}

fn event() -> Value {
    json!({"type":"t","payload":{},"producer_id":"p","producer_seq":1})
}

fn event_from(producer: &str) -> Value {
    json!({"type":"t","payload":{},"producer_id":producer,"producer_seq":1})
}

fn creator(tenant: &str, id: &str) -> Value {
    json!({"tenant_id":tenant,"id":id,"type":"user"})
}

#[test]
fn every_cell_of_the_jwt_matrix() {
    let jwks = JwksServer::start();
    let server = jwt_server(&jwks.url(), |_| {});
    create_session(&server, "acme", "u1", "s-own");
    create_session(&server, "acme", "u2", "s-other-user");
    create_session(&server, "beta", "b1", "s-beta");

    let service = service_token("acme", "session:create session:read auth:issue");
    let service_unscoped = service_token("acme", "other:scope");
    let user = user_token(&server, "acme", "u1", &ALL_SCOPES, None);
    let user_read_only = user_token(&server, "acme", "u1", &["session:read"], None);
    let user_unscoped = user_token(&server, "acme", "u1", &["other:scope"], None);
    let user_bound_other = user_token(&server, "acme", "u1", &ALL_SCOPES, Some(&["s-other-user"]));
    let user_beta_bound_own = user_token(&server, "beta", "b1", &ALL_SCOPES, Some(&["s-own"]));
    let agent = agent_token(&server, "acme", "a1", &ALL_SCOPES, "s-own");
    let agent_unscoped = agent_token(&server, "acme", "a1", &["other:scope"], "s-own");
    let issue_body = |tenant: &str| json!({"principal":{"tenant_id":tenant,"id":"u9","type":"user"},"scopes":["session:read"]});

    let cases = vec![
        // Routing and transport checks come before authentication.
        case(
            "unknown route",
            "GET",
            "/v1/nope",
            None,
            None,
            (404, "not_found"),
        ),
        case(
            "health is open",
            "GET",
            "/health/live",
            None,
            None,
            (200, ""),
        ),
        case(
            "health ignores tokens",
            "GET",
            "/health/live",
            Some(&"garbage".to_owned()),
            None,
            (200, ""),
        ),
        case("metrics is open", "GET", "/metrics", None, None, (200, "")),
        // POST /v1/auth/issue
        case(
            "issue: no token",
            "POST",
            "/v1/auth/issue",
            None,
            Some(issue_body("acme")),
            (401, "unauthorized"),
        ),
        case(
            "issue: service",
            "POST",
            "/v1/auth/issue",
            Some(&service),
            Some(issue_body("acme")),
            (200, ""),
        ),
        case(
            "issue: shape first",
            "POST",
            "/v1/auth/issue",
            Some(&service),
            Some(json!({"scopes":[]})),
            (400, "invalid_issue_request"),
        ),
        case(
            "issue: other tenant",
            "POST",
            "/v1/auth/issue",
            Some(&service),
            Some(issue_body("beta")),
            (403, "forbidden_tenant"),
        ),
        case(
            "issue: tenant before scope",
            "POST",
            "/v1/auth/issue",
            Some(&service_unscoped),
            Some(issue_body("beta")),
            (403, "forbidden_tenant"),
        ),
        case(
            "issue: scope",
            "POST",
            "/v1/auth/issue",
            Some(&service_unscoped),
            Some(issue_body("acme")),
            (403, "forbidden_scope"),
        ),
        case(
            "issue: user principal",
            "POST",
            "/v1/auth/issue",
            Some(&user),
            Some(issue_body("acme")),
            (401, "unauthorized"),
        ),
        case(
            "issue: agent principal",
            "POST",
            "/v1/auth/issue",
            Some(&agent),
            Some(issue_body("acme")),
            (401, "unauthorized"),
        ),
        case(
            "issue: agent without session",
            "POST",
            "/v1/auth/issue",
            Some(&service),
            Some(json!({"principal":{"tenant_id":"acme","id":"a","type":"agent"},"scopes":["x"]})),
            (400, "invalid_issue_request"),
        ),
        case(
            "issue: agent with two sessions",
            "POST",
            "/v1/auth/issue",
            Some(&service),
            Some(
                json!({"principal":{"tenant_id":"acme","id":"a","type":"agent"},"scopes":["x"],"session_ids":["a","b"]}),
            ),
            (400, "invalid_issue_request"),
        ),
        case(
            "issue: ttl above max",
            "POST",
            "/v1/auth/issue",
            Some(&service),
            Some(
                json!({"principal":{"tenant_id":"acme","id":"u","type":"user"},"scopes":["x"],"ttl_seconds":16}),
            ),
            (400, "invalid_issue_request"),
        ),
        case(
            "issue: ttl string",
            "POST",
            "/v1/auth/issue",
            Some(&service),
            Some(
                json!({"principal":{"tenant_id":"acme","id":"u","type":"user"},"scopes":["x"],"ttl_seconds":"5"}),
            ),
            (400, "invalid_issue_request"),
        ),
        case(
            "issue: empty session_ids",
            "POST",
            "/v1/auth/issue",
            Some(&service),
            Some(
                json!({"principal":{"tenant_id":"acme","id":"u","type":"user"},"scopes":["x"],"session_ids":[]}),
            ),
            (400, "invalid_issue_request"),
        ),
        case(
            "issue: bad type",
            "POST",
            "/v1/auth/issue",
            Some(&service),
            Some(json!({"principal":{"tenant_id":"acme","id":"u","type":"robot"},"scopes":["x"]})),
            (400, "invalid_issue_request"),
        ),
        // POST /v1/sessions
        case(
            "create: no token",
            "POST",
            "/v1/sessions",
            None,
            Some(json!({})),
            (401, "unauthorized"),
        ),
        case(
            "create: service",
            "POST",
            "/v1/sessions",
            Some(&service),
            Some(json!({"id":"c1","creator_principal":creator("acme","u1")})),
            (201, ""),
        ),
        case(
            "create: service without creator",
            "POST",
            "/v1/sessions",
            Some(&service),
            Some(json!({"id":"c2"})),
            (400, "invalid_session"),
        ),
        case(
            "create: creator key before scope",
            "POST",
            "/v1/sessions",
            Some(&service_unscoped),
            Some(json!({"id":"c2"})),
            (400, "invalid_session"),
        ),
        case(
            "create: service scope",
            "POST",
            "/v1/sessions",
            Some(&service_unscoped),
            Some(json!({"id":"c2","creator_principal":creator("acme","u1")})),
            (403, "forbidden_scope"),
        ),
        case(
            "create: service malformed creator",
            "POST",
            "/v1/sessions",
            Some(&service),
            Some(json!({"id":"c2","creator_principal":{"tenant_id":"acme"}})),
            (400, "invalid_session"),
        ),
        case(
            "create: service other tenant",
            "POST",
            "/v1/sessions",
            Some(&service),
            Some(json!({"id":"c2","creator_principal":creator("beta","u1")})),
            (403, "forbidden_tenant"),
        ),
        case(
            "create: service metadata tenant",
            "POST",
            "/v1/sessions",
            Some(&service),
            Some(
                json!({"id":"c2","creator_principal":creator("acme","u1"),"metadata":{"tenant_id":"beta"}}),
            ),
            (403, "forbidden_tenant"),
        ),
        case(
            "create: user",
            "POST",
            "/v1/sessions",
            Some(&user),
            Some(json!({"id":"c3"})),
            (201, ""),
        ),
        case(
            "create: user bound elsewhere may create",
            "POST",
            "/v1/sessions",
            Some(&user_bound_other),
            Some(json!({"id":"c4"})),
            (201, ""),
        ),
        case(
            "create: user with creator",
            "POST",
            "/v1/sessions",
            Some(&user),
            Some(json!({"id":"c5","creator_principal":creator("acme","u1")})),
            (400, "invalid_session"),
        ),
        case(
            "create: user with null creator",
            "POST",
            "/v1/sessions",
            Some(&user),
            Some(json!({"id":"c5","creator_principal":null})),
            (400, "invalid_session"),
        ),
        case(
            "create: user scope",
            "POST",
            "/v1/sessions",
            Some(&user_unscoped),
            Some(json!({"id":"c5"})),
            (403, "forbidden_scope"),
        ),
        case(
            "create: user metadata tenant",
            "POST",
            "/v1/sessions",
            Some(&user),
            Some(json!({"id":"c5","metadata":{"tenant_id":"beta"}})),
            (403, "forbidden_tenant"),
        ),
        case(
            "create: agent",
            "POST",
            "/v1/sessions",
            Some(&agent),
            Some(json!({"id":"c5"})),
            (403, "forbidden"),
        ),
        // GET /v1/sessions
        case(
            "list: no token",
            "GET",
            "/v1/sessions",
            None,
            None,
            (401, "unauthorized"),
        ),
        case(
            "list: service",
            "GET",
            "/v1/sessions",
            Some(&service),
            None,
            (200, ""),
        ),
        case(
            "list: limit before policy",
            "GET",
            "/v1/sessions?limit=0",
            Some(&service_unscoped),
            None,
            (400, "invalid_limit"),
        ),
        case(
            "list: service scope",
            "GET",
            "/v1/sessions",
            Some(&service_unscoped),
            None,
            (403, "forbidden_scope"),
        ),
        case(
            "list: user",
            "GET",
            "/v1/sessions",
            Some(&user),
            None,
            (200, ""),
        ),
        case(
            "list: user scope",
            "GET",
            "/v1/sessions",
            Some(&user_unscoped),
            None,
            (403, "forbidden_scope"),
        ),
        case(
            "list: agent",
            "GET",
            "/v1/sessions",
            Some(&agent),
            None,
            (403, "forbidden"),
        ),
        // GET /v1/sessions/:id
        case(
            "get: no token",
            "GET",
            "/v1/sessions/s-own",
            None,
            None,
            (401, "unauthorized"),
        ),
        case(
            "get: service",
            "GET",
            "/v1/sessions/s-own",
            Some(&service),
            None,
            (200, ""),
        ),
        case(
            "get: service other tenant",
            "GET",
            "/v1/sessions/s-beta",
            Some(&service),
            None,
            (403, "forbidden_tenant"),
        ),
        case(
            "get: service missing",
            "GET",
            "/v1/sessions/nope",
            Some(&service),
            None,
            (404, "session_not_found"),
        ),
        case(
            "get: service scope before lookup",
            "GET",
            "/v1/sessions/nope",
            Some(&service_unscoped),
            None,
            (403, "forbidden_scope"),
        ),
        case(
            "get: user own",
            "GET",
            "/v1/sessions/s-own",
            Some(&user),
            None,
            (200, ""),
        ),
        case(
            "get: user not creator",
            "GET",
            "/v1/sessions/s-other-user",
            Some(&user),
            None,
            (403, "forbidden_session"),
        ),
        case(
            "get: user other tenant",
            "GET",
            "/v1/sessions/s-beta",
            Some(&user),
            None,
            (403, "forbidden_tenant"),
        ),
        case(
            "get: user missing",
            "GET",
            "/v1/sessions/nope",
            Some(&user),
            None,
            (404, "session_not_found"),
        ),
        case(
            "get: user scope",
            "GET",
            "/v1/sessions/s-own",
            Some(&user_unscoped),
            None,
            (403, "forbidden_scope"),
        ),
        case(
            "get: bound user, unlisted own",
            "GET",
            "/v1/sessions/s-own",
            Some(&user_bound_other),
            None,
            (403, "forbidden_session"),
        ),
        case(
            "get: bound user, binding before lookup",
            "GET",
            "/v1/sessions/nope",
            Some(&user_bound_other),
            None,
            (403, "forbidden_session"),
        ),
        case(
            "get: bound user, listed",
            "GET",
            "/v1/sessions/s-other-user",
            Some(&user_bound_other),
            None,
            (200, ""),
        ),
        case(
            "get: tenant B token on tenant A session",
            "GET",
            "/v1/sessions/s-own",
            Some(&user_beta_bound_own),
            None,
            (403, "forbidden_tenant"),
        ),
        case(
            "get: agent own",
            "GET",
            "/v1/sessions/s-own",
            Some(&agent),
            None,
            (200, ""),
        ),
        case(
            "get: agent other",
            "GET",
            "/v1/sessions/s-other-user",
            Some(&agent),
            None,
            (403, "forbidden_session"),
        ),
        case(
            "get: agent scope",
            "GET",
            "/v1/sessions/s-own",
            Some(&agent_unscoped),
            None,
            (403, "forbidden_scope"),
        ),
        // POST /v1/sessions/:id/append
        case(
            "append: no token",
            "POST",
            "/v1/sessions/s-own/append",
            None,
            Some(event()),
            (401, "unauthorized"),
        ),
        case(
            "append: service",
            "POST",
            "/v1/sessions/s-own/append",
            Some(&service),
            Some(event()),
            (403, "forbidden_session"),
        ),
        case(
            "append: service before lookup",
            "POST",
            "/v1/sessions/nope/append",
            Some(&service),
            Some(json!({})),
            (403, "forbidden_session"),
        ),
        case(
            "append: user own",
            "POST",
            "/v1/sessions/s-own/append",
            Some(&user),
            Some(event_from("user")),
            (201, ""),
        ),
        case(
            "append: user matching actor",
            "POST",
            "/v1/sessions/s-own/append",
            Some(&user),
            Some(
                json!({"type":"t","payload":{},"producer_id":"user2","producer_seq":1,"actor":"user:u1"}),
            ),
            (201, ""),
        ),
        case(
            "append: user spoofed actor",
            "POST",
            "/v1/sessions/s-own/append",
            Some(&user),
            Some(
                json!({"type":"t","payload":{},"producer_id":"user3","producer_seq":1,"actor":"user:u2"}),
            ),
            (400, "invalid_event"),
        ),
        case(
            "append: user bad body",
            "POST",
            "/v1/sessions/s-own/append",
            Some(&user),
            Some(json!({})),
            (400, "invalid_event"),
        ),
        case(
            "append: policy before body",
            "POST",
            "/v1/sessions/s-other-user/append",
            Some(&user),
            Some(json!({})),
            (403, "forbidden_session"),
        ),
        case(
            "append: user not creator",
            "POST",
            "/v1/sessions/s-other-user/append",
            Some(&user),
            Some(event()),
            (403, "forbidden_session"),
        ),
        case(
            "append: user other tenant",
            "POST",
            "/v1/sessions/s-beta/append",
            Some(&user),
            Some(event()),
            (403, "forbidden_tenant"),
        ),
        case(
            "append: user missing",
            "POST",
            "/v1/sessions/nope/append",
            Some(&user),
            Some(event()),
            (404, "session_not_found"),
        ),
        case(
            "append: user scope",
            "POST",
            "/v1/sessions/s-own/append",
            Some(&user_read_only),
            Some(event()),
            (403, "forbidden_scope"),
        ),
        case(
            "append: bound user, unlisted own",
            "POST",
            "/v1/sessions/s-own/append",
            Some(&user_bound_other),
            Some(event()),
            (403, "forbidden_session"),
        ),
        case(
            "append: bound user, before lookup",
            "POST",
            "/v1/sessions/nope/append",
            Some(&user_bound_other),
            Some(event()),
            (403, "forbidden_session"),
        ),
        case(
            "append: tenant B token on tenant A session",
            "POST",
            "/v1/sessions/s-own/append",
            Some(&user_beta_bound_own),
            Some(event()),
            (403, "forbidden_tenant"),
        ),
        case(
            "append: agent own",
            "POST",
            "/v1/sessions/s-own/append",
            Some(&agent),
            Some(event_from("agent")),
            (201, ""),
        ),
        case(
            "append: agent batch",
            "POST",
            "/v1/sessions/s-own/append",
            Some(&agent),
            Some(json!({"events":[event_from("agent-batch")]})),
            (201, ""),
        ),
        case(
            "append: agent other",
            "POST",
            "/v1/sessions/s-other-user/append",
            Some(&agent),
            Some(event()),
            (403, "forbidden_session"),
        ),
        case(
            "append: agent scope",
            "POST",
            "/v1/sessions/s-own/append",
            Some(&agent_unscoped),
            Some(event()),
            (403, "forbidden_scope"),
        ),
        // GET /v1/sessions/:id/events
        case(
            "events: no token",
            "GET",
            "/v1/sessions/s-own/events",
            None,
            None,
            (401, "unauthorized"),
        ),
        case(
            "events: service",
            "GET",
            "/v1/sessions/s-own/events",
            Some(&service),
            None,
            (403, "forbidden_session"),
        ),
        case(
            "events: cursor before binding",
            "GET",
            "/v1/sessions/s-own/events?cursor=x",
            Some(&service),
            None,
            (400, "invalid_cursor"),
        ),
        case(
            "events: user own",
            "GET",
            "/v1/sessions/s-own/events",
            Some(&user_read_only),
            None,
            (200, ""),
        ),
        case(
            "events: user not creator",
            "GET",
            "/v1/sessions/s-other-user/events",
            Some(&user),
            None,
            (403, "forbidden_session"),
        ),
        case(
            "events: user other tenant",
            "GET",
            "/v1/sessions/s-beta/events",
            Some(&user),
            None,
            (403, "forbidden_tenant"),
        ),
        case(
            "events: user missing",
            "GET",
            "/v1/sessions/nope/events",
            Some(&user),
            None,
            (404, "session_not_found"),
        ),
        case(
            "events: user scope",
            "GET",
            "/v1/sessions/s-own/events",
            Some(&user_unscoped),
            None,
            (403, "forbidden_scope"),
        ),
        case(
            "events: bound user",
            "GET",
            "/v1/sessions/s-own/events",
            Some(&user_bound_other),
            None,
            (403, "forbidden_session"),
        ),
        case(
            "events: tenant B token",
            "GET",
            "/v1/sessions/s-own/events",
            Some(&user_beta_bound_own),
            None,
            (403, "forbidden_tenant"),
        ),
        case(
            "events: agent own",
            "GET",
            "/v1/sessions/s-own/events",
            Some(&agent),
            None,
            (200, ""),
        ),
        case(
            "events: agent other",
            "GET",
            "/v1/sessions/s-other-user/events",
            Some(&agent),
            None,
            (403, "forbidden_session"),
        ),
        // GET /v1/sessions/:id/tail
        tail("tail: no token", "s-own", None, (401, "unauthorized")),
        tail(
            "tail: service",
            "s-own",
            Some(&service),
            (403, "forbidden_session"),
        ),
        tail("tail: user own", "s-own", Some(&user), (101, "")),
        tail(
            "tail: user not creator",
            "s-other-user",
            Some(&user),
            (403, "forbidden_session"),
        ),
        tail(
            "tail: user other tenant",
            "s-beta",
            Some(&user),
            (403, "forbidden_tenant"),
        ),
        tail(
            "tail: user missing",
            "nope",
            Some(&user),
            (404, "session_not_found"),
        ),
        tail(
            "tail: user scope",
            "s-own",
            Some(&user_unscoped),
            (403, "forbidden_scope"),
        ),
        tail(
            "tail: bound user",
            "s-own",
            Some(&user_bound_other),
            (403, "forbidden_session"),
        ),
        tail(
            "tail: tenant B token",
            "s-own",
            Some(&user_beta_bound_own),
            (403, "forbidden_tenant"),
        ),
        tail("tail: agent own", "s-own", Some(&agent), (101, "")),
        tail(
            "tail: agent other",
            "s-other-user",
            Some(&agent),
            (403, "forbidden_session"),
        ),
        tail(
            "tail: agent scope",
            "s-own",
            Some(&agent_unscoped),
            (403, "forbidden_scope"),
        ),
        case(
            "tail: auth before transport",
            "GET",
            "/v1/sessions/s-own/tail",
            None,
            None,
            (401, "unauthorized"),
        ),
        case(
            "tail: transport after auth",
            "GET",
            "/v1/sessions/s-own/tail",
            Some(&user),
            None,
            (400, "invalid_websocket_upgrade"),
        ),
    ];
    run(&server, &cases);
}

#[test]
fn principal_results_carry_the_token_identity() {
    let jwks = JwksServer::start();
    let server = jwt_server(&jwks.url(), |_| {});
    let user = user_token(&server, "acme", "u1", &ALL_SCOPES, None);
    let created = call(
        &server,
        "POST",
        "/v1/sessions",
        Some(&user),
        Some(&json!({"id":"mine"})),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["creator_principal"], creator("acme", "u1"));
    assert_eq!(created.json()["metadata"], json!({"tenant_id":"acme"}));
    let body = json!({"type":"t","payload":{},"producer_id":"p","producer_seq":1,
                      "metadata":{"starcite_principal":{"tenant_id":"beta","extra":"kept"},"k":"v"}});
    let appended = call(
        &server,
        "POST",
        "/v1/sessions/mine/append",
        Some(&user),
        Some(&body),
    );
    assert_eq!(appended.status, 201, "{}", appended.text());
    let events = call(
        &server,
        "GET",
        "/v1/sessions/mine/events",
        Some(&user),
        None,
    )
    .json();
    let stored = &events["events"][0];
    assert_eq!(stored["actor"], "user:u1");
    assert_eq!(
        stored["metadata"],
        json!({"k":"v","starcite_principal":{"tenant_id":"acme","principal_type":"user",
               "principal_id":"u1","actor":"user:u1","extra":"kept"}})
    );
    let issued = call(
        &server,
        "POST",
        "/v1/auth/issue",
        Some(&service_token("acme", "auth:issue")),
        Some(
            &json!({"principal":{"tenant_id":"acme","id":"u1","type":"user"},
                     "scopes":["session:read","session:read","session:append"]}),
        ),
    )
    .json();
    assert_eq!(issued["token_type"], "Bearer");
    assert_eq!(issued["expires_in"], 5);
    assert_eq!(issued["session_ids"], Value::Null);
    assert_eq!(issued["scopes"], json!(["session:read", "session:append"]));
    assert_eq!(
        issued["expires_at"].as_i64().unwrap() - unix_now(),
        5,
        "expires_at = now + default ttl"
    );
}

#[test]
fn listing_is_fenced_by_tenant_and_creator() {
    let jwks = JwksServer::start();
    let server = jwt_server(&jwks.url(), |_| {});
    create_session(&server, "acme", "u1", "a-1");
    create_session(&server, "acme", "u2", "a-2");
    create_session(&server, "beta", "u1", "b-1");
    let ids = |response: http_support::TestResponse| -> Vec<String> {
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|session| session["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let service = service_token("acme", "session:read");
    assert_eq!(
        ids(call(&server, "GET", "/v1/sessions", Some(&service), None)),
        ["a-1", "a-2"]
    );
    assert_eq!(
        ids(call(
            &server,
            "GET",
            "/v1/sessions?metadata[tenant_id]=beta",
            Some(&service),
            None
        )),
        ["a-1", "a-2"]
    );
    assert_eq!(
        ids(call(
            &server,
            "GET",
            "/v1/sessions?metadata.tenant_id=beta",
            Some(&service),
            None
        )),
        ["a-1", "a-2"]
    );
    let user = user_token(&server, "acme", "u1", &["session:read"], None);
    assert_eq!(
        ids(call(&server, "GET", "/v1/sessions", Some(&user), None)),
        ["a-1"]
    );
    let beta_user = user_token(&server, "beta", "u1", &["session:read"], None);
    assert_eq!(
        ids(call(&server, "GET", "/v1/sessions", Some(&beta_user), None)),
        ["b-1"]
    );
}

/// Label, method, target, body, extra header lines, expected status and code.
type NoneModeCase = (
    &'static str,
    &'static str,
    &'static str,
    Option<Value>,
    Vec<String>,
    (u16, &'static str),
);

#[test]
fn mode_none_ignores_every_token_and_keeps_its_own_rules() {
    let server = TestServer::start();
    let garbage = "Authorization: Bearer a b".to_owned();
    let create = json!({"id":"s1","creator_principal":creator("acme","u1")});
    let cases: Vec<NoneModeCase> = vec![
        (
            "create",
            "POST",
            "/v1/sessions",
            Some(create),
            vec![garbage.clone()],
            (201, ""),
        ),
        (
            "create needs creator",
            "POST",
            "/v1/sessions",
            Some(json!({"id":"s2"})),
            vec![],
            (400, "invalid_session"),
        ),
        (
            "list",
            "GET",
            "/v1/sessions",
            None,
            vec![garbage.clone(), "Authorization: Basic x".to_owned()],
            (200, ""),
        ),
        (
            "get",
            "GET",
            "/v1/sessions/s1",
            None,
            vec!["Authorization: Bearer expired.jwt.here".to_owned()],
            (200, ""),
        ),
        (
            "append needs actor",
            "POST",
            "/v1/sessions/s1/append",
            Some(event()),
            vec![],
            (400, "invalid_event"),
        ),
        (
            "append",
            "POST",
            "/v1/sessions/s1/append",
            Some(json!({"type":"t","payload":{},"producer_id":"p","producer_seq":1,"actor":"a"})),
            vec![garbage.clone()],
            (201, ""),
        ),
        (
            "events",
            "GET",
            "/v1/sessions/s1/events",
            None,
            vec![garbage.clone()],
            (200, ""),
        ),
        (
            "issue shape",
            "POST",
            "/v1/auth/issue",
            Some(json!({})),
            vec![],
            (400, "invalid_issue_request"),
        ),
        (
            "issue forbidden",
            "POST",
            "/v1/auth/issue",
            Some(json!({"principal":{"tenant_id":"a","id":"u","type":"user"},"scopes":["x"]})),
            vec![],
            (403, "forbidden"),
        ),
    ];
    for (label, method, target, body, headers, expected) in cases {
        let response = call_with_headers(&server, method, target, &headers, body.as_ref());
        let (status, code) = outcome(&response);
        assert_eq!(
            (status, code.as_str()),
            expected,
            "{label}: {}",
            response.text()
        );
    }
    let mut headers = upgrade_headers();
    headers.push("Authorization: Bearer ,".to_owned());
    let tail = call_with_headers(
        &server,
        "GET",
        "/v1/sessions/s1/tail?access_token=",
        &headers,
        None,
    );
    assert_eq!(tail.status, 101);
}
