//! Shared by the hub's integration tests: the session image, a hub process with its own id,
//! ports and network, and cleanup of everything it made in Docker, also when a test fails.
#![allow(dead_code)]

pub mod browser;
pub mod engine_switch;
pub mod swarm;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

pub const T: Duration = Duration::from_secs(20);

/// How often [`eventually`] checks again.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `check` every [`POLL`] until it returns `Ok`, for at most `within`; each `Err` says
/// what was seen, and the last one is in the failure message.
pub async fn eventually<R>(what: &str, within: Duration, check: impl AsyncFnMut() -> Result<R, String>) -> R {
    poll(what, within, check, String::new).await
}

/// [`eventually`] and [`TestHub::eventually`]: `context` adds to the failure message.
async fn poll<R>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Result<R, String>,
    context: impl FnOnce() -> String,
) -> R {
    let deadline = Instant::now() + within;
    loop {
        let seen = match check().await {
            Ok(r) => return r,
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            panic!("waited {within:?} for {what}; last seen: {seen}\n{}", context());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A docker CLI call, given 60 s at most: a hung engine fails the test instead of hanging it.
pub fn docker(args: &[&str]) -> std::process::Output {
    let out = Command::new("timeout")
        .arg("60")
        .arg("docker")
        .args(args)
        .output()
        .expect("the docker CLI (and coreutils' timeout) are needed by the hub tests");
    assert_ne!(out.status.code(), Some(127), "the docker CLI is needed by the hub tests (install Docker)");
    if out.status.code() == Some(124) {
        eprintln!("docker {args:?} did not answer within 60 s: the Docker engine is hung");
    }
    out
}

pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

static IMAGE: Once = Once::new();

/// Builds troop-hub/troop-server:latest once per test binary; fails clearly without Docker.
pub fn session_image() {
    IMAGE.call_once(|| {
        let info = docker(&["info", "--format", "{{.ServerVersion}}"]);
        assert!(
            info.status.success(),
            "the Docker engine is not reachable ({}); the hub tests need it",
            String::from_utf8_lossy(&info.stderr).trim()
        );
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/images/troop-server/build-local.sh");
        let out = Command::new("bash").arg(script).output().expect("run build-local.sh");
        assert!(out.status.success(), "session image build failed: {}", String::from_utf8_lossy(&out.stderr));
    });
}

static NEXT: AtomicU16 = AtomicU16::new(0);

/// Session ports of this test process: hubs take 6 each from 20000 + 80 x (pid % 150).
fn port_window() -> u16 {
    20000 + ((std::process::id() % 150) as u16) * 80
}

/// A hub for the tests that end many sessions at once: room for `n` from one address on the
/// wide range, no warm pool or archive, and the given `engine_timeout` (a removal gets six).
pub fn hub_for_many(n: usize, engine_timeout: &str) -> TestHub {
    let mut hub = TestHub::new(&format!(
        "engine_timeout: {engine_timeout}\nmax_sessions: {n}\nmax_sessions_per_address: {n}\nwarm_pool: 0\narchive: off"
    ));
    hub.ports = wide_range(32);
    hub
}

/// A range of `len` (at most 32) session ports that no hub of this process shares, below the
/// windows of [`TestHub::new`] (for the one hub of a process that needs many ports).
pub fn wide_range(len: u16) -> (u16, u16) {
    assert!(len <= 32, "the wide range has 32 ports");
    let start = 10000 + ((std::process::id() % 150) as u16) * 40;
    (start, start + len - 1)
}

/// A free TCP port on loopback (for the hub's own listener).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A hub under test: its own id, listen port, session port range and network.
pub struct TestHub {
    pub id: String,
    pub addr: SocketAddr,
    pub http: SocketAddr,
    pub ports: (u16, u16),
    pub dir: tempfile::TempDir,
    pub proc: Option<Child>,
    pub extra_yaml: String,
    pub envs: Vec<(String, String)>,
    pub listen_ip: String,
    pub bind_address: String,
    /// A command the hub binary and its arguments are appended to (empty: run it directly).
    pub wrapper: Vec<String>,
}

impl TestHub {
    /// A hub config with `extra` appended to hub.yaml (not started yet).
    pub fn new(extra: &str) -> TestHub {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let base = port_window() + n * 6;
        TestHub {
            id: format!("test-{pid}-{n}"),
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            http: SocketAddr::from(([127, 0, 0, 1], free_port())),
            ports: (base, base + 4),
            dir: tempfile::tempdir().expect("temp dir"),
            proc: None,
            extra_yaml: extra.to_string(),
            envs: Vec::new(),
            listen_ip: "127.0.0.1".into(),
            bind_address: "127.0.0.1".into(),
            wrapper: Vec::new(),
        }
    }

    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("hub.yaml")
    }

    pub fn write_config(&self) {
        let yaml = format!(
            "hub_id: {id}\nlisten: {ip}:{port}\nhttp_listen: 127.0.0.1:{http}\nports: {a}-{b}\nbind_address: {bind}\n{network}{archive}{pool}public_host: 127.0.0.1\nstart_timeout: 10s\n{extra}\n",
            id = self.id,
            ip = self.listen_ip,
            port = self.addr.port(),
            http = self.http.port(),
            bind = self.bind_address,
            network = if self.extra_yaml.contains("network:") { String::new() } else { format!("network: {}-net\n", self.id) },
            archive = if self.extra_yaml.contains("archive:") {
                String::new()
            } else {
                // Each hub its own archive, in its own temp dir (never the working directory).
                format!("archive: {{path: {}}}\n", self.dir.path().join("archive.db").display())
            },
            // No warm pool unless the test asks for one (tests/pool.rs): the other tests count
            // containers and ports as sessions.
            pool = if self.extra_yaml.contains("warm_pool:") { "" } else { "warm_pool: 0\n" },
            a = self.ports.0,
            b = self.ports.1,
            extra = self.extra_yaml
        );
        std::fs::write(self.config_path(), yaml).expect("write hub.yaml");
    }

    /// Runs the hub binary on this config to its exit (for a hub that must refuse to start):
    /// its exit code and the last line of its stderr (the one-line error), with all of stderr.
    pub fn run_failing(&self) -> (Option<i32>, String, String) {
        self.write_config();
        let out = Command::new(env!("CARGO_BIN_EXE_troop-hub"))
            .arg("--config")
            .arg(self.config_path())
            .output()
            .expect("run troop-hub");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let last = stderr.lines().last().unwrap_or_default().to_string();
        (out.status.code(), last, stderr)
    }

    /// Starts the hub binary and waits until it accepts connections.
    pub async fn start(mut self) -> TestHub {
        session_image();
        self.spawn().await;
        self
    }

    pub async fn spawn(&mut self) {
        // The listen ports are picked free, but another process may take one before the hub
        // binds it (an outgoing connection's ephemeral port): then pick again.
        for _ in 0..3 {
            if self.try_spawn().await {
                return;
            }
            self.addr.set_port(free_port());
            self.http.set_port(free_port());
        }
        panic!("troop-hub could not bind its ports three times: {}", self.log());
    }

    /// Starts the hub; false if it exited because a listen port was taken meanwhile.
    async fn try_spawn(&mut self) -> bool {
        self.write_config();
        let log_before = self.log().len();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("hub.log"))
            .expect("log file");
        let bin = env!("CARGO_BIN_EXE_troop-hub");
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        cmd.env_remove("TROOP_HUB_ADMIN_TOKEN");
        cmd.arg("--config").arg(self.config_path());
        cmd.env("RUST_LOG", "info,troop_hub=debug");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn troop-hub");
        self.proc = Some(child);
        eventually("troop-hub to listen", T, async || {
            // Both front doors: the HTTP one binds last.
            if tokio::net::TcpStream::connect(self.addr).await.is_ok()
                && tokio::net::TcpStream::connect(self.http).await.is_ok()
            {
                return Ok(true);
            }
            if let Some(status) = self.proc.as_mut().and_then(|p| p.try_wait().ok().flatten()) {
                let log = self.log();
                if log.get(log_before..).is_some_and(|new| new.contains("Address already in use")) {
                    return Ok(false);
                }
                panic!("troop-hub exited with {status}: {log}");
            }
            Err(format!("not listening; its log:\n{}", self.log()))
        })
        .await
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hub.log")).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        if let Some(p) = &self.proc {
            let ok = Command::new("kill").args([&format!("-{sig}"), &p.id().to_string()]).status().expect("kill");
            assert!(ok.success());
        }
    }

    /// Waits for the hub process to exit; returns its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let p = self.proc.as_mut().expect("started");
        eventually("troop-hub to exit", within, async || match p.try_wait().expect("wait") {
            Some(status) => Ok(status.code()),
            None => Err("still running".into()),
        })
        .await
    }

    /// [`eventually`], with this hub's log in the failure message.
    pub async fn eventually<R>(
        &self,
        what: &str,
        within: Duration,
        check: impl AsyncFnMut() -> Result<R, String>,
    ) -> R {
        poll(what, within, check, || self.log()).await
    }

    /// Containers labelled with this hub's id (running or not).
    pub fn containers(&self) -> Vec<String> {
        let filter = format!("label=io.troop-hub.hub={}", self.id);
        let out = docker_ok(&["ps", "-aq", "--filter", &filter]);
        out.lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
    }

    /// Waits until this hub has exactly `n` containers.
    pub async fn wait_containers(&self, n: usize) {
        self.eventually(&format!("{n} containers"), T, async || {
            let now = self.containers();
            if now.len() == n {
                Ok(())
            } else {
                Err(format!("containers {now:?}"))
            }
        })
        .await
    }

    /// Waits until every port of the range is free again. The engine stops listing a container
    /// (or a swarm network) a moment before the hub has its answer and gives the port back.
    pub async fn wait_ports_free(&self) {
        let all = f64::from(self.ports.1 - self.ports.0 + 1);
        eventually(&format!("all {all} ports free again"), T, async || {
            let page = http(self.http, "GET", "/metrics", None, None).await.body;
            if metric(&page, "troop_hub_ports_free") == all {
                Ok(())
            } else {
                Err(format!("\n{page}"))
            }
        })
        .await
    }

    pub fn network_exists(&self) -> bool {
        let filter = format!("label=io.troop-hub.hub={}", self.id);
        !docker_ok(&["network", "ls", "-q", "--filter", &filter]).is_empty()
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(p) = &mut self.proc {
            let _ = p.kill();
            let _ = p.wait();
        }
        // TROOP_HUB_TEST_LOGS=DIR keeps each hub's log there (for debugging a run).
        if let Some(dir) = std::env::var_os("TROOP_HUB_TEST_LOGS") {
            let _ = std::fs::copy(
                self.dir.path().join("hub.log"),
                std::path::Path::new(&dir).join(format!("{}.log", self.id)),
            );
        }
        // A hub killed mid-start may have a container create still in the engine's hands:
        // keep removing until the containers and the network are all gone (10 s at most).
        let filter = format!("label=io.troop-hub.hub={}", self.id);
        // Swarm services first (a swarm hub's); on an engine outside a swarm this just fails.
        let services = docker(&["service", "ls", "-q", "--filter", &filter]);
        for id in String::from_utf8_lossy(&services.stdout).lines().filter(|l| !l.is_empty()) {
            let _ = docker(&["service", "rm", id]);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = docker(&["ps", "-aq", "--filter", &filter]);
            for id in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()) {
                let _ = docker(&["rm", "-f", "-v", id]);
            }
            let out = docker(&["network", "ls", "-q", "--filter", &filter]);
            let nets: Vec<String> =
                String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
            let mut left = false;
            for id in &nets {
                left |= !docker(&["network", "rm", id]).status.success();
            }
            let containers = docker(&["ps", "-aq", "--filter", &filter]);
            if (!left && containers.stdout.is_empty()) || Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// This machine's address on the default Docker bridge (docker0): a non-loopback source
/// address that the tests may use.
pub fn bridge_address() -> std::net::IpAddr {
    let out = Command::new("ip").args(["-4", "-o", "addr", "show", "docker0"]).output().expect("the ip command");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("no IPv4 address on docker0: {text}"))
}

/// The value of one series (`name{labels}`) in a Prometheus text page; 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// An HTTP response as the tests see it.
pub struct HttpResponse {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`).
pub async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    request(addr, method, path, &headers, body).await
}

/// [`http`] with any headers (a session's `X-Session-Password`, say).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect to the HTTP port");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut raw)).await.expect("HTTP answer in time").unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_string() };
    HttpResponse { status, headers: head.to_string(), body }
}

pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A hub started with `token` as its admin token and `extra` appended to hub.yaml.
pub async fn hub_with_token(extra: &str, token: &str) -> TestHub {
    let mut hub = TestHub::new(extra);
    hub.envs.push(("TROOP_HUB_ADMIN_TOKEN".into(), token.into()));
    hub.start().await
}

/// The owner of a new session named `name`; the test fails with the hub's log if it is refused.
pub async fn owner(hub: &TestHub, name: &str, pw: &str) -> troop_hub::admin::Owner {
    match troop_hub::admin::start_session(hub.addr, name, pw, T).await.expect("hub answered") {
        Ok(o) => o,
        Err(e) => panic!("start {name} refused: {e}\n{}", hub.log()),
    }
}

/// Starts `n` sessions named `{prefix}0`, `{prefix}1`... four at a time, each owner's
/// connection held open (the scale tests); says how far it got every 50, and fails with the
/// hub's log on the first refusal.
pub async fn start_many(hub: &TestHub, prefix: &str, n: usize, each_within: Duration) -> Vec<troop_hub::admin::Owner> {
    let began = Instant::now();
    let mut owners = Vec::new();
    while owners.len() < n {
        let names: Vec<String> = (owners.len()..n.min(owners.len() + 4)).map(|i| format!("{prefix}{i}")).collect();
        let started = futures_util::future::join_all(
            names.iter().map(|name| troop_hub::admin::start_session(hub.addr, name, "pw", each_within)),
        )
        .await;
        for (name, r) in names.iter().zip(started) {
            match r {
                Ok(Ok(o)) => owners.push(o),
                Ok(Err(e)) => panic!("{name} refused after {} sessions: {e}\n{}", owners.len(), hub.log()),
                Err(e) => panic!("{name} after {} sessions: {e}", owners.len()),
            }
        }
        if owners.len() % 50 < 4 {
            eprintln!("{} sessions after {:.0} s", owners.len(), began.elapsed().as_secs_f64());
        }
    }
    owners
}

/// A Troop client named `name`, joined to `o`'s session with its password.
pub async fn performer(o: &troop_hub::admin::Owner, name: &str, pw: &str) -> troop_server::client::TroopClient {
    let addr = SocketAddr::from(([127, 0, 0, 1], o.port));
    troop_server::client::TroopClient::join(addr, name, pw, T).await.expect("a performer joins")
}
