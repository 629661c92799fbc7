//! The hub's shared state and every session lifecycle path: start (and wait until the server
//! really listens), query, end for any reason (owner left, killed, container died, too old,
//! hub stopping), adoption or removal of containers left by an earlier hub process.
//!
//! One [`Hub`] is shared by the TCP and HTTP front doors, so both always agree. The registry
//! sits behind a plain mutex held only for bookkeeping, never across an engine call.

use crate::config::{Config, Orphans};
use crate::metrics::{Gauges, Metrics};
use crate::registry::{NewSession, Node, Registry, RegistryError, Session, State, LOCAL_NODE};
use crate::runtime::{Runtime, RuntimeError, RuntimeEvent, SessionSpec};
use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};
use tracing::{info, info_span, warn, Instrument};

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    OwnerLeft,
    OwnerKilled,
    AdminKilled,
    ContainerExited(String),
    Idle,
    MaxAge,
    Expired,
    HubShutdown,
}

impl EndReason {
    /// The sentence the owner gets in an `error` frame, if it should get one.
    fn owner_message(&self) -> Option<String> {
        match self {
            EndReason::OwnerLeft | EndReason::OwnerKilled => None,
            EndReason::AdminKilled => Some("Session manually killed by admin.".into()),
            EndReason::ContainerExited(why) => Some(format!("The session has ended: {why}.")),
            EndReason::Idle => Some("The session has ended: nobody was connected for the idle time.".into()),
            EndReason::Expired => Some("The session's time to live ran out.".into()),
            EndReason::MaxAge => Some("The session reached the hub's maximum session age and was ended.".into()),
            EndReason::HubShutdown => Some("Troop Hub Service has been manually terminated".into()),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            EndReason::OwnerLeft => "owner_left",
            EndReason::OwnerKilled => "owner_killed",
            EndReason::AdminKilled => "deleted",
            EndReason::ContainerExited(_) => "container_exited",
            EndReason::Idle => "idle",
            EndReason::MaxAge | EndReason::Expired => "max_age",
            EndReason::HubShutdown => "hub_shutdown",
        }
    }
}

/// A request the hub refuses; `Display` is the one sentence the client gets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    Registry(#[from] RegistryError),
    #[error("The session image {0} is missing on the hub's Docker engine; the operator must build it (images/troop-server/build-local.sh)")]
    ImageMissing(String),
    #[error("The hub cannot reach its Docker engine right now; try again in a moment")]
    EngineDown,
    #[error("The session failed to start: {0}")]
    StartFailed(String),
    #[error("Daemon sessions can only be started from a trusted address")]
    DaemonNotTrusted,
}

impl HubError {
    /// The metrics label of a failed start.
    pub fn label(&self) -> &'static str {
        match self {
            HubError::Registry(RegistryError::Full) => "cap",
            HubError::Registry(RegistryError::AddressLimit) => "address_limit",
            HubError::Registry(RegistryError::NameTaken) => "name_taken",
            HubError::Registry(RegistryError::NoPort) => "no_port",
            HubError::Registry(RegistryError::NoNode) => "no_node",
            HubError::ImageMissing(_) => "image_missing",
            HubError::EngineDown => "docker_unreachable",
            HubError::StartFailed(_) => "start_failed",
            HubError::DaemonNotTrusted => "not_trusted",
        }
    }
}

impl From<RuntimeError> for HubError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::ImageMissing(image) => HubError::ImageMissing(image),
            RuntimeError::Unreachable(_) => HubError::EngineDown,
            RuntimeError::PortTaken(_) => HubError::Registry(RegistryError::NoPort),
            // Swarm's own words name nodes and addresses: performers get the runtime's sentence.
            RuntimeError::TaskFailed { public, .. } => HubError::StartFailed(public.into()),
            // The engine's own words go to the hub's log, not to clients.
            _ => HubError::StartFailed("the container engine refused to run it (details in the hub's log)".into()),
        }
    }
}

/// A session the caller owns: its address, and a channel that yields the sentence to pass
/// on when the session ends for a reason other than the owner.
pub struct Owned {
    pub name: String,
    pub id: String,
    pub host: String,
    pub port: u16,
    pub ended: mpsc::UnboundedReceiver<String>,
}

/// What the list requests show of a session (never its password).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    pub name: String,
    pub id: String,
    pub host: String,
    /// The node it runs on ("local" for the local Docker runtime).
    pub node: String,
    pub port: u16,
    pub state: &'static str,
    pub created: u64,
    pub age_seconds: u64,
    pub owner_connected: bool,
    pub daemon: bool,
    pub container: Option<String>,
}

/// A node as the placement table sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeInfo {
    pub id: String,
    /// The host performers are given for sessions on it.
    pub host: String,
    /// Ready and active (drained or down nodes get no new sessions).
    pub usable: bool,
    pub sessions: usize,
    pub free_ports: usize,
}

/// How often the hub asks the runtime for its nodes.
pub const NODE_REFRESH: Duration = Duration::from_secs(3);

/// The hub.
pub struct Hub {
    config: RwLock<Config>,
    registry: Mutex<Registry>,
    runtime: Arc<dyn Runtime>,
    owners: Mutex<HashMap<String, mpsc::UnboundedSender<String>>>,
    public_host: String,
    /// Set when performers outside this network would be given an address they cannot reach.
    public_host_warning: Option<String>,
    stopping: watch::Sender<bool>,
    pub metrics: Metrics,
    admin_token: RwLock<Option<SecretString>>,
    /// Set once a session's port is seen served by docker-proxy on this host.
    userland_proxy: std::sync::atomic::AtomicBool,
    /// Session starts under way (shutdown waits for them).
    starts_in_flight: std::sync::atomic::AtomicUsize,
    /// Set once the sessions left from before were adopted or removed (`recover`); until
    /// then reconciling must not take them for strays.
    recovered: std::sync::atomic::AtomicBool,
    /// Container removals in flight at most: ending hundreds of sessions at once (shutdown)
    /// must not swamp the engine into timeouts.
    removals: tokio::sync::Semaphore,
}

/// Counts a start in flight for as long as it lives.
struct InFlight(Arc<Hub>);

impl InFlight {
    fn new(hub: Arc<Hub>) -> InFlight {
        hub.starts_in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(hub)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.starts_in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How a session is asked for.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub name: String,
    pub password: SecretString,
    /// Not tied to the requesting connection.
    pub daemon: bool,
    /// The requester's address; `None` for the admin API (trusted).
    pub peer: Option<IpAddr>,
    /// API sessions end when this runs out.
    pub ttl: Option<Duration>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The address clients are given: `public_host`, else this machine's outbound address (found
/// the way upstream did, by routing a UDP socket; nothing is sent), else 127.0.0.1.
pub fn detect_public_host(config: &Config) -> String {
    if let Some(h) = &config.public_host {
        return h.clone();
    }
    let routed = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("8.8.8.8:80").map(|_| s))
        .and_then(|s| s.local_addr());
    match routed {
        Ok(a) if !a.ip().is_unspecified() => a.ip().to_string(),
        _ => "127.0.0.1".into(),
    }
}

/// A warning when the hub listens on every interface but gives performers a host that only
/// this network can reach: `public_host` unset (detected) or resolving to a loopback,
/// private or link-local address.
pub fn unreachable_public_host(config: &Config, public_host: &str) -> Option<String> {
    if !config.listen.ip().is_unspecified() {
        return None;
    }
    let addrs: Vec<IpAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(public_host, 0))
        .map(|a| a.map(|a| a.ip()).collect())
        .unwrap_or_default();
    let local_only = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    let how = "set public_host in hub.yaml (or TROOP_HUB_PUBLIC_HOST) to this hub's DNS name or public address";
    match (&config.public_host, addrs.iter().all(local_only)) {
        (None, true) => Some(format!(
            "public_host is not set and the detected address {public_host} is local to this network: performers \
             outside it will not reach sessions; {how}"
        )),
        (None, false) => Some(format!(
            "public_host is not set: performers are given the detected address {public_host}; if they cannot reach it, {how}"
        )),
        (Some(h), true) if addrs.is_empty() => Some(format!(
            "public_host {h} does not resolve here: performers may not reach sessions; {how}"
        )),
        (Some(h), true) => Some(format!(
            "public_host {h} is a loopback or private address: performers outside this network will not reach sessions; {how}"
        )),
        (Some(_), false) => None,
    }
}

impl Hub {
    pub fn new(config: Config, runtime: Arc<dyn Runtime>) -> Arc<Hub> {
        let public_host = detect_public_host(&config);
        let public_host_warning = unreachable_public_host(&config, &public_host);
        if let Some(w) = &public_host_warning {
            warn!("{w}");
        }
        let registry = Registry::new(config.ports, config.max_sessions, config.max_sessions_per_address);
        let (stopping, _) = watch::channel(false);
        let parallel_removals = runtime.parallel_removals();
        Arc::new(Hub {
            config: RwLock::new(config),
            registry: Mutex::new(registry),
            runtime,
            owners: Mutex::new(HashMap::new()),
            public_host,
            public_host_warning,
            stopping,
            metrics: Metrics::default(),
            admin_token: RwLock::new(None),
            userland_proxy: std::sync::atomic::AtomicBool::new(false),
            recovered: std::sync::atomic::AtomicBool::new(false),
            starts_in_flight: std::sync::atomic::AtomicUsize::new(0),
            removals: tokio::sync::Semaphore::new(parallel_removals),
        })
    }

    /// Sets the admin token (from the environment or `admin_token_file`).
    pub fn set_admin_token(&self, token: Option<SecretString>) {
        if let Ok(mut t) = self.admin_token.write() {
            *t = token.filter(|t| !t.expose_secret().is_empty());
        }
    }

    /// Checks a presented admin token in constant time. `None` when no token is configured.
    pub fn check_admin_token(&self, presented: &str) -> Option<bool> {
        let t = self.admin_token.read().ok()?;
        t.as_ref().map(|t| crate::constant_time_eq(t.expose_secret().as_bytes(), presented.as_bytes()))
    }

    /// Gauges for the metrics page and the status page.
    pub fn gauges(&self) -> Gauges {
        let r = lock(&self.registry);
        Gauges {
            running: r.len(),
            free_ports: r.free_ports(Instant::now()),
            cap: r.max_sessions(),
            nodes_usable: r.nodes().iter().filter(|n| n.usable).count(),
        }
    }

    /// Applies a reloaded configuration. Keys that need a restart keep their running value
    /// (one warning each is returned); the rest applies to new sessions at once. Lowering the
    /// cap ends nothing.
    pub fn apply_config(&self, mut new: Config) -> Vec<String> {
        let old = self.config();
        let mut warnings = Vec::new();
        macro_rules! restart_only {
            ($($key:ident),*) => {$(
                if new.$key != old.$key {
                    warnings.push(format!("`{}` changes only with a restart; keeping the running value", stringify!($key)));
                    new.$key = old.$key.clone();
                }
            )*};
        }
        restart_only!(hub_id, listen, http_listen, public_host, network, session_port, bind_address, runtime);
        {
            let mut r = lock(&self.registry);
            if new.ports != old.ports {
                if let Err(why) = r.set_ports(new.ports) {
                    warnings.push(format!("`ports` cannot change now ({why}); keeping the running range"));
                    new.ports = old.ports;
                }
            }
            r.set_limits(new.max_sessions, new.max_sessions_per_address);
        }
        self.runtime.reconfigure(new.clone());
        if let Ok(mut c) = self.config.write() {
            *c = new;
        }
        warnings
    }

    pub fn config(&self) -> Config {
        self.config.read().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn public_host(&self) -> &str {
        &self.public_host
    }

    /// The host performers dial for a session on a node: the node's own public host, else
    /// the hub's.
    fn host_for(&self, node_host: Option<&String>) -> String {
        node_host.cloned().unwrap_or_else(|| self.public_host.clone())
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    /// Resolves once the hub has begun shutting down.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Starts a session and returns once its server accepts connections. An adopted session
    /// without an owner is handed back to whoever repeats its name with the same password.
    ///
    /// The start runs on a task of its own, so a caller that goes away (a client hanging up,
    /// the front door closing at shutdown) never cancels it half-way and leaves a container
    /// the registry does not know; shutdown waits for the starts in flight.
    pub async fn start_session(self: &Arc<Self>, req: StartRequest) -> Result<Owned, HubError> {
        let guard = InFlight::new(self.clone());
        let hub = self.clone();
        let result = tokio::spawn(async move {
            let _guard = guard;
            hub.try_start(&req).await
        })
        .await
        .unwrap_or_else(|_| Err(HubError::StartFailed("the start was interrupted".into())));
        match &result {
            Ok(_) => self.metrics.request("server", "ok"),
            Err(e) => {
                self.metrics.request("server", "error");
                self.metrics.start_failed(e.label());
                if matches!(e, HubError::EngineDown | HubError::StartFailed(_)) {
                    self.metrics.docker_error();
                }
            }
        }
        result
    }

    async fn try_start(&self, req: &StartRequest) -> Result<Owned, HubError> {
        let (name, password, daemon) = (req.name.as_str(), req.password.expose_secret(), req.daemon);
        let config = self.config();
        let trusted = req.peer.is_none_or(|ip| config.is_trusted(ip));
        if daemon && !trusted {
            return Err(HubError::DaemonNotTrusted);
        }
        if *self.stopping.borrow() {
            return Err(HubError::StartFailed("the hub is shutting down".into()));
        }
        let password_md5 = SecretString::from(troop_server::md5_hex(password));
        // A session waiting for its owner (adopted after a restart) goes back to that owner;
        // API and daemon requests never take one over.
        if !daemon {
            if let Some(owned) = self.reclaim(name, password_md5.expose_secret()) {
                return Ok(owned);
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        let now = Instant::now();
        let (node, port) = {
            let new = NewSession {
                id: id.clone(),
                name: name.into(),
                password_md5: password_md5.clone(),
                owner_ip: req.peer,
                trusted,
                daemon,
                expires: req.ttl.and_then(|t| SystemTime::now().checked_add(t)),
            };
            let mut registry = lock(&self.registry);
            let s = registry.reserve(new, now)?;
            (s.node.clone(), s.port)
        };
        let span = info_span!("session", session = %name, id = %id, node = %node);
        let (tx, ended) = mpsc::unbounded_channel();
        let result = self.launch(name, &id, (node, port), password_md5, &config, tx).instrument(span.clone()).await;
        match result {
            Ok((host, port)) => {
                self.metrics.session_started(now.elapsed());
                self.check_userland_proxy(port);
                span.in_scope(|| info!(port, elapsed_ms = now.elapsed().as_millis() as u64, daemon, "session ready"));
                Ok(Owned { name: name.into(), id, host, port, ended })
            }
            Err(e) => {
                span.in_scope(|| warn!(error = %e, "session start failed"));
                Err(e)
            }
        }
    }

    /// Creates the container (moving to another port if the host port is taken), then waits
    /// for the server; on any failure the container is removed and the reservation freed.
    /// Returns the host and port performers are given.
    async fn launch(
        &self,
        name: &str,
        id: &str,
        (mut node, mut port): (String, u16),
        password_md5: SecretString,
        config: &Config,
        owner: mpsc::UnboundedSender<String>,
    ) -> Result<(String, u16), HubError> {
        let deadline = Instant::now() + config.start_timeout;
        let mut first_failure: Option<RuntimeError> = None;
        let started = loop {
            let spec = SessionSpec {
                id: id.into(),
                name: name.into(),
                node: node.clone(),
                port,
                password_md5: password_md5.clone(),
                deadline,
            };
            // On failure the runtime has removed what it made: the slot can go at once.
            match self.runtime.start(spec).await {
                Ok(s) => break s,
                Err(RuntimeError::PortTaken(_)) if Instant::now() < deadline => {
                    warn!(port, "host port taken by something else; trying the next one");
                    let moved = lock(&self.registry).move_port(name, id, Instant::now());
                    match moved {
                        Ok(slot) => (node, port) = slot,
                        Err(e) => {
                            lock(&self.registry).free_port(&node, port, id, true, Instant::now());
                            return Err(e.into());
                        }
                    }
                }
                Err(e) => {
                    let mut registry = lock(&self.registry);
                    // A task that failed on its node: try another node while there is time.
                    if matches!(e, RuntimeError::TaskFailed { .. }) {
                        // Another node only with a fair share of the time left; the performer
                        // hears of the first failure (the later ones may be mere timeouts).
                        let time_left = deadline.saturating_duration_since(Instant::now()) >= config.start_timeout / 3;
                        let elsewhere = registry.place_elsewhere(name, id, Instant::now());
                        if let (Some(slot), true) = (elsewhere, time_left) {
                            warn!(node = %node, error = %e, "the session failed on this node; trying another");
                            (node, port) = slot;
                            first_failure.get_or_insert(e);
                            continue;
                        }
                    }
                    // (place_elsewhere may have moved it already; release and free what it holds.)
                    if let Some(s) = registry.release(name, id) {
                        (node, port) = (s.node, s.port);
                    }
                    // A port taken by something outside the hub is set aside, not handed out again.
                    let removed = !matches!(e, RuntimeError::PortTaken(_));
                    registry.free_port(&node, port, id, removed, Instant::now());
                    warn!(error = %e, "the engine did not start the session");
                    return Err(first_failure.unwrap_or(e).into());
                }
            }
        };
        let container = started.container_id.clone();
        if !lock(&self.registry).set_container(name, id, &container) {
            // Ended (killed, hub stopping) while the engine was starting it: its slot was kept
            // for this container, which goes now.
            let removed = self.runtime.remove(container).await;
            lock(&self.registry).free_port(&node, port, id, removed.is_ok(), Instant::now());
            return Err(HubError::StartFailed("it was ended while starting".into()));
        }
        info!(container = %short(&container), port, "container started; waiting for its server");
        let ready = match started.probe {
            Some(probe) => self.wait_ready(name, id, probe, deadline).await,
            None => Ok(()),
        };
        if let Err(why) = ready {
            // Ended meanwhile (its container exited): `finish` has already removed it.
            let released = lock(&self.registry).release(name, id).is_some();
            if released {
                let removed = self.runtime.remove(container.clone()).await;
                if let Err(e) = &removed {
                    warn!(container = %short(&container), error = %e, "could not remove a failed session's container");
                }
                lock(&self.registry).free_port(&node, port, id, removed.is_ok(), Instant::now());
            }
            return Err(HubError::StartFailed(why));
        }
        // The owner's channel is in place before anyone can see the session running, so an
        // end that comes right after is always passed on.
        let mut registry = lock(&self.registry);
        lock(&self.owners).insert(id.to_string(), owner);
        if !registry.set_running(name, id) {
            drop(registry);
            lock(&self.owners).remove(id);
            return Err(HubError::StartFailed("it was ended while starting".into()));
        }
        let host = self.host_for(registry.get(name).and_then(|s| s.host.as_ref()));
        Ok((host, port))
    }

    /// Connects to the server's own address (not the published port, which Docker's proxy
    /// accepts before the server listens) until it answers or the deadline passes.
    async fn wait_ready(&self, name: &str, id: &str, probe: SocketAddr, deadline: Instant) -> Result<(), String> {
        loop {
            if lock(&self.registry).get(name).is_none_or(|s| s.id != id) {
                return Err("its container stopped before its server was ready".into());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "its server did not listen within {}",
                    humantime::format_duration(self.config().start_timeout)
                ));
            }
            let attempt = tokio::time::timeout(left, crate::runtime::accepts(probe, false)).await;
            if attempt == Ok(true) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(3).min(left)).await;
        }
    }

    fn reclaim(&self, name: &str, password_md5: &str) -> Option<Owned> {
        let mut registry = lock(&self.registry);
        let s = registry.running(name)?;
        if s.owner_connected
            || s.daemon
            || !crate::constant_time_eq(s.password_md5.expose_secret().as_bytes(), password_md5.as_bytes())
        {
            return None;
        }
        let (id, port) = (s.id.clone(), s.port);
        let host = self.host_for(s.host.as_ref());
        let (tx, ended) = mpsc::unbounded_channel();
        lock(&self.owners).insert(id.clone(), tx);
        registry.set_owner_connected(name, true);
        drop(registry);
        info!(session = %name, id = %id, "owner reclaimed an adopted session");
        Some(Owned { name: name.into(), id, host, port, ended })
    }

    /// Looks for a host socket listening on a published session port: that is Docker's
    /// userland proxy, which makes every performer appear to come from the bridge gateway
    /// (Troop then tells same-name performers apart wrongly). Warned once, shown on /readyz.
    /// Only a positive finding counts (a hub in its own network namespace sees nothing).
    fn check_userland_proxy(&self, port: u16) {
        use std::sync::atomic::Ordering;
        if self.userland_proxy.load(Ordering::Relaxed) || !host_port_listening(port) {
            return;
        }
        self.userland_proxy.store(true, Ordering::Relaxed);
        warn!("{}", USERLAND_PROXY_WARNING);
    }

    /// Warnings for /readyz.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.userland_proxy.load(std::sync::atomic::Ordering::Relaxed) {
            w.push(USERLAND_PROXY_WARNING.to_string());
        }
        w.extend(self.public_host_warning.clone());
        w
    }

    /// The public address of a running session.
    pub fn query(&self, name: &str) -> Option<(String, u16)> {
        lock(&self.registry).running(name).map(|s| (self.host_for(s.host.as_ref()), s.port))
    }

    /// Ends a session (if it is still the one with this id): the owner is told why, the
    /// container removed, the name and port freed.
    pub async fn end_session(&self, name: &str, id: &str, reason: EndReason) -> bool {
        let Some(session) = lock(&self.registry).release(name, id) else {
            return false;
        };
        self.finish(session, reason).await;
        true
    }

    async fn finish(&self, session: Session, reason: EndReason) {
        let owner = lock(&self.owners).remove(&session.id);
        if let (Some(owner), Some(msg)) = (owner, reason.owner_message()) {
            let _ = owner.send(msg);
        }
        let container = session.container_id.clone().unwrap_or_default();
        if session.state == State::Running {
            self.metrics.session_ended(reason.label());
        }
        info!(session = %session.name, id = %session.id, container = %short(&container), reason = reason.label(), "session ended");
        if let Some(container) = session.container_id {
            let _permit = self.removals.acquire().await;
            let removed = self.runtime.remove(container.clone()).await;
            if let Err(e) = &removed {
                self.metrics.docker_error();
                warn!(session = %session.name, container = %short(&container), error = %e, "could not remove the session's container");
            }
            lock(&self.registry).free_port(&session.node, session.port, &session.id, removed.is_ok(), Instant::now());
        }
    }

    /// Admin kill by name.
    pub async fn kill(&self, name: &str) -> bool {
        let id = lock(&self.registry).get(name).map(|s| s.id.clone());
        match id {
            Some(id) => self.end_session(name, &id, EndReason::AdminKilled).await,
            None => false,
        }
    }

    /// Every session, by name.
    pub fn list(&self) -> Vec<SessionInfo> {
        let registry = lock(&self.registry);
        let now = SystemTime::now();
        registry
            .list()
            .map(|s| SessionInfo {
                name: s.name.clone(),
                id: s.id.clone(),
                host: self.host_for(s.host.as_ref()),
                node: s.node.clone(),
                port: s.port,
                state: match s.state {
                    State::Starting => "starting",
                    State::Running => "running",
                },
                created: s.created.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                age_seconds: now.duration_since(s.created).map(|d| d.as_secs()).unwrap_or(0),
                owner_connected: s.owner_connected,
                daemon: s.daemon,
                container: s.container_id.as_deref().map(|c| short(c).to_string()),
            })
            .collect()
    }

    /// Asks the runtime for its nodes and updates the placement table; on failure the last
    /// known list stays.
    pub async fn refresh_nodes(&self) {
        match self.runtime.nodes().await {
            Ok(nodes) => {
                let mut r = lock(&self.registry);
                if r.nodes() != nodes.as_slice() {
                    info!(
                        nodes = nodes.len(),
                        usable = nodes.iter().filter(|n| n.usable).count(),
                        "the session nodes changed"
                    );
                }
                r.set_nodes(nodes);
            }
            Err(e) => warn!(error = %e, "could not list the session nodes; keeping the last known list"),
        }
    }

    /// Refreshes the node list every few seconds (a drained node stops getting sessions).
    pub async fn watch_nodes(self: Arc<Self>) {
        let mut stopping = self.stopping();
        loop {
            tokio::select! {
                _ = stopping.changed() => return,
                _ = tokio::time::sleep(NODE_REFRESH) => {}
            }
            self.refresh_nodes().await;
        }
    }

    /// The nodes as the hub places sessions on them.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let r = lock(&self.registry);
        let now = Instant::now();
        r.nodes()
            .iter()
            .map(|n: &Node| NodeInfo {
                id: n.id.clone(),
                host: self.host_for(n.host.as_ref()),
                usable: n.usable,
                sessions: r.sessions_on(&n.id),
                free_ports: r.free_ports_on(&n.id, now),
            })
            .collect()
    }

    /// Ports the registry holds (for tests and consistency checks).
    pub fn ports_in_use(&self) -> Vec<u16> {
        lock(&self.registry).ports_in_use()
    }

    /// At start: find this hub's containers from before and adopt or remove them.
    pub async fn recover(&self) -> Result<(), RuntimeError> {
        let config = self.config();
        let mut found = self.runtime.list().await?;
        // A hub killed mid-start leaves containers the engine is still starting: give them a
        // few seconds to settle (running: adopted; exited: removed) rather than force-removing
        // one under its own start (Docker 20.10 can then leave its network unremovable).
        let settle = Instant::now() + Duration::from_secs(5);
        let young = |c: &crate::runtime::Existing| {
            !c.running
                && c.created
                    .is_some_and(|t| SystemTime::now().duration_since(t).is_ok_and(|age| age < Duration::from_secs(10)))
        };
        while found.iter().any(young) && Instant::now() < settle {
            tokio::time::sleep(Duration::from_millis(250)).await;
            found = self.runtime.list().await?;
        }
        self.recovered.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in found {
            // A session started since this hub came up (recovery ran late: the engine was away).
            let current = c.session_id.as_ref().is_some_and(|sid| lock(&self.registry).list().any(|s| &s.id == sid));
            if current {
                continue;
            }
            let adoptable = config.orphans == Orphans::Adopt && c.running;
            let session = match (adoptable, &c.session_id, &c.name, c.port, &c.password_md5) {
                (true, Some(id), Some(name), Some(port), Some(md5)) => Some(Session {
                    id: id.clone(),
                    name: name.clone(),
                    node: c.node.clone().unwrap_or_else(|| LOCAL_NODE.to_string()),
                    host: None,
                    port,
                    password_md5: md5.clone(),
                    owner_ip: None,
                    counts_for_address: false,
                    daemon: false,
                    owner_connected: false,
                    container_id: Some(c.container_id.clone()),
                    state: State::Running,
                    created: c.created.unwrap_or_else(SystemTime::now),
                    started: Instant::now(),
                    expires: None,
                }),
                _ => None,
            };
            let adopted = match session {
                Some(s) => {
                    let name = s.name.clone();
                    match lock(&self.registry).adopt(s) {
                        Ok(()) => {
                            info!(session = %name, container = %short(&c.container_id), "adopted a session from before the restart");
                            true
                        }
                        Err(e) => {
                            warn!(session = %name, error = %e, "cannot adopt; removing");
                            false
                        }
                    }
                }
                None => false,
            };
            if !adopted {
                info!(container = %short(&c.container_id), "removing a session container left from before");
                if let Err(e) = self.runtime.remove(c.container_id.clone()).await {
                    warn!(container = %short(&c.container_id), error = %e, "could not remove; the next reconcile retries");
                }
            }
        }
        Ok(())
    }

    /// Ends sessions whose container exited, as the engine reports it; reconnects to the
    /// engine's event stream when it breaks and then reconciles with what is running.
    pub async fn watch_engine(self: Arc<Self>) {
        let mut stopping = self.stopping();
        // Also reconcile now and then: it retries removals that failed while the engine was away.
        let mut every = tokio::time::interval(Duration::from_secs(30));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Ok(mut events) = self.runtime.events().await {
                loop {
                    tokio::select! {
                        _ = stopping.changed() => return,
                        _ = every.tick() => self.reconcile().await,
                        ev = events.next() => match ev {
                            Some(Ok(RuntimeEvent::Exited { container_id, reason, idle })) => {
                                let found = lock(&self.registry).by_container(&container_id).map(|s| (s.name.clone(), s.id.clone()));
                                if let Some((name, id)) = found {
                                    let why = if idle { EndReason::Idle } else { EndReason::ContainerExited(reason) };
                                    self.end_session(&name, &id, why).await;
                                }
                            }
                            Some(Err(e)) => {
                                self.metrics.docker_error();
                                warn!(error = %e, "lost the Docker event stream; reconnecting");
                                break;
                            }
                            None => break,
                        }
                    }
                }
            }
            tokio::select! {
                _ = stopping.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            self.reconcile().await;
        }
    }

    /// Ends sessions whose containers are gone (events missed while the engine was away).
    async fn reconcile(&self) {
        // The engine was away when the hub started: adopt or remove per `orphans` first.
        if !self.recovered.load(std::sync::atomic::Ordering::SeqCst) && self.recover().await.is_err() {
            return;
        }
        // The registry first: a session that turns running after this snapshot is not judged
        // by a container list taken before it existed.
        let running: Vec<(String, String, String)> = lock(&self.registry)
            .list()
            .filter(|s| s.state == State::Running)
            .filter_map(|s| Some((s.name.clone(), s.id.clone(), s.container_id.clone()?)))
            .collect();
        let Ok(found) = self.runtime.list().await else { return };
        let alive: Vec<&str> = found.iter().filter(|c| c.running).map(|c| c.container_id.as_str()).collect();
        for (name, id, container) in running {
            if !alive.contains(&container.as_str()) {
                self.end_session(&name, &id, EndReason::ContainerExited("the session container is gone".into())).await;
            }
        }
        // Containers of this hub that no session owns (a removal that failed earlier), old
        // enough not to be a start in progress.
        let grace = self.config().start_timeout + Duration::from_secs(10);
        let now = SystemTime::now();
        for c in found {
            let owned = lock(&self.registry).by_container(&c.container_id).is_some()
                || c.session_id.as_ref().is_some_and(|sid| lock(&self.registry).list().any(|s| &s.id == sid));
            let old = c.created.is_none_or(|t| now.duration_since(t).is_ok_and(|age| age > grace));
            if !owned && old {
                info!(container = %short(&c.container_id), "removing a session container no session owns");
                if let Err(e) = self.runtime.remove(c.container_id.clone()).await {
                    warn!(container = %short(&c.container_id), error = %e, "could not remove; will retry");
                }
            }
        }
    }

    /// Ends sessions older than `max_session_age` or past their ttl, checked every second.
    pub async fn enforce_deadlines(self: Arc<Self>) {
        let mut stopping = self.stopping();
        loop {
            tokio::select! {
                _ = stopping.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let max = self.config().max_session_age;
            let now = SystemTime::now();
            let due: Vec<(String, String, EndReason)> = lock(&self.registry)
                .list()
                .filter_map(|s| {
                    let too_old = max.is_some_and(|m| now.duration_since(s.created).is_ok_and(|age| age >= m));
                    let expired = s.expires.is_some_and(|e| now >= e);
                    let reason = if too_old { EndReason::MaxAge } else { EndReason::Expired };
                    (too_old || expired).then(|| (s.name.clone(), s.id.clone(), reason))
                })
                .collect();
            for (name, id, reason) in due {
                self.end_session(&name, &id, reason).await;
            }
        }
    }

    /// Ends every session (owners told, containers removed) and tears down the network.
    pub async fn shutdown(&self) {
        let _ = self.stopping.send(true);
        // Starts in flight finish first (new ones are refused now), so their containers are
        // registered and removed below rather than left behind.
        let c = self.config();
        let limit = c.start_timeout + c.engine_timeout * 7;
        let wait = async {
            while self.starts_in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(limit, wait).await.is_err() {
            warn!("session starts still in flight at shutdown; the next hub adopts or removes them");
        }
        let all: Vec<(String, String)> = lock(&self.registry).list().map(|s| (s.name.clone(), s.id.clone())).collect();
        let ends = all.iter().map(|(name, id)| self.end_session(name, id, EndReason::HubShutdown));
        futures_util::future::join_all(ends).await;
        self.runtime.teardown().await;
    }

    /// The owner's connection closed or it sent `kill`.
    pub async fn owner_gone(&self, name: &str, id: &str, killed: bool) {
        let reason = if killed { EndReason::OwnerKilled } else { EndReason::OwnerLeft };
        self.end_session(name, id, reason).await;
    }
}

pub const USERLAND_PROXY_WARNING: &str = "Docker's userland proxy serves the session ports, so sessions see every \
performer as the bridge gateway address: set \"userland-proxy\": false in /etc/docker/daemon.json and restart the engine";

/// True if a socket in this network namespace listens on `port` (from /proc/net/tcp{,6}).
pub fn host_port_listening(port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|text| {
            text.lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3 && cols[1].ends_with(&wanted) && cols[3] == "0A"
            })
        })
    })
}

/// The 12-character form of a container id.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_host_only_this_network_reaches_is_warned_about_when_listening_everywhere() {
        let c = |yaml: &str| Config::from_yaml(yaml).unwrap();
        let everywhere = "listen: 0.0.0.0:57990\n";
        let w = unreachable_public_host(&c(&format!("{everywhere}public_host: 127.0.0.1")), "127.0.0.1");
        assert!(w.is_some_and(|w| w.contains("will not reach") && w.contains("public_host")));
        assert!(unreachable_public_host(&c(&format!("{everywhere}public_host: 10.1.2.3")), "10.1.2.3").is_some());
        assert!(unreachable_public_host(&c(everywhere), "192.168.1.5").is_some_and(|w| w.contains("not set")));
        assert_eq!(unreachable_public_host(&c(&format!("{everywhere}public_host: 203.0.113.5")), "203.0.113.5"), None);
        assert_eq!(unreachable_public_host(&c("listen: 127.0.0.1:57990\npublic_host: 127.0.0.1"), "127.0.0.1"), None);
    }
}
