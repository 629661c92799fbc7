//! Share links over HTTP: the owner (or the admin) makes, lists and revokes links that let
//! their holder watch a running session's view (`/s/{name}#share=<token>`) or replay an
//! archived performance (`/a/{id}#share=<token>`) without the password. The token sits in the
//! URL's fragment, which browsers never send, so it reaches no log or proxy; the page hands it
//! to the hub itself. A link takes the view's parameters (`?stage&bg=transparent`, or after
//! the token: `#share=<token>&stage`). The answer carries the link as a QR code (SVG) too.

use super::archive::{archive, blocking, prove_as, Proof};
use super::auth::AdminToken;
use super::client::ClientIp;
use super::error::{no_session, valid_name, ApiError, ErrorBody};
use super::grants::{Grants, Proved};
use super::owner::owner;
use crate::hub::Hub;
use crate::links::{parse_expiry, Link, LinkError, Target};
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// How long a link lasts when the request does not say.
const DEFAULT_EXPIRY: &str = "3h";
const GONE: &str = "This share link has expired or was revoked; ask for a new one";

/// A link to make.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LinkRequest {
    /// How long it lasts: `"30m"`, `"2h"`, `"7d"` or a number of seconds (1 s to 30 days;
    /// default 3 hours).
    #[schema(value_type = Option<Object>, example = json!("30m"))]
    pub expires_in: Option<serde_json::Value>,
    /// The address the link starts with, as the page that asks knows it (`https://host/prefix/`);
    /// by default `http://` and the request's `Host`.
    pub base: Option<String>,
    /// View parameters the link carries after its token: `stage`, `bg=transparent`, `font=N`,
    /// `lines=N`, joined with `&` (e.g. `"stage&bg=transparent"`).
    pub params: Option<String>,
    /// The session's password, when not sent in `X-Session-Password` (sessions only).
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
}

/// A new link: its URL holds the token, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewLink {
    /// Names the link for listing and revoking.
    pub id: String,
    pub url: String,
    /// When it stops working (Unix seconds).
    pub expires: u64,
    /// The URL as a QR code (an SVG image), for a phone or a slide.
    pub qr_svg: String,
}

/// A link as listed (never its token).
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkInfo {
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    pub expires: u64,
}

impl From<Link> for LinkInfo {
    fn from(l: Link) -> LinkInfo {
        LinkInfo { id: l.id, created: l.created, expires: l.expires }
    }
}

impl From<LinkError> for ApiError {
    fn from(e: LinkError) -> ApiError {
        let status = match e {
            LinkError::BadExpiry => StatusCode::BAD_REQUEST,
            LinkError::TooManyHere => StatusCode::CONFLICT,
            LinkError::Full | LinkError::NoRandomness => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The start of the link: the page's own address, else `http://` and the request's Host.
fn base(asked: Option<&str>, headers: &HeaderMap) -> Result<String, ApiError> {
    let base = match asked {
        Some(b) => b.to_string(),
        None => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            format!("http://{host}/")
        }
    };
    let fine = (base.starts_with("http://") || base.starts_with("https://"))
        && base.len() <= 512
        && !base.contains(['#', '?', '"', '<', '>', ' ', '\\'])
        && !base.chars().any(char::is_control);
    if !fine {
        return Err(ApiError::bad_request("\"base\" must be an http:// or https:// address without ? or #"));
    }
    Ok(if base.ends_with('/') { base } else { format!("{base}/") })
}

/// The view parameters a link may carry, checked: `&`-joined `stage`, `bg=…`, `font=…`,
/// `lines=…` with short plain values.
fn view_params(asked: Option<&str>) -> Result<String, ApiError> {
    let Some(asked) = asked.map(str::trim).filter(|p| !p.is_empty()) else { return Ok(String::new()) };
    let fine = asked.len() <= 100
        && asked.split('&').all(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            ["stage", "bg", "font", "lines"].contains(&key)
                && value.len() <= 16
                && value.chars().all(|c| c.is_ascii_alphanumeric())
        });
    if !fine {
        return Err(ApiError::bad_request("\"params\" takes stage, bg=…, font=… and lines=…, joined with &"));
    }
    Ok(format!("&{asked}"))
}

fn qr_svg(url: &str) -> String {
    use qrcode::render::svg;
    match qrcode::QrCode::new(url.as_bytes()) {
        Ok(code) => code
            .render::<svg::Color>()
            .min_dimensions(240, 240)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .build(),
        Err(_) => String::new(),
    }
}

/// Makes a link to `target`; `path` is where it leads, under the base.
fn make(
    hub: &Hub,
    target: Target,
    request: &LinkRequest,
    headers: &HeaderMap,
    path: &str,
) -> Result<Response, ApiError> {
    let default = serde_json::Value::from(DEFAULT_EXPIRY);
    let ttl = parse_expiry(request.expires_in.as_ref().unwrap_or(&default))?;
    let base = base(request.base.as_deref(), headers)?;
    let params = view_params(request.params.as_deref())?;
    let (token, link) = hub.links.create(target, ttl)?;
    let url = format!("{base}{path}#share={token}{params}");
    let qr_svg = qr_svg(&url);
    let made = NewLink { id: link.id, url, expires: link.expires, qr_svg };
    let mut response = (StatusCode::CREATED, Json(made)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    Ok(response)
}

fn session_target(hub: &Hub, name: &str) -> Result<Target, ApiError> {
    hub.link_target(name).ok_or_else(|| no_session(name))
}

// A share token is 256 random bits: guessing one is hopeless, so a wrong one costs nothing
// from the address's password budget (a venue behind one address scanning an old QR code
// must not lock its own owner out).

/// Checks a share token for archived performance `id`.
pub fn check_archive_share(hub: &Hub, id: &str, share: &SecretString) -> Result<(), ApiError> {
    if hub.links.opens(share.expose_secret()) == Some(Target::Archive { id: id.to_string() }) {
        return Ok(());
    }
    Err(ApiError::new(StatusCode::FORBIDDEN, GONE))
}

/// Checks a share token for running session `name`'s view.
pub fn check_session_share(hub: &Hub, name: &str, share: &SecretString) -> Result<(), ApiError> {
    if hub.link_opens_session(name, share.expose_secret()) {
        return Ok(());
    }
    Err(ApiError::new(StatusCode::FORBIDDEN, GONE))
}

/// Refuses a proof that came through a share link: links never manage links.
fn not_by_link(proved: Proved) -> Result<(), ApiError> {
    match proved {
        Proved::Password => Ok(()),
        Proved::Link(_) => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "A share link lets its holder watch, nothing else"))
        }
    }
}

/// Share a session's view: a link that opens it without the password
///
/// The session's password (`X-Session-Password` or the body's `"password"`) or the admin
/// token. The link works until it expires, it is revoked, or the session ends; it never lets
/// anyone type.
#[utoipa::path(post, path = "/api/v1/sessions/{name}/links", tag = "links", security(("bearer" = []), ()),
    params(
        ("name" = String, Path, description = "The session's name", pattern = r"^[A-Za-z0-9._-]{1,64}$"),
        ("X-Session-Password" = Option<String>, Header, description = "The session's password (utf-8''<percent-encoded> when not ASCII)"),
    ),
    request_body = LinkRequest,
    responses(
        (status = 201, description = "The link (its token is shown only now)", body = NewLink),
        (status = 400, description = "Not a valid name, expiry or base, or neither password nor admin token", body = ErrorBody),
        (status = 403, description = "Wrong password", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "It has 50 links already", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address", body = ErrorBody),
    ))]
pub async fn create_session_link(
    State(hub): State<Arc<Hub>>,
    Path(name): Path<String>,
    ClientIp(ip): ClientIp,
    admin: Option<AdminToken>,
    headers: HeaderMap,
    super::json::JsonBody(mut request): super::json::JsonBody<LinkRequest>,
) -> Result<Response, ApiError> {
    valid_name(&name)?;
    owner(&hub, &name, ip, admin.is_some(), &headers, request.password.take()).await?;
    let target = session_target(&hub, &name)?;
    let response = make(&hub, target, &request, &headers, &format!("s/{name}"))?;
    tracing::info!(session = %name, "share link made");
    Ok(response)
}

/// A session's share links
#[utoipa::path(get, path = "/api/v1/sessions/{name}/links", tag = "links", security(("bearer" = []), ()),
    params(
        ("name" = String, Path, description = "The session's name", pattern = r"^[A-Za-z0-9._-]{1,64}$"),
        ("X-Session-Password" = Option<String>, Header, description = "The session's password (utf-8''<percent-encoded> when not ASCII)"),
    ),
    responses(
        (status = 200, description = "Its live links, oldest first", body = Vec<LinkInfo>),
        (status = 400, description = "Not a valid name, or neither password nor admin token", body = ErrorBody),
        (status = 403, description = "Wrong password", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address", body = ErrorBody),
    ))]
pub async fn list_session_links(
    State(hub): State<Arc<Hub>>,
    Path(name): Path<String>,
    ClientIp(ip): ClientIp,
    admin: Option<AdminToken>,
    headers: HeaderMap,
) -> Result<Json<Vec<LinkInfo>>, ApiError> {
    valid_name(&name)?;
    owner(&hub, &name, ip, admin.is_some(), &headers, None).await?;
    let target = session_target(&hub, &name)?;
    Ok(Json(hub.links.list(&target).into_iter().map(Into::into).collect()))
}

/// Revoke a session's share link (viewers it let in are let go)
#[utoipa::path(delete, path = "/api/v1/sessions/{name}/links/{link}", tag = "links", security(("bearer" = []), ()),
    params(
        ("name" = String, Path, description = "The session's name", pattern = r"^[A-Za-z0-9._-]{1,64}$"),
        ("link" = String, Path, description = "The link's id"),
        ("X-Session-Password" = Option<String>, Header, description = "The session's password (utf-8''<percent-encoded> when not ASCII)"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "Not a valid name, or neither password nor admin token", body = ErrorBody),
        (status = 403, description = "Wrong password", body = ErrorBody),
        (status = 404, description = "No such session or link", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address", body = ErrorBody),
    ))]
pub async fn revoke_session_link(
    State(hub): State<Arc<Hub>>,
    Path((name, link)): Path<(String, String)>,
    ClientIp(ip): ClientIp,
    admin: Option<AdminToken>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    valid_name(&name)?;
    owner(&hub, &name, ip, admin.is_some(), &headers, None).await?;
    if !hub.revoke_session_link(&name, &link) {
        return Err(ApiError::not_found("No such link to this session"));
    }
    tracing::info!(session = %name, link = %link, "share link revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// Whether archived performance `id` exists (after its proof passed).
async fn archived(hub: &Hub, id: &str) -> Result<(), ApiError> {
    let (a, i) = (archive(hub)?, id.to_string());
    match blocking(move || a.summary(&i)).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("No such archived session")),
    }
}

/// Share a past performance: a link to its replay without the password
///
/// Proved like reading it (`X-Archive-Token`, `X-Session-Password` or the admin token).
#[utoipa::path(post, path = "/api/v1/archive/{id}/links", tag = "links", security((), ("bearer" = [])),
    params(("id" = String, Path), ("X-Archive-Token" = Option<String>, Header, description = "A token from .../access"), ("X-Session-Password" = Option<String>, Header, description = "The session's password (ASCII)")),
    request_body = LinkRequest,
    responses(
        (status = 201, description = "The link (its token is shown only now)", body = NewLink),
        (status = 400, description = "Not a valid expiry or base", body = ErrorBody),
        (status = 401, description = "No proof, or the token expired", body = ErrorBody),
        (status = 403, description = "Wrong password", body = ErrorBody),
        (status = 404, description = "No such archived session, or the hub keeps none", body = ErrorBody),
        (status = 409, description = "It has 50 links already", body = ErrorBody),
    ))]
pub async fn create_archive_link(
    State(hub): State<Arc<Hub>>,
    Extension(grants): Extension<Arc<Grants>>,
    Path(id): Path<String>,
    proof: Proof,
    headers: HeaderMap,
    super::json::JsonBody(request): super::json::JsonBody<LinkRequest>,
) -> Result<Response, ApiError> {
    not_by_link(prove_as(&hub, &grants, &archive(&hub)?, &id, proof).await?)?;
    archived(&hub, &id).await?;
    let response = make(&hub, Target::Archive { id: id.clone() }, &request, &headers, &format!("a/{id}"))?;
    tracing::info!(archived = %id, "share link made");
    Ok(response)
}

/// A past performance's share links
#[utoipa::path(get, path = "/api/v1/archive/{id}/links", tag = "links", security((), ("bearer" = [])),
    params(("id" = String, Path), ("X-Archive-Token" = Option<String>, Header, description = "A token from .../access"), ("X-Session-Password" = Option<String>, Header, description = "The session's password (ASCII)")),
    responses(
        (status = 200, description = "Its live links, oldest first", body = Vec<LinkInfo>),
        (status = 401, description = "No proof, or the token expired", body = ErrorBody),
        (status = 403, description = "Wrong password", body = ErrorBody),
        (status = 404, description = "The hub keeps no archive", body = ErrorBody),
    ))]
pub async fn list_archive_links(
    State(hub): State<Arc<Hub>>,
    Extension(grants): Extension<Arc<Grants>>,
    Path(id): Path<String>,
    proof: Proof,
) -> Result<Json<Vec<LinkInfo>>, ApiError> {
    not_by_link(prove_as(&hub, &grants, &archive(&hub)?, &id, proof).await?)?;
    Ok(Json(hub.links.list(&Target::Archive { id }).into_iter().map(Into::into).collect()))
}

/// Revoke a past performance's share link
#[utoipa::path(delete, path = "/api/v1/archive/{id}/links/{link}", tag = "links", security((), ("bearer" = [])),
    params(("id" = String, Path), ("link" = String, Path, description = "The link's id"), ("X-Archive-Token" = Option<String>, Header, description = "A token from .../access"), ("X-Session-Password" = Option<String>, Header, description = "The session's password (ASCII)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No proof, or the token expired", body = ErrorBody),
        (status = 403, description = "Wrong password", body = ErrorBody),
        (status = 404, description = "No such link, or the hub keeps no archive", body = ErrorBody),
    ))]
pub async fn revoke_archive_link(
    State(hub): State<Arc<Hub>>,
    Extension(grants): Extension<Arc<Grants>>,
    Path((id, link)): Path<(String, String)>,
    proof: Proof,
) -> Result<StatusCode, ApiError> {
    not_by_link(prove_as(&hub, &grants, &archive(&hub)?, &id, proof).await?)?;
    if !hub.links.revoke(&Target::Archive { id: id.clone() }, &link) {
        return Err(ApiError::not_found("No such link to this performance"));
    }
    tracing::info!(archived = %id, link = %link, "share link revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_base_is_the_pages_own_or_the_host_and_nothing_else() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("hub.example:8080"));
        assert_eq!(base(None, &headers).ok().as_deref(), Some("http://hub.example:8080/"));
        assert_eq!(base(Some("https://x.org/hub"), &headers).ok().as_deref(), Some("https://x.org/hub/"));
        for bad in ["javascript:alert(1)", "https://x.org/?a", "https://x.org/#a", "ftp://x", "https://x.org/\n"] {
            assert!(base(Some(bad), &headers).is_err(), "{bad}");
        }
        assert!(qr_svg("https://x.org/s/jam#share=00").starts_with("<?xml"), "a QR code in SVG");
        assert_eq!(view_params(Some("stage&bg=transparent")).ok().as_deref(), Some("&stage&bg=transparent"));
        assert_eq!(view_params(None).ok().as_deref(), Some(""));
        for bad in ["share=x", "stage&x=1", "bg=a b", "font=<b>"] {
            assert!(view_params(Some(bad)).is_err(), "{bad}");
        }
    }
}
