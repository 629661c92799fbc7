//! The warm pool against the real Docker engine: members started locked, a start that takes
//! one and arms it (the performer's login works at once), refills, a full hub that shrinks its
//! pool, a burst, live reload, idle exit counted from arming, SIGTERM, SIGKILL and restart.

mod common;

use common::{docker_ok, http, metric, owner, performer, wide_range, TestHub, T};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;
use troop_server::client::{login, ClientError, TroopClient};
use troop_server::control::ControlClient;
use troop_server::message::Body;

async fn metrics(hub: &TestHub) -> String {
    http(hub.http, "GET", "/metrics", None, None).await.body
}

/// Waits until the hub reports `n` ready members and nothing starting.
async fn wait_pool(hub: &TestHub, n: usize) {
    hub.eventually(&format!("the pool to have {n} ready"), T * 2, async || {
        let m = metrics(hub).await;
        let done = metric(&m, "troop_hub_pool_ready") == n as f64 && metric(&m, "troop_hub_pool_starting") == 0.0;
        if done {
            Ok(())
        } else {
            Err(format!("\n{m}"))
        }
    })
    .await
}

/// Waits until `f` holds for the hub's containers.
async fn wait_containers_until(hub: &TestHub, what: &str, f: impl Fn(&[String]) -> bool) -> Vec<String> {
    hub.eventually(what, T * 2, async || {
        let now = hub.containers();
        if f(&now) {
            Ok(now)
        } else {
            Err(format!("containers {now:?}"))
        }
    })
    .await
}

fn label(container: &str, key: &str) -> String {
    docker_ok(&["inspect", "-f", &format!("{{{{index .Config.Labels \"{key}\"}}}}"), container])
}

/// One variable of a container's environment (where the hub puts its random control secret).
fn env_of(container: &str, key: &str) -> String {
    let env = docker_ok(&["inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", container]);
    let prefix = format!("{key}=");
    env.lines().find_map(|l| l.strip_prefix(&prefix)).map(str::to_string).unwrap_or_default()
}

fn port_of(container: &str) -> u16 {
    label(container, "io.troop-hub.port").parse().expect("a port label")
}

fn at(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

async fn query(hub: &TestHub, name: &str) -> Value {
    let q = json!({"type": "query", "name": name});
    troop_hub::admin::request(hub.addr, &q, T).await.expect("query answered")["result"].clone()
}

#[tokio::test]
async fn a_start_takes_a_locked_member_arms_it_at_once_and_the_pool_refills() {
    let mut hub = TestHub::new("warm_pool: 2").start().await;
    wait_pool(&hub, 2).await;
    let members = hub.containers();
    assert_eq!(members.len(), 2, "two members, nothing else");
    for c in &members {
        // Labelled as a pool member, naming no session; locked: every login is refused.
        assert_eq!(label(c, "io.troop-hub.pool"), "true");
        assert_eq!(label(c, "io.troop-hub.session"), "");
        let refused = login(at(port_of(c)), "early", "").await;
        assert!(matches!(refused, Err(ClientError::Refused(-1))), "a locked member admitted a login: {refused:?}");
    }

    let o = owner(&hub, "jam", "pw").await;
    let taken: Vec<&String> = members.iter().filter(|c| port_of(c) == o.port).collect();
    assert_eq!(taken.len(), 1, "the session is one of the members");
    // The reply came once the server takes the performer's password.
    let mut alice = performer(&o, "alice", "pw").await;
    assert!(matches!(login(at(o.port), "mallory", "wrong").await, Err(ClientError::Refused(-1))));
    alice.insert(0, "warm").await.unwrap();
    alice.recv_until_match(T, |c, _| c.is_synchronized()).await.unwrap();
    let everything = docker_ok(&["inspect", taken[0]]);
    assert!(!everything.contains(&troop_server::md5_hex("pw")), "no md5 in the container");
    let m = metrics(&hub).await;
    assert_eq!(metric(&m, "troop_hub_session_starts_total{from=\"pool\"}"), 1.0, "{m}");
    assert_eq!(metric(&m, "troop_hub_session_starts_total{from=\"cold\"}"), 0.0, "{m}");
    assert_eq!(query(&hub, "jam").await, json!(["127.0.0.1", o.port]));

    // The pool refills behind it; the session is counted as a session, not a member.
    wait_pool(&hub, 2).await;
    assert_eq!(hub.containers().len(), 3);
    assert_eq!(metric(&metrics(&hub).await, "troop_hub_sessions_running"), 1.0);

    // SIGTERM: the session's performers are told, every member goes too, nothing is left.
    hub.signal("TERM");
    let ended = alice.recv_until_match(T, |_, m| matches!(m.body, Body::Kill { .. })).await;
    assert!(ended.is_ok(), "the performer was told the session ended");
    assert_eq!(hub.wait_exit(T).await, Some(0));
    assert!(hub.containers().is_empty(), "no container left: {:?}", hub.containers());
    assert!(!hub.network_exists());
    drop(o);
}

#[tokio::test]
async fn a_full_hub_shrinks_its_pool_before_it_refuses_a_performer() {
    let hub = TestHub::new("warm_pool: 2\nmax_sessions: 2").start().await;
    wait_pool(&hub, 2).await;
    let a = owner(&hub, "a", "pw").await;
    let b = owner(&hub, "b", "pw").await;
    assert_ne!(a.port, b.port);
    // Both slots are sessions now: no member is started beyond the cap.
    let m = metrics(&hub).await;
    assert_eq!((metric(&m, "troop_hub_pool_target"), metric(&m, "troop_hub_sessions_running")), (0.0, 2.0), "{m}");
    assert_eq!(hub.containers().len(), 2);
    let refused = troop_hub::admin::start_session(hub.addr, "c", "pw", T).await.expect("answered");
    assert_eq!(refused.err().as_deref(), Some("Max number of running Troop instances reached"));
    // A slot freed goes back to the pool.
    drop(a);
    wait_pool(&hub, 1).await;
    wait_containers_until(&hub, "one session and one member", |c| c.len() == 2).await;
    let c = owner(&hub, "c", "pw").await;
    let _p = performer(&c, "carol", "pw").await;
    drop(b);
}

#[tokio::test]
async fn a_burst_of_starts_all_succeed_warm_first_then_cold() {
    let ports = wide_range(16);
    let mut hub = TestHub::new("warm_pool: 2\nmax_sessions: 14");
    hub.ports = ports;
    let hub = hub.start().await;
    wait_pool(&hub, 2).await;
    let starts = (0..12).map(|i| {
        let addr = hub.addr;
        async move { troop_hub::admin::start_session(addr, &format!("burst{i}"), "pw", T * 4).await }
    });
    let results = futures_util::future::join_all(starts).await;
    let mut owners = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(Ok(o)) => owners.push(o),
            other => panic!("start {i} failed: {:?}\n{}", other.map(|r| r.err()), hub.log()),
        }
    }
    let mut seen: Vec<u16> = owners.iter().map(|o| o.port).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 12, "every session has a port of its own");
    for o in &owners {
        TroopClient::join(at(o.port), "p", "pw", T).await.expect("each session admits its performer at once");
    }
    let m = metrics(&hub).await;
    let warm = metric(&m, "troop_hub_session_starts_total{from=\"pool\"}");
    let cold = metric(&m, "troop_hub_session_starts_total{from=\"cold\"}");
    assert_eq!(warm + cold, 12.0, "{m}");
    assert!(warm >= 2.0, "the ready members served the first starts: {m}");
    drop(owners);
    // Every session goes; the pool stays (2 members).
    wait_containers_until(&hub, "only the pool left", |c| c.len() == 2).await;
    wait_pool(&hub, 2).await;
}

#[tokio::test]
async fn members_are_replaced_when_a_reload_changes_the_limits_and_go_when_the_pool_is_turned_off() {
    let hub = TestHub::new("warm_pool: 2").start().await;
    wait_pool(&hub, 2).await;
    let old = hub.containers();
    let text = std::fs::read_to_string(hub.config_path()).unwrap();
    std::fs::write(hub.config_path(), format!("{text}\nlimits: {{memory: 96m, cpus: 0.5, pids: 64}}\n")).unwrap();
    let new =
        wait_containers_until(&hub, "two new members", |c| c.len() == 2 && !c.iter().any(|c| old.contains(c))).await;
    for c in &new {
        assert_eq!(docker_ok(&["inspect", "-f", "{{.HostConfig.Memory}}", c]), (96u64 << 20).to_string());
    }
    // The new members exist before they listen: a start before then would be a cold one.
    wait_pool(&hub, 2).await;
    let o = owner(&hub, "after", "pw").await;
    assert!(new.iter().any(|c| port_of(c) == o.port), "a start takes a member of the new configuration");
    drop(o);
    let text = std::fs::read_to_string(hub.config_path()).unwrap();
    std::fs::write(hub.config_path(), text.replace("warm_pool: 2", "warm_pool: 0")).unwrap();
    wait_containers_until(&hub, "no members with warm_pool: 0", |c| c.is_empty()).await;
}

#[tokio::test]
async fn idle_exit_counts_from_arming_not_from_the_member_start() {
    let hub = TestHub::new("warm_pool: 1\nidle_exit: 1s").start().await;
    wait_pool(&hub, 1).await;
    let member = hub.containers();
    // Twice the idle time passes with the member locked: it keeps running.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hub.containers(), member, "a locked member does not idle out");
    let mut o = owner(&hub, "quiet", "pw").await;
    assert_eq!(port_of(&member[0]), o.port);
    let started = Instant::now();
    let ended = o.ended(T).await;
    assert_eq!(ended.as_deref(), Some("The session has ended: nobody was connected for the idle time."));
    assert!(started.elapsed() >= Duration::from_millis(900), "idle counted from arming: {:?}", started.elapsed());
}

#[tokio::test]
async fn after_sigkill_a_restarted_hub_adopts_armed_members_by_their_servers_name_and_replaces_locked_ones() {
    let mut hub = TestHub::new("warm_pool: 2\norphans: adopt").start().await;
    wait_pool(&hub, 2).await;
    let o = owner(&hub, "survivor", "pw").await;
    let mut alice = performer(&o, "alice", "pw").await;
    wait_pool(&hub, 2).await;
    let before = hub.containers();
    let session = before.iter().find(|c| port_of(c) == o.port).expect("the session's container").clone();
    assert_eq!(label(&session, "io.troop-hub.session"), "", "its labels never learnt its name");
    let locked: Vec<String> = before.iter().filter(|c| **c != session).cloned().collect();
    assert_eq!(locked.len(), 2);
    hub.signal("KILL");
    hub.wait_exit(T).await;
    drop(o);
    hub.spawn().await;
    // The session is adopted under the name its server was armed with; the locked members
    // from before are removed (never handed out by a hub that did not start them) and the
    // pool is refilled with new ones.
    assert_eq!(query(&hub, "survivor").await, json!(["127.0.0.1", port_of(&session)]));
    let after = wait_containers_until(&hub, "session kept, old members replaced", |c| {
        c.len() == 3 && c.contains(&session) && !c.iter().any(|c| locked.contains(c))
    })
    .await;
    wait_pool(&hub, 2).await;
    alice.insert(0, "still here").await.unwrap();
    alice.recv_until_match(T, |c, _| c.is_synchronized()).await.expect("the performance goes on");
    let thief = troop_hub::admin::start_session(hub.addr, "survivor", "guess", T).await.unwrap();
    assert!(thief.is_err(), "a wrong password does not take it over");
    let back = owner(&hub, "survivor", "pw").await;
    assert_eq!(back.port, port_of(&session));
    let other = owner(&hub, "other", "pw").await;
    assert_ne!(other.port, back.port, "the adopted session's server is not handed out again");
    assert!(after.iter().any(|c| port_of(c) == other.port), "the new session took a new member");
    drop(back);
    drop(other);
    wait_containers_until(&hub, "the pool only", |c| c.len() == 2).await;
}

#[tokio::test]
async fn a_member_armed_whose_subscription_fails_still_starts_and_is_followed_once_it_can_be() {
    let hub = TestHub::new("warm_pool: 1").start().await;
    wait_pool(&hub, 1).await;
    let member = hub.containers().pop().expect("the member");
    let port = port_of(&member);
    // Every subscriber slot of the member's server (troop-server allows 4) taken with the
    // secret the hub gave it, so the hub's own subscription right after arming is refused.
    let secret = env_of(&member, "TROOP_CONTROL_SECRET");
    let mut held = Vec::new();
    for _ in 0..4 {
        let control = ControlClient::connect(at(port), &secret, T).await.expect("a control connection");
        held.push(control.subscribe().await.expect("a free subscriber slot"));
    }
    let o = owner(&hub, "crowded", "pw").await;
    assert_eq!(o.port, port, "the start took the member");
    // The start went through all the same: the performer plays.
    let mut alice = performer(&o, "alice", "pw").await;
    alice.insert(0, "still here").await.expect("an edit");
    assert!(hub.log().contains("armed, but the subscription after it failed"), "{}", hub.log());
    // Nobody is followed while every slot is taken; once one frees, the hub follows anew and
    // sees the performer.
    assert_eq!(metric(&metrics(&hub).await, "troop_hub_performers"), 0.0);
    held.pop();
    hub.eventually("the hub to follow the session and count its performer", T, async || {
        let performers = metric(&metrics(&hub).await, "troop_hub_performers");
        if performers == 1.0 {
            Ok(())
        } else {
            Err(format!("troop_hub_performers {performers}"))
        }
    })
    .await;
    drop(alice);
    drop(o);
}
