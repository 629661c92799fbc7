//! Sessions as Docker Swarm services, one per session, for hubs that outgrow one machine.
//!
//! The hub talks to a swarm manager and does the placing itself: each session's service has
//! one replica, restart condition `none` (a crashed server ends its session), a constraint
//! `node.id==X` for the node the registry chose, its port published in `host` mode on that
//! node (ingress needs IPVS and hides performers' addresses), its own overlay network, and the
//! same labels, limits and hardening as a container. Readiness is the task `running` and the
//! port accepting on the node; a task that fails carries Swarm's reason. Exits are found by
//! watching the tasks (Swarm has no task events), twice a second.
//!
//! Beside this file: `service.rs` (the service and network specs, removal, sweeping) and
//! `tasks.rs` (task states and the task watch).

mod service;
mod tasks;

use super::engine::{hub_filter, Engine};
use super::spec::{credentials_from_env, labelled};
use super::{
    EventStream, Existing, Node, Runtime, RuntimeError, SessionSpec, StartError, Started, LABEL_PUBLIC_HOST,
    LABEL_SESSION_ID,
};
use crate::config::Config;
use bollard::models::Task;
use bollard::query_parameters::{ListNetworksOptions, ListNodesOptions, ListServicesOptions, ListTasksOptions};
use bollard::Docker;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tasks::{finished, newest, task_end, task_state, task_words, TaskWatch, WATCH_EVERY};
use tracing::{debug, warn};

/// A removal mostly waits on Swarm (its agent holds a task about 3 s before stopping it),
/// not on the engine's work: many may run at once.
const PARALLEL_REMOVALS: usize = 64;

/// What performers hear when a session's task stopped on its node.
pub const TASK_STOPPED: &str =
    "its server stopped on the machine the hub chose; try again, or tell the hub's operator (the reason is in the hub's log)";
/// ... when the hub could not reach the server on its node.
pub const TASK_UNREACHABLE: &str =
    "the hub could not reach it on the machine it chose; tell the hub's operator (the reason is in the hub's log)";
/// ... when no node ran it in time.
pub const TASK_NOT_RUN: &str = "no machine of the hub ran it in time; try again in a moment";

/// Sessions as services on a swarm whose manager is the hub's engine.
pub struct SwarmRuntime {
    engine: Engine,
    /// Node addresses as the hub reaches them (for readiness probes), from the last node list.
    addrs: std::sync::Mutex<HashMap<String, IpAddr>>,
    /// Nodes that were down at the last node list.
    down: std::sync::Mutex<HashSet<String>>,
    removals: tokio::sync::Semaphore,
    /// The networks and session of each service in the last look at this hub's tasks, kept a
    /// moment for removals of services already gone ([`SwarmRuntime::left_by`]).
    gone_services: tokio::sync::Mutex<Option<(Instant, GoneServices)>>,
}

/// By service id: its networks and its session, as its tasks name them.
type GoneServices = HashMap<String, (Vec<String>, Option<String>)>;

/// True for an image name that says where to pull it from (`registry.example.org/x`,
/// `localhost:5000/x`, or pinned by digest): Swarm pulls those on each node.
pub fn names_a_registry(image: &str) -> bool {
    if image.contains('@') {
        return true;
    }
    match image.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

/// A node's address as the hub reaches it: its status address, or its manager address when
/// the status one is unspecified (older engines report 0.0.0.0 for managers).
fn node_addr(n: &bollard::models::Node) -> Option<IpAddr> {
    let status = n.status.as_ref().and_then(|s| s.addr.as_deref()).and_then(|a| a.parse::<IpAddr>().ok());
    match status {
        Some(ip) if !ip.is_unspecified() => Some(ip),
        _ => n
            .manager_status
            .as_ref()
            .and_then(|m| m.addr.as_deref())
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .map(|a| a.ip()),
    }
}

/// Why a start that ran out of time failed, from the task's last state and words.
fn too_late((state, words): (String, String), timeout: Duration, probe: SocketAddr, node: &str) -> StartError {
    let within = humantime::format_duration(timeout);
    if state == "running" {
        return StartError::NodeFailed {
            public: TASK_UNREACHABLE,
            detail: format!(
                "its server on node {node} did not answer on {probe} within {within} (the hub must reach the \
                 session ports of every node)"
            ),
        };
    }
    let words = if words.is_empty() { String::new() } else { format!(" ({words})") };
    StartError::NodeFailed {
        public: TASK_NOT_RUN,
        detail: format!("its Swarm task was still {state} after {within}{words}"),
    }
}

fn filters(pairs: &[(&str, String)]) -> HashMap<String, Vec<String>> {
    let mut f: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in pairs {
        f.entry(k.to_string()).or_default().push(v.clone());
    }
    f
}

impl SwarmRuntime {
    /// A runtime for the swarm manager named by DOCKER_HOST (default: the local socket).
    /// Nothing is contacted yet.
    pub fn new(config: Config) -> SwarmRuntime {
        SwarmRuntime {
            engine: Engine::new(config),
            addrs: std::sync::Mutex::new(HashMap::new()),
            down: std::sync::Mutex::new(HashSet::new()),
            removals: tokio::sync::Semaphore::new(PARALLEL_REMOVALS),
            gone_services: tokio::sync::Mutex::new(None),
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

    /// The session ids that still have a service.
    async fn live_sessions(&self, docker: &Docker, c: &Config) -> Result<HashSet<String>, RuntimeError> {
        let opts = ListServicesOptions { filters: Some(hub_filter(&c.hub_id)), ..Default::default() };
        let services = self.timed(docker.list_services(Some(opts))).await?;
        Ok(services.iter().filter_map(|s| s.spec.as_ref()?.labels.as_ref()?.get(LABEL_SESSION_ID).cloned()).collect())
    }

    /// Is the engine a swarm manager? The error says what is wrong and how to fix it.
    async fn ensure_manager(&self) -> Result<Docker, RuntimeError> {
        let docker = self.engine.client().await?;
        let info = self.timed(docker.info()).await?;
        let swarm = info.swarm.unwrap_or_default();
        let state = swarm.local_node_state.map(|s| s.to_string()).unwrap_or_default();
        if state != "active" {
            let shown = if state.is_empty() { "inactive".to_string() } else { state };
            return Err(RuntimeError::Misconfigured(format!(
                "hub.yaml has `runtime: swarm`, but the Docker engine is not part of an active swarm (Swarm: {shown}); \
                 run `docker swarm init` on this machine, point DOCKER_HOST at a swarm manager, or set `runtime: docker`"
            )));
        }
        if swarm.control_available != Some(true) {
            return Err(RuntimeError::Misconfigured(
                "hub.yaml has `runtime: swarm`, but the Docker engine is a swarm worker, not a manager; run the hub on a \
                 manager node or point DOCKER_HOST at one"
                    .into(),
            ));
        }
        Ok(docker)
    }

    /// What the service names as its image: the local image id when the image is built here
    /// and no registry is named (Swarm then skips the pull it tries before every task), else
    /// the name as configured (each node pulls it).
    async fn image_ref(&self, docker: &Docker, c: &Config) -> Result<String, RuntimeError> {
        if names_a_registry(&c.image) {
            return Ok(c.image.clone());
        }
        match self.timed(docker.inspect_image(&c.image)).await {
            Ok(img) => img.id.ok_or_else(|| RuntimeError::Failed(format!("the image {} has no id", c.image))),
            Err(RuntimeError::NotFound) | Err(RuntimeError::ImageMissing(_)) => {
                Err(RuntimeError::ImageMissing(c.image.clone()))
            }
            Err(e) => Err(e),
        }
    }

    /// The tasks of one service, or of every service of this hub.
    async fn tasks(&self, docker: &Docker, service: Option<&str>) -> Result<Vec<Task>, RuntimeError> {
        let f = match service {
            Some(id) => filters(&[("service", id.to_string())]),
            None => hub_filter(&self.config().hub_id),
        };
        self.timed(docker.list_tasks(Some(ListTasksOptions { filters: Some(f) }))).await
    }

    /// Where the hub reaches a node, listing the nodes again if it is not known yet.
    async fn addr_of(&self, node: &str) -> Option<IpAddr> {
        let known = self.addrs.lock().ok().and_then(|a| a.get(node).copied());
        if known.is_some() {
            return known;
        }
        let _ = self.nodes().await;
        self.addrs.lock().ok().and_then(|a| a.get(node).copied())
    }

    /// Waits until the service's task runs and its port accepts on the node (Ok), the task
    /// fails (Err with Swarm's words), or the start timeout passes.
    async fn wait_running(
        &self,
        docker: &Docker,
        service: &str,
        spec: &SessionSpec,
        probe: SocketAddr,
    ) -> Result<(), StartError> {
        let timeout = self.config().start_timeout;
        let started = Instant::now();
        let deadline = spec.deadline;
        let mut last = (String::from("new"), String::new());
        loop {
            // A slow or failed engine call is retried until the deadline, not fatal.
            let tasks = match self.tasks(docker, Some(service)).await {
                Ok(t) => t,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    debug!(service = %service, error = %e, "task list failed; retrying");
                    Vec::new()
                }
                Err(e) => return Err(e.into()),
            };
            if spec.cancel.is_cancelled() {
                return Err(StartError::Cancelled);
            }
            if let Some(t) = newest(&tasks) {
                let (state, words) = (task_state(t), task_words(t));
                if state == "running" && super::probe::accepts(probe, true).await {
                    debug!(service = %service, elapsed_ms = started.elapsed().as_millis() as u64, "task running and answering");
                    return Ok(());
                }
                if words.contains("port is already allocated")
                    || words.contains("address already in use")
                    || words.contains("host-mode port already in use")
                {
                    return Err(StartError::PortTaken(spec.port));
                }
                if finished(&state) {
                    return Err(StartError::NodeFailed {
                        public: TASK_STOPPED,
                        detail: format!("its Swarm task {state}: {words}"),
                    });
                }
                last = (state, words);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(too_late(last, timeout, probe, &spec.node));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Runtime for SwarmRuntime {
    fn reconfigure(&self, config: Config) {
        self.engine.reconfigure(config);
    }

    fn prepare(&self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move {
            self.ensure_manager().await?;
            self.nodes().await?;
            self.check().await
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move {
            let docker = self.ensure_manager().await?;
            self.image_ref(&docker, &self.config()).await.map(drop)
        })
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<crate::registry::Node>, RuntimeError>> {
        Box::pin(async move {
            let docker = self.engine.client().await?;
            let found = self.timed(docker.list_nodes(None::<ListNodesOptions>)).await?;
            let mut nodes = Vec::new();
            let mut addrs = HashMap::new();
            let mut down = HashSet::new();
            for n in &found {
                let Some(id) = n.id.clone() else { continue };
                let spec = n.spec.clone().unwrap_or_default();
                let state = n.status.as_ref().and_then(|s| s.state.as_ref()).map(|s| s.to_string()).unwrap_or_default();
                let ready = state == "ready";
                if state == "down" || state == "disconnected" {
                    down.insert(id.clone());
                }
                let active = spec.availability.is_some_and(|a| a.to_string() == "active");
                let addr = node_addr(n);
                if let Some(ip) = addr {
                    addrs.insert(id.clone(), ip);
                }
                let label =
                    spec.labels.as_ref().and_then(|l| l.get(LABEL_PUBLIC_HOST)).filter(|h| !h.trim().is_empty());
                let host = label.cloned().or_else(|| addr.map(|ip| ip.to_string()));
                nodes.push(Node { id, host, usable: ready && active && addr.is_some() });
            }
            // A stable order, so ties in placement always break the same way.
            nodes.sort_by(|a, b| a.id.cmp(&b.id));
            if let Ok(mut a) = self.addrs.lock() {
                *a = addrs;
            }
            if let Ok(mut d) = self.down.lock() {
                *d = down;
            }
            Ok(nodes)
        })
    }

    fn start(&self, spec: SessionSpec) -> BoxFuture<'_, Result<Started, StartError>> {
        Box::pin(async move {
            let c = self.config();
            let docker = self.engine.client().await?;
            let image = self.image_ref(&docker, &c).await?;
            let addr = self.addr_of(&spec.node).await.ok_or_else(|| StartError::NodeFailed {
                public: TASK_UNREACHABLE,
                detail: format!("node {} has no known address", spec.node),
            })?;
            let network = self.create_network(&docker, &c, &spec).await?;
            let service_spec = self.service_spec(&c, &spec, image, network.clone());
            let service = match self.timed(docker.create_service(service_spec, None)).await {
                Ok(r) => match r.id {
                    Some(id) => id,
                    None => {
                        self.remove_network(&docker, &network, 20, c.engine_timeout).await;
                        return Err(RuntimeError::Failed("the engine created a service without an id".into()).into());
                    }
                },
                Err(e) => {
                    self.remove_network(&docker, &network, 20, c.engine_timeout).await;
                    return Err(e.into());
                }
            };
            debug!(session = %spec.name, service = %service, node = %spec.node, "service created");
            let probe = SocketAddr::new(addr, spec.port);
            if let Err(e) = self.wait_running(&docker, &service, &spec, probe).await {
                if let Err(r) = self.remove_service(&docker, &service).await {
                    warn!(service = %service, error = %r, "could not remove a failed session's service");
                }
                return Err(e);
            }
            Ok(Started { handle: service, control: probe })
        })
    }

    fn remove(&self, service_id: String) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move {
            let _permit = self.removals.acquire().await;
            // A manager that did not answer a removal just before is not waited for again
            // (see ENGINE_SILENT_FOR); a slow one is: its calls have the removal's own limit.
            if self.engine.silent() {
                return Err(RuntimeError::Unreachable("it did not answer a removal just before".into()));
            }
            let docker = self.engine.client().await?;
            let removed = self.remove_service(&docker, &service_id).await;
            self.engine.heard(!matches!(removed, Err(RuntimeError::Unreachable(_))));
            removed
        })
    }

    fn ends_at_once(&self) -> usize {
        PARALLEL_REMOVALS
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Existing>, RuntimeError>> {
        Box::pin(async move {
            let c = self.config();
            let docker = self.engine.client().await?;
            // Each service's running task's node, in one pass (looking it up per service was
            // N x N, at every reconcile), and the tasks dropped before the services come: the
            // two lists decoded side by side at 1,000 sessions left the allocator holding both.
            let running: HashMap<String, Option<String>> = self
                .tasks(&docker, None)
                .await?
                .into_iter()
                .filter(|t| task_state(t) == "running" && task_end(t).is_none())
                .filter_map(|t| Some((t.service_id?, t.node_id)))
                .collect();
            let opts = ListServicesOptions { filters: Some(hub_filter(&c.hub_id)), ..Default::default() };
            let services = self.timed(docker.list_services(Some(opts))).await?;
            let mut out = Vec::new();
            for s in services {
                let Some(id) = s.id.clone() else { continue };
                let spec = s.spec.unwrap_or_default();
                let l = labelled(&spec.labels.clone().unwrap_or_default());
                let running_node = running.get(id.as_str());
                let template = spec.task_template.as_ref();
                let constraint = template
                    .and_then(|t| t.placement.as_ref())
                    .and_then(|p| p.constraints.as_ref())
                    .and_then(|cs| cs.iter().find_map(|c| c.strip_prefix("node.id==").map(str::to_string)));
                let env = template.and_then(|t| t.container_spec.as_ref()).and_then(|c| c.env.clone());
                let node = running_node.cloned().flatten().or(constraint);
                let control = match (&node, l.port) {
                    (Some(n), Some(p)) => self.addr_of(n).await.map(|ip| SocketAddr::new(ip, p)),
                    _ => None,
                };
                out.push(Existing {
                    handle: id,
                    running: running_node.is_some(),
                    session_id: l.session_id,
                    name: l.name,
                    pooled: l.pooled,
                    node,
                    port: l.port,
                    created: l.created,
                    credentials: env.as_deref().and_then(credentials_from_env),
                    control,
                    front_door: false,
                });
            }
            Ok(out)
        })
    }

    /// Clears session networks a killed hub left without a service.
    fn sweep(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let c = self.config();
            let Ok(docker) = self.engine.client().await else { return };
            let Ok(live) = self.live_sessions(&docker, &c).await else { return };
            self.sweep_networks(&docker, &live).await;
        })
    }

    fn events(&self) -> BoxFuture<'_, Result<EventStream, RuntimeError>> {
        Box::pin(async move {
            let docker = self.engine.client().await?;
            let c = self.config();
            let watch = TaskWatch {
                docker,
                hub_id: c.hub_id.clone(),
                limit: c.engine_timeout,
                seen: HashSet::new(),
                reported: HashSet::new(),
                pending: VecDeque::new(),
                first: true,
            };
            Ok(futures_util::stream::unfold(watch, |mut w| async move {
                loop {
                    if let Some(ev) = w.pending.pop_front() {
                        return Some((Ok(ev), w));
                    }
                    if !w.first {
                        tokio::time::sleep(WATCH_EVERY).await;
                    }
                    w.first = false;
                    if let Err(e) = w.poll().await {
                        return Some((Err(e), w));
                    }
                }
            })
            .boxed())
        })
    }

    fn teardown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Ok(docker) = self.engine.client().await else { return };
            let c = self.config();
            let Ok(live) = self.live_sessions(&docker, &c).await else { return };
            let opts = ListNetworksOptions { filters: Some(hub_filter(&c.hub_id)) };
            let Ok(nets) = self.timed(docker.list_networks(Some(opts))).await else { return };
            for n in nets {
                let session = n.labels.as_ref().and_then(|l| l.get(LABEL_SESSION_ID));
                if session.is_some_and(|s| !live.contains(s)) {
                    if let Some(id) = n.id {
                        self.remove_network(&docker, &id, 1, c.engine_timeout).await;
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_told_apart_from_local_ones() {
        for local in ["troop-hub/troop-server:latest", "troop-server", "library/troop:1"] {
            assert!(!names_a_registry(local), "{local}");
        }
        for remote in [
            "registry.example.org/troop-hub/troop-server:1",
            "localhost:5000/troop-server",
            "localhost/troop",
            "troop-hub/troop-server@sha256:0123",
        ] {
            assert!(names_a_registry(remote), "{remote}");
        }
    }

    #[test]
    fn finished_task_states() {
        for s in ["complete", "failed", "rejected", "shutdown", "orphaned", "remove"] {
            assert!(finished(s));
        }
        for s in ["new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running"] {
            assert!(!finished(s));
        }
    }

    fn task(service: Option<&str>, index: u64, id: &str) -> bollard::models::Task {
        bollard::models::Task {
            id: Some(id.into()),
            service_id: service.map(str::to_string),
            version: Some(bollard::models::ObjectVersion { index: Some(index) }),
            ..Default::default()
        }
    }

    #[test]
    fn a_removed_services_task_says_so_whether_it_still_runs_or_has_stopped() {
        use bollard::models::{TaskState, TaskStatus};
        let with = |state: TaskState, desired: TaskState| bollard::models::Task {
            status: Some(TaskStatus { state: Some(state), ..Default::default() }),
            desired_state: Some(desired),
            ..task(Some("a"), 1, "t")
        };
        let removed = Some((tasks::SERVICE_REMOVED.to_string(), false));
        assert_eq!(task_end(&with(TaskState::RUNNING, TaskState::REMOVE)), removed);
        assert_eq!(task_end(&with(TaskState::SHUTDOWN, TaskState::REMOVE)), removed);
        let drained = task_end(&with(TaskState::RUNNING, TaskState::SHUTDOWN)).map(|(why, _)| why);
        assert_eq!(drained.as_deref(), Some("its machine went down or was drained"));
        assert_eq!(task_end(&with(TaskState::RUNNING, TaskState::RUNNING)), None);
    }

    #[test]
    fn each_service_gets_its_newest_task_in_one_pass() {
        let tasks = vec![
            task(Some("a"), 3, "a-old"),
            task(Some("b"), 9, "b-only"),
            task(Some("a"), 7, "a-new"),
            task(None, 99, "no-service"),
            task(Some("a"), 5, "a-mid"),
            task(Some("c"), 4, "c-first"),
            task(Some("c"), 4, "c-second"),
        ];
        let by = tasks::newest_by_service(&tasks);
        let id = |s: &str| by.get(s).and_then(|t| t.id.as_deref());
        assert_eq!((id("a"), id("b"), by.len()), (Some("a-new"), Some("b-only"), 3));
        // The same answer as the one-service rule, service by service, ties included.
        for s in ["a", "b", "c"] {
            let mine: Vec<_> = tasks.iter().filter(|t| t.service_id.as_deref() == Some(s)).cloned().collect();
            assert_eq!(newest(&mine).and_then(|t| t.id.as_deref()), id(s));
        }
    }
}
