//! A swarm made for one test on this machine's engine, and left afterwards, also when the
//! test fails: a single node (`docker swarm init --advertise-addr 127.0.0.1`), or two, the
//! second a dockerd of its own in a network namespace joined as a worker. Tests take turns
//! within a binary: an engine is in one swarm at a time. Needs root, iproute2 and nsenter.

use super::{docker, docker_ok};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where a test's swarm is noted while it exists, so CI can leave it if a test run dies.
const MARKER: &str = "/tmp/troop-hub-test-swarm";

static TURN: Mutex<()> = Mutex::new(());

/// A swarm made for one test: left (and what it made removed) on drop.
pub struct Swarm {
    pub node: String,
    gwbridge_before: bool,
    /// The second node, when there is one (dropped after the manager left).
    worker: Option<Worker>,
    _turn: MutexGuard<'static, ()>,
}

/// The second node's network: a namespace with a veth pair to the host.
const NETNS: &str = "troop-hub-test-n2";
const VETH_HOST: &str = "thubtest-h";
const VETH_NODE: &str = "thubtest-n";
pub const MANAGER_IP: &str = "10.213.7.1";
pub const WORKER_IP: &str = "10.213.7.2";
/// The second node's data root, exec root and socket.
const WORKER_DIR: &str = "/var/lib/troop-hub-test-node2";

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd} is needed by the two-node test: {e}"))
}

fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A second Docker engine in its own network namespace, joined to the test's swarm as a worker.
pub struct Worker {
    dockerd: Option<std::process::Child>,
}

impl Worker {
    pub fn host() -> String {
        format!("unix://{WORKER_DIR}/docker.sock")
    }

    /// `docker` against the second node's engine.
    pub fn docker(args: &[&str]) -> std::process::Output {
        let host = Worker::host();
        let mut all = vec!["-H", host.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    }

    pub fn docker_ok(args: &[&str]) -> String {
        let out = Worker::docker(args);
        assert!(out.status.success(), "node2: docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Removes what an earlier, killed run may have left (same fixed names).
    fn clear_leftovers() {
        if let Ok(pid) = std::fs::read_to_string(format!("{WORKER_DIR}/docker.pid")) {
            let _ = run("kill", &[pid.trim()]);
            std::thread::sleep(Duration::from_secs(2));
        }
        let _ = run("ip", &["link", "del", VETH_HOST]);
        let _ = run("ip", &["netns", "del", NETNS]);
        let _ = std::fs::remove_dir_all(WORKER_DIR);
    }

    /// Network namespace, veth pair, dockerd (vfs storage, its own roots and socket), the
    /// session image loaded into it.
    fn start() -> Worker {
        Worker::clear_leftovers();
        run_ok("ip", &["netns", "add", NETNS]);
        let mut worker = Worker { dockerd: None };
        run_ok("ip", &["link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NODE]);
        run_ok("ip", &["link", "set", VETH_NODE, "netns", NETNS]);
        run_ok("ip", &["addr", "add", &format!("{MANAGER_IP}/24"), "dev", VETH_HOST]);
        run_ok("ip", &["link", "set", VETH_HOST, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", NETNS];
            all.extend_from_slice(args);
            run_ok("ip", &all)
        };
        inside(&["ip", "addr", "add", &format!("{WORKER_IP}/24"), "dev", VETH_NODE]);
        inside(&["ip", "link", "set", VETH_NODE, "up"]);
        inside(&["ip", "link", "set", "lo", "up"]);
        inside(&["ip", "route", "add", "default", "via", MANAGER_IP]);
        std::fs::create_dir_all(format!("{WORKER_DIR}/data")).expect("node2 data root");
        std::fs::create_dir_all(format!("{WORKER_DIR}/exec")).expect("node2 exec root");
        std::fs::write(format!("{WORKER_DIR}/daemon.json"), "{\"storage-driver\": \"vfs\", \"mtu\": 1400}\n")
            .expect("node2 daemon.json");
        let log = std::fs::File::create(format!("{WORKER_DIR}/dockerd.log")).expect("node2 log");
        // nsenter, not `ip netns exec`: that remounts /sys and hides the cgroup hierarchy.
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{NETNS}"))
            .args(["dockerd", "--config-file"])
            .arg(format!("{WORKER_DIR}/daemon.json"))
            .arg(format!("--data-root={WORKER_DIR}/data"))
            .arg(format!("--exec-root={WORKER_DIR}/exec"))
            .arg(format!("--pidfile={WORKER_DIR}/docker.pid"))
            .arg(format!("--host={}", Worker::host()))
            .arg("--cgroup-parent=/troop-hub-test-node2")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start a second dockerd (nsenter and dockerd are needed by the two-node test)");
        worker.dockerd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !Worker::docker(&["info"]).status.success() {
            let log = std::fs::read_to_string(format!("{WORKER_DIR}/dockerd.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "the second dockerd did not come up:\n{log}");
            if let Some(status) = worker.dockerd.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("the second dockerd exited with {status}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // The session image, as an operator without a registry would: docker save | docker load.
        let load = format!("docker save troop-hub/troop-server:latest | docker -H {} load -q", Worker::host());
        run_ok("sh", &["-c", &load]);
        worker
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = Worker::docker(&["swarm", "leave", "--force"]);
        let ids = Worker::docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).lines().filter(|l| !l.is_empty()) {
            let _ = Worker::docker(&["rm", "-f", "-v", id]);
        }
        if let Some(mut child) = self.dockerd.take() {
            let _ = run("kill", &["-TERM", &child.id().to_string()]);
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = run("ip", &["link", "del", VETH_HOST]);
        let _ = run("ip", &["netns", "del", NETNS]);
        let _ = std::fs::remove_dir_all(WORKER_DIR);
        // Its (now empty) cgroups, deepest first.
        let cgroups = "find /sys/fs/cgroup -depth -type d -path '*/troop-hub-test-node2*' -exec rmdir {} + 2>/dev/null";
        let _ = run("sh", &["-c", cgroups]);
    }
}

pub fn swarm_state() -> String {
    docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"])
}

fn gwbridge_exists() -> bool {
    docker(&["network", "inspect", "docker_gwbridge"]).status.success()
}

impl Swarm {
    /// Takes this binary's turn, checks the engine is in no swarm, and makes one.
    pub fn turn() -> MutexGuard<'static, ()> {
        let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
        super::session_image();
        let state = swarm_state();
        assert_eq!(
            state, "inactive",
            "the swarm tests make and leave their own swarm, but this Docker engine is already in one ({state}); \
             leave it first (docker swarm leave --force) or run the tests against another engine"
        );
        turn
    }

    /// This binary's turn, the marker CI looks for, and what [`Drop`] undoes, made before
    /// anything else, so a failing init is cleaned up too.
    fn begin(marker: &str) -> Swarm {
        let turn = Swarm::turn();
        let gwbridge_before = gwbridge_exists();
        std::fs::write(MARKER, marker).expect("write the swarm marker");
        Swarm { node: String::new(), gwbridge_before, worker: None, _turn: turn }
    }

    pub fn init() -> Swarm {
        let mut swarm = Swarm::begin("made by tests/swarm.rs\n");
        docker_ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        swarm.node = docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"]);
        swarm
    }

    /// A manager (this engine, advertising its veth address) and a worker (a second dockerd
    /// in a network namespace) with the session image loaded.
    pub fn two_nodes() -> Swarm {
        let mut swarm = Swarm::begin("made by tests/swarm.rs (two nodes)\n");
        swarm.worker = Some(Worker::start());
        docker_ok(&["swarm", "init", "--advertise-addr", MANAGER_IP]);
        swarm.node = docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"]);
        let token = docker_ok(&["swarm", "join-token", "-q", "worker"]);
        Worker::docker_ok(&["swarm", "join", "--token", &token, &format!("{MANAGER_IP}:2377")]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while docker_ok(&["node", "ls", "--format", "{{.Status}}"]).lines().filter(|s| *s == "Ready").count() < 2 {
            assert!(Instant::now() < deadline, "the worker did not become ready");
            std::thread::sleep(Duration::from_millis(200));
        }
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
