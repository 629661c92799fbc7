//! A thousand sessions on this engine, end to end (ignored by default: about ten minutes on
//! 2 cores). Run it with
//! `cargo test --release --test scale -- --ignored --nocapture` (TROOP_HUB_SCALE_N sets the
//! number, default 1000; TROOP_HUB_SCALE_FRONT_DOOR=1 runs the hub with `front_door: on`).
//! Each session has its owner's connection held open; then the hub is SIGKILLed and started
//! again and adopts every one (each session's server still answers a Troop login on its port),
//! and a SIGTERM leaves no container and no network.

mod common;

use common::{metric, start_many, TestHub, T};
use serde_json::json;
use std::time::{Duration, Instant};
use troop_hub::admin;
use troop_server::client::ClientError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "ten minutes: cargo test --release --test scale -- --ignored"]
async fn a_thousand_sessions_start_survive_a_restart_and_leave_nothing() {
    let n: usize = std::env::var("TROOP_HUB_SCALE_N").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let front_door = std::env::var("TROOP_HUB_SCALE_FRONT_DOOR").is_ok_and(|v| v == "1");
    let mut hub = TestHub::new(&format!(
        "max_sessions: {n}\nmax_sessions_per_address: {n}\nidle_exit: null\norphans: adopt\nfront_door: {}",
        if front_door { "on" } else { "off" }
    ));
    let archive = hub.dir.path().join("archive.db");
    hub.extra_yaml
        .push_str(&format!("\narchive: {{path: {}, max_session_bytes: 1m, max_total_bytes: {n}m}}", archive.display()));
    hub.envs.push(("RUST_LOG".into(), "info".into()));
    // Below the kernel's ephemeral ports (32768 up): in them, outgoing connections took 154
    // ports of a 1,050-port range during a first run and the range ran out at 988 sessions.
    let first = 20000 + (std::process::id() % 10) as u16 * 1100;
    // A few spare: a port an outgoing connection holds is set aside and the next one taken.
    hub.ports = (first, first + n as u16 + 49);
    let mut hub = hub.start().await;

    let t = Instant::now();
    let owners = start_many(&hub, "s", n, Duration::from_secs(120)).await;
    eprintln!("{n} sessions started in {:.0} s", t.elapsed().as_secs_f64());

    hub.signal("KILL");
    hub.wait_exit(T).await;
    let t = Instant::now();
    hub.spawn().await;
    hub.eventually("every session adopted", Duration::from_secs(120), async || {
        let m = common::http(hub.http, "GET", "/metrics", None, None).await.body;
        let running = metric(&m, "troop_hub_sessions_running") as usize;
        if running == n {
            Ok(())
        } else {
            Err(format!("{running} of {n}"))
        }
    })
    .await;
    eprintln!("adopted {n} sessions in {:.1} s", t.elapsed().as_secs_f64());
    for i in 0..n {
        let v = admin::request(hub.addr, &json!({"type": "query", "name": format!("s{i}")}), T).await.expect("query");
        let port = v["result"][1].as_u64().unwrap_or(0) as u16;
        // A wrong password's refusal comes from the session's own server (through the front
        // door, when on): more than a port that accepts.
        let login = troop_server::client::login(([127, 0, 0, 1], port).into(), "probe", "wrong").await;
        assert!(matches!(login, Err(ClientError::Refused(-1))), "s{i} on {port} answered {login:?}");
    }
    drop(owners);

    let t = Instant::now();
    hub.signal("TERM");
    assert_eq!(hub.wait_exit(Duration::from_secs(600)).await, Some(0));
    eprintln!("SIGTERM: the hub exited after {:.1} s", t.elapsed().as_secs_f64());
    assert!(hub.containers().is_empty(), "containers left: {}", hub.containers().len());
    assert!(!hub.network_exists(), "a network left");
}
