//! The deployment end to end: `docker-compose` (or `docker compose`) up with the prebuilt
//! override, a session started through the hub's TCP port as Troop does, a Troop client logged
//! in to it, a request from a non-loopback address, then `down`: nothing with the project's
//! labels may be left.

mod common;

use common::{bridge_address, docker_ok, eventually, free_port, T};
use serde_json::json;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use troop_hub::admin::start_session;
use troop_server::client::TroopClient;

/// `docker-compose` if installed, else the `docker compose` plugin.
fn compose_cmd() -> Vec<String> {
    if Command::new("docker-compose").arg("version").output().is_ok_and(|o| o.status.success()) {
        return vec!["docker-compose".into()];
    }
    if Command::new("docker").args(["compose", "version"]).output().is_ok_and(|o| o.status.success()) {
        return vec!["docker".into(), "compose".into()];
    }
    panic!("neither docker-compose nor the docker compose plugin is installed; this test needs one");
}

struct Project {
    name: String,
    hub_id: String,
    env: Vec<(String, String)>,
}

impl Project {
    fn compose(&self, args: &[&str]) -> std::process::Output {
        let cmd = compose_cmd();
        let mut c = Command::new(&cmd[0]);
        c.args(&cmd[1..])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["-p", &self.name, "-f", "compose.yaml", "-f", "compose.prebuilt.yaml"])
            .args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.output().expect("run compose")
    }

    fn labelled(&self, what: &str) -> String {
        let filter = format!("label=io.troop-hub.hub={}", self.hub_id);
        let project = format!("label=com.docker.compose.project={}", self.name);
        let all = if what == "container" { "-aq" } else { "-q" };
        let mut found = docker_ok(&[what, "ls", all, "--filter", &filter]);
        if what == "container" {
            found.push_str(&docker_ok(&["container", "ls", "-aq", "--filter", &project]));
        }
        found
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans", "-t", "20"]);
        for id in self.labelled("container").split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-f", "-v", id]).output();
        }
        let filter = format!("label=io.troop-hub.hub={}", self.hub_id);
        for id in docker_ok(&["network", "ls", "-q", "--filter", &filter]).split_whitespace() {
            let _ = Command::new("docker").args(["network", "rm", id]).output();
        }
    }
}

#[tokio::test]
async fn compose_up_serves_troop_and_down_leaves_nothing() {
    let build = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/images/build-local.sh"))
        .output()
        .expect("run images/build-local.sh");
    assert!(build.status.success(), "image build failed: {}", String::from_utf8_lossy(&build.stderr));

    let pid = std::process::id();
    let token = format!("compose-admin-{pid}-token-8d2f6a1c9e4b7035");
    let token_file = tempfile::NamedTempFile::new().expect("a temp file for the admin token");
    std::fs::write(token_file.path(), format!("{token}\n")).expect("write the admin token");
    let (listen, http) = (free_port(), free_port());
    let first = 33000 + (pid % 500) as u16 * 4;
    let hub_id = format!("ci-{pid}");
    let project = Project {
        name: format!("troophubci{pid}"),
        hub_id: hub_id.clone(),
        env: vec![
            ("TROOP_HUB_HUB_ID".into(), hub_id.clone()),
            ("TROOP_HUB_LISTEN".into(), format!("0.0.0.0:{listen}")),
            ("TROOP_HUB_HTTP_LISTEN".into(), format!("127.0.0.1:{http}")),
            ("TROOP_HUB_PORTS".into(), format!("{first}-{}", first + 3)),
            ("TROOP_HUB_NETWORK".into(), format!("{hub_id}-net")),
            ("TROOP_HUB_PUBLIC_HOST".into(), "127.0.0.1".into()),
            ("TROOP_HUB_BIND_ADDRESS".into(), "127.0.0.1".into()),
            ("TROOP_HUB_ADMIN_TOKEN_SECRET".into(), token_file.path().display().to_string()),
        ],
    };
    let up = project.compose(&["up", "-d", "--build"]);
    assert!(up.status.success(), "compose up failed: {}", String::from_utf8_lossy(&up.stderr));

    let hub: SocketAddr = ([127, 0, 0, 1], listen).into();
    let owner = eventually("the hub to start a session", T, async || {
        match start_session(hub, "compose-jam", "pw", Duration::from_secs(10)).await {
            Ok(Ok(o)) => Ok(o),
            other => {
                let logs = project.compose(&["logs", "--no-color", "hub"]);
                Err(format!("{:?}\n{}", other.err(), String::from_utf8_lossy(&logs.stdout)))
            }
        }
    })
    .await;
    let session: SocketAddr = ([127, 0, 0, 1], owner.port).into();
    let mut alice = TroopClient::join(session, "alice", "pw", T).await.expect("log in to the compose-started session");
    alice.insert(0, "hello from compose").await.unwrap();
    alice.recv_until_match(T, |c, _| c.is_synchronized()).await.expect("the edit is acknowledged");

    // The hub sees a non-loopback client as such (host networking keeps source addresses):
    // an admin request from the bridge address is refused by address.
    let gw = bridge_address();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(gw, 0)).unwrap();
    let mut s = sock.connect(SocketAddr::new(gw, listen)).await.expect("connect from the bridge address");
    s.write_all(&troop_hub::wire::encode(&json!({"type": "list"})).unwrap()).await.unwrap();
    let reply = troop_hub::wire::read_frame(&mut s).await.expect("a reply");
    let said = reply["error"].as_str().unwrap_or_default();
    assert!(said.starts_with("Status request made from invalid address ") && !said.ends_with("127.0.0.1"), "{reply}");

    // The hub image's HEALTHCHECK (troop-hub health -> /healthz) reports healthy.
    let hub_container = String::from_utf8_lossy(&project.compose(&["ps", "-q", "hub"]).stdout).trim().to_string();
    eventually("the hub container to be healthy", Duration::from_secs(60), async || {
        let health = docker_ok(&["inspect", "-f", "{{.State.Health.Status}}", &hub_container]);
        if health == "healthy" {
            Ok(())
        } else {
            Err(format!("hub container health: {health}"))
        }
    })
    .await;
    // The admin token came from the compose secret: it works, and `docker inspect` of the hub
    // container shows it nowhere.
    let http_addr: SocketAddr = ([127, 0, 0, 1], http).into();
    let config = common::http(http_addr, "GET", "/api/v1/config", Some(&token), None).await;
    assert_eq!(config.status, 200, "{}", config.body);
    assert!(!config.body.contains(&token), "the token is masked in /api/v1/config");
    let inspect = docker_ok(&["inspect", &hub_container]);
    assert!(!inspect.contains(&token), "the admin token is not in the hub container's config");
    assert!(!project.labelled("container").is_empty());

    // The archive lives on the named volume: the session's code survives `down` and `up`.
    drop(owner);
    let archived = |body: &str| body.contains("\"compose-jam\"") && body.contains("\"ended_ms\":1");
    let list = "/api/v1/archive?name=compose-jam";
    eventually("the ended session to be archived", T, async || {
        let body = common::http(http_addr, "GET", list, Some(&token), None).await.body;
        if archived(&body) {
            Ok(())
        } else {
            Err(body)
        }
    })
    .await;
    let down = project.compose(&["down", "-t", "20"]);
    assert!(down.status.success(), "compose down failed: {}", String::from_utf8_lossy(&down.stderr));
    let up = project.compose(&["up", "-d"]);
    assert!(up.status.success(), "compose up again failed: {}", String::from_utf8_lossy(&up.stderr));
    let body = eventually("the hub to be back after up", T, async || {
        // The hub may not listen yet: wait for its port before asking.
        if tokio::net::TcpStream::connect(http_addr).await.is_err() {
            return Err("its HTTP port is closed".into());
        }
        let r = common::http(http_addr, "GET", list, Some(&token), None).await;
        if r.status == 200 {
            Ok(r.body)
        } else {
            Err(format!("{} {}", r.status, r.body))
        }
    })
    .await;
    let listed: serde_json::Value = serde_json::from_str(&body).expect("a JSON list");
    let id = listed[0]["id"].as_str().expect("the session is still archived after down and up");
    let code = common::http(http_addr, "GET", &format!("/api/v1/archive/{id}/code"), Some(&token), None).await;
    assert_eq!(code.body, "hello from compose");
    let down = project.compose(&["down", "-v", "-t", "20"]);
    assert!(down.status.success(), "compose down failed: {}", String::from_utf8_lossy(&down.stderr));
    assert_eq!(project.labelled("container"), "", "no container left");
    assert_eq!(project.labelled("network"), "", "no network left");
    assert_eq!(project.labelled("volume"), "", "no volume left");
    drop(alice);
}
