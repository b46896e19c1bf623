//! Black-box test harness: real `starcite` processes on loopback ports, a minimal blocking HTTP/1.1
//! client and a WebSocket tail client. Integration tests in `tests/tests/` use only this module and
//! the public surface of the binary (HTTP, WebSocket, files, exit codes).

#![allow(clippy::unwrap_used)]

pub mod appenders;
pub mod balancer;
pub mod cluster;
pub mod http;
pub mod ops;
pub mod scenarios;
pub mod server;
pub mod tail;

pub use http::{HttpClient, Response};
pub use ops::{run_ops, OpsRun};
pub use server::{starcite_binary, Server, ServerOptions};
pub use tail::TailClient;

use std::time::{Duration, Instant};

/// Poll `condition` every 20 ms until it returns `Some`, or panic with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `creator_principal` used by most tests.
pub fn creator() -> serde_json::Value {
    serde_json::json!({"tenant_id": "acme", "id": "u1", "type": "user"})
}

/// A valid single-append body.
pub fn event_body(producer_id: &str, producer_seq: u64) -> serde_json::Value {
    serde_json::json!({
        "type": "t",
        "payload": {"n": producer_seq},
        "actor": "a",
        "producer_id": producer_id,
        "producer_seq": producer_seq,
    })
}
