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

mod common;

use common::load::{
    join, leave, machine_busy_now, machine_ticks, phase, proc_kib, summary, thread_ticks, ticks, Clock, Performer,
    PERFORMERS, RATE,
};
use common::{http, TestHub, T};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::runtime::{Handle, Runtime};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;
use troop_hub::admin::start_session;

const SESSION: &str = "stage";
const PW: &str = "pw";

fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
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
    let (performer_rt, viewer_rt): (Runtime, Runtime) =
        (common::load::one_thread_runtime("performers"), common::load::one_thread_runtime("viewers"));
    let main_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let began = Instant::now();
    // Others' load on the machine shows here (and in each phase's machine figure).
    let idle_busy = machine_busy_now();
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
        let mut performers = join(&prt, addr, PW).await;

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

        leave(&prt, performers).await;
        owner.kill().await;
        drop(hub);
    });
    println!("audience bench took {:.1} s", began.elapsed().as_secs_f64());
}
