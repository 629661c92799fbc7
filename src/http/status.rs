//! For people and monitors: the status page, /healthz, /readyz and Prometheus /metrics.
//! The status page lists sessions and /readyz gives the engine's own words only to the admin
//! (or, for the page, to everyone with `public_listing`).

use super::auth::AdminToken;
use super::error::{ApiError, ErrorBody};
use crate::hub::{Hub, LobbyEntry, SessionInfo};
use crate::runtime::RuntimeError;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// The process is up.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Ready for sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    #[schema(example = "ready")]
    pub status: &'static str,
    /// Things the operator should fix that do not stop sessions (e.g. Docker's userland proxy).
    pub warnings: Vec<String>,
}

/// The process is up
#[utoipa::path(get, path = "/healthz", tag = "monitoring", responses((status = 200, description = "ok", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Docker reachable and the session image present
///
/// The engine's own words go to the log and to the admin; anyone else gets the reason in the
/// hub's words.
#[utoipa::path(get, path = "/readyz", tag = "monitoring",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "Not ready, and why", body = ErrorBody),
    ))]
pub async fn readyz(State(hub): State<Arc<Hub>>, admin: Option<AdminToken>) -> Result<Json<Ready>, ApiError> {
    match hub.runtime().check().await {
        Ok(()) => Ok(Json(Ready { status: "ready", warnings: hub.warnings() })),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            let why = if admin.is_some() { e.to_string() } else { public_reason(&e).to_string() };
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")))
        }
    }
}

/// A runtime error as callers without the admin token see it: no engine text, no names.
fn public_reason(e: &RuntimeError) -> &'static str {
    match e {
        RuntimeError::Unreachable(_) => "the hub cannot reach its container engine",
        RuntimeError::ImageMissing(_) => "the session image is missing on the container engine",
        _ => "the container engine is not ready for sessions",
    }
}

/// Prometheus metrics
#[utoipa::path(get, path = "/metrics", tag = "monitoring",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    let text = hub.metrics.render(&hub.gauges());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The sessions as a table, or a sentence when they are not listed.
fn sessions_table(sessions: Option<&[SessionInfo]>) -> String {
    let Some(sessions) = sessions else {
        return "<p>Sessions are not listed here: join one by the name its owner gave you.</p>".to_string();
    };
    let mut rows = String::new();
    for s in sessions {
        let performers: Vec<String> = s.performers.iter().map(|p| escape(&p.name)).collect();
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}:{}</td><td>{}</td><td>{} min</td><td>{}</td></tr>\n",
            escape(&s.name),
            escape(&s.host),
            s.port,
            s.state,
            s.age_seconds / 60,
            performers.join(", ")
        ));
    }
    if sessions.is_empty() {
        rows.push_str("<tr><td colspan=\"5\">No sessions running.</td></tr>\n");
    }
    format!(
        "<table><thead><tr><th>Name</th><th>Address</th><th>State</th><th>Age</th><th>Performers</th></tr></thead>\n<tbody>\n{rows}</tbody></table>"
    )
}

/// The lobby: sessions whose view is public, each with a link to watch it.
fn lobby_list(lobby: &[LobbyEntry]) -> String {
    if lobby.is_empty() {
        return String::new();
    }
    let mut items = String::new();
    for s in lobby {
        let performers = match s.performers {
            1 => "1 performer".to_string(),
            n => format!("{n} performers"),
        };
        // Each one's share of the code and runs, small: "alice 60% · 4 runs".
        let stats: Vec<String> = s
            .stats
            .iter()
            .map(|(who, st)| {
                let runs = if st.evaluations == 1 { "1 run".to_string() } else { format!("{} runs", st.evaluations) };
                format!("{} {:.0}% · {runs}", escape(who), st.share * 100.0)
            })
            .collect();
        let stats = if stats.is_empty() { String::new() } else { format!(" <small>{}</small>", stats.join(", ")) };
        items.push_str(&format!(
            "<li><a href=\"s/{name}\">{name}</a>: {performers}, playing for {age} min (<a href=\"s/{name}/play\">play</a>){stats}</li>\n",
            name = escape(&s.name),
            age = s.age_seconds / 60,
        ));
    }
    format!("<h2>Watch live</h2>\n<ul class=\"lobby\">\n{items}</ul>\n")
}

/// Status page (HTML)
///
/// How to start and join a session, and how full the hub is. Session names and addresses are
/// shown to the admin, or to everyone with `public_listing`.
#[utoipa::path(get, path = "/", tag = "monitoring",
    responses((status = 200, description = "HTML", content_type = "text/html", body = String)))]
pub async fn status_page(State(hub): State<Arc<Hub>>, admin: Option<AdminToken>) -> Html<String> {
    let config = hub.config();
    let host = escape(hub.public_host());
    let port = config.listen.port();
    let gauges = hub.gauges();
    let sessions = (config.public_listing || admin.is_some()).then(|| hub.list());
    let table = sessions_table(sessions.as_deref());
    let lobby = lobby_list(&hub.lobby());
    let archive = if hub.archive().is_some() {
        "<p>Played here before? <a href=\"archive\">Your past sessions</a>: their code to download and \
         a replay, with the session's name and password.</p>\n"
    } else {
        ""
    };
    // Pool members' ports are free for a start: a start takes one (or it gives way).
    let free =
        gauges.cap.saturating_sub(gauges.running).min(gauges.free_ports + gauges.pool.ready + gauges.pool.starting);
    let pool = match gauges.pool.target {
        0 => String::new(),
        _ => format!(
            " {} of {} warm sessions ready: a start takes one at once.",
            gauges.pool.ready.min(free),
            gauges.pool.target
        ),
    };
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
{archive}{lobby}<h2>Sessions</h2>
<p>{running} running of {cap}; {free} free slots.{pool}{machines}</p>
{table}
<p><small>This page refreshes every 10 seconds.</small></p>
</body></html>
"#,
        running = gauges.running,
        cap = gauges.cap,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_escapes_names_and_hides_sessions_when_not_listed() {
        assert!(sessions_table(None).contains("not listed here"));
        assert!(sessions_table(Some(&[])).contains("No sessions running."));
        let s = SessionInfo {
            name: "<b>".into(),
            id: "i".into(),
            host: "h".into(),
            node: "local".into(),
            port: 7,
            state: "running",
            created: 0,
            age_seconds: 120,
            owner_connected: true,
            daemon: false,
            container: None,
            performers: vec![crate::hub::PerformerInfo { id: 0, name: "a<b".into(), since: 0 }],
            last_activity: None,
            operations: 0,
            evaluations: 0,
            seats: 0,
            seats_on: true,
            locked: false,
            stats: None,
        };
        let table = sessions_table(Some(&[s]));
        assert_eq!(lobby_list(&[]), "");
        let stats =
            [("x<y".to_string(), crate::audience::PerformerStats { evaluations: 1, share: 0.6, ..Default::default() })];
        let lobby =
            lobby_list(&[LobbyEntry { name: "a<b".into(), performers: 1, age_seconds: 180, stats: stats.into() }]);
        assert!(
            lobby.contains(
                "<li><a href=\"s/a&lt;b\">a&lt;b</a>: 1 performer, playing for 3 min (<a href=\"s/a&lt;b/play\">play</a>) <small>x&lt;y 60% · 1 run</small></li>"
            ),
            "{lobby}"
        );
        let row = "<tr><td>&lt;b&gt;</td><td>h:7</td><td>running</td><td>2 min</td><td>a&lt;b</td></tr>";
        assert!(table.contains(row), "{table}");
    }
}
