//! Principal tokens (auth.md §6): minted by `POST /v1/auth/issue`, verified by every node with
//! the same key, so their format is fixed byte for byte:
//!
//! ```text
//! K       = HMAC-SHA256(key = STARCITE_SECRET_KEY_BASE, message = STARCITE_AUTH_PRINCIPAL_TOKEN_SALT)
//! payload = base64url_nopad(JSON claims)
//! token   = "spt1." + payload + "." + base64url_nopad(HMAC-SHA256(K, "spt1." + payload))
//! ```

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use starcite_engine::api::{Principal, PrincipalType};

use super::claims::{integer_claim, non_empty_string_list};
use super::TokenError;

/// Prefix of every principal token; a token without it is not one.
pub const PRINCIPAL_TOKEN_PREFIX: &str = "spt1.";
/// Bytes of an HMAC-SHA256 output.
pub const SIGNATURE_BYTES: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// The signing key K, derived once from the secret and the salt.
#[derive(Clone)]
pub struct PrincipalTokenKey {
    key: [u8; SIGNATURE_BYTES],
}

// Hand-written so that the key never reaches a log line through `{:?}`.
impl std::fmt::Debug for PrincipalTokenKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PrincipalTokenKey(<redacted>)")
    }
}

/// What a principal token says about its bearer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrincipalClaims {
    /// Tenant, principal id (`sub`) and type.
    pub principal: Principal,
    /// Scopes, non-empty, in the order granted.
    pub scopes: Vec<String>,
    /// Sessions the token is bound to; `None` when unrestricted (users only).
    pub session_ids: Option<Vec<String>>,
    /// Issue time, unix seconds.
    pub issued_at_unix_seconds: i64,
    /// `exp`, unix seconds.
    pub expires_at_unix_seconds: i64,
}

/// Clock and lifetime bounds of verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyBounds {
    /// Current time, unix seconds.
    pub now_unix_seconds: i64,
    /// `STARCITE_AUTH_JWT_LEEWAY_SECONDS`.
    pub leeway_seconds: i64,
    /// `STARCITE_AUTH_PRINCIPAL_TOKEN_MAX_TTL_SECONDS`.
    pub max_ttl_seconds: i64,
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (longer ones are hashed first), so this cannot fail.
    let mut mac = match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.update(message);
    mac
}

impl PrincipalTokenKey {
    /// K = HMAC-SHA256(key = secret key base, message = salt).
    pub fn derive(secret_key_base: &str, salt: &str) -> PrincipalTokenKey {
        let key = hmac_sha256(secret_key_base.as_bytes(), salt.as_bytes())
            .finalize()
            .into_bytes();
        PrincipalTokenKey { key: key.into() }
    }

    /// Mint a token for `claims` (their `actor` is derived, never taken from the caller).
    pub fn mint(&self, claims: &PrincipalClaims) -> String {
        let principal = &claims.principal;
        let mut object = Map::new();
        object.insert("v".to_owned(), json!(1));
        object.insert("typ".to_owned(), json!("principal"));
        object.insert("tenant_id".to_owned(), json!(principal.tenant_id));
        object.insert("sub".to_owned(), json!(principal.id));
        object.insert(
            "principal_type".to_owned(),
            json!(principal.principal_type.as_str()),
        );
        object.insert("actor".to_owned(), json!(super::principal_actor(principal)));
        object.insert("scopes".to_owned(), json!(claims.scopes));
        if let Some(session_ids) = &claims.session_ids {
            object.insert("session_ids".to_owned(), json!(session_ids));
        }
        object.insert("iat".to_owned(), json!(claims.issued_at_unix_seconds));
        object.insert("exp".to_owned(), json!(claims.expires_at_unix_seconds));
        let payload = URL_SAFE_NO_PAD.encode(Value::Object(object).to_string());
        let signed = format!("{PRINCIPAL_TOKEN_PREFIX}{payload}");
        let signature = hmac_sha256(&self.key, signed.as_bytes())
            .finalize()
            .into_bytes();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// Verify a token (auth.md §6 steps 1–5). Every failure is `Invalid` except the two expiry
    /// cases, which are `Expired`.
    pub fn verify(&self, token: &str, bounds: VerifyBounds) -> Result<PrincipalClaims, TokenError> {
        let rest = token
            .strip_prefix(PRINCIPAL_TOKEN_PREFIX)
            .ok_or(TokenError::Invalid("not a principal token"))?;
        let (payload, signature) = rest
            .split_once('.')
            .ok_or(TokenError::Invalid("principal token has no signature"))?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Invalid("principal token signature is not base64url"))?;
        let signed = &token[..PRINCIPAL_TOKEN_PREFIX.len() + payload.len()];
        // `verify_slice` compares in constant time.
        hmac_sha256(&self.key, signed.as_bytes())
            .verify_slice(&signature)
            .map_err(|_| TokenError::Invalid("principal token signature mismatch"))?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Invalid("principal token payload is not base64url"))?;
        let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&payload) else {
            return Err(TokenError::Invalid(
                "principal token payload is not an object",
            ));
        };
        parse_claims(&claims, bounds)
    }
}

/// Steps 2–5 on the decoded claims.
fn parse_claims(
    claims: &Map<String, Value>,
    bounds: VerifyBounds,
) -> Result<PrincipalClaims, TokenError> {
    if claims.get("v").and_then(Value::as_i64) != Some(1)
        || claims.get("typ").and_then(Value::as_str) != Some("principal")
    {
        return Err(TokenError::Invalid("principal token version or type"));
    }
    let now = i128::from(bounds.now_unix_seconds);
    let leeway = i128::from(bounds.leeway_seconds);
    let expires_at = integer_claim(claims, "exp")
        .filter(|exp| *exp > 0)
        .ok_or(TokenError::Invalid("principal token exp"))?;
    if i128::from(expires_at) + leeway < now {
        return Err(TokenError::Expired);
    }
    let issued_at =
        integer_claim(claims, "iat").ok_or(TokenError::Invalid("principal token iat"))?;
    if i128::from(issued_at) > now + leeway {
        return Err(TokenError::Invalid("principal token issued in the future"));
    }
    if now - i128::from(issued_at) > i128::from(bounds.max_ttl_seconds) + leeway {
        return Err(TokenError::Expired);
    }
    let text = |key: &str| {
        claims
            .get(key)
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
            .ok_or(TokenError::Invalid("principal token identity"))
    };
    let tenant_id = text("tenant_id")?;
    let id = text("sub")?;
    let principal_type = match text("principal_type")? {
        "user" => PrincipalType::User,
        "agent" => PrincipalType::Agent,
        _ => return Err(TokenError::Invalid("principal token type")),
    };
    let principal = Principal {
        tenant_id: tenant_id.to_owned(),
        id: id.to_owned(),
        principal_type,
    };
    if text("actor")? != super::principal_actor(&principal) {
        return Err(TokenError::Invalid("principal token actor"));
    }
    let scopes = claims
        .get("scopes")
        .and_then(non_empty_string_list)
        .ok_or(TokenError::Invalid("principal token scopes"))?;
    let session_ids = match claims.get("session_ids") {
        None => None,
        Some(value) => Some(
            non_empty_string_list(value).ok_or(TokenError::Invalid("principal token sessions"))?,
        ),
    };
    let agent_bound_once = session_ids.as_ref().is_some_and(|ids| ids.len() == 1);
    if principal_type == PrincipalType::Agent && !agent_bound_once {
        return Err(TokenError::Invalid(
            "agent token must name exactly one session",
        ));
    }
    Ok(PrincipalClaims {
        principal,
        scopes,
        session_ids,
        issued_at_unix_seconds: issued_at,
        expires_at_unix_seconds: expires_at,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600;

    fn bounds() -> VerifyBounds {
        VerifyBounds {
            now_unix_seconds: NOW,
            leeway_seconds: 1,
            max_ttl_seconds: 15,
        }
    }

    fn claims(principal_type: PrincipalType, session_ids: Option<Vec<&str>>) -> PrincipalClaims {
        PrincipalClaims {
            principal: Principal {
                tenant_id: "acme".into(),
                id: "u1".into(),
                principal_type,
            },
            scopes: vec!["session:read".into()],
            session_ids: session_ids.map(|ids| ids.into_iter().map(String::from).collect()),
            issued_at_unix_seconds: NOW,
            expires_at_unix_seconds: NOW + 5,
        }
    }

    fn payload_of(token: &str) -> Value {
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    #[test]
    fn round_trip_and_exact_claims() {
        let key = PrincipalTokenKey::derive(&"k".repeat(32), "principal-token-v1");
        let minted = claims(PrincipalType::User, Some(vec!["s1"]));
        let token = key.mint(&minted);
        assert!(token.starts_with("spt1."));
        assert_eq!(key.verify(&token, bounds()), Ok(minted));
        assert_eq!(
            payload_of(&token),
            json!({"v":1,"typ":"principal","tenant_id":"acme","sub":"u1","principal_type":"user",
                   "actor":"user:u1","scopes":["session:read"],"session_ids":["s1"],
                   "iat":NOW,"exp":NOW+5})
        );
        let unrestricted = key.mint(&claims(PrincipalType::User, None));
        assert!(payload_of(&unrestricted).get("session_ids").is_none());
    }

    #[test]
    fn another_secret_or_salt_is_invalid() {
        let key = PrincipalTokenKey::derive(&"k".repeat(32), "principal-token-v1");
        let token = key.mint(&claims(PrincipalType::User, None));
        for other in [
            PrincipalTokenKey::derive(&"x".repeat(32), "principal-token-v1"),
            PrincipalTokenKey::derive(&"k".repeat(32), "other-salt"),
        ] {
            assert!(matches!(
                other.verify(&token, bounds()),
                Err(TokenError::Invalid(_))
            ));
        }
    }

    #[test]
    fn expiry_uses_the_leeway() {
        let key = PrincipalTokenKey::derive(&"k".repeat(32), "s");
        let token = key.mint(&claims(PrincipalType::User, None));
        let at = |now: i64| VerifyBounds {
            now_unix_seconds: now,
            ..bounds()
        };
        assert!(key.verify(&token, at(NOW + 6)).is_ok());
        assert_eq!(key.verify(&token, at(NOW + 7)), Err(TokenError::Expired));
    }

    #[test]
    fn agents_need_exactly_one_session() {
        let key = PrincipalTokenKey::derive(&"k".repeat(32), "s");
        assert!(key
            .verify(
                &key.mint(&claims(PrincipalType::Agent, Some(vec!["a"]))),
                bounds()
            )
            .is_ok());
        for ids in [None, Some(vec!["a", "b"])] {
            let token = key.mint(&claims(PrincipalType::Agent, ids));
            assert!(matches!(
                key.verify(&token, bounds()),
                Err(TokenError::Invalid(_))
            ));
        }
    }
}
