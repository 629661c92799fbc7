//! Where sessions run. [`Runtime`] is the one seam between the hub and a container engine:
//! list the nodes, start a session's server on one, remove it, list what is there, report
//! exits. Two implementations share the Engine API client ([`Engine`]) and the session's
//! command, labels and limits:
//! - [`docker::DockerRuntime`]: one container per session on the local engine (one node);
//! - [`swarm::SwarmRuntime`]: one Swarm service per session, placed by the hub on a node.

pub mod docker;
pub mod swarm;

pub use crate::registry::Node;
pub use docker::DockerRuntime;
pub use swarm::SwarmRuntime;

use crate::config::Config;
use bollard::Docker;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::info;

pub const LABEL_MANAGED: &str = "io.troop-hub.managed";
pub const LABEL_HUB: &str = "io.troop-hub.hub";
pub const LABEL_SESSION: &str = "io.troop-hub.session";
pub const LABEL_SESSION_ID: &str = "io.troop-hub.session-id";
pub const LABEL_PORT: &str = "io.troop-hub.port";
pub const LABEL_CREATED: &str = "io.troop-hub.created";
/// A node label naming the host performers are given for sessions on that node.
pub const LABEL_PUBLIC_HOST: &str = "io.troop-hub.public-host";

/// What the engine said, sorted by what the hub does about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("the Docker engine is unreachable: {0}")]
    Unreachable(String),
    #[error("the session image {0} is missing on the hub's Docker engine")]
    ImageMissing(String),
    #[error("host port {0} is already in use")]
    PortTaken(u16),
    #[error("no such container")]
    NotFound,
    /// The session's task did not run on its node (another node may do better). `public` is
    /// the sentence performers get; `detail` (Swarm's own words, node ids, addresses) is for
    /// the hub's log only.
    #[error("{detail}")]
    TaskFailed { public: &'static str, detail: String },
    /// The engine is not what the configured runtime needs (e.g. not a swarm manager).
    #[error("{0}")]
    Misconfigured(String),
    #[error("{0}")]
    Failed(String),
}

/// Everything needed to start one session.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub id: String,
    pub name: String,
    /// The node the hub placed it on (a [`Node::id`]).
    pub node: String,
    pub port: u16,
    pub password_md5: SecretString,
    /// When the hub gives up on this start (`start_timeout` after the request).
    pub deadline: std::time::Instant,
}

/// A started session server.
#[derive(Debug, Clone)]
pub struct Started {
    /// The runtime's handle on it: a container id, or a Swarm service id.
    pub container_id: String,
    /// Where the hub connects to see that the server listens; `None` when the runtime has
    /// already seen it answer.
    pub probe: Option<SocketAddr>,
}

/// A session found on the engine.
#[derive(Debug, Clone)]
pub struct Existing {
    pub container_id: String,
    pub running: bool,
    pub session_id: Option<String>,
    pub name: Option<String>,
    pub node: Option<String>,
    pub port: Option<u16>,
    pub created: Option<SystemTime>,
    pub password_md5: Option<SecretString>,
    pub probe: Option<SocketAddr>,
}

/// Something that happened to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeEvent {
    /// The session's server stopped (exit, kill, OOM, service removed); `idle` when it exited
    /// by itself with status 0 (the idle-exit timer).
    Exited { container_id: String, reason: String, idle: bool },
}

/// Session exits from the engine.
pub type EventStream = BoxStream<'static, Result<RuntimeEvent, RuntimeError>>;

/// The container engine behind the hub.
pub trait Runtime: Send + Sync + 'static {
    /// Checks the engine and the image, creates what sessions share (a network) if needed.
    fn prepare(&self) -> BoxFuture<'_, Result<(), RuntimeError>>;
    /// Is the engine reachable and the image present? (Used by health checks.)
    fn check(&self) -> BoxFuture<'_, Result<(), RuntimeError>>;
    /// The machines sessions can be placed on. The local runtime has one, [`Node::local`].
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<Node>, RuntimeError>> {
        Box::pin(async { Ok(vec![Node::local()]) })
    }
    fn start(&self, spec: SessionSpec) -> BoxFuture<'_, Result<Started, RuntimeError>>;
    /// Stops and removes a session (and waits until its port is free); `NotFound` counts as done.
    fn remove(&self, container_id: String) -> BoxFuture<'_, Result<(), RuntimeError>>;
    /// This hub's sessions on the engine.
    fn list(&self) -> BoxFuture<'_, Result<Vec<Existing>, RuntimeError>>;
    /// Session exits, as they happen. The stream ends when the engine connection breaks.
    fn events(&self) -> BoxFuture<'_, Result<EventStream, RuntimeError>>;
    /// Removes what `prepare` created, once no session is left.
    fn teardown(&self) -> BoxFuture<'_, ()>;
    /// How many removals the hub runs at once (ending many sessions, e.g. at shutdown).
    fn parallel_removals(&self) -> usize {
        8
    }
    /// A reloaded configuration, for sessions started from now on.
    fn reconfigure(&self, config: Config);
}

/// What performers hear when a session's task stopped on its node.
pub const TASK_STOPPED: &str =
    "its server stopped on the machine the hub chose; try again, or tell the hub's operator (the reason is in the hub's log)";
/// ... when the hub could not reach the server on its node.
pub const TASK_UNREACHABLE: &str =
    "the hub could not reach it on the machine it chose; tell the hub's operator (the reason is in the hub's log)";
/// ... when no node ran it in time.
pub const TASK_NOT_RUN: &str = "no machine of the hub ran it in time; try again in a moment";

/// Sorts a bollard error by what the hub does about it.
fn classify(e: bollard::errors::Error) -> RuntimeError {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError { status_code: 404, message } => {
            if message.contains("image") {
                RuntimeError::ImageMissing(message)
            } else {
                RuntimeError::NotFound
            }
        }
        E::DockerResponseServerError { status_code, message } => {
            if message.contains("port is already allocated") || message.contains("address already in use") {
                RuntimeError::PortTaken(0)
            } else {
                RuntimeError::Failed(format!("Docker said {status_code}: {message}"))
            }
        }
        E::RequestTimeoutError => RuntimeError::Unreachable("the engine did not answer in time".into()),
        // Transport failures: the engine is not there (or went away mid-request).
        e @ (E::IOError { .. }
        | E::HyperResponseError { .. }
        | E::HyperLegacyError { .. }
        | E::HttpClientError { .. }
        | E::SocketNotFoundError(_)) => RuntimeError::Unreachable(e.to_string()),
        other => RuntimeError::Failed(other.to_string()),
    }
}

/// An engine call bounded by `limit`: a stalled engine counts as unreachable.
async fn timed_within<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, RuntimeError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(classify),
        Err(_) => Err(RuntimeError::Unreachable("the engine did not answer in time".into())),
    }
}

/// The Engine API client both runtimes use, and the configuration they run with.
struct Engine {
    /// Connected and version-negotiated on first successful use, so a hub started while
    /// the engine is down comes up anyway and recovers when the engine does.
    docker: tokio::sync::Mutex<Option<Docker>>,
    config: std::sync::RwLock<Config>,
}

impl Engine {
    fn new(config: Config) -> Engine {
        Engine { docker: tokio::sync::Mutex::new(None), config: std::sync::RwLock::new(config) }
    }

    fn config(&self) -> Config {
        self.config.read().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    fn reconfigure(&self, config: Config) {
        if let Ok(mut c) = self.config.write() {
            *c = config;
        }
    }

    /// An engine call bounded by `engine_timeout`.
    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
    ) -> Result<T, RuntimeError> {
        timed_within(self.config().engine_timeout, f).await
    }

    /// The engine client (DOCKER_HOST, default the local socket), connecting and negotiating
    /// the API version on first use.
    async fn client(&self) -> Result<Docker, RuntimeError> {
        let mut cached = self.docker.lock().await;
        if let Some(d) = cached.as_ref() {
            return Ok(d.clone());
        }
        let docker = Docker::connect_with_defaults().map_err(|e| RuntimeError::Unreachable(e.to_string()))?;
        let docker = self.timed(docker.negotiate_version()).await?;
        info!(api = %docker.client_version(), "connected to the Docker engine");
        *cached = Some(docker.clone());
        Ok(docker)
    }
}

/// Label filters selecting this hub's objects.
fn hub_filter(hub_id: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![format!("{LABEL_HUB}={hub_id}"), format!("{LABEL_MANAGED}=true")])])
}

/// The labels every session object carries (never the password).
fn session_labels(c: &Config, spec: &SessionSpec) -> HashMap<String, String> {
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_HUB.to_string(), c.hub_id.clone()),
        (LABEL_SESSION.to_string(), spec.name.clone()),
        (LABEL_SESSION_ID.to_string(), spec.id.clone()),
        (LABEL_PORT.to_string(), spec.port.to_string()),
        (LABEL_CREATED.to_string(), created.to_string()),
    ])
}

/// Reads a session's labels back.
fn labelled_session(
    labels: &HashMap<String, String>,
) -> (Option<String>, Option<String>, Option<u16>, Option<SystemTime>) {
    (
        labels.get(LABEL_SESSION_ID).cloned(),
        labels.get(LABEL_SESSION).cloned(),
        labels.get(LABEL_PORT).and_then(|p| p.parse().ok()),
        labels.get(LABEL_CREATED).and_then(|t| t.parse::<u64>().ok()).map(|t| UNIX_EPOCH + Duration::from_secs(t)),
    )
}

/// The session server's arguments: its port, bounds fitted to the memory limit (so a busy
/// session is refused input rather than OOM-killed), the operator's `session_args`, idle exit.
fn session_command(c: &Config) -> Vec<String> {
    let mut cmd = vec!["--port".to_string(), c.session_port.to_string()];
    let mem = c.limits.memory_bytes.max(8 << 20) as u64;
    for (flag, value) in [
        ("--max-document", (mem / 16).min(4 << 20)),
        ("--history-bytes", mem / 8),
        ("--queue-bytes", (mem / 16).max(1 << 20)),
    ] {
        // session_args may set these itself (the server takes each flag once).
        if !c.session_args.iter().any(|a| a == flag || a.starts_with(&format!("{flag}="))) {
            cmd.push(flag.into());
            cmd.push(value.to_string());
        }
    }
    cmd.extend(c.session_args.iter().cloned());
    if let Some(idle) = c.idle_exit {
        cmd.push("--idle-exit".into());
        cmd.push(format!("{}ms", idle.as_millis()));
    }
    cmd
}

/// The password reaches the server only as the md5 the Troop protocol compares.
fn password_env(password_md5: &SecretString) -> String {
    format!("TROOP_PASSWORD_MD5={}", password_md5.expose_secret())
}

fn password_from_env(env: &[String]) -> Option<SecretString> {
    env.iter().find_map(|e| e.strip_prefix("TROOP_PASSWORD_MD5=").map(SecretString::from))
}

/// True if a Troop server accepts at `addr`. Through a published port Docker's userland
/// proxy accepts before the server listens and then closes the connection: with
/// `through_proxy` the connection must also stay open (no EOF, no reset) for a moment.
pub(crate) async fn accepts(addr: SocketAddr, through_proxy: bool) -> bool {
    use tokio::io::AsyncReadExt;
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(addr)).await
    else {
        return false;
    };
    if !through_proxy {
        return true;
    }
    let mut buf = [0u8; 1];
    matches!(tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await, Err(_) | Ok(Ok(1..)))
}

/// The owner's sentence for a server exit code.
fn exit_reason(code: Option<i64>) -> String {
    match code {
        Some(0) => "nobody was connected for the idle time".to_string(),
        Some(137) => "the session container was killed".to_string(),
        Some(code) => format!("the session server exited with code {code}"),
        None => "the session container stopped".to_string(),
    }
}
