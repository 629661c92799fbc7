//! The HTTP front door (axum): the sessions API under `/api/v1`, its generated OpenAPI
//! document, health and readiness, Prometheus metrics, and a status page for people. It shares
//! the [`Hub`] with the TCP protocol, so both always agree.
//!
//! This file assembles the router. Every route is added through utoipa-axum's `routes!`, which
//! puts it in the OpenAPI document as it routes it, so a route cannot be served undocumented;
//! a test fails the build on any other way of adding one in `src/http/`.
//!
//! - `serve.rs`: the accept loop, connection limits, graceful shutdown.
//! - `auth.rs`: the admin token extractor. `error.rs`: error answers. `json.rs`: JSON bodies.
//! - `sessions.rs` + `types.rs`: the `/api/v1` handlers and their JSON types.
//! - `status.rs`: status page, healthz, readyz, metrics. `openapi.rs`: the document.
//! - `log.rs`: one log line per request.
//! - `pages.rs`: the browser pages (`/s/{name}`, `/archive`, `/a/{id}`) and their assets.
//! - `audience.rs`: the live WebSocket and the owner's public switch.
//! - `seat.rs`: the browser seat's WebSocket (a page as a Troop peer) and the owner's switch.
//! - `moderation.rs`: the owner removing a performer and locking a session; `owner.rs`: how
//!   an owner proves it.
//! - `keep.rs`: a past performance as one HTML file that replays offline, and its evaluations.
//! - `links.rs`: share links to a session's view and a past performance's replay.
//! - `archive.rs`: past sessions' code and timelines; `grants.rs`: the tokens a proved password
//!   gives them. `client.rs`: the client's address.

mod archive;
mod audience;
mod auth;
mod client;
mod error;
mod grants;
mod json;
mod keep;
mod links;
mod log;
mod moderation;
mod openapi;
mod owner;
mod pages;
mod seat;
#[cfg(test)]
mod seat_tests;
mod serve;
mod sessions;
mod status;
#[cfg(test)]
mod tests;
mod types;

pub use error::ApiError;
pub use openapi::document as openapi;
pub use serve::{serve, CONNECTION_LIFETIME, DRAIN_TIMEOUT, HEADER_TIMEOUT, MAX_CONNECTIONS, MAX_PER_ADDRESS};

use crate::hub::Hub;
use axum::extract::DefaultBodyLimit;
use axum::Router;
use std::sync::Arc;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Request bodies larger than this are refused (413).
pub const BODY_LIMIT: usize = 16 * 1024;

/// Every route with its documentation. One `routes!` per path (the macro routes all of its
/// handlers at every path it is given).
fn api() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(status::status_page))
        .routes(routes!(status::healthz))
        .routes(routes!(status::readyz))
        .routes(routes!(status::metrics))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(sessions::get_config))
        .routes(routes!(sessions::list_nodes))
        .routes(routes!(sessions::list_sessions, sessions::create_session))
        .routes(routes!(sessions::get_session, sessions::delete_session))
        .routes(routes!(pages::view_page))
        .routes(routes!(pages::archive_page))
        .routes(routes!(pages::replay_page))
        .routes(routes!(pages::seat_page))
        .routes(routes!(pages::owner_page))
        .routes(routes!(pages::codemirror))
        .routes(routes!(pages::asset))
        .routes(routes!(audience::live))
        .routes(routes!(audience::set_audience))
        .routes(routes!(seat::seat))
        .routes(routes!(seat::set_seats))
        .routes(routes!(moderation::remove_performer))
        .routes(routes!(moderation::lock))
        .routes(routes!(links::list_session_links, links::create_session_link))
        .routes(routes!(links::revoke_session_link))
        .routes(routes!(links::list_archive_links, links::create_archive_link))
        .routes(routes!(links::revoke_archive_link))
        .routes(routes!(archive::list, archive::delete_name))
        .routes(routes!(archive::access_name))
        .routes(routes!(archive::access_one))
        .routes(routes!(archive::get_one, archive::delete_one))
        .routes(routes!(archive::code))
        .routes(routes!(archive::timeline))
        .routes(routes!(keep::replay_file))
        .routes(routes!(keep::evaluations_file))
}

/// What every path without a route gets.
async fn no_such_endpoint() -> ApiError {
    ApiError::not_found("No such endpoint; see /api/v1/openapi.json")
}

/// The HTTP application on a hub.
pub fn router(hub: Arc<Hub>) -> Router {
    let (routes, _document) = api().split_for_parts();
    let grants = Arc::new(grants::Grants::default());
    let app = routes
        .fallback(no_such_endpoint)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::Extension(grants))
        .with_state(hub);
    log::add(app)
}
