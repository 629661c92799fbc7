//! [`JsonBody`]: a request body parsed as JSON into a typed request, whatever its
//! Content-Type (`curl -d` sends form encoding, and the API has always taken that), with every
//! rejection an [`ApiError`]: a JSON 400 whose sentence says what is wrong.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::Json;
use serde::de::DeserializeOwned;

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
        let bytes = Bytes::from_request(req, state).await?;
        let Json(value) = Json::<T>::from_bytes(&bytes)?;
        Ok(JsonBody(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

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
    async fn any_content_type_and_rejections_are_json_400s_with_a_reason() {
        assert!(parse(r#"{"name":"x"}"#, "application/x-www-form-urlencoded").await.is_ok());
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
