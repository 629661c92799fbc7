//! The router against its own OpenAPI document: every documented operation is routed, the
//! document holds together as OpenAPI 3, and no route can be added without being documented.

use super::*;
use crate::config::Config;
use crate::runtime::DockerRuntime;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

const TOKEN: &str = "t0ken";
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn app() -> Router {
    let hub = Hub::new(Config::default(), Arc::new(DockerRuntime::new(Config::default())));
    hub.set_admin_token(Some(TOKEN.into()));
    router(hub)
}

async fn call(app: &Router, method: &str, path: &str, body: String) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_default();
    let Ok(resp) = app.clone().oneshot(req).await;
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap_or_default();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn document() -> Value {
    serde_json::to_value(openapi()).unwrap_or_default()
}

/// (method, path) of every operation in the document.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            ops.push((method.to_string(), path.clone()));
        }
    }
    ops
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let (app, doc) = (app(), document());
    let ops = operations(&doc);
    assert_eq!(ops.len(), 40, "{ops:?}");
    for (method, path) in ops {
        let body = if method == "post" { "{}".to_string() } else { String::new() };
        let (status, body) = call(&app, &method.to_uppercase(), &path.replace("{name}", "nobody"), body).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(!body.contains("No such endpoint"), "{method} {path} is routed: {body}");
    }
    let (status, body) = call(&app, "GET", "/nope", String::new()).await;
    assert_eq!((status, body.contains("No such endpoint")), (StatusCode::NOT_FOUND, true));
}

#[tokio::test]
async fn the_served_document_is_the_generated_one_and_bodies_are_limited() {
    let app = app();
    let (status, body) = call(&app, "GET", "/api/v1/openapi.json", String::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap_or_default(), document());
    let big = format!(r#"{{"name":"a","password":"{}"}}"#, "x".repeat(BODY_LIMIT));
    let (status, body) = call(&app, "POST", "/api/v1/sessions", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(serde_json::from_str::<Value>(&body).unwrap_or_default()["error"].is_string(), "{body}");
}

/// Every `$ref` in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            out.extend(map.get("$ref").and_then(Value::as_str));
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn the_document_is_openapi_3_and_holds_together() {
    let doc = document();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    assert_eq!(doc["info"]["title"], "troop-hub");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.contains(&"#/components/schemas/NewSession"), "{found:?}");
    for r in found {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or(r);
        assert!(doc["components"]["schemas"][name].is_object(), "{r} is defined");
    }
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][&method];
        assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()), "{method} {path} has a summary");
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} has responses");
        for requirement in op["security"].as_array().into_iter().flatten() {
            for scheme in requirement.as_object().into_iter().flat_map(|o| o.keys()) {
                assert!(doc["components"]["securitySchemes"][scheme].is_object(), "{method} {path}: {scheme}");
            }
        }
    }
    let admin_only = [("get", "/api/v1/config"), ("get", "/api/v1/nodes"), ("post", "/api/v1/sessions")];
    for (method, path) in admin_only.into_iter().chain([("delete", "/api/v1/sessions/{name}")]) {
        assert_eq!(doc["paths"][path][method]["security"], serde_json::json!([{"bearer": []}]), "{method} {path}");
    }
}

/// The guard against serving an undocumented route: in `src/http/`, routes are added only
/// through `routes!` (`OpenApiRouter::routes`), never by the plain axum calls that add a route,
/// a nested router or a service, and the one fallback is `no_such_endpoint` in mod.rs.
#[test]
fn routes_are_added_only_through_the_routes_macro() {
    let banned: Vec<String> = ["route", "route_service", "nest", "nest_service", "merge", "fallback_service"]
        .iter()
        .map(|m| format!(".{m}("))
        .collect();
    let fallback = format!(".{}(", "fallback");
    let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http")];
    let (mut files, mut fallbacks) = (Vec::new(), Vec::new());
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            // Whitespace removed: calls spaced out or split over lines are caught too.
            let text: String = std::fs::read_to_string(&path).unwrap_or_default().split_whitespace().collect();
            for call in &banned {
                assert!(
                    !text.contains(call.as_str()),
                    "{} adds a route with `{call}`: add it with routes!(...) and #[utoipa::path] so that \
                     the OpenAPI document has it",
                    path.display()
                );
            }
            fallbacks.extend(text.matches(fallback.as_str()).map(|_| path.clone()));
            files.push(path);
        }
    }
    assert!(files.iter().any(|f| f.ends_with("mod.rs")) && files.len() >= 5, "scanned {files:?}");
    assert_eq!(fallbacks.len(), 1, "one fallback (No such endpoint), in mod.rs: {fallbacks:?}");
    assert!(fallbacks[0].ends_with("http/mod.rs"), "{fallbacks:?}");
}

#[tokio::test]
async fn a_bad_body_gets_a_json_400_saying_what_is_wrong() {
    let app = app();
    for (body, says) in [
        ("not json", "The body must be JSON (expected ident at line 1 column 2)"),
        (r#"{"name":"a"}"#, "The body does not fit this request: missing field `password`"),
        (r#"{"name":"a","password":"p","ttl":-5}"#, "ttl: must be a positive number of seconds"),
        (r#"{"name":"a","password":"p","ttl":"soon"}"#, "ttl: 'soon' is not a duration like 30m"),
        (r#"{"name":"bad name","password":"p"}"#, "Invalid session name"),
        (r#"{"name":"a","password":"p","ttl":"100d"}"#, "ttl must be between 1s and"),
    ] {
        let (status, answer) = call(&app, "POST", "/api/v1/sessions", body.to_string()).await;
        let error = serde_json::from_str::<Value>(&answer).unwrap_or_default()["error"].as_str().map(String::from);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(error.is_some_and(|e| e.contains(says)), "{body}: {answer}");
    }
}

#[test]
fn the_archive_listing_takes_its_name_from_the_query_and_its_password_from_a_header() {
    let doc = document();
    let params = doc["paths"]["/api/v1/archive"]["get"]["parameters"].as_array().cloned().unwrap_or_default();
    let place = |name: &str| params.iter().find(|p| p["name"] == name).map(|p| p["in"].clone());
    assert_eq!(place("name"), Some(Value::from("query")), "{params:?}");
    assert_eq!(place("X-Session-Password"), Some(Value::from("header")), "never in a URL");
}

#[tokio::test]
async fn no_page_can_be_framed_by_another_site() {
    let app = app();
    for path in ["/s/some-session", "/assets/view.js"] {
        let req = Request::builder().uri(path).body(Body::empty()).unwrap_or_default();
        let Ok(resp) = app.clone().oneshot(req).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(header(header::CONTENT_SECURITY_POLICY).contains("frame-ancestors 'none'"), "{path}");
        assert_eq!(header(header::X_FRAME_OPTIONS), "DENY", "{path}");
    }
}
