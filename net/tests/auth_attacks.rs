//! The attack table of auth.md §8 against a server in auth mode `jwt` with a real JWKS server:
//! every forged, altered, expired or misdirected token gets the contract's `401` (or `403`) and
//! changes nothing. Plus a property test: a token signed by any key outside the JWKS is always
//! rejected, whatever its claims and `kid`.

#![allow(clippy::unwrap_used)]

mod auth_support;
mod http_support;

use auth_support::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http_support::TestServer;
use jsonwebtoken::{Algorithm, Header};
use proptest::prelude::*;
use serde_json::{json, Value};
use sha2::Sha256;
use starcite_engine::api::{Principal, PrincipalType};
use starcite_net::auth::principal_token::{PrincipalClaims, PrincipalTokenKey};

const INVALID_TOKEN: &str = r#"Bearer realm="starcite", error="invalid_token""#;
const INVALID_REQUEST: &str = r#"Bearer realm="starcite", error="invalid_request", error_description="Malformed bearer token""#;

fn assert_unauthorized(response: &http_support::TestResponse, challenge: &str, label: &str) {
    assert_eq!(response.status, 401, "{label}: {}", response.text());
    assert_eq!(
        response.text(),
        r#"{"error":"unauthorized","message":"Unauthorized"}"#,
        "{label}"
    );
    assert_eq!(response.header_count("www-authenticate"), 1, "{label}");
    assert_eq!(
        response.header("www-authenticate"),
        Some(challenge),
        "{label}"
    );
}

/// Try `token` on a create (service route that would change state) and on an append to
/// `s-own`; both must be refused with `invalid_token` and nothing may change.
fn assert_rejected(server: &TestServer, token: &str, label: &str) {
    let before_sessions = session_ids_of_tenant(server, "acme");
    let before_seq = last_seq(server, "acme", "s-own");
    let create = json!({"id": format!("attack-{}", before_sessions.len()),
                        "creator_principal": {"tenant_id":"acme","id":"u1","type":"user"}});
    let response = call(server, "POST", "/v1/sessions", Some(token), Some(&create));
    assert_unauthorized(&response, INVALID_TOKEN, label);
    let event = json!({"type":"t","payload":{},"producer_id":"attacker","producer_seq":1,"actor":"user:u1"});
    let response = call(
        server,
        "POST",
        "/v1/sessions/s-own/append",
        Some(token),
        Some(&event),
    );
    assert_unauthorized(&response, INVALID_TOKEN, label);
    let issue =
        json!({"principal":{"tenant_id":"acme","id":"x","type":"user"},"scopes":["session:read"]});
    let response = call(server, "POST", "/v1/auth/issue", Some(token), Some(&issue));
    assert_unauthorized(&response, INVALID_TOKEN, label);
    assert_eq!(
        session_ids_of_tenant(server, "acme"),
        before_sessions,
        "{label}"
    );
    assert_eq!(last_seq(server, "acme", "s-own"), before_seq, "{label}");
}

fn all_scopes_claims() -> Value {
    service_claims("acme", "session:create session:read auth:issue")
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let signed = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap();
    mac.update(signed.as_bytes());
    format!("{signed}.{}", b64(mac.finalize().into_bytes()))
}

/// A principal token signed with the server's real key but arbitrary claims.
fn principal_with_claims(claims: &Value) -> String {
    let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(SECRET_KEY_BASE.as_bytes()).unwrap();
    derive.update(b"principal-token-v1");
    let key = derive.finalize().into_bytes();
    let signed = format!("spt1.{}", b64(claims.to_string()));
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(signed.as_bytes());
    format!("{signed}.{}", b64(mac.finalize().into_bytes()))
}

fn principal_claims(principal_type: &str, sub: &str, session_ids: Option<Value>) -> Value {
    let now = unix_now();
    let mut claims = json!({"v":1,"typ":"principal","tenant_id":"acme","sub":sub,
        "principal_type":principal_type,"actor":format!("{principal_type}:{sub}"),
        "scopes":["session:read","session:append"],"iat":now,"exp":now + 10});
    if let Some(ids) = session_ids {
        claims["session_ids"] = ids;
    }
    claims
}

fn replace_payload(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.rsplitn(2, '.').collect();
    let (signature, signed) = (parts[0], parts[1]);
    let (prefix, payload) = signed.rsplit_once('.').unwrap();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    edit(&mut claims);
    format!("{prefix}.{}.{signature}", b64(claims.to_string()))
}

fn attack_server() -> (JwksServer, TestServer) {
    let jwks = JwksServer::start();
    let server = jwt_server(&jwks.url(), |_| {});
    create_session(&server, "acme", "u1", "s-own");
    create_session(&server, "beta", "b1", "s-beta");
    (jwks, server)
}

#[test]
fn forged_and_altered_service_jwts_are_rejected() {
    let (_jwks, server) = attack_server();
    let valid = all_scopes_claims();
    let now = unix_now();
    let public_pem = std::fs::read(fixture("rsa_jwks_one.pub.pem")).unwrap();
    let modulus = jwk("jwks_one", "x")["n"].as_str().unwrap().to_owned();
    let signed_valid = sign("jwks_one", "jwks_one", &valid);
    let tampered_byte = {
        let mut parts: Vec<String> = signed_valid.split('.').map(str::to_owned).collect();
        let mut payload = URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
        let position = payload.iter().position(|byte| *byte == b'a').unwrap();
        payload[position] = b'b';
        parts[1] = b64(payload);
        parts.join(".")
    };
    let foreign_jwk = jwk("foreign_one", "attacker");
    let embedded_key_header = |extra: (&str, Value)| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("attacker".to_owned());
        let mut value = serde_json::to_value(&header).unwrap();
        value[extra.0] = extra.1;
        value
    };
    let sign_with_header = |header: &Value, key: &str| {
        let signed = format!("{}.{}", b64(header.to_string()), b64(valid.to_string()));
        let signature =
            jsonwebtoken::crypto::sign(signed.as_bytes(), &encoding_key(key), Algorithm::RS256)
                .unwrap();
        format!("{signed}.{signature}")
    };
    let attacks: Vec<(&str, String)> = vec![
        (
            "1 alg none",
            format!(
                "{}.{}.",
                b64(json!({"alg":"none","kid":"jwks_one"}).to_string()),
                b64(valid.to_string())
            ),
        ),
        (
            "1 alg none without kid",
            format!(
                "{}.{}.",
                b64(json!({"alg":"none"}).to_string()),
                b64(valid.to_string())
            ),
        ),
        (
            "2 HS256 keyed with the public PEM",
            hs256(
                &json!({"alg":"HS256","kid":"jwks_one"}),
                &valid,
                &public_pem,
            ),
        ),
        (
            "2 HS256 keyed with n",
            hs256(
                &json!({"alg":"HS256","kid":"jwks_one"}),
                &valid,
                modulus.as_bytes(),
            ),
        ),
        (
            "3 foreign key reusing a valid kid",
            sign("foreign_one", "jwks_one", &valid),
        ),
        ("4 one payload byte changed", tampered_byte),
        (
            "4 payload tenant edited",
            replace_payload(&signed_valid, |claims| claims["tenant_id"] = json!("beta")),
        ),
        (
            "5 expired",
            sign(
                "jwks_one",
                "jwks_one",
                &with(valid.clone(), "exp", json!(now - 10)),
            ),
        ),
        (
            "6 not yet valid",
            sign(
                "jwks_one",
                "jwks_one",
                &with(valid.clone(), "nbf", json!(now + 60)),
            ),
        ),
        (
            "6 issued in the future",
            sign(
                "jwks_one",
                "jwks_one",
                &with(valid.clone(), "iat", json!(now + 60)),
            ),
        ),
        (
            "7 wrong aud",
            sign(
                "jwks_one",
                "jwks_one",
                &with(valid.clone(), "aud", json!("other")),
            ),
        ),
        (
            "7 wrong aud array",
            sign(
                "jwks_one",
                "jwks_one",
                &with(valid.clone(), "aud", json!(["other", "x"])),
            ),
        ),
        (
            "7 wrong iss",
            sign(
                "jwks_one",
                "jwks_one",
                &with(valid.clone(), "iss", json!("https://evil.test")),
            ),
        ),
        (
            "7 missing exp",
            sign("jwks_one", "jwks_one", &without(valid.clone(), "exp")),
        ),
        (
            "7 string exp",
            sign(
                "jwks_one",
                "jwks_one",
                &with(valid.clone(), "exp", json!((now + 60).to_string())),
            ),
        ),
        ("8 unknown kid", sign("jwks_one", "no-such-kid", &valid)),
        (
            "8 missing kid",
            sign_with_header(&json!({"alg":"RS256","typ":"JWT"}), "jwks_one"),
        ),
        (
            "9 embedded jwk",
            sign_with_header(
                &embedded_key_header(("jwk", foreign_jwk.clone())),
                "foreign_one",
            ),
        ),
        (
            "9 jku",
            sign_with_header(
                &embedded_key_header(("jku", json!("http://127.0.0.1:1/jwks"))),
                "foreign_one",
            ),
        ),
        (
            "9 x5u",
            sign_with_header(
                &embedded_key_header(("x5u", json!("http://127.0.0.1:1/cert"))),
                "foreign_one",
            ),
        ),
        (
            "crit header",
            sign_with_header(
                &json!({"alg":"RS256","kid":"jwks_one","crit":["exp"]}),
                "jwks_one",
            ),
        ),
        (
            "no tenant",
            sign("jwks_one", "jwks_one", &without(valid.clone(), "tenant_id")),
        ),
        ("10 abc", "abc".to_owned()),
        ("10 a.b", "a.b".to_owned()),
        ("10 non-base64 parts", "%%%.***.!!!".to_owned()),
        (
            "10 non-JSON header",
            format!(
                "{}.{}.{}",
                b64("not json"),
                b64(valid.to_string()),
                b64("sig")
            ),
        ),
        (
            "10 truncated",
            signed_valid[..signed_valid.len() - 10].to_owned(),
        ),
        (
            "10 truncated to two parts",
            signed_valid.rsplit_once('.').unwrap().0.to_owned(),
        ),
        ("too long", "a".repeat(9000)),
    ];
    for (label, token) in &attacks {
        assert_rejected(&server, token, label);
    }
    // The untouched token works, so the rejections above are about the attacks.
    let accepted = call(&server, "GET", "/v1/sessions", Some(&signed_valid), None);
    assert_eq!(accepted.status, 200);
}

#[test]
fn malformed_bearers_get_invalid_request() {
    let (_jwks, server) = attack_server();
    let valid = service_token("acme", "session:read");
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("Bearer a b", vec!["Authorization: Bearer a b".into()]),
        ("Bearer a,b", vec!["Authorization: Bearer a,b".into()]),
        ("Basic xyz", vec!["Authorization: Basic xyz".into()]),
        (
            "Bearer with no token",
            vec!["Authorization: Bearer ".into()],
        ),
        ("Bearer alone", vec!["Authorization: Bearer".into()]),
        (
            "two headers",
            vec![
                format!("Authorization: Bearer {valid}"),
                format!("Authorization: Bearer {valid}"),
            ],
        ),
    ];
    for (label, headers) in cases {
        let response = call_with_headers(&server, "GET", "/v1/sessions", &headers, None);
        assert_unauthorized(&response, INVALID_REQUEST, label);
    }
    let missing = call(&server, "GET", "/v1/sessions", None, None);
    assert_unauthorized(&missing, r#"Bearer realm="starcite""#, "missing");
    let mut tail = upgrade_headers();
    tail.push("Authorization: Basic x".to_owned());
    let target = format!("/v1/sessions/s-own/tail?access_token={valid}");
    let header_wins = call_with_headers(&server, "GET", &target, &tail, None);
    assert_unauthorized(
        &header_wins,
        INVALID_REQUEST,
        "tail header wins over access_token",
    );
    let empty_query = call_with_headers(
        &server,
        "GET",
        "/v1/sessions/s-own/tail?access_token=",
        &upgrade_headers(),
        None,
    );
    assert_unauthorized(&empty_query, INVALID_REQUEST, "empty access_token");
    let no_token = call_with_headers(
        &server,
        "GET",
        "/v1/sessions/s-own/tail",
        &upgrade_headers(),
        None,
    );
    assert_unauthorized(
        &no_token,
        r#"Bearer realm="starcite""#,
        "tail without a token",
    );
}

#[test]
fn forged_and_misused_principal_tokens_are_rejected() {
    let (_jwks, server) = attack_server();
    let now = unix_now();
    let user = |tenant: &str| Principal {
        tenant_id: tenant.to_owned(),
        id: "u1".to_owned(),
        principal_type: PrincipalType::User,
    };
    let claims = |tenant: &str, issued_at: i64, ttl: i64| PrincipalClaims {
        principal: user(tenant),
        scopes: vec!["session:read".into(), "session:append".into()],
        session_ids: None,
        issued_at_unix_seconds: issued_at,
        expires_at_unix_seconds: issued_at + ttl,
    };
    let other_secret = PrincipalTokenKey::derive(&"x".repeat(40), "principal-token-v1");
    let other_salt = PrincipalTokenKey::derive(SECRET_KEY_BASE, "another-salt");
    let real = PrincipalTokenKey::derive(SECRET_KEY_BASE, "principal-token-v1");
    let genuine = user_token(&server, "acme", "u1", &["session:read"], None);
    let attacks: Vec<(&str, String)> = vec![
        (
            "12 another secret",
            other_secret.mint(&claims("acme", now, 10)),
        ),
        ("12 another salt", other_salt.mint(&claims("acme", now, 10))),
        (
            "13 added scope",
            replace_payload(&genuine, |claims| {
                claims["scopes"] = json!(["session:read", "session:append"])
            }),
        ),
        (
            "13 other session id",
            replace_payload(&genuine, |claims| claims["session_ids"] = json!(["s-beta"])),
        ),
        (
            "13 other tenant",
            replace_payload(&genuine, |claims| claims["tenant_id"] = json!("beta")),
        ),
        (
            "14 actor mismatch",
            principal_with_claims(&with(
                principal_claims("user", "u1", None),
                "actor",
                json!("user:u2"),
            )),
        ),
        (
            "14 agent without session",
            principal_with_claims(&principal_claims("agent", "a1", None)),
        ),
        (
            "14 agent with two sessions",
            principal_with_claims(&principal_claims(
                "agent",
                "a1",
                Some(json!(["s-own", "s-beta"])),
            )),
        ),
        (
            "wrong version",
            principal_with_claims(&with(principal_claims("user", "u1", None), "v", json!(2))),
        ),
        ("15 expired", real.mint(&claims("acme", now - 30, 10))),
        (
            "15 beyond max ttl",
            real.mint(&claims("acme", now - 20, 3600)),
        ),
        ("prefix only", "spt1.".to_owned()),
        ("truncated", genuine[..genuine.len() - 5].to_owned()),
    ];
    for (label, token) in &attacks {
        assert_rejected(&server, token, label);
    }
    // The genuine token of the same shape is accepted where its scope allows.
    let genuine_read = call(&server, "GET", "/v1/sessions/s-own", Some(&genuine), None);
    assert_eq!(genuine_read.status, 200);
    // 18: a tenant-A token granted a tenant-B session id still cannot touch it.
    let before = last_seq(&server, "beta", "s-beta");
    let cross = user_token(
        &server,
        "acme",
        "u1",
        &["session:append", "session:read"],
        Some(&["s-beta"]),
    );
    let event = json!({"type":"t","payload":{},"producer_id":"p","producer_seq":1});
    let response = call(
        &server,
        "POST",
        "/v1/sessions/s-beta/append",
        Some(&cross),
        Some(&event),
    );
    assert_eq!(outcome(&response), (403, "forbidden_tenant".to_owned()));
    assert_eq!(response.header_count("www-authenticate"), 0);
    // A user appending to a session it is not scoped to.
    let scoped_elsewhere = user_token(
        &server,
        "beta",
        "b1",
        &["session:append"],
        Some(&["s-other"]),
    );
    let response = call(
        &server,
        "POST",
        "/v1/sessions/s-beta/append",
        Some(&scoped_elsewhere),
        Some(&event),
    );
    assert_eq!(outcome(&response), (403, "forbidden_session".to_owned()));
    // 20: spoofed actor.
    let owner = user_token(&server, "beta", "b1", &["session:append"], None);
    let spoof = json!({"type":"t","payload":{},"producer_id":"p","producer_seq":1,"actor":"user:someone-else"});
    let response = call(
        &server,
        "POST",
        "/v1/sessions/s-beta/append",
        Some(&owner),
        Some(&spoof),
    );
    assert_eq!(outcome(&response), (400, "invalid_event".to_owned()));
    assert_eq!(last_seq(&server, "beta", "s-beta"), before);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Whatever the claims and whichever `kid` (published or not), a signature by a key that
    /// is not in the JWKS never authenticates.
    #[test]
    fn tokens_signed_outside_the_jwks_are_always_rejected(
        key_index in 0_usize..FOREIGN_KEYS.len(),
        kid_index in 0_usize..4,
        tenant in "[a-z]{1,8}",
        scopes in proptest::collection::vec(prop_oneof![
            Just("session:create"), Just("session:read"), Just("auth:issue"), Just("x")], 1..4),
        exp_offset_seconds in -100_i64..100_000,
        with_array_audience in any::<bool>(),
    ) {
        let server = PROPERTY_SERVER.with(|server| server.clone());
        let kids = ["jwks_one", "jwks_two", FOREIGN_KEYS[key_index], "random-kid"];
        let mut claims = service_claims(&tenant, &scopes.join(" "));
        claims["exp"] = json!(unix_now() + exp_offset_seconds);
        if with_array_audience {
            claims["aud"] = json!(["other", AUDIENCE]);
        }
        let token = sign(FOREIGN_KEYS[key_index], kids[kid_index], &claims);
        let response = call(&server.1, "GET", "/v1/sessions", Some(&token), None);
        prop_assert_eq!(response.status, 401);
        prop_assert_eq!(response.header("www-authenticate"), Some(INVALID_TOKEN));
        // The same claims signed by a published key pass, unless they are expired.
        if exp_offset_seconds > 1 {
            let genuine = sign("jwks_two", "jwks_two", &claims);
            let response = call(&server.1, "GET", "/v1/sessions", Some(&genuine), None);
            let allowed = if scopes.contains(&"session:read") { 200 } else { 403 };
            prop_assert_eq!(response.status, allowed);
        }
    }
}

thread_local! {
    static PROPERTY_SERVER: std::rc::Rc<(JwksServer, TestServer)> = std::rc::Rc::new({
        let jwks = JwksServer::start();
        let server = jwt_server(&jwks.url(), |_| {});
        (jwks, server)
    });
}
