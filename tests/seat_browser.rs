//! The browser seat in a real headless chromium against a real hub and Docker: a performer
//! joins from `/s/{name}/play`, types into the editor and evaluates with Ctrl+Return while a
//! Troop client plays beside it, sees the other performer's edit, and reads the hub's ending
//! sentence; two pages and two Troop clients typing into the same line at once end with the
//! same document everywhere, and a page joining late gets the whole of it.

mod common;

use common::browser::{assert_clean, js, Page, ONE_BROWSER};
use common::{owner, TestHub, T};
use serde_json::json;
use std::time::{Duration, Instant};
use troop_server::client::TroopClient;
use troop_server::message::Body;

const SEAT_STATE: &str = r##"(() => ({
  url: location.href,
  state: document.body && document.body.dataset.state,
  error: (document.getElementById("join-error") || {}).textContent,
  banner: (document.getElementById("banner-text") || {}).textContent,
  text: window.troopSeat && troopSeat.cm && troopSeat.cm.getValue(),
  model: window.troopSeat && troopSeat.doc && troopSeat.doc.text(),
  console: [...document.querySelectorAll("#console-log li")].map(li => li.textContent).slice(-8),
}))()"##;

async fn synced(c: &mut TroopClient) {
    while !c.is_synchronized() {
        c.recv(T).await.expect("acknowledged");
    }
}

/// Opens the seat page of `session` and joins as `name`.
async fn join(page: &mut Page, hub: &TestHub, session: &str, name: &str, password: &str) {
    page.open(&format!("http://{}/s/{session}/play", hub.http)).await;
    let prefilled = page.eval("document.getElementById('join-session').value").await;
    assert_eq!(prefilled, json!(session), "the session's name comes from the link");
    // The page may remember the last name used: typed afresh.
    page.eval("document.getElementById('join-name').value = ''").await;
    page.click("#join-name").await;
    page.type_text(name).await;
    page.click("#join-password").await;
    page.type_text(password).await;
    page.click("#join-button").await;
}

/// Waits until the seat is in the session with its editor ready.
async fn seated(page: &mut Page) {
    let ready = "document.body.dataset.state === 'live' && troopSeat.id >= 0 && !!troopSeat.cm \
                 && !troopSeat.cm.getOption('readOnly')";
    page.wait_for(ready, Instant::now() + T, "the seat joins and its editor opens").await;
}

/// A key press with modifiers (2: Ctrl, 1: Alt) to the focused element.
async fn press(page: &mut Page, key: &str, code: u32, modifiers: u32) {
    for kind in ["rawKeyDown", "keyUp"] {
        let event =
            json!({"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code, "modifiers": modifiers});
        page.call("Input.dispatchKeyEvent", event).await;
    }
}

#[tokio::test]
async fn a_performer_plays_from_a_browser_beside_a_troop_client() {
    let _one = ONE_BROWSER.lock().await;
    let mut page = Page::launch(SEAT_STATE).await;
    let hub = TestHub::new("").start().await;
    let o = owner(&hub, "jam", "pw").await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], o.port));
    let mut alice = TroopClient::join(addr, "alice", "pw", T).await.expect("alice joins");

    // A wrong password gets one sentence and the form stays.
    join(&mut page, &hub, "jam", "bea", "nope").await;
    let refused =
        "document.getElementById('join-error').textContent.length > 0 && document.body.dataset.state === 'join'";
    page.wait_for(refused, Instant::now() + T, "a wrong password is refused on the form").await;
    let said = page.eval("document.getElementById('join-error').textContent").await;
    assert!(said.as_str().is_some_and(|s| s.to_lowercase().contains("password")), "{said}");

    join(&mut page, &hub, "jam", "bea", "pw").await;
    seated(&mut page).await;
    let bea = page.eval("troopSeat.id").await.as_i64().expect("an id");
    alice
        .recv_until_match(T, |_, m| matches!(&m.body, Body::Connect { name, .. } if name == "bea"))
        .await
        .expect("alice sees bea join like any Troop client");

    // bea types in the editor (the note is one code point for Troop).
    page.eval("troopSeat.cm.focus()").await;
    page.type_text("d1 >> play('x-o') # 🎵").await;
    alice.recv_until_match(T, |a, _| a.document() == "d1 >> play('x-o') # 🎵").await.expect("alice gets bea's typing");

    // Ctrl+Return evaluates the block: alice's Troop is asked to run lines 1..2.
    press(&mut page, "Enter", 13, 2).await;
    let eval = alice.recv_until_match(T, |_, m| matches!(m.body, Body::EvaluateBlock { .. })).await.unwrap();
    assert_eq!(eval.src_id, bea, "the evaluation is bea's");
    let Body::EvaluateBlock { start, end, .. } = eval.body else { unreachable!() };
    assert_eq!((start, end), (1, 2), "Troop's block: the one line");
    page.wait_for(
        "[...document.querySelectorAll('#console-log li')].some(li => li.textContent.includes(\"play('x-o')\"))",
        Instant::now() + T,
        "the console shows what bea evaluated",
    )
    .await;

    // alice types on the next line: bea sees it within 200 ms of its acknowledgement.
    synced(&mut alice).await;
    let len = alice.document().chars().count() as u64;
    alice.insert(len, "\np1 >> pluck() # über").await.unwrap();
    synced(&mut alice).await;
    let acked = Instant::now();
    let want = alice.document().to_string();
    let shown = format!("troopSeat.cm.getValue() === {}", js(&want));
    let at = page.wait_for(&shown, acked + Duration::from_millis(200), "alice's edit shows within 200 ms").await;
    eprintln!("alice's edit showed {:?} after its acknowledgement", at - acked);
    assert_eq!(page.eval("troopSeat.doc.text()").await, json!(want), "the model agrees");
    let names = "[...document.querySelectorAll('#performers li')].map(li => li.textContent).join(' ')";
    let listed = page.eval(names).await;
    assert!(listed.as_str().is_some_and(|s| s.contains("alice") && s.contains("bea")), "{listed}");

    // The owner leaves: bea reads the hub's sentence, as alice gets it from her server.
    drop(o);
    page.wait_for("document.body.dataset.state === 'ended'", Instant::now() + T, "the seat hears the end").await;
    let kill = alice.recv_until_match(T, |_, m| matches!(m.body, Body::Kill { .. })).await;
    let banner = page.eval("document.getElementById('banner-text').textContent").await;
    if let Ok(troop_server::message::Message { body: Body::Kill { string }, .. }) = kill {
        assert!(banner.as_str().is_some_and(|b| b.contains(&string)), "banner {banner} vs {string}");
    }
    assert!(banner.as_str().is_some_and(|b| b.contains("owner left")), "{banner}");
    assert!(page.eval("troopSeat.cm.getOption('readOnly')").await.as_bool().unwrap_or(false));
    page.eval("0").await;
    assert_clean(&page, &hub);
}

/// Types `n` characters into line 1 of the page's editor at random places, one every `ms`.
fn type_into_line_one(tag: &str, n: u32, ms: u32) -> String {
    format!(
        r#"new Promise(done => {{
          let left = {n};
          const t = setInterval(() => {{
            const cm = troopSeat.cm, points = Array.from(cm.getLine(0) || "");
            // A place between code points (never inside a surrogate pair), in UTF-16 units.
            const k = Math.floor(Math.random() * (points.length + 1));
            const ch = points.slice(0, k).join("").length;
            cm.replaceRange({tag}, {{ line: 0, ch }}, {{ line: 0, ch }}, "+input");
            if (--left === 0) {{ clearInterval(t); done(true); }}
          }}, {ms});
        }})"#,
        tag = js(tag)
    )
}

#[tokio::test]
async fn two_pages_and_two_troop_clients_typing_into_one_line_converge() {
    let _one = ONE_BROWSER.lock().await;
    let mut p1 = Page::launch(SEAT_STATE).await;
    let mut p2 = Page::launch(SEAT_STATE).await;
    let hub = TestHub::new("").start().await;
    let o = owner(&hub, "jam", "pw").await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], o.port));
    let mut a = TroopClient::join(addr, "ann", "pw", T).await.unwrap();
    let mut b = TroopClient::join(addr, "ben", "pw", T).await.unwrap();
    a.insert(0, "# one line: ü🎵\n").await.unwrap();
    synced(&mut a).await;
    join(&mut p1, &hub, "jam", "cat", "pw").await;
    seated(&mut p1).await;
    join(&mut p2, &hub, "jam", "dan", "pw").await;
    seated(&mut p2).await;
    for c in [&mut a, &mut b] {
        while c.try_recv().await.unwrap().is_some() {}
        synced(c).await;
    }

    // Everyone types into line 1 at once: the pages from their editors, the clients over TCP.
    let started = Instant::now();
    let (r1, r2) = (type_into_line_one("c", 40, 15), type_into_line_one("🎹", 40, 15));
    p1.eval(&format!("window.typing = {r1}; true")).await;
    p2.eval(&format!("window.typing = {r2}; true")).await;
    let mut seed = 7u64;
    for i in 0..40u32 {
        for (c, tag) in [(&mut a, "A"), (&mut b, "é")] {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let line_one = c.document().split('\n').next().unwrap_or("").chars().count() as u64;
            c.insert((seed >> 33) % (line_one + 1), tag).await.unwrap();
            while c.try_recv().await.unwrap().is_some() {}
        }
        if i % 8 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    p1.eval("window.typing").await;
    p2.eval("window.typing").await;
    for c in [&mut a, &mut b] {
        synced(c).await;
    }
    // All quiet: everyone holds the server's document.
    let deadline = Instant::now() + T;
    loop {
        for c in [&mut a, &mut b] {
            while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(20), c.recv(T)).await {}
        }
        let want = a.document().to_string();
        let same = b.document() == want
            && p1.eval("troopSeat.cm.getValue()").await == json!(want)
            && p2.eval("troopSeat.cm.getValue()").await == json!(want);
        if same {
            break;
        }
        assert!(Instant::now() < deadline, "not converged: a {:?} b {:?}", a.document(), b.document());
    }
    let want = a.document().to_string();
    eprintln!("converged after {:?}: {want:?}", started.elapsed());
    let line_one = want.split('\n').next().unwrap_or("");
    for (tag, n) in [("c", 40), ("🎹", 40), ("A", 40), ("é", 40)] {
        assert_eq!(line_one.matches(tag).count(), n, "every {tag} typed is there once: {line_one}");
    }
    for p in [&mut p1, &mut p2] {
        assert_eq!(p.eval("troopSeat.doc.text()").await, json!(want), "the page's model agrees");
    }

    // A page joining now gets the whole document.
    let mut p3 = p2;
    join(&mut p3, &hub, "jam", "eve", "pw").await;
    seated(&mut p3).await;
    assert_eq!(p3.eval("troopSeat.cm.getValue()").await, json!(want));
    assert_clean(&p1, &hub);
    drop(o);
}
