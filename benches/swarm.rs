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

mod common;

use bollard::query_parameters::{ListContainersOptions, ListServicesOptions};
use common::swarm_floor::{self, Floor};
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

/// The Swarm floor: a bare service until its task runs and its port answers (held 100 ms);
/// then its removal.
async fn floor_once(docker: &bollard::Docker, image: &str, port: u16, run: &str) -> Duration {
    let probe = ([127, 0, 0, 1], port).into();
    let f = Floor { image, run, k: 0, node: None, port, probe, hold: Duration::from_millis(100) };
    let (took, made) = swarm_floor::start(docker, &f).await;
    swarm_floor::remove(docker, made).await;
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
