//! Sessions per host (`cargo bench --bench scale`): one hub grows to N = 10, 100, 250, 500 and
//! 1,000 idle sessions (`SCALE_STEPS`), each with its owner's connection held open as performers
//! do, and at each N measures, against the engine's or a trivial server's floor at the same N:
//!
//! - the next session's start, request to reply, cold (pool off) and warm (a pool of 4), and
//!   the engine's own create + start + accept of the same image with a published port;
//! - ending one session: its owner's kill to its container gone;
//! - queries from 256 clients, closed loop and paced at 10,000 q/s, against the query floor;
//!   paced again with the clients' threads at nice -10 (standing in for remote performers),
//!   with the hub and the floor at nice -10 too, and with the clients on core 0 and the hub and
//!   the floor on core 1; for each hub run also the time inside the hub (its query histogram);
//! - where the cold starts' time went inside the hub (its `container ready` log line);
//! - at rest: hub RSS and CPU, the engine's CPU, host memory per session (MemAvailable) and
//!   each process name's PSS; iptables rules; `docker ps` time;
//! - the engine stopped for 4 s (SIGSTOP): what a start and queries get meanwhile.
//!
//! At the largest N: the hub SIGKILLed and started again (adoption time, every session still
//! answering on its port), then SIGTERM (time until it exits and nothing is left).
//! `SCALE_FRONT_DOOR=1` runs the hub with `front_door: on` (nothing published; the engine
//! floor then publishes nothing either).
//! Prints a table and writes `target/bench-scale.json`. Run it as root (PSS of the engine's
//! processes, iptables); the userland proxy's setting is the engine's (`docker info`).

mod common;

use common::measure::*;
use common::{metric, TestHub};
use serde_json::json;
use std::time::{Duration, Instant};
use troop_hub::admin::{self, start_session, Owner};

/// Samples per measured start kind at each N: 60, so that p99 is the second largest, not the
/// largest.
const SAMPLES: usize = 60;
/// Sessions started at once while growing to the next N.
const GROW_AT_ONCE: usize = 4;

fn iptables_rules() -> usize {
    let out = std::process::Command::new("iptables-save").output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.starts_with("-A")).count()).unwrap_or(0)
}

/// The hub's config with `warm_pool` set, applied by the hub's reload (checked every second).
async fn set_pool(hub: &TestHub, members: usize) {
    let yaml = std::fs::read_to_string(hub.config_path()).expect("hub.yaml");
    let mut kept: Vec<&str> = yaml.lines().filter(|l| !l.starts_with("warm_pool:")).collect();
    let line = format!("warm_pool: {members}");
    kept.push(&line);
    std::fs::write(hub.config_path(), kept.join("\n") + "\n").expect("write hub.yaml");
    hub.eventually("the pool's new size", Duration::from_secs(30), async || {
        let m = common::http(hub.http, "GET", "/metrics", None, None).await.body;
        let (target, ready) = (metric(&m, "troop_hub_pool_target"), metric(&m, "troop_hub_pool_ready"));
        let starting = metric(&m, "troop_hub_pool_starting");
        let done = if members == 0 { ready + starting.max(0.0) <= 0.0 } else { ready >= members as f64 };
        if target as usize == members && done {
            Ok(())
        } else {
            Err(format!("target {target}, ready {ready}, starting {starting}"))
        }
    })
    .await;
}

/// The container id of session `name`.
fn container_of(hub: &TestHub, name: &str) -> Option<String> {
    let filter = format!("label=io.troop-hub.session={name}");
    let hub_filter = format!("label=io.troop-hub.hub={}", hub.id);
    let out = common::docker(&["ps", "-q", "--no-trunc", "--filter", &hub_filter, "--filter", &filter]);
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().map(str::to_string)
}

/// Kill by the owner to its container gone.
async fn end_one(hub: &TestHub, owner: Owner, name: &str) -> Duration {
    let id = container_of(hub, name).expect("the session's container");
    let t = Instant::now();
    owner.kill().await;
    hub.eventually("the ended session's container to go", Duration::from_secs(60), async || {
        let out = common::docker(&["inspect", "-f", "{{.State.Status}}", &id]);
        if out.status.success() {
            Err(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            Ok(())
        }
    })
    .await;
    t.elapsed()
}

fn main() {
    if std::env::var_os("BENCH_QUERY_FLOOR").is_some() {
        return serve_query_floor();
    }
    let steps = steps_from_env("SCALE_STEPS", "10,100,250,500,1000");
    let most = steps.iter().copied().max().unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let (clients_rt, pinned_rt) = (generator(-10, &[]), generator(-10, &[0]));
    let (generator, pinned) = (clients_rt.handle().clone(), pinned_rt.handle().clone());
    rt.block_on(async move {
        let proxies_before = pids_named("docker-proxy").len();
        let front_door = std::env::var("SCALE_FRONT_DOOR").is_ok_and(|v| v == "1");
        let mut base = format!("max_sessions: {}\nmax_sessions_per_address: {}\nidle_exit: null\norphans: adopt", most + 40, most + 40);
        if front_door {
            base.push_str("\nfront_door: on");
        }
        let mut hub = TestHub::new(&base);
        // The archive's bound must hold every live session at its largest: 1 MiB each here.
        let archive = hub.dir.path().join("archive.db");
        hub.extra_yaml.push_str(&format!(
            "\narchive: {{path: {}, max_session_bytes: 1m, max_total_bytes: {}m}}",
            archive.display(),
            most + 40
        ));
        hub.envs.push(("RUST_LOG".into(), "info".into()));
        let first = 30000 + (std::process::id() % 20) as u16 * 100;
        hub.ports = (first, first + most as u16 + 60);
        let floor_port = first + most as u16 + 70;
        let mut hub = hub.start().await;
        let _floors = FloorCleanup(hub.id.clone());
        let docker = bollard::Docker::connect_with_defaults().expect("docker").negotiate_version().await.expect("api");
        let engine: Vec<u32> = ["dockerd", "containerd"].iter().flat_map(|n| pids_named(n)).collect();
        let pid = hub.proc.as_ref().map(|p| p.id()).unwrap_or(0);
        let (mem0, (pss0, _)) = (proc_kib("/proc/meminfo", "MemAvailable:"), pss_by_process());
        let rules0 = iptables_rules();
        println!("hub ports {}-{}; docker-proxy processes before: {proxies_before}", hub.ports.0, hub.ports.1);
        let mut userland_proxy = false;
        println!(
            "\n{:>5} {:>7} | {:>15} {:>15} {:>15} | {:>8} | {:>17} {:>17} {:>10} | {:>7} {:>6} {:>6} {:>7} | {:>6} {:>8}",
            "N", "grow s", "cold p50/p99", "warm p50/p99", "floor p50/p99", "end ms", "q256 p50/p99 ms", "10k/s p50/p99", "floor p99",
            "hub MiB", "hub %", "eng %", "MiB/ses", "rules", "ps ms"
        );
        let mut owners: Vec<(String, Owner)> = Vec::new();
        let mut rows = Vec::new();
        for (step, &n) in steps.iter().enumerate() {
            // Grow to n, a few at a time.
            let t = Instant::now();
            grow(&hub, &mut owners, n, GROW_AT_ONCE).await;
            let grow = t.elapsed();
            userland_proxy = pids_named("docker-proxy").len() > proxies_before;
            tokio::time::sleep(Duration::from_secs(3)).await;

            // At rest.
            let hub_cpu = cpu_share(&[pid], Duration::from_secs(5)).await;
            let engine_cpu = cpu_share(&engine, Duration::from_secs(5)).await;
            // The whole machine at rest (shims, servers, proxies, the kernel): % of all cores.
            let host_busy = tokio::task::spawn_blocking(common::load::machine_busy_now).await.unwrap_or(f64::NAN);
            let rss = proc_kib(&format!("/proc/{pid}/status"), "VmRSS:") as f64 / 1024.0;
            let mem = proc_kib("/proc/meminfo", "MemAvailable:");
            let per_session = mem0.saturating_sub(mem) as f64 / n as f64 / 1024.0;
            let (pss, _) = pss_by_process();
            let parts: serde_json::Map<String, serde_json::Value> = SESSION_PROCESSES
                .iter()
                .map(|p| {
                    let grown = pss.get(*p).copied().unwrap_or(0) as f64 - pss0.get(*p).copied().unwrap_or(0) as f64;
                    (p.to_string(), json!(grown / n as f64 / 1024.0))
                })
                .collect();
            let rules = iptables_rules();
            let ps = tails((0..5).map(|_| timed_cli(&["ps", "-q"])).collect())[0];

            // The next session, cold, warm, and the engine's floor, alternated.
            let (mut cold, mut floor) = (Vec::new(), Vec::new());
            for k in 0..SAMPLES {
                floor.push(floor_once(&docker, floor_port, &hub.id, front_door).await);
                cold.push(next_start(&hub, &format!("c{step}-{k}")).await.expect("a cold start"));
            }
            set_pool(&hub, 4).await;
            let mut warm = Vec::new();
            for k in 0..SAMPLES {
                set_pool(&hub, 4).await; // full again
                warm.push(next_start(&hub, &format!("w{step}-{k}")).await.expect("a warm start"));
            }
            set_pool(&hub, 0).await;
            // The same warm starts as the hub timed them, request parsed to reply written.
            let log = hub.log();
            let mine = format!("session=w{step}-");
            let warm_lines: Vec<&str> = log.lines().filter(|l| l.contains(&mine)).collect();
            let warm_inside = tails(hub_timings(&warm_lines.join("\n"), "session ready (warm pool)"));
            // Where the cold starts' time went, as the hub timed it.
            let mine = format!("session=c{step}-");
            let cold_lines = log.lines().filter(|l| l.contains(&mine)).collect::<Vec<_>>().join("\n");
            let phase = |field: &str| tails(log_micros(&cold_lines, "container ready", field));
            let (p_create, p_start, p_ready) = (phase("create_us"), phase("start_us"), phase("ready_us"));
            let mut ends = Vec::new();
            for k in 0..5 {
                let name = format!("e{step}-{k}");
                let o = start_session(hub.addr, &name, "pw", Duration::from_secs(60)).await.expect("answered").expect("started");
                ends.push(end_one(&hub, o, &name).await);
            }

            // Queries: closed loop, then paced at 10,000 q/s, each against the floor.
            let floor_q = query_floor();
            query_warm_up(hub.addr).await;
            conntrack_room(90_000).await;
            failures();
            let (closed, closed_failed) = queries(hub.addr, &sources(step, 1, 4), 256, Duration::from_secs(2), None).await;
            let closed_qps = closed.len() as f64 / 2.0;
            let closed_why = failures();
            let page = || async { common::http(hub.http, "GET", "/metrics", None, None).await.body };
            let before = page().await;
            let (paced, paced_failed) = queries(hub.addr, &sources(step, 2, 2), 256, Duration::from_secs(2), Some(10_000.0)).await;
            let paced_own = hub_own_query_times(&before, &page().await);
            let paced_qps = paced.len() as f64 / 2.0;
            let paced_why = failures();
            conntrack_room(25_000).await;
            let (fpaced, floor_failed) =
                queries(floor_q.addr, &sources(step, 3, 2), 256, Duration::from_secs(2), Some(10_000.0)).await;
            let floor_why = failures();
            // The same offered load from clients at nice -10 (standing in for performers on
            // other machines), first against the hub and the floor as they are, then with
            // both at nice -10 too (what an operator's `Nice=-10` for the hub buys), then with
            // the clients on core 0 and the hub and the floor on core 1 (no core shared with
            // the clients; the sessions' shims still run on both). Each hub run also gives the
            // time inside the hub from its query histogram.
            let mut raised = Vec::new();
            for (kind, what) in [
                (5, "clients at nice -10"),
                (7, "clients, hub and floor at nice -10"),
                (9, "clients on core 0 at nice -10, hub and floor on core 1"),
            ] {
                let servers = [pid, floor_q.pid()];
                for p in servers {
                    match kind {
                        7 => {
                            renice_threads(p, -10);
                        }
                        9 => assert!(pin_threads(p, &[1]) > 0, "could not pin process {p} to core 1"),
                        _ => {}
                    }
                }
                let mut pair = Vec::new();
                for (k, addr) in [(kind, hub.addr), (kind + 1, floor_q.addr)] {
                    conntrack_room(25_000).await;
                    let from = sources(step, k, 2);
                    let before = page().await;
                    let clients = if kind == 9 { &pinned } else { &generator };
                    let run = clients.spawn(async move {
                        queries(addr, &from, 256, Duration::from_secs(2), Some(10_000.0)).await
                    });
                    let (lat, failed) = run.await.expect("the generator's queries");
                    pair.push((tails(lat), failed, hub_own_query_times(&before, &page().await)));
                }
                for p in servers {
                    renice_threads(p, 0);
                    pin_threads(p, &[]);
                }
                raised.push((what, pair[0], pair[1], failures()));
            }
            drop(floor_q);

            // The engine stopped for 4 s: a start and paced queries meanwhile.
            let dockerd = pids_named("dockerd");
            for p in &dockerd {
                let _ = std::process::Command::new("kill").args(["-STOP", &p.to_string()]).status();
            }
            let stalled_start = async {
                let t = Instant::now();
                let r = start_session(hub.addr, &format!("stall{step}"), "pw", Duration::from_secs(60)).await;
                let said = match r {
                    Ok(Ok(o)) => {
                        o.kill().await;
                        "started".to_string()
                    }
                    Ok(Err(e)) => e,
                    Err(e) => format!("client: {e}"),
                };
                (t.elapsed(), said)
            };
            let stall_sources = sources(step, 4, 1);
            let stalled_queries = queries(hub.addr, &stall_sources, 256, Duration::from_secs(3), Some(2_000.0));
            let resume = async {
                tokio::time::sleep(Duration::from_secs(4)).await;
                for p in &dockerd {
                    let _ = std::process::Command::new("kill").args(["-CONT", &p.to_string()]).status();
                }
            };
            let ((stall_took, stall_said), (stall_q, stall_failed), ()) =
                tokio::join!(stalled_start, stalled_queries, resume);

            let cold = tails(cold);
            let warm = tails(warm);
            let floor = tails(floor);
            let end = tails(ends);
            let closed_t = tails(closed);
            let paced_t = tails(paced);
            let fpaced_t = tails(fpaced);
            let stall_t = tails(stall_q);
            println!(
                "{n:>5} {:>7.1} | {:>7.0}/{:<7.0} {:>7.2}/{:<7.2} {:>7.0}/{:<7.0} | {:>8.0} | {:>8.2}/{:<8.2} {:>8.2}/{:<8.2} {:>10.2} | {rss:>7.1} {:>6.1} {:>6.1} {per_session:>7.2} | {rules:>6} {ps:>8.0}",
                grow.as_secs_f64(), cold[0], cold[1], warm[0], warm[1], floor[0], floor[1], end[0],
                closed_t[0], closed_t[1], paced_t[0], paced_t[1], fpaced_t[1], hub_cpu * 100.0, engine_cpu * 100.0
            );
            println!(
                "      warm starts inside the hub p50/p99/max {:.2}/{:.2}/{:.2} ms; the machine at rest {host_busy:.1} % busy",
                warm_inside[0], warm_inside[1], warm_inside[2]
            );
            println!(
                "      cold starts inside the hub p50/p99 ms: place + create {:.0}/{:.0}, start {:.0}/{:.0}, until it accepts {:.1}/{:.1}",
                p_create[0], p_create[1], p_start[0], p_start[1], p_ready[0], p_ready[1]
            );
            println!(
                "      10k q/s inside the hub (accepted to answered, the wait for the request included): p99 under {:.2} ms, {:.2} % within 5 ms",
                paced_own.1,
                paced_own.0 * 100.0
            );
            for (what, (hub_t, hub_f, own), (floor_t, floor_f, _), why) in &raised {
                println!(
                    "      10k q/s, {what}: hub p50/p99/max {:.2}/{:.2}/{:.1} ms ({hub_f} failed; inside the hub p99 under {:.2} ms, {:.2} % within 5 ms), floor {:.2}/{:.2}/{:.1} ({floor_f} failed) {why}",
                    hub_t[0], hub_t[1], hub_t[2], own.1, own.0 * 100.0, floor_t[0], floor_t[1], floor_t[2]
                );
            }
            if closed_failed + paced_failed + floor_failed > 0 {
                println!("      failed queries: closed loop {closed_why}; paced {paced_why}; floor {floor_why}");
            }
            println!(
                "      queries closed {closed_qps:.0}/s ({closed_failed} failed), paced {paced_qps:.0}/s ({paced_failed} failed, max {:.1} ms); \
                 engine stopped 4 s: queries p99 {:.2} ms max {:.1} ms ({stall_failed} failed), a start took {:.1} s: {stall_said}",
                paced_t[2], stall_t[1], stall_t[2], stall_took.as_secs_f64()
            );
            rows.push(json!({
                "n": n, "grow_seconds": grow.as_secs_f64(),
                "start_cold_ms": cold, "start_warm_ms": warm, "start_warm_inside_hub_ms": warm_inside, "engine_floor_ms": floor, "end_one_ms": end,
                "queries_closed_256": {"qps": closed_qps, "ms": closed_t, "failed": closed_failed},
                "queries_paced_10k": {"qps": paced_qps, "ms": paced_t, "failed": paced_failed, "floor_ms": fpaced_t, "floor_failed": floor_failed},
                "query_failures": {"closed": closed_why, "paced": paced_why, "floor": floor_why},
                "queries_paced_10k_hub_own": {"p99_under_ms": paced_own.1, "within_5ms": paced_own.0},
                "queries_paced_10k_variants": raised.iter().map(|(what, (hub_t, hub_f, own), (floor_t, floor_f, _), _)| json!({
                    "what": what, "ms": hub_t, "failed": hub_f, "hub_own_p99_under_ms": own.1, "hub_own_within_5ms": own.0,
                    "floor_ms": floor_t, "floor_failed": floor_f,
                })).collect::<Vec<_>>(),
                "cold_start_phases_ms": {"place_and_create": p_create, "start": p_start, "until_accepts": p_ready},
                "hub_rss_mib": rss, "hub_cpu_share": hub_cpu, "engine_cpu_share": engine_cpu, "host_busy_percent": host_busy,
                "host_mib_per_session": per_session, "pss_mib_per_session": parts,
                "iptables_rules": rules, "iptables_rules_before": rules0, "docker_ps_ms": ps,
                "engine_stopped_4s": {"start_seconds": stall_took.as_secs_f64(), "start_said": stall_said, "queries_ms": stall_t, "queries_failed": stall_failed},
            }));
        }

        // A restart with every session live: adoption, then each still answers on its port.
        let n = owners.len();
        let adopted = restart_and_adopt(&mut hub, n, Duration::from_secs(300)).await;
        let mut answering = 0;
        for (name, _) in &owners {
            let v = admin::request(hub.addr, &json!({"type": "query", "name": name}), common::T).await.expect("query");
            let port = v["result"][1].as_u64().unwrap_or(0) as u16;
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                answering += 1;
            }
        }
        drop(owners);
        let new_pid = hub.proc.as_ref().map(|p| p.id()).unwrap_or(0);
        let rss_after = proc_kib(&format!("/proc/{new_pid}/status"), "VmRSS:") as f64 / 1024.0;
        println!(
            "\nuserland proxy {}, front door {}; restart with {n} sessions: adopted in {:.1} s, {answering} of {n} answer on their ports; hub RSS {rss_after:.1} MiB",
            if userland_proxy { "on" } else { "off" },
            if front_door { "on" } else { "off" },
            adopted.as_secs_f64()
        );

        // SIGTERM: until the hub exits, and until nothing of it is left. Each server's exit
        // costs Docker 20.10 a walk of the connection-tracking table, which the queries above
        // filled: its size is part of the figure.
        let table = conntrack("nf_conntrack_count").unwrap_or(0);
        let t = Instant::now();
        hub.signal("TERM");
        hub.wait_exit(Duration::from_secs(1800)).await;
        let exited = t.elapsed();
        let left = hub.containers().len();
        println!(
            "SIGTERM with {n} sessions: the hub exited after {:.1} s; {left} containers left (connection-tracking table: {table} entries)",
            exited.as_secs_f64()
        );
        let report = json!({"userland_proxy": userland_proxy, "front_door": front_door, "steps": rows,
            "restart": {"sessions": n, "adopted_seconds": adopted.as_secs_f64(), "answering": answering, "hub_rss_mib": rss_after},
            "sigterm": {"sessions": n, "exit_seconds": exited.as_secs_f64(), "containers_left": left, "conntrack_entries": table}});
        let out = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-scale.json");
        let _ = std::fs::write(out, serde_json::to_string_pretty(&report).unwrap_or_default());
        assert_eq!(left, 0, "containers left after SIGTERM");
    });
}
