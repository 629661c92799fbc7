//! The archive over HTTP: performers list a session name's past performances and download
//! their code and timeline by proving the session's password (`X-Session-Password`, never in
//! a URL), the admin sees and deletes everything (`Authorization: Bearer`). Wrong passwords
//! are limited per address and take as long whether the name or id exists or not (the store
//! spends one slow hash either way). The database calls run on the blocking pool.

use super::auth::AdminToken;
use super::client::ClientIp;
use super::error::{ApiError, ErrorBody};
use super::pages::ARCHIVE_OFF;
use crate::archive::{Archive, ArchiveError, Summary};
use crate::hub::Hub;
use crate::wire::validate_name;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::{ExposeSecret, SecretString};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// The header that carries a session password.
pub const PASSWORD_HEADER: &str = "x-session-password";

const NO_PROOF: &str = "Send the session's password in the X-Session-Password header (or the admin token)";
const WRONG: &str = "Wrong password, or nothing archived under it";

/// How a request proves it may read an archive.
pub enum Proof {
    Admin,
    Password { password: SecretString, ip: IpAddr },
}

impl FromRequestParts<Arc<Hub>> for Proof {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, hub: &Arc<Hub>) -> Result<Self, ApiError> {
        if let Ok(Some(admin)) =
            <AdminToken as axum::extract::OptionalFromRequestParts<Arc<Hub>>>::from_request_parts(parts, hub).await
        {
            let AdminToken = admin;
            return Ok(Proof::Admin);
        }
        let Ok(ClientIp(ip)) = ClientIp::from_request_parts(parts, hub).await;
        let password = parts.headers.get(PASSWORD_HEADER).and_then(|v| v.to_str().ok()).filter(|p| !p.is_empty());
        match password {
            Some(p) => Ok(Proof::Password { password: SecretString::from(p.to_string()), ip }),
            None => Err(ApiError::new(StatusCode::UNAUTHORIZED, NO_PROOF)),
        }
    }
}

fn archive(hub: &Hub) -> Result<Archive, ApiError> {
    hub.archive().cloned().ok_or_else(|| ApiError::not_found(ARCHIVE_OFF))
}

/// Runs a database call on the blocking pool; its errors are logged, the client gets a 500.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ArchiveError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "archive request failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The archive could not be read (details in the hub's log)",
            ))
        }
        Err(_) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "The archive request was interrupted")),
    }
}

/// Slow password hashes (argon2id, 19 MiB each) run at most [`crate::hub::SLOW_CHECKS`] at a time; a
/// request that waits longer than 5 s for its turn gets 503.
async fn slow_check<T: Send + 'static>(
    hub: &Hub,
    f: impl FnOnce() -> Result<T, ArchiveError> + Send + 'static,
) -> Result<T, ApiError> {
    let turn = tokio::time::timeout(Duration::from_secs(5), hub.slow_checks.acquire()).await;
    let Ok(Ok(_permit)) = turn else {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "The hub is busy checking passwords; try again"));
    };
    blocking(f).await
}

/// Checks a password proof of archive `id` (admin proofs pass).
async fn prove(hub: &Hub, archive: &Archive, id: &str, proof: Proof) -> Result<(), ApiError> {
    let Proof::Password { password, ip } = proof else { return Ok(()) };
    hub.password_failures.take(ip, Instant::now()).map_err(ApiError::too_many_attempts)?;
    let (a, id) = (archive.clone(), id.to_string());
    let ok = slow_check(hub, move || a.verify(&id, password.expose_secret())).await?;
    if !ok {
        return Err(ApiError::new(StatusCode::FORBIDDEN, WRONG));
    }
    hub.password_failures.refund(ip, Instant::now());
    Ok(())
}

/// `?name=`
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ByName {
    /// The session name (required unless the admin asks for everything).
    pub name: Option<String>,
}

/// A session name's past performances
///
/// With the session's password (`X-Session-Password`): that name's sessions whose password it
/// is. With the admin token: all of that name's, or every archived session without `name`.
#[utoipa::path(get, path = "/api/v1/archive", tag = "archive", security((), ("bearer" = [])),
    params(ByName, ("X-Session-Password" = Option<String>, Header, description = "The session's password")),
    responses(
        (status = 200, description = "Newest first", body = Vec<Summary>),
        (status = 400, description = "No name, or not a valid one", body = ErrorBody),
        (status = 401, description = "No password and no admin token", body = ErrorBody),
        (status = 403, description = "Wrong password, or nothing archived under that name", body = ErrorBody),
        (status = 404, description = "The hub keeps no archive", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address", body = ErrorBody),
    ))]
pub async fn list(
    State(hub): State<Arc<Hub>>,
    Query(q): Query<ByName>,
    proof: Proof,
) -> Result<Json<Vec<Summary>>, ApiError> {
    let archive = archive(&hub)?;
    if let Some(name) = &q.name {
        validate_name(name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    match proof {
        Proof::Admin => Ok(Json(blocking(move || archive.summaries(q.name.as_deref())).await?)),
        Proof::Password { password, ip } => {
            let name = q.name.ok_or_else(|| ApiError::bad_request("Say which session: ?name=NAME"))?;
            hub.password_failures.take(ip, Instant::now()).map_err(ApiError::too_many_attempts)?;
            let found = slow_check(&hub, move || archive.summaries_for(&name, password.expose_secret())).await?;
            if found.is_empty() {
                return Err(ApiError::new(StatusCode::FORBIDDEN, WRONG));
            }
            hub.password_failures.refund(ip, Instant::now());
            Ok(Json(found))
        }
    }
}

/// Delete every archived session of a name (admin)
#[utoipa::path(delete, path = "/api/v1/archive", tag = "archive", security(("bearer" = [])),
    params(ByName),
    responses(
        (status = 200, description = "How many were deleted", body = Object),
        (status = 400, description = "No name, or not a valid one", body = ErrorBody),
        (status = 401, description = "No admin token presented", body = ErrorBody),
        (status = 403, description = "Wrong admin token", body = ErrorBody),
        (status = 404, description = "The hub keeps no archive", body = ErrorBody),
    ))]
pub async fn delete_name(
    State(hub): State<Arc<Hub>>,
    _admin: AdminToken,
    Query(q): Query<ByName>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let archive = archive(&hub)?;
    let name = q.name.ok_or_else(|| ApiError::bad_request("Say which session: ?name=NAME"))?;
    validate_name(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let deleted = blocking(move || archive.delete_name(&name)).await?;
    Ok(Json(serde_json::json!({ "deleted": deleted })))
}

/// One archived session
#[utoipa::path(get, path = "/api/v1/archive/{id}", tag = "archive", security((), ("bearer" = [])),
    params(("id" = String, Path), ("X-Session-Password" = Option<String>, Header, description = "The session's password")),
    responses(
        (status = 200, description = "Its summary", body = Summary),
        (status = 401, description = "No password and no admin token", body = ErrorBody),
        (status = 403, description = "Wrong password, or no such archive", body = ErrorBody),
        (status = 404, description = "No such archive (admin), or the hub keeps none", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address", body = ErrorBody),
    ))]
pub async fn get_one(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    proof: Proof,
) -> Result<Json<Summary>, ApiError> {
    let archive = archive(&hub)?;
    prove(&hub, &archive, &id, proof).await?;
    let found = blocking(move || archive.summary(&id)).await?;
    found.map(Json).ok_or_else(|| ApiError::not_found("No such archived session"))
}

/// Delete one archived session (admin)
#[utoipa::path(delete, path = "/api/v1/archive/{id}", tag = "archive", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No admin token presented", body = ErrorBody),
        (status = 403, description = "Wrong admin token", body = ErrorBody),
        (status = 404, description = "No such archive, or the hub keeps none", body = ErrorBody),
    ))]
pub async fn delete_one(
    State(hub): State<Arc<Hub>>,
    _admin: AdminToken,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let archive = archive(&hub)?;
    match blocking(move || archive.delete(&id)).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::not_found("No such archived session")),
    }
}

/// The date (UTC) of a Unix time in ms, `YYYY-MM-DD`.
fn date(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string().chars().take(10).collect()
}

/// A session's final code, as a text file
#[utoipa::path(get, path = "/api/v1/archive/{id}/code", tag = "archive", security((), ("bearer" = [])),
    params(("id" = String, Path), ("X-Session-Password" = Option<String>, Header, description = "The session's password")),
    responses(
        (status = 200, description = "The code, as an attachment named NAME-YYYY-MM-DD.txt", content_type = "text/plain", body = String),
        (status = 401, description = "No password and no admin token", body = ErrorBody),
        (status = 403, description = "Wrong password, or no such archive", body = ErrorBody),
        (status = 404, description = "No such archive (admin), or the hub keeps none", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address", body = ErrorBody),
    ))]
pub async fn code(State(hub): State<Arc<Hub>>, Path(id): Path<String>, proof: Proof) -> Result<Response, ApiError> {
    let archive = archive(&hub)?;
    prove(&hub, &archive, &id, proof).await?;
    let found = blocking(move || Ok(archive.summary(&id)?.zip(archive.code(&id)?))).await?;
    let (summary, code) = found.ok_or_else(|| ApiError::not_found("No such archived session"))?;
    let file = format!("attachment; filename=\"{}-{}.txt\"", summary.name, date(summary.started_ms));
    let mut resp = ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], code).into_response();
    if let Ok(v) = HeaderValue::from_str(&file) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// A session's timeline, as JSON lines
///
/// One JSON object per line, in the session's order, in the live feed's form: `snapshot`
/// (the whole state; first, or where the recording missed events), `operation`, `evaluate`,
/// `join`, `leave`, `mark`. Applying the operations in order from an empty document (or the
/// last snapshot) gives the session's code.
#[utoipa::path(get, path = "/api/v1/archive/{id}/timeline", tag = "archive", security((), ("bearer" = [])),
    params(("id" = String, Path), ("X-Session-Password" = Option<String>, Header, description = "The session's password")),
    responses(
        (status = 200, description = "JSON lines", content_type = "application/x-ndjson", body = String),
        (status = 401, description = "No password and no admin token", body = ErrorBody),
        (status = 403, description = "Wrong password, or no such archive", body = ErrorBody),
        (status = 404, description = "No such archive (admin), or the hub keeps none", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address", body = ErrorBody),
    ))]
pub async fn timeline(State(hub): State<Arc<Hub>>, Path(id): Path<String>, proof: Proof) -> Result<Response, ApiError> {
    let archive = archive(&hub)?;
    prove(&hub, &archive, &id, proof).await?;
    let body = blocking(move || {
        let mut body = String::new();
        let found = archive.timeline(&id, &mut |line| {
            body.push_str(line);
            body.push('\n');
        })?;
        Ok(found.then_some(body))
    })
    .await?;
    let body = body.ok_or_else(|| ApiError::not_found("No such archived session"))?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_utc_days() {
        assert_eq!(super::date(0), "1970-01-01");
        assert_eq!(super::date(1_795_989_767_482), "2026-11-29");
    }
}
