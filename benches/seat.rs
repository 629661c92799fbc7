//! Browser seat bench against a real hub and real Docker (`cargo bench --bench seat`): what the
//! hub adds between a browser seat and a native Troop client, and what a seat costs it.
//! Prints a table, writes `target/bench-seat.json`.
//!
//! One session, two native performers (A, B: Troop's client model, `TroopClient`) and one seat
//! S (the page's protocol over the hub's WebSocket, spoken from Rust: the browser's own JS
//! time is not in these figures). 20 times a second, in turn:
//!
//! - native -> native (the baseline): A inserts a token, B receives it;
//! - seat -> native: S inserts a token, B receives it;
//! - native -> seat: A inserts a token, S receives it.
//!
//! Then BENCH_SEATS (default 8) more seats type at Troop speed (BENCH_SEAT_RATE keystrokes a
//! second each, default 8) for BENCH_PHASE_SECS (default 10): the hub's CPU (% of one core)
//! and RSS growth, per seat, against the same hub with those seats connected and idle.

mod common;

use common::load::{latency_table, proc_kib, receive_token as receive_native, synced, ticks};
use common::{TestHub, T};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use troop_hub::admin::start_session;
use troop_server::client::TroopClient;
use troop_server::ot::Operation;

const PW: &str = "pw";
type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A seat spoken from Rust: it types only when its last operation was acknowledged, so it
/// needs no buffer; it tracks the server's revision and document length from what it gets.
struct Seat {
    ws: Socket,
    id: i64,
    revision: i64,
    len: u64,
}

impl Seat {
    async fn join(http: SocketAddr, session: &str, name: &str) -> Seat {
        let url = format!("ws://{http}/api/v1/sessions/{session}/seat");
        // Nagle off, as browsers have it for WebSockets.
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await.expect("seat upgrade");
        let join = json!({"type": "join", "name": name, "password": PW}).to_string();
        ws.send(WsMessage::text(join)).await.expect("join");
        let mut seat = Seat { ws, id: -1, revision: 0, len: 0 };
        loop {
            let m = seat.next().await;
            if m["type"] == "request_ack" && m["flag"] == 0 && seat.id >= 0 {
                return seat;
            }
        }
    }

    /// The next message, with the bookkeeping a client does.
    async fn next(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(T, self.ws.next()).await.expect("a seat message in time");
            let Some(Ok(WsMessage::Text(t))) = msg else { continue };
            let m: Value = serde_json::from_str(t.as_str()).expect("JSON");
            self.book(&m).await;
            return m;
        }
    }

    /// [`Seat::next`], for a reader that does not mind an empty socket (no deadline).
    async fn next_quiet(&mut self) -> Value {
        loop {
            let Some(Ok(WsMessage::Text(t))) = self.ws.next().await else { continue };
            let m: Value = serde_json::from_str(t.as_str()).expect("JSON");
            self.book(&m).await;
            return m;
        }
    }

    /// A client's bookkeeping of message `m`: barriers answered, revision and length kept.
    async fn book(&mut self, m: &Value) {
        match m["type"].as_str() {
            Some("welcome") => self.id = m["id"].as_i64().unwrap_or(-1),
            Some("request_ack") if m["flag"] == 1 => {
                self.ws.send(WsMessage::text(r#"{"type":"ack"}"#)).await.expect("ack");
            }
            Some("reset") => {
                self.revision = 0;
                self.len = m["document"].as_str().unwrap_or("").chars().count() as u64;
            }
            Some("operation") => {
                self.revision += 1;
                let op: Operation = serde_json::from_value(m["ops"].clone()).expect("ops");
                self.len = op.target_len();
            }
            _ => {}
        }
    }

    /// Inserts `token` at the start and waits for the acknowledgement.
    async fn type_token(&mut self, token: &str) {
        let op = json!({"type": "operation", "ops": [token, self.len], "revision": self.revision});
        self.ws.send(WsMessage::text(op.to_string())).await.expect("send");
        let id = self.id;
        while !(self.next().await["src"] == id) {}
    }

    /// Reads until an operation inserting `token` arrives.
    async fn receive(&mut self, token: &str) {
        loop {
            let m = self.next().await;
            if m["type"] == "operation" && m["ops"].to_string().contains(token) {
                return;
            }
        }
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let phase = Duration::from_secs(env_num("BENCH_PHASE_SECS", 10));
    let n_seats = env_num("BENCH_SEATS", 8) as usize;
    let seat_rate = env_num("BENCH_SEAT_RATE", 8) as f64;
    let hub = TestHub::new("archive: off\n").start().await;
    let owner = start_session(hub.addr, "bench", PW, T).await.expect("hub answered").expect("started");
    let troop = SocketAddr::from(([127, 0, 0, 1], owner.port));
    let mut a = TroopClient::join(troop, "A", PW, T).await.expect("A");
    let mut b = TroopClient::join(troop, "B", PW, T).await.expect("B");
    let mut s = Seat::join(hub.http, "bench", "S").await;
    for c in [&mut a, &mut b] {
        while c.try_recv().await.expect("recv").is_some() {}
        synced(c).await;
    }

    let (mut base, mut to_native, mut to_seat) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < phase {
        let tick = Instant::now();
        n += 1;
        // native -> native
        let token = format!("a{n} ");
        let t0 = Instant::now();
        a.insert(0, &token).await.expect("A types");
        receive_native(&mut b, &token).await;
        base.push(t0.elapsed().as_nanos() as u64);
        synced(&mut a).await;
        s.receive(&token).await;
        // seat -> native
        let token = format!("s{n} ");
        let t0 = Instant::now();
        let send = s.type_token(&token);
        let recv = receive_native(&mut b, &token);
        let ((), ()) = tokio::join!(send, recv);
        to_native.push(t0.elapsed().as_nanos() as u64);
        a.recv_until_match(T, |c, _| c.document().starts_with(&token)).await.expect("A sees it");
        // native -> seat
        let token = format!("n{n} ");
        let t0 = Instant::now();
        a.insert(0, &token).await.expect("A types");
        s.receive(&token).await;
        to_seat.push(t0.elapsed().as_nanos() as u64);
        synced(&mut a).await;
        receive_native(&mut b, &token).await;
        tokio::time::sleep(Duration::from_millis(50).saturating_sub(tick.elapsed())).await;
    }
    let json_rows = latency_table(vec![vec![
        ("native -> native (baseline)", base),
        ("seat -> native", to_native),
        ("native -> seat", to_seat),
    ]]);

    // What a seat costs the hub: N seats idle, then typing.
    let pid = hub.proc.as_ref().expect("hub").id();
    let (stat, status) = (format!("/proc/{pid}/stat"), format!("/proc/{pid}/status"));
    let rss_before = proc_kib(&status, "VmRSS:");
    // Everyone reads all the time (as a page does), so nobody holds up a join barrier: each
    // seat joins and reads in its own task, and types once `go` says so.
    let stop = tokio_util::sync::CancellationToken::new();
    let go = tokio_util::sync::CancellationToken::new();
    let (joined_tx, mut joined) = tokio::sync::mpsc::channel::<()>(n_seats);
    let drain = |mut c: TroopClient, stop: tokio_util::sync::CancellationToken| {
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let _ = tokio::time::timeout(Duration::from_millis(100), c.recv(T)).await;
            }
        })
    };
    let s_reader = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let _ = tokio::time::timeout(Duration::from_millis(100), s.next_quiet()).await;
            }
        })
    };
    let mut typists = Vec::new();
    for k in 0..n_seats {
        let (stop, go, joined_tx, http) = (stop.clone(), go.clone(), joined_tx.clone(), hub.http);
        typists.push(tokio::spawn(async move {
            let mut seat = Seat::join(http, "bench", &format!("seat{k}")).await;
            let _ = joined_tx.send(()).await;
            let every = Duration::from_secs_f64(1.0 / seat_rate);
            let mut i = 0u64;
            while !stop.is_cancelled() {
                let tick = Instant::now();
                if go.is_cancelled() {
                    i += 1;
                    seat.type_token(&format!("k{k}x{i}")).await;
                }
                // Reads until the next keystroke is due.
                while let Some(left) = every.checked_sub(tick.elapsed()) {
                    if tokio::time::timeout(left, seat.next_quiet()).await.is_err() {
                        break;
                    }
                }
            }
            i
        }));
    }
    for _ in 0..n_seats {
        joined.recv().await;
    }
    let drains = [drain(a, stop.clone()), drain(b, stop.clone())];
    let idle_ticks = ticks(&stat);
    let idle_at = Instant::now();
    tokio::time::sleep(phase).await;
    let idle_cpu = (ticks(&stat) - idle_ticks) / idle_at.elapsed().as_secs_f64();
    let rss_idle = proc_kib(&status, "VmRSS:");
    let typing_ticks = ticks(&stat);
    let typing_at = Instant::now();
    go.cancel();
    tokio::time::sleep(phase).await;
    let typing_cpu = (ticks(&stat) - typing_ticks) / typing_at.elapsed().as_secs_f64();
    let rss_typing = proc_kib(&status, "VmRSS:");
    stop.cancel();
    let mut typed = 0;
    for t in typists {
        typed += t.await.unwrap_or(0);
    }
    for d in drains {
        let _ = d.await;
    }
    let _ = s_reader.await;
    let per = |x: f64| x / n_seats as f64;
    println!();
    println!("{n_seats} seats, {typed} keystrokes in {:.0} s ({seat_rate} a second each)", phase.as_secs_f64());
    println!(
        "hub CPU: {:.1}% of a core idle with the seats, {:.1}% typing: {:.2}% per typing seat",
        idle_cpu,
        typing_cpu,
        per(typing_cpu - idle_cpu)
    );
    println!(
        "hub RSS: {} KiB before the seats, {} KiB with them idle, {} KiB typing: {:.0} KiB per seat",
        rss_before,
        rss_idle,
        rss_typing,
        per(rss_typing.saturating_sub(rss_before) as f64)
    );
    let out = json!({
        "latency": json_rows,
        "seats": n_seats, "keystrokes": typed,
        "cpu_idle_pct": idle_cpu, "cpu_typing_pct": typing_cpu,
        "rss_kib": {"before": rss_before, "idle": rss_idle, "typing": rss_typing},
    });
    let _ = std::fs::write("target/bench-seat.json", serde_json::to_string_pretty(&out).unwrap_or_default());
}
