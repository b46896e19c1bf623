//! Health, readiness, metrics (http-api.md §11, ops.md §1–§2) and the token issue route (§10).

use serde_json::{json, Map, Value};
use starcite_engine::api::{NodeMode, NotReady, Principal, PrincipalType, Service};
use starcite_engine::metrics;

use super::Call;
use crate::auth::claims::{dedupe_keep_first, integer_claim, non_empty_string_list};
use crate::auth::{parse_principal_type, AuthContext, Authenticator, SCOPE_AUTH_ISSUE};
use crate::error::{
    FixedError, FORBIDDEN, FORBIDDEN_SCOPE, FORBIDDEN_TENANT, INVALID_ISSUE_REQUEST,
};
use crate::http::Response;
use crate::ops::NodeState;

/// `Content-Type` of `/metrics` (Prometheus text format 0.0.4).
pub const CONTENT_TYPE_PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /health/live`.
pub fn live() -> Response {
    Response::json_value(200, &json!({"status": "ok"}))
}

/// `GET /health/ready` on either listener: storage from the engine, then — when the node's
/// control state is given — drain, consensus and observer rows (ops.md §2, one composition in
/// [`NodeState::readiness`]).
pub fn ready<S: Service>(service: &S, node: Option<&NodeState>) -> Response {
    let readiness = match node {
        Some(node) => node.readiness(service.readiness()),
        None => service.readiness(),
    };
    readiness_response(service.mode(), readiness)
}

/// The `200`/`503` body of `/health/ready` for a readiness result.
pub fn readiness_response(mode: NodeMode, readiness: Result<(), NotReady>) -> Response {
    let mode = mode.as_str();
    match readiness {
        Ok(()) => Response::json_value(200, &json!({"status": "ok", "mode": mode})),
        Err(not_ready) => {
            let mut body = Map::new();
            body.insert("status".to_owned(), "starting".into());
            body.insert("mode".to_owned(), mode.into());
            body.insert("reason".to_owned(), not_ready.reason.into());
            if let Some(detail) = not_ready.detail {
                body.insert("detail".to_owned(), detail);
            }
            Response::json_value(503, &Value::Object(body))
        }
    }
}

/// `GET /metrics` (only routed when metrics are enabled).
pub fn metrics<S: Service>(service: &S) -> Response {
    Response {
        status: 200,
        headers: vec![("content-type", CONTENT_TYPE_PROMETHEUS.to_owned())],
        body: metrics::global().render(service.mode()).into_bytes(),
        route: "/metrics",
    }
}

/// `POST /v1/auth/issue` (http-api.md §10): shape, then policy (mode `none` → `forbidden`;
/// principal tenant ≠ token tenant → `forbidden_tenant`; no `auth:issue` → `forbidden_scope`),
/// then the semantic checks, then the token. Only service JWTs get this far in mode `jwt`.
pub fn issue_token(call: &Call<'_>, authenticator: &Authenticator) -> Response {
    let principal = match call.body.get("principal") {
        Some(Value::Object(principal))
            if ["tenant_id", "id", "type"]
                .iter()
                .all(|key| principal.contains_key(*key)) =>
        {
            principal
        }
        _ => return Response::fixed(INVALID_ISSUE_REQUEST),
    };
    if !call.body.contains_key("scopes") {
        return Response::fixed(INVALID_ISSUE_REQUEST);
    }
    let AuthContext::Service { tenant_id, .. } = &call.auth else {
        return Response::fixed(FORBIDDEN);
    };
    if principal.get("tenant_id").and_then(Value::as_str) != Some(tenant_id.as_str()) {
        return Response::fixed(FORBIDDEN_TENANT);
    }
    if !call.auth.has_scope(SCOPE_AUTH_ISSUE) {
        return Response::fixed(FORBIDDEN_SCOPE);
    }
    let request = match validate_issue(&call.body, principal, authenticator) {
        Ok(request) => request,
        Err(error) => return Response::fixed(error),
    };
    let issued = authenticator.issue(
        request.principal,
        request.scopes,
        request.session_ids,
        request.ttl_seconds,
    );
    let claims = &issued.claims;
    let principal = &claims.principal;
    Response::json_value(
        200,
        &json!({
            "token": issued.token,
            "token_type": "Bearer",
            "expires_at": claims.expires_at_unix_seconds,
            "expires_in": request.ttl_seconds,
            "principal": {
                "tenant_id": principal.tenant_id,
                "id": principal.id,
                "type": principal.principal_type.as_str(),
            },
            "scopes": claims.scopes,
            "session_ids": claims.session_ids,
        }),
    )
}

/// A semantically valid issue request.
struct IssueRequest {
    principal: Principal,
    scopes: Vec<String>,
    session_ids: Option<Vec<String>>,
    ttl_seconds: u64,
}

/// Step 3 of §10: principal fields, scopes, session ids, ttl, and the agent binding rule.
fn validate_issue(
    body: &Map<String, Value>,
    principal: &Map<String, Value>,
    authenticator: &Authenticator,
) -> Result<IssueRequest, FixedError> {
    let text = |key: &str| {
        principal
            .get(key)
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
            .ok_or(INVALID_ISSUE_REQUEST)
    };
    let tenant_id = text("tenant_id")?;
    let id = text("id")?;
    let principal_type = parse_principal_type(text("type")?).ok_or(INVALID_ISSUE_REQUEST)?;
    let scopes = body
        .get("scopes")
        .and_then(non_empty_string_list)
        .map(dedupe_keep_first)
        .ok_or(INVALID_ISSUE_REQUEST)?;
    let session_ids = match body.get("session_ids") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            non_empty_string_list(value)
                .map(dedupe_keep_first)
                .ok_or(INVALID_ISSUE_REQUEST)?,
        ),
    };
    let bound_once = session_ids.as_ref().is_some_and(|ids| ids.len() == 1);
    if principal_type == PrincipalType::Agent && !bound_once {
        return Err(INVALID_ISSUE_REQUEST);
    }
    let ttl_seconds = match body.get("ttl_seconds") {
        None | Some(Value::Null) => authenticator.default_ttl_seconds(),
        Some(_) => integer_claim(body, "ttl_seconds")
            .and_then(|ttl| u64::try_from(ttl).ok())
            .filter(|ttl| (1..=authenticator.max_ttl_seconds()).contains(ttl))
            .ok_or(INVALID_ISSUE_REQUEST)?,
    };
    Ok(IssueRequest {
        principal: Principal {
            tenant_id: tenant_id.to_owned(),
            id: id.to_owned(),
            principal_type,
        },
        scopes,
        session_ids,
        ttl_seconds,
    })
}
