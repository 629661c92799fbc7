//! The hub's lifecycles against the in-memory [`FakeRuntime`], on tokio's paused clock:
//! every path that used to need real Docker and timing (kill during a start, a port held by
//! a stranger, a node whose starts fail, recovery with servers still starting, shutdown with
//! starts in flight, each end reason and what the owner is told). The real-engine tests in
//! `tests/` stay the proof that the Docker and Swarm paths work.

use super::*;
use crate::registry::Node;
use crate::runtime::fake::FakeRuntime;
use crate::runtime::{Credentials, Existing};
use std::time::{Duration, SystemTime};

const PW: &str = "pw";

/// The fake runs no real servers, so there is no control channel to arm (the real-engine
/// tests in tests/control.rs cover it).
const BASE: &str = "ports: 100-103\npublic_host: hub.example\ncontrol_channel: false\n";

/// A hub on the fake runtime with ports 100-103, its nodes known and recovery done.
async fn hub(fake: &Arc<FakeRuntime>, yaml: &str) -> Arc<Hub> {
    hub_from(fake, &format!("{BASE}{yaml}")).await
}

/// A hub on `fake` configured by `yaml` alone, its nodes known and recovery done.
pub(super) async fn hub_from(fake: &Arc<FakeRuntime>, yaml: &str) -> Arc<Hub> {
    let config = Config::from_yaml(yaml).unwrap();
    let hub = Hub::new(config, fake.clone());
    hub.refresh_nodes().await;
    hub.recover().await.unwrap();
    hub
}

fn req(name: &str, password: &str) -> StartRequest {
    StartRequest {
        name: name.into(),
        password: password.to_string().into(),
        daemon: false,
        peer: Some("127.0.0.1".parse().unwrap()),
        ttl: None,
    }
}

async fn start(hub: &Arc<Hub>, name: &str) -> Owned {
    hub.start_session(req(name, PW)).await.unwrap_or_else(|e| panic!("{name} did not start: {e}"))
}

/// The sentence the owner got, waiting at most a (virtual) minute.
async fn told(o: &mut Owned) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(60), o.ended.recv()).await.ok().flatten()
}

/// Nothing of any session is left: no server, no name, no port.
fn nothing_left(hub: &Hub, fake: &FakeRuntime) {
    assert!(fake.servers().is_empty(), "servers left: {:?}", fake.servers().keys().collect::<Vec<_>>());
    assert!(hub.list().is_empty(), "sessions left: {:?}", hub.list());
    assert!(hub.ports_in_use().is_empty(), "ports held: {:?}", hub.ports_in_use());
}

#[tokio::test(start_paused = true)]
async fn a_session_starts_and_its_owner_leaving_removes_it_and_frees_its_port() {
    let fake = Arc::new(FakeRuntime::default());
    let hub = hub(&fake, "").await;
    let o = start(&hub, "jam").await;
    assert_eq!((o.host.as_str(), o.port), ("hub.example", 100));
    assert_eq!(hub.query("jam"), Some(("hub.example".into(), 100)));
    let server = fake.servers().into_values().next().unwrap();
    assert_eq!(server.spec.unwrap().name, "jam");
    assert_eq!(
        hub.start_session(req("jam", PW)).await.err().map(|e| e.to_string()).as_deref(),
        Some("A running Troop server already exists with this name")
    );
    hub.owner_gone(&o.id, false).await;
    assert_eq!(hub.query("jam"), None);
    nothing_left(&hub, &fake);
    assert_eq!(start(&hub, "next").await.port, 100, "the port is free again");
}

#[tokio::test(start_paused = true)]
async fn a_kill_during_a_start_cancels_it_and_leaves_nothing() {
    let fake = Arc::new(FakeRuntime::default());
    fake.set_start_delay(Duration::from_secs(5));
    let hub = hub(&fake, "").await;
    let starting = tokio::spawn({
        let hub = hub.clone();
        async move { hub.start_session(req("slow", PW)).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(hub.list()[0].state, "starting");
    assert_eq!(hub.query("slow"), None, "a starting session is not given out");
    assert!(hub.kill("slow").await);
    let refused = starting.await.unwrap().err().map(|e| e.to_string());
    assert_eq!(refused.as_deref(), Some("The session failed to start: it was ended while starting"));
    nothing_left(&hub, &fake);
}

#[tokio::test(start_paused = true)]
async fn a_port_held_by_a_stranger_is_skipped_and_set_aside() {
    let fake = Arc::new(FakeRuntime::default());
    fake.take_port(100);
    let hub = hub(&fake, "").await;
    let a = start(&hub, "a").await;
    assert_eq!(a.port, 101, "100 is held by something else");
    hub.owner_gone(&a.id, false).await;
    let b = start(&hub, "b").await;
    assert_eq!(b.port, 101, "100 stays set aside for a while");
    assert_eq!(hub.ports_in_use(), vec![101]);
    assert_eq!(hub.gauges().free_ports, 2, "102 and 103; 100 is set aside");
}

#[tokio::test(start_paused = true)]
async fn a_node_whose_starts_fail_moves_the_session_to_another() {
    let fake = Arc::new(FakeRuntime::default());
    fake.set_nodes(vec![
        Node { id: "n1".into(), host: Some("one.example".into()), usable: true },
        Node { id: "n2".into(), host: Some("two.example".into()), usable: true },
    ]);
    fake.fail_node("n1");
    let hub = hub(&fake, "").await;
    let o = start(&hub, "moved").await;
    assert_eq!((o.host.as_str(), o.port), ("two.example", 100));
    assert_eq!(hub.list()[0].node, "n2");
    assert_eq!(hub.ports_in_use(), vec![100], "the failed slot on n1 is free");
    // Every node failing: the performer hears the first failure, in plain words.
    fake.fail_node("n2");
    let e = hub.start_session(req("doomed", PW)).await.err().unwrap().to_string();
    assert_eq!(e, "The session failed to start: its server stopped on the machine the hub chose");
    assert!(!e.contains("n1") && !e.contains("non-zero"), "no engine internals: {e}");
    assert_eq!(hub.list().len(), 1, "nothing of the failed start is registered");
    assert_eq!(hub.ports_in_use(), vec![100]);
}

fn left(handle: &str, name: &str, running: bool, age: Duration) -> Existing {
    Existing {
        handle: handle.into(),
        running,
        session_id: Some(format!("id-{name}")),
        name: Some(name.into()),
        pooled: false,
        node: Some(crate::registry::LOCAL_NODE.into()),
        port: Some(if name == "a" { 100 } else { 101 }),
        created: SystemTime::now().checked_sub(age),
        credentials: Some(Credentials::PasswordMd5(troop_server::md5_hex(PW).into())),
        control: None,
        front_door: false,
    }
}

#[tokio::test(start_paused = true)]
async fn recovery_waits_for_servers_still_starting_then_adopts_the_running_and_removes_the_rest() {
    let fake = Arc::new(FakeRuntime::default());
    fake.leave(left("c-a", "a", false, Duration::from_secs(1)));
    fake.leave(left("c-b", "b", false, Duration::from_secs(3600)));
    let config = Config::from_yaml(BASE).unwrap();
    let hub = Hub::new(config, fake.clone());
    hub.refresh_nodes().await;
    let settle = tokio::spawn({
        let fake = fake.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            fake.set_running("c-a");
        }
    });
    hub.recover().await.unwrap();
    settle.await.unwrap();
    assert_eq!(hub.query("a"), Some(("hub.example".into(), 100)), "the one still starting was adopted");
    assert_eq!(fake.removed(), vec!["c-b".to_string()], "the exited one was removed");
    // Its owner gets it back with the same password; anyone else does not.
    let wrong = hub.start_session(req("a", "guess")).await.err().unwrap();
    assert_eq!(wrong.to_string(), "A running Troop server already exists with this name");
    let back = start(&hub, "a").await;
    assert_eq!(back.port, 100);
    assert_eq!(fake.servers().len(), 1, "the same server, not a new one");
    assert!(hub.list()[0].owner_connected);
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_starts_in_flight_tells_owners_and_leaves_nothing() {
    let fake = Arc::new(FakeRuntime::default());
    let hub = hub(&fake, "").await;
    let mut running = start(&hub, "running").await;
    fake.set_start_delay(Duration::from_secs(5));
    let late = tokio::spawn({
        let hub = hub.clone();
        async move { hub.start_session(req("late", PW)).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    hub.shutdown().await;
    assert_eq!(told(&mut running).await.as_deref(), Some("Troop Hub Service has been manually terminated"));
    let late = late.await.unwrap().err().map(|e| e.to_string());
    assert_eq!(late.as_deref(), Some("The session failed to start: the hub is shutting down"));
    nothing_left(&hub, &fake);
    assert!(hub.start_session(req("after", PW)).await.is_err(), "no start after shutdown");
    assert!(hub.shutdown_token().is_cancelled(), "the front doors are told to stop");
}

#[tokio::test(start_paused = true)]
async fn every_ending_tells_the_owner_why() {
    let fake = Arc::new(FakeRuntime::default());
    let hub = hub(&fake, "max_session_age: 1h").await;
    tokio::spawn(hub.clone().watch_engine());
    tokio::spawn(hub.clone().enforce_deadlines());
    tokio::time::sleep(Duration::from_millis(10)).await;
    let handle_of = |name: &str| {
        fake.servers().into_iter().find(|(_, s)| s.existing.name.as_deref() == Some(name)).map(|(h, _)| h).unwrap()
    };

    let mut killed = start(&hub, "killed").await;
    assert!(hub.kill("killed").await);
    assert_eq!(told(&mut killed).await.as_deref(), Some("Session manually killed by admin."));

    let mut crashed = start(&hub, "crashed").await;
    fake.exit(&handle_of("crashed"), "the session server exited with code 2", false);
    assert_eq!(
        told(&mut crashed).await.as_deref(),
        Some("The session has ended: the session server exited with code 2.")
    );

    let mut idle = start(&hub, "idle").await;
    fake.exit(&handle_of("idle"), "nobody was connected", true);
    assert_eq!(
        told(&mut idle).await.as_deref(),
        Some("The session has ended: nobody was connected for the idle time.")
    );

    let mut api = hub
        .start_session(StartRequest { daemon: true, peer: None, ttl: Some(Duration::from_secs(30)), ..req("api", PW) })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(32)).await;
    assert_eq!(told(&mut api).await.as_deref(), Some("The session's time to live ran out."));

    let mut old = start(&hub, "old").await;
    tokio::time::sleep(Duration::from_secs(3602)).await;
    assert_eq!(
        told(&mut old).await.as_deref(),
        Some("The session reached the hub's maximum session age and was ended.")
    );

    // The owner leaving is not told anything (it is gone), and nothing is left at the end.
    let mut left = start(&hub, "left").await;
    hub.owner_gone(&left.id, false).await;
    assert_eq!(told(&mut left).await, None);
    nothing_left(&hub, &fake);
    let text = hub.metrics.render(&hub.gauges());
    for reason in ["deleted", "container_exited", "idle", "max_age", "owner_left"] {
        assert!(text.contains(&format!("reason=\"{reason}\"")), "{reason} counted:\n{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn with_the_engine_down_starts_fail_clearly_and_change_nothing() {
    let fake = Arc::new(FakeRuntime::default());
    let hub = hub(&fake, "").await;
    fake.set_down(true);
    let e = hub.start_session(req("jam", PW)).await.err().unwrap();
    assert_eq!(e, HubError::EngineDown);
    assert_eq!(e.to_string(), "The hub cannot reach its Docker engine right now; try again in a moment");
    assert!(hub.list().is_empty() && hub.ports_in_use().is_empty());
    fake.set_down(false);
    assert_eq!(start(&hub, "jam").await.port, 100, "it recovers with the engine");
}

#[tokio::test(start_paused = true)]
async fn caps_and_trust_are_enforced_before_anything_starts() {
    let fake = Arc::new(FakeRuntime::default());
    let hub = hub(&fake, "max_sessions: 1").await;
    let stranger = Some("198.51.100.7".parse().unwrap());
    let daemon = StartRequest { daemon: true, peer: stranger, ..req("d", PW) };
    assert_eq!(hub.start_session(daemon).await.err(), Some(HubError::DaemonNotTrusted));
    start(&hub, "one").await;
    let e = hub.start_session(req("two", PW)).await.err().unwrap();
    assert_eq!(e.to_string(), "Max number of running Troop instances reached");
    assert_eq!(fake.servers().len(), 1);
}

#[tokio::test]
async fn a_hub_without_nodes_places_nothing() {
    let fake = Arc::new(FakeRuntime::default());
    let config = Config::from_yaml(BASE).unwrap();
    let hub = Hub::new(config, fake.clone());
    let e = hub.start_session(req("early", PW)).await.err().unwrap();
    assert_eq!(e.to_string(), "No machine of the hub can take a new session right now; try again later");
    assert!(fake.servers().is_empty());
}

#[test]
fn a_public_host_only_this_network_reaches_is_warned_about_when_listening_everywhere() {
    let c = |yaml: &str| Config::from_yaml(yaml).unwrap();
    let everywhere = "listen: 0.0.0.0:57990\n";
    let w = unreachable_public_host(&c(&format!("{everywhere}public_host: 127.0.0.1")), "127.0.0.1");
    assert!(w.is_some_and(|w| w.contains("will not reach") && w.contains("public_host")));
    assert!(unreachable_public_host(&c(&format!("{everywhere}public_host: 10.1.2.3")), "10.1.2.3").is_some());
    assert!(unreachable_public_host(&c(everywhere), "192.168.1.5").is_some_and(|w| w.contains("not set")));
    assert_eq!(unreachable_public_host(&c(&format!("{everywhere}public_host: 203.0.113.5")), "203.0.113.5"), None);
    assert_eq!(unreachable_public_host(&c("listen: 127.0.0.1:57990\npublic_host: 127.0.0.1"), "127.0.0.1"), None);
}

/// `n` sessions reaching `max_session_age` in the same second, each removal taking the engine
/// a second; returns once they are due, with their owners.
async fn due_together(n: usize) -> (Arc<FakeRuntime>, Arc<Hub>, Vec<Owned>) {
    let fake = Arc::new(FakeRuntime::default());
    fake.set_remove_delay(Duration::from_secs(1));
    let yaml = format!(
        "ports: 100-{}\nmax_sessions: {n}\npublic_host: hub.example\ncontrol_channel: false\nmax_session_age: 1h",
        100 + n - 1
    );
    let hub = Hub::new(Config::from_yaml(&yaml).unwrap(), fake.clone());
    hub.refresh_nodes().await;
    hub.recover().await.unwrap();
    tokio::spawn(hub.clone().enforce_deadlines());
    let mut owners = Vec::new();
    for i in 0..n {
        owners.push(start(&hub, &format!("s{i}")).await);
    }
    tokio::time::sleep(Duration::from_secs(3600)).await;
    (fake, hub, owners)
}

/// Waits (virtual time, at most two minutes) until the fake runs no server.
async fn all_removed(fake: &FakeRuntime) {
    let began = tokio::time::Instant::now();
    while !fake.servers().is_empty() && began.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn sessions_reaching_their_age_together_end_together_within_a_bound() {
    let (fake, hub, mut owners) = due_together(48).await;
    let began = tokio::time::Instant::now();
    for o in &mut owners {
        assert_eq!(told(o).await.as_deref(), Some("The session reached the hub's maximum session age and was ended."));
    }
    // Their servers are removed meanwhile; wait until the last one is gone.
    all_removed(&fake).await;
    let took = began.elapsed();
    // One at a time would take 48 s; 8 at a time (the runtime's bound), 6, the owners told at
    // once above.
    let rounds = 48_u64.div_ceil(fake.ends_at_once() as u64);
    assert!(took <= Duration::from_secs(rounds + 1), "48 sessions took {took:?} to end");
    assert!(took >= Duration::from_secs(rounds), "more servers ended at once than the runtime takes: {took:?}");
    nothing_left(&hub, &fake);
}

#[tokio::test(start_paused = true)]
async fn a_reconcile_leaves_the_servers_of_sessions_waiting_for_their_turn_to_end() {
    // All 24 are due together: told at once, their servers removed 8 at a time over 3 s.
    let (fake, hub, mut owners) = due_together(24).await;
    for o in &mut owners {
        assert!(told(o).await.is_some());
    }
    // A reconcile meanwhile finds 16 servers whose sessions are released and waiting for their
    // turn: theirs, not strays to remove outside the bound (and without telling performers).
    assert!(fake.servers().len() > 8, "the test needs servers still waiting: {}", fake.servers().len());
    fake.age_servers(Duration::from_secs(3600));
    hub.reconcile().await;
    all_removed(&fake).await;
    let removed = fake.removed();
    let once: std::collections::HashSet<_> = removed.iter().collect();
    assert_eq!(removed.len(), once.len(), "a server was removed twice (once as a stray): {removed:?}");
    nothing_left(&hub, &fake);
}

#[tokio::test]
async fn a_reload_keeps_the_front_door_and_the_control_channel_it_needs() {
    let fake = Arc::new(FakeRuntime::default());
    let hub = hub_from(&fake, "ports: 100-103\npublic_host: hub.example\nfront_door: on\nwarm_pool: 0").await;
    let mut next = (*hub.config()).clone();
    next.front_door = false;
    next.control_channel = false;
    next.warm_pool = Some(0);
    let warnings = hub.apply_config(next);
    let c = hub.config();
    assert!(c.front_door && c.control_channel, "the door stays, and so does the channel it needs");
    assert!(warnings.iter().any(|w| w.contains("`front_door` changes only with a restart")), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("keeping control_channel: true")), "{warnings:?}");
}
