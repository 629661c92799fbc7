//! The hub's live paths against real session servers run in this process
//! ([`FakeRuntime::with_servers`]), no engine: arming over the real control channel, the warm
//! pool, following a session (who plays, what they type), recording it into an archive in a
//! temporary directory, viewers' caps and access, and an owner re-claiming an adopted session
//! through the password gate. Real Troop clients play; each test takes milliseconds.

use super::*;
use crate::archive::{ArchiveSettings, Page};
use crate::gate::Refused;
use crate::runtime::fake::FakeRuntime;
use crate::runtime::Existing;
use std::net::SocketAddr;
use std::time::Duration;
use troop_server::client::TroopClient;

const PW: &str = "pw";
const T: Duration = Duration::from_secs(5);

/// A hub on `fake` with the control channel on (the default), ports 100-103.
async fn hub(fake: &Arc<FakeRuntime>, yaml: &str) -> Arc<Hub> {
    super::tests::hub_from(fake, &format!("ports: 100-103\npublic_host: hub.example\n{yaml}")).await
}

fn req(name: &str, password: &str) -> StartRequest {
    StartRequest {
        name: name.into(),
        password: password.to_string().into(),
        daemon: false,
        peer: Some("192.0.2.7".parse().unwrap()),
        ttl: None,
    }
}

/// Polls `ok` until it holds, failing with `what` after a few seconds.
async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Where session `name`'s real server listens.
fn server_of(hub: &Hub, fake: &FakeRuntime, name: &str) -> SocketAddr {
    let handle = hub.list().into_iter().find(|s| s.name == name).and_then(|s| s.container).unwrap_or_default();
    let handle = fake.servers().into_keys().find(|h| h.starts_with(&handle)).unwrap_or_default();
    fake.server_addr(&handle).expect("a real server")
}

#[tokio::test]
async fn a_session_is_armed_followed_recorded_and_watched_over_its_real_control_channel() {
    let fake = Arc::new(FakeRuntime::with_servers());
    let hub = hub(&fake, "").await;
    let dir = tempfile::tempdir().unwrap();
    let settings = ArchiveSettings {
        path: dir.path().join("archive.db"),
        keep: Duration::from_secs(3600),
        max_session_bytes: 1 << 20,
        max_total_bytes: 1 << 30,
    };
    hub.set_archive(crate::archive::Archive::open(settings).unwrap());
    let owned = hub.start_session(req("jam", PW)).await.unwrap();
    let addr = server_of(&hub, &fake, "jam");
    // Armed with the password's md5: a wrong one is refused, the right one plays.
    assert!(TroopClient::join(addr, "mallory", "nope", T).await.is_err());
    let mut alice = TroopClient::join(addr, "alice", PW, T).await.expect("alice joins the armed server");
    alice.insert(0, "d1 >> play('x') # ü🎵").await.unwrap();
    while !alice.is_synchronized() {
        alice.recv(T).await.unwrap();
    }
    // The hub follows: who plays and what they did.
    until("the hub sees alice's edit", || {
        hub.live_view(&owned.id).is_some_and(|v| v.performers.len() == 1 && v.counters.operations == 1)
    })
    .await;
    // A viewer arriving now gets the document in a snapshot, serialised once and shared.
    let first = hub.watch("jam").unwrap();
    let second = hub.watch("jam").unwrap();
    let snapshot = first.snapshot.clone().expect("a snapshot");
    assert_eq!(snapshot.len(), 1, "a small document comes whole");
    assert!(snapshot[0].as_str().contains("d1 >> play('x') # ü🎵"), "{}", snapshot[0].as_str());
    assert!(second.snapshot.as_ref().is_some_and(|s| Arc::ptr_eq(s, &snapshot)), "serialised once, shared");
    assert_eq!(hub.viewer_count(), 2);
    drop((first, second));
    assert_eq!(hub.viewer_count(), 0, "places come back");
    // The owner leaves: the archive keeps the code, who played and why it ended.
    hub.owner_gone(&owned.id, false).await;
    let archive = hub.archive().cloned().unwrap();
    archive.flush().await;
    let summary = archive.summaries(Some("jam"), Page { limit: 10, before_ms: None }).unwrap().remove(0);
    assert_eq!(summary.performers, ["alice"]);
    assert_eq!(summary.end_reason.as_deref(), Some("its owner left"));
    assert_eq!(archive.code(&owned.id).unwrap().as_deref(), Some("d1 >> play('x') # ü🎵"));
    assert!(archive.verify(&owned.id, PW).unwrap(), "the session's password opens its archive");
    until("its server is gone", || fake.servers().is_empty()).await;
}

#[tokio::test]
async fn the_performers_total_follows_joins_leaves_and_endings() {
    // /metrics' `troop_hub_performers`, kept as sessions change rather than counted per scrape.
    let fake = Arc::new(FakeRuntime::with_servers());
    let hub = hub(&fake, "max_sessions_per_address: 2").await;
    let one = hub.start_session(req("one", PW)).await.unwrap();
    let two = hub.start_session(req("two", PW)).await.unwrap();
    let (at_one, at_two) = (server_of(&hub, &fake, "one"), server_of(&hub, &fake, "two"));
    let alice = TroopClient::join(at_one, "alice", PW, T).await.expect("alice joins one");
    let _bob = TroopClient::join(at_one, "bob", PW, T).await.expect("bob joins one");
    let _carol = TroopClient::join(at_two, "carol", PW, T).await.expect("carol joins two");
    until("three performers counted", || hub.gauges().performers == 3).await;
    alice.close().await;
    until("alice's leaving counted", || hub.gauges().performers == 2).await;
    hub.owner_gone(&one.id, false).await;
    until("session one's performers no longer counted", || hub.gauges().performers == 1).await;
    hub.owner_gone(&two.id, false).await;
    until("nobody counted", || hub.gauges().performers == 0).await;
}

#[tokio::test]
async fn a_warm_pool_member_is_a_locked_real_server_that_a_start_arms() {
    let fake = Arc::new(FakeRuntime::with_servers());
    let hub = hub(&fake, "warm_pool: 2").await;
    tokio::spawn(hub.clone().keep_pool());
    until("two members ready", || hub.pool_info().ready == 2).await;
    // A member is locked: nobody gets in before a start arms it.
    let member = fake.servers().into_keys().next().unwrap_or_default();
    let locked = fake.server_addr(&member).expect("a real member");
    assert!(TroopClient::join(locked, "early", "", T).await.is_err(), "a locked member refuses everyone");
    let owned = hub.start_session(req("gig", PW)).await.unwrap();
    assert_eq!(hub.pool_info().warm_starts, 1, "the start took a member");
    let addr = server_of(&hub, &fake, "gig");
    let _alice = TroopClient::join(addr, "alice", PW, T).await.expect("the armed member takes the session's password");
    until("the hub follows the member's session", || hub.live_view(&owned.id).is_some_and(|v| v.performers.len() == 1))
        .await;
    until("the pool refilled", || hub.pool_info().ready == 2).await;
    hub.shutdown().await;
    until("nothing left at shutdown", || fake.servers().is_empty()).await;
}

#[tokio::test]
async fn viewers_are_capped_and_let_go_when_the_view_closes() {
    let fake = Arc::new(FakeRuntime::with_servers());
    let hub = hub(&fake, "audience_viewers_per_session: 1").await;
    let owned = hub.start_session(req("view", PW)).await.unwrap();
    until("followed", || hub.live_view(&owned.id).is_some()).await;
    assert_eq!(hub.audience_access("view"), Some(crate::audience::Access::Password));
    let one = hub.watch("view").unwrap();
    assert!(matches!(hub.watch("view"), Err(WatchError::SessionFull { cap: 1, .. })));
    drop(one);
    let again = hub.watch("view").expect("the place came back");
    // The owner opens the view, then closes it: viewers hear of every change.
    let mut epoch = hub.audience_epoch();
    assert!(hub.set_audience_public("view", true));
    assert_eq!(hub.audience_access("view"), Some(crate::audience::Access::Public));
    tokio::time::timeout(T, epoch.changed()).await.expect("viewers are told").unwrap();
    assert!(hub.lobby().iter().any(|l| l.name == "view"), "a public view is in the lobby");
    assert!(hub.set_audience_public("view", false));
    tokio::time::timeout(T, epoch.changed()).await.expect("viewers are told again").unwrap();
    assert!(hub.lobby().is_empty());
    drop(again);
}

#[tokio::test]
async fn an_owner_reclaiming_an_adopted_session_goes_through_the_password_gate() {
    // A session left by an earlier hub (its server still running): this hub adopts it and
    // waits for its owner, who proves the password to the server itself.
    let fake = Arc::new(FakeRuntime::with_servers());
    let before = hub(&fake, "").await;
    let owned = before.start_session(req("left", PW)).await.unwrap();
    let handle = fake.servers().into_keys().next().unwrap_or_default();
    let existing: Existing = fake.servers().remove(&handle).map(|s| s.existing).unwrap();
    drop(owned);
    // The next hub finds it (labelled with its name, id and secret) and adopts it.
    let hub = hub(&fake, "orphans: adopt").await;
    assert!(hub.list().iter().any(|s| s.name == "left" && !s.owner_connected), "{:?}", existing.name);
    // Wrong passwords are charged to the address and the name, and refused past the limit.
    let guess = || StartRequest { peer: Some("198.51.100.9".parse().unwrap()), ..req("left", "guess") };
    let mut refused = None;
    for _ in 0..12 {
        match hub.start_session(guess()).await {
            Err(HubError::Refused(r)) => {
                refused = Some(r);
                break;
            }
            other => assert!(other.is_err(), "a guess never takes the session over"),
        }
    }
    assert!(matches!(refused, Some(Refused::Address(_))), "guesses are limited: {refused:?}");
    // The owner, from elsewhere, still gets it back with the right password.
    let mine = hub.start_session(req("left", PW)).await.expect("the owner reclaims it");
    assert_eq!(mine.id, existing.session_id.unwrap_or_default());
}
