//! The policy of auth.md §7: the binding step before a session is loaded and the session rule
//! after it. Route-specific orders (create, list, issue) live with their handlers; these two
//! checks are shared by read, append, events and tail.

use starcite_engine::api::{PrincipalType, SessionRecord};

use super::AuthContext;
use crate::error::{FixedError, FORBIDDEN_SCOPE, FORBIDDEN_SESSION, FORBIDDEN_TENANT};

/// Binding step before the session lookup (http-api.md §8 step 4): service tokens never reach
/// a session's events, principals only the sessions they are bound to. A user token without
/// `session_ids` is decided after the lookup.
pub fn check_binding_before_lookup(auth: &AuthContext, session_id: &str) -> Result<(), FixedError> {
    match auth {
        AuthContext::None => Ok(()),
        AuthContext::Service { .. } => Err(FORBIDDEN_SESSION),
        AuthContext::Principal { session_ids, .. } => match session_ids {
            Some(ids) if !ids.iter().any(|id| id == session_id) => Err(FORBIDDEN_SESSION),
            _ => Ok(()),
        },
    }
}

/// The session rule after the lookup (auth.md §7, http-api.md §8 step 6): scope, then tenant,
/// then ownership binding. A session without a creator belongs to no principal, so every
/// principal gets `forbidden_session` for it once the scope is there. Other kinds pass.
pub fn check_principal_access(
    auth: &AuthContext,
    session: &SessionRecord,
    scope: &str,
) -> Result<(), FixedError> {
    let AuthContext::Principal {
        principal,
        session_ids,
        ..
    } = auth
    else {
        return Ok(());
    };
    if !auth.has_scope(scope) {
        return Err(FORBIDDEN_SCOPE);
    }
    let Some(creator) = session.creator_principal.as_ref() else {
        return Err(FORBIDDEN_SESSION);
    };
    if creator.tenant_id != principal.tenant_id {
        return Err(FORBIDDEN_TENANT);
    }
    let bound = match (principal.principal_type, session_ids) {
        (_, Some(ids)) => ids.contains(&session.id),
        // Agent tokens always carry exactly one session id; one without is never bound.
        (PrincipalType::Agent, None) => false,
        (PrincipalType::User, None) => creator.id == principal.id,
    };
    if bound {
        Ok(())
    } else {
        Err(FORBIDDEN_SESSION)
    }
}
