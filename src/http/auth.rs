//! Who is asking. [`AdminToken`] admits only requests that carry the hub's admin token
//! (`Authorization: Bearer <token>`, the scheme in any case, compared as digests in constant
//! time) and refuses the rest with a sentence saying why; `Option<AdminToken>` is for pages
//! that show the admin more and everyone else less (a missing or wrong token there is just
//! "not the admin"). Wrong tokens are limited per address by the hub's password gate, like
//! wrong session passwords, which [`check_password`] checks (and [`owner_or_admin`] for the
//! owner's switches: the admin, or whoever knows the session's password).

use super::client::ClientIp;
use super::error::{no_session, ApiError};
use crate::hub::Hub;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

/// The name of the security scheme in the OpenAPI document.
pub const SCHEME: &str = "bearer";

const DISABLED: &str = "Admin endpoints are disabled: set TROOP_HUB_ADMIN_TOKEN or admin_token_file in hub.yaml";
const MISSING: &str = "This endpoint needs 'Authorization: Bearer <admin token>'";
const WRONG: &str = "Wrong admin token";

/// Proof that the request carries the admin token.
#[derive(Debug, Clone, Copy)]
pub struct AdminToken;

/// The token in `Authorization: Bearer <token>` (the scheme in any case), if any.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

impl AdminToken {
    /// 403 when no token is configured, 401 when none is presented, 429 when `ip` sent too
    /// many wrong ones, 403 when it is wrong.
    fn check(hub: &Hub, headers: &HeaderMap, ip: IpAddr) -> Result<AdminToken, ApiError> {
        if !hub.has_admin_token() {
            return Err(ApiError::new(StatusCode::FORBIDDEN, DISABLED));
        }
        let presented = presented(headers).ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, MISSING))?;
        let charge = hub.gate.take_admin(ip)?;
        match hub.check_admin_token(presented) {
            Some(true) => Ok(AdminToken),
            Some(false) => {
                charge.wrong();
                Err(ApiError::new(StatusCode::FORBIDDEN, WRONG))
            }
            None => Err(ApiError::new(StatusCode::FORBIDDEN, DISABLED)),
        }
    }

    async fn from_parts(parts: &mut Parts, hub: &Arc<Hub>) -> Result<AdminToken, ApiError> {
        let Ok(ClientIp(ip)) = ClientIp::from_request_parts(parts, hub).await;
        AdminToken::check(hub, &parts.headers, ip)
    }
}

impl FromRequestParts<Arc<Hub>> for AdminToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, hub: &Arc<Hub>) -> Result<Self, ApiError> {
        AdminToken::from_parts(parts, hub).await
    }
}

impl OptionalFromRequestParts<Arc<Hub>> for AdminToken {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, hub: &Arc<Hub>) -> Result<Option<Self>, Infallible> {
        Ok(AdminToken::from_parts(parts, hub).await.ok())
    }
}

/// The owner's switches: the admin passes, anyone else must send the session's password
/// (checked through the gate; 400 without one).
pub(super) async fn owner_or_admin(
    hub: &Hub,
    name: &str,
    ip: IpAddr,
    admin: bool,
    password: Option<&SecretString>,
) -> Result<(), ApiError> {
    if admin {
        return Ok(());
    }
    let password =
        password.ok_or_else(|| ApiError::bad_request("Send the session's \"password\" (or the admin token)"))?;
    check_password(hub, name, ip, password).await
}

/// Checks a session password through the hub's gate: 429, 403 or 404 when it fails.
pub(super) async fn check_password(hub: &Hub, name: &str, ip: IpAddr, password: &SecretString) -> Result<(), ApiError> {
    // Paid for before it is checked (so a burst cannot slip through), kept only when wrong.
    let charge = hub.gate.take(ip, name)?;
    match hub.check_session_password(name, password.expose_secret()).await {
        Some(true) => Ok(()),
        Some(false) => {
            charge.wrong();
            Err(ApiError::new(StatusCode::FORBIDDEN, format!("Wrong password for session '{name}'")))
        }
        None => Err(no_session(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::runtime::DockerRuntime;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn hub(token: Option<&str>) -> Arc<Hub> {
        let hub = Hub::new(Config::default(), Arc::new(DockerRuntime::new(Config::default())));
        hub.set_admin_token(token.map(Into::into));
        hub
    }

    fn check_from(hub: &Hub, authorization: Option<&str>, ip: &str) -> Result<(), (StatusCode, String)> {
        let mut headers = HeaderMap::new();
        if let Some(v) = authorization.and_then(|v| v.parse().ok()) {
            headers.insert(header::AUTHORIZATION, v);
        }
        let ip = ip.parse().unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        AdminToken::check(hub, &headers, ip).map(|_| ()).map_err(|e| (e.status(), e.message().to_string()))
    }

    fn check(hub: &Hub, authorization: Option<&str>) -> Result<(), (StatusCode, String)> {
        check_from(hub, authorization, "192.0.2.1")
    }

    #[tokio::test]
    async fn missing_wrong_right_and_disabled() {
        let with = hub(Some(TOKEN));
        assert_eq!(check(&with, None), Err((StatusCode::UNAUTHORIZED, MISSING.into())));
        assert_eq!(check(&with, Some(&format!("Basic {TOKEN}"))), Err((StatusCode::UNAUTHORIZED, MISSING.into())));
        assert_eq!(check(&with, Some("Bearer nope")), Err((StatusCode::FORBIDDEN, WRONG.into())));
        assert_eq!(check(&with, Some(&format!("Bearer {TOKEN}"))), Ok(()));
        let without = hub(None);
        assert_eq!(check(&without, Some(&format!("Bearer {TOKEN}"))), Err((StatusCode::FORBIDDEN, DISABLED.into())));
        assert_eq!(check(&without, None), Err((StatusCode::FORBIDDEN, DISABLED.into())));
    }

    #[tokio::test]
    async fn the_scheme_is_read_in_any_case() {
        let with = hub(Some(TOKEN));
        assert_eq!(check(&with, Some(&format!("bearer {TOKEN}"))), Ok(()));
        assert_eq!(check(&with, Some(&format!("BEARER  {TOKEN} "))), Ok(()));
    }

    #[tokio::test]
    async fn wrong_tokens_are_limited_per_address_and_right_ones_cost_nothing() {
        let with = hub(Some(TOKEN));
        for _ in 0..100 {
            assert_eq!(check_from(&with, Some(&format!("Bearer {TOKEN}")), "192.0.2.9"), Ok(()));
        }
        for _ in 0..10 {
            assert_eq!(
                check_from(&with, Some("Bearer guess"), "192.0.2.9").map_err(|e| e.0),
                Err(StatusCode::FORBIDDEN)
            );
        }
        let limited = check_from(&with, Some(&format!("Bearer {TOKEN}")), "192.0.2.9");
        assert_eq!(limited.map_err(|e| e.0), Err(StatusCode::TOO_MANY_REQUESTS), "even the right token waits");
        assert_eq!(check_from(&with, Some(&format!("Bearer {TOKEN}")), "192.0.2.10"), Ok(()), "other addresses do not");
    }
}
