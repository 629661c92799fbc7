//! Isolation bench against a real hub and real Docker (`cargo bench --bench isolation`):
//! does one busy session slow another one down? Prints a table, writes
//! `target/bench-isolation.json`.
//!
//! A quiet session ("quiet") has two performers and one viewer. Its probe, 20 times a second,
//! has one performer type a token and times (a) the other performer receiving it (relay) and
//! (b) the viewer receiving the operation on the live WebSocket (view). Beside it:
//!
//! - P0: the busy session ("busy", archive on, as every session) idle: the baseline.
//! - P1: busy with 8 performers at 1,000 ops/s in total, no viewers.
//! - P2: the same, watched by BENCH_VIEWERS (default 100) viewers.
//! - P3: a third session holding a 4 MiB document, which BENCH_VIEWERS viewers open at once
//!   (each gets the whole document in its snapshot) while busy is idle: the quiet session's
//!   latency during that burst, how long the burst took, and the hub's RSS before and after.
//!
//! Each phase measures BENCH_PHASE_SECS (default 10) after 1 s of warm-up. Figures are the
//! quiet session's p50/p99/max, and the ratio of its p99 to P0's. BENCH_ARCHIVE=off runs the
//! same on a hub that keeps no archive (the recording's share of what the quiet session sees).

mod common;

use common::load::{join, leave, phase, proc_kib, summary, Clock, PERFORMERS, RATE};
use common::{TestHub, T};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use troop_hub::admin::start_session;
use troop_server::client::TroopClient;
use troop_server::message::Body;

const PW: &str = "pw";
type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects a viewer to `session` and reads its whole first snapshot (all its parts).
async fn viewer(http: SocketAddr, session: &str) -> Socket {
    let url = format!("ws://{http}/api/v1/sessions/{session}/live");
    let (mut ws, _) = tokio::time::timeout(T * 4, tokio_tungstenite::connect_async(url))
        .await
        .expect("upgraded in time")
        .expect("upgrade");
    let mut parts_left: Option<u64> = None;
    loop {
        match tokio::time::timeout(T * 4, ws.next()).await.expect("a snapshot in time") {
            Some(Ok(WsMessage::Text(t))) if t.as_str().starts_with(r#"{"type":"snapshot""#) => {
                let m: Value = serde_json::from_str(t.as_str()).expect("JSON");
                parts_left = Some(m["more"].as_u64().unwrap_or(0));
            }
            Some(Ok(WsMessage::Text(t))) if t.as_str().starts_with(r#"{"type":"more""#) => {
                parts_left = parts_left.map(|n| n.saturating_sub(1));
            }
            Some(Ok(_)) => {}
            other => panic!("viewer socket ended before its snapshot: {other:?}"),
        }
        if parts_left == Some(0) {
            return ws;
        }
    }
}

/// The quiet session's two performers and its viewer.
struct Quiet {
    writer: TroopClient,
    reader: TroopClient,
    view: Socket,
    n: u64,
}

impl Quiet {
    /// One probe: the writer types a token; how long until the reader has it, and the viewer.
    async fn probe(&mut self) -> (u64, u64) {
        self.n += 1;
        let token = format!("q{} ", self.n);
        if self.writer.document().chars().count() > 400 {
            // Acknowledged before the token, which Troop's OT would hold back meanwhile.
            self.writer.delete(0, 100).await.expect("a delete");
            while !self.writer.is_synchronized() {
                self.writer.recv(T).await.expect("the delete's acknowledgement");
            }
        }
        let len = self.writer.document().chars().count() as u64;
        let sent = Instant::now();
        self.writer.insert(len, &token).await.expect("an insert");
        let reader = async {
            if let Err(e) = self.reader.recv_until_match(T, |c, _| c.document().contains(&token)).await {
                panic!(
                    "the other performer did not get {token:?} ({e}): it has {:?}, the writer {:?} (synchronized: {})",
                    self.reader.document(),
                    self.writer.document(),
                    self.writer.is_synchronized()
                );
            }
            sent.elapsed().as_nanos() as u64
        };
        let view = async {
            loop {
                match tokio::time::timeout(T, self.view.next()).await.expect("the viewer gets the token") {
                    Some(Ok(WsMessage::Text(t))) if t.as_str().contains(&format!("\"{token}\"")) => {
                        return sent.elapsed().as_nanos() as u64;
                    }
                    Some(Ok(_)) => {}
                    other => panic!("the quiet viewer's socket ended: {other:?}"),
                }
            }
        };
        let (relay, view) = tokio::join!(reader, view);
        while !self.writer.is_synchronized() {
            self.writer.recv(T).await.expect("the writer's acknowledgement");
        }
        (relay, view)
    }

    /// Each performer sends a console marker and reads until it has seen both: past the
    /// RESET of the second join (a client that has not read it loses its edits).
    async fn settle(&mut self) {
        for (k, c) in [&mut self.writer, &mut self.reader].into_iter().enumerate() {
            c.send(Body::Console { string: format!("settled {k}") }).await.expect("a marker");
        }
        for c in [&mut self.writer, &mut self.reader] {
            let mut seen = [false; 2];
            while !seen.iter().all(|s| *s) {
                if let Body::Console { string } = c.recv(T).await.expect("the markers").body {
                    if let Some(k) = string.strip_prefix("settled ").and_then(|k| k.parse::<usize>().ok()) {
                        seen[k.min(1)] = true;
                    }
                }
            }
        }
    }

    /// Probes 20 times a second for `warmup` (not kept) then `measured`.
    async fn run(&mut self, warmup: Duration, measured: Duration) -> (Vec<u64>, Vec<u64>) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let (start, mut relay, mut view) = (Instant::now(), Vec::new(), Vec::new());
        while start.elapsed() < warmup + measured {
            tick.tick().await;
            let (r, v) = self.probe().await;
            if start.elapsed() > warmup {
                relay.push(r);
                view.push(v);
            }
        }
        (relay, view)
    }
}

fn row(name: &str, relay: Vec<u64>, view: Vec<u64>, base: Option<(f64, f64)>) -> Value {
    let (r50, r99, rmax, n) = summary(relay);
    let (v50, v99, vmax, _) = summary(view);
    let (br, bv) = base.unwrap_or((r99, v99));
    println!(
        "{name:<34} {r50:8.3} {r99:8.3} {rmax:8.3}   {v50:8.3} {v99:8.3} {vmax:8.3}   {:5.2} {:5.2}  ({n} probes)",
        r99 / br,
        v99 / bv
    );
    json!({"relay_ms": {"p50": r50, "p99": r99, "max": rmax}, "view_ms": {"p50": v50, "p99": v99, "max": vmax},
           "relay_p99_over_p0": r99 / br, "view_p99_over_p0": v99 / bv, "probes": n})
}

fn main() {
    let viewers: usize = std::env::var("BENCH_VIEWERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let secs: u64 = std::env::var("BENCH_PHASE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let (warmup, measured) = (Duration::from_secs(1), Duration::from_secs(secs));
    let archive_on = std::env::var("BENCH_ARCHIVE").map_or(true, |v| v != "off");
    let (performer_rt, viewer_rt): (Runtime, Runtime) =
        (common::load::one_thread_runtime("performers"), common::load::one_thread_runtime("viewers"));
    let main_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let began = Instant::now();
    main_rt.block_on(async {
        let (prt, vrt) = (performer_rt.handle().clone(), viewer_rt.handle().clone());
        let archive = if archive_on { "" } else { "\narchive: off" };
        let yaml = format!(
            "audience: public\nmax_sessions_per_address: 8\nidle_exit: null\naudience_viewers_per_session: {n}\naudience_viewers_total: {t}{archive}",
            n = viewers + 10,
            t = 2 * viewers + 20
        );
        let hub = TestHub::new(&yaml).start().await;
        let status = format!("/proc/{}/status", hub.proc.as_ref().map(|p| p.id()).unwrap_or(0));
        let start = |name: &'static str| async move {
            match start_session(hub.addr, name, PW, T).await.expect("the hub answers") {
                Ok(o) => o,
                Err(e) => panic!("start of {name} refused: {e}"),
            }
        };
        let (busy, quiet_owner) = (start("busy").await, start("quiet").await);
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let writer = TroopClient::join(at(quiet_owner.port), "writer", PW, T).await.expect("writer joins");
        let reader = TroopClient::join(at(quiet_owner.port), "reader", PW, T).await.expect("reader joins");
        let mut quiet = Quiet { writer, reader, view: viewer(hub.http, "quiet").await, n: 0 };
        quiet.settle().await;
        let clock = Arc::new(Clock::new());
        let mut performers = join(&prt, at(busy.port), PW).await;

        let kept = if archive_on { "archive on" } else { "archive off" };
        println!("\nisolation: the quiet session's latency (ms) while another session is busy; {secs} s per phase; {kept}");
        println!("{:<34} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}   {:>5} {:>5}", "phase", "relay50", "relay99", "max", "view50", "view99", "max", "r/P0", "v/P0");
        // P0: busy idle.
        let (r, v) = quiet.run(warmup, measured).await;
        let (b_r, b_v) = (summary(r.clone()).1, summary(v.clone()).1);
        let p0 = row("P0 busy idle (baseline)", r, v, None);
        // P1: busy at 1,000 ops/s, no viewers.
        let ((ps, stats, _), (r, v)) = tokio::join!(phase(&prt, performers, &clock, measured), quiet.run(warmup, measured));
        performers = ps;
        let p1 = row(&format!("P1 busy {PERFORMERS} performers {RATE} ops/s"), r, v, Some((b_r, b_v)));
        let busy_relay = summary(stats.relay);
        // P2: the same, watched by `viewers`.
        let mut watching = Vec::new();
        for _ in 0..viewers {
            let http = hub.http;
            watching.push(vrt.spawn(async move {
                let mut ws = viewer(http, "busy").await;
                let mut n = 0u64;
                while let Some(Ok(_)) = ws.next().await {
                    n += 1;
                }
                n
            }));
        }
        let deadline = Instant::now() + T * 2;
        while !common::http(hub.http, "GET", "/metrics", None, None)
            .await
            .body
            .contains(&format!("troop_hub_viewers {}\n", viewers + 1))
        {
            assert!(Instant::now() < deadline, "the busy session's viewers connect");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ((ps, stats2, _), (r, v)) = tokio::join!(phase(&prt, performers, &clock, measured), quiet.run(warmup, measured));
        performers = ps;
        let p2 = row(&format!("P2 busy + {viewers} viewers"), r, v, Some((b_r, b_v)));
        let busy_relay_watched = summary(stats2.relay);
        for w in watching {
            w.abort();
        }
        leave(&prt, performers).await;

        // P3: a 4 MiB document opened by `viewers` viewers at once.
        let big = start("big").await;
        let mut author = TroopClient::join(at(big.port), "author", PW, T).await.expect("author joins");
        let chunk = "x = 1  # a line of code to fill the document\n".repeat(20_000); // ~0.9 MiB
        // As close to troop-server's document limit (4 MiB) as whole chunks go.
        while author.document().len() + chunk.len() < (4 << 20) - 4096 {
            let len = author.document().chars().count() as u64;
            author.insert(len, &chunk).await.expect("a big insert");
            while !author.is_synchronized() {
                author.recv(T * 4).await.expect("acknowledged");
            }
        }
        let doc_mib = author.document().len() as f64 / (1 << 20) as f64;
        tokio::time::sleep(Duration::from_secs(1)).await; // the hub takes the last edit in
        let rss_before = proc_kib(&status, "VmRSS:");
        let burst = Instant::now();
        let opening: Vec<_> = (0..viewers)
            .map(|_| {
                let http = hub.http;
                vrt.spawn(async move {
                    let ws = viewer(http, "big").await;
                    let opened = burst.elapsed();
                    (ws, opened)
                })
            })
            .collect();
        let (r, v) = quiet.run(Duration::ZERO, measured).await;
        let mut sockets = Vec::new();
        let mut slowest = Duration::ZERO;
        for o in opening {
            let (ws, opened) = o.await.expect("a viewer of the big document");
            slowest = slowest.max(opened);
            sockets.push(ws);
        }
        let rss_after = proc_kib(&status, "VmRSS:");
        let p3 = row(&format!("P3 {viewers} viewers open {doc_mib:.1} MiB at once"), r, v, Some((b_r, b_v)));
        println!(
            "P3: all {viewers} had the {doc_mib:.1} MiB snapshot within {:.2} s; hub RSS {:.1} MiB before, {:.1} MiB with them",
            slowest.as_secs_f64(),
            rss_before as f64 / 1024.0,
            rss_after as f64 / 1024.0
        );
        println!(
            "busy session's own relay p50/p99: {:.3}/{:.3} ms unwatched, {:.3}/{:.3} ms watched",
            busy_relay.0, busy_relay.1, busy_relay_watched.0, busy_relay_watched.1
        );
        for mut s in sockets {
            let _ = s.close(None).await;
        }
        let report = json!({
            "seconds_per_phase": secs, "viewers": viewers, "archive": archive_on, "busy_performers": PERFORMERS, "busy_ops_per_s": RATE,
            "p0": p0, "p1": p1, "p2": p2, "p3": p3,
            "p3_snapshot_burst_seconds": slowest.as_secs_f64(), "p3_document_mib": doc_mib,
            "hub_rss_mib": {"before_burst": rss_before as f64 / 1024.0, "after_burst": rss_after as f64 / 1024.0},
            "busy_relay_ms": {"unwatched": {"p50": busy_relay.0, "p99": busy_relay.1}, "watched": {"p50": busy_relay_watched.0, "p99": busy_relay_watched.1}},
        });
        let out = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-isolation.json");
        let _ = std::fs::write(out, serde_json::to_string_pretty(&report).unwrap_or_default());
        author.close().await;
        drop((busy, quiet_owner, big));
        drop(hub);
    });
    println!("isolation bench took {:.1} s", began.elapsed().as_secs_f64());
}
