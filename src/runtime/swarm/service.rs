//! A session's Swarm service and its own overlay network: what the service looks like (the
//! shared [`ServerSpec`] plus placement, restart `none`, a host-mode port, no virtual IP),
//! creating the network, removing a service (waiting until its task, which holds the host
//! port, is gone; one removed from outside is known by its tasks), and sweeping networks a
//! killed hub left without a service.

use super::super::engine::{hub_filter, timed_within};
use super::super::spec::{labelled, ServerSpec};
use super::super::{RuntimeError, SessionSpec, LABEL_CREATED, LABEL_HUB, LABEL_MANAGED, LABEL_SESSION_ID};
use super::{filters, GoneServices, SwarmRuntime};
use crate::config::Config;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum, EndpointSpec,
    EndpointSpecModeEnum, NetworkAttachmentConfig, NetworkCreateRequest, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, TaskSpecPlacement, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};
use bollard::query_parameters::{ListNetworksOptions, ListTasksOptions};
use bollard::Docker;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};
use tracing::{info, warn};

/// How long one look at the tasks answers for services already removed ([`SwarmRuntime::left_by`]).
const GONE_LOOK_LASTS: Duration = Duration::from_secs(2);

/// The per-session network's name.
pub(super) fn network_name(c: &Config, session_id: &str) -> String {
    format!("{}-{}", c.network, session_id.get(..12).unwrap_or(session_id))
}

impl SwarmRuntime {
    /// Creates the session's own overlay network (nothing else is ever attached to it).
    pub(super) async fn create_network(
        &self,
        docker: &Docker,
        c: &Config,
        spec: &SessionSpec,
    ) -> Result<String, RuntimeError> {
        let created = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let request = NetworkCreateRequest {
            name: network_name(c, &spec.id),
            driver: Some("overlay".into()),
            attachable: Some(false),
            labels: Some(HashMap::from([
                (LABEL_MANAGED.into(), "true".into()),
                (LABEL_HUB.into(), c.hub_id.clone()),
                (LABEL_SESSION_ID.into(), spec.id.clone()),
                (LABEL_CREATED.into(), created.to_string()),
            ])),
            ..Default::default()
        };
        Ok(self.timed(docker.create_network(request)).await?.id)
    }

    /// Removes a network, trying `attempts` times while the engine still has the task's
    /// endpoint on it (each try within `limit`; an engine that does not answer is not tried
    /// again).
    pub(super) async fn remove_network(&self, docker: &Docker, id: &str, attempts: u32, limit: Duration) {
        for attempt in 1..=attempts {
            match timed_within(limit, docker.remove_network(id)).await {
                Ok(()) | Err(RuntimeError::NotFound) => return,
                Err(e) if attempt == attempts || matches!(e, RuntimeError::Unreachable(_)) => {
                    warn!(network = %id, error = %e, "could not remove a session network; the next reconcile retries");
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    pub(super) fn service_spec(&self, c: &Config, spec: &SessionSpec, image: String, network: String) -> ServiceSpec {
        let server = ServerSpec::new(c, spec);
        let mut task = server.task(image);
        task.restart_policy = Some(TaskSpecRestartPolicy {
            condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
            ..Default::default()
        });
        task.placement = Some(TaskSpecPlacement {
            constraints: Some(vec![format!("node.id=={}", spec.node)]),
            ..Default::default()
        });
        task.networks = Some(vec![NetworkAttachmentConfig { target: Some(network), ..Default::default() }]);
        ServiceSpec {
            name: Some(format!("troop-{}", spec.id)),
            labels: Some(server.labels),
            task_template: Some(task),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..Default::default()
            }),
            endpoint_spec: Some(EndpointSpec {
                // No virtual IP: nothing reaches a session through the swarm's load balancer.
                mode: Some(EndpointSpecModeEnum::DNSRR),
                ports: Some(vec![EndpointPortConfig {
                    protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                    target_port: Some(i64::from(c.session_port)),
                    published_port: Some(i64::from(spec.port)),
                    publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        }
    }

    /// Removes a service and waits until its task (and so its host port) is gone. Every call
    /// here may take up to 6 x `engine_timeout`: a manager removing hundreds of services at a
    /// SIGTERM answers slowly, and a look that gave up after `engine_timeout` left the service
    /// running (39 of 1,000 on two nodes).
    pub(super) async fn remove_service(&self, docker: &Docker, id: &str) -> Result<(), RuntimeError> {
        let limit = self.config().engine_timeout * 6;
        let (networks, session): (Vec<String>, Option<String>) =
            match timed_within(limit, docker.inspect_service(id, None)).await {
                Ok(s) => {
                    let spec = s.spec.unwrap_or_default();
                    let session = spec.labels.as_ref().and_then(|l| l.get(LABEL_SESSION_ID)).cloned();
                    let nets = spec.task_template.and_then(|t| t.networks).unwrap_or_default();
                    (nets.into_iter().filter_map(|n| n.target).collect(), session)
                }
                // Removed from outside: its tasks, while Swarm stops them, still name both.
                Err(RuntimeError::NotFound) => self.left_by(docker, id, limit).await?,
                Err(e) => return Err(e),
            };
        match timed_within(limit, docker.delete_service(id)).await {
            Ok(()) | Err(RuntimeError::NotFound) => {}
            Err(e) => return Err(e),
        }
        // The task (and its container, which holds the host port) goes after the service: wait
        // for it by the session's label (the service id no longer filters once it is gone).
        let deadline = Instant::now() + limit;
        while let Some(session) = &session {
            let f = filters(&[("label", format!("{LABEL_SESSION_ID}={session}"))]);
            let look = docker.list_tasks(Some(ListTasksOptions { filters: Some(f) }));
            let tasks = match timed_within(limit, look).await {
                Ok(t) => t,
                Err(RuntimeError::NotFound) => Vec::new(),
                Err(e) => return Err(e),
            };
            // A task on a node that is down goes only when the node comes back (its agent then
            // removes the container): nothing to wait for here.
            let down = self.down.lock().map(|d| d.clone()).unwrap_or_default();
            if tasks.iter().all(|t| t.node_id.as_ref().is_some_and(|n| down.contains(n))) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Failed(format!("the service's task outlived it by {limit:?}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for n in networks {
            self.remove_network(docker, &n, 20, limit).await;
        }
        Ok(())
    }

    /// The networks and the session of a service already removed (from outside the hub), from
    /// its tasks as long as Swarm has them; none once they are gone too (the sweep then removes
    /// the network). One look serves every such removal for [`GONE_LOOK_LASTS`]: removing all
    /// of 1,000 services from outside would otherwise list all 1,000 tasks 1,000 times, 64 at once.
    pub(super) async fn left_by(
        &self,
        docker: &Docker,
        service: &str,
        limit: Duration,
    ) -> Result<(Vec<String>, Option<String>), RuntimeError> {
        let mut last = self.gone_services.lock().await;
        if let Some((_, found)) = last.as_ref().filter(|(at, _)| at.elapsed() < GONE_LOOK_LASTS) {
            return Ok(found.get(service).cloned().unwrap_or_default());
        }
        let opts = ListTasksOptions { filters: Some(hub_filter(&self.config().hub_id)) };
        let tasks = match timed_within(limit, docker.list_tasks(Some(opts))).await {
            Ok(t) => t,
            Err(RuntimeError::NotFound) => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut found: GoneServices = HashMap::new();
        for t in tasks {
            let Some(id) = t.service_id else { continue };
            let spec = t.spec.unwrap_or_default();
            let labels = spec.container_spec.and_then(|c| c.labels).unwrap_or_default();
            let (networks, session) = found.entry(id).or_default();
            if session.is_none() {
                *session = labels.get(LABEL_SESSION_ID).cloned();
            }
            for n in spec.networks.unwrap_or_default().into_iter().filter_map(|n| n.target) {
                if !networks.contains(&n) {
                    networks.push(n);
                }
            }
        }
        let mine = found.get(service).cloned().unwrap_or_default();
        *last = Some((Instant::now(), found));
        Ok(mine)
    }

    /// Session networks of this hub whose session has no service, older than a start can
    /// take (a hub killed between creating the network and the service leaves one).
    pub(super) async fn sweep_networks(&self, docker: &Docker, services: &HashSet<String>) {
        let c = self.config();
        let grace = c.start_timeout + Duration::from_secs(10);
        let opts = ListNetworksOptions { filters: Some(hub_filter(&c.hub_id)) };
        let Ok(nets) = self.timed(docker.list_networks(Some(opts))).await else { return };
        let now = SystemTime::now();
        for n in nets {
            let labels = n.labels.unwrap_or_default();
            let Some(session) = labels.get(LABEL_SESSION_ID) else { continue };
            let created = labelled(&labels).created;
            let old = created.is_none_or(|t| now.duration_since(t).is_ok_and(|age| age > grace));
            if !services.contains(session) && old {
                if let Some(id) = n.id {
                    info!(network = %id, "removing a session network no service uses");
                    self.remove_network(docker, &id, 1, c.engine_timeout).await;
                }
            }
        }
    }
}
