//! The readiness composition of ops.md §2, as a pure function of its inputs, and the `detail`
//! object of the consensus rows.
//!
//! [`crate::ops::NodeState::readiness`] gathers the inputs (engine storage state, drain marks,
//! the cached consensus probe, the observer view) and calls [`compose`]; both listeners'
//! `/health/ready` go through it.

use serde_json::{json, Map, Value};
use starcite_engine::api::{NodeMode, NotReady};

use super::control::ProbeReport;

/// A consensus probe older than this no longer counts, and `/health/ready` re-runs it.
pub const CONSENSUS_PROBE_FRESH_MS: u64 = 3000;

/// `reason` of a drained node.
pub const REASON_DRAINING: &str = "draining";
/// `reason` of a write node whose Raft readiness is false.
pub const REASON_RAFT_SYNC: &str = "raft_sync";
/// `reason` of a router node whose router readiness is false.
pub const REASON_ROUTER_SYNC: &str = "router_sync";
/// `reason` of a write node missing from the observer's `ready_nodes`.
pub const REASON_OBSERVER_SYNC: &str = "observer_sync";
/// `reason` the engine reports after a storage failure.
pub const REASON_STORAGE_FAILED: &str = "storage_failed";
/// `probe_result` while startup sync has not finished.
pub const PROBE_STARTUP_SYNC: &str = "startup_sync";
/// `probe_result` of a probe that passed (seen only when it has gone stale).
pub const PROBE_OK: &str = "ok";

/// The last consensus probe as readiness sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSnapshot {
    /// Milliseconds since the probe ran (or the demotion happened).
    pub age_ms: u64,
    /// What it found.
    pub report: ProbeReport,
}

/// Inputs of the consensus row (Raft readiness of a write node, router readiness of a router).
#[derive(Clone, Debug, PartialEq)]
pub struct ConsensusState {
    /// Startup sync finished.
    pub startup_complete: bool,
    /// The last probe; `None` before the first one.
    pub probe: Option<ProbeSnapshot>,
}

impl ConsensusState {
    /// The last probe is at most [`CONSENSUS_PROBE_FRESH_MS`] old.
    pub fn is_fresh(&self) -> bool {
        self.probe
            .as_ref()
            .is_some_and(|probe| probe.age_ms <= CONSENSUS_PROBE_FRESH_MS)
    }

    /// Startup complete ∧ last probe succeeded ∧ it is fresh.
    pub fn is_ready(&self) -> bool {
        self.startup_complete
            && self.is_fresh()
            && self
                .probe
                .as_ref()
                .is_some_and(|probe| probe.report.failure.is_none())
    }

    /// The `detail` object of `raft_sync` / `router_sync`.
    pub fn detail(&self, mode: NodeMode) -> Value {
        let startup_mode = match (self.startup_complete, mode) {
            (false, _) => Value::Null,
            (true, NodeMode::WriteNode) => "write".into(),
            (true, NodeMode::RouterNode) => "router".into(),
        };
        let failure = self
            .probe
            .as_ref()
            .and_then(|probe| probe.report.failure.as_ref());
        let probe_result = if !self.startup_complete {
            PROBE_STARTUP_SYNC
        } else {
            failure.map_or(PROBE_OK, |failure| failure.probe_result)
        };
        let mut detail = match json!({
            "startup_mode": startup_mode,
            "consensus_ready?": self.is_ready(),
            "consensus_probe_fresh?": self.is_fresh(),
            "consensus_probe_age_ms": self.probe.as_ref().map(|probe| probe.age_ms),
            "checked_groups": self.probe.as_ref().map_or(0, |probe| probe.report.checked_groups),
            "failing_group_id": failure.and_then(|failure| failure.group_id),
            "probe_result": probe_result,
        }) {
            Value::Object(detail) => detail,
            _ => Map::new(),
        };
        if self.startup_complete {
            if let Some(failure) = failure {
                for (key, value) in &failure.extra {
                    detail.insert(key.clone(), value.clone());
                }
            }
        }
        Value::Object(detail)
    }
}

/// Everything the composition looks at.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadinessInputs {
    /// Write node or router node.
    pub mode: NodeMode,
    /// The engine's own verdict (storage).
    pub storage: Result<(), NotReady>,
    /// Marked draining (operator or shutdown).
    pub draining: bool,
    /// Raft readiness (write node) or router readiness (router node).
    pub consensus: ConsensusState,
    /// This node is in the observer's `ready_nodes`.
    pub in_ready_nodes: bool,
}

/// ops.md §2, first match wins.
pub fn compose(inputs: &ReadinessInputs) -> Result<(), NotReady> {
    let engine_not_ready = inputs.storage.as_ref().err();
    if let Some(not_ready) = engine_not_ready {
        if not_ready.reason == REASON_STORAGE_FAILED {
            return Err(not_ready.clone());
        }
    }
    if inputs.draining {
        return Err(NotReady {
            reason: REASON_DRAINING,
            detail: None,
        });
    }
    // An engine that reports another reason of its own (a replicated engine's Raft readiness)
    // is taken as it is, in the row of that reason.
    if let Some(not_ready) = engine_not_ready {
        return Err(not_ready.clone());
    }
    if !inputs.consensus.is_ready() {
        let reason = match inputs.mode {
            NodeMode::WriteNode => REASON_RAFT_SYNC,
            NodeMode::RouterNode => REASON_ROUTER_SYNC,
        };
        return Err(NotReady {
            reason,
            detail: Some(inputs.consensus.detail(inputs.mode)),
        });
    }
    if inputs.mode == NodeMode::WriteNode && !inputs.in_ready_nodes {
        return Err(NotReady {
            reason: REASON_OBSERVER_SYNC,
            detail: None,
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ops::control::ProbeFailure;

    fn passed(age_ms: u64) -> ConsensusState {
        ConsensusState {
            startup_complete: true,
            probe: Some(ProbeSnapshot {
                age_ms,
                report: ProbeReport {
                    checked_groups: 4,
                    failure: None,
                },
            }),
        }
    }

    fn ready_inputs() -> ReadinessInputs {
        ReadinessInputs {
            mode: NodeMode::WriteNode,
            storage: Ok(()),
            draining: false,
            consensus: passed(1),
            in_ready_nodes: true,
        }
    }

    fn storage_failed() -> NotReady {
        NotReady {
            reason: REASON_STORAGE_FAILED,
            detail: Some(json!({"path": "/d/shard-0", "error": "Input/output error (os error 5)"})),
        }
    }

    #[test]
    fn ready_when_every_row_passes() {
        assert_eq!(compose(&ready_inputs()), Ok(()));
    }

    #[test]
    fn first_matching_row_wins() {
        let everything_wrong = ReadinessInputs {
            storage: Err(storage_failed()),
            draining: true,
            consensus: ConsensusState {
                startup_complete: false,
                probe: None,
            },
            in_ready_nodes: false,
            ..ready_inputs()
        };
        assert_eq!(compose(&everything_wrong), Err(storage_failed()));

        let drained = ReadinessInputs {
            storage: Ok(()),
            ..everything_wrong.clone()
        };
        let not_ready = compose(&drained).unwrap_err();
        assert_eq!(not_ready.reason, REASON_DRAINING);
        assert_eq!(not_ready.detail, None, "draining has no detail");

        let syncing = ReadinessInputs {
            draining: false,
            ..drained
        };
        let not_ready = compose(&syncing).unwrap_err();
        assert_eq!(not_ready.reason, REASON_RAFT_SYNC);
        assert_eq!(
            not_ready.detail,
            Some(json!({
                "startup_mode": null,
                "consensus_ready?": false,
                "consensus_probe_fresh?": false,
                "consensus_probe_age_ms": null,
                "checked_groups": 0,
                "failing_group_id": null,
                "probe_result": "startup_sync",
            }))
        );

        let unobserved = ReadinessInputs {
            in_ready_nodes: false,
            ..ready_inputs()
        };
        let not_ready = compose(&unobserved).unwrap_err();
        assert_eq!(not_ready.reason, REASON_OBSERVER_SYNC);
        assert_eq!(not_ready.detail, None);
    }

    #[test]
    fn a_failed_probe_reports_its_group_and_extra_keys() {
        let mut extra = Map::new();
        extra.insert("outcome".into(), "leader_retry_timeout".into());
        let inputs = ReadinessInputs {
            consensus: ConsensusState {
                startup_complete: true,
                probe: Some(ProbeSnapshot {
                    age_ms: 3,
                    report: ProbeReport {
                        checked_groups: 0,
                        failure: Some(ProbeFailure {
                            group_id: None,
                            probe_result: "write_timeout",
                            extra,
                        }),
                    },
                }),
            },
            ..ready_inputs()
        };
        let not_ready = compose(&inputs).unwrap_err();
        assert_eq!(not_ready.reason, REASON_RAFT_SYNC);
        assert_eq!(
            not_ready.detail,
            Some(json!({
                "startup_mode": "write",
                "consensus_ready?": false,
                "consensus_probe_fresh?": true,
                "consensus_probe_age_ms": 3,
                "checked_groups": 0,
                "failing_group_id": null,
                "probe_result": "write_timeout",
                "outcome": "leader_retry_timeout",
            }))
        );
    }

    #[test]
    fn a_stale_probe_is_not_ready() {
        let stale = ReadinessInputs {
            consensus: passed(CONSENSUS_PROBE_FRESH_MS + 1),
            ..ready_inputs()
        };
        let not_ready = compose(&stale).unwrap_err();
        assert_eq!(not_ready.reason, REASON_RAFT_SYNC);
        let detail = not_ready.detail.unwrap();
        assert_eq!(detail["consensus_probe_fresh?"], json!(false));
        assert_eq!(detail["checked_groups"], json!(4));
        assert!(compose(&ReadinessInputs {
            consensus: passed(CONSENSUS_PROBE_FRESH_MS),
            ..ready_inputs()
        })
        .is_ok());
    }

    #[test]
    fn routers_use_router_sync_and_skip_the_observer_row() {
        let router = ReadinessInputs {
            mode: NodeMode::RouterNode,
            in_ready_nodes: false,
            ..ready_inputs()
        };
        assert_eq!(compose(&router), Ok(()));
        let syncing = ReadinessInputs {
            consensus: ConsensusState {
                startup_complete: true,
                probe: None,
            },
            ..router
        };
        let not_ready = compose(&syncing).unwrap_err();
        assert_eq!(not_ready.reason, REASON_ROUTER_SYNC);
        assert_eq!(not_ready.detail.unwrap()["startup_mode"], json!("router"));
    }

    #[test]
    fn other_engine_reasons_come_after_draining() {
        let engine_syncing = NotReady {
            reason: REASON_RAFT_SYNC,
            detail: Some(json!({"probe_result": "leader_unknown"})),
        };
        let inputs = ReadinessInputs {
            storage: Err(engine_syncing.clone()),
            draining: true,
            ..ready_inputs()
        };
        assert_eq!(compose(&inputs).unwrap_err().reason, REASON_DRAINING);
        let inputs = ReadinessInputs {
            draining: false,
            ..inputs
        };
        assert_eq!(compose(&inputs), Err(engine_syncing));
    }
}
