//! Where sessions run. [`Runtime`] is the one seam between the hub and a container engine:
//! list the nodes, start a session's server on one and say when it really listens, remove it,
//! list what is there, report exits. Everything engine-specific stays behind it.
//! - [`probe`]: is a server listening on a port, is Docker's userland proxy in the way;
//! - `engine`: the Engine API client both real runtimes share, and error sorting;
//! - [`spec`]: what every session's server runs with (command, labels, hardening), as one
//!   value mapped onto each engine's shape;
//! - [`docker::DockerRuntime`]: one container per session on the local engine (one node);
//! - [`swarm::SwarmRuntime`]: one Swarm service per session, placed by the hub on a node;
//! - `fake::FakeRuntime` (tests only): in memory, scripted, for the hub's unit tests.

pub mod docker;
mod engine;
#[cfg(test)]
pub mod fake;
pub mod probe;
pub mod spec;
pub mod swarm;

pub use crate::registry::Node;
pub use docker::DockerRuntime;
pub use swarm::SwarmRuntime;

use crate::config::Config;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;

pub const LABEL_MANAGED: &str = "io.troop-hub.managed";
pub const LABEL_HUB: &str = "io.troop-hub.hub";
pub const LABEL_SESSION: &str = "io.troop-hub.session";
pub const LABEL_SESSION_ID: &str = "io.troop-hub.session-id";
pub const LABEL_PORT: &str = "io.troop-hub.port";
pub const LABEL_CREATED: &str = "io.troop-hub.created";
/// Marks a warm pool member: started before any session asked for it, so its labels name no
/// session (labels cannot change later; once armed, its server knows the session's name).
pub const LABEL_POOL: &str = "io.troop-hub.pool";
/// Marks a server behind the hub's front door (nothing published): a restarted hub opens its
/// door again whatever its own `front_door` now says.
pub const LABEL_FRONT_DOOR: &str = "io.troop-hub.front-door";
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
    /// The engine is not what the configured runtime needs (e.g. not a swarm manager).
    #[error("{0}")]
    Misconfigured(String),
    #[error("{0}")]
    Failed(String),
}

/// Why a start did not give a listening server. Whatever the error, the runtime has already
/// removed what it made for this start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StartError {
    /// The host port is held by something outside the hub: try another port.
    #[error("host port {0} is already in use")]
    PortTaken(u16),
    /// The server did not run on its node; another node may do better. `public` is the
    /// sentence performers get; `detail` (the engine's words, node ids) is for the log only.
    #[error("{detail}")]
    NodeFailed { public: &'static str, detail: String },
    /// The server never listened (it exited, or the deadline passed); the sentence is for
    /// performers.
    #[error("{0}")]
    NotReady(String),
    /// The hub ended the session while it was starting.
    #[error("it was ended while starting")]
    Cancelled,
    #[error(transparent)]
    Engine(RuntimeError),
}

impl From<RuntimeError> for StartError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::PortTaken(p) => StartError::PortTaken(p),
            other => StartError::Engine(other),
        }
    }
}

/// Everything needed to start one session.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub id: String,
    /// The session's name; empty for a warm pool member (`pooled`).
    pub name: String,
    /// A warm pool member: labelled as one, with no session name.
    pub pooled: bool,
    /// The node the hub placed it on (a [`Node::id`]).
    pub node: String,
    pub port: u16,
    /// What the server is given to let the hub (or performers) in.
    pub credentials: Credentials,
    /// When the hub gives up on this start (`start_timeout` after the request).
    pub deadline: tokio::time::Instant,
    /// Cancelled when the hub ends the session before it is ready.
    pub cancel: CancellationToken,
}

/// What a session server is started with, in its environment (never labels or arguments).
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A random per-session secret for the hub's control channel; the server starts locked
    /// and the hub arms it with the password md5 over that channel.
    Control(SecretString),
    /// The password md5 itself, for images without a control channel (upstream Troop).
    PasswordMd5(SecretString),
}

/// A started session server.
#[derive(Debug, Clone)]
pub struct Started {
    /// The runtime's handle on it: a container id, or a Swarm service id.
    pub handle: String,
    /// Where the hub reaches its control channel (the Troop port, from the hub's side).
    pub control: SocketAddr,
}

/// A session found on the engine.
#[derive(Debug, Clone)]
pub struct Existing {
    /// The runtime's handle on the session's server: a container id, or a Swarm service id.
    pub handle: String,
    pub running: bool,
    pub session_id: Option<String>,
    pub name: Option<String>,
    /// Started as a warm pool member (its labels name no session).
    pub pooled: bool,
    pub node: Option<String>,
    pub port: Option<u16>,
    pub created: Option<SystemTime>,
    /// What it was started with (read back from its environment, for adoption).
    pub credentials: Option<Credentials>,
    /// Where the hub reaches its control channel, if known.
    pub control: Option<SocketAddr>,
    /// Started behind the hub's front door (publishing nothing).
    pub front_door: bool,
}

/// Something that happened to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeEvent {
    /// The session's server stopped (exit, kill, OOM, service removed); `idle` when it exited
    /// by itself with status 0 (the idle-exit timer).
    Exited { handle: String, reason: String, idle: bool },
}

/// Session exits from the engine.
pub type EventStream = BoxStream<'static, Result<RuntimeEvent, RuntimeError>>;

/// The container engine behind the hub.
pub trait Runtime: Send + Sync + 'static {
    /// Checks the engine and the image, creates what sessions share (a network) if needed.
    fn prepare(&self) -> BoxFuture<'_, Result<(), RuntimeError>>;
    /// Is the engine reachable and the image present? (Used by health checks.)
    fn check(&self) -> BoxFuture<'_, Result<(), RuntimeError>>;
    /// The machines sessions can be placed on.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<Node>, RuntimeError>>;
    /// Starts a session's server and returns its handle once the server really accepts
    /// connections, before `spec.deadline`. On any error nothing of this start is left.
    fn start(&self, spec: SessionSpec) -> BoxFuture<'_, Result<Started, StartError>>;
    /// Stops a session's server gently (SIGTERM, a short grace, then SIGKILL), removes it and
    /// waits until its port is free; a handle the engine does not know counts as done. The
    /// runtime bounds how many run at once.
    fn remove(&self, handle: String) -> BoxFuture<'_, Result<(), RuntimeError>>;
    /// How many sessions the hub ends at once (each told to end, then removed, in one turn):
    /// a server's exit costs the engine the same whether it exits by itself or is stopped,
    /// so telling is bounded with the removals. The runtime's own bound on `remove`.
    fn ends_at_once(&self) -> usize {
        8
    }
    /// This hub's sessions on the engine. No side effects.
    fn list(&self) -> BoxFuture<'_, Result<Vec<Existing>, RuntimeError>>;
    /// [`Runtime::list`] without what only adoption needs (credentials, addresses): what the
    /// periodic reconcile asks for, cheaper on an engine with many sessions.
    fn list_brief(&self) -> BoxFuture<'_, Result<Vec<Existing>, RuntimeError>> {
        self.list()
    }
    /// Makes a running server found at start reachable again before it is adopted (the hub's
    /// front door listens for it: the last hub process held its port). Nothing by default.
    fn reopen(&self, _found: &Existing) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async { Ok(()) })
    }
    /// Removes leftovers that belong to no session (e.g. networks of a start cut short).
    fn sweep(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    /// Session exits, as they happen. The stream ends when the engine connection breaks.
    fn events(&self) -> BoxFuture<'_, Result<EventStream, RuntimeError>>;
    /// Removes what `prepare` created, once no session is left.
    fn teardown(&self) -> BoxFuture<'_, ()>;
    /// Things the operator should fix, for the log and /readyz.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// A reloaded configuration, for sessions started from now on.
    fn reconfigure(&self, config: Config);
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
