//! The audience view in a real browser: Debian's headless chromium, driven over the Chrome
//! DevTools Protocol, opens `/s/{name}` on a real hub whose session runs on real Docker while
//! real Troop clients type and evaluate. The page must show the server's document at once, in
//! each performer's colour, flash evaluated lines, say why the session ended, ask for the
//! password when the view needs one, and fetch nothing from outside the hub.
//!
//! Without chromium these tests fail (they never skip): `apt-get install chromium`
//! (scripts/test installs it). The browser harness is tests/common/browser.rs.

mod common;

use common::browser::{assert_clean, js, Page, FRIDAY_JAM, HEIGHT, ONE_BROWSER, WIDTH};
use common::{owner, performer, TestHub, T};
use serde_json::json;
use std::time::{Duration, Instant};
use troop_hub::admin::Owner;
use troop_server::client::TroopClient;
use troop_server::message::Body;

/// What a failed wait shows of the page.
const PAGE_STATE: &str = r#"(() => {
  const $ = id => document.getElementById(id);
  const v = window.troopView;
  return {
    url: location.href,
    state: document.body && document.body.dataset.state,
    evaluations: document.body && document.body.dataset.evaluations,
    doc: $("doc") && $("doc").textContent,
    banner: $("banner") && $("banner").textContent,
    message: $("message") && !$("message").hidden && $("message").textContent,
    passwordError: $("password-error") && $("password-error").textContent,
    view: v && { state: v.state, document: v.document, revision: v.revision, performers: v.performers,
                 evaluations: v.evaluations },
    flashes: window.flashes,
  };
})()"#;

/// Performers joined in order, each past the RESET of every later join (which replaces the
/// document of a client that has not read it yet), so their next edits start from the same
/// state.
async fn troupe(o: &Owner, names: &[&str]) -> Vec<TroopClient> {
    let mut joined: Vec<TroopClient> = Vec::new();
    for name in names {
        let next = performer(o, name, "pw").await;
        for c in &mut joined {
            c.recv_until_match(T, |_, m| matches!(m.body, Body::Reset { .. })).await.expect("a join resets the others");
        }
        joined.push(next);
    }
    joined
}

/// Reads until the server has acknowledged the client's own edits.
async fn synced(c: &mut TroopClient) {
    while !c.is_synchronized() {
        c.recv(T).await.expect("the server acknowledges the edit");
    }
}

/// Reads until the client's document is `want`.
async fn sees(c: &mut TroopClient, want: &str) {
    if c.document() == want {
        return;
    }
    c.recv_until_match(T, |c, _| c.document() == want).await.expect("the performer sees the others' edits");
}

/// The class and computed colour of the first text span of the document containing `text`.
const SPAN_OF: &str = r##"(text => {
  const span = [...document.querySelectorAll("#doc span.t")].find(s => s.textContent.includes(text));
  return span ? { class: span.className, color: getComputedStyle(span).color } : null;
})"##;

#[tokio::test]
async fn a_real_browser_shows_the_session_live_in_the_performers_colours() {
    let _one = ONE_BROWSER.lock().await;
    let mut page = Page::launch(PAGE_STATE).await;
    let hub = TestHub::new("audience: public").start().await;
    let o = owner(&hub, "jam", "pw").await;
    let mut duo = troupe(&o, &["alice", "bob"]).await;
    let (mut a, mut b) = (duo.remove(0), duo.remove(0));

    let origin = format!("http://{}", hub.http);
    page.open(&format!("{origin}/s/jam")).await;
    page.wait_for("document.body.dataset.state === 'live'", Instant::now() + T, "the view goes live").await;
    assert_eq!(page.eval("[innerWidth, innerHeight]").await, json!([WIDTH, HEIGHT]));
    // The hub may hear of a join just after the page's snapshot; the page draws once per
    // animation frame: both are waited for.
    let named = "troopView.performers.map(p => p.name).sort().join() === 'alice,bob'";
    page.wait_for(named, Instant::now() + T, "the page knows the performers").await;
    let listed =
        "[...document.querySelectorAll('#performers li')].map(li => li.firstChild.textContent).sort().join() === 'alice,bob' \
         && [...document.querySelectorAll('#performers li .share')].every(s => /^[0-9]+%$/.test(s.textContent))";
    page.wait_for(listed, Instant::now() + T, "the bar names the performers").await;
    assert_eq!(page.eval("document.getElementById('session').textContent").await, json!("jam"));
    assert_eq!(page.eval("document.getElementById('doc').textContent").await, json!(""));

    // Alice types: the page shows the server's document within a second of her edit being
    // acknowledged.
    let alice_text = "d1 >> play(\"x-o-[--]\", dur=1/2)\n";
    a.insert(0, alice_text).await.unwrap();
    synced(&mut a).await;
    let acked = Instant::now();
    let want = a.document().to_string();
    assert_eq!(want, alice_text);
    let doc_is = |want: &str| format!("document.getElementById('doc').textContent === {}", js(want));
    let shown = page.wait_for(&doc_is(&want), acked + Duration::from_secs(1), "alice's edit shows within 1 s").await;
    eprintln!("alice's edit showed {:?} after its acknowledgement", shown - acked);
    assert_eq!(page.eval("troopView.document").await, json!(want));

    // Bob types on the next line, the ü and the note counted as one code point each.
    sees(&mut b, &want).await;
    let bob_text = "p1 >> pluck([0, 2, 4], oct=5) # über 🎵";
    b.insert(want.chars().count() as u64, bob_text).await.unwrap();
    synced(&mut b).await;
    let acked = Instant::now();
    let want = b.document().to_string();
    assert_eq!(want, format!("{alice_text}{bob_text}"));
    let shown = page.wait_for(&doc_is(&want), acked + Duration::from_secs(1), "bob's edit shows within 1 s").await;
    eprintln!("bob's edit showed {:?} after its acknowledgement", shown - acked);
    sees(&mut a, &want).await;

    // A page opened on a large document gets it in parts (at most 32 KiB of document per
    // message) and shows it whole.
    let big = "# a comment line, long enough to fill the document: über 🎵\n".repeat(2_000);
    a.insert(want.chars().count() as u64, &big).await.unwrap();
    synced(&mut a).await;
    let want = a.document().to_string();
    sees(&mut b, &want).await;
    page.open(&format!("{origin}/s/jam")).await;
    let whole = format!("troopView.document === {}", js(&want));
    page.wait_for(&whole, Instant::now() + T, "a reopened page shows the large document whole").await;

    // Each one's text in their own Troop colour, their cursors tagged with their names.
    let colour_of = |who: &str| format!("troopView.performers.find(p => p.name === {}).colour", js(who));
    let (ca, cb) = (page.eval(&colour_of("alice")).await, page.eval(&colour_of("bob")).await);
    // The reopened page draws its text after its model has it: wait for both runs.
    let drawn = format!("{SPAN_OF}({}) && {SPAN_OF}({})", js("d1 >> play"), js("p1 >> pluck"));
    page.wait_for(&drawn, Instant::now() + T, "alice's and bob's text drawn").await;
    let alice_span = page.eval(&format!("{SPAN_OF}({})", js("d1 >> play"))).await;
    let bob_span = page.eval(&format!("{SPAN_OF}({})", js("p1 >> pluck"))).await;
    assert!(alice_span["class"].as_str().is_some_and(|c| c.contains(&format!("p{ca}"))), "{alice_span} {ca}");
    assert!(bob_span["class"].as_str().is_some_and(|c| c.contains(&format!("p{cb}"))), "{bob_span} {cb}");
    assert_ne!(alice_span["color"], bob_span["color"], "alice and bob in different colours");
    for span in [&alice_span, &bob_span] {
        assert_ne!(span["color"], json!("rgb(248, 248, 242)"), "a performer's colour, not the default: {span}");
    }
    let cursors = page
        .eval("[...document.querySelectorAll('#doc span.cur')].map(c => [c.dataset.name, c.className]).sort()")
        .await;
    assert_eq!(cursors, json!([["alice", format!("cur p{ca}")], ["bob", format!("cur p{cb}")]]));

    // Bob evaluates line 1: it flashes in his colour for a moment, and the counter counts it.
    page.eval(
        r#"window.flashes = [];
        new MutationObserver(ms => ms.forEach(m => {
          if (m.target.hasAttribute("data-flash")) flashes.push([m.target.dataset.n, m.target.dataset.flash]);
        })).observe(document.getElementById("doc"), { subtree: true, attributes: true, attributeFilter: ["data-flash"] })"#,
    )
    .await;
    b.send(Body::EvaluateBlock { start: 1, end: 2, reply: 1 }).await.unwrap();
    let sent = Instant::now();
    page.wait_for("document.body.dataset.evaluations === '1'", sent + T, "the evaluation is counted").await;
    page.wait_for(&format!("flashes.some(f => f[0] === '1' && f[1] === '{cb}')"), sent + T, "line 1 flashes").await;
    assert_eq!(page.eval("troopView.evaluations").await, json!(1));
    assert_eq!(page.eval("flashes.every(f => f[0] === '1')").await, json!(true), "only line 1 flashes");
    let flashed = page.wait_for("!document.querySelector('#doc [data-flash]')", sent + T, "the flash ends").await;
    assert!(flashed - sent >= Duration::from_millis(500), "the flash lasts ~600 ms, not {:?}", flashed - sent);

    // The owner leaves: the page says why, verbatim, and keeps the last document on show.
    drop(o);
    page.wait_for("document.body.dataset.state === 'ended'", Instant::now() + T, "the page hears the end").await;
    let banner = page.eval("(b => [b.textContent, !b.hidden && b.getBoundingClientRect().height > 0])(document.getElementById('banner'))").await;
    assert_eq!(banner, json!(["Troop Hub: the session has ended: its owner left.", true]));
    assert_eq!(page.eval("troopView.state").await, json!("ended"));
    assert_eq!(page.eval("document.getElementById('doc').textContent").await, json!(want));
    let no_cursors = "document.querySelectorAll('#doc span.cur').length === 0";
    page.wait_for(no_cursors, Instant::now() + T, "the performers' cursors go with the session").await;

    page.eval("0").await; // reads the last events
    for path in ["/s/jam", "/assets/view.css", "/assets/doc.js", "/assets/view.js", "/api/v1/sessions/jam"] {
        assert!(page.requests.contains(&format!("{origin}{path}")), "{path} requested: {:?}", page.requests);
    }
    assert!(page.requests.contains(&format!("ws://{}/api/v1/sessions/jam/live", hub.http)), "{:?}", page.requests);
    assert_clean(&page, &hub);
    drop((a, b));
}

#[tokio::test]
async fn a_real_browser_asks_for_the_password_and_a_wrong_one_is_refused() {
    let _one = ONE_BROWSER.lock().await;
    let mut page = Page::launch(PAGE_STATE).await;
    let hub = TestHub::new("").start().await;
    let o = owner(&hub, "class", "s3cret").await;
    let mut carol = performer(&o, "carol", "s3cret").await;
    carol.insert(0, "Clock.bpm = 120\n").await.unwrap();
    synced(&mut carol).await;

    page.open(&format!("http://{}/s/class", hub.http)).await;
    let form_shown = "!document.getElementById('password-form').hidden \
                      && document.getElementById('password-form').getBoundingClientRect().height > 0";
    page.wait_for(
        &format!("document.body.dataset.state === 'password' && {form_shown}"),
        Instant::now() + T,
        "the page asks for the password",
    )
    .await;
    assert_eq!(page.eval("document.activeElement.id").await, json!("password"), "the password field has focus");
    assert_eq!(page.eval("getComputedStyle(document.getElementById('doc')).visibility").await, json!("hidden"));

    // A wrong password: the form again, saying so.
    page.type_text("wrong").await;
    page.eval("document.getElementById('watch').click()").await;
    page.wait_for(
        &format!("document.getElementById('password-error').textContent === 'Wrong password' && {form_shown}"),
        Instant::now() + T,
        "a wrong password is refused",
    )
    .await;
    assert_eq!(page.eval("document.body.dataset.state").await, json!("password"));

    // The right one: live, with carol's code.
    page.eval("document.getElementById('password').focus()").await;
    page.type_text("s3cret").await;
    page.eval("document.getElementById('watch').click()").await;
    page.wait_for("document.body.dataset.state === 'live'", Instant::now() + T, "the right password goes live").await;
    assert_eq!(page.eval("document.getElementById('password-form').hidden").await, json!(true));
    page.wait_for(
        "document.getElementById('doc').textContent === 'Clock.bpm = 120\\n'",
        Instant::now() + T,
        "carol's code shows",
    )
    .await;
    assert_eq!(page.eval("getComputedStyle(document.getElementById('doc')).visibility").await, json!("visible"));

    page.eval("0").await;
    assert!(page.requests.iter().all(|u| !u.contains("s3cret")), "no password in a URL: {:?}", page.requests);
    assert_clean(&page, &hub);
    drop((carol, o));
}

/// The README's picture of the view: three performers' FoxDot code in their colours, their
/// cursors, a selection and a line flashing as it is evaluated. Not part of the suite:
/// `cargo test --test audience_browser -- --ignored --exact readme_screenshot` writes
/// docs/audience-view.png (or the file named by AUDIENCE_SCREENSHOT).
#[tokio::test]
#[ignore = "writes docs/audience-view.png; run it on purpose"]
async fn readme_screenshot() {
    let _one = ONE_BROWSER.lock().await;
    let hub = TestHub::new("audience: public").start().await;
    let o = owner(&hub, "friday-jam", "pw").await;
    let mut troupe = troupe(&o, &["ada", "ben", "cleo"]).await;

    // Each performer types their part in pieces, in turn.
    let parts = FRIDAY_JAM;
    let mut doc = String::new();
    let at = |doc: &str, needle: &str| doc[..doc.find(needle).expect(needle)].chars().count() as u64;
    for (who, text) in parts {
        let p = &mut troupe[who];
        sees(p, &doc).await;
        p.insert(doc.chars().count() as u64, text).await.unwrap();
        synced(p).await;
        doc = p.document().to_string();
    }
    // Ben tweaks Ada's pluck line, Ada turns Cleo's blip up an octave.
    sees(&mut troupe[1], &doc).await;
    troupe[1].insert(at(&doc, "amp=linvar([0.3"), "lpf=1200, ").await.unwrap();
    synced(&mut troupe[1]).await;
    doc = troupe[1].document().to_string();
    sees(&mut troupe[0], &doc).await;
    let six = at(&doc, "oct=6") + 4;
    troupe[0].delete(six, 1).await.unwrap();
    troupe[0].insert(six, "7").await.unwrap();
    synced(&mut troupe[0]).await;
    doc = troupe[0].document().to_string();
    for p in &mut troupe {
        sees(p, &doc).await;
    }
    // Ada's cursor goes back to her keys.
    let k = at(&doc, "room=0.6") as i64 + 5;
    troupe[0].send(Body::SetMark { index: k, reply: 1 }).await.unwrap();

    let mut page = Page::launch(PAGE_STATE).await;
    page.open(&format!("http://{}/s/friday-jam", hub.http)).await;
    page.wait_for(&format!("troopView.document === {}", js(&doc)), Instant::now() + T, "the code shows").await;
    page.wait_for("document.querySelectorAll('#doc span.cur').length === 3", Instant::now() + T, "cursors").await;
    // Cleo selects her group (a snapshot carries no selections: after the page is live).
    let s = at(&doc, "Group(") as i64;
    troupe[2].send(Body::Select { start: s, end: s + "Group(p1, p2)".len() as i64, reply: 1 }).await.unwrap();
    page.wait_for(
        "document.querySelector('#doc .s' + troopView.performers.find(p => p.name === 'cleo').colour)",
        Instant::now() + T,
        "the selection",
    )
    .await;
    page.eval("document.fonts.ready.then(() => true)").await;
    // Ben runs his drums: the picture catches the flash as it fades (its animation held at 400 ms).
    let d1 = doc[..doc.find("d1 >> play").unwrap()].matches('\n').count() as i64 + 1;
    troupe[1].send(Body::EvaluateBlock { start: d1, end: d1 + 2, reply: 1 }).await.unwrap();
    page.wait_for("document.querySelector('#doc [data-flash]')", Instant::now() + T, "a flash").await;
    page.eval("document.getAnimations().forEach(a => { a.pause(); a.currentTime = 400; })").await;
    let png = page.screenshot().await;
    let path = std::env::var("AUDIENCE_SCREENSHOT")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/docs/audience-view.png").into());
    if let Some(dir) = std::path::Path::new(&path).parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&path, png).unwrap();
    eprintln!("wrote {path}");
    assert_clean(&page, &hub);
}
