//! The session image on the real Docker engine: built from this tree with no registry, at
//! most 10 MB, and working as the hub runs it (uid 65534, read-only root, no capabilities,
//! password only as an md5 in the environment). Needs Docker; fails (never skips) without it.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use troop_server::client::{login, ClientError, TroopClient};

const IMAGE: &str = "troop-hub/troop-server:latest";

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI is needed for this test (install Docker and start the engine)")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Builds the image with the same script operators use.
fn build_image() {
    let info = docker(&["info", "--format", "{{.ServerVersion}}"]);
    assert!(
        info.status.success(),
        "the Docker engine is not reachable: {} (start it; these tests need it)",
        String::from_utf8_lossy(&info.stderr).trim()
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../images/troop-server/build-local.sh");
    let out = Command::new("bash").arg(script).output().expect("run build-local.sh");
    assert!(out.status.success(), "image build failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Removes the container when the test ends, passed or failed.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.0]);
    }
}

#[tokio::test]
async fn the_image_is_tiny_hardened_and_serves_troop_clients() {
    build_image();
    let size: u64 = docker_ok(&["image", "inspect", "-f", "{{.Size}}", IMAGE]).parse().unwrap();
    assert!(size <= 10 * 1024 * 1024, "image is {size} bytes");
    assert_eq!(docker_ok(&["image", "inspect", "-f", "{{.Config.User}}", IMAGE]), "65534:65534");

    let run_id = format!("image-test-{}", std::process::id());
    let md5 = troop_server::md5_hex("pw");
    let id = docker_ok(&[
        "run",
        "-d",
        "--label",
        "io.troop-hub.managed=true",
        "--label",
        &format!("io.troop-hub.hub={run_id}"),
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--memory",
        "32m",
        "--pids-limit",
        "32",
        "-e",
        &format!("TROOP_PASSWORD_MD5={md5}"),
        IMAGE,
        "--port",
        "57890",
    ]);
    let container = Container(id);
    let ip = docker_ok(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &container.0]);
    let addr: SocketAddr = format!("{ip}:57890").parse().expect("container address");

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut a = loop {
        match TroopClient::join(addr, "alice", "pw", Duration::from_secs(5)).await {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("could not join the container's server: {e}"),
        }
    };
    assert!(matches!(login(addr, "mallory", "wrong").await, Err(ClientError::Refused(-1))));
    a.insert(0, "hi").await.unwrap();
    a.recv_until_match(Duration::from_secs(5), |c, _| c.is_synchronized()).await.unwrap();

    let inspect = docker_ok(&["inspect", "-f", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}", &container.0]);
    assert_eq!(inspect, "65534:65534 true");
    let env = docker_ok(&["inspect", "-f", "{{json .Config.Env}}", &container.0]);
    assert!(!env.contains("\"pw\""), "only the digest reaches the container");

    // docker stop sends SIGTERM: the client gets MSG_KILL and the server exits 0 promptly.
    let started = std::time::Instant::now();
    docker_ok(&["stop", "-t", "5", &container.0]);
    assert!(started.elapsed() < Duration::from_secs(3), "stopped by SIGTERM, not by the kill timeout");
    let seen = a.expect_closed(Duration::from_secs(5)).await.expect("closed");
    assert!(seen.iter().any(|m| matches!(m.body, troop_server::message::Body::Kill { .. })));
    assert_eq!(docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &container.0]), "0");
}
