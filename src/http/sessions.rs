//! The sessions API under `/api/v1`: start, find, list and end sessions, the placement table
//! and the running configuration. Each handler takes and returns typed JSON, and its
//! `#[utoipa::path]` is its entry in the OpenAPI document.

use super::auth::AdminToken;
use super::client::ClientIp;
use super::error::{valid_name, ApiError, ErrorBody};
use super::json::JsonBody;
use super::types::{Address, NewSession, NodeList, SessionList, Started};
use crate::hub::{Hub, StartRequest};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use std::sync::Arc;
use std::time::Duration;

/// A session name from a request, checked like the hub protocol checks it.
/// The running configuration (secrets masked)
#[utoipa::path(get, path = "/api/v1/config", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "hub.yaml as the hub runs it, with environment overrides", body = Object),
        (status = 401, description = "No admin token presented", body = ErrorBody),
        (status = 403, description = "Wrong admin token, or admin endpoints disabled", body = ErrorBody),
    ))]
pub async fn get_config(State(hub): State<Arc<Hub>>, _admin: AdminToken) -> Json<serde_json::Value> {
    Json(hub.config().to_json())
}

/// Where sessions can run: each node's host, usability and load, and the warm pool
#[utoipa::path(get, path = "/api/v1/nodes", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "The placement table", body = NodeList),
        (status = 401, description = "No admin token presented", body = ErrorBody),
        (status = 403, description = "Wrong admin token, or admin endpoints disabled", body = ErrorBody),
    ))]
pub async fn list_nodes(State(hub): State<Arc<Hub>>, _admin: AdminToken) -> Json<NodeList> {
    Json(NodeList { nodes: hub.nodes().into_iter().map(Into::into).collect(), pool: hub.pool_info() })
}

/// All sessions (admin unless public_listing)
#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions", security(("bearer" = []), ()),
    responses(
        (status = 200, description = "Every session, by name", body = SessionList),
        (status = 401, description = "No admin token presented (and public_listing is off)", body = ErrorBody),
        (status = 403, description = "Wrong admin token, or admin endpoints disabled", body = ErrorBody),
    ))]
pub async fn list_sessions(
    State(hub): State<Arc<Hub>>,
    admin: Result<AdminToken, ApiError>,
) -> Result<Json<SessionList>, ApiError> {
    if !hub.config().public_listing {
        admin?;
    }
    Ok(Json(SessionList { sessions: hub.list().into_iter().map(Into::into).collect() }))
}

/// Start a session owned by the API; it lives until DELETE or its ttl
///
/// Answers once the session's server accepts connections.
#[utoipa::path(post, path = "/api/v1/sessions", tag = "sessions", security(("bearer" = [])),
    request_body = NewSession,
    responses(
        (status = 201, description = "Started: where performers join it", body = Started),
        (status = 400, description = "Not valid JSON, a bad name, no password, or a ttl out of range", body = ErrorBody),
        (status = 401, description = "No admin token presented", body = ErrorBody),
        (status = 403, description = "Wrong admin token, or admin endpoints disabled", body = ErrorBody),
        (status = 409, description = "A session of that name is running", body = ErrorBody),
        (status = 503, description = "No room (cap, ports, nodes), or the engine cannot run it now", body = ErrorBody),
    ))]
pub async fn create_session(
    State(hub): State<Arc<Hub>>,
    _admin: AdminToken,
    JsonBody(new): JsonBody<NewSession>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    valid_name(&new.name)?;
    let config = hub.config();
    let ttl = ttl_within(new.ttl.map(Duration::from), config.api_session_ttl, config.api_session_max_ttl)?;
    let req = StartRequest { name: new.name, password: new.password, daemon: true, peer: None, ttl: Some(ttl) };
    // (The hub runs the start on its own task: a client that hangs up does not cancel it.)
    let owned = hub.start_session(req).await?;
    let started = Started { name: owned.name, host: owned.host, port: owned.port, ttl_seconds: ttl.as_secs() };
    Ok((StatusCode::CREATED, Json(started)))
}

/// The ttl asked for (else the default), if it is within 1 s and `api_session_max_ttl`.
fn ttl_within(asked: Option<Duration>, default: Duration, max: Duration) -> Result<Duration, ApiError> {
    let ttl = asked.unwrap_or(default);
    if ttl.is_zero() || ttl > max {
        return Err(ApiError::bad_request(format!(
            "ttl must be between 1s and {} (api_session_max_ttl)",
            humantime::format_duration(max)
        )));
    }
    Ok(ttl)
}

/// A session's public address (like the hub protocol's query)
#[utoipa::path(get, path = "/api/v1/sessions/{name}", tag = "sessions", security((), ("bearer" = [])),
    params(("name" = String, Path, description = "The session's name", pattern = r"^[A-Za-z0-9._-]{1,64}$"),
        ("X-Session-Password" = Option<String>, Header, description = "Its password, for its whole record (utf-8''<percent-encoded> when not ASCII)")),
    responses(
        (status = 200, description = "Where performers join it (with the admin token or its password, its whole record too)", body = Address),
        (status = 403, description = "Wrong password in X-Session-Password", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address", body = ErrorBody),
        (status = 400, description = "Not a valid session name", body = ErrorBody),
        (status = 404, description = "No session of that name is running", body = ErrorBody),
    ))]
pub async fn get_session(
    State(hub): State<Arc<Hub>>,
    Path(name): Path<String>,
    admin: Option<AdminToken>,
    ClientIp(ip): ClientIp,
    headers: axum::http::HeaderMap,
) -> Result<Json<Address>, ApiError> {
    valid_name(&name)?;
    let found = hub.query(&name);
    hub.metrics.request("http_query", if found.is_some() { "ok" } else { "error" });
    let audience = hub.audience_access(&name).unwrap_or(crate::audience::Access::Off);
    // The whole record for the admin, and for its owner (the password in the header).
    let owner = match super::owner::header_password(&headers)? {
        Some(_) if admin.is_none() && found.is_some() => {
            super::owner::owner(&hub, &name, ip, false, &headers, None).await?;
            true
        }
        _ => false,
    };
    let mut session: Option<super::types::Session> =
        (admin.is_some() || owner).then(|| hub.session(&name)).flatten().map(Into::into);
    if let Some(s) = session.as_mut().filter(|_| admin.is_none()) {
        // The owner's view of it: where the hub runs it is the operator's business.
        s.node = String::new();
        s.container = None;
    }
    match found {
        Some((host, port)) => {
            let locked = hub.session_locked(&name);
            Ok(Json(Address { name, host, port, audience, locked, session }))
        }
        None => Err(ApiError::not_found(format!("No session named '{name}'"))),
    }
}

/// End a session; its owner is told
#[utoipa::path(delete, path = "/api/v1/sessions/{name}", tag = "sessions", security(("bearer" = [])),
    params(("name" = String, Path, description = "The session's name", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 204, description = "Ended"),
        (status = 400, description = "Not a valid session name", body = ErrorBody),
        (status = 401, description = "No admin token presented", body = ErrorBody),
        (status = 403, description = "Wrong admin token, or admin endpoints disabled", body = ErrorBody),
        (status = 404, description = "No session of that name", body = ErrorBody),
    ))]
pub async fn delete_session(
    State(hub): State<Arc<Hub>>,
    _admin: AdminToken,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    valid_name(&name)?;
    if hub.kill(&name).await {
        hub.metrics.request("http_delete", "ok");
        Ok(StatusCode::NO_CONTENT)
    } else {
        hub.metrics.request("http_delete", "error");
        Err(ApiError::not_found(format!("No session named '{name}'")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_default_and_stay_within_the_maximum() {
        let (default, max) = (Duration::from_secs(1800), Duration::from_secs(7200));
        assert_eq!(ttl_within(None, default, max).ok(), Some(default));
        assert_eq!(ttl_within(Some(max), default, max).ok(), Some(max));
        let too_long = ttl_within(Some(max + Duration::from_secs(1)), default, max).err();
        assert_eq!(
            too_long.map(|e| e.message().to_string()).as_deref(),
            Some("ttl must be between 1s and 2h (api_session_max_ttl)")
        );
        assert!(ttl_within(Some(Duration::ZERO), default, max).is_err());
    }

    #[test]
    fn names_are_checked_like_the_protocol_checks_them() {
        assert!(valid_name("ok.name_1-2").is_ok());
        let bad = valid_name("bad name").err();
        assert_eq!(bad.map(|e| e.status()), Some(StatusCode::BAD_REQUEST));
    }
}
