//! Hub benchmark against the real Docker engine (`cargo bench --bench hub`). Prints a table,
//! writes `target/bench-hub.json`. Every figure comes with a baseline measured in the same run:
//!
//! - start latency, request to `address` reply (sent once the server accepts connections),
//!   sequential (alternated with the floor) and 8 at a time, against the engine's own floor:
//!   create + start of the same image with the same port binding through the Engine API alone,
//!   until the container's port accepts;
//! - the cold start's anatomy (`BENCH_SECTIONS=anatomy`): the floor with the hub's container
//!   settings added one at a time (network, limits, hardening, log rotation, control secret),
//!   then the hub, alternated round by round; when the engine keeps containers on its default
//!   bridge apart (`"icc": false`), also a hub with `network: bridge`;
//! - query throughput and latency with 1, 32 and 256 concurrent clients (one request per
//!   connection, as Troop does), against a trivial server (with the hub's accept queue and
//!   runtime, in a process of its own) that answers every connection with a fixed frame; closed loop (each client sends its next query
//!   when the last is answered: throughput) and paced (256 clients offering a fixed rate: tails);
//! - warm pool: a second hub with `warm_pool`: request to reply and request to a performer's
//!   login answered when a ready member is taken (on a quiet hub, and back to back with the
//!   previous session's removal), against cold starts (pool off) and the engine floor of the
//!   same run; a burst of 50 starts at once; the refill rate;
//! - density: sessions started up to the cap (BENCH_DENSITY, default 200), host memory per
//!   session (MemAvailable before and after) and what it is made of (each process name's PSS
//!   growth per session: shim, troop-server, docker-proxy, fuse-overlayfs, the engine, the hub),
//!   hub RSS, time to reach the cap and to clean up.

mod common;

use common::measure::*;
use common::{metric, TestHub};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use troop_hub::admin::start_session;

const STARTS: usize = 50;

/// The cold start's anatomy: the floor, then the hub's container settings added one at a time,
/// then the hub itself, each `rounds` times, alternated so that drift hits them alike.
/// With `bridge_hub` (a hub with `network: bridge`), also that hub and the floor with every
/// setting but the network.
async fn anatomy(
    docker: &bollard::Docker,
    hub: &TestHub,
    bridge_hub: Option<&TestHub>,
    rounds: usize,
) -> Vec<(&'static str, Vec<Duration>)> {
    let all_but_network =
        Extras { network: false, limits: true, hardening: true, logs: true, control: true, unpublished: false };
    let steps: [(&str, Extras); 6] = [
        ("engine floor (default bridge)", Extras::default()),
        ("+ the hub's network (ICC off)", Extras { network: true, ..Default::default() }),
        ("+ limits", Extras { network: true, limits: true, ..Default::default() }),
        ("+ hardening", Extras { network: true, limits: true, hardening: true, ..Default::default() }),
        (
            "+ log rotation",
            Extras { network: true, limits: true, hardening: true, logs: true, control: false, unpublished: false },
        ),
        (
            "+ control secret (locked)",
            Extras { network: true, limits: true, hardening: true, logs: true, control: true, unpublished: false },
        ),
    ];
    let mut out: Vec<(&'static str, Vec<Duration>)> = steps.iter().map(|(n, _)| (*n, Vec::new())).collect();
    out.push(("the hub (request to reply)", Vec::new()));
    if bridge_hub.is_some() {
        out.push(("default bridge, every setting but the network", Vec::new()));
        out.push(("the hub on the default bridge (engine ICC off)", Vec::new()));
    }
    for round in 0..rounds {
        for (k, (_, extras)) in steps.iter().enumerate() {
            out[k].1.push(engine_start(docker, hub.ports.1, &hub.id, *extras).await);
        }
        out[steps.len()].1.push(hub_cold_start(hub, &format!("a{round}")).await);
        if let Some(bridge_hub) = bridge_hub {
            out[steps.len() + 1].1.push(engine_start(docker, hub.ports.1, &hub.id, all_but_network).await);
            out[steps.len() + 2].1.push(hub_cold_start(bridge_hub, &format!("b{round}")).await);
        }
    }
    out
}

/// One cold start through `hub`, request to reply; the session is ended and its container
/// gone before this returns.
async fn hub_cold_start(hub: &TestHub, name: &str) -> Duration {
    let t = Instant::now();
    let o = start_session(hub.addr, name, "pw", Duration::from_secs(30)).await.expect("answered");
    let took = t.elapsed();
    if let Ok(o) = o {
        o.kill().await;
    }
    hub.wait_containers(0).await;
    took
}

/// Starts `n` sessions, `parallel` at a time; each batch ends right after its replies.
async fn hub_starts(hub: &TestHub, n: usize, parallel: usize, tag: &str) -> Vec<Duration> {
    let mut out = Vec::new();
    let mut k = 0;
    while k < n {
        let batch: Vec<_> = (k..(k + parallel).min(n))
            .map(|i| {
                let addr = hub.addr;
                let name = format!("{tag}{i}");
                tokio::spawn(async move {
                    let t = Instant::now();
                    let o = start_session(addr, &name, "pw", Duration::from_secs(30)).await.expect("answered");
                    (t.elapsed(), o)
                })
            })
            .collect();
        let mut owners = Vec::new();
        for b in batch {
            let (d, o) = b.await.expect("task");
            owners.push(o.unwrap_or_else(|e| panic!("start refused: {e}")));
            out.push(d);
        }
        for o in owners {
            o.kill().await;
        }
        hub.wait_containers(0).await;
        k += parallel;
    }
    out
}

async fn pool_ready(hub: &TestHub) -> (f64, f64) {
    let m = common::http(hub.http, "GET", "/metrics", None, None).await.body;
    (metric(&m, "troop_hub_pool_ready"), metric(&m, "troop_hub_pool_target"))
}

/// Waits until the pool is full (ready == target > 0); returns how long that took.
async fn pool_full(hub: &TestHub) -> Duration {
    let t = Instant::now();
    loop {
        let (ready, target) = pool_ready(hub).await;
        if target > 0.0 && ready >= target {
            return t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(120), "the pool did not fill: {}", hub.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Warm starts one at a time, each once the pool is full again: request to reply, and
/// request to a performer's login answered. `quiet`: also once the previous session's
/// container is gone (else its removal may still keep the engine busy on the same cores).
async fn warm_starts(hub: &TestHub, n: usize, quiet: bool, tag: &str) -> (Vec<Duration>, Vec<Duration>) {
    let (mut reply, mut login) = (Vec::new(), Vec::new());
    for i in 0..n {
        pool_full(hub).await;
        if quiet {
            let (_, target) = pool_ready(hub).await;
            hub.wait_containers(target as usize).await;
        }
        let t = Instant::now();
        let o = start_session(hub.addr, &format!("{tag}{i}"), "pw", Duration::from_secs(30)).await.expect("answered");
        let o = o.unwrap_or_else(|e| panic!("warm start refused: {e}"));
        reply.push(t.elapsed());
        let addr = SocketAddr::from(([127, 0, 0, 1], o.port));
        troop_server::client::login(addr, "p", "pw").await.expect("the performer's login is answered");
        login.push(t.elapsed());
        o.kill().await;
    }
    (reply, login)
}

/// `n` starts at once; returns the successes' latencies and the refusals.
async fn burst(hub: &TestHub, n: usize) -> (Vec<Duration>, usize, Duration) {
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let addr = hub.addr;
            tokio::spawn(async move {
                let t = Instant::now();
                let o = start_session(addr, &format!("b{i}"), "pw", Duration::from_secs(60)).await;
                (t.elapsed(), o)
            })
        })
        .collect();
    let (mut ok, mut failed, mut owners) = (Vec::new(), 0, Vec::new());
    for task in tasks {
        match task.await.expect("task") {
            (d, Ok(Ok(o))) => {
                ok.push(d);
                owners.push(o);
            }
            (_, other) => {
                failed += 1;
                println!("burst start failed: {:?}", other.map(|r| r.err()));
            }
        }
    }
    let all = t0.elapsed();
    for o in owners {
        o.kill().await;
    }
    (ok, failed, all)
}

fn main() {
    if std::env::var_os("BENCH_QUERY_FLOOR").is_some() {
        return serve_query_floor();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let density: usize = std::env::var("BENCH_DENSITY").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
        let mut report = serde_json::Map::new();

        let mut hub = TestHub::new(&format!("max_sessions: {}\nidle_exit: null", density.max(8)));
        // The hub logs as it does for an operator (the tests' debug level logs every request).
        hub.envs.push(("RUST_LOG".into(), "info".into()));
        let first = 21000 + (std::process::id() % 50) as u16 * 10;
        hub.ports = (first, first + density.max(8) as u16 + 8);
        let hub = hub.start().await;
        let _floors = FloorCleanup(hub.id.clone());
        let docker = bollard::Docker::connect_with_defaults().expect("docker").negotiate_version().await.expect("api");

        // BENCH_SECTIONS=start,anatomy,queries,paced,density runs only those (default: all; start includes the warm pool).
        let sections = std::env::var("BENCH_SECTIONS").unwrap_or_default();
        let want = |s: &str| sections.is_empty() || sections.split(',').any(|x| x.trim() == s);

        // Start latency.
        if want("start") {
        // The floor and the hub's sequential starts alternate, so that drift hits both alike.
        let (mut floor, mut seq) = (Vec::new(), Vec::new());
        for i in 0..STARTS {
            floor.push(floor_once(&docker, hub.ports.1, &hub.id, false).await);
            seq.extend(hub_starts(&hub, 1, 1, &format!("s{i}-")).await);
        }
        let par = hub_starts(&hub, STARTS + 6, 8, "p").await;
        let (f50, f90, f99) = summary(floor);
        let (s50, s90, s99) = summary(seq);
        let (p50, p90, p99) = summary(par);
        println!("start latency (ms)        p50      p90      p99");
        println!("engine floor          {f50:8.1} {f90:8.1} {f99:8.1}");
        println!("hub sequential        {s50:8.1} {s90:8.1} {s99:8.1}   hub/floor p50 {:.2}", s50 / f50);
        println!("hub 8 at a time       {p50:8.1} {p90:8.1} {p99:8.1}");
        report.insert(
            "start_ms".into(),
            json!({"floor": [f50, f90, f99], "sequential": [s50, s90, s99], "parallel8": [p50, p90, p99],
                   "ratio_sequential_p50_to_floor": s50 / f50}),
        );

        // Warm pool: a second hub with a pool of 4 (the first one has none: its starts are cold).
        let mut warm_hub = TestHub::new("max_sessions: 60\nwarm_pool: 4\nidle_exit: null");
        warm_hub.envs.push(("RUST_LOG".into(), "info".into()));
        let wfirst = hub.ports.1 + 20;
        warm_hub.ports = (wfirst, wfirst + 70);
        let warm_hub = warm_hub.start().await;
        let fill = pool_full(&warm_hub).await;
        let (reply, login) = warm_starts(&warm_hub, STARTS, true, "w").await;
        // The same starts as the hub timed them, from request parsed to reply written.
        let (h50, h90, h99) = summary(hub_timings(&warm_hub.log(), "session ready (warm pool)"));
        let (busy, _) = warm_starts(&warm_hub, STARTS, false, "v").await;
        let (w50, w90, w99) = summary(reply);
        let (l50, l90, l99) = summary(login);
        let (v50, v90, v99) = summary(busy);
        let (ok, failed, all) = burst(&warm_hub, 50).await;
        let burst_n = ok.len();
        let (b50, b90, b99) = summary(ok);
        // Refill: from the burst's end, the time until the pool is full again.
        let refill = pool_full(&warm_hub).await;
        println!("\nwarm pool (4 members)     p50      p90      p99");
        println!("request to reply      {w50:8.2} {w90:8.2} {w99:8.2}   cold/warm p50 {:.0}x  floor/warm p50 {:.0}x", s50 / w50, f50 / w50);
        println!("inside the hub        {h50:8.2} {h90:8.2} {h99:8.2}   (its log's elapsed_us)");
        println!("reply, back to back   {v50:8.2} {v90:8.2} {v99:8.2}   (the previous session's removal may overlap)");
        println!("request to login      {l50:8.2} {l90:8.2} {l99:8.2}");
        println!("burst of 50 at once   {b50:8.1} {b90:8.1} {b99:8.1}   {burst_n} ok, {failed} failed, all in {:.2} s", all.as_secs_f64());
        println!("fill 4 members from empty {:.2} s at hub start; refilled after the burst in {:.2} s", fill.as_secs_f64(), refill.as_secs_f64());
        report.insert(
            "warm_pool_ms".into(),
            json!({"reply": [w50, w90, w99], "inside_hub": [h50, h90, h99], "reply_back_to_back": [v50, v90, v99], "login": [l50, l90, l99], "cold_reply": [s50, s90, s99], "floor": [f50, f90, f99],
                   "ratio_cold_to_warm_p50": s50 / w50, "burst50": {"ok": burst_n, "failed": failed, "latency": [b50, b90, b99], "seconds": all.as_secs_f64()},
                   "fill4_seconds": fill.as_secs_f64(), "refill_after_burst_seconds": refill.as_secs_f64()}),
        );
        drop(warm_hub);

        }

        // What a cold start is made of, step by step.
        if want("anatomy") {
            let rounds: usize = std::env::var("BENCH_ANATOMY_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
            // With the engine's inter-container traffic off ("icc": false), a hub on Docker's
            // default bridge (`network: bridge`) too: no network of its own to join.
            let bridge_apart = docker
                .inspect_network("bridge", None::<bollard::query_parameters::InspectNetworkOptions>)
                .await
                .ok()
                .and_then(|n| n.options)
                .and_then(|o| o.get("com.docker.network.bridge.enable_icc").cloned())
                .as_deref()
                == Some("false");
            let bridge_hub = if bridge_apart {
                let mut h = TestHub::new("network: bridge\nwarm_pool: 0\nidle_exit: null");
                h.envs.push(("RUST_LOG".into(), "info".into()));
                h.ports = (hub.ports.1 + 100, hub.ports.1 + 104);
                Some(h.start().await)
            } else {
                println!("\n(the engine lets containers on its default bridge reach each other: the hub on it is not measured)");
                None
            };
            let steps = anatomy(&docker, &hub, bridge_hub.as_ref(), rounds).await;
            let f50 = summary(steps[0].1.clone()).0;
            println!("\ncold start anatomy ({rounds} rounds, alternated)   p50 ms   p90 ms   /floor p50");
            let mut rows = Vec::new();
            for (name, times) in steps {
                let (a, b, _) = summary(times);
                println!("{name:<40} {a:8.1} {b:8.1} {:8.2}", a / f50);
                rows.push(json!({"step": name, "p50": a, "p90": b, "ratio_to_floor_p50": a / f50}));
            }
            report.insert("cold_start_anatomy_ms".into(), json!(rows));
        }

        // Query throughput.
        if want("queries") {
        let run = Duration::from_secs(2);
        let floor = query_floor();
        let floor_addr = floor.addr;
        println!("\nqueries   clients   hub q/s   p50 ms   p99 ms   max ms  failed   floor q/s  floor p99  floor max  failed   hub/floor q/s");
        query_warm_up(hub.addr).await;
        let mut rows = Vec::new();
        for (k, clients) in [1usize, 32, 256].into_iter().enumerate() {
            // Each level and side from 4 fresh loopback addresses (a client's own, from 4 on).
            let sources = |side: u8| -> Vec<std::net::IpAddr> {
                (0..4).map(|n| std::net::IpAddr::from([127, 0, 10 + k as u8, side * 10 + n])).collect()
            };
            // At most about 40,000 q/s here (20,000 for one client), on each side.
            let most = (clients as f64 * 20_000.0).min(40_000.0);
            conntrack_room(2 * (most * run.as_secs_f64()) as u64).await;
            let (lat, failed) = queries(hub.addr, &sources(1), clients, run, None).await;
            let (floor_lat, ffailed) = queries(floor_addr, &sources(2), clients, run, None).await;
            let qps = lat.len() as f64 / run.as_secs_f64();
            let fqps = floor_lat.len() as f64 / run.as_secs_f64();
            let qmax = lat.iter().max().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
            let fmax = floor_lat.iter().max().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
            let (q50, _, q99) = summary(lat);
            let (_, _, f99) = summary(floor_lat);
            println!(
                "          {clients:7} {qps:9.0} {q50:8.3} {q99:8.3} {qmax:8.1} {failed:7} {fqps:11.0} {f99:10.3} {fmax:10.1} {ffailed:7} {:13.2}",
                qps / fqps
            );
            rows.push(json!({"clients": clients, "qps": qps, "p50_ms": q50, "p99_ms": q99, "max_ms": qmax, "failed": failed,
                             "floor_qps": fqps, "floor_p99_ms": f99, "floor_max_ms": fmax, "floor_failed": ffailed}));
        }
        report.insert("queries".into(), json!(rows));
        }

        // Paced queries (also alone: BENCH_SECTIONS=paced; BENCH_PACED_RATES=2650,20000 picks the rates).
        if want("queries") || want("paced") {
        let floor = query_floor();
        let floor_addr = floor.addr;
        query_warm_up(hub.addr).await;
        // Paced: 256 clients offering a fixed rate (the original hub's throughput at 256
        // clients, and about 4x that), each level from a loopback address of its own.
        println!("\npaced, 256 clients   offered q/s   hub q/s  p50 ms  p99 ms  max ms  failed   floor p50  floor p99  floor max  failed");
        let mut paced_rows = Vec::new();
        let paced_run = Duration::from_secs(2);
        let rates: Vec<f64> = match std::env::var("BENCH_PACED_RATES") {
            Ok(v) => v.split(',').map(|r| r.trim().parse().expect("BENCH_PACED_RATES: queries a second, comma-separated")).collect(),
            Err(_) => vec![2650.0, 10_000.0, 20_000.0],
        };
        for (k, rate) in rates.into_iter().enumerate() {
            // Fresh loopback addresses, each given at most 20,000 connections.
            let per_side = ((rate * paced_run.as_secs_f64() / 20_000.0).ceil() as u8).max(1);
            let sources = |side: u8| -> Vec<std::net::IpAddr> {
                (0..per_side).map(|n| std::net::IpAddr::from([127, 0, 100 + k as u8, side * 100 + n])).collect()
            };
            let connections = 2 * (rate * paced_run.as_secs_f64()) as u64;
            conntrack_room(connections).await;
            let (lat, failed) = queries(hub.addr, &sources(1), 256, paced_run, Some(rate)).await;
            let (flat, ffailed) = queries(floor_addr, &sources(2), 256, paced_run, Some(rate)).await;
            let qps = lat.len() as f64 / paced_run.as_secs_f64();
            let max = |v: &[Duration]| v.iter().max().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
            let (qmax, fmax) = (max(&lat), max(&flat));
            let (q50, _, q99) = summary(lat);
            let (f50, _, f99) = summary(flat);
            println!(
                "                     {rate:11.0} {qps:9.0} {q50:7.3} {q99:7.3} {qmax:7.1} {failed:7}   {f50:9.3} {f99:9.3} {fmax:9.1} {ffailed:7}"
            );
            paced_rows.push(json!({"clients": 256, "offered_qps": rate, "qps": qps, "p50_ms": q50, "p99_ms": q99,
                                   "max_ms": qmax, "failed": failed, "floor_p50_ms": f50, "floor_p99_ms": f99,
                                   "floor_max_ms": fmax, "floor_failed": ffailed}));
        }
        report.insert("queries_paced".into(), json!(paced_rows));

        }

        // Density.
        if want("density") {
        let pid = hub.proc.as_ref().map(|p| p.id()).unwrap_or(0);
        let status = format!("/proc/{pid}/status");
        let (mem0, rss0) = (proc_kib("/proc/meminfo", "MemAvailable:"), proc_kib(&status, "VmRSS:"));
        let (pss0, _) = pss_by_process();
        let t = Instant::now();
        let mut owners = Vec::new();
        for i in 0..density {
            match start_session(hub.addr, &format!("d{i}"), "pw", Duration::from_secs(30)).await.expect("answered") {
                Ok(o) => owners.push(o),
                Err(e) => {
                    println!("density stopped at {i}: {e}");
                    break;
                }
            }
        }
        let to_cap = t.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (mem1, rss1) = (proc_kib("/proc/meminfo", "MemAvailable:"), proc_kib(&status, "VmRSS:"));
        let n = owners.len().max(1) as f64;
        let per = mem0.saturating_sub(mem1) as f64 / n / 1024.0;
        // What a session is made of: each process name's PSS growth, per session.
        let (pss1, unreadable) = pss_by_process();
        if unreadable > 0 {
            println!("{unreadable} processes' memory could not be read (run the bench as root): the PSS figures miss them");
        }
        let parts: Vec<(&str, f64)> = SESSION_PROCESSES
            .iter()
            .map(|name| {
                let grown = pss1.get(*name).copied().unwrap_or(0) as f64 - pss0.get(*name).copied().unwrap_or(0) as f64;
                (*name, grown / n / 1024.0)
            })
            .collect();
        let pss_sum: f64 = parts.iter().map(|(_, v)| v).sum();
        let t = Instant::now();
        for o in owners.drain(..) {
            o.kill().await;
        }
        while !hub.containers().is_empty() {
            assert!(t.elapsed() < Duration::from_secs(300), "cleanup took over 5 minutes");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let cleanup = t.elapsed();
        println!(
            "\ndensity: {n} sessions in {:.1} s; host memory {per:.2} MiB per session; hub RSS {:.1} -> {:.1} MiB; cleanup {:.1} s",
            to_cap.as_secs_f64(),
            rss0 as f64 / 1024.0,
            rss1 as f64 / 1024.0,
            cleanup.as_secs_f64()
        );
        println!("PSS growth per session, MiB (sum {pss_sum:.2}; MemAvailable counts page cache as free):");
        for (name, mib) in &parts {
            println!("  {name:<16} {mib:>6.2}");
        }
        let pss: serde_json::Map<String, serde_json::Value> =
            parts.iter().map(|(name, mib)| (name.to_string(), json!(mib))).collect();
        report.insert(
            "density".into(),
            json!({"sessions": n, "seconds_to_cap": to_cap.as_secs_f64(), "host_mib_per_session": per,
                   "pss_mib_per_session": pss, "pss_sum_mib_per_session": pss_sum,
                   "hub_rss_mib": [rss0 as f64 / 1024.0, rss1 as f64 / 1024.0], "cleanup_seconds": cleanup.as_secs_f64()}),
        );
        }
        let out = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-hub.json");
        let _ = std::fs::write(out, serde_json::to_string_pretty(&serde_json::Value::Object(report)).unwrap_or_default());
    });
}
