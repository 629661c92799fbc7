//! Audience benchmark against a real hub and real Docker (`cargo bench --bench audience`).
//! Prints a table, writes `target/bench-audience.json`.
//!
//! One session (hub.yaml `audience: public`), 8 performers (Troop protocol clients with full
//! client-side OT) editing at a paced 1,000 operations/s in total (125/s each). Every
//! operation inserts a unique token (`p3n417 `) at a pseudo-random position and, once the
//! document is over 2,000 characters, deletes as many characters right after it, so the
//! document stays bounded. A token's send time (µs resolution) is kept per performer and token
//! number; whoever receives an operation looks its tokens up.
//!
//! - Phase A, no viewers: relay latency, from a performer sending an operation to each OTHER
//!   performer receiving it (p50/p99; the sender's own acknowledgement is reported apart).
//! - Phase B, with BENCH_VIEWERS (default 100) viewers on the live WebSocket
//!   (tokio-tungstenite): the same relay latency (B/A is the key figure), and the viewers'
//!   latency: (a) from the performer's send to each viewer receiving the `operation` message,
//!   over all viewers; (b) from the server applying it (`time_ms`, whole milliseconds, same
//!   machine clock) to the viewer receiving it.
//! - The hub's RSS (VmRSS) after phase A and with the viewers connected after phase B, and
//!   viewers dropped (socket closed or an `error`/`ended` message during the run).
//! - Phase A again after the viewers left (A'): how much the relay figures move between two
//!   runs without viewers, to read B/A against.
//! - CPU per phase (percent of one core): the hub, the session server (its container's
//!   process), the bench's performer and viewer threads, and the machine (percent of all
//!   cores), from /proc: on a small machine the viewers' own reading competes with the rest.
//!
//! The session server writes events to its subscriber (the hub) coalesced for 2 ms, so the
//! viewers' latency includes up to about 2-3 ms of that by design.
//!
//! Each phase: 1 s warm-up, then BENCH_PHASE_SECS (default 10) measured. Performers run on a
//! runtime thread of their own, viewers on another, so the viewers' reading does not queue
//! behind the performers' (they still share the machine's cores with the hub and the server).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{http, TestHub, T};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::runtime::{Handle, Runtime};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;
use troop_hub::admin::start_session;
use troop_server::client::{ClientError, TroopClient};
use troop_server::message::Body;
use troop_server::ot::{Operation, Part};

const PERFORMERS: usize = 8;
/// Operations per second, all performers together.
const RATE: f64 = 1000.0;
/// Send times kept per performer (125/s for three phases of 11 s is ~4,200).
const SLOTS: usize = 1 << 15;
const MAX_DOC: u64 = 2000;
const WARMUP: Duration = Duration::from_secs(1);
/// After the last send, receivers keep reading this long for operations still in flight.
const DRAIN: Duration = Duration::from_millis(500);
const SESSION: &str = "stage";
const PW: &str = "pw";

/// A common clock: send times of every token, as ns since `base` plus one (0: not sent).
struct Clock {
    base: Instant,
    sent: Vec<Vec<AtomicU64>>,
    /// Only tokens sent at or after this (ns since `base`) are measured.
    measure_from: AtomicU64,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            base: Instant::now(),
            sent: (0..PERFORMERS).map(|_| (0..SLOTS).map(|_| AtomicU64::new(0)).collect()).collect(),
            measure_from: AtomicU64::new(u64::MAX),
        }
    }

    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn mark_sent(&self, k: usize, n: u64) {
        if let Some(slot) = self.sent[k].get(n as usize) {
            slot.store(self.now_ns() + 1, Ordering::Relaxed);
        }
    }

    /// The send time of token `p{k}n{n}` if it is one to measure.
    fn measured(&self, token: &str) -> Option<u64> {
        let (k, n) = token.strip_prefix('p')?.split_once('n')?;
        let (k, n): (usize, usize) = (k.parse().ok()?, n.parse().ok()?);
        let sent = self.sent.get(k)?.get(n)?.load(Ordering::Relaxed).checked_sub(1)?;
        (sent >= self.measure_from.load(Ordering::Relaxed)).then_some(sent)
    }
}

fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Percentile `p` of sorted nanoseconds, in ms.
fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1e6
}

/// p50, p99, max in ms.
fn summary(mut v: Vec<u64>) -> (f64, f64, f64, usize) {
    v.sort_unstable();
    (pct(&v, 0.5), pct(&v, 0.99), pct(&v, 1.0), v.len())
}

fn proc_kib(file: &str, key: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU ticks (user + system, 1/100 s) in a `/proc/.../stat` file.
fn ticks(stat_file: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_file).unwrap_or_default();
    // After the command name (in parentheses) the state is field 3; utime is 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    field(11) + field(12)
}

/// CPU ticks of this process's threads named `name` (a runtime's workers).
fn thread_ticks(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .map(|t| ticks(&t.path().join("stat").to_string_lossy()))
        .sum()
}

/// Machine-wide (busy, all) ticks from /proc/stat.
fn machine_ticks() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let all: f64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0.0) + f.get(4).copied().unwrap_or(0.0);
    (all - idle, all)
}

/// Where the CPU went: the hub, the session server (in its container), the bench's performer
/// and viewer threads, and the whole machine.
#[derive(Clone, Copy)]
struct Cpu {
    hub: f64,
    server: f64,
    performers: f64,
    viewers: f64,
    busy: f64,
    all: f64,
}

impl Cpu {
    fn now(hub_pid: u32, server_pid: u32) -> Cpu {
        let (busy, all) = machine_ticks();
        Cpu {
            hub: ticks(&format!("/proc/{hub_pid}/stat")),
            server: ticks(&format!("/proc/{server_pid}/stat")),
            performers: thread_ticks("performers"),
            viewers: thread_ticks("viewers"),
            busy,
            all,
        }
    }

    /// Percent of one core since `before` (the machine: percent of all its cores).
    fn since(self, before: Cpu, secs: f64) -> CpuUse {
        let pc = |a: f64, b: f64| (a - b) / secs;
        CpuUse {
            hub: pc(self.hub, before.hub),
            server: pc(self.server, before.server),
            performers: pc(self.performers, before.performers),
            viewers: pc(self.viewers, before.viewers),
            machine: (self.busy - before.busy) / (self.all - before.all).max(1.0) * 100.0,
        }
    }
}

/// CPU use over a phase, in percent of one core (`machine`: of all cores).
#[derive(Clone, Copy, serde::Serialize)]
struct CpuUse {
    hub: f64,
    server: f64,
    performers: f64,
    viewers: f64,
    machine: f64,
}

/// What one performer measured in one phase (ns).
#[derive(Default)]
struct PerformerStats {
    /// Others' operations: their send to this performer's receipt.
    relay: Vec<u64>,
    /// Own operations: the send to the server's acknowledgement.
    ack: Vec<u64>,
    sent: u64,
    /// Sends more than one interval late (the OT state or the thread held them back).
    late: u64,
}

/// A performer between phases.
struct Performer {
    c: TroopClient,
    k: usize,
    next_token: u64,
    rng: u64,
}

impl Performer {
    fn random(&mut self) -> u64 {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// An operation inserting the next token at a pseudo-random place (deleting as much after
    /// it once the document is long).
    fn next_op(&mut self) -> (Operation, u64) {
        let n = self.next_token;
        self.next_token += 1;
        let token = format!("p{}n{n} ", self.k);
        let len = self.c.document().chars().count() as u64;
        let pos = self.random() % (len + 1);
        let del = token.len() as u64 + 1;
        let mut op = Operation::new();
        op.retain(pos).insert(&token);
        if len > MAX_DOC && pos + del <= len {
            op.delete(del).retain(len - pos - del);
        } else {
            op.retain(len - pos);
        }
        (op, n)
    }

    fn record(&self, clock: &Clock, body: &Body, own: bool, at: u64, stats: &mut PerformerStats) {
        let Body::Operation { operation, .. } = body else { return };
        for part in &operation.parts {
            if let Part::Insert(text) = part {
                for sent in text.split_whitespace().filter_map(|t| clock.measured(t)) {
                    let into = if own { &mut stats.ack } else { &mut stats.relay };
                    into.push(at.saturating_sub(sent));
                }
            }
        }
    }

    /// Plays from `start` (offset by this performer's slot) until `end`, then reads for DRAIN.
    async fn play(mut self, clock: Arc<Clock>, start: Instant, end: Instant) -> (Performer, PerformerStats) {
        let interval = Duration::from_secs_f64(PERFORMERS as f64 / RATE);
        let mut next = start + interval.mul_f64(self.k as f64 / PERFORMERS as f64);
        let mut stats = PerformerStats::default();
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            if self.c.is_synchronized() && now >= next {
                if now > next + interval {
                    stats.late += 1;
                    next = now;
                }
                let (op, n) = self.next_op();
                clock.mark_sent(self.k, n);
                self.c.edit(op).await.expect("send an operation");
                stats.sent += 1;
                next += interval;
            }
            let wake = if self.c.is_synchronized() { next.min(end) } else { end };
            match self.c.recv(wake.saturating_duration_since(Instant::now())).await {
                Ok(m) => {
                    let at = clock.now_ns();
                    self.record(&clock, &m.body, m.src_id == self.c.id, at, &mut stats);
                }
                Err(ClientError::Timeout(_)) => {}
                Err(e) => panic!("performer {} failed: {e}", self.k),
            }
        }
        let drained = Instant::now() + DRAIN;
        loop {
            match self.c.recv(drained.saturating_duration_since(Instant::now())).await {
                Ok(m) => {
                    let at = clock.now_ns();
                    self.record(&clock, &m.body, m.src_id == self.c.id, at, &mut stats);
                }
                Err(ClientError::Timeout(_)) => break,
                Err(e) => panic!("performer {} failed: {e}", self.k),
            }
        }
        assert!(self.c.is_synchronized(), "performer {}'s last operation was acknowledged", self.k);
        (self, stats)
    }
}

/// Each performer sends a console marker and reads until it has seen all of them: past every
/// RESET of the joins before (a client that has not read a later join's RESET loses its edits).
async fn settle(performers: &mut [Performer]) {
    for p in performers.iter_mut() {
        p.c.send(Body::Console { string: format!("settled {}", p.k) }).await.expect("marker");
    }
    for p in performers.iter_mut() {
        // Markers arrive in the order the server took them, whatever the order sent.
        let mut seen = [false; PERFORMERS];
        while !seen.iter().all(|s| *s) {
            let m = p.c.recv(T).await.unwrap_or_else(|e| panic!("performer {} saw markers {seen:?}: {e}", p.k));
            if let Body::Console { string } = &m.body {
                if let Some(k) = string.strip_prefix("settled ").and_then(|k| k.parse::<usize>().ok()) {
                    seen[k] = true;
                }
            }
        }
    }
}

/// One phase of all performers on their runtime.
async fn phase(
    rt: &Handle,
    performers: Vec<Performer>,
    clock: &Arc<Clock>,
    measured: Duration,
) -> (Vec<Performer>, PerformerStats, Duration) {
    let start = Instant::now() + Duration::from_millis(20);
    clock.measure_from.store((start + WARMUP - clock.base).as_nanos() as u64, Ordering::Relaxed);
    let end = start + WARMUP + measured;
    let tasks: Vec<_> = performers.into_iter().map(|p| rt.spawn(p.play(clock.clone(), start, end))).collect();
    let mut back = Vec::new();
    let mut all = PerformerStats::default();
    for t in tasks {
        let (p, s) = t.await.expect("performer task");
        back.push(p);
        all.relay.extend(s.relay);
        all.ack.extend(s.ack);
        all.sent += s.sent;
        all.late += s.late;
    }
    back.sort_by_key(|p| p.k);
    (back, all, WARMUP + measured)
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What one viewer measured.
#[derive(Default)]
struct ViewerStats {
    /// Performer's send to this viewer's receipt (ns).
    from_send: Vec<u64>,
    /// Server's `time_ms` to this viewer's receipt (ns, from a whole-ms start).
    from_server: Vec<u64>,
    messages: u64,
    dropped: Option<String>,
}

/// Connects and reads up to the first snapshot.
async fn connect_viewer(http: SocketAddr) -> Socket {
    let url = format!("ws://{http}/api/v1/sessions/{SESSION}/live");
    let deadline = tokio::time::Instant::now() + T;
    let (mut ws, _) = tokio::time::timeout_at(deadline, tokio_tungstenite::connect_async(url))
        .await
        .expect("in time")
        .expect("upgrade");
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.expect("a snapshot in time") {
            Some(Ok(WsMessage::Text(t))) => {
                let m: Value = serde_json::from_str(t.as_str()).expect("JSON");
                match m["type"].as_str() {
                    Some("snapshot") => return ws,
                    Some("error" | "ended") => panic!("viewer refused: {m}"),
                    _ => {}
                }
            }
            Some(Ok(_)) => {}
            other => panic!("viewer socket ended before its snapshot: {other:?}"),
        }
    }
}

/// Reads until `stop`, timing every operation; then closes the socket.
async fn watch(mut ws: Socket, clock: Arc<Clock>, stop: CancellationToken) -> ViewerStats {
    let mut stats = ViewerStats::default();
    loop {
        let m = tokio::select! {
            _ = stop.cancelled() => break,
            m = ws.next() => m,
        };
        let (at, at_unix_us) = (clock.now_ns(), unix_us());
        let text = match m {
            Some(Ok(WsMessage::Text(t))) => t,
            Some(Ok(WsMessage::Close(f))) => {
                stats.dropped = Some(format!("closed: {f:?}"));
                break;
            }
            Some(Ok(_)) => continue,
            other => {
                stats.dropped = Some(format!("socket ended: {other:?}"));
                break;
            }
        };
        stats.messages += 1;
        // Operations are read by hand (the bench's viewers share the cores with the hub).
        if let Some(rest) = text.as_str().strip_prefix(r#"{"type":"operation","#) {
            let time_ms = rest
                .split_once(r#""time_ms":"#)
                .and_then(|(_, t)| t.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
            let ops = rest.split_once(r#""ops":"#).map(|(_, o)| o).unwrap_or("");
            let mut measured = false;
            // Between quotes: the inserted strings (tokens need no escapes).
            for sent in
                ops.split('"').skip(1).step_by(2).flat_map(str::split_whitespace).filter_map(|t| clock.measured(t))
            {
                stats.from_send.push(at.saturating_sub(sent));
                measured = true;
            }
            if measured {
                stats.from_server.push(at_unix_us.saturating_sub(time_ms * 1000) * 1000);
            }
            continue;
        }
        let m: Value = serde_json::from_str(text.as_str()).expect("JSON");
        if let Some(kind @ ("error" | "ended")) = m["type"].as_str() {
            stats.dropped = Some(format!("{kind}: {m}"));
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
    stats
}

struct Row {
    relay: (f64, f64, f64, usize),
    ack: (f64, f64, f64, usize),
    ops_per_s: f64,
    late: u64,
    cpu: CpuUse,
}

fn row_json(r: &Row) -> Value {
    json!({"relay_ms": {"p50": r.relay.0, "p99": r.relay.1, "max": r.relay.2, "samples": r.relay.3},
           "ack_ms": {"p50": r.ack.0, "p99": r.ack.1, "max": r.ack.2, "samples": r.ack.3},
           "ops_per_s": r.ops_per_s, "late_sends": r.late, "cpu_percent": r.cpu})
}

/// One phase, with the CPU it took.
async fn measure(
    rt: &Handle,
    performers: Vec<Performer>,
    clock: &Arc<Clock>,
    measured: Duration,
    pids: (u32, u32),
) -> (Vec<Performer>, Row) {
    let (t0, cpu0) = (Instant::now(), Cpu::now(pids.0, pids.1));
    let (performers, stats, dur) = phase(rt, performers, clock, measured).await;
    let cpu = Cpu::now(pids.0, pids.1).since(cpu0, t0.elapsed().as_secs_f64());
    let row = Row {
        relay: summary(stats.relay),
        ack: summary(stats.ack),
        ops_per_s: stats.sent as f64 / dur.as_secs_f64(),
        late: stats.late,
        cpu,
    };
    (performers, row)
}

fn main() {
    let viewers: usize = std::env::var("BENCH_VIEWERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let secs: u64 = std::env::var("BENCH_PHASE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let measured = Duration::from_secs(secs);
    let thread = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let (performer_rt, viewer_rt): (Runtime, Runtime) = (thread("performers"), thread("viewers"));
    let main_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let began = Instant::now();
    // Others' load on the machine shows here (and in each phase's machine figure).
    let (busy0, all0) = machine_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let (busy1, all1) = machine_ticks();
    let idle_busy = (busy1 - busy0) / (all1 - all0).max(1.0) * 100.0;
    main_rt.block_on(async {
        let (prt, vrt) = (performer_rt.handle().clone(), viewer_rt.handle().clone());
        let yaml = format!(
            "audience: public\nmax_sessions_per_address: 8\nidle_exit: null\naudience_viewers_per_session: {n}\naudience_viewers_total: {n}",
            n = viewers.max(1) + 10
        );
        let hub = TestHub::new(&yaml).start().await;
        let pid = hub.proc.as_ref().map(|p| p.id()).unwrap_or(0);
        let status = format!("/proc/{pid}/status");
        let owner = match start_session(hub.addr, SESSION, PW, T).await.expect("the hub answers") {
            Ok(o) => o,
            Err(e) => panic!("start refused: {e}\n{}", hub.log()),
        };
        let container = hub.containers().pop().expect("the session's container");
        let server_pid: u32 = common::docker_ok(&["inspect", "-f", "{{.State.Pid}}", &container]).parse().expect("a pid");
        let pids = (pid, server_pid);
        let addr = SocketAddr::from(([127, 0, 0, 1], owner.port));
        let clock = Arc::new(Clock::new());

        // Performers join one by one on their runtime, then settle past every join's RESET.
        let mut performers = prt
            .spawn(async move {
                let mut ps = Vec::new();
                for k in 0..PERFORMERS {
                    let c = TroopClient::join(addr, &format!("p{k}"), PW, T).await.expect("a performer joins");
                    ps.push(Performer { c, k, next_token: 0, rng: 0x9E37_79B9_7F4A_7C15 ^ ((k as u64 + 1) * 7919) });
                }
                settle(&mut ps).await;
                ps
            })
            .await
            .expect("performers join");

        // Phase A: no viewers.
        let (ps, a) = measure(&prt, performers, &clock, measured, pids).await;
        performers = ps;
        let rss_before = proc_kib(&status, "VmRSS:");

        // Viewers connect (each up to its snapshot), all within T.
        let connected = Instant::now();
        let stop = CancellationToken::new();
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watching = Vec::new();
        for _ in 0..viewers {
            let (clock, stop, ready, http) = (clock.clone(), stop.clone(), ready_tx.clone(), hub.http);
            watching.push(vrt.spawn(async move {
                let ws = connect_viewer(http).await;
                let _ = ready.send(());
                watch(ws, clock, stop).await
            }));
        }
        let deadline = tokio::time::Instant::now() + T;
        for k in 0..viewers {
            tokio::time::timeout_at(deadline, ready_rx.recv())
                .await
                .unwrap_or_else(|_| panic!("only {k} of {viewers} viewers had their snapshot within {T:?}"));
        }
        let connect_secs = connected.elapsed().as_secs_f64();
        let rss_idle_viewers = proc_kib(&status, "VmRSS:");

        // Phase B: the same load, watched.
        let (ps, b) = measure(&prt, performers, &clock, measured, pids).await;
        performers = ps;
        let rss_viewers = proc_kib(&status, "VmRSS:");
        let metrics = http(hub.http, "GET", "/metrics", None, None).await.body;
        let hub_count = metrics
            .lines()
            .find_map(|l| l.strip_prefix("troop_hub_viewers "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        stop.cancel();
        let mut from_send = Vec::new();
        let mut from_server = Vec::new();
        let mut dropped = Vec::new();
        let mut messages = Vec::new();
        for w in watching {
            let s = w.await.expect("viewer task");
            from_send.extend(s.from_send);
            from_server.extend(s.from_server);
            messages.push(s.messages);
            if let Some(why) = s.dropped {
                dropped.push(why);
            }
        }
        let min_messages = messages.iter().copied().min().unwrap_or(0);
        let deadline = Instant::now() + T;
        while !http(hub.http, "GET", "/metrics", None, None).await.body.contains("troop_hub_viewers 0\n") {
            assert!(Instant::now() < deadline, "the hub lets the viewers go");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Phase A again: the run-to-run spread without viewers.
        let (ps, a2) = measure(&prt, performers, &clock, measured, pids).await;
        performers = ps;

        let samples = from_send.len();
        let (v50, v99, vmax, _) = summary(from_send);
        let (s50, s99, smax, _) = summary(from_server);
        let mib = |kib: u64| kib as f64 / 1024.0;
        let per_100 = (rss_viewers as f64 - rss_before as f64) / 1024.0 / viewers.max(1) as f64 * 100.0;
        let ratio50 = b.relay.0 / a.relay.0;
        let ratio99 = b.relay.1 / a.relay.1;

        println!("\naudience: 1 session, {PERFORMERS} performers at {RATE} ops/s in total; {viewers} viewers in B; {secs} s measured per phase (after 1 s warm-up)");
        let phases = [("A  no viewers", &a), (&*format!("B  {viewers} viewers"), &b), ("A' no viewers again", &a2)];
        println!("machine busy before the run: {idle_busy:.1} % of all cores");
        println!("latency ms           relay p50  relay p99  relay max   ack p50   ack p99   ops/s  late sends");
        for (name, r) in phases {
            println!(
                "{name:<20} {:9.3}  {:9.3}  {:9.3}  {:8.3}  {:8.3}  {:6.0}  {:4}",
                r.relay.0, r.relay.1, r.relay.2, r.ack.0, r.ack.1, r.ops_per_s, r.late
            );
        }
        println!("CPU % of one core        hub  server  bench performers  bench viewers  machine (% of all cores)");
        for (name, r) in phases {
            let c = r.cpu;
            println!(
                "{name:<20} {:7.1} {:7.1} {:17.1} {:14.1} {:8.1}",
                c.hub, c.server, c.performers, c.viewers, c.machine
            );
        }
        println!("relay B/A            p50 {ratio50:.2}   p99 {ratio99:.2}   (A'/A: p50 {:.2}, p99 {:.2})", a2.relay.0 / a.relay.0, a2.relay.1 / a.relay.1);
        println!("viewers, from the performer's send     p50 {v50:8.3} ms  p99 {v99:8.3} ms  max {vmax:8.3} ms  ({samples} receipts)");
        println!("viewers, from the server's time_ms     p50 {s50:8.3} ms  p99 {s99:8.3} ms  max {smax:8.3} ms  (time_ms in whole ms)");
        println!(
            "hub RSS: {:.1} MiB before viewers, {:.1} MiB with {viewers} connected, {:.1} MiB after phase B: {per_100:.2} MiB per 100 viewers",
            mib(rss_before),
            mib(rss_idle_viewers),
            mib(rss_viewers)
        );
        println!(
            "viewers: {viewers} connected in {connect_secs:.2} s; hub counted {hub_count} at the end of B; dropped {}; fewest messages one viewer got {min_messages}",
            dropped.len()
        );
        for why in dropped.iter().take(5) {
            println!("  dropped: {why}");
        }
        let problems: Vec<String> = [
            (v99 > 100.0).then(|| format!("viewer p99 {v99:.1} ms is over 100 ms")),
            (ratio99 > 1.10).then(|| format!("relay p99 B/A {ratio99:.2} is over 1.10")),
            (!dropped.is_empty()).then(|| format!("{} viewers dropped", dropped.len())),
        ]
        .into_iter()
        .flatten()
        .collect();
        for p in &problems {
            println!("PROBLEM: {p}");
        }

        let report = json!({
            "machine_busy_percent_before": idle_busy, "performers": PERFORMERS, "ops_per_s_target": RATE, "viewers": viewers, "measured_seconds_per_phase": secs,
            "phase_a": row_json(&a), "phase_b": row_json(&b), "phase_a_again": row_json(&a2),
            "relay_ratio_b_over_a": {"p50": ratio50, "p99": ratio99},
            "viewer_from_send_ms": {"p50": v50, "p99": v99, "max": vmax, "samples": samples},
            "viewer_from_server_time_ms": {"p50": s50, "p99": s99, "max": smax, "note": "time_ms has whole-ms resolution"},
            "hub_rss_mib": {"before_viewers": mib(rss_before), "viewers_connected": mib(rss_idle_viewers),
                            "viewers_after_load": mib(rss_viewers), "per_100_viewers": per_100},
            "viewers_connect_seconds": connect_secs, "viewers_counted_by_hub": hub_count,
            "viewers_dropped": dropped.len(), "fewest_messages_per_viewer": min_messages,
            "problems": problems,
        });
        let out = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-audience.json");
        let _ = std::fs::write(out, serde_json::to_string_pretty(&report).unwrap_or_default());

        prt.spawn(async move {
            for p in performers {
                p.c.close().await;
            }
        })
        .await
        .expect("performers leave");
        owner.kill().await;
        drop(hub);
    });
    println!("audience bench took {:.1} s", began.elapsed().as_secs_f64());
}
