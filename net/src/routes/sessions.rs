//! `POST /v1/sessions`, `GET /v1/sessions`, `GET /v1/sessions/:id` (http-api.md §3–§5).

use serde_json::{json, Map, Value};
use starcite_engine::api::{ListQuery, PrincipalType, Service, SessionRecord};
use starcite_engine::metrics;
use starcite_engine::time::format_timestamp;

use super::Call;
use crate::auth::{
    check_binding_before_lookup, check_principal_access, AuthContext, SCOPE_SESSION_READ,
};
use crate::error::{FixedError, FORBIDDEN, FORBIDDEN_SCOPE, FORBIDDEN_TENANT};
use crate::http::Response;
use crate::validate::session::validate_create;
use crate::validate::{parse_limit, parse_list_cursor, parse_list_metadata};

/// The session record of §5; `archived_seq` is left out of the create response (§3).
pub fn session_json(session: &SessionRecord, with_archived_seq: bool) -> Value {
    let timestamp = format_timestamp(session.created_at_us);
    let mut object = Map::new();
    object.insert("id".to_owned(), session.id.clone().into());
    object.insert(
        "title".to_owned(),
        session.title.clone().map_or(Value::Null, Value::String),
    );
    let creator = session.creator_principal.as_ref().map_or(Value::Null, |creator| {
        json!({"tenant_id": creator.tenant_id, "id": creator.id, "type": creator.principal_type.as_str()})
    });
    object.insert("creator_principal".to_owned(), creator);
    object.insert(
        "metadata".to_owned(),
        Value::Object(session.metadata.clone()),
    );
    object.insert("last_seq".to_owned(), session.last_seq.into());
    if with_archived_seq {
        object.insert("archived_seq".to_owned(), session.archived_seq.into());
    }
    object.insert("created_at".to_owned(), timestamp.clone().into());
    object.insert("updated_at".to_owned(), timestamp.into());
    Value::Object(object)
}

/// `POST /v1/sessions`.
pub async fn create<S: Service>(service: &S, call: &Call<'_>) -> Response {
    let pending = match validate_create(&call.body, &call.auth) {
        Ok(pending) => pending,
        Err(error) => return Response::fixed(error),
    };
    match service.create_session(pending.into_request()).await {
        Ok(session) => {
            metrics::global().session_created();
            Response::json_value(201, &session_json(&session, false))
        }
        Err(error) => Response::error(error),
    }
}

/// `GET /v1/sessions`: `limit` → `cursor` → `metadata` → policy.
pub async fn list<S: Service>(service: &S, call: &Call<'_>) -> Response {
    let query = match list_query(call) {
        Ok(query) => query,
        Err(error) => return Response::fixed(error),
    };
    match service.list_sessions(query).await {
        Ok(page) => {
            let sessions: Vec<Value> = page
                .sessions
                .iter()
                .map(|session| session_json(session, true))
                .collect();
            let next_cursor = page.next_cursor.map_or(Value::Null, Value::String);
            Response::json_value(
                200,
                &json!({"sessions": sessions, "next_cursor": next_cursor}),
            )
        }
        Err(error) => Response::error(error),
    }
}

fn list_query(call: &Call<'_>) -> Result<ListQuery, FixedError> {
    let limit = parse_limit(call.query.get("limit"))?;
    let cursor = parse_list_cursor(call.query.get("cursor"))?;
    let mut metadata_filters = parse_list_metadata(&call.query)?;
    let (creator_tenant_id, creator_id) = match &call.auth {
        AuthContext::None => (None, None),
        AuthContext::Service { tenant_id, .. } => {
            if !call.auth.has_scope(SCOPE_SESSION_READ) {
                return Err(FORBIDDEN_SCOPE);
            }
            (Some(tenant_id.clone()), None)
        }
        AuthContext::Principal { principal, .. } => {
            if principal.principal_type == PrincipalType::Agent {
                return Err(FORBIDDEN);
            }
            if !call.auth.has_scope(SCOPE_SESSION_READ) {
                return Err(FORBIDDEN_SCOPE);
            }
            (
                Some(principal.tenant_id.clone()),
                Some(principal.id.clone()),
            )
        }
    };
    // Fencing: a caller-supplied tenant filter never widens a token's view.
    if let Some(tenant_id) = &creator_tenant_id {
        metadata_filters.retain(|(key, _)| key != "tenant_id");
        metadata_filters.push(("tenant_id".to_owned(), tenant_id.clone()));
        metadata_filters.sort();
    }
    Ok(ListQuery {
        limit,
        cursor,
        metadata_filters,
        creator_id,
        creator_tenant_id,
    })
}

/// `GET /v1/sessions/:id`.
pub async fn get<S: Service>(service: &S, call: &Call<'_>, session_id: &str) -> Response {
    match &call.auth {
        AuthContext::None => {}
        AuthContext::Service { .. } if !call.auth.has_scope(SCOPE_SESSION_READ) => {
            return Response::fixed(FORBIDDEN_SCOPE);
        }
        AuthContext::Service { .. } => {}
        AuthContext::Principal { .. } => {
            if let Err(error) = check_binding_before_lookup(&call.auth, session_id) {
                return Response::fixed(error);
            }
        }
    }
    let session = match service.get_session(session_id).await {
        Ok(session) => session,
        Err(error) => return Response::error(error),
    };
    let allowed = match &call.auth {
        AuthContext::None => Ok(()),
        AuthContext::Service { tenant_id, .. } => {
            let creator_tenant = session
                .creator_principal
                .as_ref()
                .map(|creator| &creator.tenant_id);
            if creator_tenant == Some(tenant_id) {
                Ok(())
            } else {
                Err(FORBIDDEN_TENANT)
            }
        }
        AuthContext::Principal { .. } => {
            check_principal_access(&call.auth, &session, SCOPE_SESSION_READ)
        }
    };
    match allowed {
        Ok(()) => Response::json_value(200, &session_json(&session, true)),
        Err(error) => Response::fixed(error),
    }
}
