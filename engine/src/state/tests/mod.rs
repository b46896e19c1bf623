//! Apply-level tests of [`GroupState`]: every row of the decision procedure (semantics.md §4),
//! the worked example of http-api.md §13, the producer LRU, batch atomicity, timestamps, archive
//! acknowledgement with `U` accounting, listing, snapshots and determinism.

mod append;
mod reads;
mod replication;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::*;
use crate::api::{AppendResult, CreateSession, NewEvent, Principal, PrincipalType, ServiceError};

/// Bytes of the snapshot header (magic, version, group id, applied index) that precede the
/// sessions; comparing what follows compares the sessions alone.
pub(super) const SNAPSHOT_HEADER_BYTES: usize = 4 + 1 + 4 + 8;

pub(super) fn object(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).expect("test object parses")
}

pub(super) fn event(producer_id: &str, producer_seq: u64) -> NewEvent {
    NewEvent {
        event_type: "t".to_owned(),
        payload: Map::new(),
        actor: "a".to_owned(),
        source: None,
        metadata: Map::new(),
        refs: Map::new(),
        idempotency_key: None,
        producer_id: producer_id.to_owned(),
        producer_seq,
    }
}

pub(super) fn user(tenant_id: &str, id: &str) -> Principal {
    Principal {
        tenant_id: tenant_id.to_owned(),
        id: id.to_owned(),
        principal_type: PrincipalType::User,
    }
}

pub(super) fn create(id: &str, stamp_us: i64) -> Command {
    Command::CreateSession {
        session: CreateSession {
            id: id.to_owned(),
            title: None,
            creator_principal: Some(user("acme", "u1")),
            metadata: object(r#"{"tenant_id":"acme"}"#),
        },
        stamp_us,
    }
}

pub(super) fn append(
    session_id: &str,
    events: Vec<NewEvent>,
    expected_seq: Option<u64>,
    stamp_us: i64,
) -> Command {
    Command::AppendEvents {
        session_id: session_id.to_owned(),
        events,
        expected_seq,
        stamp_us,
    }
}

/// A group with its own `U` counter that numbers log entries itself.
pub(super) struct Harness {
    pub(super) group: GroupState,
    pub(super) counter: Arc<AtomicU64>,
}

impl Harness {
    pub(super) fn new() -> Harness {
        let counter = Arc::new(AtomicU64::new(0));
        Harness {
            group: GroupState::new(7, counter.clone()),
            counter,
        }
    }

    pub(super) fn apply(&mut self, command: Command) -> ApplyOutcome {
        let index = self.group.applied_index() + 1;
        // Every command crosses the log as bytes, as it does in the cluster.
        let decoded = Command::decode(&command.encode()).expect("command round-trips");
        self.group.apply(index, &decoded)
    }

    pub(super) fn append_one(
        &mut self,
        session_id: &str,
        event: NewEvent,
        expected_seq: Option<u64>,
    ) -> Result<AppendResult, ServiceError> {
        match self.apply(append(session_id, vec![event], expected_seq, 1_000)) {
            ApplyOutcome::Appended { reply, .. } => {
                assert_eq!(reply.results.len(), 1);
                Ok(reply.results[0])
            }
            ApplyOutcome::Rejected(error) => Err(error),
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    pub(super) fn sessions_bytes(&self) -> Vec<u8> {
        self.group.encode_snapshot()[SNAPSHOT_HEADER_BYTES..].to_vec()
    }
}

pub(super) fn appended(seq: u64, last_seq: u64) -> Result<AppendResult, ServiceError> {
    Ok(AppendResult {
        seq,
        last_seq,
        deduped: false,
    })
}

pub(super) fn deduped(seq: u64, last_seq: u64) -> Result<AppendResult, ServiceError> {
    Ok(AppendResult {
        seq,
        last_seq,
        deduped: true,
    })
}

pub(super) fn seq_conflict(
    producer_id: &str,
    expected: u64,
    got: u64,
) -> Result<AppendResult, ServiceError> {
    Err(ServiceError::ProducerSeqConflict {
        producer_id: producer_id.to_owned(),
        expected,
        got,
    })
}
