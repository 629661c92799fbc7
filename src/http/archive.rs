//! The archive over HTTP: performers list a session name's past performances and download
//! their code and timeline by proving the session's password, the admin sees and deletes
//! everything (`Authorization: Bearer`).
//!
//! A password is proved once, in a POST body (`/api/v1/archive/access`, or
//! `/api/v1/archive/{id}/access`: any characters, never in a URL or a header), for a
//! short-lived token (`X-Archive-Token`, see [`super::grants`]) that then reads what it opened.
//! Scripts may still send `X-Session-Password` on each GET (ASCII only, one slow hash each).
//! Every password check goes through the hub's gate (per address and per session name, paid
//! before, refunded unless wrong; the slow hash holds its turn until it ends) and takes as long
//! whether the name or id exists or not (the store spends one slow hash either way).

use super::auth::AdminToken;
use super::client::ClientIp;
use super::error::{valid_name, ApiError, ErrorBody};
use super::grants::{Grants, Proved, GRANT_TTL};
use super::json::JsonBody;
use super::pages::ARCHIVE_OFF;
use crate::archive::{Archive, ArchiveError, Page, Summary};
use crate::hub::Hub;
use axum::extract::{Extension, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::{ExposeSecret, SecretString};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// The header that carries a session password (scripts; ASCII only).
pub const PASSWORD_HEADER: &str = "x-session-password";
/// The header that carries a token from `.../access`.
pub const TOKEN_HEADER: &str = "x-archive-token";

const NO_PROOF: &str =
    "Prove the session's password first (POST .../access), then send X-Archive-Token (or X-Session-Password, or the admin token)";
const WRONG: &str = "Wrong password, or nothing archived under it";
const EXPIRED: &str = "This page's access to the archive has expired; give the session's password again";
/// The session-name budget for ids that name no archived session (so guessing ids shares one).
const UNKNOWN_ID: &str = "(no such archived session)";

/// How a request proves it may read an archive.
pub enum Proof {
    Admin,
    Token(String),
    Password { password: SecretString, ip: IpAddr },
}

impl FromRequestParts<Arc<Hub>> for Proof {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, hub: &Arc<Hub>) -> Result<Self, ApiError> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
        if let Some(token) = header(TOKEN_HEADER) {
            return Ok(Proof::Token(token.to_string()));
        }
        if let Some(password) = header(PASSWORD_HEADER) {
            let password = SecretString::from(password.to_string());
            let Ok(ClientIp(ip)) = ClientIp::from_request_parts(parts, hub).await;
            return Ok(Proof::Password { password, ip });
        }
        match <AdminToken as FromRequestParts<Arc<Hub>>>::from_request_parts(parts, hub).await {
            Ok(AdminToken) => Ok(Proof::Admin),
            Err(e) if e.status() == StatusCode::UNAUTHORIZED => Err(ApiError::new(StatusCode::UNAUTHORIZED, NO_PROOF)),
            Err(e) if e.status() == StatusCode::FORBIDDEN && !hub.has_admin_token() => {
                Err(ApiError::new(StatusCode::UNAUTHORIZED, NO_PROOF))
            }
            Err(e) => Err(e),
        }
    }
}

pub(super) fn archive(hub: &Hub) -> Result<Archive, ApiError> {
    hub.archive().cloned().ok_or_else(|| ApiError::not_found(ARCHIVE_OFF))
}

fn failed(e: ArchiveError) -> ApiError {
    tracing::warn!(error = %e, "archive request failed");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "The archive could not be read (details in the hub's log)")
}

/// Runs a database call on the blocking pool; its errors are logged, the client gets a 500.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ArchiveError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(failed),
        Err(_) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "The archive request was interrupted")),
    }
}

/// Runs a slow password check (argon2id, 19 MiB) in its turn at the gate: 503 when the hub
/// is too busy to give it one within a few seconds (nothing is charged then).
async fn slow_check<T: Send + 'static>(
    hub: &Hub,
    f: impl FnOnce() -> Result<T, ArchiveError> + Send + 'static,
) -> Result<T, ApiError> {
    hub.gate.slow(f).await?.map_err(failed)
}

/// Checks a password proof of archive `id`, charged to the session's name (admin and token
/// proofs pass here when they hold).
pub(super) async fn prove(
    hub: &Hub,
    grants: &Grants,
    archive: &Archive,
    id: &str,
    proof: Proof,
) -> Result<(), ApiError> {
    prove_as(hub, grants, archive, id, proof).await.map(drop)
}

/// [`prove`], saying whether it was through a share link (which reads, and only while the
/// link holds).
pub(super) async fn prove_as(
    hub: &Hub,
    grants: &Grants,
    archive: &Archive,
    id: &str,
    proof: Proof,
) -> Result<Proved, ApiError> {
    match proof {
        Proof::Admin => Ok(Proved::Password),
        Proof::Token(token) => match grants.granted(&token, id) {
            Some(Proved::Link(link)) if !hub.links.holds(&link) => {
                Err(ApiError::new(StatusCode::UNAUTHORIZED, LINK_GONE))
            }
            Some(proved) => Ok(proved),
            None => Err(ApiError::new(StatusCode::UNAUTHORIZED, EXPIRED)),
        },
        Proof::Password { password, ip } => verify(hub, archive, id, ip, password).await.map(|()| Proved::Password),
    }
}

const LINK_GONE: &str = "This share link has expired or was revoked; ask for a new one";

/// One slow check of `password` for archive `id`, through the gate.
async fn verify(hub: &Hub, archive: &Archive, id: &str, ip: IpAddr, password: SecretString) -> Result<(), ApiError> {
    let (a, i) = (archive.clone(), id.to_string());
    let name = blocking(move || Ok(a.summary(&i)?.map(|s| s.name))).await?;
    let charge = hub.gate.take(ip, name.as_deref().unwrap_or(UNKNOWN_ID))?;
    let (a, i) = (archive.clone(), id.to_string());
    if !slow_check(hub, move || a.verify(&i, password.expose_secret())).await? {
        charge.wrong();
        return Err(ApiError::new(StatusCode::FORBIDDEN, WRONG));
    }
    Ok(())
}

/// A session name's archived performances whose password `password` is, through the gate:
/// 403 when there are none.
async fn summaries_for(
    hub: &Hub,
    archive: Archive,
    name: String,
    ip: IpAddr,
    password: SecretString,
) -> Result<Vec<Summary>, ApiError> {
    let charge = hub.gate.take(ip, &name)?;
    let found = slow_check(hub, move || archive.summaries_for(&name, password.expose_secret())).await?;
    if found.is_empty() {
        charge.wrong();
        return Err(ApiError::new(StatusCode::FORBIDDEN, WRONG));
    }
    Ok(found)
}

/// A password proved in a body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct Access {
    /// The session name (for `/api/v1/archive/access`; ignored for one id).
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub name: Option<String>,
    /// The session's password (any characters).
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
    /// Or, for one performance, the token of a share link to it (the `#share=` of its URL).
    #[schema(value_type = Option<String>, format = Password)]
    pub share: Option<SecretString>,
}

const NO_PASSWORD: &str = "Send the session's \"password\"";

/// What a proved password opens: a token for `X-Archive-Token`, how long it holds, and (for
/// a name) that name's performances it opened.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Granted {
    pub token: String,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<Vec<Summary>>,
}

fn grant(grants: &Grants, ids: Vec<String>, sessions: Option<Vec<Summary>>) -> Result<Json<Granted>, ApiError> {
    grant_for(grants, ids, sessions, None)
}

/// [`grant`], for a share link when `link` holds its token's digest.
fn grant_for(
    grants: &Grants,
    ids: Vec<String>,
    sessions: Option<Vec<Summary>>,
    link: Option<[u8; 32]>,
) -> Result<Json<Granted>, ApiError> {
    let token = grants.issue_for(ids, link).ok_or_else(|| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "The hub has no randomness for a token right now")
    })?;
    Ok(Json(Granted { token, expires_in: GRANT_TTL.as_secs(), sessions }))
}

/// Open a session name's past performances with its password
///
/// The password goes in the body (any characters). The answer lists that name's performances
/// whose password it is, with a token that reads each of them (`X-Archive-Token`) for a while.
#[utoipa::path(post, path = "/api/v1/archive/access", tag = "archive",
    request_body = Access,
    responses(
        (status = 200, description = "Newest first, with a token for them", body = Granted),
        (status = 400, description = "No name, or not a valid one", body = ErrorBody),
        (status = 403, description = "Wrong password, or nothing archived under that name", body = ErrorBody),
        (status = 404, description = "The hub keeps no archive", body = ErrorBody),
        (status = 415, description = "The body is not sent as JSON", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address or for this name", body = ErrorBody),
        (status = 503, description = "The hub is busy checking passwords", body = ErrorBody),
    ))]
pub async fn access_name(
    State(hub): State<Arc<Hub>>,
    Extension(grants): Extension<Arc<Grants>>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<Access>,
) -> Result<Json<Granted>, ApiError> {
    let archive = archive(&hub)?;
    let name = body.name.ok_or_else(|| ApiError::bad_request("Say which session: \"name\""))?;
    valid_name(&name)?;
    let password = body.password.ok_or_else(|| ApiError::bad_request(NO_PASSWORD))?;
    let found = summaries_for(&hub, archive, name, ip, password).await?;
    grant(&grants, found.iter().map(|s| s.id.clone()).collect(), Some(found))
}

/// Open one past performance with its password
///
/// The password goes in the body (any characters), or a share link's token as `"share"`; the
/// token reads this performance's summary, code and timeline (`X-Archive-Token`) for a while.
#[utoipa::path(post, path = "/api/v1/archive/{id}/access", tag = "archive",
    params(("id" = String, Path)),
    request_body = Access,
    responses(
        (status = 200, description = "A token for it", body = Granted),
        (status = 403, description = "Wrong password, or no such archive", body = ErrorBody),
        (status = 404, description = "The hub keeps no archive", body = ErrorBody),
        (status = 415, description = "The body is not sent as JSON", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address or for this session", body = ErrorBody),
        (status = 503, description = "The hub is busy checking passwords", body = ErrorBody),
    ))]
pub async fn access_one(
    State(hub): State<Arc<Hub>>,
    Extension(grants): Extension<Arc<Grants>>,
    Path(id): Path<String>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<Access>,
) -> Result<Json<Granted>, ApiError> {
    let archive = archive(&hub)?;
    match (body.share, body.password) {
        (Some(share), _) => {
            super::links::check_archive_share(&hub, &id, &share)?;
            let link = Some(crate::links::digest(share.expose_secret()));
            grant_for(&grants, vec![id], None, link)
        }
        (None, Some(password)) => {
            verify(&hub, &archive, &id, ip, password).await?;
            grant(&grants, vec![id], None)
        }
        (None, None) => Err(ApiError::bad_request(NO_PASSWORD)),
    }
}

/// `?name=` (and, for the admin's listing, a page: `?limit=&before=`)
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ByName {
    /// The session name (required unless the admin asks for everything).
    pub name: Option<String>,
    /// Sessions per page (admin; default 100, at most 1000).
    pub limit: Option<usize>,
    /// Only sessions started before this Unix time in ms (admin; the last one's `started_ms`
    /// gives the next page).
    pub before: Option<u64>,
}

/// Sessions per page of the admin's listing, by default and at most.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

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
        (status = 429, description = "Too many wrong passwords from this address or for this name", body = ErrorBody),
        (status = 503, description = "The hub is busy checking passwords", body = ErrorBody),
    ))]
pub async fn list(
    State(hub): State<Arc<Hub>>,
    Query(q): Query<ByName>,
    proof: Proof,
) -> Result<Json<Vec<Summary>>, ApiError> {
    let archive = archive(&hub)?;
    if let Some(name) = &q.name {
        valid_name(name)?;
    }
    match proof {
        Proof::Admin => {
            let page = Page { limit: q.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE), before_ms: q.before };
            Ok(Json(blocking(move || archive.summaries(q.name.as_deref(), page)).await?))
        }
        Proof::Password { password, ip } => {
            let name = q.name.ok_or_else(|| ApiError::bad_request("Say which session: ?name=NAME"))?;
            Ok(Json(summaries_for(&hub, archive, name, ip, password).await?))
        }
        Proof::Token(_) => Err(ApiError::bad_request(
            "A token reads the sessions it opened; list them with POST /api/v1/archive/access",
        )),
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
    valid_name(&name)?;
    let deleted = blocking(move || archive.delete_name(&name)).await?;
    Ok(Json(serde_json::json!({ "deleted": deleted })))
}

/// One archived session
#[utoipa::path(get, path = "/api/v1/archive/{id}", tag = "archive", security((), ("bearer" = [])),
    params(("id" = String, Path), ("X-Archive-Token" = Option<String>, Header, description = "A token from .../access"), ("X-Session-Password" = Option<String>, Header, description = "The session's password (ASCII)")),
    responses(
        (status = 200, description = "Its summary", body = Summary),
        (status = 401, description = "No proof, or the token expired", body = ErrorBody),
        (status = 403, description = "Wrong password, or no such archive", body = ErrorBody),
        (status = 404, description = "No such archive (admin), or the hub keeps none", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address or for this session", body = ErrorBody),
        (status = 503, description = "The hub is busy checking passwords", body = ErrorBody),
    ))]
pub async fn get_one(
    State(hub): State<Arc<Hub>>,
    Extension(grants): Extension<Arc<Grants>>,
    Path(id): Path<String>,
    proof: Proof,
) -> Result<Json<Summary>, ApiError> {
    let archive = archive(&hub)?;
    prove(&hub, &grants, &archive, &id, proof).await?;
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
pub(super) fn date(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string().chars().take(10).collect()
}

/// A session's final code, as a text file
#[utoipa::path(get, path = "/api/v1/archive/{id}/code", tag = "archive", security((), ("bearer" = [])),
    params(("id" = String, Path), ("X-Archive-Token" = Option<String>, Header, description = "A token from .../access"), ("X-Session-Password" = Option<String>, Header, description = "The session's password (ASCII)")),
    responses(
        (status = 200, description = "The code, as an attachment named NAME-YYYY-MM-DD.txt", content_type = "text/plain", body = String),
        (status = 401, description = "No proof, or the token expired", body = ErrorBody),
        (status = 403, description = "Wrong password, or no such archive", body = ErrorBody),
        (status = 404, description = "No such archive (admin), or the hub keeps none", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address or for this session", body = ErrorBody),
        (status = 503, description = "The hub is busy checking passwords", body = ErrorBody),
    ))]
pub async fn code(
    State(hub): State<Arc<Hub>>,
    Extension(grants): Extension<Arc<Grants>>,
    Path(id): Path<String>,
    proof: Proof,
) -> Result<Response, ApiError> {
    let archive = archive(&hub)?;
    prove(&hub, &grants, &archive, &id, proof).await?;
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
    params(("id" = String, Path), ("X-Archive-Token" = Option<String>, Header, description = "A token from .../access"), ("X-Session-Password" = Option<String>, Header, description = "The session's password (ASCII)")),
    responses(
        (status = 200, description = "JSON lines", content_type = "application/x-ndjson", body = String),
        (status = 401, description = "No proof, or the token expired", body = ErrorBody),
        (status = 403, description = "Wrong password, or no such archive", body = ErrorBody),
        (status = 404, description = "No such archive (admin), or the hub keeps none", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address or for this session", body = ErrorBody),
        (status = 503, description = "The hub is busy checking passwords", body = ErrorBody),
    ))]
pub async fn timeline(
    State(hub): State<Arc<Hub>>,
    Extension(grants): Extension<Arc<Grants>>,
    Path(id): Path<String>,
    proof: Proof,
) -> Result<Response, ApiError> {
    let archive = archive(&hub)?;
    prove(&hub, &grants, &archive, &id, proof).await?;
    // The first page says whether the session exists; the rest stream as the client reads.
    let (a, i) = (archive.clone(), id.clone());
    let first = blocking(move || a.timeline_page(&i, None, TIMELINE_PAGE)).await?;
    let first = first.ok_or_else(|| ApiError::not_found("No such archived session"))?;
    let pages = futures_util::stream::unfold(Some(first), move |page| {
        let (archive, id) = (archive.clone(), id.clone());
        async move {
            let page = page?;
            let full = page.len() == TIMELINE_PAGE;
            let last = page.last().map(|(seq, _)| *seq);
            let mut chunk = String::with_capacity(page.iter().map(|(_, l)| l.len() + 1).sum());
            for (_, line) in &page {
                chunk.push_str(line);
                chunk.push('\n');
            }
            let next = match (full, last) {
                (true, Some(after)) => {
                    match blocking(move || archive.timeline_page(&id, Some(after), TIMELINE_PAGE)).await {
                        Ok(next) => next,
                        Err(_) => return Some((Err(std::io::Error::other("the archive could not be read")), None)),
                    }
                }
                _ => None,
            };
            Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(chunk)), next))
        }
    });
    let body = axum::body::Body::from_stream(pages);
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// Timeline lines read from the archive per step of a download.
const TIMELINE_PAGE: usize = 1000;

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_utc_days() {
        assert_eq!(super::date(0), "1970-01-01");
        assert_eq!(super::date(1_795_989_767_482), "2026-11-29");
    }
}
