//! The `POST /v1/sessions` body (http-api.md §3): creator resolution by auth kind, `id`, `title`,
//! `metadata`, tenant fencing and id generation, in the contract's order.

use base64::Engine as _;
use rand::RngCore;
use serde_json::{Map, Value};
use starcite_engine::api::{CreateSession, Principal, PrincipalType};

use super::non_empty_string;
use crate::auth::{AuthContext, SCOPE_SESSION_CREATE};
use crate::error::{
    FixedError, FORBIDDEN, FORBIDDEN_SCOPE, FORBIDDEN_TENANT, INVALID_EVENT, INVALID_METADATA,
    INVALID_SESSION,
};

/// Prefix of generated session ids.
pub const GENERATED_ID_PREFIX: &str = "ses_";
/// Random bytes in a generated session id (16 base64url characters).
pub const GENERATED_ID_RANDOM_BYTES: usize = 12;

/// Validate a create body; `Ok` holds the request ready for the engine, with the id still
/// `None` when the caller did not choose one (see [`generate_session_id`]).
pub fn validate_create(
    body: &Map<String, Value>,
    auth: &AuthContext,
) -> Result<PendingCreate, FixedError> {
    let creator = resolve_creator(body, auth)?;
    let id = match body.get("id") {
        None | Some(Value::Null) => None,
        value => Some(non_empty_string(value).ok_or(INVALID_EVENT)?.to_owned()),
    };
    let title = match body.get("title") {
        None | Some(Value::Null) => None,
        Some(Value::String(title)) => Some(title.clone()),
        Some(_) => return Err(INVALID_EVENT),
    };
    let mut metadata = match body.get("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(object)) => object.clone(),
        Some(_) => return Err(INVALID_METADATA),
    };
    match metadata.get("tenant_id") {
        None | Some(Value::Null) => {
            metadata.insert(
                "tenant_id".to_owned(),
                Value::String(creator.tenant_id.clone()),
            );
        }
        Some(Value::String(tenant_id)) if *tenant_id == creator.tenant_id => {}
        Some(_) => return Err(FORBIDDEN_TENANT),
    }
    Ok(PendingCreate {
        id,
        title,
        creator,
        metadata,
    })
}

/// A validated create whose id may still need generating.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingCreate {
    /// Caller-chosen id.
    pub id: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Resolved creator.
    pub creator: Principal,
    /// Metadata after tenant fencing.
    pub metadata: Map<String, Value>,
}

impl PendingCreate {
    /// The engine request, generating an id when none was given.
    pub fn into_request(self) -> CreateSession {
        CreateSession {
            id: self.id.unwrap_or_else(generate_session_id),
            title: self.title,
            creator_principal: Some(self.creator),
            metadata: self.metadata,
        }
    }
}

/// `"ses_"` + base64url-without-padding of 12 random bytes.
pub fn generate_session_id() -> String {
    let mut random = [0_u8; GENERATED_ID_RANDOM_BYTES];
    rand::thread_rng().fill_bytes(&mut random);
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
    format!("{GENERATED_ID_PREFIX}{encoded}")
}

/// Step 1 of §3: who the creator is, by auth kind.
fn resolve_creator(body: &Map<String, Value>, auth: &AuthContext) -> Result<Principal, FixedError> {
    match auth {
        AuthContext::None => parse_creator(body.get("creator_principal")).ok_or(INVALID_SESSION),
        AuthContext::Service { tenant_id, .. } => {
            let Some(raw_creator) = body.get("creator_principal") else {
                return Err(INVALID_SESSION);
            };
            if !auth.has_scope(SCOPE_SESSION_CREATE) {
                return Err(FORBIDDEN_SCOPE);
            }
            let creator = parse_creator(Some(raw_creator)).ok_or(INVALID_SESSION)?;
            if creator.tenant_id != *tenant_id {
                return Err(FORBIDDEN_TENANT);
            }
            Ok(creator)
        }
        AuthContext::Principal { principal, .. } => {
            if principal.principal_type == PrincipalType::Agent {
                return Err(FORBIDDEN);
            }
            if body.contains_key("creator_principal") {
                return Err(INVALID_SESSION);
            }
            if !auth.has_scope(SCOPE_SESSION_CREATE) {
                return Err(FORBIDDEN_SCOPE);
            }
            Ok(principal.clone())
        }
    }
}

/// `{"tenant_id": non-empty, "id": non-empty, "type": "user"|"agent"}`, extra keys ignored.
fn parse_creator(value: Option<&Value>) -> Option<Principal> {
    let Some(Value::Object(object)) = value else {
        return None;
    };
    let principal_type = match object.get("type") {
        Some(Value::String(text)) if text == "user" => PrincipalType::User,
        Some(Value::String(text)) if text == "agent" => PrincipalType::Agent,
        _ => return None,
    };
    Some(Principal {
        tenant_id: non_empty_string(object.get("tenant_id"))?.to_owned(),
        id: non_empty_string(object.get("id"))?.to_owned(),
        principal_type,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validate(body: Value) -> Result<PendingCreate, FixedError> {
        let Value::Object(object) = body else {
            panic!("test bodies are objects")
        };
        validate_create(&object, &AuthContext::None)
    }

    fn creator() -> Value {
        json!({"tenant_id":"acme","id":"u1","type":"user","extra":1})
    }

    #[test]
    fn accepts_a_minimal_body_and_fences_the_tenant() {
        let pending = validate(json!({"creator_principal": creator()})).unwrap();
        assert_eq!(pending.id, None);
        assert_eq!(
            pending.metadata,
            json!({"tenant_id":"acme"}).as_object().unwrap().clone()
        );
        let kept = validate(
            json!({"creator_principal": creator(), "metadata": {"tenant_id":"acme","w":1}}),
        );
        assert_eq!(kept.unwrap().metadata.get("w"), Some(&json!(1)));
    }

    #[test]
    fn rejects_in_the_contract_order() {
        let cases = [
            (json!({}), INVALID_SESSION),
            (json!({"creator_principal": null}), INVALID_SESSION),
            (
                json!({"creator_principal": {"tenant_id":"acme","id":"u1","type":"robot"}}),
                INVALID_SESSION,
            ),
            (
                json!({"creator_principal": {"tenant_id":"","id":"u1","type":"user"}}),
                INVALID_SESSION,
            ),
            (
                json!({"creator_principal": {"tenant_id":"acme","id":"u1"}}),
                INVALID_SESSION,
            ),
            (json!({"id": 5}), INVALID_SESSION),
            (
                json!({"creator_principal": creator(), "id": ""}),
                INVALID_EVENT,
            ),
            (
                json!({"creator_principal": creator(), "id": 5, "metadata": 1}),
                INVALID_EVENT,
            ),
            (
                json!({"creator_principal": creator(), "title": 5}),
                INVALID_EVENT,
            ),
            (
                json!({"creator_principal": creator(), "metadata": []}),
                INVALID_METADATA,
            ),
            (
                json!({"creator_principal": creator(), "metadata": {"tenant_id":"beta"}}),
                FORBIDDEN_TENANT,
            ),
            (
                json!({"creator_principal": creator(), "metadata": {"tenant_id":1}}),
                FORBIDDEN_TENANT,
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(validate(body.clone()), Err(expected), "{body}");
        }
        assert!(validate(
            json!({"creator_principal": creator(), "id": null, "title": "", "metadata": null})
        )
        .is_ok());
    }

    #[test]
    fn generated_ids_have_the_documented_shape() {
        let id = generate_session_id();
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("ses_"));
        assert!(id[4..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(id, generate_session_id());
    }
}
