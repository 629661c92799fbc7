//! Swarm's own floor, shared by the `swarm` and `swarm_scale` benches: what the hub's
//! `runtime: swarm` asks of Swarm for one session (an overlay network of its own and a bare
//! service of the session image on it, restart `none`, a host-mode port, optionally pinned to a
//! node), made through the Engine API with no hub, timed until the task runs and its port
//! answers; and its removal.

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, NetworkAttachmentConfig, NetworkCreateRequest,
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};
use bollard::query_parameters::ListTasksOptions;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One floor service, to remove with [`remove`].
pub struct FloorService {
    pub service: String,
    pub network: String,
}

/// True if a server answers at `addr` and keeps the connection open for `hold` (not a proxy
/// with nothing behind it, which accepts and then closes).
pub async fn answers(addr: SocketAddr, hold: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return false };
    let mut b = [0u8; 1];
    tokio::time::timeout(hold, s.read(&mut b)).await.is_err()
}

/// Where and how one floor service runs.
pub struct Floor<'a> {
    pub image: &'a str,
    /// Labels the floor's objects with `io.troop-hub.hub={run}` (cleanup by label).
    pub run: &'a str,
    /// Unique among the floors alive at once (their names).
    pub k: usize,
    /// `node.id==` constraint, as the hub places a session; none lets Swarm choose.
    pub node: Option<&'a str>,
    /// The published port, and where it is probed (the node's address).
    pub port: u16,
    pub probe: SocketAddr,
    /// How long the probe's connection must stay open (the hub holds its own 50 ms).
    pub hold: Duration,
}

/// Creates the floor's network and service, and returns once its task runs and its port
/// answers: the time that took, and what to remove.
pub async fn start(docker: &bollard::Docker, f: &Floor<'_>) -> (Duration, FloorService) {
    let labels = HashMap::from([
        ("io.troop-hub.managed".to_string(), "true".to_string()),
        ("io.troop-hub.hub".to_string(), f.run.to_string()),
    ]);
    let t = Instant::now();
    let network = NetworkCreateRequest {
        name: format!("{}-{}-net", f.run, f.k),
        driver: Some("overlay".into()),
        labels: Some(labels.clone()),
        ..Default::default()
    };
    let network = docker.create_network(network).await.expect("create the floor network").id;
    let spec = ServiceSpec {
        name: Some(format!("{}-{}", f.run, f.k)),
        labels: Some(labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(f.image.into()),
                labels: Some(labels),
                args: Some(vec!["--port".into(), "57890".into()]),
                env: Some(vec![format!("TROOP_PASSWORD_MD5={}", troop_server::md5_hex("pw"))]),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            }),
            placement: f
                .node
                .map(|n| TaskSpecPlacement { constraints: Some(vec![format!("node.id=={n}")]), ..Default::default() }),
            networks: Some(vec![NetworkAttachmentConfig { target: Some(network.clone()), ..Default::default() }]),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            ports: Some(vec![EndpointPortConfig {
                target_port: Some(57890),
                published_port: Some(i64::from(f.port)),
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = docker.create_service(spec, None).await.expect("create the floor service").id.expect("service id");
    let filters = HashMap::from([("service".to_string(), vec![id.clone()])]);
    loop {
        let tasks = docker.list_tasks(Some(ListTasksOptions { filters: Some(filters.clone()) })).await.expect("tasks");
        let running = tasks
            .iter()
            .any(|t| t.status.as_ref().and_then(|s| s.state.as_ref()).is_some_and(|s| s.to_string() == "running"));
        if running && answers(f.probe, f.hold).await {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "the floor service {id} did not answer within 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (t.elapsed(), FloorService { service: id, network })
}

/// Removes the service, then its network once the task has let go of it (Swarm keeps a
/// removed service's task a few seconds); gives up on the network after 120 s.
pub async fn remove(docker: &bollard::Docker, f: FloorService) {
    docker.delete_service(&f.service).await.expect("remove the floor service");
    let t = Instant::now();
    while docker.remove_network(&f.network).await.is_err() && t.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
