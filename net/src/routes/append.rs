//! `POST /v1/sessions/:id/append`, single and batch (http-api.md §6, §7).

use serde_json::json;
use starcite_engine::api::{AppendReply, Service, ServiceError};
use starcite_engine::metrics::{self, AppendKind};

use super::Call;
use crate::auth::{
    check_binding_before_lookup, check_principal_access, AuthContext, SCOPE_SESSION_APPEND,
};
use crate::error::{FixedError, FORBIDDEN_SESSION};
use crate::http::Response;
use crate::validate::event::{is_batch, validate_append};

/// `POST /v1/sessions/:id/append`.
pub async fn append<S: Service>(service: &S, call: &Call<'_>, session_id: &str) -> Response {
    let kind = if is_batch(&call.body) {
        AppendKind::Batch
    } else {
        AppendKind::Single
    };
    if let Err(error) = authorize(service, call, session_id).await {
        let outcome = match &error {
            Denied::Policy(_) => "forbidden",
            Denied::Service(error) => service_outcome(error),
        };
        metrics::global().append(kind, outcome, None, 0);
        return match error {
            Denied::Policy(error) => Response::fixed(error),
            Denied::Service(error) => Response::error(error),
        };
    }
    let request = match validate_append(session_id, &call.body, &call.auth) {
        Ok(request) => request,
        Err(error) => {
            metrics::global().append(kind, "invalid", None, 0);
            return Response::fixed(error);
        }
    };
    match service.append(request).await {
        Ok(reply) => {
            let appended = reply
                .results
                .iter()
                .filter(|result| !result.deduped)
                .count() as u64;
            let outcome = if appended == 0 { "deduped" } else { "appended" };
            metrics::global().append(kind, outcome, Some(call.received_at.elapsed()), appended);
            Response::json_value(201, &reply_json(&reply, kind))
        }
        Err(error) => {
            metrics::global().append(kind, service_outcome(&error), None, 0);
            Response::error(error)
        }
    }
}

/// Why an append was refused before validation.
enum Denied {
    Policy(FixedError),
    Service(ServiceError),
}

/// The auth-kind part of the check order: nothing for mode `none`; service tokens never append;
/// principals go through binding, lookup, scope, tenant and binding again.
async fn authorize<S: Service>(
    service: &S,
    call: &Call<'_>,
    session_id: &str,
) -> Result<(), Denied> {
    match &call.auth {
        AuthContext::None => Ok(()),
        AuthContext::Service { .. } => Err(Denied::Policy(FORBIDDEN_SESSION)),
        AuthContext::Principal { .. } => {
            check_binding_before_lookup(&call.auth, session_id).map_err(Denied::Policy)?;
            let session = service
                .get_session(session_id)
                .await
                .map_err(Denied::Service)?;
            check_principal_access(&call.auth, &session, SCOPE_SESSION_APPEND)
                .map_err(Denied::Policy)
        }
    }
}

fn reply_json(reply: &AppendReply, kind: AppendKind) -> serde_json::Value {
    let result_json = |result: &starcite_engine::api::AppendResult| json!({"seq": result.seq, "last_seq": result.last_seq, "deduped": result.deduped});
    match (kind, reply.results.as_slice()) {
        (AppendKind::Single, [only]) => result_json(only),
        _ => {
            let results: Vec<serde_json::Value> = reply.results.iter().map(result_json).collect();
            json!({"results": results, "last_seq": reply.last_seq})
        }
    }
}

/// `outcome` label of `starcite_appends_total` for an engine error.
fn service_outcome(error: &ServiceError) -> &'static str {
    match error {
        ServiceError::SessionNotFound => "session_not_found",
        ServiceError::ExpectedSeqConflict { .. } => "expected_seq_conflict",
        ServiceError::ProducerSeqConflict { .. } => "producer_seq_conflict",
        ServiceError::ProducerReplayConflict => "producer_replay_conflict",
        ServiceError::Backpressure { .. } => "backpressure",
        ServiceError::RaftTimeout => "raft_timeout",
        ServiceError::RaftUnavailable => "raft_unavailable",
        ServiceError::SessionExists
        | ServiceError::ArchiveReadUnavailable
        | ServiceError::EventGapDetected
        | ServiceError::Internal(_) => "internal_error",
    }
}
