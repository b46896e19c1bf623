//! JWKS fetching and caching (auth.md §5) against a real JWKS server: key rotation without a
//! restart, the unknown-`kid` fetch limit, an invalid document failing closed, an outage served
//! from the stale set for a bounded time, and a removed key stopping at the next refresh.

#![allow(clippy::unwrap_used)]

mod auth_support;
mod http_support;

use std::thread;
use std::time::{Duration, Instant};

use auth_support::*;
use serde_json::json;

fn status_with(server: &http_support::TestServer, token: &str) -> u16 {
    call(server, "GET", "/v1/sessions", Some(token), None).status
}

#[test]
fn a_key_added_to_the_jwks_is_accepted_without_restart() {
    let jwks = JwksServer::start();
    let server = jwt_server(&jwks.url(), |_| {});
    assert_eq!(
        status_with(&server, &service_token("acme", "session:read")),
        200
    );
    jwks.publish(&["jwks_one", "jwks_two", ROTATED_KEY]);
    let rotated = sign(
        ROTATED_KEY,
        ROTATED_KEY,
        &service_claims("acme", "session:read"),
    );
    assert_eq!(
        status_with(&server, &rotated),
        200,
        "first use of a rotated-in key"
    );
}

#[test]
fn an_unknown_kid_flood_fetches_at_most_once_per_five_seconds() {
    let jwks = JwksServer::start();
    let server = jwt_server(&jwks.url(), |_| {});
    assert_eq!(
        status_with(&server, &service_token("acme", "session:read")),
        200
    );
    let baseline = jwks.fetches();
    let started = Instant::now();
    // The window opens at the first forced fetch, which happens before the first answer.
    let mut window_opened_by = None;
    let mut flooded = 0;
    while started.elapsed() < Duration::from_millis(3000) {
        let forged = sign(
            "jwks_one",
            &format!("made-up-{flooded}"),
            &service_claims("acme", "session:read"),
        );
        assert_eq!(status_with(&server, &forged), 401);
        window_opened_by.get_or_insert_with(Instant::now);
        flooded += 1;
    }
    assert!(flooded >= 20, "the flood sent {flooded} requests");
    assert!(
        jwks.fetches() <= baseline + 1,
        "{} fetches for {flooded} unknown kids within 3 s",
        jwks.fetches() - baseline
    );
    // Once the window has passed, the next unknown kid may fetch again: exactly once more.
    let window_opened_by = window_opened_by.unwrap();
    thread::sleep(Duration::from_millis(5100).saturating_sub(window_opened_by.elapsed()));
    let before = jwks.fetches();
    let forged = sign(
        "jwks_one",
        "made-up-after",
        &service_claims("acme", "session:read"),
    );
    assert_eq!(status_with(&server, &forged), 401);
    assert_eq!(jwks.fetches(), before + 1);
}

#[test]
fn one_invalid_key_rejects_the_whole_document() {
    let keys = vec![jwk("jwks_one", "jwks_one"), {
        let mut key = jwk("jwks_two", "jwks_two");
        key.as_object_mut().unwrap().remove("use");
        key
    }];
    let jwks = JwksServer::start_with(JwksAnswer::Document(json!({ "keys": keys }).to_string()));
    let server = jwt_server(&jwks.url(), |_| {});
    assert_eq!(
        status_with(&server, &service_token("acme", "session:read")),
        401
    );
}

#[test]
fn an_outage_serves_stale_keys_for_the_allowance_then_fails_closed() {
    let jwks = JwksServer::start();
    let server = jwt_server(&jwks.url(), |auth| {
        auth.jwks_refresh_ms = 500;
        auth.jwks_stale_max_ms = 1500;
    });
    let token = service_token("acme", "session:read");
    assert_eq!(status_with(&server, &token), 200);
    let outage_started = Instant::now();
    jwks.set(JwksAnswer::Status(503));
    // The set is at most 500 ms old at the start of the outage: usable for another 1.5 s at least.
    thread::sleep(Duration::from_millis(800));
    assert_eq!(status_with(&server, &token), 200, "stale keys still serve");
    wait_for("fail closed", Duration::from_secs(10), || {
        status_with(&server, &token) == 401
    });
    assert!(
        outage_started.elapsed() >= Duration::from_millis(1400),
        "failed closed after {:?}",
        outage_started.elapsed()
    );
    jwks.publish(&JWKS_KEYS);
    wait_for("recovery", Duration::from_secs(10), || {
        status_with(&server, &token) == 200
    });
}

#[test]
fn a_removed_key_stops_working_at_the_next_refresh() {
    let jwks = JwksServer::start();
    let server = jwt_server(&jwks.url(), |auth| auth.jwks_refresh_ms = 500);
    let token = service_token("acme", "session:read");
    assert_eq!(status_with(&server, &token), 200);
    jwks.publish(&["jwks_two"]);
    wait_for("key removal", Duration::from_secs(5), || {
        status_with(&server, &token) == 401
    });
    let other = sign(
        "jwks_two",
        "jwks_two",
        &service_claims("acme", "session:read"),
    );
    assert_eq!(status_with(&server, &other), 200);
}
