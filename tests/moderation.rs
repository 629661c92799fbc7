//! The show's owner controls against real Docker and real sockets: the owner removes a
//! performer (who reads the hub's sentence with the owner's reason, Troop's MSG_KILL) and
//! locks the session (the removed performer and newcomers stay out, the others keep playing);
//! both are in the archived timeline and the log (without the password); statistics per
//! performer are on the session and the archive summary; share links open a session's view
//! and a past performance without the password until they expire or are revoked.

mod common;

use common::{http, metric, owner, performer, request, TestHub, T};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use troop_server::client::{login, ClientError, TroopClient};
use troop_server::message::Body;

const TOKEN: &str = "moderation-admin-token-5c1e9a7b3d2f8064";
/// Not ASCII: the header carries it as utf-8''<percent-encoded>.
const PW: &str = "pw-gig über 🎵";
const PW_HEADER: &str = "utf-8''pw-gig%20%C3%BCber%20%F0%9F%8E%B5";

async fn hub_with_archive(extra: &str) -> TestHub {
    let mut hub = TestHub::new("");
    let db = hub.dir.path().join("data").join("archive.db");
    hub.extra_yaml = format!("archive: {{path: {}}}\n{extra}", db.display());
    hub.envs.push(("TROOP_HUB_ADMIN_TOKEN".into(), TOKEN.into()));
    hub.start().await
}

/// An owner's request: the password in the header.
async fn as_owner(hub: &TestHub, method: &str, path: &str, body: Option<&str>) -> common::HttpResponse {
    with_password(hub, PW_HEADER, method, path, body).await
}

/// A request with `header` as its `X-Session-Password`.
async fn with_password(
    hub: &TestHub,
    header: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> common::HttpResponse {
    request(hub.http, method, path, &[("X-Session-Password", header)], body).await
}

/// The session's record as its owner reads it.
async fn record(hub: &TestHub, name: &str) -> Value {
    let r = as_owner(hub, "GET", &format!("/api/v1/sessions/{name}"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// Reads until the server has acknowledged the client's own edits.
async fn synced(c: &mut TroopClient) {
    while !c.is_synchronized() {
        c.recv(T).await.expect("the server acknowledges the edit");
    }
}

#[tokio::test]
async fn a_removed_performer_reads_why_and_stays_out_while_the_session_is_locked() {
    let hub = hub_with_archive("").await;
    let o = owner(&hub, "gig", PW).await;
    let mut alice = performer(&o, "alice", PW).await;
    let mut bob = performer(&o, "bob", PW).await;
    alice.recv_until_match(T, |_, m| matches!(m.body, Body::Reset { .. })).await.expect("bob's join resets alice");
    let path = "/api/v1/sessions/gig";
    assert_eq!(http(hub.http, "GET", path, None, None).await.json()["locked"], json!(false));

    // Wrong, missing and right proofs.
    let wrong = with_password(&hub, "nope", "POST", &format!("{path}/lock"), Some(r#"{"locked":true}"#)).await;
    assert_eq!(wrong.status, 403, "{}", wrong.body);
    let none = http(hub.http, "POST", &format!("{path}/lock"), None, Some(r#"{"locked":true}"#)).await;
    assert_eq!(none.status, 400, "{}", none.body);
    let locked = as_owner(&hub, "POST", &format!("{path}/lock"), Some(r#"{"locked":true}"#)).await;
    assert_eq!((locked.status, locked.json()["locked"].clone()), (200, json!(true)), "{}", locked.body);
    assert_eq!(http(hub.http, "GET", path, None, None).await.json()["locked"], json!(true), "anyone can see it");

    // Bob is removed with a reason; he reads it, his connection ends, alice is told.
    let removed =
        as_owner(&hub, "DELETE", &format!("{path}/performers/bob"), Some(r#"{"reason":"too loud\nsorry"}"#)).await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(removed.json()["clients"], json!([1]));
    let seen = bob.expect_closed(T).await.expect("bob's connection is closed");
    let kills: Vec<String> = seen
        .iter()
        .filter_map(|m| match &m.body {
            Body::Kill { string } => Some(string.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(kills, vec!["Troop Hub: the session's owner removed you from the session: too loud sorry".to_string()]);
    alice.recv_until_match(T, |_, m| m.src_id == 1 && matches!(m.body, Body::Remove)).await.expect("alice is told");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], o.port));
    assert!(matches!(login(addr, "bob", PW).await, Err(ClientError::Refused(-2))), "bob stays out while locked");
    assert!(matches!(login(addr, "carol", PW).await, Err(ClientError::Refused(-2))), "so does a newcomer");
    let nobody = as_owner(&hub, "DELETE", &format!("{path}/performers/nobody"), None).await;
    assert_eq!(nobody.status, 404, "{}", nobody.body);
    // Bad input: a clear error, nothing changes.
    let long = format!("{path}/performers/{}", "x".repeat(200));
    for (method, target, body, status) in [
        ("DELETE", long.as_str(), None, 400),
        ("DELETE", "/api/v1/sessions/gig/performers/alice", Some("{\"reason\": 5}"), 400),
        ("DELETE", "/api/v1/sessions/gig/performers/alice", Some("not json"), 400),
        ("POST", "/api/v1/sessions/gig/lock", Some("{}"), 400),
        ("POST", "/api/v1/sessions/gig/lock", Some("{\"locked\": \"yes\"}"), 400),
        ("POST", "/api/v1/sessions/nosuch/lock", Some("{\"locked\": true}"), 404),
        ("POST", "/api/v1/sessions/bad%20name/lock", Some("{\"locked\": true}"), 400),
    ] {
        let r = as_owner(&hub, method, target, body).await;
        assert_eq!(r.status, status, "{method} {target} {body:?}: {}", r.body);
        assert!(r.json()["error"].as_str().is_some_and(|e| !e.is_empty()), "a sentence: {}", r.body);
    }
    let garbled = with_password(&hub, "utf-8''%FF", "POST", &format!("{path}/lock"), Some(r#"{"locked":false}"#)).await;
    assert_eq!(garbled.status, 400, "{}", garbled.body);
    assert_eq!(http(hub.http, "GET", path, None, None).await.json()["locked"], json!(true), "still locked");

    // Alice keeps playing, and her figures show.
    alice.insert(0, "d1 >> play('x-o-')\n").await.expect("alice types");
    synced(&mut alice).await;
    alice.send(Body::EvaluateBlock { start: 1, end: 2, reply: 0 }).await.expect("alice runs it");
    let stats = hub
        .eventually("alice's statistics", T, async || {
            let s = record(&hub, "gig").await;
            let a = s["session"]["stats"]["alice"].clone();
            (a["evaluations"] == json!(1)).then_some(s["session"].clone()).ok_or(format!("{s}"))
        })
        .await;
    assert_eq!(stats["locked"], json!(true));
    assert_eq!(stats["stats"]["alice"]["typed"], json!(19));
    assert_eq!(stats["stats"]["alice"]["share"], json!(1.0));
    assert_eq!(stats["performers"].as_array().map(Vec::len), Some(1), "bob is gone: {stats}");
    let metrics = http(hub.http, "GET", "/metrics", None, None).await.body;
    assert_eq!(metric(&metrics, "troop_hub_performers_removed_total"), 1.0);
    assert_eq!(metric(&metrics, "troop_hub_session_typed_characters_total"), 19.0);

    // Unlocked, bob may come back.
    let open = as_owner(&hub, "POST", &format!("{path}/lock"), Some(r#"{"locked":false}"#)).await;
    assert_eq!(open.json()["locked"], json!(false));
    let bob_again = TroopClient::join(addr, "bob", PW, T).await.expect("bob comes back once unlocked");
    drop(bob_again);

    // The timeline has both, in order; the log names bob but never the password.
    drop(o);
    let (id, timeline) = hub
        .eventually("the archived timeline", T, async || {
            let listed = request(
                hub.http,
                "GET",
                "/api/v1/archive?name=gig",
                &[("Authorization", &format!("Bearer {TOKEN}"))],
                None,
            )
            .await;
            let first = listed.json()[0].clone();
            if first["ended_ms"].is_null() {
                return Err(format!("not ended yet: {}", listed.body));
            }
            let id = first["id"].as_str().unwrap_or_default().to_string();
            let t = http(hub.http, "GET", &format!("/api/v1/archive/{id}/timeline"), Some(TOKEN), None).await;
            Ok((id, t.body))
        })
        .await;
    let kinds: Vec<String> = timeline
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["type"] == "removed" || m["type"] == "lock")
        .map(|m| format!("{} {} {}", m["type"], m["name"], m["locked"]))
        .collect();
    assert_eq!(kinds, vec!["\"lock\" null true", "\"removed\" \"bob\" null", "\"lock\" null false"], "{timeline}");
    assert!(!timeline.contains("too loud"), "the reason stays between the owner and bob");
    let summary = http(hub.http, "GET", &format!("/api/v1/archive/{id}"), Some(TOKEN), None).await.json();
    assert_eq!(summary["stats"]["alice"]["evaluations"], json!(1), "{summary}");
    let log = hub.log();
    assert!(log.contains("performer removed by the session's owner"), "the log says so");
    assert!(!log.contains("über") && !log.contains(&troop_server::md5_hex(PW)), "no password in the log");
}

/// A viewer's first answer on the live feed with `hello` sent first: the snapshot's session
/// name, or the close code and the error before it.
async fn watch(hub: &TestHub, name: &str, hello: Value) -> Result<String, (u16, String)> {
    let url = format!("ws://{}/api/v1/sessions/{name}/live", hub.http);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("upgraded");
    ws.send(Message::text(hello.to_string())).await.expect("hello sent");
    let mut error = String::new();
    loop {
        match tokio::time::timeout(T, ws.next()).await.expect("an answer in time") {
            Some(Ok(Message::Text(t))) => {
                let m: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                match m["type"].as_str() {
                    Some("snapshot") => return Ok(m["session"].as_str().unwrap_or_default().to_string()),
                    Some("error") => error = m["message"].as_str().unwrap_or_default().to_string(),
                    _ => {}
                }
            }
            Some(Ok(Message::Close(frame))) => return Err((frame.map(|f| u16::from(f.code)).unwrap_or(0), error)),
            Some(Ok(_)) => {}
            other => panic!("the socket ended without a close: {other:?}"),
        }
    }
}

/// The token in a link's URL.
fn token_of(url: &str) -> String {
    url.split("#share=").nth(1).unwrap_or_default().split('&').next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn share_links_open_the_view_until_they_expire_or_are_revoked() {
    let hub = hub_with_archive("").await;
    let o = owner(&hub, "gig", PW).await;
    let _other = owner(&hub, "other", "pw2").await;
    let links = "/api/v1/sessions/gig/links";
    let body = r#"{"expires_in": "30m", "params": "stage&bg=transparent"}"#;
    let made = as_owner(&hub, "POST", links, Some(body)).await;
    assert_eq!(made.status, 201, "{}", made.body);
    let made = made.json();
    let url = made["url"].as_str().unwrap_or_default().to_string();
    assert!(
        url.starts_with(&format!("http://{}/s/gig#share=", hub.http)) && url.ends_with("&stage&bg=transparent"),
        "{url}"
    );
    assert!(made["qr_svg"].as_str().unwrap_or_default().contains("<svg"), "a QR code");
    let token = token_of(&url);
    assert_eq!(token.len(), 64);
    assert!(!hub.log().contains(&token), "the token is never logged");

    assert_eq!(watch(&hub, "gig", json!({"share": token})).await, Ok("gig".to_string()), "the link opens the view");
    let elsewhere = watch(&hub, "other", json!({"share": token})).await;
    assert_eq!(elsewhere.map_err(|e| e.0), Err(4403), "only its own session's");
    let listed = as_owner(&hub, "GET", links, None).await.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert!(!listed.to_string().contains(&token), "listing never shows a token");
    let no_password = http(hub.http, "GET", links, None, None).await;
    assert_eq!(no_password.status, 400);

    // Revoked: refused, and a viewer it let in is let go.
    let url2 = format!("ws://{}/api/v1/sessions/gig/live", hub.http);
    let (mut viewer, _) = tokio_tungstenite::connect_async(url2).await.expect("upgraded");
    viewer.send(Message::text(json!({"share": token}).to_string())).await.expect("sent");
    let first = tokio::time::timeout(T, viewer.next()).await.expect("in time");
    assert!(matches!(first, Some(Ok(Message::Text(ref t))) if t.as_str().contains("\"snapshot\"")), "{first:?}");
    let id = made["id"].as_str().unwrap_or_default();
    assert_eq!(as_owner(&hub, "DELETE", &format!("{links}/{id}"), None).await.status, 204);
    let deadline = Instant::now() + T;
    let code = loop {
        match tokio::time::timeout_at(deadline.into(), viewer.next()).await.expect("let go in time") {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("no close: {other:?}"),
        }
    };
    assert_eq!(code, Some(4403));
    let revoked = watch(&hub, "gig", json!({"share": token})).await;
    assert!(matches!(&revoked, Err((4403, e)) if e.contains("expired or was revoked")), "{revoked:?}");

    // Expired by itself.
    let short = as_owner(&hub, "POST", links, Some(r#"{"expires_in": 1}"#)).await.json();
    let short = token_of(short["url"].as_str().unwrap_or_default());
    hub.eventually("the one-second link to expire", T, async || {
        match watch(&hub, "gig", json!({"share": short})).await {
            Err((4403, _)) => Ok(()),
            other => Err(format!("still {other:?}")),
        }
    })
    .await;
    let bad = as_owner(&hub, "POST", links, Some(r#"{"expires_in": "forever"}"#)).await;
    assert_eq!(bad.status, 400, "{}", bad.body);

    // When the session ends its links go with it.
    let live = as_owner(&hub, "POST", links, Some("{}")).await.json();
    let live = token_of(live["url"].as_str().unwrap_or_default());
    drop(o);
    hub.eventually("the session to end", T, async || {
        let r = http(hub.http, "GET", "/api/v1/sessions/gig", None, None).await;
        (r.status == 404).then_some(()).ok_or(r.body)
    })
    .await;
    let _again = owner(&hub, "gig", PW).await;
    assert_eq!(watch(&hub, "gig", json!({"share": live})).await.map_err(|e| e.0), Err(4403), "not the next session's");

    // A past performance's link reads it while it holds, and manages nothing.
    let admin = format!("Bearer {TOKEN}");
    let listed = request(hub.http, "GET", "/api/v1/archive?name=gig", &[("Authorization", &admin)], None).await.json();
    let id = listed.as_array().and_then(|l| l.iter().find(|s| !s["ended_ms"].is_null())).map(|s| s["id"].clone());
    let id = id.and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    let links = format!("/api/v1/archive/{id}/links");
    let made = request(hub.http, "POST", &links, &[("Authorization", &admin)], Some(r#"{"expires_in": "1d"}"#)).await;
    assert_eq!(made.status, 201, "{}", made.body);
    let made = made.json();
    assert!(made["url"].as_str().is_some_and(|u| u.contains(&format!("/a/{id}#share="))), "{made}");
    let share = token_of(made["url"].as_str().unwrap_or_default());
    // Trading the link for a reading token, as the replay page does.
    let trade = || {
        let body = json!({"share": share}).to_string();
        let path = format!("/api/v1/archive/{id}/access");
        async move { http(hub.http, "POST", &path, None, Some(&body)).await }
    };
    let access = trade().await;
    assert_eq!(access.status, 200, "{}", access.body);
    let reading = access.json()["token"].as_str().unwrap_or_default().to_string();
    let with = [("X-Archive-Token", reading.as_str())];
    assert_eq!(request(hub.http, "GET", &format!("/api/v1/archive/{id}"), &with, None).await.status, 200, "it reads");
    assert_eq!(request(hub.http, "POST", &links, &with, Some("{}")).await.status, 403, "it makes no links");
    assert_eq!(request(hub.http, "GET", &links, &with, None).await.status, 403, "it lists none");
    let link_id = made["id"].as_str().unwrap_or_default();
    let revoke_by_link = request(hub.http, "DELETE", &format!("{links}/{link_id}"), &with, None).await;
    assert_eq!(revoke_by_link.status, 403, "it revokes none");
    let revoked = request(hub.http, "DELETE", &format!("{links}/{link_id}"), &[("Authorization", &admin)], None).await;
    assert_eq!(revoked.status, 204, "{}", revoked.body);
    let after = request(hub.http, "GET", &format!("/api/v1/archive/{id}"), &with, None).await;
    assert_eq!(after.status, 401, "its reading token ends with the link: {}", after.body);
    let again = trade().await;
    assert_eq!(again.status, 403, "{}", again.body);
}
