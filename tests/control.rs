//! The hub talking to its sessions over their control channel, against real Docker: every
//! ending path tells the performers why (MSG_KILL with the hub's sentence in their Troop
//! console), no password material sits in a session container's configuration, and the hub's
//! live view shows who is playing.

mod common;

use common::{docker_ok, eventually, http, owner, TestHub, T};
use std::net::SocketAddr;
use std::time::Duration;
use troop_hub::admin::{self, start_session, Owner};
use troop_server::client::TroopClient;
use troop_server::message::Body;

const TOKEN: &str = "control-admin-token-93c2f1a6e07b4d58";

async fn hub_with(extra: &str) -> TestHub {
    common::hub_with_token(extra, TOKEN).await
}

async fn performer(o: &Owner, name: &str) -> TroopClient {
    let addr = SocketAddr::from(([127, 0, 0, 1], o.port));
    TroopClient::join(addr, name, "pw", T).await.expect("a performer joins")
}

/// The text of the MSG_KILL the performer gets.
async fn killed_with(c: &mut TroopClient) -> String {
    let m = c.recv_until_match(T, |_, m| matches!(m.body, Body::Kill { .. })).await.expect("MSG_KILL arrives");
    match m.body {
        Body::Kill { string } => string,
        other => panic!("not a kill: {other:?}"),
    }
}

#[tokio::test]
async fn every_ending_path_tells_the_performers_why() {
    let mut hub = hub_with("max_sessions: 5").await;
    // The owner leaves (Ctrl-C in run-server.py closes its connection).
    let o = owner(&hub, "left", "pw").await;
    let mut alice = performer(&o, "alice").await;
    drop(o);
    assert_eq!(killed_with(&mut alice).await, "Troop Hub: the session has ended: its owner left.");

    // An admin, through the hub protocol and through the API.
    let _o = owner(&hub, "killed", "pw").await;
    let mut bob = performer(&_o, "bob").await;
    admin::kill(hub.addr, "killed").await.expect("killed");
    assert_eq!(killed_with(&mut bob).await, "Troop Hub: the session has ended: an admin ended it.");
    let _o = owner(&hub, "deleted", "pw").await;
    let mut carol = performer(&_o, "carol").await;
    let r = http(hub.http, "DELETE", "/api/v1/sessions/deleted", Some(TOKEN), None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(killed_with(&mut carol).await, "Troop Hub: the session has ended: an admin ended it.");

    // The hub shutting down.
    let o = owner(&hub, "last", "pw").await;
    let mut dave = performer(&o, "dave").await;
    hub.signal("TERM");
    assert_eq!(killed_with(&mut dave).await, "Troop Hub: the session has ended: the hub is shutting down.");
    assert_eq!(hub.wait_exit(T).await, Some(0));
    assert!(hub.containers().is_empty(), "no container left");
    drop(o);
}

#[tokio::test]
async fn a_session_past_the_age_limit_tells_its_performers() {
    let hub = hub_with("max_session_age: 3s").await;
    let o = owner(&hub, "old", "pw").await;
    let mut erin = performer(&o, "erin").await;
    assert_eq!(
        killed_with(&mut erin).await,
        "Troop Hub: the session has ended: it reached the hub's time limit for sessions."
    );
    hub.wait_containers(0).await;
}

#[tokio::test]
async fn no_password_or_md5_in_the_session_containers_configuration() {
    let hub = hub_with("").await;
    let password = "hunter2-is-my-password";
    let md5 = troop_server::md5_hex(password);
    let o = owner(&hub, "private", password).await;
    let container = hub.containers().into_iter().next().expect("a session container");
    let inspect = docker_ok(&["inspect", &container]);
    assert!(!inspect.contains(password), "the password is not in docker inspect");
    assert!(!inspect.contains(&md5), "the password's md5 is not in docker inspect");
    assert!(!inspect.contains("TROOP_PASSWORD"), "no password variable at all");
    assert!(inspect.contains("TROOP_CONTROL_SECRET="), "the per-session control secret is (README says so)");
    // The session is armed: the right password logs in, a wrong one does not.
    let addr = SocketAddr::from(([127, 0, 0, 1], o.port));
    assert!(TroopClient::join(addr, "frank", password, T).await.is_ok());
    assert!(TroopClient::join(addr, "grace", "wrong", T).await.is_err());
    assert!(!hub.log().contains(&md5) && !hub.log().contains(password), "nothing of it in the hub's log");
}

/// The names of the performers the admin API shows in session `name`.
async fn performers(hub: &TestHub, name: &str) -> Vec<String> {
    let list = http(hub.http, "GET", "/api/v1/sessions", Some(TOKEN), None).await.json();
    let sessions = list["sessions"].as_array().cloned().unwrap_or_default();
    let s = sessions.iter().find(|s| s["name"] == name).cloned().unwrap_or_default();
    let mut names: Vec<String> =
        s["performers"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str().map(String::from)).collect();
    names.sort();
    names
}

async fn within_a_second(hub: &TestHub, name: &str, want: &[&str]) {
    within(hub, name, want, Duration::from_secs(1)).await
}

async fn within(hub: &TestHub, name: &str, want: &[&str], time: Duration) {
    eventually(&format!("performers {want:?}"), time, async || {
        let got = performers(hub, name).await;
        if got == want {
            Ok(())
        } else {
            Err(format!("performers {got:?}"))
        }
    })
    .await
}

#[tokio::test]
async fn the_api_shows_who_is_playing_within_a_second() {
    let hub = hub_with("").await;
    let o = owner(&hub, "insight", "pw").await;
    let mut heidi = performer(&o, "heidi").await;
    let ivan = performer(&o, "ivan").await;
    within_a_second(&hub, "insight", &["heidi", "ivan"]).await;
    heidi.insert(0, "d1 >> play('x')").await.expect("an edit");
    ivan.close().await;
    within_a_second(&hub, "insight", &["heidi"]).await;
    let metrics = http(hub.http, "GET", "/metrics", None, None).await.body;
    assert!(metrics.contains("troop_hub_performers 1"), "{metrics}");
    let list = admin::list(hub.addr).await.expect("list");
    assert!(list.contains("heidi"), "the operator's list names the performers: {list}");
}

#[tokio::test]
async fn a_hub_restarted_after_sigkill_follows_its_adopted_sessions_again() {
    let mut hub = hub_with("orphans: adopt").await;
    let o = owner(&hub, "kept", "pw").await;
    let mut kim = performer(&o, "kim").await;
    within_a_second(&hub, "kept", &["kim"]).await;
    hub.signal("KILL");
    hub.wait_exit(T).await;
    drop(o);
    hub.spawn().await;
    // The restarted hub has no md5: it reads the control secret back, subscribes again, and
    // lets the server judge the returning owner's password. (Its recovery comes first, and
    // can take more than a second on a busy engine.)
    within(&hub, "kept", &["kim"], T).await;
    assert!(start_session(hub.addr, "kept", "guess", T).await.expect("answered").is_err());
    let back = owner(&hub, "kept", "pw").await;
    drop(back);
    assert_eq!(killed_with(&mut kim).await, "Troop Hub: the session has ended: its owner left.");
}
