//! `front_door: on` against the real Docker engine: the hub listens on each session's port and
//! relays to a container that publishes nothing. Performers play through it and the session
//! sees each at their own address; a taken port is skipped; a session's end frees its port and
//! cuts its performers; a SIGKILLed hub's successor opens the doors again (the performers
//! rejoin and find their code); SIGTERM leaves nothing.

mod common;

use common::{docker_ok, owner, TestHub, T};
use serde_json::json;
use std::net::SocketAddr;
use troop_server::client::{login, ClientError, TroopClient};

fn door_hub() -> TestHub {
    let mut hub = TestHub::new("front_door: on\norphans: adopt");
    hub.bind_address = "0.0.0.0".into();
    hub
}

/// Whether Docker publishes anything for `container`, or runs a docker-proxy for `port`.
fn published(container: &str, port: u16) -> (String, bool) {
    let bindings = docker_ok(&["inspect", "-f", "{{json .HostConfig.PortBindings}}", container]);
    let pattern = format!("docker-proxy.*-host-port {port}( |$)");
    let proxy = std::process::Command::new("pgrep").args(["-f", &pattern]).output().expect("pgrep").status.success();
    (bindings, proxy)
}

#[tokio::test]
async fn behind_the_front_door_nothing_is_published_and_each_performer_is_seen_at_their_address() {
    let hub = door_hub();
    // Something else holds the first port: the hub's own listener finds out and moves on.
    let squatter = std::net::TcpListener::bind(("0.0.0.0", hub.ports.0)).expect("hold the first port");
    let hub = hub.start().await;
    let o = owner(&hub, "door", "pw").await;
    assert_eq!(o.port, hub.ports.0 + 1, "moved past the taken port");
    let containers = hub.containers();
    assert_eq!(containers.len(), 1, "the port taken left no container");
    let (bindings, proxy) = published(&containers[0], o.port);
    assert!(bindings == "{}" || bindings == "null", "the container publishes {bindings}");
    assert!(!proxy, "a docker-proxy serves the session's port");

    // bob comes from 127.0.0.2, carol from 127.0.0.1: both through the hub. (Through a
    // published port the session would see docker-proxy or the bridge's gateway instead.)
    let session: SocketAddr = ([127, 0, 0, 1], o.port).into();
    let bob_ip = std::net::IpAddr::from([127, 0, 0, 2]);
    let mut bob =
        TroopClient::join_from(Some(bob_ip), session, "bob", "pw", T).await.expect("bob joins through the front door");
    let mut carol = TroopClient::join(session, "carol", "pw", T).await.expect("carol joins through the front door");
    assert!(matches!(login(session, "mallory", "wrong").await, Err(ClientError::Refused(-1))));
    let bob_host = carol.peers().values().find(|(name, _)| name == "bob").map(|(_, host)| host.clone());
    assert_eq!(bob_host.as_deref(), Some("127.0.0.2"), "the session sees bob's own address");
    bob.insert(0, "d1 >> play('x')").await.unwrap();
    carol.recv_until_match(T, |c, _| c.document() == "d1 >> play('x')").await.expect("relayed through the door");

    // The owner leaves: the session ends, its performers are cut and the hub lets go of its port.
    let port = o.port;
    drop(o);
    hub.wait_containers(0).await;
    bob.expect_closed(T).await.expect("bob's connection ends with the session");
    common::eventually("the hub lets go of the session's port", T, async || {
        std::net::TcpListener::bind(("0.0.0.0", port)).map(drop).map_err(|e| e.to_string())
    })
    .await;
    drop(squatter);
}

#[tokio::test]
async fn a_restarted_hub_opens_the_doors_again_and_sigterm_leaves_nothing() {
    let mut hub = door_hub().start().await;
    let o = owner(&hub, "survivor", "pw").await;
    let port = o.port;
    let session: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut alice = TroopClient::join(session, "alice", "pw", T).await.unwrap();
    alice.insert(0, "kept").await.unwrap();
    alice.recv_until_match(T, |c, _| c.is_synchronized()).await.unwrap();

    // The hub held alice's connection: its death cuts her, not the session.
    hub.signal("KILL");
    hub.wait_exit(T).await;
    alice.expect_closed(T).await.expect("alice is cut with the hub");
    drop(o);
    assert_eq!(hub.containers().len(), 1, "the session outlives its hub");
    hub.spawn().await;
    let reply = troop_hub::admin::request(hub.addr, &json!({"type": "query", "name": "survivor"}), T).await;
    assert_eq!(reply.expect("query answered")["result"], json!(["127.0.0.1", port]));
    let mut back = common::eventually("alice rejoins through the reopened door", T, async || {
        TroopClient::join(session, "alice", "pw", T).await.map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(back.document(), "kept", "the code is still there");

    let _owner = owner(&hub, "second", "pw").await;
    hub.wait_containers(2).await;
    hub.signal("TERM");
    assert_eq!(hub.wait_exit(T * 3).await, Some(0));
    back.expect_closed(T).await.expect("performers are told and cut at shutdown");
    assert!(hub.containers().is_empty(), "no container left");
    assert!(!hub.network_exists(), "the sessions' network is removed");
    for p in hub.ports.0..=hub.ports.1 {
        std::net::TcpListener::bind(("0.0.0.0", p)).unwrap_or_else(|e| panic!("port {p} still held: {e}"));
    }
}
