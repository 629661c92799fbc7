//! The OpenAPI document, generated: its paths and schemas come from the handlers'
//! `#[utoipa::path]` attributes and the request and response types as the router collects them
//! (`routes!` in `mod.rs`); this file adds the title, the bearer security scheme, and serves it
//! at `GET /api/v1/openapi.json`.

use super::auth::SCHEME;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi;
use utoipa::Modify;

/// What the router's paths are added to.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "troop-hub", description = "Troop live-coding sessions, one container each."),
    modifiers(&BearerScheme),
    tags(
        (name = "sessions", description = "Start, find, list and end sessions"),
        (name = "audience", description = "Watch a session live in a browser, read-only"),
        (name = "seats", description = "Play in a session from a browser, beside Troop clients"),
        (name = "moderation", description = "The session owner removing a performer, locking the session"),
        (name = "links", description = "Share links: a session's view or a past performance without the password"),
        (name = "archive", description = "Past sessions' code and timelines"),
        (name = "admin", description = "For the hub's operator (admin token)"),
        (name = "monitoring", description = "Health, readiness, metrics and the status page"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

/// The admin token, as `Authorization: Bearer <token>`.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("The hub's admin token (TROOP_HUB_ADMIN_TOKEN or admin_token_file)"))
            .build();
        components.add_security_scheme(SCHEME, SecurityScheme::Http(scheme));
    }
}

/// The document of every route the router serves.
pub fn document() -> OpenApi {
    super::api().split_for_parts().1
}

/// The document as JSON, made once.
fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document().to_json().unwrap_or_else(|e| {
            tracing::error!(error = %e, "the OpenAPI document does not serialize");
            String::from("{}")
        })
    })
}

/// This document
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI document of this API", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document_json()).into_response()
}
