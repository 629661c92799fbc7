//! Relay benchmark: the troop-server binary and N Troop protocol clients on loopback.
//!
//! `cargo bench -p troop-server --bench relay` prints, for N = 2, 8 and 32 clients:
//! relayed operations per second with every client editing as fast as its OT allows (one op
//! in flight each, as Troop's client), latency from send to arrival at every peer (p50/p99),
//! the same at a paced 1,000 ops/s, and the server's RSS idle and loaded.
//!
//! Baseline, measured in the same run: `floor`, a byte-forwarding relay (reads a chunk, writes
//! it to every connection; no parsing, no OT) driven the same way. `ratio` is troop-server's
//! throughput over the floor's at the same N. Writes the table as JSON to
//! `target/bench-relay.json`.
//!
//! Then the hub's control channel's cost to performers: for N = 2 and 8, the same unpaced run
//! on a server with the control secret, with and without one subscriber attached (reading
//! every event, on a thread of its own), alternated three times; the median of each measure,
//! and with the subscriber over without. Also the server process's CPU time per operation.
//! `cargo bench -p troop-server --bench relay -- control` runs only that table.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use troop_server::client::TroopClient;
use troop_server::control::ControlClient;
use troop_server::frame::Decoder;
use troop_server::message::{Body, Message};
use troop_server::ot::Operation;

const PW: &str = "bench";
const SECRET: &str = "0123456789abcdef0123456789abcdef";
const RUN: Duration = Duration::from_secs(3);
const T: Duration = Duration::from_secs(10);

/// Send times of operations, keyed by (client id, msg_id).
type Sent = Arc<Mutex<HashMap<(i64, i64), Instant>>>;

struct Server(Child, SocketAddr);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Server {
    async fn start() -> Server {
        Server::start_with(&[]).await
    }

    async fn start_with(envs: &[(&str, &str)]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // TROOP_BENCH_SERVER: another build of the server (to compare two builds under one load).
        let bin = std::env::var("TROOP_BENCH_SERVER").unwrap_or_else(|_| env!("CARGO_BIN_EXE_troop-server").into());
        let child = Command::new(bin)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--password", PW])
            .env("RUST_LOG", "warn")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn troop-server");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + T;
        while TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Server(child, addr)
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let k = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[k].as_secs_f64() * 1000.0
}

/// One op that keeps the document small: insert at the start, or delete the first character.
fn next_op(doc_len: u64, k: u64) -> Operation {
    let mut op = Operation::new();
    if doc_len > 64 && k % 2 == 1 {
        op.delete(1).retain(doc_len - 1);
    } else {
        op.insert("x").retain(doc_len);
    }
    op
}

/// Troop clients editing for RUN; `pace` is the total ops/s (None: as fast as OT allows).
async fn troop_run(addr: SocketAddr, n: usize, pace: Option<u64>) -> (u64, Vec<Duration>) {
    let sent: Sent = Arc::default();
    let mut clients = Vec::new();
    for k in 0..n {
        clients.push(TroopClient::join(addr, &format!("c{k}"), PW, T).await.expect("join"));
    }
    // Everyone processes the join traffic before the clock starts.
    for c in clients.iter_mut() {
        c.send(Body::Console { string: "go".into() }).await.unwrap();
    }
    for c in clients.iter_mut() {
        for _ in 0..n {
            c.recv_until_match(T, |_, m| matches!(m.body, Body::Console { .. })).await.unwrap();
        }
    }
    let start = Instant::now();
    let interval = pace.map(|rate| Duration::from_secs_f64(n as f64 / rate as f64));
    let mut tasks = Vec::new();
    for mut c in clients {
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut ops = 0u64;
            let mut next_send = Instant::now();
            while start.elapsed() < RUN {
                if c.is_synchronized() && Instant::now() >= next_send {
                    let len = c.document().chars().count() as u64;
                    let t0 = Instant::now();
                    if let Some(msg_id) = c.edit(next_op(len, ops)).await.expect("edit") {
                        sent.lock().unwrap().insert((c.id, msg_id), t0);
                    }
                    ops += 1;
                    if let Some(i) = interval {
                        next_send += i;
                    }
                }
                let wait = if c.is_synchronized() && interval.is_some() {
                    next_send.saturating_duration_since(Instant::now()).max(Duration::from_micros(50))
                } else {
                    T
                };
                match c.recv(wait).await {
                    Ok(Message { src_id, msg_id, body: Body::Operation { .. } }) => {
                        if let Some(t) = sent.lock().unwrap().get(&(src_id, msg_id)) {
                            latencies.push(t.elapsed());
                        }
                    }
                    Ok(_) => {}
                    Err(troop_server::client::ClientError::Timeout(_)) => {}
                    Err(e) => panic!("client failed: {e}"),
                }
            }
            (ops, latencies)
        }));
    }
    gather(tasks).await
}

/// Sums the clients' operation counts and merges their latencies, sorted.
async fn gather(tasks: Vec<tokio::task::JoinHandle<(u64, Vec<Duration>)>>) -> (u64, Vec<Duration>) {
    let mut total = 0;
    let mut all = Vec::new();
    for t in tasks {
        let (ops, lat) = t.await.expect("client task");
        total += ops;
        all.extend(lat);
    }
    all.sort();
    (total, all)
}

/// The floor: forwards every chunk read from any connection to all connections.
async fn floor_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, _) = broadcast::channel::<bytes::Bytes>(65536);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            stream.set_nodelay(true).unwrap();
            let (mut r, mut w) = stream.into_split();
            let mut rx = tx.subscribe();
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Ok(b) = rx.recv().await {
                    if w.write_all(&b).await.is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = r.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let _ = tx.send(bytes::Bytes::copy_from_slice(&buf[..n]));
                }
            });
        }
    });
    addr
}

/// Raw clients against the floor: each sends an encoded OPERATION and waits for its own echo.
async fn floor_run(addr: SocketAddr, n: usize) -> (u64, Vec<Duration>) {
    let sent: Sent = Arc::default();
    let mut streams = Vec::new();
    for _ in 0..n {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        streams.push(s);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (id, mut s) in streams.into_iter().enumerate() {
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let id = id as i64;
            let mut d = Decoder::new(1 << 20);
            let mut latencies = Vec::new();
            let mut ops = 0i64;
            while start.elapsed() < RUN {
                let op = next_op(100, ops as u64);
                let msg = Message { msg_id: ops, src_id: id, body: Body::Operation { operation: op, revision: ops } };
                sent.lock().unwrap().insert((id, ops), Instant::now());
                if s.write_all(msg.encode().as_bytes()).await.is_err() {
                    break;
                }
                'own: loop {
                    while let Ok(Some(m)) = d.next_message() {
                        if let Some(t) = sent.lock().unwrap().get(&(m.src_id, m.msg_id)) {
                            latencies.push(t.elapsed());
                        }
                        if m.src_id == id && m.msg_id == ops {
                            break 'own;
                        }
                    }
                    match tokio::time::timeout(T, s.read_buf(d.buffer())).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return (ops as u64, latencies),
                    }
                }
                ops += 1;
            }
            (ops as u64, latencies)
        }));
    }
    gather(tasks).await
}

/// What one unpaced run on a server with the control secret measured.
#[derive(Clone, Copy)]
struct ControlRun {
    ops_per_s: f64,
    p99_ms: f64,
    /// The server process's CPU time (user + system) per relayed operation.
    server_us_per_op: f64,
    /// p99 ms with the clients paced at 1,000 ops/s in all (a fresh server).
    paced_p99_ms: f64,
    events: u64,
}

impl ControlRun {
    /// Each measure's median over `runs` (the noise of a shared 2-core machine is large).
    fn median(runs: &[ControlRun]) -> ControlRun {
        let mid = |f: fn(&ControlRun) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        ControlRun {
            ops_per_s: mid(|r| r.ops_per_s),
            p99_ms: mid(|r| r.p99_ms),
            server_us_per_op: mid(|r| r.server_us_per_op),
            paced_p99_ms: mid(|r| r.paced_p99_ms),
            events: runs.iter().map(|r| r.events).sum(),
        }
    }
}

/// The server's user + system CPU time so far, in clock ticks (1/100 s).
fn cpu_ticks(server: &Server) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.0.id())).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let field = |k: usize| fields.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// A subscriber on a thread of its own (the hub is a process of its own), reading and parsing
/// every event until the server goes away; returns how many it got.
fn spawn_subscriber(addr: SocketAddr) -> std::thread::JoinHandle<u64> {
    let (ready, subscribed) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let ctl = ControlClient::connect(addr, SECRET, T).await.expect("control connection");
            let (_, mut events) = ctl.subscribe().await.expect("subscribe");
            let _ = ready.send(());
            let mut count = 0u64;
            while let Ok(Some(_)) = events.next().await {
                count += 1;
            }
            count
        })
    });
    subscribed.recv_timeout(T).expect("subscribed in time");
    thread
}

/// An unpaced run and a paced one, each on a fresh server with the control secret, with or
/// without a subscriber.
async fn control_run(n: usize, subscribe: bool) -> ControlRun {
    let server = Server::start_with(&[("TROOP_CONTROL_SECRET", SECRET)]).await;
    let subscriber = subscribe.then(|| spawn_subscriber(server.1));
    let before = cpu_ticks(&server);
    let (ops, lat) = troop_run(server.1, n, None).await;
    let cpu_us = (cpu_ticks(&server) - before) as f64 * 10_000.0;
    drop(server);
    let mut events = subscriber.map_or(0, |t| t.join().unwrap_or(0));
    let server = Server::start_with(&[("TROOP_CONTROL_SECRET", SECRET)]).await;
    let subscriber = subscribe.then(|| spawn_subscriber(server.1));
    let (_, paced) = troop_run(server.1, n, Some(1000)).await;
    drop(server);
    events += subscriber.map_or(0, |t| t.join().unwrap_or(0));
    ControlRun {
        ops_per_s: ops as f64 / RUN.as_secs_f64(),
        p99_ms: percentile(&lat, 0.99),
        server_us_per_op: cpu_us / ops.max(1) as f64,
        paced_p99_ms: percentile(&paced, 0.99),
        events,
    }
}

/// The control table: without / with a subscriber, alternated three times per N, medians.
async fn control_table() -> Vec<serde_json::Value> {
    println!(
        "\ncontrol channel: {:>3} {:>9} {:>9} {:>6} {:>8} {:>8} {:>6} {:>9} {:>8} {:>9} {:>8} {:>8}",
        "N", "ops/s", "+sub", "ratio", "p99 ms", "+sub", "ratio", "srv us/op", "+sub", "p99@1k ms", "+sub", "events"
    );
    let mut rows = Vec::new();
    for n in [2usize, 8] {
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            without.push(control_run(n, false).await);
            with.push(control_run(n, true).await);
        }
        let (without, with) = (ControlRun::median(&without), ControlRun::median(&with));
        let (rate_ratio, p99_ratio) = (with.ops_per_s / without.ops_per_s, with.p99_ms / without.p99_ms);
        println!(
            "                 {:>3} {:>9.0} {:>9.0} {:>6.3} {:>8.3} {:>8.3} {:>6.3} {:>9.2} {:>8.2} {:>9.3} {:>8.3} {:>8}",
            n,
            without.ops_per_s,
            with.ops_per_s,
            rate_ratio,
            without.p99_ms,
            with.p99_ms,
            p99_ratio,
            without.server_us_per_op,
            with.server_us_per_op,
            without.paced_p99_ms,
            with.paced_p99_ms,
            with.events
        );
        rows.push(serde_json::json!({
            "clients": n,
            "ops_per_s": without.ops_per_s.round(),
            "ops_per_s_with_subscriber": with.ops_per_s.round(),
            "throughput_ratio": rate_ratio,
            "p99_ms": without.p99_ms,
            "p99_ms_with_subscriber": with.p99_ms,
            "p99_ratio": p99_ratio,
            "server_cpu_us_per_op": without.server_us_per_op,
            "server_cpu_us_per_op_with_subscriber": with.server_us_per_op,
            "paced_1000_p99_ms": without.paced_p99_ms,
            "paced_1000_p99_ms_with_subscriber": with.paced_p99_ms,
            "events_received": with.events,
        }));
    }
    rows
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    if std::env::args().any(|a| a == "control") {
        let rows = rt.block_on(control_table());
        let out = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/bench-control.json");
        let _ = std::fs::write(out, serde_json::to_string_pretty(&rows).unwrap_or_default());
        return;
    }
    rt.block_on(async {
        let floor = floor_server().await;
        let mut rows = Vec::new();
        println!(
            "{:>3} {:>11} {:>8} {:>8} {:>11} {:>7} {:>12} {:>12} {:>9} {:>9} {:>6}",
            "N",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "floor ops/s",
            "ratio",
            "p50@1k ms",
            "p99@1k ms",
            "idle KiB",
            "load KiB",
            ""
        );
        for n in [2usize, 8, 32] {
            let server = Server::start().await;
            let idle = server.rss_kib();
            let (ops, lat) = troop_run(server.1, n, None).await;
            let loaded = server.rss_kib();
            drop(server);
            let server = Server::start().await;
            let (_, paced) = troop_run(server.1, n, Some(1000)).await;
            drop(server);
            let (floor_ops, _) = floor_run(floor, n).await;
            let rate = ops as f64 / RUN.as_secs_f64();
            let floor_rate = floor_ops as f64 / RUN.as_secs_f64();
            let row = serde_json::json!({
                "clients": n,
                "ops_per_s": rate.round(),
                "p50_ms": percentile(&lat, 0.5),
                "p99_ms": percentile(&lat, 0.99),
                "floor_ops_per_s": floor_rate.round(),
                "ratio_to_floor": rate / floor_rate,
                "paced_1000_p50_ms": percentile(&paced, 0.5),
                "paced_1000_p99_ms": percentile(&paced, 0.99),
                "rss_idle_kib": idle,
                "rss_loaded_kib": loaded,
            });
            println!(
                "{:>3} {:>11.0} {:>8.3} {:>8.3} {:>11.0} {:>7.2} {:>12.3} {:>12.3} {:>9} {:>9}",
                n,
                rate,
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                floor_rate,
                rate / floor_rate,
                percentile(&paced, 0.5),
                percentile(&paced, 0.99),
                idle,
                loaded
            );
            rows.push(row);
        }
        let out = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/bench-relay.json");
        let _ = std::fs::write(out, serde_json::to_string_pretty(&rows).unwrap_or_default());
        println!("(relayed ops/s counts operations accepted by the server; each reaches every client)");
        let control = control_table().await;
        let out = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/bench-control.json");
        let _ = std::fs::write(out, serde_json::to_string_pretty(&control).unwrap_or_default());
    });
}
