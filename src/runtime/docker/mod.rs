//! Sessions as containers on the local Docker engine: one container per session, built from
//! the shared [`ServerSpec`] (no capabilities, no-new-privileges, read-only root, non-root
//! user, limits, capped logs), on the sessions' bridge networks without inter-container
//! traffic ([`networks`]), its port published on the host, or held by the hub itself when the
//! hub is the front door ([`doors`]). A start returns once the server
//! accepts on the container's own address (Docker's proxy accepts on the published port before
//! that). Exits come from the engine's event stream. The local engine is one node,
//! [`Node::local`].

mod doors;
mod networks;
mod shards;

use super::engine::{classify, hub_filter, timed_within, Engine};
use super::probe::{accepts, host_port_listening, USERLAND_PROXY_WARNING};
use super::spec::{credentials_from_env, labelled, ServerSpec, STOP_GRACE};
use super::{
    exit_reason, Credentials, EventStream, Existing, Node, Runtime, RuntimeError, RuntimeEvent, SessionSpec,
    StartError, Started,
};
use crate::config::Config;
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions,
};
use bollard::Docker;
use doors::Doors;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use networks::Networks;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Container removals in flight at most: ending hundreds of sessions at once (shutdown) must
/// not swamp the engine into timeouts.
const PARALLEL_REMOVALS: usize = 8;

/// Connections the front door relays at once, in all (2 of the hub's open files each).
pub const FRONT_DOOR_RELAYS: usize = doors::IN_ALL;

/// Containers inspected at once when listing this hub's servers (adoption after a restart).
const INSPECTS_AT_ONCE: usize = 16;

/// Sessions as containers on the local Docker engine.
pub struct DockerRuntime {
    engine: Engine,
    /// The sessions' networks and how full each is.
    networks: Networks,
    removals: tokio::sync::Semaphore,
    /// Set once a session's port is seen served by docker-proxy on this host.
    userland_proxy: std::sync::Arc<AtomicBool>,
    /// Starts so far, for looking for the proxy on some of them only.
    starts: std::sync::atomic::AtomicU64,
    /// The sessions' ports the hub holds itself (`front_door`).
    doors: Doors,
}

/// What inspecting a session container tells.
struct Inspected {
    running: bool,
    /// The network it is on.
    network: Option<String>,
    exit_code: Option<i64>,
    credentials: Option<Credentials>,
    addr: Option<SocketAddr>,
}

/// A container made and started for a session, and how long each took (placing it on a
/// network and creating it; starting it).
struct Created {
    id: String,
    create: Duration,
    start: Duration,
}

impl DockerRuntime {
    /// A runtime for the engine named by DOCKER_HOST (default: the local socket). Nothing
    /// is contacted yet.
    pub fn new(config: Config) -> DockerRuntime {
        DockerRuntime {
            networks: Networks::new(&config),
            engine: Engine::new(config),
            removals: tokio::sync::Semaphore::new(PARALLEL_REMOVALS),
            userland_proxy: std::sync::Arc::new(AtomicBool::new(false)),
            starts: std::sync::atomic::AtomicU64::new(0),
            doors: Doors::default(),
        }
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
    ) -> Result<T, RuntimeError> {
        self.engine.timed(f).await
    }

    fn config(&self) -> Config {
        self.engine.config()
    }

    async fn inspect(&self, docker: &Docker, container_id: &str, c: &Config) -> Result<Inspected, RuntimeError> {
        let info = self.timed(docker.inspect_container(container_id, None::<InspectContainerOptions>)).await?;
        let state = info.state.as_ref();
        // One network each: the sessions' first one or one of its shards.
        let network =
            info.network_settings.as_ref().and_then(|n| n.networks.as_ref()).and_then(|nets| nets.iter().next());
        let ip = network.and_then(|(_, e)| e.ip_address.as_deref()).and_then(|ip| ip.parse::<IpAddr>().ok());
        Ok(Inspected {
            running: state.and_then(|s| s.running).unwrap_or(false),
            network: network.map(|(name, _)| name.clone()),
            exit_code: state.and_then(|s| s.exit_code),
            credentials: info.config.as_ref().and_then(|cfg| cfg.env.as_deref()).and_then(credentials_from_env),
            addr: ip.map(|ip| SocketAddr::new(ip, c.session_port)),
        })
    }

    /// Creates and starts the container; returns its id.
    async fn create_once(&self, docker: &Docker, c: &Config, spec: &SessionSpec) -> Result<Created, StartError> {
        let begun = Instant::now();
        let (k, network) = self.networks.place(&self.engine, c).await?;
        let publish = (!c.front_door).then_some((c.bind_address, spec.port));
        let body = ServerSpec::new(c, spec).container(network, publish);
        let options = CreateContainerOptions { name: Some(format!("troop-{}", spec.id)), ..Default::default() };
        let created = self.timed(docker.create_container(Some(options), body)).await;
        let id = match created {
            Ok(r) => {
                self.networks.joined(&r.id, k).await;
                r.id
            }
            Err(e) => {
                self.networks.unreserve(k).await;
                return Err(match e {
                    RuntimeError::ImageMissing(_) | RuntimeError::NotFound => {
                        RuntimeError::ImageMissing(c.image.clone())
                    }
                    e => e,
                }
                .into());
            }
        };
        debug!(session = %spec.name, container = %id, network = k, "container created");
        let created = begun.elapsed();
        if let Err(e) = self.timed(docker.start_container(&id, None)).await {
            self.discard(&id).await;
            return Err(match e {
                RuntimeError::PortTaken(_) => StartError::PortTaken(spec.port),
                other => other.into(),
            });
        }
        Ok(Created { id, create: created, start: begun.elapsed() - created })
    }

    /// [`Self::create_once`], again once if a second network of the same name appeared
    /// meanwhile (see [`Self::keep_one_network`]).
    async fn create(&self, docker: &Docker, c: &Config, spec: &SessionSpec) -> Result<Created, StartError> {
        match self.create_once(docker, c, spec).await {
            Err(StartError::Engine(RuntimeError::Failed(e))) if e.contains("is ambiguous") => {
                warn!(network = %c.network, "two networks have the sessions' name: keeping one and starting again");
                self.networks.forget_ids().await;
                self.create_once(docker, c, spec).await
            }
            other => other,
        }
    }

    /// Waits until the server accepts on the container's own address (returned), its
    /// container stops, the deadline passes or the hub cancels the start.
    async fn wait_ready(
        &self,
        docker: &Docker,
        id: &str,
        c: &Config,
        spec: &SessionSpec,
    ) -> Result<SocketAddr, StartError> {
        let mut addr = None;
        let mut next_look = Instant::now();
        loop {
            if spec.cancel.is_cancelled() {
                return Err(StartError::Cancelled);
            }
            if Instant::now() >= next_look {
                // Now and then: is it still running, and where does it listen?
                let seen = self.inspect(docker, id, c).await?;
                if !seen.running {
                    return Err(StartError::NotReady(format!(
                        "its server stopped before it was ready ({})",
                        exit_reason(seen.exit_code)
                    )));
                }
                addr = addr.or(seen.addr);
                next_look = Instant::now() + Duration::from_millis(250);
            }
            let left = spec.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let within = humantime::format_duration(c.start_timeout);
                return Err(StartError::NotReady(format!("its server did not listen within {within}")));
            }
            if let Some(a) = addr {
                if tokio::time::timeout(left, accepts(a, false)).await == Ok(true) {
                    return Ok(a);
                }
            }
            tokio::select! {
                _ = spec.cancel.cancelled() => return Err(StartError::Cancelled),
                _ = tokio::time::sleep(Duration::from_millis(3).min(left)) => {}
            }
        }
    }

    /// This hub's containers; with `details`, running ones are inspected for what adoption
    /// needs (credentials, address, network).
    async fn list_with(&self, details: bool) -> Result<Vec<Existing>, RuntimeError> {
        let c = self.config();
        let docker = self.engine.client().await?;
        let options = ListContainersOptions { all: true, filters: Some(hub_filter(&c.hub_id)), ..Default::default() };
        let found = self.timed(docker.list_containers(Some(options))).await?;
        // Credentials and address only for running containers (adoption needs them),
        // inspected a few at a time: one by one made adopting 1,000 sessions take long.
        let (docker, c) = (&docker, &c);
        let out = futures_util::stream::iter(found.into_iter().filter_map(|summary| {
            let handle = summary.id.clone()?;
            Some((handle, summary))
        }))
        .map(|(handle, summary)| async move {
            let running = summary.state.map(|s| s.to_string() == "running").unwrap_or(false);
            let seen = match running && details {
                true => self.inspect(docker, &handle, c).await.ok(),
                false => None,
            };
            if let Some(network) = seen.as_ref().and_then(|i| i.network.as_deref()) {
                self.networks.found(&handle, network).await;
            }
            let l = labelled(&summary.labels.unwrap_or_default());
            Existing {
                handle,
                running,
                session_id: l.session_id,
                name: l.name,
                pooled: l.pooled,
                node: Some(crate::registry::LOCAL_NODE.to_string()),
                port: l.port,
                created: l.created,
                credentials: seen.as_ref().and_then(|i| i.credentials.clone()),
                control: seen.and_then(|i| i.addr),
                front_door: l.front_door,
            }
        })
        .buffered(INSPECTS_AT_ONCE)
        .collect::<Vec<Existing>>()
        .await;
        Ok(out)
    }

    /// Removes a container this runtime made for a start that failed.
    async fn discard(&self, id: &str) {
        if let Err(e) = self.remove(id.to_string()).await {
            warn!(container = %id, error = %e, "could not remove the container of a failed start; reconcile retries");
        }
    }

    /// Looks for a host socket listening on a published session port: that is Docker's
    /// userland proxy. Only a positive finding counts (a hub in its own network namespace
    /// sees nothing). Warned once. Reading /proc/net/tcp (thousands of lines with many sessions) runs on the blocking pool,
    /// beside the start rather than in its way, never on a worker the front doors need.
    /// Looked for on the first 8 starts and every 100th after (reading /proc/net/tcp costs
    /// more as sessions add sockets; the engine's setting changes only when it restarts).
    fn check_userland_proxy(&self, port: u16) {
        let n = self.starts.fetch_add(1, Ordering::Relaxed);
        if self.userland_proxy.load(Ordering::Relaxed) || (n >= 8 && !n.is_multiple_of(100)) {
            return;
        }
        let found = self.userland_proxy.clone();
        tokio::task::spawn_blocking(move || {
            if host_port_listening(port) && !found.swap(true, Ordering::Relaxed) {
                warn!("{}", USERLAND_PROXY_WARNING);
            }
        });
    }
}

impl Runtime for DockerRuntime {
    fn reconfigure(&self, config: Config) {
        self.engine.reconfigure(config);
    }

    fn prepare(&self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move {
            let c = self.config();
            self.timed(self.engine.client().await?.ping()).await?;
            // The network first: one that lets sessions reach each other stops the hub even
            // while the image is still missing (that only waits for a build).
            let image = self.check().await;
            self.networks.first(&self.engine, &c).await?;
            image
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move {
            let c = self.config();
            match self.timed(self.engine.client().await?.inspect_image(&c.image)).await {
                Ok(image) => {
                    let labels = image.config.and_then(|config| config.labels).unwrap_or_default();
                    super::spec::speaks_control(&c, labels.get(super::spec::CONTROL_LABEL).map(String::as_str))
                }
                Err(RuntimeError::NotFound) | Err(RuntimeError::ImageMissing(_)) => {
                    Err(RuntimeError::ImageMissing(c.image))
                }
                Err(e) => Err(e),
            }
        })
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<Node>, RuntimeError>> {
        Box::pin(async { Ok(vec![Node::local()]) })
    }

    fn start(&self, spec: SessionSpec) -> BoxFuture<'_, Result<Started, StartError>> {
        Box::pin(async move {
            let c = self.config();
            let docker = self.engine.client().await?;
            // The front door's port is taken first: a port held by something else is then
            // known before any container exists.
            let door = match c.front_door {
                true => Some(Doors::reserve(c.bind_address, spec.port).await?),
                false => None,
            };
            let Created { id, create, start } = self.create(&docker, &c, &spec).await?;
            let ready_from = Instant::now();
            match self.wait_ready(&docker, &id, &c, &spec).await {
                Ok(control) => {
                    // Where a cold start's time goes (the scale bench reads these).
                    let us = |d: Duration| d.as_micros() as u64;
                    let (create_us, start_us, ready_us) = (us(create), us(start), us(ready_from.elapsed()));
                    info!(session = %spec.name, container = %id, create_us, start_us, ready_us, "container ready");
                    match door {
                        Some(door) => self.doors.serve(&id, door, control),
                        None => self.check_userland_proxy(spec.port),
                    }
                    Ok(Started { handle: id, control })
                }
                Err(e) => {
                    self.discard(&id).await;
                    Err(e)
                }
            }
        })
    }

    fn remove(&self, container_id: String) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move {
            // Nobody new gets in while the server stops; its last words still go out.
            self.doors.close(&container_id);
            let _permit = self.removals.acquire().await;
            if self.engine.silent() {
                return Err(RuntimeError::Unreachable("it did not answer a removal just before".into()));
            }
            // Removal may queue behind others in a busy engine: allow it longer than other calls.
            let limit = self.config().engine_timeout * 6;
            let docker = self.engine.client().await?;
            // SIGTERM first (troop-server then tells its performers), SIGKILL after the grace.
            let stop = StopContainerOptions { t: Some(STOP_GRACE.as_secs() as i32), ..Default::default() };
            match timed_within(limit, docker.stop_container(&container_id, Some(stop))).await {
                Ok(()) | Err(RuntimeError::NotFound) => {}
                Err(e @ RuntimeError::Unreachable(_)) => {
                    self.engine.heard(false);
                    return Err(e);
                }
                Err(e) => debug!(container = %container_id, error = %e, "stop failed; removing by force"),
            }
            let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
            let removed = match timed_within(limit, docker.remove_container(&container_id, Some(options))).await {
                Ok(()) | Err(RuntimeError::NotFound) => Ok(()),
                Err(RuntimeError::Failed(m)) if m.contains("already in progress") => Ok(()),
                Err(e) => Err(e),
            };
            self.engine.heard(!matches!(removed, Err(RuntimeError::Unreachable(_))));
            if removed.is_ok() {
                self.doors.cut(&container_id);
                self.networks.left(&self.engine, &container_id).await;
            }
            removed
        })
    }

    fn ends_at_once(&self) -> usize {
        PARALLEL_REMOVALS
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Existing>, RuntimeError>> {
        Box::pin(self.list_with(true))
    }

    fn list_brief(&self) -> BoxFuture<'_, Result<Vec<Existing>, RuntimeError>> {
        Box::pin(self.list_with(false))
    }

    fn events(&self) -> BoxFuture<'_, Result<EventStream, RuntimeError>> {
        Box::pin(async move {
            let docker = self.engine.client().await?;
            let c = self.config();
            let mut filters = hub_filter(&c.hub_id);
            filters.insert("type".into(), vec!["container".into()]);
            // A paused session is as good as dead to its performers: end it too.
            filters.insert("event".into(), vec!["die".into(), "pause".into(), "oom".into()]);
            let options = EventsOptions { filters: Some(filters), ..Default::default() };
            let stream = docker.events(Some(options)).map(|item| item.map(exited).map_err(classify)).boxed();
            Ok(stream)
        })
    }

    fn reopen(&self, found: &Existing) -> BoxFuture<'_, Result<(), RuntimeError>> {
        let (port, server) = (found.port, found.control);
        let container = found.handle.clone();
        // By the container's own label, not today's setting: one started with a published
        // port keeps it, one started behind a door needs one again.
        let behind_door = found.front_door;
        Box::pin(async move {
            let c = self.config();
            let (Some(port), Some(server), true) = (port, server, behind_door) else { return Ok(()) };
            let door = Doors::reserve(c.bind_address, port).await?;
            self.doors.serve(&container, door, server);
            Ok(())
        })
    }

    fn teardown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.doors.close_all();
            self.networks.teardown(&self.engine, &self.config()).await
        })
    }

    fn warnings(&self) -> Vec<String> {
        match self.userland_proxy.load(Ordering::Relaxed) {
            true => vec![USERLAND_PROXY_WARNING.to_string()],
            false => Vec::new(),
        }
    }
}

/// A container event as the hub sees it.
fn exited(ev: bollard::models::EventMessage) -> RuntimeEvent {
    let actor = ev.actor.unwrap_or_default();
    let attrs = actor.attributes.unwrap_or_default();
    let code = attrs.get("exitCode").map(|c| c.parse::<i64>().unwrap_or(-1));
    let reason = match ev.action.as_deref() {
        Some("pause") => "the session container was paused".to_string(),
        Some("oom") => "the session ran out of memory (hub.yaml limits.memory)".to_string(),
        _ => exit_reason(code),
    };
    let idle = ev.action.as_deref() != Some("pause") && attrs.get("exitCode").map(String::as_str) == Some("0");
    RuntimeEvent::Exited { handle: actor.id.unwrap_or_default(), reason, idle }
}
