//! Service JWT verification (auth.md §4) in its four parts: the compact form and header
//! ([`parse_compact`]), the key chosen by `kid` (the caller, from the JWKS cache), the RS256
//! signature ([`verify_signature`], done by `jsonwebtoken`), and the claims ([`check_claims`]).
//!
//! The header is read here rather than by `jsonwebtoken` because the contract is stricter than a
//! general JWT library: `alg` must be exactly `RS256`, `kid` must be a non-empty string, `crit`
//! is refused, and embedded keys (`jwk`, `jku`, `x5u`, `x5c`) are never looked at.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use super::claims::{dedupe_keep_first, integer_claim};
use super::TokenError;

/// Settings the claims are checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceTokenSettings {
    /// `STARCITE_AUTH_JWT_ISSUER`.
    pub issuer: String,
    /// `STARCITE_AUTH_JWT_AUDIENCE`.
    pub audience: String,
    /// `STARCITE_AUTH_JWT_LEEWAY_SECONDS`.
    pub leeway_seconds: i64,
}

/// A compact JWS whose header passed step 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactJwt<'a> {
    /// The key id named by the header.
    pub kid: String,
    /// `header.payload`, the signed bytes.
    pub signed: &'a str,
    /// The base64url payload.
    pub payload: &'a str,
    /// The base64url signature.
    pub signature: &'a str,
}

/// What a verified service JWT grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceClaims {
    /// `tenant_id`.
    pub tenant_id: String,
    /// `scope` then `scopes`, duplicates removed keeping the first.
    pub scopes: Vec<String>,
    /// `exp`, unix seconds.
    pub expires_at_unix_seconds: i64,
}

/// Step 1: three base64url parts; a JSON object header with `alg` exactly `RS256`, a non-empty
/// string `kid` and no `crit`.
pub fn parse_compact(token: &str) -> Result<CompactJwt<'_>, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Invalid("not a compact JWS"));
    };
    let header_bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Invalid("JWT header is not base64url"))?;
    let Ok(Value::Object(header_object)) = serde_json::from_slice::<Value>(&header_bytes) else {
        return Err(TokenError::Invalid("JWT header is not a JSON object"));
    };
    if header_object.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(TokenError::Invalid("JWT alg is not RS256"));
    }
    if header_object.contains_key("crit") {
        return Err(TokenError::Invalid("JWT header has crit"));
    }
    let kid = header_object
        .get("kid")
        .and_then(Value::as_str)
        .filter(|kid| !kid.is_empty())
        .ok_or(TokenError::Invalid("JWT header has no kid"))?;
    Ok(CompactJwt {
        kid: kid.to_owned(),
        signed: &token[..header.len() + 1 + payload.len()],
        payload,
        signature,
    })
}

/// Step 3: the RS256 signature over `header.payload` with the JWKS key.
pub fn verify_signature(jwt: &CompactJwt<'_>, key: &DecodingKey) -> Result<(), TokenError> {
    match jsonwebtoken::crypto::verify(jwt.signature, jwt.signed.as_bytes(), key, Algorithm::RS256)
    {
        Ok(true) => Ok(()),
        Ok(false) | Err(_) => Err(TokenError::Invalid("JWT signature")),
    }
}

/// Steps 4–6 on the payload of a JWT whose signature verified.
pub fn check_claims(
    jwt: &CompactJwt<'_>,
    settings: &ServiceTokenSettings,
    now_unix_seconds: i64,
) -> Result<ServiceClaims, TokenError> {
    let payload = URL_SAFE_NO_PAD
        .decode(jwt.payload)
        .map_err(|_| TokenError::Invalid("JWT payload is not base64url"))?;
    let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&payload) else {
        return Err(TokenError::Invalid("JWT payload is not a JSON object"));
    };
    if claims.get("iss").and_then(Value::as_str) != Some(settings.issuer.as_str()) {
        return Err(TokenError::Invalid("JWT iss"));
    }
    let audience_matches = match claims.get("aud") {
        Some(Value::String(audience)) => *audience == settings.audience,
        Some(Value::Array(audiences)) => {
            audiences.iter().all(Value::is_string)
                && audiences
                    .iter()
                    .any(|audience| audience.as_str() == Some(settings.audience.as_str()))
        }
        _ => false,
    };
    if !audience_matches {
        return Err(TokenError::Invalid("JWT aud"));
    }
    check_times(&claims, settings.leeway_seconds, now_unix_seconds)?;
    let tenant_id = claims
        .get("tenant_id")
        .and_then(Value::as_str)
        .filter(|tenant| !tenant.is_empty())
        .ok_or(TokenError::Invalid("JWT tenant_id"))?;
    let scopes = collect_scopes(&claims)?;
    let expires_at_unix_seconds =
        integer_claim(&claims, "exp").ok_or(TokenError::Invalid("JWT exp"))?;
    Ok(ServiceClaims {
        tenant_id: tenant_id.to_owned(),
        scopes,
        expires_at_unix_seconds,
    })
}

/// `exp` (required, ≥ 0), `nbf` and `iat` (optional), all JSON integers, with leeway L.
fn check_times(
    claims: &Map<String, Value>,
    leeway_seconds: i64,
    now_unix_seconds: i64,
) -> Result<(), TokenError> {
    let now = i128::from(now_unix_seconds);
    let leeway = i128::from(leeway_seconds);
    let optional_time = |key: &'static str| match claims.get(key) {
        None => Ok(None),
        Some(_) => integer_claim(claims, key)
            .map(Some)
            .ok_or(TokenError::Invalid(key)),
    };
    let expires_at = integer_claim(claims, "exp")
        .filter(|exp| *exp >= 0)
        .ok_or(TokenError::Invalid("JWT exp"))?;
    let not_before = optional_time("nbf")?;
    let issued_at = optional_time("iat")?;
    if i128::from(expires_at) + leeway < now {
        return Err(TokenError::Expired);
    }
    if not_before.is_some_and(|nbf| i128::from(nbf) - leeway > now) {
        return Err(TokenError::Invalid("JWT not yet valid"));
    }
    if issued_at.is_some_and(|iat| i128::from(iat) > now + leeway) {
        return Err(TokenError::Invalid("JWT issued in the future"));
    }
    Ok(())
}

/// Step 6: `scope` split on whitespace, then `scopes`; non-empty union.
fn collect_scopes(claims: &Map<String, Value>) -> Result<Vec<String>, TokenError> {
    let mut scopes = Vec::new();
    match claims.get("scope") {
        None => {}
        Some(Value::String(scope)) => {
            scopes.extend(scope.split_whitespace().map(str::to_owned));
        }
        Some(_) => return Err(TokenError::Invalid("JWT scope")),
    }
    match claims.get("scopes") {
        None => {}
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(scope) if !scope.is_empty() => scopes.push(scope.clone()),
                    _ => return Err(TokenError::Invalid("JWT scopes")),
                }
            }
        }
        Some(_) => return Err(TokenError::Invalid("JWT scopes")),
    }
    let scopes = dedupe_keep_first(scopes);
    if scopes.is_empty() {
        return Err(TokenError::Invalid("JWT grants no scope"));
    }
    Ok(scopes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_767_225_600;

    fn encode(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    fn token(header: Value, claims: Value) -> String {
        format!("{}.{}.c2ln", encode(&header), encode(&claims))
    }

    fn settings() -> ServiceTokenSettings {
        ServiceTokenSettings {
            issuer: "iss".into(),
            audience: "aud".into(),
            leeway_seconds: 1,
        }
    }

    fn claims_of(claims: Value) -> Result<ServiceClaims, TokenError> {
        let raw = token(json!({"alg":"RS256","kid":"k"}), claims);
        check_claims(&parse_compact(&raw).unwrap(), &settings(), NOW)
    }

    fn base() -> Value {
        json!({"iss":"iss","aud":"aud","exp":NOW + 60,"tenant_id":"acme","scope":"a b"})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut claims = base();
        claims[key] = value;
        claims
    }

    #[test]
    fn header_rules() {
        let claims = base();
        assert!(parse_compact(&token(json!({"alg":"RS256","kid":"k"}), claims.clone())).is_ok());
        for header in [
            json!({"alg":"none","kid":"k"}),
            json!({"alg":"HS256","kid":"k"}),
            json!({"alg":"RS384","kid":"k"}),
            json!({"alg":"PS256","kid":"k"}),
            json!({"alg":"RS256"}),
            json!({"alg":"RS256","kid":""}),
            json!({"alg":"RS256","kid":5}),
            json!({"alg":"RS256","kid":"k","crit":["exp"]}),
            json!(["RS256"]),
        ] {
            assert!(
                parse_compact(&token(header.clone(), claims.clone())).is_err(),
                "{header}"
            );
        }
        for malformed in ["abc", "a.b", "a.b.c.d", "!!.e30.x", "spt1.e30.x"] {
            assert!(parse_compact(malformed).is_err(), "{malformed}");
        }
    }

    #[test]
    fn claim_rules() {
        let granted = claims_of(with("scopes", json!(["b", "c"]))).unwrap();
        assert_eq!(granted.scopes, vec!["a", "b", "c"]);
        assert_eq!(granted.tenant_id, "acme");
        assert!(claims_of(with("aud", json!(["x", "aud"]))).is_ok());
        assert!(claims_of(with("exp", json!(NOW - 1))).is_ok());
        assert_eq!(
            claims_of(with("exp", json!(NOW - 2))),
            Err(TokenError::Expired)
        );
        assert!(claims_of(with("nbf", json!(NOW + 1))).is_ok());
        assert!(claims_of(with("iat", json!(NOW + 1))).is_ok());
        for (key, value) in [
            ("iss", json!("other")),
            ("aud", json!("other")),
            ("aud", json!(["other"])),
            ("exp", json!(null)),
            ("exp", json!("1")),
            ("exp", json!(-1)),
            ("exp", serde_json::from_str::<Value>("1e12").unwrap()),
            ("nbf", json!(NOW + 2)),
            ("nbf", json!(1.5)),
            ("iat", json!(NOW + 2)),
            ("tenant_id", json!("")),
            ("tenant_id", json!(null)),
            ("scope", json!(["a"])),
            ("scope", json!(" ")),
            ("scopes", json!("a")),
            ("scopes", json!(["a", ""])),
        ] {
            let mut claims = with(key, value.clone());
            if key == "scope" {
                claims.as_object_mut().unwrap().remove("scopes");
            }
            assert!(
                matches!(claims_of(claims), Err(TokenError::Invalid(_))),
                "{key}={value}"
            );
        }
    }
}
