//! Sessions as containers on the local Docker engine: one container per session, built from
//! the shared [`ServerSpec`] (no capabilities, no-new-privileges, read-only root, non-root
//! user, limits, capped logs), on one bridge network without inter-container traffic, its
//! port published on the host. A start returns once the server accepts on the container's
//! own address (Docker's proxy accepts on the published port before that). Exits come from
//! the engine's event stream. The local engine is one node, [`Node::local`].

use super::engine::{classify, hub_filter, timed_within, Engine};
use super::probe::{accepts, host_port_listening, USERLAND_PROXY_WARNING};
use super::shards::{shard_of, Shards};
use super::spec::{credentials_from_env, labelled, ServerSpec, STOP_GRACE};
use super::{
    exit_reason, Credentials, EventStream, Existing, Node, Runtime, RuntimeError, RuntimeEvent, SessionSpec,
    StartError, Started, LABEL_HUB, LABEL_MANAGED,
};
use crate::config::Config;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, InspectContainerOptions, InspectNetworkOptions, ListContainersOptions,
    ListNetworksOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Container removals in flight at most: ending hundreds of sessions at once (shutdown) must
/// not swamp the engine into timeouts.
const PARALLEL_REMOVALS: usize = 8;

/// Containers inspected at once when listing this hub's servers (adoption after a restart).
const INSPECTS_AT_ONCE: usize = 16;

/// Sessions as containers on the local Docker engine.
pub struct DockerRuntime {
    engine: Engine,
    /// The sessions' networks (by id: names can be ambiguous on older engines; `bridge` for
    /// Docker's default one) and how full each is.
    networks: tokio::sync::Mutex<Shards>,
    removals: tokio::sync::Semaphore,
    /// Set once a session's port is seen served by docker-proxy on this host.
    userland_proxy: std::sync::Arc<AtomicBool>,
    /// Starts so far, for looking for the proxy on some of them only.
    starts: std::sync::atomic::AtomicU64,
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

impl DockerRuntime {
    /// A runtime for the engine named by DOCKER_HOST (default: the local socket). Nothing
    /// is contacted yet.
    pub fn new(config: Config) -> DockerRuntime {
        DockerRuntime {
            networks: tokio::sync::Mutex::new(Shards::new(&config.network, config.sessions_per_network)),
            engine: Engine::new(config),
            removals: tokio::sync::Semaphore::new(PARALLEL_REMOVALS),
            userland_proxy: std::sync::Arc::new(AtomicBool::new(false)),
            starts: std::sync::atomic::AtomicU64::new(0),
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

    /// Ids of the networks named exactly `name` (Docker matches name filters by substring).
    async fn networks_named(&self, docker: &Docker, name: &str) -> Result<Vec<String>, RuntimeError> {
        let filters = HashMap::from([("name".to_string(), vec![name.to_string()])]);
        let found = self.timed(docker.list_networks(Some(ListNetworksOptions { filters: Some(filters) }))).await?;
        Ok(found.into_iter().filter(|n| n.name.as_deref() == Some(name)).filter_map(|n| n.id).collect())
    }

    /// The first network's reference, finding or creating it (the operator's network, or
    /// Docker's default bridge, is used as it is).
    async fn ensure_network(&self, c: &Config) -> Result<String, RuntimeError> {
        let mut nets = self.networks.lock().await;
        nets.reconfigure(&c.network, c.sessions_per_network);
        self.shard_network(&mut nets, c, 0).await
    }

    /// Shard `k`'s network reference, finding or creating it.
    async fn shard_network(&self, nets: &mut Shards, c: &Config, k: usize) -> Result<String, RuntimeError> {
        if let Some(id) = nets.id(k) {
            return Ok(id.to_string());
        }
        let name = nets.name(k);
        let docker = self.engine.client().await?;
        let found = self.networks_named(&docker, &name).await?;
        if !found.is_empty() {
            let id = self.keep_one_network(&docker, &name, c, found).await?;
            let net = self.timed(docker.inspect_network(&id, None::<InspectNetworkOptions>)).await?;
            let reference = sessions_kept_apart(&net, &name, id)?;
            nets.set_id(k, reference.clone());
            return Ok(reference);
        }
        if name == "bridge" {
            // Docker refuses to make a network of that name; an engine run with `"bridge":
            // "none"` has no default bridge.
            return Err(RuntimeError::Misconfigured(
                "`network: bridge` names Docker's default bridge, which this engine does not have: leave `network` unset so the hub makes its own".into(),
            ));
        }
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            options: Some(HashMap::from([("com.docker.network.bridge.enable_icc".into(), "false".into())])),
            labels: Some(HashMap::from([(LABEL_MANAGED.into(), "true".into()), (LABEL_HUB.into(), c.hub_id.clone())])),
            ..Default::default()
        };
        let id = self.timed(docker.create_network(request)).await?.id;
        info!(network = %name, "created a sessions' network (no traffic between sessions)");
        nets.set_id(k, id.clone());
        Ok(id)
    }

    /// A network for one more container: the first with room (a Linux bridge takes 1,023
    /// ports; `sessions_per_network` each), a new one when all are full. Docker's default
    /// bridge cannot be split: it holds `sessions_per_network` and no more.
    async fn place(&self, c: &Config) -> Result<(usize, String), RuntimeError> {
        let mut nets = self.networks.lock().await;
        nets.reconfigure(&c.network, c.sessions_per_network);
        let k = nets.reserve();
        if k > 0 && c.network == "bridge" {
            nets.unreserve(k);
            return Err(RuntimeError::Misconfigured(format!(
                "Docker's default bridge holds {} sessions (sessions_per_network) and cannot be split: leave `network` unset so the hub adds networks as it needs them",
                c.sessions_per_network
            )));
        }
        match self.shard_network(&mut nets, c, k).await {
            Ok(id) => Ok((k, id)),
            Err(e) => {
                nets.unreserve(k);
                Err(e)
            }
        }
    }

    /// Container `id` is gone: an extra network it leaves empty is removed.
    async fn left(&self, container: &str) {
        let mut nets = self.networks.lock().await;
        let Some(k) = nets.left(container) else { return };
        let (Some(id), name) = (nets.id(k).map(str::to_string), nets.name(k)) else { return };
        let Ok(docker) = self.engine.client().await else { return };
        match self.timed(docker.remove_network(&id)).await {
            Ok(()) | Err(RuntimeError::NotFound) => {
                nets.forget_id(k);
                info!(network = %name, "removed a sessions' network that emptied");
            }
            // Kept and filled again later; teardown tries again.
            Err(e) => debug!(network = %name, error = %e, "could not remove an emptied sessions' network"),
        }
    }

    /// One network out of several with the sessions' name. A hub killed while it created the
    /// network and restarted at once can leave two (Docker does not refuse a second one with
    /// the same name), and Docker then refuses to start a container on either ("ambiguous").
    /// The one with the most containers stays; the other empty ones of this hub are removed.
    async fn keep_one_network(
        &self,
        docker: &Docker,
        name: &str,
        c: &Config,
        ids: Vec<String>,
    ) -> Result<String, RuntimeError> {
        if ids.len() == 1 {
            return Ok(ids.into_iter().next().unwrap_or_default());
        }
        let mut nets = Vec::new();
        for id in ids {
            let (containers, ours) = self.network_use(docker, &id, c).await?;
            nets.push((containers, ours, id));
        }
        // Most containers first; among equals, the order Docker listed them in.
        nets.sort_by_key(|(containers, _, _)| std::cmp::Reverse(*containers));
        let keep = nets[0].2.clone();
        let mut left = 1;
        for (containers, ours, id) in nets.into_iter().skip(1) {
            let removed = ours && containers == 0 && self.timed(docker.remove_network(&id)).await.is_ok();
            if removed {
                warn!(network = %name, id = %crate::hub::short(&id), "removed a second network of the same name (left by a hub killed while creating it)");
            } else {
                left += 1;
            }
        }
        if left > 1 {
            return Err(RuntimeError::Misconfigured(format!(
                "{left} networks are named {name}: remove the ones no session uses (docker network ls --filter name={name})"
            )));
        }
        Ok(keep)
    }

    /// How many containers network `id` holds, and whether this hub made it (its label).
    async fn network_use(&self, docker: &Docker, id: &str, c: &Config) -> Result<(usize, bool), RuntimeError> {
        let net = self.timed(docker.inspect_network(id, None::<InspectNetworkOptions>)).await?;
        let containers = net.containers.as_ref().map_or(0, |m| m.len());
        let ours = net.labels.as_ref().and_then(|l| l.get(LABEL_HUB)) == Some(&c.hub_id);
        Ok((containers, ours))
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
    async fn create_once(&self, docker: &Docker, c: &Config, spec: &SessionSpec) -> Result<String, StartError> {
        let (k, network) = self.place(c).await?;
        let body = ServerSpec::new(c, spec).container(network, c.bind_address, spec.port);
        let options = CreateContainerOptions { name: Some(format!("troop-{}", spec.id)), ..Default::default() };
        let created = self.timed(docker.create_container(Some(options), body)).await;
        let id = match created {
            Ok(r) => {
                self.networks.lock().await.joined(&r.id, k);
                r.id
            }
            Err(e) => {
                self.networks.lock().await.unreserve(k);
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
        if let Err(e) = self.timed(docker.start_container(&id, None)).await {
            self.discard(&id).await;
            return Err(match e {
                RuntimeError::PortTaken(_) => StartError::PortTaken(spec.port),
                other => other.into(),
            });
        }
        Ok(id)
    }

    /// [`Self::create_once`], again once if a second network of the same name appeared
    /// meanwhile (see [`Self::keep_one_network`]).
    async fn create(&self, docker: &Docker, c: &Config, spec: &SessionSpec) -> Result<String, StartError> {
        match self.create_once(docker, c, spec).await {
            Err(StartError::Engine(RuntimeError::Failed(e))) if e.contains("is ambiguous") => {
                warn!(network = %c.network, "two networks have the sessions' name: keeping one and starting again");
                self.networks.lock().await.forget_ids();
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
                self.networks.lock().await.found(&handle, network);
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

/// Docker's default network's option that names it so (its name, `bridge`, can be taken).
const DEFAULT_BRIDGE: &str = "com.docker.network.bridge.default_bridge";
/// A bridge network's option that lets its containers reach each other (on unless "false").
const ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";

/// How a container joins network `net`, found by `name`, as `id`: sessions must not reach each
/// other on it. The hub makes its own network so; one it finds (the operator's, or Docker's
/// default bridge named in hub.yaml) must be a bridge with inter-container traffic off, or
/// the hub says why it will not use it. Docker's default bridge is joined by its name, as
/// `docker run --network bridge` does (joined by id, Docker would take it for a network of
/// the user's and give its containers the embedded DNS resolver).
fn sessions_kept_apart(net: &bollard::models::NetworkInspect, name: &str, id: String) -> Result<String, RuntimeError> {
    let option = |key: &str| net.options.as_ref().and_then(|o| o.get(key)).map(String::as_str);
    let default_bridge = option(DEFAULT_BRIDGE) == Some("true");
    let bridge = net.driver.as_deref() == Some("bridge");
    // Docker reads the option as a boolean (Go's ParseBool).
    let icc_off = matches!(option(ENABLE_ICC), Some("0" | "f" | "F" | "false" | "FALSE" | "False"));
    if bridge && icc_off {
        return Ok(if default_bridge { "bridge".into() } else { id });
    }
    let fix = if default_bridge {
        "set \"icc\": false in the engine's daemon.json and restart it, or leave `network` unset so the hub makes its own".to_string()
    } else if bridge {
        format!("remove it and the hub makes its own, or create it with -o {ENABLE_ICC}=false")
    } else {
        "name a bridge network, or leave `network` unset so the hub makes its own".to_string()
    };
    Err(RuntimeError::Misconfigured(format!(
        "the sessions' network `{name}` lets sessions reach each other ({} driver, inter-container traffic on): {fix}",
        net.driver.as_deref().unwrap_or("unknown")
    )))
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
            self.ensure_network(&c).await?;
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
            let id = self.create(&docker, &c, &spec).await?;
            match self.wait_ready(&docker, &id, &c, &spec).await {
                Ok(control) => {
                    self.check_userland_proxy(spec.port);
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
            let _permit = self.removals.acquire().await;
            // Removal may queue behind others in a busy engine: allow it longer than other calls.
            let limit = self.config().engine_timeout * 6;
            let docker = self.engine.client().await?;
            // SIGTERM first (troop-server then tells its performers), SIGKILL after the grace.
            let stop = StopContainerOptions { t: Some(STOP_GRACE.as_secs() as i32), ..Default::default() };
            match timed_within(limit, docker.stop_container(&container_id, Some(stop))).await {
                Ok(()) | Err(RuntimeError::NotFound) => {}
                Err(e) => debug!(container = %container_id, error = %e, "stop failed; removing by force"),
            }
            let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
            let removed = match timed_within(limit, docker.remove_container(&container_id, Some(options))).await {
                Ok(()) | Err(RuntimeError::NotFound) => Ok(()),
                Err(RuntimeError::Failed(m)) if m.contains("already in progress") => Ok(()),
                Err(e) => Err(e),
            };
            if removed.is_ok() {
                self.left(&container_id).await;
            }
            removed
        })
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

    fn teardown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let c = self.config();
            let Ok(docker) = self.engine.client().await else { return };
            // The first network by its name (it may be the operator's), the others by this
            // hub's label.
            let Ok(mut ids) = self.networks_named(&docker, &c.network).await else { return };
            let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_HUB}={}", c.hub_id)])]);
            let listed = self.timed(docker.list_networks(Some(ListNetworksOptions { filters: Some(filters) }))).await;
            for n in listed.unwrap_or_default() {
                let shard = n.name.as_deref().and_then(|name| shard_of(&c.network, name));
                if let (Some(1..), Some(id)) = (shard, n.id) {
                    ids.push(id);
                }
            }
            for id in ids {
                let Ok((containers, ours)) = self.network_use(&docker, &id, &c).await else { continue };
                if !(ours && containers == 0) {
                    continue;
                }
                match self.timed(docker.remove_network(&id)).await {
                    Ok(()) => info!(network = %crate::hub::short(&id), "removed a sessions' network"),
                    Err(e) => {
                        warn!(network = %crate::hub::short(&id), error = %e, "could not remove a sessions' network")
                    }
                }
            }
            *self.networks.lock().await = Shards::new(&c.network, c.sessions_per_network);
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

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::NetworkInspect;

    fn network(driver: &str, options: &[(&str, &str)]) -> NetworkInspect {
        NetworkInspect {
            driver: Some(driver.into()),
            options: Some(options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        }
    }

    fn refusal(net: &NetworkInspect, name: &str) -> String {
        match sessions_kept_apart(net, name, "abc123".into()) {
            Err(RuntimeError::Misconfigured(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_bridge_with_inter_container_traffic_off_is_joined_by_id_and_the_default_one_by_name() {
        let own = network("bridge", &[(ENABLE_ICC, "false")]);
        assert_eq!(sessions_kept_apart(&own, "troop-hub-sessions", "abc123".into()).ok().as_deref(), Some("abc123"));
        let default = network("bridge", &[(DEFAULT_BRIDGE, "true"), (ENABLE_ICC, "false")]);
        assert_eq!(sessions_kept_apart(&default, "bridge", "def456".into()).ok().as_deref(), Some("bridge"));
    }

    #[test]
    fn a_network_that_lets_sessions_reach_each_other_is_refused_with_its_fix() {
        let default = network("bridge", &[(DEFAULT_BRIDGE, "true"), (ENABLE_ICC, "true")]);
        assert!(refusal(&default, "bridge").contains("set \"icc\": false in the engine's daemon.json"));
        // A bridge made without the option: Docker's default is traffic on.
        let operators = network("bridge", &[]);
        let why = refusal(&operators, "shared");
        assert!(why.starts_with("the sessions' network `shared` lets sessions reach each other"), "{why}");
        assert!(why.contains("-o com.docker.network.bridge.enable_icc=false"), "{why}");
        let zero = network("bridge", &[(ENABLE_ICC, "0")]);
        assert_eq!(sessions_kept_apart(&zero, "shared", "abc123".into()).ok().as_deref(), Some("abc123"));
        let overlay = network("overlay", &[(ENABLE_ICC, "false")]);
        assert!(refusal(&overlay, "multi").contains("name a bridge network"));
    }
}
