//! `GET /v1/sessions/:id/events` (http-api.md §9) and the checks of `GET /v1/sessions/:id/tail`
//! before the WebSocket upgrade (§8).

use base64::Engine as _;
use starcite_engine::api::{Service, SessionRecord};

use super::Call;
use crate::auth::{check_binding_before_lookup, check_principal_access, SCOPE_SESSION_READ};
use crate::error::{ApiError, INVALID_WEBSOCKET_UPGRADE};
use crate::http::{Reply, RequestHead, Response};
use crate::tail::TailParams;

use super::TailUpgrade;
use crate::validate::{parse_limit, parse_seq_cursor};

/// Length of a decoded `Sec-WebSocket-Key` (RFC 6455 §4.1).
pub const WEBSOCKET_KEY_BYTES: usize = 16;

/// `GET /v1/sessions/:id/events`: `cursor` → `limit` → binding → lookup → read policy → read.
pub async fn read<S: Service>(service: &S, call: &Call<'_>, session_id: &str) -> Response {
    let checked = async {
        let cursor = parse_seq_cursor(call.query.get("cursor"))?;
        let limit = parse_limit(call.query.get("limit"))?;
        authorize_read(service, call, session_id).await?;
        let batch = service.read_events(session_id, cursor, limit).await?;
        Ok::<_, ApiError>(batch)
    };
    let batch = match checked.await {
        Ok(batch) => batch,
        Err(error) => return Response::error(error),
    };
    let last_returned =
        (!batch.events.is_empty()).then(|| batch.first_seq + batch.events.len() as u64 - 1);
    let next_cursor = match last_returned {
        Some(seq) if batch.last_seq > seq => seq.to_string(),
        _ => "null".to_owned(),
    };
    // Event frames are already compact JSON; splice them instead of re-parsing.
    let frames_bytes: usize = batch.events.iter().map(|frame| frame.len() + 1).sum();
    let mut body = Vec::with_capacity(frames_bytes + 40);
    body.extend_from_slice(b"{\"events\":[");
    for (index, frame) in batch.events.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(frame);
    }
    body.extend_from_slice(b"],\"next_cursor\":");
    body.extend_from_slice(next_cursor.as_bytes());
    body.push(b'}');
    Response::json(200, body)
}

/// Tail steps 4–6 shared by the range read: binding, lookup, read policy.
async fn authorize_read<S: Service>(
    service: &S,
    call: &Call<'_>,
    session_id: &str,
) -> Result<SessionRecord, ApiError> {
    check_binding_before_lookup(&call.auth, session_id)?;
    let session = service.get_session(session_id).await?;
    check_principal_access(&call.auth, &session, SCOPE_SESSION_READ)?;
    Ok(session)
}

/// `GET /v1/sessions/:id/tail` up to the `101`: transport → cursor → binding → lookup → read
/// policy → handshake headers. Server-sent events are not served yet, so a request without a
/// WebSocket upgrade gets `invalid_websocket_upgrade` whatever its `Accept`.
pub async fn tail_upgrade<S: Service>(
    service: &S,
    call: &Call<'_>,
    session_id: &str,
    buffer_events: usize,
) -> Reply<TailUpgrade> {
    let checked = async {
        if !call.head.has_token("upgrade", "websocket") || call.head.method != "GET" {
            return Err(ApiError::from(INVALID_WEBSOCKET_UPGRADE));
        }
        let cursor = parse_seq_cursor(call.query.get("cursor"))?;
        authorize_read(service, call, session_id).await?;
        let accept_key = websocket_accept_key(call.head).ok_or(INVALID_WEBSOCKET_UPGRADE)?;
        Ok((cursor, accept_key))
    };
    match checked.await {
        Ok((cursor, accept_key)) => {
            let response = Response {
                status: 101,
                headers: vec![
                    ("upgrade", "websocket".to_owned()),
                    ("connection", "Upgrade".to_owned()),
                    ("sec-websocket-accept", accept_key),
                ],
                body: Vec::new(),
                route: "/v1/sessions/:id/tail",
            };
            let params = TailParams {
                session_id: session_id.to_owned(),
                cursor,
                buffer_events,
            };
            let upgrade = TailUpgrade {
                params,
                credential: call.credential.clone(),
            };
            Reply::Upgrade(response, upgrade)
        }
        Err(error) => Reply::Respond(Response::error(error)),
    }
}

/// Validate `Sec-WebSocket-Version: 13` and `Sec-WebSocket-Key` (base64 of 16 bytes) and derive
/// `Sec-WebSocket-Accept`.
pub fn websocket_accept_key(head: &RequestHead) -> Option<String> {
    let mut versions = head.header_values("sec-websocket-version");
    let version = versions.next()?;
    if version.trim_ascii() != b"13" || versions.next().is_some() {
        return None;
    }
    let mut keys = head.header_values("sec-websocket-key");
    let key = keys.next()?.trim_ascii();
    if keys.next().is_some() {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(key).ok()?;
    (decoded.len() == WEBSOCKET_KEY_BYTES).then(|| tungstenite::handshake::derive_accept_key(key))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            version_minor: 1,
            headers: headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        let valid = head(&[
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ]);
        assert_eq!(
            websocket_accept_key(&valid).as_deref(),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        for invalid in [
            head(&[("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")]),
            head(&[
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-version", "8"),
            ]),
            head(&[("sec-websocket-version", "13")]),
            head(&[
                ("sec-websocket-key", "c2hvcnQ="),
                ("sec-websocket-version", "13"),
            ]),
            head(&[
                ("sec-websocket-key", "!!!"),
                ("sec-websocket-version", "13"),
            ]),
        ] {
            assert_eq!(websocket_accept_key(&invalid), None);
        }
    }
}
