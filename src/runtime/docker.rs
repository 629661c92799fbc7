//! Sessions as containers on the local Docker engine: one container per session with every
//! hardening setting the hub promises (no capabilities, no-new-privileges, read-only root,
//! non-root user, limits, capped logs), on one bridge network without inter-container
//! traffic, its port published on the host. Exits come from the engine's event stream.

use super::{
    classify, exit_reason, hub_filter, labelled_session, password_env, password_from_env, session_command,
    session_labels, timed_within, Engine, EventStream, Existing, Runtime, RuntimeError, RuntimeEvent, SessionSpec,
    Started,
};
use crate::config::Config;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, NetworkCreateRequest, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, InspectContainerOptions, InspectNetworkOptions, ListContainersOptions,
    ListNetworksOptions, RemoveContainerOptions,
};
use bollard::Docker;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use secrecy::SecretString;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use tracing::{debug, info, warn};

use super::{LABEL_HUB, LABEL_MANAGED};

/// Sessions as containers on the local Docker engine.
pub struct DockerRuntime {
    engine: Engine,
    /// The sessions' network by id (names can be ambiguous on older engines).
    network_id: tokio::sync::Mutex<Option<String>>,
}

impl DockerRuntime {
    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
    ) -> Result<T, RuntimeError> {
        self.engine.timed(f).await
    }

    /// A runtime for the engine named by DOCKER_HOST (default: the local socket). Nothing
    /// is contacted yet.
    pub fn new(config: Config) -> DockerRuntime {
        DockerRuntime { engine: Engine::new(config), network_id: tokio::sync::Mutex::new(None) }
    }

    async fn client(&self) -> Result<Docker, RuntimeError> {
        self.engine.client().await
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

    async fn inspect_existing(
        &self,
        container_id: &str,
        c: &Config,
    ) -> Option<(Option<SecretString>, Option<SocketAddr>)> {
        let docker = self.client().await.ok()?;
        let info = self.timed(docker.inspect_container(container_id, None::<InspectContainerOptions>)).await.ok()?;
        let md5 = info.config.as_ref().and_then(|cfg| cfg.env.as_deref()).and_then(password_from_env);
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
        self.engine.reconfigure(config);
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
            let cmd = session_command(&c);
            let labels = session_labels(&c, &spec);
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
                env: Some(vec![password_env(&spec.password_md5)]),
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
            Ok(Started { container_id: id, probe: Some(probe) })
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
                ListContainersOptions { all: true, filters: Some(hub_filter(&c.hub_id)), ..Default::default() };
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
                let (session_id, name, port, created) = labelled_session(&labels);
                out.push(Existing {
                    container_id,
                    running,
                    session_id,
                    name,
                    node: Some(crate::registry::LOCAL_NODE.to_string()),
                    port,
                    created,
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
            let mut filters = hub_filter(&c.hub_id);
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
                        let code = attrs.get("exitCode").map(|c| c.parse::<i64>().unwrap_or(-1));
                        let reason = exit_reason(code);
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
