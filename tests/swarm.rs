//! The Swarm runtime against a real swarm that each test makes on this machine's engine and
//! leaves afterwards, also when it fails (`common::swarm`): a single node, or two, the second
//! a dockerd of its own in a network namespace joined as a worker. The tests take turns: an
//! engine is in one swarm at a time. One test puts a slow forwarder (`common::engine_switch`)
//! between the hub and its manager.

mod common;

use common::engine_switch::{behind_switch, FORWARD, SLOW};
use common::swarm::{Swarm, Worker, MANAGER_IP, WORKER_IP};
use common::{docker_ok, eventually, http, owner, TestHub, T};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use troop_hub::admin::{self, start_session};
use troop_server::client::{login, ClientError, TroopClient};

const TOKEN: &str = "swarm-test-token-0e6d4b21a9c3f875";

/// A swarm hub with an admin token; `extra` is appended to its hub.yaml.
async fn swarm_hub(extra: &str) -> TestHub {
    let mut hub = TestHub::new(&format!("runtime: swarm\n{extra}"));
    hub.envs.push(("TROOP_HUB_ADMIN_TOKEN".into(), TOKEN.into()));
    hub.start().await
}

fn services(hub: &TestHub) -> Vec<String> {
    let filter = format!("label=io.troop-hub.hub={}", hub.id);
    docker_ok(&["service", "ls", "-q", "--filter", &filter]).lines().map(str::to_string).collect()
}

/// Waits until the swarm's worker runs no session container.
async fn nothing_left_on_the_worker() {
    eventually("no session container left on the worker", T, async || {
        let left = Worker::docker_ok(&["ps", "-q", "--filter", "label=io.troop-hub.managed=true"]);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("containers {left:?}"))
        }
    })
    .await
}

/// Waits until the hub has no service, task container or session network left.
async fn nothing_left(hub: &TestHub) {
    hub.eventually("removal of every service, container and network", T, async || {
        let (services, containers, network) = (services(hub), hub.containers(), hub.network_exists());
        if services.is_empty() && containers.is_empty() && !network {
            Ok(())
        } else {
            Err(format!("services {services:?}, containers {containers:?}, network left: {network}"))
        }
    })
    .await;
}

/// Waits until the hub has `n` services.
async fn services_are(hub: &TestHub, what: &str, n: usize) {
    hub.eventually(what, T, async || {
        let now = services(hub);
        if now.len() == n {
            Ok(())
        } else {
            Err(format!("services {now:?}"))
        }
    })
    .await;
}

async fn query(hub: SocketAddr, name: &str) -> Value {
    admin::request(hub, &json!({"type": "query", "name": name}), T).await.expect("query answered")["result"].clone()
}

async fn refused(hub: &TestHub, name: &str) -> String {
    match start_session(hub.addr, name, "pw", T).await.expect("hub answered") {
        Ok(o) => panic!("start {name} was accepted on port {}", o.port),
        Err(e) => e,
    }
}

/// Waits until the hub reports `n` warm pool members ready.
async fn pool_ready(hub: &TestHub, n: u64, within: Duration) {
    hub.eventually(&format!("{n} warm members ready"), within, async || {
        let r = http(hub.http, "GET", "/api/v1/nodes", Some(TOKEN), None).await;
        if r.json()["pool"]["ready"].as_u64() == Some(n) {
            Ok(())
        } else {
            Err(r.body)
        }
    })
    .await;
}

async fn nodes(hub: &TestHub) -> Value {
    let r = http(hub.http, "GET", "/api/v1/nodes", Some(TOKEN), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["nodes"].clone()
}

#[tokio::test]
async fn a_hub_set_to_swarm_on_an_engine_outside_a_swarm_says_so_and_exits() {
    let _turn = Swarm::turn();
    let hub = TestHub::new("runtime: swarm");
    let (code, last, stderr) = hub.run_failing();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(last.starts_with("troop-hub: hub.yaml has `runtime: swarm`"), "{stderr}");
    assert!(last.contains("not part of an active swarm") && last.contains("docker swarm init"), "{last}");
}

#[tokio::test]
async fn a_swarm_session_starts_on_its_node_admits_its_password_and_ends_with_its_owner() {
    let swarm = Swarm::init();
    let hub = swarm_hub("").await;
    let o = owner(&hub, "mySession", "pw").await;
    assert_eq!(o.host, "127.0.0.1", "the node's address (the test swarm advertises 127.0.0.1)");
    assert!((hub.ports.0..=hub.ports.1).contains(&o.port));
    assert_eq!(query(hub.addr, "mySession").await, json!(["127.0.0.1", o.port]));

    // The reply came once the task runs and its port accepts: a Troop client logs in at once.
    let session: SocketAddr = ([127, 0, 0, 1], o.port).into();
    let mut alice = TroopClient::join(session, "alice", "pw", T).await.expect("join via the host-mode port");
    assert!(matches!(login(session, "mallory", "wrong").await, Err(ClientError::Refused(-1))));
    alice.insert(0, "hello").await.unwrap();
    alice.recv_until_match(T, |c, _| c.is_synchronized()).await.unwrap();

    // A browser seat plays in the swarm session too: the hub reaches the task where it reaches
    // its control channel.
    {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let url = format!("ws://{}/api/v1/sessions/mySession/seat", hub.http);
        let (mut seat, _) = tokio_tungstenite::connect_async(url).await.expect("the seat upgrades");
        let join = json!({"type": "join", "name": "bea", "password": "pw"}).to_string();
        seat.send(Message::text(join)).await.unwrap();
        loop {
            let m = match tokio::time::timeout(T, seat.next()).await.expect("a seat message in time") {
                Some(Ok(Message::Text(t))) => serde_json::from_str::<Value>(t.as_str()).unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("the seat closed: {other:?}"),
            };
            if m["type"] == "request_ack" && m["flag"] == 1 {
                seat.send(Message::text(r#"{"type":"ack"}"#)).await.unwrap();
            }
            if m["type"] == "reset" {
                assert_eq!(m["document"], "hello", "the seat gets the document");
                break;
            }
        }
        let op = json!({"type": "operation", "ops": [5, "!"], "revision": 0}).to_string();
        seat.send(Message::text(op)).await.unwrap();
        alice.recv_until_match(T, |c, _| c.document() == "hello!").await.expect("alice gets the seat's edit");
    }

    // One service: one replica never restarted, placed on the node, host-mode port, hardened.
    let svc = services(&hub);
    assert_eq!(svc.len(), 1);
    let spec = |f: &str| docker_ok(&["service", "inspect", "-f", f, &svc[0]]);
    assert_eq!(spec("{{.Spec.Mode.Replicated.Replicas}} {{.Spec.TaskTemplate.RestartPolicy.Condition}}"), "1 none");
    assert_eq!(spec("{{json .Spec.TaskTemplate.Placement.Constraints}}"), format!("[\"node.id=={}\"]", swarm.node));
    let port =
        format!("{{\"Protocol\":\"tcp\",\"TargetPort\":57890,\"PublishedPort\":{},\"PublishMode\":\"host\"}}", o.port);
    assert_eq!(spec("{{json .Spec.EndpointSpec.Ports}}"), format!("[{port}]"));
    let c = "{{.Spec.TaskTemplate.ContainerSpec.ReadOnly}} {{.Spec.TaskTemplate.ContainerSpec.CapabilityDrop}} {{.Spec.TaskTemplate.ContainerSpec.User}}";
    assert_eq!(spec(c), "true [ALL] 65534:65534");
    let limits = "{{.Spec.TaskTemplate.Resources.Limits.Pids}} {{.Spec.TaskTemplate.Resources.Limits.MemoryBytes}} {{.Spec.TaskTemplate.Resources.Limits.NanoCPUs}}";
    assert_eq!(spec(limits), "64 67108864 500000000");
    assert_eq!(spec("{{index .Spec.Labels \"io.troop-hub.session\"}}"), "mySession");
    let everything = docker_ok(&["service", "inspect", &svc[0]]);
    assert!(!everything.contains("\"pw\"") && !everything.contains("=pw\""), "no plaintext password in the service");
    assert!(!everything.contains(&troop_server::md5_hex("pw")), "not even its md5 (the hub armed the server)");
    assert!(everything.contains("TROOP_CONTROL_SECRET="));
    // The image is named by its local id: Swarm does not try a registry for it.
    let image = spec("{{.Spec.TaskTemplate.ContainerSpec.Image}}");
    assert_eq!(image, docker_ok(&["image", "inspect", "-f", "{{.Id}}", "troop-hub/troop-server:latest"]));
    // The task's container is hardened the same way on the node.
    let containers = hub.containers();
    assert_eq!(containers.len(), 1);
    let fmt = "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.Config.User}} {{.HostConfig.PidsLimit}} {{.HostConfig.Memory}}";
    assert_eq!(docker_ok(&["inspect", "-f", fmt, &containers[0]]), "true [ALL] 65534:65534 64 67108864");

    // Each session has an overlay network of its own.
    let other = owner(&hub, "other", "pw").await;
    assert_ne!(other.port, o.port, "one node: one port each");
    let nets: Vec<String> = services(&hub)
        .iter()
        .map(|s| docker_ok(&["service", "inspect", "-f", "{{range .Spec.TaskTemplate.Networks}}{{.Target}}{{end}}", s]))
        .collect();
    assert_eq!(nets.len(), 2);
    assert_ne!(nets[0], nets[1]);
    for n in &nets {
        assert_eq!(docker_ok(&["network", "inspect", "-f", "{{.Driver}} {{.Attachable}}", n]), "overlay false");
    }

    // Owners leave: services, task containers and networks go; names and ports are free again.
    drop(o);
    drop(other);
    nothing_left(&hub).await;
    assert_eq!(query(hub.addr, "mySession").await, Value::Null);
    hub.wait_ports_free().await;
    let again = owner(&hub, "mySession", "pw2").await;
    assert_eq!(again.port, hub.ports.0, "the port was freed");
    drop(alice);
    drop(again);
    nothing_left(&hub).await;
}

#[tokio::test]
async fn a_task_killed_from_outside_ends_the_session_and_is_not_respawned() {
    let _swarm = Swarm::init();
    let hub = swarm_hub("").await;
    let mut o = owner(&hub, "fragile", "pw").await;
    let c = hub.containers();
    assert_eq!(c.len(), 1);
    docker_ok(&["kill", &c[0]]);
    let killed = Instant::now();
    let msg = o.ended(Duration::from_secs(10)).await.expect("the owner is told");
    let noticed = killed.elapsed();
    assert!(noticed < Duration::from_secs(2), "noticed within a second or two, took {noticed:?}");
    assert!(msg.contains("The session has ended"), "{msg}");
    assert_eq!(query(hub.addr, "fragile").await, Value::Null);
    nothing_left(&hub).await;
    // The port is free again and nothing came back.
    hub.wait_ports_free().await;
    let again = owner(&hub, "fragile", "pw").await;
    assert_eq!(again.port, hub.ports.0);
    assert_eq!(hub.containers().len(), 1);
}

/// The task watch lists tasks only: services removed from outside must still end their
/// sessions with the right words, and their networks must go too (found through their tasks,
/// one look serving both removals).
#[tokio::test]
async fn services_removed_from_outside_end_their_sessions_and_tell_their_owners_why() {
    let _swarm = Swarm::init();
    let hub = swarm_hub("").await;
    let mut a = owner(&hub, "removed", "pw").await;
    let mut b = owner(&hub, "also-removed", "pw").await;
    let s = services(&hub);
    assert_eq!(s.len(), 2);
    docker_ok(&["service", "rm", &s[0], &s[1]]);
    for o in [&mut a, &mut b] {
        let msg = o.ended(Duration::from_secs(10)).await.expect("the owner is told");
        assert_eq!(msg, "The session has ended: the session's service was removed.");
    }
    assert_eq!(query(hub.addr, "removed").await, Value::Null);
    nothing_left(&hub).await;
    hub.wait_ports_free().await;
    let again = owner(&hub, "removed", "pw").await;
    assert_eq!(again.port, hub.ports.0, "the removed sessions' ports are free again");
}

#[tokio::test]
async fn after_sigkill_a_restarted_swarm_hub_adopts_or_removes_its_services_and_leaks_nothing() {
    let _swarm = Swarm::init();
    let mut hub = swarm_hub("orphans: adopt").await;
    let o = owner(&hub, "survivor", "pw").await;
    let port = o.port;
    let mut performer = TroopClient::join(([127, 0, 0, 1], port).into(), "alice", "pw", T).await.unwrap();
    hub.signal("KILL");
    hub.wait_exit(T).await;
    drop(o);
    hub.spawn().await;
    // Adopted: the performance goes on, found under its name, given back to its owner only.
    assert_eq!(query(hub.addr, "survivor").await, json!(["127.0.0.1", port]));
    performer.insert(0, "still here").await.unwrap();
    performer.recv_until_match(T, |c, _| c.is_synchronized()).await.expect("session kept");
    assert!(start_session(hub.addr, "survivor", "guess", T).await.unwrap().is_err());
    let back = owner(&hub, "survivor", "pw").await;
    assert_eq!(back.port, port);
    assert_eq!(services(&hub).len(), 1, "adopted, not duplicated");
    let other = owner(&hub, "other", "pw").await;
    assert_ne!(other.port, port, "the adopted session keeps its slot in the node's port table");

    // Killed again, restarted set to remove: every service, container and network goes.
    hub.signal("KILL");
    hub.wait_exit(T).await;
    drop((back, other, performer));
    hub.extra_yaml = "runtime: swarm\norphans: remove".into();
    hub.spawn().await;
    nothing_left(&hub).await;
    assert_eq!(query(hub.addr, "survivor").await, Value::Null);
    let again = owner(&hub, "survivor", "pw").await;
    assert_eq!(again.port, hub.ports.0, "no slot stays allocated to a removed service");
}

#[tokio::test]
async fn placement_follows_the_node_table_its_public_host_label_and_its_availability() {
    let swarm = Swarm::init();
    let hub = swarm_hub("").await;
    let mut a = owner(&hub, "a", "pw").await;
    let b = owner(&hub, "b", "pw").await;
    assert_eq!((a.port, b.port), (hub.ports.0, hub.ports.0 + 1), "one port table for the node");
    let table = nodes(&hub).await;
    assert_eq!(
        table,
        json!([{"id": swarm.node, "host": "127.0.0.1", "usable": true, "sessions": 2, "free_ports": 3, "pool_members": 0}]),
        "capacity is the range times the usable nodes"
    );

    // A node label names the host performers get, for new and running sessions.
    docker_ok(&["node", "update", "--label-add", "io.troop-hub.public-host=localhost", &swarm.node]);
    let port = a.port;
    hub.eventually("the label to be followed", T, async || {
        let at = query(hub.addr, "a").await;
        if at == json!(["localhost", port]) {
            Ok(())
        } else {
            Err(format!("a is at {at}"))
        }
    })
    .await;
    let c = owner(&hub, "c", "pw").await;
    assert_eq!(c.host, "localhost");
    let session: SocketAddr = ([127, 0, 0, 1], c.port).into();
    TroopClient::join(session, "carol", "pw", T).await.expect("reached at the node");

    // A paused node gets no new sessions and keeps its running ones.
    docker_ok(&["node", "update", "--availability", "pause", &swarm.node]);
    hub.eventually("the hub to see the node paused", T, async || {
        let table = nodes(&hub).await;
        if table[0]["usable"] == json!(false) {
            Ok(())
        } else {
            Err(table.to_string())
        }
    })
    .await;
    assert_eq!(refused(&hub, "d").await, "No machine of the hub can take a new session right now; try again later");
    assert_eq!(query(hub.addr, "a").await, json!(["localhost", port]), "running sessions stay");

    // A drained node's tasks are shut down by Swarm: those sessions end and their owners are told.
    docker_ok(&["node", "update", "--availability", "drain", &swarm.node]);
    let msg = a.ended(T).await.expect("the owner of a drained node's session is told");
    assert!(msg.starts_with("The session has ended: its machine") && msg.contains("drained"), "{msg}");
    drop((b, c));
    nothing_left(&hub).await;

    // Active again: sessions start there again.
    docker_ok(&["node", "update", "--availability", "active", &swarm.node]);
    let e = hub
        .eventually("the node to take sessions again", T, async || {
            start_session(hub.addr, "e", "pw", T).await.expect("hub answered")
        })
        .await;
    assert_eq!(e.host, "localhost");
}

#[tokio::test]
async fn a_task_that_fails_tells_performers_in_plain_words_logs_swarms_reason_and_leaves_nothing() {
    let _swarm = Swarm::init();
    let hub = swarm_hub("session_args: [--no-such-flag]").await;
    let why = refused(&hub, "broken").await;
    assert!(why.starts_with("The session failed to start: its server stopped on the machine the hub chose"), "{why}");
    assert!(!why.contains("Swarm") && !why.contains("node") && !why.contains("non-zero"), "no Swarm internals: {why}");
    assert!(hub.log().contains("non-zero exit"), "Swarm's own words are in the hub's log");
    nothing_left(&hub).await;
    assert_eq!(query(hub.addr, "broken").await, Value::Null);
}

#[tokio::test]
async fn on_two_nodes_sessions_spread_share_port_numbers_and_are_reached_at_their_nodes_address() {
    let _swarm = Swarm::two_nodes();
    let hub = swarm_hub("").await;
    let table = nodes(&hub).await;
    let mut hosts: Vec<&str> = table.as_array().unwrap().iter().map(|n| n["host"].as_str().unwrap()).collect();
    hosts.sort_unstable();
    assert_eq!(hosts, [MANAGER_IP, WORKER_IP], "{table}");

    // Four sessions: two on each node, both nodes using the same two ports.
    let mut owners = Vec::new();
    for name in ["a", "b", "c", "d"] {
        owners.push(owner(&hub, name, "pw").await);
    }
    let mut placed: Vec<(String, u16)> = owners.iter().map(|o| (o.host.clone(), o.port)).collect();
    placed.sort_unstable();
    let (p0, p1) = (hub.ports.0, hub.ports.0 + 1);
    assert_eq!(
        placed,
        [
            (MANAGER_IP.to_string(), p0),
            (MANAGER_IP.to_string(), p1),
            (WORKER_IP.to_string(), p0),
            (WORKER_IP.to_string(), p1)
        ]
    );
    assert_eq!(Worker::docker_ok(&["ps", "-q", "--filter", "label=io.troop-hub.managed=true"]).lines().count(), 2);

    // Each is reached at its node's address, with its own password.
    for (o, name) in owners.iter().zip(["a", "b", "c", "d"]) {
        assert_eq!(query(hub.addr, name).await, json!([o.host, o.port]));
        let at: SocketAddr = (o.host.parse::<std::net::IpAddr>().unwrap(), o.port).into();
        let mut alice =
            TroopClient::join(at, "alice", "pw", T).await.unwrap_or_else(|e| panic!("join {name} at {at}: {e}"));
        assert!(matches!(login(at, "mallory", "wrong").await, Err(ClientError::Refused(-1))));
        alice.insert(0, name).await.unwrap();
        alice.recv_until_match(T, |c, _| c.is_synchronized()).await.unwrap();
    }

    // A task killed on the worker ends its session (the hub sees it through the manager).
    let on_worker = owners.iter().position(|o| o.host == WORKER_IP).unwrap();
    let mut o = owners.remove(on_worker);
    let filter = format!("label=io.troop-hub.port={}", o.port);
    let victim = Worker::docker_ok(&["ps", "-q", "--filter", &filter]);
    Worker::docker_ok(&["kill", &victim]);
    let msg = o.ended(Duration::from_secs(10)).await.expect("the owner is told");
    assert!(msg.contains("The session has ended"), "{msg}");

    // Owners leave: nothing is left on either node.
    drop(owners);
    nothing_left(&hub).await;
    nothing_left_on_the_worker().await;

    // A worker without the image: the start placed there fails with Swarm's reason, moves to
    // the manager, and the worker is avoided while the manager has room.
    Worker::docker_ok(&["rmi", "-f", "troop-hub/troop-server:latest"]);
    let x = owner(&hub, "x", "pw").await;
    let y = owner(&hub, "y", "pw").await;
    assert_eq!((x.host.as_str(), y.host.as_str()), (MANAGER_IP, MANAGER_IP), "{}", hub.log());
    assert!(hub.log().contains("the session failed on this node; trying another"), "{}", hub.log());
    let table = nodes(&hub).await;
    let worker = table.as_array().unwrap().iter().find(|n| n["host"] == json!(WORKER_IP)).unwrap();
    assert_eq!(worker["sessions"], json!(0), "{table}");
    drop((x, y));
    nothing_left(&hub).await;
}

#[tokio::test]
async fn on_two_nodes_each_keeps_its_own_warm_pool_and_a_start_is_refilled_where_it_was_taken() {
    let _swarm = Swarm::two_nodes();
    let mut hub = swarm_hub("warm_pool: 1").await;
    let members = |table: &Value| -> Vec<(String, u64)> {
        let mut m: Vec<(String, u64)> = table
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| (n["host"].as_str().unwrap_or("").to_string(), n["pool_members"].as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        m.sort_unstable();
        m
    };
    let both = vec![(MANAGER_IP.to_string(), 1), (WORKER_IP.to_string(), 1)];
    pool_ready(&hub, 2, T * 3).await;
    assert_eq!(members(&nodes(&hub).await), both, "one member per node");
    assert_eq!(Worker::docker_ok(&["ps", "-q", "--filter", "label=io.troop-hub.pool=true"]).lines().count(), 1);

    // A start takes a member (no new service), is reached at its node's address, and that
    // node's pool is refilled.
    let before = services(&hub);
    let o = owner(&hub, "warm", "pw").await;
    assert!(o.host == MANAGER_IP || o.host == WORKER_IP, "{}", o.host);
    let at: SocketAddr = (o.host.parse::<std::net::IpAddr>().unwrap(), o.port).into();
    let mut alice = TroopClient::join(at, "alice", "pw", T).await.expect("the member admits the performer");
    alice.insert(0, "warm on two nodes").await.unwrap();
    alice.recv_until_match(T, |c, _| c.is_synchronized()).await.unwrap();
    pool_ready(&hub, 2, T * 2).await;
    services_are(&hub, "one new service (the refill)", before.len() + 1).await;
    let table = nodes(&hub).await;
    assert_eq!(members(&table), both, "{table}");
    let mine = table.as_array().unwrap().iter().find(|n| n["host"] == json!(o.host)).unwrap();
    assert_eq!(mine["sessions"], json!(1), "{table}");

    // SIGTERM removes the session and both members; nothing is left on either node.
    hub.signal("TERM");
    assert_eq!(hub.wait_exit(T * 2).await, Some(0));
    nothing_left(&hub).await;
    nothing_left_on_the_worker().await;
    drop(o);
}

#[tokio::test]
async fn admin_kill_max_age_and_sigterm_remove_the_services() {
    let _swarm = Swarm::init();
    let mut hub = swarm_hub("max_session_age: 4s").await;

    // Too old: ended, its owner told, its service removed.
    let mut old = owner(&hub, "old", "pw").await;
    let msg = old.ended(T).await.expect("the owner is told");
    assert!(msg.contains("maximum session age"), "{msg}");
    nothing_left(&hub).await;
    // The rest must not race the age limit: raise it live (hub.yaml is re-read on change).
    hub.extra_yaml = "runtime: swarm\nmax_session_age: 1h".into();
    hub.write_config();
    hub.eventually("hub.yaml to be reloaded", T, async || {
        let age = http(hub.http, "GET", "/api/v1/config", Some(TOKEN), None).await.json()["max_session_age"].clone();
        if age == json!("1h") {
            Ok(())
        } else {
            Err(format!("max_session_age {age}"))
        }
    })
    .await;

    // Killed through the API.
    let k = owner(&hub, "k", "pw").await;
    let r = http(hub.http, "DELETE", "/api/v1/sessions/k", Some(TOKEN), None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    nothing_left(&hub).await;
    drop(k);

    // SIGTERM, with a third session's start under way: every owner told, every service
    // removed (the one being started too), exit 0.
    let mut a = owner(&hub, "a", "pw").await;
    let mut b = owner(&hub, "b", "pw").await;
    assert_eq!(services(&hub).len(), 2);
    // A performer in `a`, joined at its node's address, hears why it ends.
    let at: std::net::SocketAddr = format!("{}:{}", a.host, a.port).parse().expect("a node address");
    let mut judy = troop_server::client::TroopClient::join(at, "judy", "pw", T).await.expect("a performer joins");
    let addr = hub.addr;
    let late = tokio::spawn(async move { start_session(addr, "late", "pw", T).await });
    services_are(&hub, "the third service being created", 3).await;
    hub.signal("TERM");
    let kill = judy.recv_until_match(T, |_, m| matches!(m.body, troop_server::message::Body::Kill { .. })).await;
    let said = format!("{:?}", kill.expect("MSG_KILL arrives").body);
    assert!(said.contains("Troop Hub: the session has ended: the hub is shutting down."), "{said}");
    assert_eq!(hub.wait_exit(T).await, Some(0), "{}", hub.log());
    for o in [&mut a, &mut b] {
        let msg = o.ended(T).await.expect("told");
        assert_eq!(msg, "Troop Hub Service has been manually terminated");
    }
    let _ = late.await;
    nothing_left(&hub).await;
}

#[tokio::test]
async fn a_warm_pool_on_a_swarm_node_serves_a_start_and_the_hub_removes_it_at_shutdown() {
    let _swarm = Swarm::init();
    let mut hub = swarm_hub("warm_pool: 1").await;
    pool_ready(&hub, 1, T * 2).await;
    let member = services(&hub);
    assert_eq!(member.len(), 1, "one member service");
    let o = owner(&hub, "warm", "pw").await;
    let session: SocketAddr = ([127, 0, 0, 1], o.port).into();
    let mut alice = TroopClient::join(session, "alice", "pw", T).await.expect("the member admits the performer");
    alice.insert(0, "warm on a swarm").await.unwrap();
    alice.recv_until_match(T, |c, _| c.is_synchronized()).await.unwrap();
    assert!(services(&hub).contains(&member[0]), "the session is the member's service");
    let inspected = docker_ok(&["service", "inspect", &member[0]]);
    assert!(!inspected.contains(&troop_server::md5_hex("pw")), "no md5 in the service");
    // The pool refills with a second service; SIGTERM removes session and member alike.
    services_are(&hub, "the pool refilled", 2).await;
    hub.signal("TERM");
    assert_eq!(hub.wait_exit(T * 2).await, Some(0));
    nothing_left(&hub).await;
    drop(o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_hub_removes_every_service_at_a_sigterm_while_its_manager_answers_slowly() {
    let _swarm = Swarm::init();
    // Each call then takes longer than engine_timeout (2 s) but less than a removal's own
    // limit (x 6): a removal that looked at the service with engine_timeout gave up and left it
    // running (39 of 1,000 at a SIGTERM on two nodes).
    let n = 6;
    let mut hub = TestHub::new(&format!(
        "runtime: swarm\nengine_timeout: 2s\nmax_sessions: {n}\nmax_sessions_per_address: {n}\nwarm_pool: 0\narchive: off"
    ));
    hub.ports = common::wide_range(16);
    let mode = behind_switch(&mut hub, FORWARD);
    let mut hub = hub.start().await;
    let owners = common::start_many(&hub, "s", n, T).await;
    let filter = format!("label=io.troop-hub.hub={}", hub.id);
    assert_eq!(docker_ok(&["service", "ls", "-q", "--filter", &filter]).lines().count(), n);

    mode.store(SLOW, Ordering::SeqCst);
    hub.signal("TERM");
    assert_eq!(hub.wait_exit(Duration::from_secs(150)).await, Some(0), "{}", hub.log());
    drop(owners);
    let log = hub.log();
    assert!(!log.contains("left running for the next hub"), "a slow manager is not a dead one:\n{log}");
    eventually("every service and its container gone", T, async || {
        let services = docker_ok(&["service", "ls", "-q", "--filter", &filter]);
        let containers = hub.containers();
        if services.is_empty() && containers.is_empty() {
            Ok(())
        } else {
            Err(format!("services {services:?}, containers {containers:?}"))
        }
    })
    .await;
}
