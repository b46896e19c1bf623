//! Authentication and the shared policy checks (auth.md).
//!
//! - [`bearer`]: taking the token from `Authorization` or `access_token` (§2).
//! - [`service_token`]: service JWT verification (§4) against the keys of [`jwks`] (§5).
//! - [`principal_token`]: minting and verifying principal tokens (§6).
//! - [`policy`]: the binding step and the session rule (§7).
//!
//! [`Authenticator`] ties them into the pipelines of §3 and produces the [`AuthContext`] handed
//! to the route handlers, or the `401` with its exact `WWW-Authenticate` header. In auth mode
//! `none` nothing is read: every request gets [`AuthContext::None`] whatever it carries.
//!
//! Tokens are never logged: failures are reported to the client only as the three
//! `WWW-Authenticate` forms, and the request log omits the query where `access_token` travels.

pub mod bearer;
pub mod claims;
pub mod jwks;
pub mod policy;
pub mod principal_token;
pub mod service_token;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::future;
use starcite_engine::api::{Principal, PrincipalType};

use crate::error::UNAUTHORIZED;
use crate::http::Response;
use crate::tail::ServerClose;
use bearer::BearerError;
use jwks::JwksCache;
use principal_token::{PrincipalClaims, PrincipalTokenKey, VerifyBounds};
use service_token::{ServiceClaims, ServiceTokenSettings};

pub use policy::{check_binding_before_lookup, check_principal_access};

/// Scope needed to create sessions.
pub const SCOPE_SESSION_CREATE: &str = "session:create";
/// Scope needed to list and read sessions and to tail.
pub const SCOPE_SESSION_READ: &str = "session:read";
/// Scope needed to append.
pub const SCOPE_SESSION_APPEND: &str = "session:append";
/// Scope needed to mint principal tokens.
pub const SCOPE_AUTH_ISSUE: &str = "auth:issue";

/// Longest bearer token considered; a longer one is invalid without being parsed.
pub const TOKEN_BYTES_MAX: usize = 8 * 1024;

/// Minimum length of `STARCITE_SECRET_KEY_BASE` (config.md §4.2).
pub const SECRET_KEY_BASE_BYTES_MIN: usize = 32;

/// `WWW-Authenticate` when no token was sent (auth.md §3).
pub const WWW_AUTHENTICATE_MISSING: &str = r#"Bearer realm="starcite""#;
/// `WWW-Authenticate` for a malformed `Authorization` header or `access_token`.
pub const WWW_AUTHENTICATE_MALFORMED: &str = r#"Bearer realm="starcite", error="invalid_request", error_description="Malformed bearer token""#;
/// `WWW-Authenticate` for every other failure (signature, claims, expiry, keys).
pub const WWW_AUTHENTICATE_INVALID: &str = r#"Bearer realm="starcite", error="invalid_token""#;

/// The auth kind of a request and what its token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthContext {
    /// Auth mode `none`: no route authenticates.
    None,
    /// A verified service JWT.
    Service {
        /// The token's tenant.
        tenant_id: String,
        /// Scopes, duplicates removed.
        scopes: Vec<String>,
    },
    /// A verified principal token.
    Principal {
        /// The token's principal.
        principal: Principal,
        /// Scopes, duplicates removed.
        scopes: Vec<String>,
        /// Sessions the token is bound to, when restricted.
        session_ids: Option<Vec<String>>,
    },
}

impl AuthContext {
    /// True when the token grants `scope` (always true in mode `none`).
    pub fn has_scope(&self, scope: &str) -> bool {
        match self {
            AuthContext::None => true,
            AuthContext::Service { scopes, .. } | AuthContext::Principal { scopes, .. } => {
                scopes.iter().any(|granted| granted == scope)
            }
        }
    }
}

/// `actor` derived from a principal: `"<type>:<id>"`.
pub fn principal_actor(principal: &Principal) -> String {
    format!("{}:{}", principal.principal_type.as_str(), principal.id)
}

/// Why a token was refused. Only expiry is told apart: it decides the tail's close reason and
/// wins when both pipelines of auth.md §3 fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// `exp` (plus leeway) has passed, or a principal token outlived the maximum ttl.
    #[error("token_expired")]
    Expired,
    /// Anything else; the text says which check failed (never the token itself).
    #[error("token invalid: {0}")]
    Invalid(&'static str),
}

/// Why a request got `401`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No token.
    Missing,
    /// A malformed `Authorization` header or `access_token`.
    Malformed,
    /// The token did not verify.
    Token(TokenError),
}

impl From<BearerError> for AuthFailure {
    fn from(error: BearerError) -> AuthFailure {
        match error {
            BearerError::Missing => AuthFailure::Missing,
            BearerError::Malformed => AuthFailure::Malformed,
        }
    }
}

impl AuthFailure {
    /// The `401` of auth.md §3 with its single `WWW-Authenticate` header.
    pub fn response(self) -> Response {
        let challenge = match self {
            AuthFailure::Missing => WWW_AUTHENTICATE_MISSING,
            AuthFailure::Malformed => WWW_AUTHENTICATE_MALFORMED,
            AuthFailure::Token(_) => WWW_AUTHENTICATE_INVALID,
        };
        let mut response = Response::fixed(UNAUTHORIZED);
        response
            .headers
            .push(("www-authenticate", challenge.to_owned()));
        response
    }
}

/// Failures that stop the listener from starting.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// `jwt` mode settings the configuration layer should have refused.
    #[error("invalid auth settings: {0}")]
    Invalid(&'static str),
    /// The JWKS fetch thread could not be started.
    #[error("start JWKS fetch thread: {0}")]
    FetchThread(std::io::Error),
}

/// `STARCITE_AUTH_MODE`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// No route authenticates (the default).
    #[default]
    None,
    /// Service JWTs and principal tokens.
    Jwt,
}

/// Authentication settings (config.md §4.2). In mode `none` only `mode` is read.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `STARCITE_AUTH_MODE`.
    pub mode: AuthMode,
    /// `STARCITE_AUTH_JWT_ISSUER`.
    pub issuer: String,
    /// `STARCITE_AUTH_JWT_AUDIENCE`.
    pub audience: String,
    /// `STARCITE_AUTH_JWKS_URL` (`http` or `https`).
    pub jwks_url: String,
    /// `STARCITE_AUTH_JWT_LEEWAY_SECONDS`, for service JWTs and principal tokens.
    pub leeway_seconds: u64,
    /// `STARCITE_AUTH_JWKS_REFRESH_MS`: JWKS lifetime and the tail's re-validation interval.
    pub jwks_refresh_ms: u64,
    /// `STARCITE_AUTH_JWKS_STALE_MAX_MS`.
    pub jwks_stale_max_ms: u64,
    /// `STARCITE_SECRET_KEY_BASE` (at least [`SECRET_KEY_BASE_BYTES_MIN`] bytes in mode `jwt`).
    pub secret_key_base: String,
    /// `STARCITE_AUTH_PRINCIPAL_TOKEN_SALT`.
    pub principal_token_salt: String,
    /// `STARCITE_AUTH_PRINCIPAL_TOKEN_DEFAULT_TTL_SECONDS`.
    pub default_ttl_seconds: u64,
    /// `STARCITE_AUTH_PRINCIPAL_TOKEN_MAX_TTL_SECONDS`.
    pub max_ttl_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            mode: AuthMode::None,
            issuer: String::new(),
            audience: String::new(),
            jwks_url: String::new(),
            leeway_seconds: 1,
            jwks_refresh_ms: 60_000,
            jwks_stale_max_ms: 300_000,
            secret_key_base: String::new(),
            principal_token_salt: "principal-token-v1".to_owned(),
            default_ttl_seconds: 5,
            max_ttl_seconds: 15,
        }
    }
}

// Hand-written so that the secret never reaches a log line through `{:?}`.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AuthConfig")
            .field("mode", &self.mode)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("jwks_url", &self.jwks_url)
            .field("leeway_seconds", &self.leeway_seconds)
            .field("jwks_refresh_ms", &self.jwks_refresh_ms)
            .field("jwks_stale_max_ms", &self.jwks_stale_max_ms)
            .field("secret_key_base", &"<redacted>")
            .field("principal_token_salt", &self.principal_token_salt)
            .field("default_ttl_seconds", &self.default_ttl_seconds)
            .field("max_ttl_seconds", &self.max_ttl_seconds)
            .finish()
    }
}

/// Which tokens a route accepts (auth.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pipeline {
    /// `POST /v1/auth/issue`: service JWTs only.
    ServiceRequired,
    /// Every other `/v1/*` route: a service JWT, else a principal token.
    ServiceElsePrincipal,
}

/// A verified bearer token kept for the life of a tail: its expiry ends the tail, and it is
/// re-verified periodically.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The token as sent. Never logged.
    pub token: String,
    /// `exp`, unix seconds.
    pub expires_at_unix_seconds: i64,
}

// Hand-written so that the token never reaches a log line through `{:?}`.
impl std::fmt::Debug for Credential {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Credential")
            .field("token", &"<redacted>")
            .field("expires_at_unix_seconds", &self.expires_at_unix_seconds)
            .finish()
    }
}

/// The outcome of a successful authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    /// What the handlers see.
    pub context: AuthContext,
    /// The verified token (`None` in mode `none`).
    pub credential: Option<Credential>,
}

impl Authenticated {
    /// Mode `none`.
    pub fn none() -> Authenticated {
        Authenticated {
            context: AuthContext::None,
            credential: None,
        }
    }
}

/// A principal token freshly minted by `POST /v1/auth/issue`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    /// The `spt1.` token.
    pub token: String,
    /// The claims it carries.
    pub claims: PrincipalClaims,
}

/// Current wall-clock time in unix seconds (0 before the epoch, which no real clock shows).
pub fn unix_now_seconds() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
}

fn unix_now_ms() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
}

/// Verifies tokens for one listener. The JWKS cache inside is shared by every shard.
pub struct Authenticator {
    mode: AuthMode,
    service_settings: ServiceTokenSettings,
    principal_key: PrincipalTokenKey,
    jwks: Option<Arc<JwksCache>>,
    leeway_seconds: i64,
    default_ttl_seconds: u64,
    max_ttl_seconds: u64,
    revalidate_interval: Duration,
}

impl Authenticator {
    /// Build from `config`; in mode `jwt` this joins (or starts) the JWKS cache of its URL.
    pub fn new(config: &AuthConfig) -> Result<Authenticator, AuthSetupError> {
        let jwks = match config.mode {
            AuthMode::None => None,
            AuthMode::Jwt => {
                // Refused again here so that a wiring mistake fails closed instead of running
                // with an empty secret or issuer.
                if config.secret_key_base.len() < SECRET_KEY_BASE_BYTES_MIN {
                    return Err(AuthSetupError::Invalid("secret key base too short"));
                }
                if config.issuer.is_empty()
                    || config.audience.is_empty()
                    || config.jwks_url.is_empty()
                {
                    return Err(AuthSetupError::Invalid(
                        "issuer, audience or JWKS URL missing",
                    ));
                }
                if config.principal_token_salt.is_empty() || config.jwks_refresh_ms == 0 {
                    return Err(AuthSetupError::Invalid("empty salt or zero JWKS refresh"));
                }
                Some(JwksCache::shared(
                    &config.jwks_url,
                    Duration::from_millis(config.jwks_refresh_ms),
                    Duration::from_millis(config.jwks_stale_max_ms),
                )?)
            }
        };
        let leeway_seconds = i64::try_from(config.leeway_seconds).unwrap_or(i64::MAX);
        Ok(Authenticator {
            mode: config.mode,
            service_settings: ServiceTokenSettings {
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                leeway_seconds,
            },
            principal_key: PrincipalTokenKey::derive(
                &config.secret_key_base,
                &config.principal_token_salt,
            ),
            jwks,
            leeway_seconds,
            default_ttl_seconds: config.default_ttl_seconds,
            max_ttl_seconds: config.max_ttl_seconds,
            revalidate_interval: Duration::from_millis(config.jwks_refresh_ms.max(1)),
        })
    }

    /// The mode this authenticator enforces.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Step 4 of the global check order for a route with `pipeline`, given the bearer
    /// extraction result. Mode `none` ignores the token whatever it is.
    pub async fn authenticate(
        &self,
        bearer: Result<&str, BearerError>,
        pipeline: Pipeline,
    ) -> Result<Authenticated, AuthFailure> {
        if self.mode == AuthMode::None {
            return Ok(Authenticated::none());
        }
        let token = bearer?;
        let (context, expires_at_unix_seconds) = self
            .verify(token, pipeline)
            .await
            .map_err(AuthFailure::Token)?;
        Ok(Authenticated {
            context,
            credential: Some(Credential {
                token: token.to_owned(),
                expires_at_unix_seconds,
            }),
        })
    }

    /// Verify `token` under `pipeline`: the context it grants and its `exp`.
    pub async fn verify(
        &self,
        token: &str,
        pipeline: Pipeline,
    ) -> Result<(AuthContext, i64), TokenError> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(TokenError::Invalid("token too long"));
        }
        let service_error = match self.verify_service(token).await {
            Ok(claims) => {
                let context = AuthContext::Service {
                    tenant_id: claims.tenant_id,
                    scopes: claims.scopes,
                };
                return Ok((context, claims.expires_at_unix_seconds));
            }
            Err(error) => error,
        };
        if pipeline == Pipeline::ServiceRequired {
            return Err(service_error);
        }
        match self.verify_principal(token) {
            Ok(claims) => {
                let expires_at = claims.expires_at_unix_seconds;
                let context = AuthContext::Principal {
                    principal: claims.principal,
                    scopes: claims.scopes,
                    session_ids: claims.session_ids,
                };
                Ok((context, expires_at))
            }
            Err(TokenError::Expired) => Err(TokenError::Expired),
            Err(TokenError::Invalid(_)) => Err(service_error),
        }
    }

    async fn verify_service(&self, token: &str) -> Result<ServiceClaims, TokenError> {
        let jwt = service_token::parse_compact(token)?;
        let jwks = self
            .jwks
            .as_ref()
            .ok_or(TokenError::Invalid("no JWKS in this auth mode"))?;
        let mut keys = match jwks.usable_keys() {
            Some(keys) => Some(keys),
            None => jwks.refresh().await,
        };
        let known = keys
            .as_ref()
            .is_some_and(|keys| keys.get(&jwt.kid).is_some());
        if !known {
            keys = jwks.refresh().await;
        }
        let key = keys
            .as_ref()
            .and_then(|keys| keys.get(&jwt.kid))
            .ok_or(TokenError::Invalid("unknown kid"))?;
        service_token::verify_signature(&jwt, key)?;
        service_token::check_claims(&jwt, &self.service_settings, unix_now_seconds())
    }

    fn verify_principal(&self, token: &str) -> Result<PrincipalClaims, TokenError> {
        self.principal_key.verify(
            token,
            VerifyBounds {
                now_unix_seconds: unix_now_seconds(),
                leeway_seconds: self.leeway_seconds,
                max_ttl_seconds: i64::try_from(self.max_ttl_seconds).unwrap_or(i64::MAX),
            },
        )
    }

    /// `STARCITE_AUTH_PRINCIPAL_TOKEN_DEFAULT_TTL_SECONDS`.
    pub fn default_ttl_seconds(&self) -> u64 {
        self.default_ttl_seconds
    }

    /// `STARCITE_AUTH_PRINCIPAL_TOKEN_MAX_TTL_SECONDS`.
    pub fn max_ttl_seconds(&self) -> u64 {
        self.max_ttl_seconds
    }

    /// Mint a principal token valid for `ttl_seconds` from now.
    pub fn issue(
        &self,
        principal: Principal,
        scopes: Vec<String>,
        session_ids: Option<Vec<String>>,
        ttl_seconds: u64,
    ) -> IssuedToken {
        let issued_at = unix_now_seconds();
        let ttl = i64::try_from(ttl_seconds).unwrap_or(i64::MAX);
        let claims = PrincipalClaims {
            principal,
            scopes,
            session_ids,
            issued_at_unix_seconds: issued_at,
            expires_at_unix_seconds: issued_at.saturating_add(ttl),
        };
        IssuedToken {
            token: self.principal_key.mint(&claims),
            claims,
        }
    }

    /// The end of an open tail (tail.md §6): resolves at the token's `exp` (wall clock, no
    /// leeway) with `TokenExpired`, or when a periodic re-verification fails. Never resolves
    /// in mode `none` (there is no credential then).
    pub async fn watch(&self, credential: Option<Credential>) -> ServerClose {
        let Some(credential) = credential else {
            return future::pending().await;
        };
        let expiry = async {
            let expires_at_ms = credential.expires_at_unix_seconds.saturating_mul(1000);
            loop {
                let remaining_ms = expires_at_ms.saturating_sub(unix_now_ms());
                if remaining_ms <= 0 {
                    return ServerClose::TokenExpired;
                }
                // Timers may wake a little early; the loop re-reads the clock.
                glommio::timer::sleep(Duration::from_millis(remaining_ms.unsigned_abs())).await;
            }
        };
        let revalidation = async {
            loop {
                glommio::timer::sleep(self.revalidate_interval).await;
                match self
                    .verify(&credential.token, Pipeline::ServiceElsePrincipal)
                    .await
                {
                    Ok(_) => {}
                    Err(TokenError::Expired) => return ServerClose::TokenExpired,
                    Err(TokenError::Invalid(_)) => return ServerClose::TokenInvalid,
                }
            }
        };
        future::or(expiry, revalidation).await
    }
}

/// The principal type named by `text`.
pub fn parse_principal_type(text: &str) -> Option<PrincipalType> {
    match text {
        "user" => Some(PrincipalType::User),
        "agent" => Some(PrincipalType::Agent),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_responses_carry_one_exact_challenge() {
        for (failure, challenge) in [
            (AuthFailure::Missing, r#"Bearer realm="starcite""#),
            (
                AuthFailure::Malformed,
                r#"Bearer realm="starcite", error="invalid_request", error_description="Malformed bearer token""#,
            ),
            (
                AuthFailure::Token(TokenError::Expired),
                r#"Bearer realm="starcite", error="invalid_token""#,
            ),
        ] {
            let response = failure.response();
            assert_eq!(response.status, 401);
            assert_eq!(
                response.body,
                br#"{"error":"unauthorized","message":"Unauthorized"}"#.to_vec()
            );
            let challenges: Vec<_> = response
                .headers
                .iter()
                .filter(|(name, _)| *name == "www-authenticate")
                .collect();
            assert_eq!(
                challenges,
                vec![&("www-authenticate", challenge.to_owned())]
            );
        }
    }

    /// A tail whose token stops verifying before its `exp` is closed by the periodic
    /// re-validation with `token_invalid` (tail.md §6).
    #[test]
    fn revalidation_failure_closes_with_token_invalid() {
        let config = AuthConfig {
            mode: AuthMode::Jwt,
            issuer: "issuer".into(),
            audience: "audience".into(),
            // Nothing listens here: the JWKS never loads, so no service JWT verifies.
            jwks_url: "http://127.0.0.1:1/jwks".into(),
            jwks_refresh_ms: 100,
            secret_key_base: "k".repeat(SECRET_KEY_BASE_BYTES_MIN),
            ..AuthConfig::default()
        };
        let close = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                let authenticator = Authenticator::new(&config).unwrap();
                let credential = Credential {
                    token: "not-a-token".into(),
                    expires_at_unix_seconds: unix_now_seconds() + 60,
                };
                authenticator.watch(Some(credential)).await
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(close, ServerClose::TokenInvalid);
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let config = AuthConfig {
            secret_key_base: "super-secret-value".into(),
            ..AuthConfig::default()
        };
        assert!(!format!("{config:?}").contains("super-secret-value"));
        let credential = Credential {
            token: "spt1.secret".into(),
            expires_at_unix_seconds: 1,
        };
        assert!(!format!("{credential:?}").contains("spt1.secret"));
    }
}
