//! The hub against the real Docker engine, driven over TCP exactly as Troop's HubClient does:
//! starting, finding and joining sessions, every cleanup path, limits and bad input.

mod common;

use common::{docker_ok, eventually, owner, TestHub, T};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use troop_hub::admin::{self, start_session};
use troop_server::client::{login, ClientError, TroopClient};

async fn query(hub: SocketAddr, name: &str) -> Value {
    admin::request(hub, &json!({"type": "query", "name": name}), T).await.expect("query answered")["result"].clone()
}

/// Sends raw bytes as a request and returns the reply frame, or None if the hub just closed.
async fn raw(hub: SocketAddr, bytes: &[u8]) -> Option<Value> {
    let mut s = TcpStream::connect(hub).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut len = [0u8; 4];
    tokio::time::timeout(T, s.read_exact(&mut len)).await.expect("answered in time").ok()?;
    let n: usize = std::str::from_utf8(&len).unwrap().parse().unwrap();
    let mut body = vec![0u8; n];
    s.read_exact(&mut body).await.unwrap();
    assert!(body.is_ascii());
    Some(serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn a_session_starts_answers_queries_admits_its_password_and_ends_with_its_owner() {
    let hub = TestHub::new("").start().await;
    let o = owner(&hub, "mySession", "pw").await;
    assert_eq!(o.host, "127.0.0.1");
    assert!((hub.ports.0..=hub.ports.1).contains(&o.port));
    assert_eq!(query(hub.addr, "mySession").await, json!(["127.0.0.1", o.port]));
    assert_eq!(query(hub.addr, "nobody").await, Value::Null);

    // The reply came once the server listens: a Troop client logs in at once.
    let session: SocketAddr = ([127, 0, 0, 1], o.port).into();
    let mut alice = TroopClient::join(session, "alice", "pw", T).await.expect("join via the published port");
    assert!(matches!(login(session, "mallory", "wrong").await, Err(ClientError::Refused(-1))));
    alice.insert(0, "hello").await.unwrap();
    alice.recv_until_match(T, |c, _| c.is_synchronized()).await.unwrap();

    // The container: labelled, hardened, and no password material (the hub armed the server
    // over its control channel; only the per-session control secret is in its environment).
    let containers = hub.containers();
    assert_eq!(containers.len(), 1);
    let fmt = "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.Config.User}} {{.HostConfig.PidsLimit}} {{.HostConfig.Memory}}";
    let hardening = docker_ok(&["inspect", "-f", fmt, &containers[0]]);
    assert_eq!(hardening, "true [ALL] [no-new-privileges=true] 65534:65534 64 67108864");
    let everything = docker_ok(&["inspect", &containers[0]]);
    assert!(!everything.contains("\"pw\"") && !everything.contains("=pw\""), "no plaintext password in the container");
    assert!(!everything.contains(&troop_server::md5_hex("pw")), "not even its md5");
    assert!(everything.contains("TROOP_CONTROL_SECRET="));
    let label = docker_ok(&["inspect", "-f", "{{index .Config.Labels \"io.troop-hub.session\"}}", &containers[0]]);
    assert_eq!(label, "mySession");

    // Owner leaves: the container goes, the name and port are free again.
    drop(o);
    hub.wait_containers(0).await;
    assert_eq!(query(hub.addr, "mySession").await, Value::Null);
    hub.wait_ports_free().await;
    let again = owner(&hub, "mySession", "pw2").await;
    assert_eq!(again.port, hub.ports.0, "the port was freed");
    drop(alice);
}

#[tokio::test]
async fn the_owner_kill_message_ends_the_session() {
    let hub = TestHub::new("").start().await;
    let o = owner(&hub, "k", "pw").await;
    hub.wait_containers(1).await;
    o.kill().await;
    hub.wait_containers(0).await;
    assert_eq!(query(hub.addr, "k").await, Value::Null);
}

#[tokio::test]
async fn a_container_killed_from_outside_ends_the_session_and_tells_the_owner() {
    let hub = TestHub::new("").start().await;
    let mut o = owner(&hub, "fragile", "pw").await;
    let c = hub.containers();
    docker_ok(&["kill", &c[0]]);
    let started = std::time::Instant::now();
    let msg = o.ended(Duration::from_secs(5)).await.expect("the owner is told");
    assert!(started.elapsed() < Duration::from_secs(2), "noticed within a second or two");
    assert!(msg.contains("The session has ended"), "{msg}");
    assert_eq!(query(hub.addr, "fragile").await, Value::Null);
    hub.wait_containers(0).await;
}

#[tokio::test]
async fn admin_kill_and_list_from_trusted_addresses_and_the_cli() {
    let hub = TestHub::new("").start().await;
    let mut o = owner(&hub, "listed", "pw").await;
    let list = admin::request(hub.addr, &json!({"type": "list"}), T).await.unwrap();
    let data = list["data"].as_array().expect("a list");
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["name"], "listed");
    assert_eq!(data[0]["owner_connected"], true);
    assert!(!list.to_string().contains("\"pw\""), "no password in the list");

    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_troop-hub"))
        .args(["--config", hub.config_path().to_str().unwrap(), "list"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&cli.stdout);
    assert!(shown.starts_with("listed") && shown.contains(&format!("127.0.0.1:{}", o.port)), "{cli:?}");
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_troop-hub"))
        .args(["--config", hub.config_path().to_str().unwrap(), "kill", "listed"])
        .output()
        .unwrap();
    assert!(cli.status.success(), "{cli:?}");
    assert_eq!(o.ended(T).await.as_deref(), Some("Session manually killed by admin."));
    hub.wait_containers(0).await;
    let none = admin::request(hub.addr, &json!({"type": "kill", "name": "listed"}), T).await.unwrap();
    assert!(none["error"].as_str().unwrap().contains("No session named"));
}

#[tokio::test]
async fn limits_cap_duplicate_names_and_port_exhaustion() {
    let hub = TestHub::new("max_sessions: 2").start().await;
    let _a = owner(&hub, "a", "pw").await;
    let dup = start_session(hub.addr, "a", "other", T).await.unwrap();
    assert_eq!(dup.err().as_deref(), Some("A running Troop server already exists with this name"));
    let _b = owner(&hub, "b", "pw").await;
    let full = start_session(hub.addr, "c", "pw", T).await.unwrap();
    assert_eq!(full.err().as_deref(), Some("Max number of running Troop instances reached"));
    hub.wait_containers(2).await;

    let small = TestHub::new("max_sessions: 5").start().await;
    let mut small = small;
    // Shrink the range to one port by restarting with a narrower config.
    if let Some(mut p) = small.proc.take() {
        let _ = p.kill();
        let _ = p.wait();
    }
    small.ports = (small.ports.0, small.ports.0);
    small.spawn().await;
    let _x = owner(&small, "x", "pw").await;
    let none = start_session(small.addr, "y", "pw", T).await.unwrap();
    assert_eq!(none.err().as_deref(), Some("No free port is left for a new session; try again later"));
}

#[tokio::test]
async fn untrusted_addresses_get_one_session_and_no_admin_requests() {
    // Connect from the Docker bridge gateway: a non-loopback address of this machine.
    let gw = common::bridge_address();
    let mut hub = TestHub::new("");
    hub.listen_ip = "0.0.0.0".into();
    let hub = hub.start().await;
    let target = SocketAddr::new(gw, hub.addr.port());
    let from_gateway = |body: Value| async move {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(gw, 0)).unwrap();
        let mut s = sock.connect(target).await.expect("connect from the bridge address");
        s.write_all(&troop_hub::wire::encode(&body).unwrap()).await.unwrap();
        let v = troop_hub::wire::read_frame(&mut s).await.expect("a reply");
        (v, s)
    };
    let (first, _keep) = from_gateway(json!({"type": "server", "name": "u1", "password": "p"})).await;
    assert!(first.get("address").is_some(), "{first} {}", hub.log());
    let (second, _) = from_gateway(json!({"type": "server", "name": "u2", "password": "p"})).await;
    assert_eq!(second["error"], "A running Troop server has already been started from this address");
    let (list, _) = from_gateway(json!({"type": "list"})).await;
    // The hub names the address it saw (the bridge address, or the host's own address
    // where the engine's NAT rules rewrite it): never loopback.
    let said = list["error"].as_str().unwrap_or_default();
    assert!(said.starts_with("Status request made from invalid address "), "{said}");
    assert!(!said.ends_with("127.0.0.1"), "{said}");
    let (kill, _) = from_gateway(json!({"type": "kill", "name": "u1"})).await;
    assert_eq!(kill["error"], "External kill request denied");
    let (daemon, _) = from_gateway(json!({"type": "server", "name": "u3", "password": "p", "daemon": true})).await;
    assert_eq!(daemon["error"], "Daemon sessions can only be started from a trusted address");
    assert_eq!(query(hub.addr, "u1").await[1], first["address"][1]);
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let hub = TestHub::new("request_timeout: 300ms").start().await;
    let _o = owner(&hub, "steady", "pw").await;
    let frame = |json: &str| format!("{:04}{json}", json.len()).into_bytes();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"abcd{}".to_vec(), "Bad frame: the length must be 4 ASCII digits"),
        (b"0000".to_vec(), "Bad frame: the length must be between 1 and 9999"),
        (frame("[1,2]"), "Bad request: it must be a JSON object"),
        (frame("{x}"), "Bad frame: the request is not UTF-8 JSON"),
        (frame(r#"{"type":"xyz"}"#), "Unknown request type 'xyz'"),
        (frame(r#"{"name":1}"#), "Request has no type"),
        (frame(r#"{"type":"query"}"#), "Request has no name"),
        (frame(r#"{"type":"server","name":"nopw"}"#), "Request has no password"),
        (frame(r#"{"type":"server","name":"a b","password":""}"#), "Invalid session name"),
        (frame(&format!(r#"{{"type":"query","name":"{}"}}"#, "n".repeat(65))), "Invalid session name"),
    ];
    for (bytes, want) in cases {
        let reply = raw(hub.addr, &bytes).await.expect("an error frame");
        let got = reply["error"].as_str().unwrap_or_default().to_string();
        assert!(got.starts_with(want), "{:?}: got {got:?}", String::from_utf8_lossy(&bytes));
    }
    // A connection that sends nothing is told so and closed.
    let silent = raw(hub.addr, b"").await.expect("an error frame");
    assert_eq!(silent["error"], "No request received in time");
    // Nothing changed.
    assert!(query(hub.addr, "steady").await.is_array());
    assert_eq!(hub.containers().len(), 1);
}

#[tokio::test]
async fn sigterm_tells_every_owner_removes_every_container_and_exits_zero() {
    let mut hub = TestHub::new("").start().await;
    let mut a = owner(&hub, "one", "pw").await;
    let mut b = owner(&hub, "two", "pw").await;
    hub.wait_containers(2).await;
    hub.signal("TERM");
    for o in [&mut a, &mut b] {
        assert_eq!(o.ended(T).await.as_deref(), Some("Troop Hub Service has been manually terminated"));
    }
    assert_eq!(hub.wait_exit(T).await, Some(0));
    assert!(hub.containers().is_empty(), "no container left");
    assert!(!hub.network_exists(), "the sessions' network is removed");
}

#[tokio::test]
async fn after_sigkill_a_restarted_hub_adopts_its_sessions_and_gives_them_back_to_their_owner() {
    let mut hub = TestHub::new("orphans: adopt").start().await;
    let o = owner(&hub, "survivor", "pw").await;
    let port = o.port;
    let session: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut performer = TroopClient::join(session, "alice", "pw", T).await.unwrap();
    hub.signal("KILL");
    hub.wait_exit(T).await;
    drop(o);
    hub.spawn().await;
    // The performance goes on and is still found under its name.
    assert_eq!(query(hub.addr, "survivor").await, json!(["127.0.0.1", port]));
    performer.insert(0, "still here").await.unwrap();
    performer.recv_until_match(T, |c, _| c.is_synchronized()).await.expect("session kept");
    // Someone else cannot take it; its owner gets it back with the same password.
    let thief = start_session(hub.addr, "survivor", "guess", T).await.unwrap();
    assert!(thief.is_err());
    let back = owner(&hub, "survivor", "pw").await;
    assert_eq!(back.port, port);
    assert_eq!(hub.containers().len(), 1, "adopted, not duplicated");
    // A new session does not get the adopted session's port.
    let other = owner(&hub, "other", "pw").await;
    assert_ne!(other.port, port);
    drop(back);
    hub.wait_containers(1).await;
}

#[tokio::test]
async fn after_sigkill_a_hub_set_to_remove_orphans_removes_them() {
    let mut hub = TestHub::new("orphans: remove").start().await;
    let _o = owner(&hub, "gone", "pw").await;
    hub.signal("KILL");
    hub.wait_exit(T).await;
    hub.spawn().await;
    hub.wait_containers(0).await;
    assert_eq!(query(hub.addr, "gone").await, Value::Null);
    let again = owner(&hub, "gone", "pw").await;
    assert_eq!(again.port, hub.ports.0, "no port stays allocated to the removed session");
}

#[tokio::test]
async fn a_dead_docker_engine_fails_starts_clearly_and_queries_keep_working() {
    let mut hub = TestHub::new("");
    let sock = hub.dir.path().join("no-engine.sock");
    hub.envs.push(("DOCKER_HOST".into(), format!("unix://{}", sock.display())));
    let hub = hub.start().await;
    let started = std::time::Instant::now();
    let refused = start_session(hub.addr, "x", "pw", T).await.unwrap();
    assert_eq!(
        refused.err().as_deref(),
        Some("The hub cannot reach its Docker engine right now; try again in a moment")
    );
    assert!(started.elapsed() < Duration::from_secs(5), "fails fast");
    assert_eq!(query(hub.addr, "x").await, Value::Null);
}

#[tokio::test]
async fn a_missing_image_is_named_in_the_error() {
    let hub = TestHub::new("image: troop-hub/no-such-image:latest").start().await;
    let refused = start_session(hub.addr, "x", "pw", T).await.unwrap();
    let msg = refused.err().unwrap_or_default();
    assert!(msg.contains("troop-hub/no-such-image:latest") && msg.contains("missing"), "{msg}");
    assert!(hub.containers().is_empty());
    assert_eq!(query(hub.addr, "x").await, Value::Null);
}

#[tokio::test]
async fn a_port_taken_by_another_program_is_skipped() {
    let hub = TestHub::new("");
    // Something else holds the first port of the range on the session bind address.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", hub.ports.0)).expect("hold the first port");
    let hub = hub.start().await;
    let o = owner(&hub, "skipper", "pw").await;
    assert_eq!(o.port, hub.ports.0 + 1, "moved past the taken port");
    let session: SocketAddr = ([127, 0, 0, 1], o.port).into();
    TroopClient::join(session, "alice", "pw", T).await.expect("the session works on its new port");
    assert_eq!(hub.containers().len(), 1, "the failed attempt left no container");
    drop(squatter);
}

#[tokio::test]
async fn sessions_older_than_max_session_age_are_ended() {
    let hub = TestHub::new("max_session_age: 2s").start().await;
    let mut o = owner(&hub, "brief", "pw").await;
    let msg = o.ended(Duration::from_secs(10)).await.expect("told when it ends");
    assert!(msg.contains("maximum session age"), "{msg}");
    hub.wait_containers(0).await;
}

#[tokio::test]
async fn connection_floods_are_capped_per_address() {
    // From the bridge address (loopback is trusted and held only to the total cap).
    let gw = common::bridge_address();
    let mut hub = TestHub::new("max_connections_per_address: 3\nrequest_timeout: 5s");
    hub.listen_ip = "0.0.0.0".into();
    let hub = hub.start().await;
    let target = SocketAddr::new(gw, hub.addr.port());
    let connect = || async move {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(gw, 0)).unwrap();
        sock.connect(target).await.expect("connect from the bridge address")
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect().await);
    }
    // The fourth is told so (once the hub has counted the first three).
    eventually("the cap to hold", T, async || {
        let mut s = connect().await;
        match tokio::time::timeout(Duration::from_secs(2), troop_hub::wire::read_frame(&mut s)).await {
            Ok(Ok(v)) if v["error"] == "Too many connections to the hub; try again later" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Loopback (trusted) is still served, and once the flood is gone the address is again.
    assert!(query(hub.addr, "x").await.is_null());
    drop(held);
    eventually("an answer after the flood", T, async || {
        let mut s = connect().await;
        s.write_all(&troop_hub::wire::encode(&json!({"type": "query", "name": "x"})).unwrap()).await.unwrap();
        match troop_hub::wire::read_frame(&mut s).await {
            Ok(v) if v.get("result").is_some() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test]
async fn a_paused_container_ends_the_session_and_tells_the_owner() {
    let hub = TestHub::new("").start().await;
    let mut o = owner(&hub, "frozen", "pw").await;
    let c = hub.containers();
    docker_ok(&["pause", &c[0]]);
    let msg = o.ended(Duration::from_secs(5)).await.expect("the owner is told");
    assert!(msg.contains("paused"), "{msg}");
    hub.wait_containers(0).await;
    assert_eq!(query(hub.addr, "frozen").await, Value::Null);
}

#[tokio::test]
async fn an_oom_killed_session_is_reported_and_freed() {
    // A tiny memory limit and a performer pasting megabytes: the kernel kills the server.
    // The hub fits the server's document bound to the memory limit; lift it so the kernel acts.
    let extra = "limits: {memory: 12m, cpus: 0.5, pids: 64}\nsession_args: [--max-document, '67108864', --history-bytes, '67108864']";
    let hub = TestHub::new(extra).start().await;
    let mut o = owner(&hub, "greedy", "pw").await;
    let session: SocketAddr = ([127, 0, 0, 1], o.port).into();
    let mut alice = TroopClient::join(session, "alice", "pw", T).await.unwrap();
    let chunk = "x".repeat(900 * 1024);
    let mut killed = None;
    for _ in 0..40 {
        let len = alice.document().chars().count() as u64;
        if alice.insert(len, &chunk).await.is_err() {
            break;
        }
        match alice.recv_until_match(Duration::from_secs(5), |c, _| c.is_synchronized()).await {
            Ok(_) => {}
            Err(_) => break,
        }
        if let Some(msg) = o.ended(Duration::from_millis(10)).await {
            killed = Some(msg);
            break;
        }
    }
    let msg = match killed {
        Some(m) => m,
        None => o.ended(Duration::from_secs(10)).await.expect("the owner is told"),
    };
    assert!(msg.contains("ran out of memory"), "{msg}");
    hub.wait_containers(0).await;
    assert_eq!(query(hub.addr, "greedy").await, Value::Null);
}

#[tokio::test]
async fn what_a_session_sees_of_a_performer_on_another_address() {
    // A performer on the bridge address joins through the published port. With Docker's
    // userland proxy (the engine default) the session sees the proxy's address instead of the
    // performer's; with "userland-proxy": false it sees the performer (README, Deploy).
    let mut hub = TestHub::new("");
    hub.bind_address = "0.0.0.0".into();
    let hub = hub.start().await;
    let o = owner(&hub, "remote", "pw").await;
    let gw = common::bridge_address();
    let _bob = TroopClient::join_from(Some(gw), SocketAddr::new(gw, o.port), "bob", "pw", T)
        .await
        .expect("join from the bridge address");
    // The session announces every peer with the address it saw; carol reads bob's.
    let carol = TroopClient::join(([127, 0, 0, 1], o.port).into(), "carol", "pw", T).await.unwrap();
    let bob_host = carol.peers().values().find(|(name, _)| name == "bob").map(|(_, host)| host.clone());
    let bob_host = bob_host.expect("carol was told about bob");
    let pattern = format!("docker-proxy.*-host-port {}( |$)", o.port);
    let proxied = std::process::Command::new("pgrep").args(["-f", &pattern]).output().expect("pgrep").status.success();
    if proxied {
        assert_ne!(bob_host, gw.to_string(), "through docker-proxy the session cannot see bob's address");
    } else {
        assert_eq!(bob_host, gw.to_string(), "without the proxy the session sees bob's real address");
    }
}

#[tokio::test]
async fn a_hub_whose_port_is_taken_says_so_and_leaves_nothing_on_the_engine() {
    common::session_image();
    let hub = TestHub::new("warm_pool: 2");
    let _squatter = std::net::TcpListener::bind(hub.addr).expect("hold the hub's port");
    let (code, last, stderr) = hub.run_failing();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(last.contains(&format!("cannot listen on {}", hub.addr)) && last.contains("in use"), "{last}");
    assert!(!hub.network_exists(), "no sessions' network was created");
    assert!(hub.containers().is_empty(), "no warm pool member was started");
}

#[tokio::test]
async fn a_network_that_lets_sessions_reach_each_other_is_refused_with_the_fix_named() {
    // A network of the sessions' name made without turning inter-container traffic off (by
    // an operator, or by hand): the hub will not put sessions on it, says why in one line and
    // starts none. (It carries this hub's labels so that the test's cleanup removes it.)
    common::session_image();
    let hub = TestHub::new("warm_pool: 2");
    let name = format!("{}-net", hub.id);
    let label = format!("io.troop-hub.hub={}", hub.id);
    docker_ok(&["network", "create", "--label", "io.troop-hub.managed=true", "--label", &label, &name]);
    let (code, last, stderr) = hub.run_failing();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(last.contains(&format!("the sessions' network `{name}` lets sessions reach each other")), "{last}");
    assert!(last.contains("com.docker.network.bridge.enable_icc=false"), "the fix is named: {last}");
    assert!(hub.containers().is_empty(), "no warm pool member was started");
    let icc =
        docker_ok(&["network", "inspect", "-f", "{{index .Options \"com.docker.network.bridge.enable_icc\"}}", &name]);
    assert_eq!(icc.trim(), "", "the hub left the network as it was");
}

#[tokio::test]
async fn sessions_go_on_dockers_default_bridge_only_when_the_engine_keeps_containers_apart() {
    // `network: bridge` (Docker's default network: no network of the hub's, cold starts
    // 15-20 % faster) is safe only when the engine turns inter-container traffic off for it
    // ("icc": false in daemon.json). Which case this engine is in decides what is asserted.
    common::session_image();
    let icc = docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{index .Options \"com.docker.network.bridge.enable_icc\"}}",
        "bridge",
    ]);
    let hub = TestHub::new("network: bridge\nwarm_pool: 1");
    if icc.trim() != "false" {
        let (code, last, stderr) = hub.run_failing();
        assert_eq!(code, Some(1), "{stderr}");
        assert!(last.contains("the sessions' network `bridge` lets sessions reach each other"), "{last}");
        assert!(last.contains("set \"icc\": false in the engine's daemon.json"), "the fix is named: {last}");
        assert!(hub.containers().is_empty(), "no warm pool member was started");
        return;
    }
    let hub = hub.start().await;
    let o = owner(&hub, "plain", "pw").await;
    let at = SocketAddr::from(([127, 0, 0, 1], o.port));
    TroopClient::join(at, "alice", "pw", T).await.expect("the session admits its performer");
    for id in hub.containers() {
        let nets = docker_ok(&["inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", &id]);
        assert_eq!(nets.trim(), "bridge", "container {id} is on Docker's default bridge only");
    }
    drop(o);
    hub.wait_containers(1).await;
    // SIGTERM: the pool member goes, and the hub leaves Docker's network alone (it tries no
    // removal of a network it did not make).
    let mut hub = hub;
    hub.signal("TERM");
    assert_eq!(hub.wait_exit(Duration::from_secs(20)).await, Some(0), "{}", hub.log());
    assert!(hub.containers().is_empty(), "{}", hub.log());
    assert!(!hub.log().contains("could not remove the sessions' network"), "{}", hub.log());
}

#[tokio::test]
async fn two_networks_of_the_same_name_left_by_a_killed_hub_are_made_one_and_sessions_start() {
    // A hub killed while creating its network and restarted at once can leave two networks of
    // one name (the Engine API does not refuse the second); Docker then refuses to start any
    // container on either. Made here directly through the API, as the race would.
    let hub = TestHub::new("");
    let (name, id) = (format!("{}-net", hub.id), hub.id.clone());
    let docker = bollard::Docker::connect_with_defaults().expect("docker").negotiate_version().await.expect("api");
    let twin = || bollard::models::NetworkCreateRequest {
        name: name.clone(),
        driver: Some("bridge".into()),
        // As the hub makes it: sessions kept apart.
        options: Some([("com.docker.network.bridge.enable_icc".to_string(), "false".to_string())].into()),
        labels: Some(
            [("io.troop-hub.managed".to_string(), "true".to_string()), ("io.troop-hub.hub".to_string(), id.clone())]
                .into(),
        ),
        ..Default::default()
    };
    for _ in 0..2 {
        docker.create_network(twin()).await.expect("create a network");
    }
    let named = || docker_ok(&["network", "ls", "-q", "--filter", &format!("name=^{name}$")]).lines().count();
    assert_eq!(named(), 2, "the test made two networks of one name");
    let hub = hub.start().await;
    let o = owner(&hub, "twin", "pw").await;
    let at = SocketAddr::from(([127, 0, 0, 1], o.port));
    TroopClient::join(at, "alice", "pw", T).await.expect("the session admits its performer");
    assert_eq!(named(), 1, "one network of that name is left\n{}", hub.log());
    assert!(hub.log().contains("removed a second network of the same name"), "{}", hub.log());

    // The same once the hub runs (the killed hub's create landing late): the next start meets
    // "ambiguous", keeps one network and starts again.
    docker.create_network(twin()).await.expect("create a network");
    assert_eq!(named(), 2);
    let o2 = owner(&hub, "twin2", "pw").await;
    let at = SocketAddr::from(([127, 0, 0, 1], o2.port));
    TroopClient::join(at, "bob", "pw", T).await.expect("the second session admits its performer");
    assert_eq!(named(), 1, "one network of that name is left\n{}", hub.log());
    drop((o, o2));
    hub.wait_containers(0).await;
}

/// Removes a test's image when dropped (also when the test fails).
struct ImageGone(String);

impl Drop for ImageGone {
    fn drop(&mut self) {
        let _ = common::docker(&["image", "rm", "-f", &self.0]);
    }
}

#[tokio::test]
async fn an_image_without_a_control_channel_is_refused_at_start_with_the_fix_named() {
    // Upstream Troop's image says it has no control channel (a label); with the default
    // `control_channel: true` every start would fail with a bare exit code and the warm pool
    // would retry for ever. The hub refuses it at start instead, naming the fix.
    common::session_image();
    let mut hub = TestHub::new("warm_pool: 1");
    let image = format!("troop-hub/no-control-{}:test", hub.id);
    let _gone = ImageGone(image.clone());
    let hub_label = format!("io.troop-hub.hub={}", hub.id);
    let made = docker_ok(&[
        "create",
        "--label",
        "io.troop-hub.managed=true",
        "--label",
        &hub_label,
        "troop-hub/troop-server:latest",
    ]);
    docker_ok(&["commit", "--change", "LABEL io.troop-hub.control-channel=none", &made, &image]);
    docker_ok(&["rm", "-f", &made]);
    hub.extra_yaml = format!("warm_pool: 1\nimage: {image}");
    let (code, last, stderr) = hub.run_failing();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(last.contains(&format!("the session image {image} has no control channel")), "{last}");
    assert!(last.contains("set control_channel: false"), "the fix is named: {last}");
    assert!(hub.containers().is_empty(), "no warm pool member was started");
}

/// The networks each of this hub's containers is on, by network name: how many.
fn containers_per_network(hub: &TestHub) -> std::collections::BTreeMap<String, usize> {
    let mut per = std::collections::BTreeMap::new();
    for id in hub.containers() {
        let nets =
            common::docker_ok(&["inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", &id]);
        for n in nets.split_whitespace() {
            *per.entry(n.to_string()).or_insert(0) += 1;
        }
    }
    per
}

#[tokio::test]
async fn sessions_past_a_networks_size_go_on_a_new_network_that_goes_once_it_empties_with_room_below_and_survives_a_restart(
) {
    // Two sessions a network here (1,000 by default: a Linux bridge takes 1,023 ports).
    let mut hub = TestHub::new("orphans: adopt");
    // (Named here: TestHub names the network only when the extra lines do not.)
    hub.extra_yaml.push_str(&format!("\nnetwork: {}-net\nsessions_per_network: 2", hub.id));
    hub.ports = (hub.ports.0, hub.ports.0 + 5);
    let mut hub = hub.start().await;
    let net = format!("{}-net", hub.id);
    let mut owners = Vec::new();
    for name in ["a", "b", "c", "d", "e"] {
        owners.push(owner(&hub, name, "pw").await);
    }
    let want = |counts: &[(&str, usize)]| -> std::collections::BTreeMap<String, usize> {
        counts.iter().map(|(suffix, n)| (format!("{net}{suffix}"), *n)).collect()
    };
    assert_eq!(containers_per_network(&hub), want(&[("", 2), ("-2", 2), ("-3", 1)]));
    // Each session plays on its own network: a performer joins the last one.
    let e = owners.pop().expect("e");
    let _perf = TroopClient::join(([127, 0, 0, 1], e.port).into(), "bob", "pw", T).await.expect("join e");
    let networks = || {
        let nets = common::docker_ok(&["network", "ls", "--format", "{{.Name}}", "--filter", &format!("name={net}")]);
        nets.lines().count()
    };
    // The third network empties while the two below are full: it stays, since the next start
    // would need it again, and the next start uses it.
    drop(_perf);
    drop(e);
    hub.wait_containers(4).await;
    assert_eq!(networks(), 3, "the next start's network stays");
    let e2 = owner(&hub, "e2", "pw").await;
    assert_eq!(containers_per_network(&hub), want(&[("", 2), ("-2", 2), ("-3", 1)]));
    // Room on the first network: the third goes once it empties.
    drop(owners.remove(0));
    hub.wait_containers(4).await;
    drop(e2);
    hub.wait_containers(3).await;
    hub.eventually("the emptied network removed", T, async || match networks() {
        2 => Ok(()),
        n => Err(format!("{n} networks")),
    })
    .await;
    // After a restart the hub knows which networks are full: a new session fills the second.
    hub.signal("KILL");
    hub.wait_exit(T).await;
    hub.spawn().await;
    let adopted = common::eventually("the sessions adopted", T, async || {
        let q = query(hub.addr, "d").await;
        if q.is_array() {
            Ok(())
        } else {
            Err(format!("{q}"))
        }
    });
    adopted.await;
    let b = owners.remove(0);
    drop(b); // its owner's connection died with the old hub; ended by the admin instead
    let v = troop_hub::admin::request(hub.addr, &serde_json::json!({"type": "kill", "name": "b"}), T).await.unwrap();
    assert_eq!(v["data"], "success");
    hub.wait_containers(2).await;
    let _f = owner(&hub, "f", "pw").await;
    assert_eq!(containers_per_network(&hub), want(&[("", 1), ("-2", 2)]), "f took b's place, no third network");
    // SIGTERM: every session and every network goes.
    hub.signal("TERM");
    assert_eq!(hub.wait_exit(T).await, Some(0));
    assert!(hub.containers().is_empty(), "no container left");
    assert!(!hub.network_exists(), "no network left");
}

#[tokio::test]
async fn a_range_the_hub_could_not_hold_open_is_refused_at_start_naming_the_limit() {
    common::session_image();
    // 100 sessions need about 456 open files; this hub may open 300 (its hard limit too).
    let mut hub = TestHub::new("max_sessions: 100\nmax_sessions_per_address: 100\narchive: off");
    hub.ports = (hub.ports.0, hub.ports.0 + 99);
    hub.write_config();
    let out = std::process::Command::new("sh")
        .args(["-c", "ulimit -n 300 && exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_troop-hub"), "--config"])
        .arg(hub.config_path())
        .output()
        .expect("run troop-hub");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(last.contains("need about 456 open files, but this process may open 300 (ulimit -n)"), "{last}");
    assert!(!hub.network_exists(), "nothing was made on the engine");
}

#[tokio::test]
async fn owners_connections_do_not_fill_the_connection_cap() {
    // A cap of 2 open connections and 3 sessions with their owners connected: a query and a
    // fourth start still get in (1,000 owners would fill the default cap of 1,024).
    let mut hub = TestHub::new("max_connections: 2");
    hub.ports = (hub.ports.0, hub.ports.0 + 4);
    let hub = hub.start().await;
    let mut owners = Vec::new();
    for name in ["a", "b", "c"] {
        owners.push(owner(&hub, name, "pw").await);
    }
    assert!(query(hub.addr, "c").await.is_array(), "a query is answered beside 3 owners");
    owners.push(owner(&hub, "d", "pw").await);
    hub.wait_containers(4).await;
}
