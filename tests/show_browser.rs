//! The show in a real browser (Debian's headless chromium over the DevTools Protocol) against
//! a real hub on real Docker: the stage view follows the last evaluation, readable at
//! 1920x1080 on a transparent background; a share link opens a password-protected view, an
//! expired or revoked one does not; a performance downloaded as one HTML file replays offline
//! from `file://` to the archived code.
//!
//! Without chromium these tests fail (they never skip): `apt-get install chromium`
//! (scripts/test installs it). The browser harness is tests/common/browser.rs.

mod common;

use common::browser::{assert_clean, js, Page, FRIDAY_JAM, HEIGHT, ONE_BROWSER, WIDTH};
use common::{http, owner, performer, request, TestHub, T};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use troop_server::client::TroopClient;
use troop_server::message::Body;

const TOKEN: &str = "show-admin-token-0d9e8f7a6b5c4d3e2f1a";

/// What a failed wait shows of the page.
const PAGE_STATE: &str = r##"(() => {
  const $ = id => document.getElementById(id);
  const v = window.troopView, r = window.troopReplay;
  return {
    url: location.href,
    state: document.body && document.body.dataset.state,
    message: $("message") && !$("message").hidden && $("message").textContent,
    passwordShown: $("password-form") && !$("password-form").hidden,
    passwordError: $("password-error") && $("password-error").textContent,
    view: v && { state: v.state, document: v.document, evaluations: v.evaluations, stage: v.stage },
    replay: r && { state: r.state, document: r.document, code: r.code, stage: r.stage },
    scrollTop: $("editor") && $("editor").scrollTop,
  };
})()"##;

/// Reads until the server has acknowledged the client's own edits.
async fn synced(c: &mut TroopClient) {
    while !c.is_synchronized() {
        c.recv(T).await.expect("the server acknowledges the edit");
    }
}

/// Where line `n` (1-based) of the code is drawn: its middle and the viewport's height.
fn line_middle(n: usize) -> String {
    format!(
        r##"(() => {{
          const l = document.querySelectorAll("#doc .line")[{}];
          if (!l) return null;
          const r = l.getBoundingClientRect();
          return (r.top + r.bottom) / 2 / window.innerHeight;
        }})()"##,
        n - 1
    )
}

#[tokio::test]
async fn the_stage_view_follows_the_last_evaluation_readably_on_a_transparent_background() {
    let _one = ONE_BROWSER.lock().await;
    let mut page = Page::launch(PAGE_STATE).await;
    let hub = TestHub::new("audience: public").start().await;
    let o = owner(&hub, "stage", "pw").await;
    let mut alice = performer(&o, "alice", "pw").await;
    let code: String = (1..=80).map(|i| format!("d{i} >> play('x-o-') # line {i}\n")).collect();
    alice.insert(0, &code).await.expect("alice types");
    synced(&mut alice).await;
    page.open(&format!("http://{}/s/stage?stage&bg=transparent", hub.http)).await;
    let begin = Instant::now();
    page.wait_for(&format!("window.troopView && troopView.document === {}", js(&code)), begin + T, "the code shows")
        .await;
    assert_eq!(page.eval("troopView.stage").await, json!(true));
    page.wait_for("document.querySelector('#performers li')", begin + T, "the names are drawn").await;

    // Readable on a projector: large code, no chrome, names in colour, see-through.
    let look = page
        .eval(
            r##"(() => {
              const cs = (e, p) => getComputedStyle(e, p);
              const line = document.querySelector("#doc .line");
              const shown = id => { const e = document.getElementById(id); return !!e && e.getClientRects().length > 0; };
              const name = document.querySelector("#performers li");
              return { font: parseFloat(cs(document.getElementById("doc")).fontSize),
                       html: cs(document.documentElement).backgroundColor, body: cs(document.body).backgroundColor,
                       stage: cs(document.getElementById("stage")).backgroundColor,
                       chrome: ["brand", "session", "status", "play", "fullscreen"].filter(shown),
                       gutter: cs(line, "::before").display,
                       name: name && name.firstChild.textContent, nameColour: name && cs(name).color,
                       width: window.innerWidth, height: window.innerHeight };
            })()"##,
        )
        .await;
    assert_eq!((look["width"].as_u64(), look["height"].as_u64()), (Some(u64::from(WIDTH)), Some(u64::from(HEIGHT))));
    assert!(look["font"].as_f64().unwrap_or(0.0) >= 24.0, "code large enough for a projector: {look}");
    for part in ["html", "body", "stage"] {
        assert_eq!(look[part], json!("rgba(0, 0, 0, 0)"), "{part} is see-through: {look}");
    }
    assert_eq!(look["chrome"], json!([]), "no chrome: {look}");
    assert_eq!(look["gutter"], json!("none"), "no line numbers: {look}");
    assert_eq!(look["name"], json!("alice"));
    assert_ne!(look["nameColour"], json!("rgb(248, 248, 242)"), "the name in alice's colour: {look}");

    // Each evaluation is brought to the middle of the screen, the last one wins.
    for line in [70usize, 8, 45] {
        alice
            .send(Body::EvaluateBlock { start: line as i64, end: line as i64 + 1, reply: 0 })
            .await
            .expect("alice runs it");
        let centred = format!("(m => m !== null && Math.abs(m - 0.5) < 0.12)({})", line_middle(line));
        let deadline = Instant::now() + T;
        page.wait_for(&centred, deadline, &format!("line {line} is centred")).await;
    }
    assert!(page.eval("document.getElementById('editor').scrollTop").await.as_f64() > Some(0.0));
    assert_clean(&page, &hub);
    drop(o);
}

/// A link to `name`'s view made by its owner, lasting `expires_in`.
async fn link(hub: &TestHub, name: &str, expires_in: Value) -> Value {
    let body = json!({ "expires_in": expires_in }).to_string();
    let path = format!("/api/v1/sessions/{name}/links");
    let r = request(hub.http, "POST", &path, &[("X-Session-Password", "pw")], Some(&body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

/// Waits until the page asks for the password, saying the link no longer holds.
async fn refused(page: &mut Page, what: &str) {
    let asked = "document.body.dataset.state === 'password' && !document.getElementById('password-form').hidden \
                 && /expired or was revoked/.test(document.getElementById('password-error').textContent)";
    page.wait_for(asked, Instant::now() + T, what).await;
}

#[tokio::test]
async fn a_share_link_opens_the_view_without_the_password_and_an_expired_or_revoked_one_does_not() {
    let _one = ONE_BROWSER.lock().await;
    let mut page = Page::launch(PAGE_STATE).await;
    let hub = TestHub::new("").start().await;
    let o = owner(&hub, "jam", "pw").await;
    let mut alice = performer(&o, "alice", "pw").await;
    alice.insert(0, "Clock.bpm = 120\n").await.expect("alice types");
    synced(&mut alice).await;
    assert_eq!(http(hub.http, "GET", "/api/v1/sessions/jam", None, None).await.json()["audience"], json!("password"));

    let made = link(&hub, "jam", json!("30m")).await;
    let url = made["url"].as_str().unwrap_or_default().to_string();
    page.open(&url).await;
    let live = "window.troopView && troopView.state === 'live' && troopView.document === 'Clock.bpm = 120\\n' \
                && document.getElementById('password-form').hidden";
    page.wait_for(live, Instant::now() + T, "the link opens the view without the password").await;

    // Revoked while watching: let go, and asked for the password.
    let id = made["id"].as_str().unwrap_or_default();
    let revoke =
        request(hub.http, "DELETE", &format!("/api/v1/sessions/jam/links/{id}"), &[("X-Session-Password", "pw")], None)
            .await;
    assert_eq!(revoke.status, 204, "{}", revoke.body);
    refused(&mut page, "a revoked link lets the viewer go").await;
    page.open("about:blank").await;
    page.open(&url).await;
    refused(&mut page, "a revoked link opens nothing").await;

    // Expired by itself.
    let short = link(&hub, "jam", json!(1)).await;
    let short = short["url"].as_str().unwrap_or_default().to_string();
    hub.eventually("the one-second link to expire", T, async || {
        let t = short.split("#share=").nth(1).unwrap_or_default().to_string();
        let listed =
            request(hub.http, "GET", "/api/v1/sessions/jam/links", &[("X-Session-Password", "pw")], None).await;
        (!listed.body.contains(&t[..0]) || listed.json().as_array().is_some_and(Vec::is_empty))
            .then_some(())
            .ok_or(listed.body)
    })
    .await;
    page.open("about:blank").await;
    page.open(&short).await;
    refused(&mut page, "an expired link opens nothing").await;
    // The password still opens it.
    page.eval("document.getElementById('password').value = 'pw'; document.getElementById('watch').click()").await;
    page.wait_for("troopView.state === 'live'", Instant::now() + T, "the password opens it").await;
    assert_clean(&page, &hub);
    drop(o);
}

#[tokio::test]
async fn a_performance_kept_as_one_file_replays_offline_to_the_archived_code() {
    let _one = ONE_BROWSER.lock().await;
    let mut page = Page::launch(PAGE_STATE).await;
    let mut hub = TestHub::new("");
    let db = hub.dir.path().join("data").join("archive.db");
    hub.extra_yaml = format!("archive: {{path: {}}}\n", db.display());
    hub.envs.push(("TROOP_HUB_ADMIN_TOKEN".into(), TOKEN.into()));
    let hub = hub.start().await;
    let o = owner(&hub, "kept", "pw").await;
    let mut alice = performer(&o, "alice", "pw").await;
    for (i, text) in ["d1 >> play('x-o-')\n", "p1 >> pluck([0, 2, 4], dur=1/2) # é 🎵 </script>\n", "Clock.bpm = 140\n"]
        .iter()
        .enumerate()
    {
        let len = alice.document().chars().count() as u64;
        alice.insert(len, text).await.expect("alice types");
        synced(&mut alice).await;
        alice.send(Body::EvaluateBlock { start: i as i64 + 1, end: i as i64 + 2, reply: 0 }).await.expect("runs");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let doc = alice.document().to_string();
    // The owner locks and opens the session again: the replay shows both.
    for locked in [true, false] {
        let body = json!({ "locked": locked }).to_string();
        let r =
            request(hub.http, "POST", "/api/v1/sessions/kept/lock", &[("X-Session-Password", "pw")], Some(&body)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    drop(alice);
    drop(o);
    let admin = format!("Bearer {TOKEN}");
    let id = hub
        .eventually("the performance to be archived", T, async || {
            let listed =
                request(hub.http, "GET", "/api/v1/archive?name=kept", &[("Authorization", &admin)], None).await;
            let first = listed.json()[0].clone();
            match (first["id"].as_str(), first["ended_ms"].is_null()) {
                (Some(id), false) => Ok(id.to_string()),
                _ => Err(listed.body),
            }
        })
        .await;
    let file =
        request(hub.http, "GET", &format!("/api/v1/archive/{id}/replay.html"), &[("Authorization", &admin)], None)
            .await;
    assert_eq!(file.status, 200);
    assert!(
        file.headers.to_ascii_lowercase().contains("content-disposition: attachment; filename=\"kept-"),
        "{}",
        file.headers
    );
    let code =
        request(hub.http, "GET", &format!("/api/v1/archive/{id}/code"), &[("Authorization", &admin)], None).await;
    assert_eq!(code.body, doc, "the archive's code is the session's");
    let evals =
        request(hub.http, "GET", &format!("/api/v1/archive/{id}/evaluations.txt"), &[("Authorization", &admin)], None)
            .await;
    assert_eq!(evals.body.matches("alice\n").count(), 3, "{}", evals.body);
    assert!(evals.body.contains("Clock.bpm = 140"), "{}", evals.body);

    // Saved to disk and opened from there, with the hub stopped: nothing to fetch.
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("kept.html");
    std::fs::write(&path, &file.body).expect("saved");
    drop(hub);
    page.open(&format!("file://{}", path.display())).await;
    page.wait_for("window.troopReplay && troopReplay.state === 'ready'", Instant::now() + T, "the file loads").await;
    assert_eq!(page.eval("troopReplay.code").await, json!(doc), "it carries the archived code");
    page.eval("troopReplay.setSpeed(16); troopReplay.play()").await;
    let ended = format!(
        "troopReplay.state === 'ended' && document.getElementById('doc').textContent === {} && troopReplay.evaluations === 3",
        js(&doc)
    );
    page.wait_for(&ended, Instant::now() + Duration::from_secs(30), "it replays to the archived code").await;
    assert_eq!(
        page.eval("[troopReplay.moderation, document.querySelectorAll('#ticks .tick.mod').length]").await,
        json!([
            ["The owner locked the session to new performers", "The owner opened the session to new performers again"],
            2
        ]),
        "the owner's lock is shown as it plays, and marked on the scrubber"
    );
    let outside: Vec<&String> = page
        .requests
        .iter()
        .filter(|u| !u.starts_with("file://") && !u.starts_with("data:") && *u != "about:blank")
        .collect();
    assert!(outside.is_empty(), "nothing fetched: {outside:?}");
    assert!(page.complaints.is_empty(), "{:#?}", page.complaints);
}

/// `cargo test --test show_browser -- --ignored --exact readme_screenshots` writes
/// docs/stage-view.png (the stage view at 1920x1080 right after an evaluation) and
/// docs/owner-page.png (the owner's page with a share link and its QR code).
#[tokio::test]
#[ignore = "writes docs/stage-view.png and docs/owner-page.png; run it on purpose"]
async fn readme_screenshots() {
    let _one = ONE_BROWSER.lock().await;
    let hub = TestHub::new("audience: public").start().await;
    let o = owner(&hub, "friday-jam", "pw").await;
    let mut troupe: Vec<TroopClient> = Vec::new();
    for name in ["ada", "ben", "cleo"] {
        let next = performer(&o, name, "pw").await;
        for c in &mut troupe {
            c.recv_until_match(T, |_, m| matches!(m.body, Body::Reset { .. })).await.expect("a join resets the others");
        }
        troupe.push(next);
    }
    let parts = FRIDAY_JAM;
    let mut doc = String::new();
    for (who, text) in parts {
        let p = &mut troupe[who];
        if p.document() != doc {
            p.recv_until_match(T, |c, _| c.document() == doc).await.expect("sees the others");
        }
        p.insert(doc.chars().count() as u64, text).await.expect("types");
        synced(p).await;
        doc = p.document().to_string();
    }
    let mut page = Page::launch(PAGE_STATE).await;
    page.open(&format!("http://{}/s/friday-jam?stage", hub.http)).await;
    page.wait_for(&format!("troopView.document === {}", js(&doc)), Instant::now() + T, "the code shows").await;
    page.eval("document.fonts.ready.then(() => true)").await;
    let b1 = doc[..doc.find("b1 >> bass").unwrap_or(0)].matches('\n').count() as i64 + 1;
    troupe[2].send(Body::EvaluateBlock { start: b1, end: b1 + 3, reply: 1 }).await.expect("cleo runs it");
    page.wait_for("document.querySelector('#doc [data-flash]')", Instant::now() + T, "a flash").await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    page.eval("document.getAnimations().forEach(a => { a.pause(); a.currentTime = 350; })").await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/docs");
    std::fs::write(format!("{dir}/stage-view.png"), page.screenshot().await).expect("written");

    page.open(&format!("http://{}/s/friday-jam/owner", hub.http)).await;
    page.eval("document.getElementById('password').value = 'pw'; document.getElementById('open').click()").await;
    page.wait_for("troopOwner.state === 'open' && troopOwner.performers.length === 3", Instant::now() + T, "open")
        .await;
    page.eval("document.getElementById('stage').checked = true; document.getElementById('make').click()").await;
    page.wait_for(
        "troopOwner.lastLink && document.getElementById('qr').complete && troopOwner.links.length === 1",
        Instant::now() + T,
        "a link",
    )
    .await;
    std::fs::write(format!("{dir}/owner-page.png"), page.screenshot().await).expect("written");
    eprintln!("wrote {dir}/stage-view.png and owner-page.png");
    assert_clean(&page, &hub);
    drop(o);
}
