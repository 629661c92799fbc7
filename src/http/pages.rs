//! The pages people open in a browser besides the status page: the audience view `/s/{name}`,
//! the browser seat `/s/{name}/play`, the owner's page `/s/{name}/owner`, the archive form `/archive`, the replay `/a/{id}`, and
//! their scripts and styles under `/assets/` (the vendored CodeMirror under
//! `/assets/codemirror/`, see `assets/vendor/codemirror/VERSION`). All are files compiled into the hub (`assets/`), served with a strict CSP; they
//! use relative URLs only, so a reverse proxy may put the hub under a path prefix.

use super::error::{valid_name, ApiError, ErrorBody};
use crate::config::Audience;
use crate::hub::Hub;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Every page asks for a session's password or shows what it guards, so no other site may
/// frame one (no clickjacking). A stream's browser source (OBS) opens the page itself, not in
/// a frame, so it is not affected.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub const SEATS_OFF: &str = "This hub does not let performers play from a browser (browser_seats: off)";
pub const AUDIENCE_OFF: &str = "This hub does not show sessions to an audience (audience: off)";
pub const ARCHIVE_OFF: &str = "This hub keeps no archive of sessions (archive: off)";

/// A page or asset with the headers every such file gets.
fn file(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, body).into_response()
}

const HTML: &str = "text/html; charset=utf-8";

/// A session's audience view (HTML)
///
/// The session's code, live and read-only, in the performers' Troop colours. `?font=N` sets
/// the font size in pixels.
#[utoipa::path(get, path = "/s/{name}", tag = "audience",
    params(("name" = String, Path, description = "The session's name", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 200, description = "The page; it connects to the live feed itself", content_type = "text/html", body = String),
        (status = 400, description = "Not a valid session name", body = ErrorBody),
        (status = 404, description = "The audience view is off on this hub", body = ErrorBody),
    ))]
pub async fn view_page(State(hub): State<Arc<Hub>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    valid_name(&name)?;
    if hub.config().audience == Audience::Off {
        return Err(ApiError::not_found(AUDIENCE_OFF));
    }
    Ok(file(HTML, include_str!("assets/view.html")))
}

/// Play in a session from a browser (HTML)
///
/// A form for the session's name, a performer name and the password, then an editor with the
/// session's code in which the performer types beside Troop's own clients.
#[utoipa::path(get, path = "/s/{name}/play", tag = "seats",
    params(("name" = String, Path, description = "The session's name", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 200, description = "The page; it connects to the seat itself", content_type = "text/html", body = String),
        (status = 400, description = "Not a valid session name", body = ErrorBody),
        (status = 404, description = "Browser seats are off on this hub", body = ErrorBody),
    ))]
pub async fn seat_page(State(hub): State<Arc<Hub>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    valid_name(&name)?;
    if !hub.config().browser_seats {
        return Err(ApiError::not_found(SEATS_OFF));
    }
    Ok(file(HTML, include_str!("assets/seat.html")))
}

/// Manage a session you own (HTML)
///
/// With the session's password: who plays and their statistics, removing a performer,
/// locking the session to new performers, and share links with their QR codes.
#[utoipa::path(get, path = "/s/{name}/owner", tag = "moderation",
    params(("name" = String, Path, description = "The session's name", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 200, description = "The page; it asks for the password", content_type = "text/html", body = String),
        (status = 400, description = "Not a valid session name", body = ErrorBody),
    ))]
pub async fn owner_page(Path(name): Path<String>) -> Result<Response, ApiError> {
    valid_name(&name)?;
    Ok(file(HTML, include_str!("assets/owner.html")))
}

/// Your past sessions (HTML)
///
/// A form for a session's name and password that lists its archived performances, with their
/// code and timeline to download and a link to replay each.
#[utoipa::path(get, path = "/archive", tag = "archive",
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
        (status = 404, description = "The hub keeps no archive", body = ErrorBody),
    ))]
pub async fn archive_page(State(hub): State<Arc<Hub>>) -> Result<Response, ApiError> {
    hub.archive().ok_or_else(|| ApiError::not_found(ARCHIVE_OFF))?;
    Ok(file(HTML, include_str!("assets/archive.html")))
}

/// Replay an archived performance (HTML)
#[utoipa::path(get, path = "/a/{id}", tag = "archive",
    params(("id" = String, Path, description = "The archived session's id")),
    responses(
        (status = 200, description = "The page; it asks for the password and loads the timeline", content_type = "text/html", body = String),
        (status = 404, description = "The hub keeps no archive", body = ErrorBody),
    ))]
pub async fn replay_page(State(hub): State<Arc<Hub>>, Path(_id): Path<String>) -> Result<Response, ApiError> {
    hub.archive().ok_or_else(|| ApiError::not_found(ARCHIVE_OFF))?;
    Ok(file(HTML, include_str!("assets/replay.html")))
}

/// The pages' scripts and styles
#[utoipa::path(get, path = "/assets/{file}", tag = "audience",
    params(("file" = String, Path, description = "palette.css, view.css, doc.js, render.js, view.js, archive.js, replay.js, replay.css, ot.js, seatlogic.js, seat.js, seat.css, owner.js or owner.css")),
    responses(
        (status = 200, description = "The file", content_type = "text/plain", body = String),
        (status = 404, description = "No such file", body = ErrorBody),
    ))]
pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (js, css) = ("text/javascript; charset=utf-8", "text/css; charset=utf-8");
    match name.as_str() {
        "palette.css" => Ok(file(css, include_str!("assets/palette.css"))),
        "view.css" => Ok(file(css, include_str!("assets/view.css"))),
        "doc.js" => Ok(file(js, include_str!("assets/doc.js"))),
        "render.js" => Ok(file(js, include_str!("assets/render.js"))),
        "view.js" => Ok(file(js, include_str!("assets/view.js"))),
        "archive.js" => Ok(file(js, include_str!("assets/archive.js"))),
        "replay.js" => Ok(file(js, include_str!("assets/replay.js"))),
        "replay.css" => Ok(file(css, include_str!("assets/replay.css"))),
        "ot.js" => Ok(file(js, include_str!("assets/ot.js"))),
        "seat.js" => Ok(file(js, include_str!("assets/seat.js"))),
        "seatlogic.js" => Ok(file(js, include_str!("assets/seatlogic.js"))),
        "seat.css" => Ok(file(css, include_str!("assets/seat.css"))),
        "owner.js" => Ok(file(js, include_str!("assets/owner.js"))),
        "owner.css" => Ok(file(css, include_str!("assets/owner.css"))),
        _ => Err(ApiError::not_found("No such file")),
    }
}

/// The vendored CodeMirror 5 (MIT), for the browser seat
#[utoipa::path(get, path = "/assets/codemirror/{file}", tag = "seats",
    params(("file" = String, Path, description = "codemirror.js, codemirror.css, python.js or haskell.js")),
    responses(
        (status = 200, description = "The file", content_type = "text/plain", body = String),
        (status = 404, description = "No such file", body = ErrorBody),
    ))]
pub async fn codemirror(Path(name): Path<String>) -> Result<Response, ApiError> {
    let js = "text/javascript; charset=utf-8";
    match name.as_str() {
        "codemirror.js" => Ok(file(js, include_str!("assets/vendor/codemirror/lib/codemirror.js"))),
        "codemirror.css" => {
            Ok(file("text/css; charset=utf-8", include_str!("assets/vendor/codemirror/lib/codemirror.css")))
        }
        "python.js" => Ok(file(js, include_str!("assets/vendor/codemirror/mode/python/python.js"))),
        "haskell.js" => Ok(file(js, include_str!("assets/vendor/codemirror/mode/haskell/haskell.js"))),
        _ => Err(ApiError::not_found("No such file")),
    }
}
