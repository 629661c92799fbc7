//! Swarm runtime benchmark (`cargo bench --bench swarm`). Makes a single-node swarm on this
//! machine's engine (refuses if the engine is already in one) and leaves it afterwards. Prints
//! a table and writes `target/bench-swarm.json`. Measured in the same run:
//!
//! - start latency, request to `address` reply (the task runs and its port answers), through a
//!   hub set to `runtime: swarm`, against two baselines: the Swarm floor (an overlay network and
//!   a bare service of the same image on it with a host-mode port, created through the Engine
//!   API until its task runs and the port answers) and a hub set to `runtime: docker` on the
//!   same engine;
//! - end latency, owner leaves to the session's service (or container) gone, for both hubs.

#[path = "../tests/common/mod.rs"]
mod common;

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, NetworkAttachmentConfig, NetworkCreateRequest,
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};
use bollard::query_parameters::{ListContainersOptions, ListServicesOptions, ListTasksOptions};
use common::{docker, docker_ok, TestHub};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use troop_hub::admin::start_session;

const RUNS: usize = 20;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted.get(((sorted.len().max(1) - 1) as f64 * p).round() as usize).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

fn summary(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    (pct(&v, 0.5), pct(&v, 0.9))
}

/// True if a server answers at `addr` and keeps the connection open a moment (not a proxy
/// with nothing behind it).
async fn answers(addr: std::net::SocketAddr) -> bool {
    use tokio::io::AsyncReadExt;
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return false };
    let mut b = [0u8; 1];
    tokio::time::timeout(Duration::from_millis(100), s.read(&mut b)).await.is_err()
}

/// The Swarm floor: a bare service until its task runs and its port answers; then its removal.
async fn floor_once(docker: &bollard::Docker, image: &str, port: u16, run: &str) -> Duration {
    let labels = HashMap::from([
        ("io.troop-hub.managed".to_string(), "true".to_string()),
        ("io.troop-hub.hub".to_string(), run.to_string()),
    ]);
    let t = Instant::now();
    let network = NetworkCreateRequest {
        name: format!("{run}-net"),
        driver: Some("overlay".into()),
        labels: Some(labels.clone()),
        ..Default::default()
    };
    let network = docker.create_network(network).await.expect("create the floor network").id;
    let spec = ServiceSpec {
        name: Some(format!("{run}-floor")),
        labels: Some(labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.into()),
                labels: Some(labels),
                args: Some(vec!["--port".into(), "57890".into()]),
                env: Some(vec![format!("TROOP_PASSWORD_MD5={}", troop_server::md5_hex("pw"))]),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            }),
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
                published_port: Some(i64::from(port)),
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
        if running && answers(([127, 0, 0, 1], port).into()).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t.elapsed();
    docker.delete_service(&id).await.expect("remove the floor service");
    let label = HashMap::from([("label".to_string(), vec![format!("io.troop-hub.hub={run}")])]);
    while !docker
        .list_containers(Some(ListContainersOptions { all: true, filters: Some(label.clone()), ..Default::default() }))
        .await
        .expect("containers")
        .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while docker.remove_network(&network).await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    took
}

/// Starts and ends `RUNS` sessions one after another; returns (start, end) latencies, the end
/// measured from the owner leaving until the session's service or container is gone.
async fn hub_cycles(docker: &bollard::Docker, hub: &TestHub) -> (Vec<Duration>, Vec<Duration>) {
    let (mut starts, mut ends) = (Vec::new(), Vec::new());
    let label = HashMap::from([("label".to_string(), vec![format!("io.troop-hub.hub={}", hub.id)])]);
    for i in 0..RUNS {
        let t = Instant::now();
        let owner = start_session(hub.addr, &format!("s{i}"), "pw", Duration::from_secs(30))
            .await
            .expect("answered")
            .unwrap_or_else(|e| panic!("start refused: {e}\n{}", hub.log()));
        starts.push(t.elapsed());
        let t = Instant::now();
        drop(owner);
        loop {
            let services = docker
                .list_services(Some(ListServicesOptions { filters: Some(label.clone()), ..Default::default() }))
                .await
                .unwrap_or_default();
            let containers = docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(label.clone()),
                    ..Default::default()
                }))
                .await
                .expect("containers");
            if services.is_empty() && containers.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ends.push(t.elapsed());
    }
    (starts, ends)
}

struct SwarmGuard;

impl Drop for SwarmGuard {
    fn drop(&mut self) {
        let _ = docker(&["swarm", "leave", "--force"]);
        let _ = docker(&["network", "rm", "docker_gwbridge"]);
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        common::session_image();
        let state = docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        assert_eq!(state, "inactive", "this bench makes its own swarm; the engine is already in one");
        docker_ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        let _guard = SwarmGuard;
        let docker = bollard::Docker::connect_with_defaults().expect("docker").negotiate_version().await.expect("api");
        let image = docker_ok(&["image", "inspect", "-f", "{{.Id}}", "troop-hub/troop-server:latest"]);

        let swarm_hub = TestHub::new("runtime: swarm\nidle_exit: null").start().await;
        let docker_hub = TestHub::new("idle_exit: null").start().await;
        let mut floor = Vec::new();
        for _ in 0..RUNS {
            floor.push(floor_once(&docker, &image, swarm_hub.ports.1, &format!("{}-floor", swarm_hub.id)).await);
        }
        let (swarm_starts, swarm_ends) = hub_cycles(&docker, &swarm_hub).await;
        let (docker_starts, docker_ends) = hub_cycles(&docker, &docker_hub).await;
        drop((swarm_hub, docker_hub));

        let (f50, f90) = summary(floor);
        let (s50, s90) = summary(swarm_starts);
        let (d50, d90) = summary(docker_starts);
        let (se50, se90) = summary(swarm_ends);
        let (de50, de90) = summary(docker_ends);
        println!("swarm runtime, {RUNS} sequential sessions each (ms)");
        println!("{:<44} {:>8} {:>8}", "", "p50", "p90");
        println!("{:<44} {:>8.0} {:>8.0}", "start: Swarm floor (overlay + service, API)", f50, f90);
        println!("{:<44} {:>8.0} {:>8.0}", "start: hub, runtime: swarm", s50, s90);
        println!("{:<44} {:>8.0} {:>8.0}", "start: hub, runtime: docker", d50, d90);
        println!("{:<44} {:>8.0} {:>8.0}", "end: hub, runtime: swarm (service gone)", se50, se90);
        println!("{:<44} {:>8.0} {:>8.0}", "end: hub, runtime: docker (container gone)", de50, de90);
        println!("start ratio swarm hub / Swarm floor: {:.2}", s50 / f50);
        println!("start ratio swarm hub / docker hub:  {:.2}", s50 / d50);
        println!("end ratio swarm / docker:            {:.2}", se50 / de50);
        let report = serde_json::json!({
            "runs": RUNS,
            "start_ms": {"swarm_floor": [f50, f90], "swarm_hub": [s50, s90], "docker_hub": [d50, d90]},
            "end_ms": {"swarm_hub": [se50, se90], "docker_hub": [de50, de90]},
        });
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-swarm.json");
        let _ = std::fs::write(path, serde_json::to_string_pretty(&report).unwrap_or_default());
    });
}
