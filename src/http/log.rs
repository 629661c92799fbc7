//! The request log: one line per HTTP request at info level, with its method, its path (never
//! the query string), the answer's status and the latency. Nothing from the headers or the body
//! is logged (no Authorization, no token, no password).

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use std::time::Duration;
use tower_http::trace::TraceLayer;
use tracing::Span;

/// `router` with every request logged.
pub fn add(router: Router) -> Router {
    router.layer(
        TraceLayer::new_for_http()
            .make_span_with(span)
            .on_request(())
            .on_response(line)
            .on_body_chunk(())
            .on_eos(())
            // 5xx answers are logged by `line` like any other: one line per request.
            .on_failure(()),
    )
}

/// The request's span: its method and path, nothing else.
fn span(req: &Request<Body>) -> Span {
    tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
}

/// The line, once the answer's head is ready.
fn line(resp: &Response<Body>, latency: Duration, _span: &Span) {
    tracing::info!(status = resp.status().as_u16(), latency_ms = latency.as_secs_f64() * 1000.0, "request");
}
