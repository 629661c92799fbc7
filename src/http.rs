//! The HTTP front door (axum): the sessions API under `/api/v1`, its OpenAPI document,
//! health and readiness, Prometheus metrics, and a status page for people. It shares the
//! [`Hub`] with the TCP protocol, so both always agree.

use crate::hub::{Hub, StartRequest};
use crate::wire::validate_name;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Every route: (method, path). The OpenAPI document must list exactly these (tested).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/config"),
    ("get", "/api/v1/nodes"),
    ("get", "/api/v1/sessions"),
    ("post", "/api/v1/sessions"),
    ("get", "/api/v1/sessions/{name}"),
    ("delete", "/api/v1/sessions/{name}"),
];

/// An error answer: a status and `{"error": "..."}`.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

fn err(status: StatusCode, msg: impl Into<String>) -> ApiError {
    ApiError(status, msg.into())
}

/// The HTTP application on a hub.
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(|| async { Json(openapi()) }))
        .route("/api/v1/config", get(get_config))
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/sessions", get(list_sessions).post(create_session))
        .route("/api/v1/sessions/{name}", get(get_session).delete(delete_session))
        .fallback(|| async { err(StatusCode::NOT_FOUND, "No such endpoint; see /api/v1/openapi.json") })
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(hub)
}

/// Open HTTP connections at most; more are closed at once.
pub const MAX_CONNECTIONS: usize = 256;
/// A client must send its request headers within this (slowloris).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// No connection lives longer than this.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// Serves until the hub begins shutting down. Connections are capped, must send their headers
/// within [`HEADER_TIMEOUT`], and live at most [`CONNECTION_LIFETIME`].
pub async fn serve(listener: tokio::net::TcpListener, hub: Arc<Hub>) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;
    let app = router(hub.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let shutdown = hub.shutdown_token();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    drop(stream);
                    continue;
                };
                let service = TowerToHyperService::new(app.clone());
                conns.spawn(async move {
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
                    drop(slot);
                });
            }
            Some(_) = conns.join_next() => {}
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(2), async { while conns.join_next().await.is_some() {} }).await;
    Ok(())
}

/// Admin = `Authorization: Bearer <token>`, compared in constant time.
fn require_admin(hub: &Hub, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match (hub.check_admin_token(presented.unwrap_or("")), presented) {
        (None, _) => Err(err(
            StatusCode::FORBIDDEN,
            "Admin endpoints are disabled: set TROOP_HUB_ADMIN_TOKEN or admin_token_file in hub.yaml",
        )),
        (Some(_), None) => {
            Err(err(StatusCode::UNAUTHORIZED, "This endpoint needs 'Authorization: Bearer <admin token>'"))
        }
        (Some(false), Some(_)) => Err(err(StatusCode::FORBIDDEN, "Wrong admin token")),
        (Some(true), Some(_)) => Ok(()),
    }
}

/// The placement table: each node, its public host, whether it takes new sessions, its load.
async fn list_nodes(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Result<Response, ApiError> {
    require_admin(&hub, &headers)?;
    Ok(Json(json!({ "nodes": hub.nodes() })).into_response())
}

/// Ready when the engine answers and the image is there. The engine's own words go to the
/// log and to the admin; anyone else gets the reason in the hub's words.
async fn readyz(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    match hub.runtime().check().await {
        Ok(()) => Json(json!({"status": "ready", "warnings": hub.warnings()})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            let why = if is_admin(&hub, &headers) { e.to_string() } else { public_reason(&e).to_string() };
            err(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")).into_response()
        }
    }
}

/// A runtime error as callers without the admin token see it: no engine text, no names.
fn public_reason(e: &crate::runtime::RuntimeError) -> &'static str {
    use crate::runtime::RuntimeError as R;
    match e {
        R::Unreachable(_) => "the hub cannot reach its container engine",
        R::ImageMissing(_) => "the session image is missing on the container engine",
        _ => "the container engine is not ready for sessions",
    }
}

/// True when the request carries the right admin token.
fn is_admin(hub: &Hub, headers: &HeaderMap) -> bool {
    require_admin(hub, headers).is_ok()
}

async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    let text = hub.metrics.render(&hub.gauges());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

async fn get_config(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require_admin(&hub, &headers)?;
    Ok(Json(hub.config().to_json()))
}

async fn list_sessions(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    if !hub.config().public_listing {
        require_admin(&hub, &headers)?;
    }
    Ok(Json(json!({ "sessions": hub.list() })))
}

async fn get_session(State(hub): State<Arc<Hub>>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    validate_name(&name).map_err(|e| err(StatusCode::BAD_REQUEST, e.to_string()))?;
    let found = hub.query(&name);
    hub.metrics.request("http_query", if found.is_some() { "ok" } else { "error" });
    match found {
        Some((host, port)) => Ok(Json(json!({ "name": name, "host": host, "port": port }))),
        None => Err(err(StatusCode::NOT_FOUND, format!("No session named '{name}'"))),
    }
}

/// A ttl as a duration string ("30m") or a number of seconds.
fn parse_ttl(v: Option<&Value>, default: Duration, max: Duration) -> Result<Duration, ApiError> {
    let ttl = match v {
        None | Some(Value::Null) => default,
        Some(Value::Number(n)) => {
            let secs =
                n.as_u64().ok_or_else(|| err(StatusCode::BAD_REQUEST, "ttl must be a positive number of seconds"))?;
            Duration::from_secs(secs)
        }
        Some(Value::String(s)) => humantime::parse_duration(s)
            .map_err(|_| err(StatusCode::BAD_REQUEST, format!("ttl '{s}' is not a duration like 30m")))?,
        Some(_) => return Err(err(StatusCode::BAD_REQUEST, "ttl must be a duration like \"30m\" or seconds")),
    };
    if ttl.is_zero() || ttl > max {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!("ttl must be between 1s and {} (api_session_max_ttl)", humantime::format_duration(max)),
        ));
    }
    Ok(ttl)
}

async fn create_session(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&hub, &headers)?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|_| err(StatusCode::BAD_REQUEST, "The body must be JSON: {\"name\", \"password\", \"ttl\"}"))?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| err(StatusCode::BAD_REQUEST, "Request has no name"))?
        .to_string();
    validate_name(&name).map_err(|e| err(StatusCode::BAD_REQUEST, e.to_string()))?;
    let password = match v.get("password") {
        Some(Value::String(p)) => p.clone(),
        None | Some(Value::Null) => return Err(err(StatusCode::BAD_REQUEST, "Request has no password")),
        Some(_) => return Err(err(StatusCode::BAD_REQUEST, "password must be a string")),
    };
    let config = hub.config();
    let ttl = parse_ttl(v.get("ttl"), config.api_session_ttl, config.api_session_max_ttl)?;
    let req = StartRequest { name, password: password.into(), daemon: true, peer: None, ttl: Some(ttl) };
    // (The hub runs the start on its own task: a client that hangs up does not cancel it.)
    let started = hub.start_session(req).await;
    match started {
        Ok(owned) => Ok((
            StatusCode::CREATED,
            Json(json!({
                "name": owned.name, "host": owned.host, "port": owned.port, "ttl_seconds": ttl.as_secs(),
            })),
        )),
        Err(e) => {
            use crate::hub::HubError as H;
            use crate::registry::RegistryError as R;
            let status = match &e {
                H::Registry(R::NameTaken) => StatusCode::CONFLICT,
                H::Registry(_) | H::ImageMissing(_) | H::EngineDown | H::StartFailed(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                H::DaemonNotTrusted => StatusCode::FORBIDDEN,
            };
            Err(err(status, e.to_string()))
        }
    }
}

async fn delete_session(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&hub, &headers)?;
    validate_name(&name).map_err(|e| err(StatusCode::BAD_REQUEST, e.to_string()))?;
    if hub.kill(&name).await {
        hub.metrics.request("http_delete", "ok");
        Ok(StatusCode::NO_CONTENT)
    } else {
        hub.metrics.request("http_delete", "error");
        Err(err(StatusCode::NOT_FOUND, format!("No session named '{name}'")))
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

async fn status_page(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Html<String> {
    let config = hub.config();
    let host = escape(hub.public_host());
    let port = config.listen.port();
    let gauges = hub.gauges();
    // Names and addresses only for the admin, or for everyone with `public_listing`.
    let listed = config.public_listing || is_admin(&hub, &headers);
    let sessions = if listed { hub.list() } else { Vec::new() };
    let mut rows = String::new();
    for s in &sessions {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}:{}</td><td>{}</td><td>{} min</td></tr>\n",
            escape(&s.name),
            escape(&s.host),
            s.port,
            s.state,
            s.age_seconds / 60
        ));
    }
    if sessions.is_empty() {
        rows.push_str("<tr><td colspan=\"4\">No sessions running.</td></tr>\n");
    }
    let table = if listed {
        format!(
            "<table><thead><tr><th>Name</th><th>Address</th><th>State</th><th>Age</th></tr></thead>\n<tbody>\n{rows}</tbody></table>"
        )
    } else {
        "<p>Sessions are not listed here: join one by the name its owner gave you.</p>".to_string()
    };
    let free = gauges.cap.saturating_sub(gauges.running).min(gauges.free_ports);
    let nodes = hub.nodes();
    let machines = if nodes.len() > 1 {
        format!(" Sessions run on {} of {} machines.", gauges.nodes_usable, nodes.len())
    } else {
        String::new()
    };
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="10">
<title>Troop hub at {host}</title>
<style>body{{font-family:sans-serif;max-width:40rem;margin:1rem auto;padding:0 1rem;line-height:1.4}}
code{{background:#eee;padding:.1rem .3rem;word-break:break-all}}table{{border-collapse:collapse;width:100%}}
td,th{{border-bottom:1px solid #ccc;padding:.3rem;text-align:left}}</style></head>
<body>
<h1>Troop hub at {host}:{port}</h1>
<p>Start a session with Troop 0.10.3: <code>python run-server.py --hub NAME@{host}:{port}</code></p>
<p>Join it: <code>python run-client.py --hub NAME@{host}:{port}</code></p>
<h2>Sessions</h2>
<p>{running} running of {cap}; {free} free slots.{machines}</p>
{table}
<p><small>This page refreshes every 10 seconds.</small></p>
</body></html>
"#,
        running = gauges.running,
        cap = gauges.cap,
    ))
}

/// The OpenAPI 3 document of this API.
pub fn openapi() -> Value {
    let error = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let admin = json!([{"bearer": []}]);
    let name_param = json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}}]);
    json!({
        "openapi": "3.0.3",
        "info": {"title": "troop-hub", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Troop live-coding sessions, one container each."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "Address": {"type": "object", "properties": {
                    "name": {"type": "string"}, "host": {"type": "string"}, "port": {"type": "integer"}}},
                "Session": {"type": "object", "properties": {
                    "name": {"type": "string"}, "id": {"type": "string"}, "host": {"type": "string"},
                    "port": {"type": "integer"}, "state": {"type": "string", "enum": ["starting", "running"]},
                    "created": {"type": "integer"}, "age_seconds": {"type": "integer"},
                    "owner_connected": {"type": "boolean"}, "daemon": {"type": "boolean"}, "node": {"type": "string"},
                    "container": {"type": "string", "nullable": true}}},
                "Node": {"type": "object", "properties": {
                    "id": {"type": "string"}, "host": {"type": "string"}, "usable": {"type": "boolean"},
                    "sessions": {"type": "integer"}, "free_ports": {"type": "integer"}}},
                "NewSession": {"type": "object", "required": ["name", "password"], "properties": {
                    "name": {"type": "string"}, "password": {"type": "string"},
                    "ttl": {"oneOf": [{"type": "string", "example": "30m"}, {"type": "integer"}]}}}
            }
        },
        "paths": {
            "/": {"get": {"summary": "Status page (HTML)", "responses": {"200": {"description": "HTML"}}}},
            "/healthz": {"get": {"summary": "The process is up", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Docker reachable and the session image present",
                "responses": {"200": {"description": "ready"}, "503": error}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}},
            "/api/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
            "/api/v1/config": {"get": {"summary": "The running configuration (secrets masked)", "security": admin,
                "responses": {"200": {"description": "config"}, "401": error, "403": error}}},
            "/api/v1/nodes": {"get": {"summary": "Where sessions can run: each node's host, usability and load", "security": admin,
                "responses": {"200": {"description": "nodes", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"nodes": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}}}}}},
                    "401": error, "403": error}}},
            "/api/v1/sessions": {
                "get": {"summary": "All sessions (admin unless public_listing)", "security": admin,
                    "responses": {"200": {"description": "sessions", "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"sessions": {"type": "array", "items": {"$ref": "#/components/schemas/Session"}}}}}}},
                        "401": error, "403": error}},
                "post": {"summary": "Start a session owned by the API; it lives until DELETE or its ttl", "security": admin,
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewSession"}}}},
                    "responses": {"201": {"description": "started", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Address"}}}},
                        "400": error, "401": error, "403": error, "409": error, "503": error}}
            },
            "/api/v1/sessions/{name}": {
                "parameters": name_param,
                "get": {"summary": "A session's public address (like the hub protocol's query)",
                    "responses": {"200": {"description": "address", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Address"}}}},
                        "400": error, "404": error}},
                "delete": {"summary": "End a session; its owner is told", "security": admin,
                    "responses": {"204": {"description": "ended"}, "400": error, "401": error, "403": error, "404": error}}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc = openapi();
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in ["get", "post", "put", "delete", "patch"] {
                if item.get(method).is_some() {
                    documented.push((method.into(), path.clone()));
                }
            }
        }
        let mut routes: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        documented.sort();
        routes.sort();
        assert_eq!(documented, routes);
    }
}
