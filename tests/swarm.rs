//! The Swarm runtime against a real single-node swarm that each test makes on this machine's
//! engine (`docker swarm init --advertise-addr 127.0.0.1`) and leaves afterwards, also when
//! it fails. The tests take turns: an engine is in one swarm at a time.

mod common;

use common::{docker, docker_ok, http, TestHub, T};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use troop_hub::admin::{self, start_session};
use troop_server::client::{login, ClientError, TroopClient};

/// Where a test's swarm is noted while it exists, so CI can leave it if a test run dies.
const MARKER: &str = "/tmp/troop-hub-test-swarm";
const TOKEN: &str = "swarm-test-token";

static TURN: Mutex<()> = Mutex::new(());

/// A single-node swarm made for one test: left (and what it made removed) on drop.
struct Swarm {
    node: String,
    gwbridge_before: bool,
    _turn: MutexGuard<'static, ()>,
}

fn swarm_state() -> String {
    docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"])
}

fn gwbridge_exists() -> bool {
    docker(&["network", "inspect", "docker_gwbridge"]).status.success()
}

impl Swarm {
    /// Takes this binary's turn, checks the engine is in no swarm, and makes one.
    fn turn() -> MutexGuard<'static, ()> {
        let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
        common::session_image();
        let state = swarm_state();
        assert_eq!(
            state, "inactive",
            "the swarm tests make and leave their own swarm, but this Docker engine is already in one ({state}); \
             leave it first (docker swarm leave --force) or run the tests against another engine"
        );
        turn
    }

    fn init() -> Swarm {
        let turn = Swarm::turn();
        let gwbridge_before = gwbridge_exists();
        std::fs::write(MARKER, "made by tests/swarm.rs\n").expect("write the swarm marker");
        // Made before the init, so a failing init is cleaned up too.
        let mut swarm = Swarm { node: String::new(), gwbridge_before, _turn: turn };
        docker_ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        swarm.node = docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"]);
        swarm
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let services = docker(&["service", "ls", "-q", "--filter", "label=io.troop-hub.managed=true"]);
        for id in String::from_utf8_lossy(&services.stdout).lines().filter(|l| !l.is_empty()) {
            let _ = docker(&["service", "rm", id]);
        }
        let _ = docker(&["swarm", "leave", "--force"]);
        // Task containers of removed services may outlive the swarm for a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = docker(&["ps", "-aq", "--filter", "label=com.docker.swarm.service.id"]);
            let ids: Vec<String> =
                String::from_utf8_lossy(&left.stdout).lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
            for id in &ids {
                let _ = docker(&["rm", "-f", "-v", id]);
            }
            if ids.is_empty() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if !self.gwbridge_before {
            let _ = docker(&["network", "rm", "docker_gwbridge"]);
        }
        let _ = std::fs::remove_file(MARKER);
    }
}

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

async fn eventually<T>(what: &str, hub: &TestHub, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + T;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} did not happen in time\n{}", hub.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the hub has no service, task container or session network left.
async fn nothing_left(hub: &TestHub) {
    eventually("removal of every service, container and network", hub, || {
        (services(hub).is_empty() && hub.containers().is_empty() && !hub.network_exists()).then_some(())
    })
    .await;
}

async fn query(hub: SocketAddr, name: &str) -> Value {
    admin::request(hub, &json!({"type": "query", "name": name}), T).await.expect("query answered")["result"].clone()
}

async fn owner(hub: &TestHub, name: &str, pw: &str) -> admin::Owner {
    match start_session(hub.addr, name, pw, T).await.expect("hub answered") {
        Ok(o) => o,
        Err(e) => panic!("start {name} refused: {e}\n{}", hub.log()),
    }
}

async fn refused(hub: &TestHub, name: &str) -> String {
    match start_session(hub.addr, name, "pw", T).await.expect("hub answered") {
        Ok(o) => panic!("start {name} was accepted on port {}", o.port),
        Err(e) => e,
    }
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
    hub.write_config();
    let out = Command::new(env!("CARGO_BIN_EXE_troop-hub"))
        .arg("--config")
        .arg(hub.config_path())
        .output()
        .expect("run troop-hub");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
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
    assert!(everything.contains(&troop_server::md5_hex("pw")));
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
    let again = owner(&hub, "fragile", "pw").await;
    assert_eq!(again.port, hub.ports.0);
    assert_eq!(hub.containers().len(), 1);
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
        json!([{"id": swarm.node, "host": "127.0.0.1", "usable": true, "sessions": 2, "free_ports": 3}]),
        "capacity is the range times the usable nodes"
    );

    // A node label names the host performers get, for new and running sessions.
    docker_ok(&["node", "update", "--label-add", "io.troop-hub.public-host=localhost", &swarm.node]);
    let port = a.port;
    let deadline = Instant::now() + T;
    while query(hub.addr, "a").await != json!(["localhost", port]) {
        assert!(Instant::now() < deadline, "the label was not followed\n{}", hub.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let c = owner(&hub, "c", "pw").await;
    assert_eq!(c.host, "localhost");
    let session: SocketAddr = ([127, 0, 0, 1], c.port).into();
    TroopClient::join(session, "carol", "pw", T).await.expect("reached at the node");

    // A paused node gets no new sessions and keeps its running ones.
    docker_ok(&["node", "update", "--availability", "pause", &swarm.node]);
    let deadline = Instant::now() + T;
    while nodes(&hub).await[0]["usable"] != json!(false) {
        assert!(Instant::now() < deadline, "the hub did not see the node paused\n{}", hub.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(refused(&hub, "d").await, "No machine of the hub can take a new session right now; try again later");
    assert_eq!(query(hub.addr, "a").await, json!(["localhost", port]), "running sessions stay");

    // A drained node's tasks are shut down by Swarm: those sessions end and their owners are told.
    docker_ok(&["node", "update", "--availability", "drain", &swarm.node]);
    let msg = a.ended(T).await.expect("the owner of a drained node's session is told");
    assert!(msg.contains("The session has ended"), "{msg}");
    drop((b, c));
    nothing_left(&hub).await;

    // Active again: sessions start there again.
    docker_ok(&["node", "update", "--availability", "active", &swarm.node]);
    let deadline = Instant::now() + T;
    loop {
        match start_session(hub.addr, "e", "pw", T).await.expect("hub answered") {
            Ok(e) => {
                assert_eq!(e.host, "localhost");
                break;
            }
            Err(why) => {
                assert!(Instant::now() < deadline, "the node did not come back: {why}\n{}", hub.log());
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_task_that_fails_passes_swarms_reason_on_and_leaves_nothing() {
    let _swarm = Swarm::init();
    let hub = swarm_hub("session_args: [--no-such-flag]").await;
    let why = refused(&hub, "broken").await;
    assert!(why.starts_with("The session failed to start: its Swarm task failed"), "{why}");
    assert!(why.contains("non-zero exit"), "Swarm's own words: {why}");
    nothing_left(&hub).await;
    assert_eq!(query(hub.addr, "broken").await, Value::Null);
}
