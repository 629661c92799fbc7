//! Where sessions run. [`Runtime`] is the one seam between the hub and a container engine:
//! start a session's server, remove it, list what is there, report exits. [`DockerRuntime`]
//! implements it on the local Docker engine through bollard, with API version negotiation
//! (engines here may be older than bollard's default) and every hardening setting the hub
//! promises: no capabilities, no-new-privileges, read-only root, non-root user, limits, its
//! own bridge network without inter-container traffic, capped logs.

use crate::config::Config;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, NetworkCreateRequest, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, InspectContainerOptions, InspectNetworkOptions, ListContainersOptions,
    ListNetworksOptions, RemoveContainerOptions,
};
use bollard::Docker;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{debug, info, warn};

pub const LABEL_MANAGED: &str = "io.troop-hub.managed";
pub const LABEL_HUB: &str = "io.troop-hub.hub";
pub const LABEL_SESSION: &str = "io.troop-hub.session";
pub const LABEL_SESSION_ID: &str = "io.troop-hub.session-id";
pub const LABEL_PORT: &str = "io.troop-hub.port";
pub const LABEL_CREATED: &str = "io.troop-hub.created";

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
    #[error("{0}")]
    Failed(String),
}

/// Everything needed to start one session.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub id: String,
    pub name: String,
    pub port: u16,
    pub password_md5: String,
}

/// A started session server.
#[derive(Debug, Clone)]
pub struct Started {
    pub container_id: String,
    /// Where the hub can reach the server directly (not through the published port).
    pub probe: SocketAddr,
}

/// A session container found on the engine.
#[derive(Debug, Clone)]
pub struct Existing {
    pub container_id: String,
    pub running: bool,
    pub session_id: Option<String>,
    pub name: Option<String>,
    pub port: Option<u16>,
    pub created: Option<SystemTime>,
    pub password_md5: Option<String>,
    pub probe: Option<SocketAddr>,
}

/// Something that happened to a session container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeEvent {
    /// The container stopped (exit, kill, OOM); `idle` when its server exited by itself
    /// with status 0 (the idle-exit timer).
    Exited { container_id: String, reason: String, idle: bool },
}

/// Container events from the engine.
pub type EventStream = BoxStream<'static, Result<RuntimeEvent, RuntimeError>>;

/// The container engine behind the hub.
pub trait Runtime: Send + Sync + 'static {
    /// Checks the engine and the image, creates the sessions' network if needed.
    fn prepare(&self) -> BoxFuture<'_, Result<(), RuntimeError>>;
    /// Is the engine reachable and the image present? (Used by health checks.)
    fn check(&self) -> BoxFuture<'_, Result<(), RuntimeError>>;
    fn start(&self, spec: SessionSpec) -> BoxFuture<'_, Result<Started, RuntimeError>>;
    /// Stops and removes a session container; `NotFound` counts as done.
    fn remove(&self, container_id: String) -> BoxFuture<'_, Result<(), RuntimeError>>;
    /// This hub's session containers.
    fn list(&self) -> BoxFuture<'_, Result<Vec<Existing>, RuntimeError>>;
    /// Container exits, as they happen. The stream ends when the engine connection breaks.
    fn events(&self) -> BoxFuture<'_, Result<EventStream, RuntimeError>>;
    /// Removes what `prepare` created, once no session is left.
    fn teardown(&self) -> BoxFuture<'_, ()>;
    /// A reloaded configuration, for sessions started from now on.
    fn reconfigure(&self, config: Config);
}

/// Sessions as containers on the local Docker engine.
pub struct DockerRuntime {
    /// Connected and version-negotiated on first successful use, so a hub started while
    /// the engine is down comes up anyway and recovers when the engine does.
    docker: tokio::sync::Mutex<Option<Docker>>,
    config: std::sync::RwLock<Config>,
    /// The sessions' network by id (names can be ambiguous on older engines).
    network_id: tokio::sync::Mutex<Option<String>>,
}

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

async fn timed_within<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, RuntimeError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(classify),
        Err(_) => Err(RuntimeError::Unreachable("the engine did not answer in time".into())),
    }
}

impl DockerRuntime {
    /// An engine call bounded by `engine_timeout`: a stalled engine counts as unreachable.
    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
    ) -> Result<T, RuntimeError> {
        timed_within(self.config().engine_timeout, f).await
    }

    /// A runtime for the engine named by DOCKER_HOST (default: the local socket). Nothing
    /// is contacted yet.
    pub fn new(config: Config) -> DockerRuntime {
        DockerRuntime {
            docker: tokio::sync::Mutex::new(None),
            config: std::sync::RwLock::new(config),
            network_id: tokio::sync::Mutex::new(None),
        }
    }

    /// The engine client, connecting and negotiating the API version on first use.
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

    fn config(&self) -> Config {
        self.config.read().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    fn hub_filter(hub_id: &str) -> HashMap<String, Vec<String>> {
        HashMap::from([("label".to_string(), vec![format!("{LABEL_HUB}={hub_id}"), format!("{LABEL_MANAGED}=true")])])
    }

    /// Ids of the networks named exactly `name` (Docker matches name filters by substring).
    async fn networks_named(&self, docker: &Docker, name: &str) -> Result<Vec<String>, RuntimeError> {
        let filters = HashMap::from([("name".to_string(), vec![name.to_string()])]);
        let found = self.timed(docker.list_networks(Some(ListNetworksOptions { filters: Some(filters) }))).await?;
        Ok(found.into_iter().filter(|n| n.name.as_deref() == Some(name)).filter_map(|n| n.id).collect())
    }

    /// The sessions' network id, creating the network if it does not exist.
    async fn ensure_network(&self, c: &Config) -> Result<String, RuntimeError> {
        let mut cached = self.network_id.lock().await;
        if let Some(id) = cached.as_ref() {
            return Ok(id.clone());
        }
        let docker = self.client().await?;
        if let Some(id) = self.networks_named(&docker, &c.network).await?.into_iter().next() {
            *cached = Some(id.clone());
            return Ok(id);
        }
        let request = NetworkCreateRequest {
            name: c.network.clone(),
            driver: Some("bridge".into()),
            options: Some(HashMap::from([("com.docker.network.bridge.enable_icc".into(), "false".into())])),
            labels: Some(HashMap::from([(LABEL_MANAGED.into(), "true".into()), (LABEL_HUB.into(), c.hub_id.clone())])),
            ..Default::default()
        };
        let id = self.timed(docker.create_network(request)).await?.id;
        info!(network = %c.network, "created the sessions' network (no traffic between sessions)");
        *cached = Some(id.clone());
        Ok(id)
    }

    async fn inspect_existing(&self, container_id: &str, c: &Config) -> Option<(Option<String>, Option<SocketAddr>)> {
        let docker = self.client().await.ok()?;
        let info = self.timed(docker.inspect_container(container_id, None::<InspectContainerOptions>)).await.ok()?;
        let md5 = info
            .config
            .as_ref()
            .and_then(|cfg| cfg.env.as_ref())
            .and_then(|env| env.iter().find_map(|e| e.strip_prefix("TROOP_PASSWORD_MD5=").map(str::to_string)));
        let ip = info
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .and_then(|nets| nets.get(&c.network).or_else(|| nets.values().next()))
            .and_then(|e| e.ip_address.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        Some((md5, ip.map(|ip| SocketAddr::new(ip, c.session_port))))
    }
}

impl Runtime for DockerRuntime {
    fn reconfigure(&self, config: Config) {
        if let Ok(mut c) = self.config.write() {
            *c = config;
        }
    }

    fn prepare(&self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move {
            let c = self.config();
            self.timed(self.client().await?.ping()).await?;
            self.check().await?;
            self.ensure_network(&c).await.map(drop)
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move {
            let c = self.config();
            match self.timed(self.client().await?.inspect_image(&c.image)).await {
                Ok(_) => Ok(()),
                Err(RuntimeError::NotFound) | Err(RuntimeError::ImageMissing(_)) => {
                    Err(RuntimeError::ImageMissing(c.image))
                }
                Err(e) => Err(e),
            }
        })
    }

    fn start(&self, spec: SessionSpec) -> BoxFuture<'_, Result<Started, RuntimeError>> {
        Box::pin(async move {
            let c = self.config();
            let network = self.ensure_network(&c).await?;
            let container_port = format!("{}/tcp", c.session_port);
            let mut cmd = vec!["--port".to_string(), c.session_port.to_string()];
            // Fit the server's own bounds to the container's memory limit (document, history,
            // per-client queues), so a busy session is refused input rather than OOM-killed.
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
            let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let labels = HashMap::from([
                (LABEL_MANAGED.to_string(), "true".to_string()),
                (LABEL_HUB.to_string(), c.hub_id.clone()),
                (LABEL_SESSION.to_string(), spec.name.clone()),
                (LABEL_SESSION_ID.to_string(), spec.id.clone()),
                (LABEL_PORT.to_string(), spec.port.to_string()),
                (LABEL_CREATED.to_string(), created.to_string()),
            ]);
            let host_config = HostConfig {
                port_bindings: Some(HashMap::from([(
                    container_port.clone(),
                    Some(vec![PortBinding {
                        host_ip: Some(c.bind_address.to_string()),
                        host_port: Some(spec.port.to_string()),
                    }]),
                )])),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges=true".into()]),
                readonly_rootfs: Some(true),
                memory: Some(c.limits.memory_bytes),
                memory_swap: Some(c.limits.memory_bytes),
                nano_cpus: Some(c.limits.nano_cpus),
                pids_limit: Some(c.limits.pids),
                network_mode: Some(network),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: Some(HashMap::from([("max-size".into(), "1m".into()), ("max-file".into(), "2".into())])),
                }),
                ..Default::default()
            };
            let body = ContainerCreateBody {
                image: Some(c.image.clone()),
                cmd: Some(cmd),
                env: Some(vec![format!("TROOP_PASSWORD_MD5={}", spec.password_md5)]),
                user: Some(c.user.clone()),
                labels: Some(labels),
                exposed_ports: Some(vec![container_port]),
                host_config: Some(host_config),
                ..Default::default()
            };
            let options = CreateContainerOptions { name: Some(format!("troop-{}", spec.id)), ..Default::default() };
            let docker = self.client().await?;
            let created = match self.timed(docker.create_container(Some(options), body)).await {
                Ok(r) => r,
                Err(RuntimeError::ImageMissing(_)) | Err(RuntimeError::NotFound) => {
                    return Err(RuntimeError::ImageMissing(c.image))
                }
                Err(e) => return Err(e),
            };
            let id = created.id;
            debug!(session = %spec.name, container = %id, "container created");
            if let Err(e) = self.timed(docker.start_container(&id, None)).await {
                let _ = self.remove(id.clone()).await;
                return Err(match e {
                    RuntimeError::PortTaken(_) => RuntimeError::PortTaken(spec.port),
                    other => other,
                });
            }
            let probe = match self.inspect_existing(&id, &c).await {
                Some((_, Some(probe))) => probe,
                _ => {
                    let _ = self.remove(id.clone()).await;
                    return Err(RuntimeError::Failed("the container has no address on the sessions' network".into()));
                }
            };
            Ok(Started { container_id: id, probe })
        })
    }

    fn remove(&self, container_id: String) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move {
            let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
            // Removal may queue behind others in a busy engine: allow it longer than other calls.
            let limit = self.config().engine_timeout * 6;
            let docker = self.client().await?;
            match timed_within(limit, docker.remove_container(&container_id, Some(options))).await {
                Ok(()) | Err(RuntimeError::NotFound) => Ok(()),
                Err(RuntimeError::Failed(m)) if m.contains("already in progress") => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Existing>, RuntimeError>> {
        Box::pin(async move {
            let c = self.config();
            let options =
                ListContainersOptions { all: true, filters: Some(Self::hub_filter(&c.hub_id)), ..Default::default() };
            let found = self.timed(self.client().await?.list_containers(Some(options))).await?;
            let mut out = Vec::new();
            for summary in found {
                let Some(container_id) = summary.id.clone() else {
                    continue;
                };
                let labels = summary.labels.clone().unwrap_or_default();
                let running = summary.state.map(|s| s.to_string() == "running").unwrap_or(false);
                let (password_md5, probe) = if running {
                    self.inspect_existing(&container_id, &c).await.unwrap_or((None, None))
                } else {
                    (None, None)
                };
                out.push(Existing {
                    container_id,
                    running,
                    session_id: labels.get(LABEL_SESSION_ID).cloned(),
                    name: labels.get(LABEL_SESSION).cloned(),
                    port: labels.get(LABEL_PORT).and_then(|p| p.parse().ok()),
                    created: labels
                        .get(LABEL_CREATED)
                        .and_then(|t| t.parse::<u64>().ok())
                        .map(|t| UNIX_EPOCH + Duration::from_secs(t)),
                    password_md5,
                    probe,
                });
            }
            Ok(out)
        })
    }

    fn events(&self) -> BoxFuture<'_, Result<EventStream, RuntimeError>> {
        Box::pin(async move {
            let docker = self.client().await?;
            let c = self.config();
            let mut filters = Self::hub_filter(&c.hub_id);
            filters.insert("type".into(), vec!["container".into()]);
            // A paused session is as good as dead to its performers: end it too.
            filters.insert("event".into(), vec!["die".into(), "pause".into(), "oom".into()]);
            let options = EventsOptions { filters: Some(filters), ..Default::default() };
            let stream = docker
                .events(Some(options))
                .map(|item| match item {
                    Ok(ev) => {
                        let actor = ev.actor.unwrap_or_default();
                        let attrs = actor.attributes.unwrap_or_default();
                        let reason = match attrs.get("exitCode").map(String::as_str) {
                            Some("0") => "nobody was connected for the idle time".to_string(),
                            Some("137") => "the session container was killed".to_string(),
                            Some(code) => format!("the session server exited with code {code}"),
                            None => "the session container stopped".to_string(),
                        };
                        let paused = ev.action.as_deref() == Some("pause");
                        let reason = match ev.action.as_deref() {
                            Some("pause") => "the session container was paused".to_string(),
                            Some("oom") => "the session ran out of memory (hub.yaml limits.memory)".to_string(),
                            _ => reason,
                        };
                        let idle = !paused && attrs.get("exitCode").map(String::as_str) == Some("0");
                        Ok(RuntimeEvent::Exited { container_id: actor.id.unwrap_or_default(), reason, idle })
                    }
                    Err(e) => Err(classify(e)),
                })
                .boxed();
            Ok(stream)
        })
    }

    fn teardown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let c = self.config();
            let Ok(docker) = self.client().await else {
                return;
            };
            let Ok(ids) = self.networks_named(&docker, &c.network).await else {
                return;
            };
            for id in ids {
                let Ok(net) = self.timed(docker.inspect_network(&id, None::<InspectNetworkOptions>)).await else {
                    continue;
                };
                let ours = net.labels.as_ref().and_then(|l| l.get(LABEL_HUB)) == Some(&c.hub_id);
                let empty = net.containers.as_ref().is_none_or(|m| m.is_empty());
                if !(ours && empty) {
                    continue;
                }
                match self.timed(docker.remove_network(&id)).await {
                    Ok(()) => {
                        *self.network_id.lock().await = None;
                        info!(network = %c.network, "removed the sessions' network");
                    }
                    Err(e) => {
                        warn!(network = %c.network, error = %e, "could not remove the sessions' network")
                    }
                }
            }
        })
    }
}
