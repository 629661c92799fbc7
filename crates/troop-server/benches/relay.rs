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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use troop_server::client::TroopClient;
use troop_server::frame::Decoder;
use troop_server::message::{Body, Message};
use troop_server::ot::Operation;

const PW: &str = "bench";
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
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(env!("CARGO_BIN_EXE_troop-server"))
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--password", PW])
            .env("RUST_LOG", "warn")
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

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
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
    });
}
