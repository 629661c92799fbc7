//! Who is asking. [`AdminToken`] admits only requests that carry the hub's admin token
//! (`Authorization: Bearer <token>`, compared in constant time) and refuses the rest with a
//! sentence saying why; `Option<AdminToken>` is for pages that show the admin more and everyone
//! else less (a missing or wrong token there is just "not the admin").

use super::error::ApiError;
use crate::hub::Hub;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use std::convert::Infallible;
use std::sync::Arc;

/// The name of the security scheme in the OpenAPI document.
pub const SCHEME: &str = "bearer";

const DISABLED: &str = "Admin endpoints are disabled: set TROOP_HUB_ADMIN_TOKEN or admin_token_file in hub.yaml";
const MISSING: &str = "This endpoint needs 'Authorization: Bearer <admin token>'";
const WRONG: &str = "Wrong admin token";

/// Proof that the request carries the admin token.
#[derive(Debug, Clone, Copy)]
pub struct AdminToken;

impl AdminToken {
    /// 403 when no token is configured, 401 when none is presented, 403 when it is wrong.
    fn check(hub: &Hub, headers: &HeaderMap) -> Result<AdminToken, ApiError> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match (hub.check_admin_token(presented.unwrap_or("")), presented) {
            (None, _) => Err(ApiError::new(StatusCode::FORBIDDEN, DISABLED)),
            (Some(_), None) => Err(ApiError::new(StatusCode::UNAUTHORIZED, MISSING)),
            (Some(false), Some(_)) => Err(ApiError::new(StatusCode::FORBIDDEN, WRONG)),
            (Some(true), Some(_)) => Ok(AdminToken),
        }
    }
}

impl FromRequestParts<Arc<Hub>> for AdminToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, hub: &Arc<Hub>) -> Result<Self, ApiError> {
        AdminToken::check(hub, &parts.headers)
    }
}

impl OptionalFromRequestParts<Arc<Hub>> for AdminToken {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, hub: &Arc<Hub>) -> Result<Option<Self>, Infallible> {
        Ok(AdminToken::check(hub, &parts.headers).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::runtime::DockerRuntime;

    fn hub(token: Option<&str>) -> Arc<Hub> {
        let hub = Hub::new(Config::default(), Arc::new(DockerRuntime::new(Config::default())));
        hub.set_admin_token(token.map(Into::into));
        hub
    }

    fn check(hub: &Hub, authorization: Option<&str>) -> Result<(), (StatusCode, String)> {
        let mut headers = HeaderMap::new();
        if let Some(v) = authorization.and_then(|v| v.parse().ok()) {
            headers.insert(header::AUTHORIZATION, v);
        }
        AdminToken::check(hub, &headers).map(|_| ()).map_err(|e| (e.status(), e.message().to_string()))
    }

    #[tokio::test]
    async fn missing_wrong_right_and_disabled() {
        let with = hub(Some("s3cret"));
        assert_eq!(check(&with, None), Err((StatusCode::UNAUTHORIZED, MISSING.into())));
        assert_eq!(check(&with, Some("Basic s3cret")), Err((StatusCode::UNAUTHORIZED, MISSING.into())));
        assert_eq!(check(&with, Some("Bearer nope")), Err((StatusCode::FORBIDDEN, WRONG.into())));
        assert_eq!(check(&with, Some("Bearer s3cret")), Ok(()));
        let without = hub(None);
        assert_eq!(check(&without, Some("Bearer s3cret")), Err((StatusCode::FORBIDDEN, DISABLED.into())));
        assert_eq!(check(&without, None), Err((StatusCode::FORBIDDEN, DISABLED.into())));
    }
}
