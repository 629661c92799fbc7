//! A past performance to keep outside the hub: `GET /api/v1/archive/{id}/replay.html`, one
//! self-contained HTML file (the replay player, its styles and the whole timeline inside, no
//! network needed) that plays from disk in any browser, and `.../evaluations.txt`, every
//! evaluation with its time, author and code. Proved like reading the archive.

use super::archive::{archive, blocking, date, prove, Proof};
use super::error::{ApiError, ErrorBody};
use super::grants::Grants;
use crate::archive::Summary;
use crate::audience::LiveMessage;
use crate::hub::Hub;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// Everything one performance's files are made of.
struct Kept {
    summary: Summary,
    code: Option<String>,
    timeline: String,
}

/// Files built at once, at most: each holds its performance a few times over in memory.
static BUILDING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

async fn kept(hub: &Hub, grants: &Grants, id: String, proof: Proof) -> Result<Kept, ApiError> {
    let archive = archive(hub)?;
    prove(hub, grants, &archive, &id, proof).await?;
    let found = blocking(move || {
        let Some(summary) = archive.summary(&id)? else { return Ok(None) };
        let code = archive.code(&id)?;
        let mut timeline = String::new();
        archive.timeline(&id, &mut |line| {
            timeline.push_str(line);
            timeline.push('\n');
        })?;
        Ok(Some(Kept { summary, code, timeline }))
    })
    .await?;
    found.ok_or_else(|| ApiError::not_found("No such archived session"))
}

fn attachment(content_type: &'static str, body: String, file: String) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    // Never shown as a page of the hub's: a download only.
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// JSON made safe inside `<script>`: no `<` (so no `</script>` or `<!--`).
fn script_safe(json: &str) -> String {
    json.replace('<', "\\u003c")
}

/// The replay page with its styles and scripts inline and the performance embedded.
fn one_file(kept: &Kept) -> String {
    let data = serde_json::json!({ "summary": kept.summary, "code": kept.code, "timeline": kept.timeline });
    let mut scripts = String::new();
    let _ = writeln!(
        scripts,
        "<script type=\"application/json\" id=\"troop-embedded\">{}</script>",
        script_safe(&data.to_string())
    );
    for js in [include_str!("assets/doc.js"), include_str!("assets/render.js"), include_str!("assets/replay.js")] {
        let _ = writeln!(scripts, "<script>\n{js}</script>");
    }
    let styles =
        [include_str!("assets/palette.css"), include_str!("assets/view.css"), include_str!("assets/replay.css")];
    let mut out = String::new();
    for line in include_str!("assets/replay.html").lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("<link rel=\"stylesheet\"") || trimmed.starts_with("<script src=") {
            continue;
        }
        if trimmed.starts_with("</head>") {
            out.push_str("  <style>\n");
            for css in styles {
                out.push_str(css);
            }
            out.push_str("  </style>\n");
        }
        if trimmed.starts_with("</body>") {
            out.push_str(&scripts);
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `HH:MM:SS` of Unix time `ms` (UTC), and `+H:MM:SS` from `start_ms`.
fn clock(ms: u64, start_ms: u64) -> (String, String) {
    let t = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string();
    let of_day = t.get(11..19).unwrap_or("").to_string();
    let s = ms.saturating_sub(start_ms) / 1000;
    (of_day, format!("+{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60))
}

/// Every evaluation of the timeline, in order, with its time, author and code.
fn evaluations(kept: &Kept) -> String {
    let s = &kept.summary;
    let mut out = format!("# {}, {}: every evaluation, in order (times UTC)\n\n", s.name, date(s.started_ms));
    let mut names: HashMap<i64, String> = HashMap::new();
    let mut count = 0;
    for line in kept.timeline.lines() {
        match serde_json::from_str::<LiveMessage>(line) {
            Ok(LiveMessage::Snapshot(snap)) => names.extend(snap.performers.into_iter().map(|p| (p.id, p.name))),
            Ok(LiveMessage::Join { id, name, .. }) => {
                names.insert(id, name);
            }
            Ok(LiveMessage::Evaluate { time_ms, author, text, .. }) => {
                count += 1;
                let (of_day, offset) = clock(time_ms, s.started_ms);
                let who = names.get(&author).map_or("(unknown)", String::as_str);
                let _ = writeln!(out, "## {of_day} ({offset}) {who}\n{}\n", text.trim_end());
            }
            _ => {}
        }
    }
    if count == 0 {
        out.push_str("(nothing was evaluated)\n");
    }
    out
}

/// A past performance as one HTML file that replays offline
///
/// The replay player with its styles, scripts and the whole timeline inside: open it from
/// disk in any browser, no network needed. Downloaded as `NAME-YYYY-MM-DD.html`.
#[utoipa::path(get, path = "/api/v1/archive/{id}/replay.html", tag = "archive", security((), ("bearer" = [])),
    params(("id" = String, Path), ("X-Archive-Token" = Option<String>, Header, description = "A token from .../access"), ("X-Session-Password" = Option<String>, Header, description = "The session's password (ASCII)")),
    responses(
        (status = 200, description = "The file, as an attachment", content_type = "text/html", body = String),
        (status = 401, description = "No proof, or the token expired", body = ErrorBody),
        (status = 403, description = "Wrong password, or no such archive", body = ErrorBody),
        (status = 404, description = "No such archive (admin), or the hub keeps none", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address or for this session", body = ErrorBody),
    ))]
pub async fn replay_file(
    State(hub): State<Arc<Hub>>,
    Extension(grants): Extension<Arc<Grants>>,
    Path(id): Path<String>,
    proof: Proof,
) -> Result<Response, ApiError> {
    let _turn = BUILDING
        .acquire()
        .await
        .map_err(|_| ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "The hub is stopping"))?;
    let kept = kept(&hub, &grants, id, proof).await?;
    let file = format!("{}-{}.html", kept.summary.name, date(kept.summary.started_ms));
    Ok(attachment("text/html; charset=utf-8", one_file(&kept), file))
}

/// Every evaluation of a past performance, as text
///
/// In order, each with its time of day (UTC), its time into the performance, its author and
/// the code that ran. Downloaded as `NAME-YYYY-MM-DD-evaluations.txt`.
#[utoipa::path(get, path = "/api/v1/archive/{id}/evaluations.txt", tag = "archive", security((), ("bearer" = [])),
    params(("id" = String, Path), ("X-Archive-Token" = Option<String>, Header, description = "A token from .../access"), ("X-Session-Password" = Option<String>, Header, description = "The session's password (ASCII)")),
    responses(
        (status = 200, description = "The evaluations, as an attachment", content_type = "text/plain", body = String),
        (status = 401, description = "No proof, or the token expired", body = ErrorBody),
        (status = 403, description = "Wrong password, or no such archive", body = ErrorBody),
        (status = 404, description = "No such archive (admin), or the hub keeps none", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address or for this session", body = ErrorBody),
    ))]
pub async fn evaluations_file(
    State(hub): State<Arc<Hub>>,
    Extension(grants): Extension<Arc<Grants>>,
    Path(id): Path<String>,
    proof: Proof,
) -> Result<Response, ApiError> {
    let kept = kept(&hub, &grants, id, proof).await?;
    let file = format!("{}-{}-evaluations.txt", kept.summary.name, date(kept.summary.started_ms));
    Ok(attachment("text/plain; charset=utf-8", evaluations(&kept), file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kept(timeline: &[serde_json::Value]) -> Kept {
        let summary: Summary = Summary {
            id: "run".into(),
            name: "jam".into(),
            started_ms: 1_795_989_600_000,
            ended_ms: None,
            end_reason: None,
            performers: vec![],
            operations: 0,
            evaluations: 0,
            bytes: 0,
            truncated: false,
            stats: Default::default(),
        };
        let timeline = timeline.iter().map(|l| format!("{l}\n")).collect();
        Kept { summary, code: Some("x</script><!--".into()), timeline }
    }

    #[test]
    fn evaluations_name_their_author_and_time() {
        let k = kept(&[
            json!({"type": "join", "seq": 1, "time_ms": 1_795_989_600_000u64, "id": 0, "name": "ann", "colour": 0}),
            json!({"type": "evaluate", "seq": 2, "time_ms": 1_795_989_683_000u64, "author": 0, "kind": "block",
                "text": "d1 >> play('x')\n", "start": 1, "end": 2}),
            json!({"type": "evaluate", "seq": 3, "time_ms": 1_795_993_201_000u64, "author": 7, "kind": "string", "text": "Clock.clear()"}),
        ]);
        let text = evaluations(&k);
        assert!(text.starts_with("# jam, 2026-11-29"), "{text}");
        assert!(text.contains("## 22:01:23 (+0:01:23) ann\nd1 >> play('x')\n"), "{text}");
        assert!(text.contains("(+1:00:01) (unknown)\nClock.clear()"), "{text}");
        assert!(evaluations(&kept(&[])).contains("(nothing was evaluated)"));
    }

    #[test]
    fn the_one_file_has_no_outside_reference_and_no_way_out_of_its_data() {
        let k = kept(&[
            json!({"type": "join", "seq": 1, "time_ms": 1, "id": 0, "name": "</script><script>alert(1)//", "colour": 0}),
        ]);
        let html = one_file(&k);
        assert!(!html.contains("src=\"../") && !html.contains("href=\"../assets"), "nothing fetched from the hub");
        let data_start = html.find("id=\"troop-embedded\">").unwrap_or(0);
        let data_end = html[data_start..].find("</script>").map_or(0, |e| e + data_start);
        let data = &html[data_start + "id=\"troop-embedded\">".len()..data_end];
        assert!(!data.contains('<'), "the embedded data cannot close its script");
        let parsed: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
        assert_eq!(parsed["code"], "x</script><!--");
        assert_eq!(html.matches("<script>").count(), 3, "doc.js, render.js and replay.js inline");
        assert!(html.contains("<style>"));
    }
}
