//! Sessions by the hundred on each of two Swarm nodes, end to end (ignored by default: the
//! 2 x 500 of issue 27 takes the better part of an hour on 2 cores). Run it with
//! `cargo test --release --test swarm_scale -- --ignored --nocapture` (TROOP_HUB_SWARM_N sets
//! the sessions per node, default 500). The swarm is `common::swarm`'s two nodes (this engine
//! as manager, a second dockerd in a network namespace as worker). Each session has its
//! owner's connection held open; placement must put N on each node, each must answer at its
//! node's address, and a SIGTERM must leave no service, container or network on either node.

mod common;

use common::swarm::{Swarm, Worker, MANAGER_IP, WORKER_IP};
use common::{docker_ok, start_many, TestHub, T};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: cargo test --release --test swarm_scale -- --ignored (TROOP_HUB_SWARM_N per node)"]
async fn sessions_on_two_swarm_nodes_spread_evenly_and_a_sigterm_leaves_nothing_on_either() {
    let per_node: usize = std::env::var("TROOP_HUB_SWARM_N").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let n = per_node * 2;
    let _swarm = Swarm::two_nodes();
    let mut hub = TestHub::new(&format!(
        "runtime: swarm\nmax_sessions: {n}\nmax_sessions_per_address: {n}\nidle_exit: null\nwarm_pool: 0"
    ));
    let archive = hub.dir.path().join("archive.db");
    hub.extra_yaml
        .push_str(&format!("\narchive: {{path: {}, max_session_bytes: 1m, max_total_bytes: {n}m}}", archive.display()));
    // Both nodes publish the same port numbers: a range of per_node (and a few spare) serves both.
    let first = 20000 + (std::process::id() % 10) as u16 * 600;
    hub.ports = (first, first + per_node as u16 + 19);
    hub.envs.push(("RUST_LOG".into(), "info".into()));
    let mut hub = hub.start().await;

    let t = Instant::now();
    let owners = start_many(&hub, "w", n, Duration::from_secs(180)).await;
    let started_s = t.elapsed().as_secs_f64();
    eprintln!("{n} sessions started on two nodes in {started_s:.0} s");
    let on = |host: &str| owners.iter().filter(|o| o.host == host).count();
    assert_eq!((on(MANAGER_IP), on(WORKER_IP)), (per_node, per_node), "placement spreads them evenly");
    for o in &owners {
        let at = (o.host.as_str(), o.port);
        let answered = tokio::time::timeout(T, tokio::net::TcpStream::connect(at)).await;
        assert!(matches!(answered, Ok(Ok(_))), "{}:{} does not answer", o.host, o.port);
    }
    let on_worker = Worker::docker_ok(&["ps", "-q", "--filter", "label=io.troop-hub.managed=true"]).lines().count();
    assert_eq!(on_worker, per_node, "the worker runs its share");

    let t = Instant::now();
    hub.signal("TERM");
    assert_eq!(hub.wait_exit(Duration::from_secs(1800)).await, Some(0), "{}", hub.log());
    let sigterm_s = t.elapsed().as_secs_f64();
    eprintln!("SIGTERM: the hub exited after {sigterm_s:.1} s");
    drop(owners);
    let filter = format!("label=io.troop-hub.hub={}", hub.id);
    hub.eventually("nothing left on either node", Duration::from_secs(120), async || {
        let services = docker_ok(&["service", "ls", "-q", "--filter", &filter]);
        let manager = docker_ok(&["ps", "-aq", "--filter", &filter]);
        let worker = Worker::docker_ok(&["ps", "-aq", "--filter", "label=io.troop-hub.managed=true"]);
        if services.is_empty() && manager.is_empty() && worker.is_empty() {
            Ok(())
        } else {
            Err(format!("services {services:?}, manager containers {manager:?}, worker containers {worker:?}"))
        }
    })
    .await;
    eprintln!("per node {per_node}: started {started_s:.0} s, SIGTERM {sigterm_s:.1} s, nothing left");
}
