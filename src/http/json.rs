//! [`JsonBody`]: a request body parsed as JSON into a typed request, with every rejection an
//! [`ApiError`] whose sentence says what is wrong. The body must say it is JSON
//! (`Content-Type: application/json`, or a `+json` type): another site can make its visitors'
//! browsers send a form or plain text to the hub unasked, but not JSON, so a page elsewhere
//! cannot use them to guess session passwords or switch a session's view (415 otherwise).

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::de::DeserializeOwned;

const NOT_JSON: &str = "The body must be JSON, sent with 'Content-Type: application/json'";

/// Whether the request says its body is JSON (`application/json`, `application/x+json`,
/// any parameters).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A typed JSON request body (bounded by the router's body limit).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, NOT_JSON));
        }
        let bytes = Bytes::from_request(req, state).await?;
        let Json(value) = Json::<T>::from_bytes(&bytes)?;
        Ok(JsonBody(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Pair {
        #[allow(dead_code)]
        name: String,
    }

    async fn parse(body: &'static str, content_type: &str) -> Result<JsonBody<Pair>, ApiError> {
        let req = Request::builder()
            .header("content-type", content_type)
            .body(axum::body::Body::from(body))
            .unwrap_or_default();
        JsonBody::<Pair>::from_request(req, &()).await
    }

    #[tokio::test]
    async fn only_json_bodies_and_rejections_are_json_errors_with_a_reason() {
        assert!(parse(r#"{"name":"x"}"#, "application/json").await.is_ok());
        assert!(parse(r#"{"name":"x"}"#, "Application/JSON; charset=utf-8").await.is_ok());
        assert!(parse(r#"{"name":"x"}"#, "application/merge-patch+json").await.is_ok());
        // What a form or a fetch from another site can send without asking first.
        for cross_site in ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", ""] {
            let refused =
                parse(r#"{"name":"x"}"#, cross_site).await.err().map(|e| (e.status(), e.message().to_string()));
            assert_eq!(refused, Some((StatusCode::UNSUPPORTED_MEDIA_TYPE, NOT_JSON.to_string())), "{cross_site}");
        }
        let syntax = parse("not json", "application/json").await.err().map(|e| (e.status(), e.message().to_string()));
        let (status, message) = syntax.unwrap_or_default();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.starts_with("The body must be JSON (expected ident at line 1 column 2)"), "{message}");
        let data = parse("{}", "application/json").await.err().map(|e| (e.status(), e.message().to_string()));
        let (status, message) = data.unwrap_or_default();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.contains("missing field `name`"), "{message}");
    }
}
