//! The archive's pages in a real browser: Debian's headless chromium, driven over the Chrome
//! DevTools Protocol (tests/common/browser.rs), on a real hub whose session ran on real Docker.
//! A Troop client types (unicode included) and evaluates, the owner leaves; then the archive
//! form lists the performance for its name and password, its Replay link opens the replay
//! without asking again, and the replay reaches the downloaded code byte for byte (seeking to
//! every moment of the timeline, and playing at 16x), with one scrubber tick per evaluation.
//! A wrong password is refused on both pages.
//!
//! Without chromium these tests fail (they never skip): `apt-get install chromium`
//! (scripts/test installs it).

mod common;

use common::browser::{assert_clean, js, Page, ONE_BROWSER};
use common::{eventually, owner, request, HttpResponse, TestHub, T};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use troop_server::client::TroopClient;
use troop_server::message::Body;
use troop_server::ot::Operation;

const NAME: &str = "gig";
/// Not ASCII: it travels in JSON bodies, never in a header or a URL.
const PASSWORD: &str = "pw-gig 2 über 🎵";
/// The hub's answer to a wrong password, shown by both pages as it is.
const WRONG: &str = "Wrong password, or nothing archived under it";

/// What a failed wait shows of the archive and replay pages.
const PAGE_STATE: &str = r##"(() => {
  const $ = id => document.getElementById(id);
  const a = window.troopArchive, r = window.troopReplay;
  return {
    url: location.href,
    readyState: document.readyState,
    state: document.body && document.body.dataset.state,
    error: $("error") && $("error").textContent,
    passwordError: $("password-error") && $("password-error").textContent,
    message: $("message") && !$("message").hidden && $("message").textContent,
    doc: $("doc") && $("doc").textContent,
    ticks: document.querySelectorAll("#ticks .tick").length,
    archive: a && { state: a.state, error: a.error, sessions: a.sessions },
    replay: r && { state: r.state, error: r.error, lines: r.lines, time_ms: r.time_ms, end_ms: r.end_ms,
                   evaluations: r.evaluations, document: r.document, code: r.code },
    stored: Object.keys(sessionStorage),
  };
})()"##;

/// A hub whose archive lives in its own temp dir (as tests/archive.rs's).
async fn hub_with_archive() -> TestHub {
    let mut hub = TestHub::new("");
    let db = hub.dir.path().join("data").join("archive.db");
    hub.extra_yaml = format!("archive: {{path: {}}}\n", db.display());
    hub.start().await
}

/// NAME's password proved in a body: the answer (a token and the sessions it opens).
async fn access(hub: &TestHub) -> HttpResponse {
    let body = json!({ "name": NAME, "password": PASSWORD }).to_string();
    request(hub.http, "POST", "/api/v1/archive/access", &[], Some(&body)).await
}

/// A GET with a token from NAME's password.
async fn get(hub: &TestHub, path: &str) -> HttpResponse {
    let granted = access(hub).await.json();
    let token = granted["token"].as_str().expect("a token").to_string();
    request(hub.http, "GET", path, &[("X-Archive-Token", &token)], None).await
}

/// The archived sessions of NAME once one of them has ended (the hub's writer commits in
/// batches).
async fn listed(hub: &TestHub) -> Vec<Value> {
    eventually(&format!("{NAME} archived"), T, async || {
        let a = access(hub).await;
        if a.status == 200 {
            let list: Vec<Value> = a.json()["sessions"].as_array().cloned().expect("a list");
            if list.iter().any(|s| !s["ended_ms"].is_null()) {
                return Ok(list);
            }
        }
        Err(format!("{} {}", a.status, a.body))
    })
    .await
}

/// Reads until the server has acknowledged the client's own edits.
async fn synced(c: &mut TroopClient) {
    while !c.is_synchronized() {
        c.recv(T).await.expect("the server acknowledges the edit");
    }
}

/// Where `needle` starts in `doc`, in code points (Troop's positions).
fn at(doc: &str, needle: &str) -> u64 {
    doc[..doc.find(needle).unwrap_or_else(|| panic!("{needle:?} in {doc:?}"))].chars().count() as u64
}

/// The moments of a timeline as the replay page sees them: each distinct time (made
/// non-decreasing; a snapshot stamped after the event that follows it moved back to that
/// event's time) with the document after every event up to it, a snapshot replacing the
/// document and the events it already holds skipped.
fn moments(timeline: &str) -> Vec<(f64, String)> {
    let mut events: Vec<(f64, Value)> = Vec::new();
    for line in timeline.lines().filter(|l| !l.is_empty()) {
        let m: Value = serde_json::from_str(line).expect("each line is JSON");
        let kind = m["type"].as_str().unwrap_or_default();
        if !matches!(kind, "operation" | "evaluate" | "join" | "leave" | "mark" | "snapshot") {
            continue;
        }
        let time = m["time_ms"].as_f64().unwrap_or_else(|| panic!("a time: {line}"));
        let n = events.len();
        if n > 0
            && events[n - 1].1["type"] == "snapshot"
            && time < events[n - 1].0
            && m["seq"].as_f64().zip(events[n - 1].1["revision"].as_f64()).is_some_and(|(s, r)| s > r)
        {
            events[n - 1].0 = if n > 1 { events[n - 2].0.max(time) } else { time };
        }
        let time = events.last().map_or(time, |(t, _)| t.max(time));
        events.push((time, m));
    }
    let (mut doc, mut revision) = (String::new(), i64::MIN);
    let mut out: Vec<(f64, String)> = Vec::new();
    for (time, m) in events {
        if m["type"] == "snapshot" {
            doc = m["document"].as_str().expect("a snapshot's document").to_string();
            revision = m["revision"].as_i64().unwrap_or(i64::MIN);
        } else if let Some(seq) = m["seq"].as_i64() {
            if seq <= revision {
                continue;
            }
            revision = seq;
            if m["type"] == "operation" {
                let op: Operation = serde_json::from_value(m["ops"].clone()).expect("an operation");
                doc = op.apply(&doc).expect("each operation fits");
            }
        }
        match out.last_mut() {
            Some((t, d)) if *t == time => *d = doc.clone(),
            _ => out.push((time, doc.clone())),
        }
    }
    out
}

/// Alice's pause between two steps of her performance, as a person's: each step gets its
/// own moment in the timeline (edits at machine speed share a millisecond).
async fn pause() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

/// The performance's UTF-8 bytes as the page holds them in `#doc`.
const DOC_BYTES: &str = "Array.from(new TextEncoder().encode(document.getElementById('doc').textContent))";

/// Fills the archive form with the mouse and keyboard and presses Show.
async fn look_up(page: &mut Page, password: &str) {
    for (field, text) in [("name", NAME), ("password", password)] {
        page.eval(&format!("(e => {{ e.value = ''; e.focus(); }})(document.getElementById('{field}'))")).await;
        page.type_text(text).await;
    }
    page.click("#show").await;
}

#[tokio::test]
async fn the_archive_page_lists_the_performance_and_its_replay_ends_in_the_code() {
    let _one = ONE_BROWSER.lock().await;
    let started = Instant::now();
    let mut page = Page::launch(PAGE_STATE).await;
    let hub = hub_with_archive().await;

    // The performance: alice types in pieces (an ü, a note outside the BMP and an edit after
    // it, a change inside a line) and runs two blocks and a string. Her first edit follows her
    // join at once: the hub may still be subscribing to the session then (its first snapshot
    // stamped after her first events).
    let o = owner(&hub, NAME, PASSWORD).await;
    let mut alice =
        TroopClient::join(SocketAddr::from(([127, 0, 0, 1], o.port)), "alice", PASSWORD, T).await.expect("alice joins");
    alice.insert(0, "Clock.bpm = 120\n").await.unwrap();
    synced(&mut alice).await;
    pause().await;
    let doc = alice.document().to_string();
    alice.insert(at(&doc, "\n") + 1, "d1 >> play(\"x-o-\")  # über 🎵\n").await.unwrap();
    synced(&mut alice).await;
    pause().await;
    alice.send(Body::EvaluateBlock { start: 2, end: 3, reply: 0 }).await.unwrap();
    pause().await;
    let doc = alice.document().to_string();
    alice.insert(at(&doc, "🎵") + 1, " ♪ für dich").await.unwrap();
    synced(&mut alice).await;
    pause().await;
    let doc = alice.document().to_string();
    alice.insert(doc.chars().count() as u64, "p1 >> pluck([0, 2, 4], dur=1/2)\n").await.unwrap();
    synced(&mut alice).await;
    pause().await;
    alice.send(Body::EvaluateBlock { start: 3, end: 4, reply: 0 }).await.unwrap();
    pause().await;
    let doc = alice.document().to_string();
    alice.delete(at(&doc, "120"), 3).await.unwrap();
    synced(&mut alice).await;
    pause().await;
    let doc = alice.document().to_string();
    alice.insert(at(&doc, "\n"), "128").await.unwrap();
    synced(&mut alice).await;
    pause().await;
    alice.send(Body::EvaluateString { string: "Clock.bpm = 128".into(), reply: 0 }).await.unwrap();
    pause().await;
    // A last edit after the evaluations: the replay goes on past the last tick.
    let doc = alice.document().to_string();
    alice.insert(doc.chars().count() as u64, "# 🎵 ende").await.unwrap();
    synced(&mut alice).await;
    let doc = alice.document().to_string();
    assert_eq!(
        doc,
        "Clock.bpm = 128\nd1 >> play(\"x-o-\")  # über 🎵 ♪ für dich\np1 >> pluck([0, 2, 4], dur=1/2)\n# 🎵 ende"
    );
    drop(o);

    let list = listed(&hub).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["id"].as_str().expect("an id").to_string();
    assert_eq!(list[0]["evaluations"], json!(3), "{list:?}");
    let code = get(&hub, &format!("/api/v1/archive/{id}/code")).await;
    assert_eq!(code.status, 200, "{}", code.body);
    assert!(!code.body.contains('\u{FFFD}'), "the code is UTF-8: {:?}", code.body);
    assert_eq!(code.body, doc, "the archive's code is alice's last document");
    let timeline = get(&hub, &format!("/api/v1/archive/{id}/timeline")).await;
    assert_eq!(timeline.status, 200, "{}", timeline.body);
    let moments = moments(&timeline.body);
    assert_eq!(moments.last().map(|m| m.1.as_str()), Some(doc.as_str()), "the timeline ends in the code");
    let performed = started.elapsed();

    // The archive form: a wrong password first, then the right one lists the performance.
    let origin = format!("http://{}", hub.http);
    page.open(&format!("{origin}/archive")).await;
    page.wait_for("window.troopArchive && troopArchive.state === 'form'", Instant::now() + T, "the form").await;
    assert_eq!(page.eval("document.activeElement.id").await, json!("name"), "the name field has focus");
    look_up(&mut page, "not the password").await;
    page.wait_for(
        &format!("troopArchive.state === 'error' && document.getElementById('error').textContent === {}", js(WRONG)),
        Instant::now() + T,
        "the archive form refuses a wrong password",
    )
    .await;
    assert_eq!(page.eval("document.querySelectorAll('li.session').length").await, json!(0));
    look_up(&mut page, PASSWORD).await;
    page.wait_for(
        "troopArchive.state === 'list' && document.querySelectorAll('li.session a.replay').length === 1",
        Instant::now() + T,
        "the archive form lists the performance",
    )
    .await;
    let item = page
        .eval(
            r#"(li => ({ id: li.dataset.id, href: li.querySelector("a.replay").getAttribute("href"),
                        who: [...li.querySelectorAll(".performers .who")].map(w => w.firstChild.textContent),
                        stats: [...li.querySelectorAll(".performers .who .stats")].map(w => w.textContent),
                        ended: li.querySelector(".ended").textContent, counts: li.querySelector(".counts").textContent,
                        found: document.getElementById("found").textContent }))(document.querySelector("li.session"))"#,
        )
        .await;
    assert_eq!(item["id"], json!(id), "{item}");
    assert_eq!(item["href"], json!(format!("a/{id}")), "{item}");
    assert_eq!(item["who"], json!(["alice"]), "{item}");
    assert_eq!(item["stats"], json!(["100% · 3 runs · 99 chars typed"]), "her figures, small beside her name: {item}");
    assert_eq!(item["ended"], json!("Ended: its owner left"), "{item}");
    assert!(item["counts"].as_str().is_some_and(|c| c.contains("3 evaluations")), "{item}");
    assert_eq!(item["found"], json!(format!("1 performance of {NAME}")), "{item}");

    // Replay: the link leaves a token (never the password) for the replay page, which loads
    // without asking.
    page.click("li.session a.replay").await;
    let replay_url = format!("{origin}/a/{id}");
    page.wait_for(
        &format!("location.href === {} && window.troopReplay && troopReplay.state === 'ready'", js(&replay_url)),
        Instant::now() + T,
        "the replay opens without asking for the password",
    )
    .await;
    let key = format!("troop-archive-token:{id}");
    let token = page.eval(&format!("sessionStorage.getItem({})", js(&key))).await;
    assert!(token.as_str().is_some_and(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())), "{token}");
    let kept = page.eval("JSON.stringify(Object.entries(sessionStorage))").await;
    assert!(!kept.to_string().contains("über"), "the password is kept nowhere in the tab: {kept}");
    assert_eq!(page.eval("troopReplay.code").await, json!(doc), "the page read the archived code");
    assert_eq!(page.eval("document.getElementById('session').textContent").await, json!(NAME));
    assert_eq!(page.eval("document.getElementById('missed-note').hidden").await, json!(true), "nothing missed");
    assert_eq!(page.eval("document.getElementById('password-form').hidden").await, json!(true));

    // One tick per evaluation, in alice's colour, in order along the scrubber, each titled
    // with the code it ran.
    let ticks = page
        .eval(
            "[...document.querySelectorAll('#ticks .tick')].map(t => [t.className, parseFloat(t.style.left), t.title])",
        )
        .await;
    let ticks = ticks.as_array().expect("a list of ticks");
    assert_eq!(ticks.len(), 3, "one tick per evaluation: {ticks:?}");
    let lefts: Vec<f64> = ticks.iter().map(|t| t[1].as_f64().expect("a position")).collect();
    assert!(lefts.windows(2).all(|w| w[0] < w[1]) && lefts.iter().all(|l| (0.0..=100.0).contains(l)), "{ticks:?}");
    let colour = ticks[0][0].as_str().expect("a class");
    assert!(colour.len() == 7 && colour.starts_with("tick p") && colour.as_bytes()[6].is_ascii_digit(), "{ticks:?}");
    assert!(ticks.iter().all(|t| t[0] == json!(colour)), "all in alice's colour: {ticks:?}");
    for (tick, ran) in ticks.iter().zip(["d1 >> play(\"x-o-\")  # über 🎵", "p1 >> pluck(", "Clock.bpm = 128"]) {
        assert!(tick[2].as_str().is_some_and(|t| t.contains(ran)), "a tick titled with {ran:?}: {tick:?}");
    }

    // Every moment of the timeline, forwards and backwards: the page shows what the events up
    // to it make.
    assert!(moments.len() >= 8, "{moments:?}");
    let order: Vec<&(f64, String)> = moments.iter().chain(moments.iter().rev()).collect();
    for (time, want) in order {
        let shown = page
            .eval(&format!(
                "troopReplay.seek({time}) && [troopReplay.state, document.getElementById('doc').textContent, troopReplay.document]"
            ))
            .await;
        assert_eq!(shown[1], json!(want), "the page at {time}: {shown}");
        assert_eq!(shown[2], json!(want), "the page's document at {time}: {shown}");
    }

    // The end: the code, byte for byte.
    page.eval("troopReplay.seek(troopReplay.end_ms)").await;
    page.wait_for(
        &format!("troopReplay.state === 'ended' && document.getElementById('doc').textContent === {}", js(&doc)),
        Instant::now() + T,
        "the end shows the archived code",
    )
    .await;
    assert_eq!(page.eval(DOC_BYTES).await, json!(code.body.as_bytes()), "#doc is the code byte for byte");
    assert_eq!(page.eval("troopReplay.evaluations").await, json!(3));
    assert_eq!(page.eval("troopReplay.time_ms === troopReplay.end_ms && troopReplay.end_ms > 0").await, json!(true));

    // Played at 16x from the start with the Play button: the evaluated blocks flash on the
    // way, and it stops at the end on the code.
    page.eval(
        r#"window.flashes = [];
        new MutationObserver(ms => ms.forEach(m => {
          if (m.target.hasAttribute("data-flash")) flashes.push(m.target.dataset.n);
        })).observe(document.getElementById("doc"), { subtree: true, attributes: true, attributeFilter: ["data-flash"] });
        troopReplay.setSpeed(16)"#,
    )
    .await;
    assert_eq!(page.eval("document.getElementById('play-word').textContent").await, json!("Again"));
    page.click("#play").await;
    let began = Instant::now();
    page.wait_for("troopReplay.state === 'playing' || troopReplay.state === 'ended'", began + T, "it plays").await;
    page.wait_for(
        &format!("troopReplay.state === 'ended' && document.getElementById('doc').textContent === {}", js(&doc)),
        began + T,
        "playing at 16x reaches the code",
    )
    .await;
    let played = began.elapsed();
    assert_eq!(page.eval(DOC_BYTES).await, json!(code.body.as_bytes()), "#doc is the code byte for byte");
    assert_eq!(page.eval("troopReplay.evaluations").await, json!(3));
    let flashed = page.eval("flashes").await;
    for line in ["2", "3"] {
        assert!(flashed.as_array().is_some_and(|f| f.contains(&json!(line))), "line {line} flashed: {flashed}");
    }

    // Without the password kept in the tab, the replay asks; a wrong one is refused, saying
    // so, the right one replays.
    page.eval(&format!("sessionStorage.removeItem({})", js(&key))).await;
    page.open(&replay_url).await;
    let form_shown = "!document.getElementById('password-form').hidden \
                      && document.getElementById('password-form').getBoundingClientRect().height > 0";
    page.wait_for(
        &format!("troopReplay.state === 'password' && {form_shown}"),
        Instant::now() + T,
        "the replay asks for the password",
    )
    .await;
    assert_eq!(page.eval("document.activeElement.id").await, json!("password"), "the password field has focus");
    page.type_text("not the password").await;
    page.click("#watch").await;
    page.wait_for(
        &format!(
            "troopReplay.state === 'password' && {form_shown} \
             && document.getElementById('password-error').textContent === {}",
            js(WRONG)
        ),
        Instant::now() + T,
        "the replay refuses a wrong password",
    )
    .await;
    assert_eq!(page.eval(&format!("sessionStorage.getItem({})", js(&key))).await, Value::Null);
    assert_eq!(page.eval("document.getElementById('doc').textContent").await, json!(""), "nothing shown");
    page.eval("document.getElementById('password').focus()").await;
    page.type_text(PASSWORD).await;
    page.click("#watch").await;
    page.wait_for("troopReplay.state === 'ready'", Instant::now() + T, "the right password replays").await;
    page.eval("troopReplay.seek(troopReplay.end_ms)").await;
    assert_eq!(page.eval(DOC_BYTES).await, json!(code.body.as_bytes()), "#doc is the code byte for byte");
    let kept = page.eval(&format!("sessionStorage.getItem({})", js(&key))).await;
    assert!(
        kept.as_str().is_some_and(|t| t.len() == 32 && !t.contains("über")),
        "a new token, not the password: {kept}"
    );

    // The two wrong passwords are the page's only complaints (the browser logs each refused
    // request), no password went into a URL, and nothing was fetched from outside the hub.
    page.eval("0").await;
    assert!(
        page.requests.iter().all(|u| !u.contains("pw-gig") && !u.contains("%C3%BC")),
        "no password in a URL: {:?}",
        page.requests
    );
    let (refused, others): (Vec<String>, Vec<String>) =
        std::mem::take(&mut page.complaints).into_iter().partition(|c| c.contains("status of 403"));
    assert_eq!(refused.len(), 2, "the two wrong passwords: {refused:?} {others:?}");
    page.complaints = others;
    assert_clean(&page, &hub);
    eprintln!(
        "performed and archived in {performed:?}, played back at 16x in {played:?}, all in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_whole_recording_replays_as_recorded_even_where_the_stored_code_differs() {
    let _one = ONE_BROWSER.lock().await;
    let mut page = Page::launch(PAGE_STATE).await;
    let hub = hub_with_archive().await;
    let o = owner(&hub, NAME, PASSWORD).await;
    let mut alice =
        TroopClient::join(SocketAddr::from(([127, 0, 0, 1], o.port)), "alice", PASSWORD, T).await.expect("alice joins");
    // A burst of edits, each acknowledged.
    for i in 0..30 {
        let len = alice.document().chars().count() as u64;
        alice.insert(len, &format!("{i} über 🎵\n")).await.unwrap();
        synced(&mut alice).await;
    }
    let doc = alice.document().to_string();
    drop(o);
    let list = listed(&hub).await;
    let id = list[0]["id"].as_str().expect("an id").to_string();
    assert!(!list[0]["truncated"].as_bool().unwrap_or(true), "the whole performance was recorded");

    // The stored code says something else (as a document written seconds before the end
    // did): a whole recording is the last word, so the replay must not jump to it.
    let db = hub.dir.path().join("data").join("archive.db");
    let conn = rusqlite::Connection::open(&db).expect("open the archive");
    conn.busy_timeout(T).expect("busy timeout");
    let changed = conn.execute("UPDATE sessions SET document = ?1 WHERE id = ?2", ("stale code\n", &id));
    assert_eq!(changed.expect("update the stored code"), 1);
    drop(conn);

    let token = access(&hub).await.json()["token"].as_str().expect("a token").to_string();
    let origin = format!("http://{}", hub.http);
    page.open(&format!("{origin}/archive")).await;
    page.eval(&format!("sessionStorage.setItem({}, {})", js(&format!("troop-archive-token:{id}")), js(&token))).await;
    page.open(&format!("{origin}/a/{id}")).await;
    page.wait_for("window.troopReplay && troopReplay.state === 'ready'", Instant::now() + T, "the replay loads").await;
    assert_eq!(page.eval("troopReplay.code").await, json!("stale code\n"), "the page read the stored code");
    page.eval("troopReplay.seek(troopReplay.end_ms)").await;
    page.wait_for(
        &format!("troopReplay.state === 'ended' && document.getElementById('doc').textContent === {}", js(&doc)),
        Instant::now() + T,
        "the end is the recording's last edit, not the stored code",
    )
    .await;
    assert_eq!(page.eval("document.getElementById('missed-note').hidden").await, json!(true), "no jump noted");
}
