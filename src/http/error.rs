//! Error answers: [`ApiError`] is a status and `{"error": "..."}` ([`ErrorBody`]). A refused
//! session start ([`HubError`]) and a rejected request body become one here, so handlers
//! only use `?`.

use crate::gate::Refused;
use crate::hub::HubError;
use crate::registry::RegistryError;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// What every error answer carries.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// One sentence saying what went wrong, for people.
    pub error: String,
}

/// An error answer: a status and `{"error": "..."}`. A 401 also says `WWW-Authenticate: Bearer`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Seconds after which a refused client may try again (`Retry-After`).
    retry_after: Option<u64>,
}

/// 400 unless `name` is a session name (letters, digits, '.', '_', '-'; at most 64).
pub fn valid_name(name: &str) -> Result<(), ApiError> {
    crate::wire::validate_name(name).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The sentence for a session that is not running.
pub fn no_session_sentence(name: &str) -> String {
    format!("No session named '{name}' is running")
}

/// 404: no session of that name is running.
pub fn no_session(name: &str) -> ApiError {
    ApiError::not_found(no_session_sentence(name))
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), retry_after: None }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(ErrorBody { error: self.message })).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// A password check the gate would not make: 429 (too many wrong ones from this address or
/// for this session) or 503 (the hub is busy hashing), with `Retry-After`.
impl From<Refused> for ApiError {
    fn from(r: Refused) -> ApiError {
        let status = match r {
            Refused::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Refused::Address(_) | Refused::Session(_) => StatusCode::TOO_MANY_REQUESTS,
        };
        ApiError { status, message: r.to_string(), retry_after: Some(r.retry_after()) }
    }
}

/// A refused start: a name in use is a conflict, a full hub or an engine that cannot run it
/// is unavailable (for now), a daemon start from an untrusted address is forbidden.
impl From<HubError> for ApiError {
    fn from(e: HubError) -> ApiError {
        let status = match &e {
            HubError::Registry(RegistryError::NameTaken) => StatusCode::CONFLICT,
            HubError::Registry(_) | HubError::ImageMissing(_) | HubError::EngineDown | HubError::StartFailed(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            HubError::DaemonNotTrusted => StatusCode::FORBIDDEN,
            HubError::Refused(r) => return ApiError::from(*r),
        };
        ApiError::new(status, e.to_string())
    }
}

/// A body that is not JSON, or JSON that does not fit the request: 400 with serde's sentence
/// (which field, what was wrong, where).
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        let cause = |e: &dyn std::error::Error| e.source().map(ToString::to_string);
        match rejection {
            JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(format!(
                "The body must be JSON ({}); see /api/v1/openapi.json",
                cause(&e).unwrap_or_else(|| e.body_text())
            )),
            JsonRejection::JsonDataError(e) => ApiError::bad_request(format!(
                "The body does not fit this request: {}; see /api/v1/openapi.json",
                cause(&e).unwrap_or_else(|| e.body_text())
            )),
            other => ApiError::new(other.status(), other.body_text()),
        }
    }
}

/// A body that could not be read (over the size limit: 413).
impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        ApiError::new(rejection.status(), rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_error_is_json_and_a_401_asks_for_a_bearer_token() {
        let resp = ApiError::new(StatusCode::UNAUTHORIZED, "who are you").into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap_or_default();
        assert_eq!(body, r#"{"error":"who are you"}"#);
        let resp = ApiError::not_found("no").into_response();
        assert!(!resp.headers().contains_key(header::WWW_AUTHENTICATE));
    }

    #[test]
    fn hub_refusals_map_to_statuses() {
        let status = |e: HubError| ApiError::from(e).status();
        assert_eq!(status(HubError::Registry(RegistryError::NameTaken)), StatusCode::CONFLICT);
        assert_eq!(status(HubError::Registry(RegistryError::Full)), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(HubError::Registry(RegistryError::NoPort)), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(HubError::EngineDown), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(HubError::ImageMissing("i".into())), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(HubError::StartFailed("x".into())), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(HubError::DaemonNotTrusted), StatusCode::FORBIDDEN);
        let full = ApiError::from(HubError::Registry(RegistryError::Full));
        assert_eq!(full.message(), "Max number of running Troop instances reached");
    }
}
