//! Sessions per node on a two-node swarm (`cargo bench --bench swarm_scale`): the two nodes the
//! tests make (this engine as manager, a second dockerd in a network namespace as worker), one
//! hub with `runtime: swarm`, grown to 5, 50, 125, 250 and 500 idle sessions per node
//! (`SWARM_SCALE_STEPS`), each with its owner's connection held open. At each size it measures,
//! each figure against its floor at the same size:
//!
//! - the next session's start, request to reply (no warm pool), against Swarm's own floor: an
//!   overlay network and a bare service of the same image pinned to a node, made through the
//!   Engine API with no hub, until its task runs and its port answers (`swarm_floor`), the two
//!   alternated and spread over both nodes;
//! - queries paced at 10,000 q/s from 256 clients, against the trivial query floor, and their
//!   time inside the hub (its `troop_hub_query_seconds` histogram);
//! - at rest: hub RSS and CPU, both engines' CPU, the machine's busy share, `docker service ls`
//!   time, and the sessions on each node.
//!
//! At the largest size: the hub SIGKILLed and started again (adoption, every session answering
//! at its node), then SIGTERM (until the hub exits, and nothing is left on either node). Prints
//! a row per size as it goes and writes `target/bench-swarm-scale.json`. Run as root (the second
//! node needs network namespaces); refuses an engine already in a swarm.

mod common;

use common::measure::*;
use common::swarm::{Swarm, Worker, MANAGER_IP, WORKER_IP};
use common::swarm_floor::{self, Floor};
use common::{docker_ok, TestHub};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use troop_hub::admin::Owner;

/// Samples per measured start kind at each size.
const SAMPLES: usize = 20;
/// Sessions started at once while growing.
const GROW_AT_ONCE: usize = 4;

/// The sessions this hub runs on each node: (manager, worker).
fn per_node(hub: &TestHub) -> (usize, usize) {
    let filter = format!("label=io.troop-hub.hub={}", hub.id);
    let manager = docker_ok(&["ps", "-q", "--filter", &filter]).lines().count();
    let worker = Worker::docker_ok(&["ps", "-q", "--filter", &filter]).lines().count();
    (manager, worker)
}

fn main() {
    if std::env::var_os("BENCH_QUERY_FLOOR").is_some() {
        return serve_query_floor();
    }
    let steps = steps_from_env("SWARM_SCALE_STEPS", "5,50,125,250,500");
    let most = steps.iter().copied().max().unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let swarm = Swarm::two_nodes();
        let worker_node = docker_ok(&["node", "ls", "-q", "--filter", "role=worker"]);
        let nodes = [(swarm.node.clone(), MANAGER_IP), (worker_node, WORKER_IP)];
        let limit = most * 2 + 40;
        let mut hub = TestHub::new(&format!(
            "runtime: swarm\nmax_sessions: {limit}\nmax_sessions_per_address: {limit}\nidle_exit: null\nwarm_pool: 0"
        ));
        let archive = hub.dir.path().join("archive.db");
        hub.extra_yaml.push_str(&format!(
            "\narchive: {{path: {}, max_session_bytes: 1m, max_total_bytes: {limit}m}}",
            archive.display()
        ));
        // Both nodes publish the same port numbers: a range of `most` and room for the ending.
        let first = 20000 + (std::process::id() % 10) as u16 * 700;
        hub.ports = (first, first + most as u16 + 59);
        let floor_ports = first + most as u16 + 70;
        hub.envs.push(("RUST_LOG".into(), "info".into()));
        let mut hub = hub.start().await;
        let docker = bollard::Docker::connect_with_defaults().expect("docker").negotiate_version().await.expect("api");
        let image = docker_ok(&["image", "inspect", "-f", "{{.Id}}", "troop-hub/troop-server:latest"]);
        let floor_run = format!("{}-floor", hub.id);
        let engines: Vec<u32> = ["dockerd", "containerd"].iter().flat_map(|n| pids_named(n)).collect();
        let pid = hub.proc.as_ref().map(|p| p.id()).unwrap_or(0);
        println!("two nodes: manager {MANAGER_IP}, worker {WORKER_IP}; hub ports {}-{}", hub.ports.0, hub.ports.1);
        println!(
            "\n{:>5} {:>7} | {:>13} {:>13} | {:>13} {:>9} | {:>7} {:>6} {:>6} {:>6} | {:>9} {:>9}",
            "per", "grow s", "start p50/p99", "floor p50/p99", "10k/s p50/p99", "floor p99", "hub MiB", "hub %",
            "eng %", "busy %", "ls ms", "on nodes"
        );
        let mut owners: Vec<(String, Owner)> = Vec::new();
        let mut rows = Vec::new();
        for (step, &per) in steps.iter().enumerate() {
            let n = per * 2;
            let t = Instant::now();
            grow(&hub, &mut owners, n, GROW_AT_ONCE).await;
            let grown = t.elapsed();
            tokio::time::sleep(Duration::from_secs(3)).await;

            // At rest.
            let hub_cpu = cpu_share(&[pid], Duration::from_secs(5)).await;
            let engine_cpu = cpu_share(&engines, Duration::from_secs(5)).await;
            let busy = tokio::task::spawn_blocking(common::load::machine_busy_now).await.unwrap_or(f64::NAN);
            let rss = proc_kib(&format!("/proc/{pid}/status"), "VmRSS:") as f64 / 1024.0;
            let ls = tails((0..5).map(|_| timed_cli(&["service", "ls", "-q"])).collect())[0];
            let placed = per_node(&hub);

            // The next session and Swarm's floor, alternated, the floor on each node in turn;
            // each floor is removed in the background (Swarm keeps a removed task seconds).
            let (mut starts, mut floor, mut removals) = (Vec::new(), Vec::new(), Vec::new());
            for k in 0..SAMPLES {
                let (node, ip) = &nodes[k % 2];
                let port = floor_ports + k as u16;
                let probe = SocketAddr::new(ip.parse::<IpAddr>().expect("node address"), port);
                let f = Floor {
                    image: &image,
                    run: &floor_run,
                    k: step * SAMPLES + k,
                    node: Some(node),
                    port,
                    probe,
                    hold: Duration::from_millis(50),
                };
                let (took, made) = swarm_floor::start(&docker, &f).await;
                floor.push(took);
                let d = docker.clone();
                removals.push(tokio::spawn(async move { swarm_floor::remove(&d, made).await }));
                starts.push(next_start(&hub, &format!("c{step}-{k}")).await.expect("a start"));
            }
            for r in removals {
                let _ = r.await;
            }

            // Queries paced at 10,000 q/s, against the floor.
            let floor_q = query_floor();
            query_warm_up(hub.addr).await;
            conntrack_room(25_000).await;
            failures();
            let page = || async { common::http(hub.http, "GET", "/metrics", None, None).await.body };
            let before = page().await;
            let (paced, paced_failed) =
                queries(hub.addr, &sources(step, 2, 2), 256, Duration::from_secs(2), Some(10_000.0)).await;
            let own = hub_own_query_times(&before, &page().await);
            conntrack_room(25_000).await;
            let (fpaced, floor_failed) =
                queries(floor_q.addr, &sources(step, 3, 2), 256, Duration::from_secs(2), Some(10_000.0)).await;
            let why = failures();
            drop(floor_q);

            let (starts, floor, paced, fpaced) = (tails(starts), tails(floor), tails(paced), tails(fpaced));
            println!(
                "{per:>5} {:>7.0} | {:>6.0}/{:<6.0} {:>6.0}/{:<6.0} | {:>6.2}/{:<6.2} {:>9.2} | {rss:>7.1} {:>6.1} {:>6.1} {busy:>6.1} | {ls:>9.0} {:>4}/{:<4}",
                grown.as_secs_f64(), starts[0], starts[1], floor[0], floor[1], paced[0], paced[1], fpaced[1],
                hub_cpu * 100.0, engine_cpu * 100.0, placed.0, placed.1
            );
            println!(
                "      10k q/s inside the hub (accepted to answered, the wait for the request included): p99 under {:.2} ms, {:.2} % within 5 ms",
                own.1,
                own.0 * 100.0
            );
            if paced_failed + floor_failed > 0 {
                println!("      failed queries: hub {paced_failed}, floor {floor_failed}: {why}");
            }
            rows.push(json!({
                "per_node": per, "sessions": n, "grow_seconds": grown.as_secs_f64(),
                "start_ms": starts, "swarm_floor_ms": floor,
                "queries_paced_10k": {"ms": paced, "failed": paced_failed, "floor_ms": fpaced, "floor_failed": floor_failed,
                    "hub_own_p99_under_ms": own.1, "hub_own_within_5ms": own.0},
                "hub_rss_mib": rss, "hub_cpu_share": hub_cpu, "engines_cpu_share": engine_cpu, "host_busy_percent": busy,
                "service_ls_ms": ls, "on_manager": placed.0, "on_worker": placed.1,
            }));
        }

        // A restart with every session live: adoption, then each answers at its node.
        let n = owners.len();
        let adopted = restart_and_adopt(&mut hub, n, Duration::from_secs(600)).await;
        let mut answering = 0;
        for (_, o) in &owners {
            let at = (o.host.as_str(), o.port);
            if matches!(tokio::time::timeout(common::T, tokio::net::TcpStream::connect(at)).await, Ok(Ok(_))) {
                answering += 1;
            }
        }
        drop(owners);
        println!("\nrestart with {n} sessions: adopted in {:.1} s, {answering} of {n} answer at their node", adopted.as_secs_f64());

        // SIGTERM: until the hub exits, and until nothing of it is left on either node.
        let t = Instant::now();
        hub.signal("TERM");
        let code = hub.wait_exit(Duration::from_secs(1800)).await;
        let exited = t.elapsed();
        let filter = format!("label=io.troop-hub.hub={}", hub.id);
        let left = hub
            .eventually("nothing left on either node", Duration::from_secs(180), async || {
                let services = docker_ok(&["service", "ls", "-q", "--filter", &filter]);
                let manager = docker_ok(&["ps", "-aq", "--filter", &filter]);
                let worker = Worker::docker_ok(&["ps", "-aq", "--filter", &filter]);
                if services.is_empty() && manager.is_empty() && worker.is_empty() {
                    Ok(t.elapsed())
                } else {
                    let count = |s: &str| s.lines().count();
                    Err(format!("services {}, manager {}, worker {}", count(&services), count(&manager), count(&worker)))
                }
            })
            .await;
        println!(
            "SIGTERM with {n} sessions: the hub exited ({code:?}) after {:.1} s; nothing left on either node after {:.1} s",
            exited.as_secs_f64(),
            left.as_secs_f64()
        );
        let report = json!({"steps": rows,
            "restart": {"sessions": n, "adopted_seconds": adopted.as_secs_f64(), "answering": answering},
            "sigterm": {"sessions": n, "exit_seconds": exited.as_secs_f64(), "nothing_left_seconds": left.as_secs_f64()}});
        let out = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-swarm-scale.json");
        let _ = std::fs::write(out, serde_json::to_string_pretty(&report).unwrap_or_default());
        drop(hub);
        drop(swarm);
    });
}
