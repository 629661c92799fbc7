//! The hub as the sessions' front door, measured before it is built (`cargo bench --bench
//! front_door`): would relaying performers' bytes through the hub's own process (accept on the
//! session's port, splice to the container's address on the sessions' network) cost performers
//! latency, against the published port Docker gives them today (docker-proxy, or DNAT with the
//! userland proxy off: whatever this engine does)? Prints a table, writes
//! `target/bench-front-door.json`.
//!
//! One session; two performers through the published port (A, B: the baseline) and two through
//! a relay in this process on a runtime thread of its own (C, D: a `copy_bidirectional` per
//! connection to the container's address, as the hub would run it). 20 times a second, in turn,
//! A inserts a token and B receives it, then C inserts and D receives, for BENCH_PHASE_SECS
//! (default 10). Also the time to connect and log in, 20 times each way.

mod common;

use common::load::{latency_table, receive_token as receive, synced};
use common::{TestHub, T};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use troop_hub::admin::start_session;
use troop_server::client::TroopClient;

const PW: &str = "pw";

/// The container's own address on the sessions' network.
fn container_addr(hub: &TestHub) -> SocketAddr {
    let id = hub.containers().into_iter().next().expect("the session's container");
    let ip = common::docker_ok(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &id]);
    let port = troop_hub::config::Config::default().session_port;
    SocketAddr::new(ip.trim().parse().expect("the container's address"), port)
}

/// A relay on a thread of its own: every connection to the returned address is spliced to
/// `to` (bytes both ways, until either side closes).
fn relay(to: SocketAddr) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("relay runtime");
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("relay listens");
            let _ = tx.send(l.local_addr().expect("relay address"));
            while let Ok((mut inbound, _)) = l.accept().await {
                let _ = inbound.set_nodelay(true);
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await else { return };
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
    });
    rx.recv().expect("the relay's address")
}

/// One edit from `from`, until `to` has it; everyone else catches up after the clock stops.
async fn one_edit(from: &mut TroopClient, to: &mut TroopClient, others: [&mut TroopClient; 2], token: &str) -> u64 {
    let t0 = Instant::now();
    from.insert(0, token).await.expect("types");
    receive(to, token).await;
    let took = t0.elapsed().as_nanos() as u64;
    synced(from).await;
    for c in others {
        receive(c, token).await;
    }
    took
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let phase = Duration::from_secs(std::env::var("BENCH_PHASE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(10));
    let hub = TestHub::new("archive: off\n").start().await;
    let _owner = start_session(hub.addr, "door", PW, T).await.expect("hub answered").expect("started");
    let published = SocketAddr::from(([127, 0, 0, 1], _owner.port));
    let relayed = relay(container_addr(&hub));

    // Connect and log in, each way in turn.
    let (mut login_pub, mut login_relay) = (Vec::new(), Vec::new());
    for k in 0..20 {
        for (addr, out) in [(published, &mut login_pub), (relayed, &mut login_relay)] {
            let t0 = Instant::now();
            let c = TroopClient::join(addr, &format!("j{k}"), PW, T).await.expect("join");
            out.push(t0.elapsed().as_nanos() as u64);
            drop(c);
        }
    }

    let mut a = TroopClient::join(published, "A", PW, T).await.expect("A");
    let mut b = TroopClient::join(published, "B", PW, T).await.expect("B");
    let mut c = TroopClient::join(relayed, "C", PW, T).await.expect("C");
    let mut d = TroopClient::join(relayed, "D", PW, T).await.expect("D");
    for x in [&mut a, &mut b, &mut c, &mut d] {
        while x.try_recv().await.expect("recv").is_some() {}
        synced(x).await;
    }
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < phase {
        let tick = Instant::now();
        n += 1;
        direct.push(one_edit(&mut a, &mut b, [&mut c, &mut d], &format!("a{n} ")).await);
        through.push(one_edit(&mut c, &mut d, [&mut a, &mut b], &format!("c{n} ")).await);
        tokio::time::sleep(Duration::from_millis(50).saturating_sub(tick.elapsed())).await;
    }

    let rows = latency_table(vec![
        vec![("edit, published port (baseline)", direct), ("edit, relayed by a process like the hub", through)],
        vec![("connect + login, published port", login_pub), ("connect + login, relayed", login_relay)],
    ]);
    let out = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-front-door.json");
    let _ = std::fs::write(out, serde_json::to_string_pretty(&json!({"rows": rows})).unwrap_or_default());
}
