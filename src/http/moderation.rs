//! The owner's moderation over HTTP: `DELETE /api/v1/sessions/{name}/performers/{performer}`
//! removes a performer (they read the hub's sentence with the owner's reason) and
//! `POST /api/v1/sessions/{name}/lock` locks the session to new performers or unlocks it.
//! The session's password (`X-Session-Password` or the body's `"password"`) or the admin token;
//! the session's server carries it out (see `hub/moderate.rs`).

use super::auth::AdminToken;
use super::client::ClientIp;
use super::error::{valid_name, ApiError, ErrorBody};
use super::json::JsonBody;
use super::owner::owner;
use crate::hub::{Hub, ModerationError};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// The longest performer name the hub looks for (Troop names are short).
const MAX_PERFORMER: usize = 128;

/// Why the performer is removed (optional; the whole body may be left out).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct Removal {
    /// Shown to the removed performer after the hub's sentence (one line, 200 characters).
    pub reason: Option<String>,
    /// The session's password, when not sent in `X-Session-Password`.
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
}

/// Who was removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Removed {
    pub name: String,
    pub performer: String,
    /// Their Troop client ids (one per connection by that name).
    pub clients: Vec<i64>,
}

/// Locks or unlocks a session to new performers.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LockSwitch {
    pub locked: bool,
    /// The session's password, when not sent in `X-Session-Password`.
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
}

/// Whether the session is locked now.
#[derive(Debug, Serialize, ToSchema)]
pub struct LockState {
    pub name: String,
    pub locked: bool,
}

impl From<ModerationError> for ApiError {
    fn from(e: ModerationError) -> ApiError {
        let status = match e {
            ModerationError::NoSession(_) | ModerationError::NoPerformer { .. } => StatusCode::NOT_FOUND,
            ModerationError::NoControl(_) => StatusCode::CONFLICT,
            ModerationError::Unanswered { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The optional JSON body of a removal.
fn removal(headers: &HeaderMap, body: &Bytes) -> Result<Removal, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Removal::default());
    }
    let json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"));
    if !json {
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "The body must be JSON: {\"reason\": \"...\"}"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("Not a removal: {e}")))
}

/// Remove a performer from a session (the session's password or the admin token)
///
/// Every connection playing under that name gets Troop's MSG_KILL with the hub's sentence
/// and the owner's `reason` (Troop 0.10.3 shows it and stops), and leaves; the others keep
/// playing. To keep them out, lock the session (`POST .../lock`): a lock admits only the
/// performers playing when it was set, less those removed.
#[utoipa::path(delete, path = "/api/v1/sessions/{name}/performers/{performer}", tag = "moderation",
    security(("bearer" = []), ()),
    params(
        ("name" = String, Path, description = "The session's name", pattern = r"^[A-Za-z0-9._-]{1,64}$"),
        ("performer" = String, Path, description = "The performer's name, as the session lists it"),
        ("X-Session-Password" = Option<String>, Header, description = "The session's password (utf-8''<percent-encoded> when not ASCII)"),
    ),
    request_body(content = Option<Removal>, description = "Optional: the reason they are shown"),
    responses(
        (status = 200, description = "Removed", body = Removed),
        (status = 400, description = "Not a valid name or body, or neither password nor admin token", body = ErrorBody),
        (status = 403, description = "Wrong password", body = ErrorBody),
        (status = 404, description = "No such session, or nobody of that name playing in it", body = ErrorBody),
        (status = 409, description = "The session's image has no control channel", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address", body = ErrorBody),
        (status = 503, description = "The session's server did not answer", body = ErrorBody),
    ))]
pub async fn remove_performer(
    State(hub): State<Arc<Hub>>,
    Path((name, performer)): Path<(String, String)>,
    ClientIp(ip): ClientIp,
    admin: Option<AdminToken>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Removed>, ApiError> {
    valid_name(&name)?;
    if performer.is_empty() || performer.chars().count() > MAX_PERFORMER {
        return Err(ApiError::bad_request(format!("A performer's name has 1 to {MAX_PERFORMER} characters")));
    }
    let body = removal(&headers, &body)?;
    owner(&hub, &name, ip, admin.is_some(), &headers, body.password).await?;
    let clients = hub.remove_performer(&name, &performer, body.reason.as_deref()).await?;
    Ok(Json(Removed { name, performer, clients }))
}

/// Lock a session to new performers, or unlock it (the session's password or the admin token)
///
/// While locked, only the performers playing when it was locked may join again (a dropped
/// connection comes back); anyone else is refused (Troop 0.10.3 shows "Maximum number of
/// users connected"; a browser seat says the session is locked). Viewers are still welcome.
#[utoipa::path(post, path = "/api/v1/sessions/{name}/lock", tag = "moderation", security(("bearer" = []), ()),
    params(
        ("name" = String, Path, description = "The session's name", pattern = r"^[A-Za-z0-9._-]{1,64}$"),
        ("X-Session-Password" = Option<String>, Header, description = "The session's password (utf-8''<percent-encoded> when not ASCII)"),
    ),
    request_body = LockSwitch,
    responses(
        (status = 200, description = "Whether it is locked now", body = LockState),
        (status = 400, description = "Not a valid name or body, or neither password nor admin token", body = ErrorBody),
        (status = 403, description = "Wrong password", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "The session's image has no control channel", body = ErrorBody),
        (status = 415, description = "The body is not sent as JSON", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address", body = ErrorBody),
        (status = 503, description = "The session's server did not answer", body = ErrorBody),
    ))]
pub async fn lock(
    State(hub): State<Arc<Hub>>,
    Path(name): Path<String>,
    ClientIp(ip): ClientIp,
    admin: Option<AdminToken>,
    headers: HeaderMap,
    JsonBody(switch): JsonBody<LockSwitch>,
) -> Result<Json<LockState>, ApiError> {
    valid_name(&name)?;
    owner(&hub, &name, ip, admin.is_some(), &headers, switch.password).await?;
    let locked = hub.lock_session(&name, switch.locked).await?;
    Ok(Json(LockState { name, locked }))
}
