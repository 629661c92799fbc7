//! Archive benchmark against a real hub and real Docker (`cargo bench --bench archive`).
//! Prints a table, writes `target/bench-archive.json`. Every figure has a baseline measured in
//! the same run.
//!
//! 1. Recording cost. The load of `benches/audience.rs` (one session, 8 performers editing at
//!    a paced 1,000 operations/s in total, see `common::load`) against a fresh hub per run, in
//!    the order `archive: off`, on, on, off (ABBA: a drift of the machine over the run weighs
//!    on both sides alike; the runs of a kind show the run-to-run spread), BENCH_ROUNDS times
//!    (default 2, at most 3). Each run: 1 s warm-up, then BENCH_PHASE_SECS (default 10) measured. Figures: the performers' relay
//!    latency (a performer's send to each other performer receiving it, p50/p99), the hub's
//!    CPU (utime + stime of its process in /proc, percent of one core; its `archive-writer`
//!    thread apart), the session server's and the machine's; on/off ratios of the pooled runs.
//! 2. Bytes per hour of a busy session: the archive's stored timeline bytes of the session
//!    (`bytes` of GET /api/v1/archive?name=..., admin token) over the load, and the database
//!    file (with its -wal before and after the load; per operation from the file at the
//!    session's end after a checkpoint, as the -wal is reused and only shows a high-water
//!    mark), per operation and per hour, at the bench's 1,000 ops/s and scaled to ~10 ops/s.
//! 3. Time to open a one-hour replay: an hour at a realistic rate (3 performers typing one
//!    character per operation, 10 operations/s in total, an evaluation every 20 s, a cursor jump
//!    now and then: ~36k operations) written through `troop_hub::archive::Archive` into a
//!    database of its own, in the live feed's form; then (a) GET /api/v1/archive/{id}/timeline
//!    from a real hub on that database (to the full body; with the admin token, and with the
//!    session password as the replay page sends it, which costs an argon2 verification), and
//!    the replay page's requests (summary, then timeline and code together); baseline: the same
//!    lines read in-process with `Archive::timeline`; (b) the replay page (`/a/{id}`) in
//!    headless chromium (`tests/common/browser.rs`) until its state is "ready" (skipped
//!    without chromium); (c) the same hour kept as one file: GET .../replay.html (its weight,
//!    and its time against the timeline GET), then that file opened from `file://` in chromium
//!    until "ready", against (b) in the same run.

mod common;

use common::browser::{Page, BASIC_STATE};
use common::load::{
    join, leave, machine_busy_now, machine_ticks, named_thread_ticks, phase, proc_kib, summary, thread_ticks, ticks,
    Clock, PERFORMERS, RATE, WARMUP,
};
use common::{docker_ok, http, TestHub, T};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Handle;
use troop_hub::admin::start_session;
use troop_hub::archive::{Archive, ArchiveSettings};
use troop_hub::audience::{LiveMessage, LiveSnapshot};
use troop_server::ot::Operation;

const SESSION: &str = "stage";
const PW: &str = "pw";
const TOKEN: &str = "bench-archive-admin-token-c41f9e2a7d";
/// The realistic rate of part 3 and the scaling of part 2, operations/s of a whole session.
const REAL_RATE: f64 = 10.0;
/// The one-hour timeline.
const HOUR_PERFORMERS: usize = 3;
const HOUR_OPS: usize = 36_000;
const HOUR_EVAL_EVERY_MS: u64 = 20_000;
const HOUR_NAME: &str = "hour";
const HOUR_PW: &str = "pw-hour";
/// Timed repetitions of each part-3 read (the first is reported apart).
const READS: usize = 5;
const MIB: f64 = 1024.0 * 1024.0;

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The database file and its -wal, in bytes.
fn db_bytes(db: &Path) -> u64 {
    let len = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    len(db.to_path_buf()) + len(PathBuf::from(wal))
}

// ---- 1 and 2: recording cost and bytes of a busy session ----------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Off,
    On,
}

/// CPU ticks so far.
#[derive(Clone, Copy)]
struct Cpu {
    hub: f64,
    writer: f64,
    server: f64,
    performers: f64,
    busy: f64,
    all: f64,
}

impl Cpu {
    fn now(hub_pid: u32, server_pid: u32) -> Cpu {
        let (busy, all) = machine_ticks();
        Cpu {
            hub: ticks(&format!("/proc/{hub_pid}/stat")),
            writer: named_thread_ticks(&hub_pid.to_string(), "archive-writer"),
            server: ticks(&format!("/proc/{server_pid}/stat")),
            performers: thread_ticks("performers"),
            busy,
            all,
        }
    }

    /// Percent of one core since `before` (the machine: percent of all its cores).
    fn since(self, before: Cpu, secs: f64) -> CpuUse {
        let pc = |a: f64, b: f64| (a - b) / secs;
        CpuUse {
            hub: pc(self.hub, before.hub),
            archive_writer: pc(self.writer, before.writer),
            server: pc(self.server, before.server),
            performers: pc(self.performers, before.performers),
            machine: (self.busy - before.busy) / (self.all - before.all).max(1.0) * 100.0,
        }
    }
}

/// CPU use over a run, in percent of one core (`machine`: of all cores).
#[derive(Clone, Copy, Default, serde::Serialize)]
struct CpuUse {
    hub: f64,
    /// The hub's `archive-writer` thread (part of `hub`).
    archive_writer: f64,
    server: f64,
    performers: f64,
    machine: f64,
}

/// What the archive stored of an `on` run's session.
#[derive(Clone, Copy, Default, serde::Serialize)]
struct Stored {
    /// Timeline bytes (the API's `bytes`) added while the performers sent.
    bytes: u64,
    operations: u64,
    /// How long they sent (warm-up included), s.
    send_secs: f64,
    /// The database file with its -wal, before and after the load.
    file_before: u64,
    file_after: u64,
    /// The database after the session ended and a checkpoint (TRUNCATE) folded the WAL in.
    file_end_checkpointed: u64,
    /// The whole session's timeline bytes and operations at its end.
    session_bytes: u64,
    session_operations: u64,
    truncated: bool,
}

impl Stored {
    fn per_op(&self) -> f64 {
        self.bytes as f64 / self.operations.max(1) as f64
    }
    /// The checkpointed file per operation of the whole session (the schema's few pages
    /// included). The -wal right after the load is no measure: SQLite reuses it from its start
    /// after each checkpoint (every ~1,000 pages), so its size is a high-water mark.
    fn file_per_op(&self) -> f64 {
        self.file_end_checkpointed as f64 / self.session_operations.max(1) as f64
    }
    fn ops_per_s(&self) -> f64 {
        self.operations as f64 / self.send_secs
    }
    fn per_hour(&self) -> f64 {
        self.bytes as f64 / self.send_secs * 3600.0
    }
    fn file_per_hour(&self) -> f64 {
        self.file_per_op() * self.ops_per_s() * 3600.0
    }
}

struct LoadRun {
    mode: Mode,
    relay: Vec<u64>,
    ack: Vec<u64>,
    ops_per_s: f64,
    late: u64,
    cpu: CpuUse,
    rss_mib: f64,
    stored: Option<Stored>,
}

/// The session's archive summary (admin), once there is one.
async fn archived(hub: &TestHub) -> Option<Value> {
    let r = http(hub.http, "GET", &format!("/api/v1/archive?name={SESSION}"), Some(TOKEN), None).await;
    if r.status != 200 {
        return None;
    }
    r.json().as_array().and_then(|a| a.first().cloned())
}

/// Polls the archive summary until `done` holds for it (the writer commits every ~100 ms).
async fn archived_when(hub: &TestHub, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + T;
    loop {
        if let Some(s) = archived(hub).await.filter(|s| done(s)) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {:?}\n{}", archived(hub).await, hub.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(s: &Value, key: &str) -> u64 {
    s[key].as_u64().unwrap_or(0)
}

/// A fresh hub (archive off or on), one session, the performers' load; the hub is gone after.
async fn load_run(prt: &Handle, mode: Mode, measured: Duration) -> LoadRun {
    let mut hub = TestHub::new("");
    let db = hub.dir.path().join("data").join("archive.db");
    let archive = match mode {
        Mode::Off => "archive: off".to_string(),
        Mode::On => format!("archive: {{path: {}}}", db.display()),
    };
    hub.extra_yaml = format!("max_sessions_per_address: 8\nidle_exit: null\n{archive}\n");
    hub.envs.push(("TROOP_HUB_ADMIN_TOKEN".into(), TOKEN.into()));
    let hub = hub.start().await;
    let pid = hub.proc.as_ref().map(|p| p.id()).unwrap_or(0);
    let owner = match start_session(hub.addr, SESSION, PW, T).await.expect("the hub answers") {
        Ok(o) => o,
        Err(e) => panic!("start refused: {e}\n{}", hub.log()),
    };
    let container = hub.containers().pop().expect("the session's container");
    let server_pid: u32 = docker_ok(&["inspect", "-f", "{{.State.Pid}}", &container]).parse().expect("a pid");
    let performers = join(prt, SocketAddr::from(([127, 0, 0, 1], owner.port)), PW).await;

    // Before the load: every join is committed.
    let before = match mode {
        Mode::On => Some(
            archived_when(&hub, "the joins are archived", |s| {
                s["performers"].as_array().is_some_and(|p| p.len() == PERFORMERS)
            })
            .await,
        ),
        Mode::Off => None,
    };
    let file_before = db_bytes(&db);

    let clock = Arc::new(Clock::new());
    let (t0, cpu0) = (Instant::now(), Cpu::now(pid, server_pid));
    let (performers, stats, sending) = phase(prt, performers, &clock, measured).await;
    let cpu = Cpu::now(pid, server_pid).since(cpu0, t0.elapsed().as_secs_f64());
    let rss_mib = proc_kib(&format!("/proc/{pid}/status"), "VmRSS:") as f64 / 1024.0;

    let stored = match before {
        Some(before) => {
            // After the load: every operation sent is committed (the hub records each one).
            let ops0 = count(&before, "operations");
            let after =
                archived_when(&hub, "the operations are archived", |s| count(s, "operations") >= ops0 + stats.sent)
                    .await;
            let file_after = db_bytes(&db);
            leave(prt, performers).await;
            owner.kill().await;
            let end = archived_when(&hub, "the session's end is archived", |s| !s["ended_ms"].is_null()).await;
            let file_end_checkpointed = {
                let conn = rusqlite::Connection::open(&db).expect("open the archive");
                conn.busy_timeout(T).expect("busy timeout");
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).expect("checkpoint");
                db_bytes(&db)
            };
            Some(Stored {
                bytes: count(&after, "bytes") - count(&before, "bytes"),
                operations: count(&after, "operations") - ops0,
                send_secs: sending.as_secs_f64(),
                file_before,
                file_after,
                file_end_checkpointed,
                session_bytes: count(&end, "bytes"),
                session_operations: count(&end, "operations"),
                truncated: end["truncated"] == json!(true),
            })
        }
        None => {
            leave(prt, performers).await;
            owner.kill().await;
            None
        }
    };
    drop(hub);
    LoadRun {
        mode,
        relay: stats.relay,
        ack: stats.ack,
        ops_per_s: stats.sent as f64 / sending.as_secs_f64(),
        late: stats.late,
        cpu,
        rss_mib,
        stored,
    }
}

fn latency_json(v: &[u64]) -> Value {
    let (p50, p99, max, n) = summary(v.to_vec());
    json!({"p50": p50, "p99": p99, "max": max, "samples": n})
}

// ---- 3: a one-hour replay -------------------------------------------------------------------

/// The generated hour.
struct Hour {
    id: String,
    lines: usize,
    operations: usize,
    evaluations: usize,
    marks: usize,
    /// Timeline bytes (each line's length).
    bytes: u64,
    document: String,
    generate_secs: f64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The lines `first..=last` (0-based) of `doc` and where they are, 1-based, end excluded.
fn block(doc: &str, at: usize) -> (String, i64, i64) {
    let line = doc[..at].matches('\n').count();
    let lines: Vec<&str> = doc.split('\n').collect();
    let (first, last) = (line.saturating_sub(1), (line + 1).min(lines.len() - 1));
    (lines[first..=last].join("\n"), first as i64 + 1, last as i64 + 2)
}

/// Writes one hour of a session (started a little over an hour ago, ended a minute ago) into
/// the archive at `path`, as the hub would record it.
async fn generate_hour(path: &Path) -> Hour {
    let began = Instant::now();
    let archive = Archive::open(ArchiveSettings {
        path: path.to_path_buf(),
        keep: Duration::from_secs(30 * 24 * 3600),
        max_session_bytes: 64 << 20,
        max_total_bytes: 1 << 30,
    })
    .expect("open the archive");
    let id = format!("bench-{}", troop_hub::random::hex(8).unwrap_or_default());
    let started_ms = unix_ms() - 3_600_000 - 60_000;
    archive.begin(&id, HOUR_NAME, started_ms, Some(troop_server::md5_hex(HOUR_PW)));
    let mut hour = Hour {
        id: id.clone(),
        lines: 0,
        operations: 0,
        evaluations: 0,
        marks: 0,
        bytes: 0,
        document: String::new(),
        generate_secs: 0.0,
    };
    let mut record = |seq: u64, time_ms: u64, kind: &'static str, performer: Option<String>, m: LiveMessage| {
        let line = m.to_text();
        hour.lines += 1;
        hour.bytes += line.len() as u64;
        match kind {
            "operation" => hour.operations += 1,
            "evaluate" => hour.evaluations += 1,
            "mark" => hour.marks += 1,
            _ => {}
        }
        archive.record(&id, seq, time_ms, kind, performer, line);
    };
    let snapshot = LiveSnapshot {
        session: HOUR_NAME.into(),
        revision: 0,
        document: String::new(),
        performers: Vec::new(),
        authors: Vec::new(),
        marks: Vec::new(),
        public: false,
        time_ms: Some(started_ms),
        more: 0,
    };
    record(0, started_ms, "snapshot", None, LiveMessage::Snapshot(snapshot));
    let names = ["ann", "bo", "cy"];
    let mut t = started_ms;
    let mut seq = 0;
    for (k, name) in names.iter().enumerate().take(HOUR_PERFORMERS) {
        seq += 1;
        t += 1500;
        let id = k as i64 + 1;
        let join = LiveMessage::Join { seq, time_ms: t, id, name: name.to_string(), colour: (id % 10) as u8 };
        record(seq, t, "join", Some(name.to_string()), join);
    }
    // Typing: one character inserted (or one deleted before the cursor) per operation, at the
    // typist's cursor; the typist changes now and then, cursors jump now and then.
    const KEYS: &[u8] = b"abcdefghijklmnopqrstuvwxyz     ()[].,=>\"0123456789";
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut doc = String::new();
    let mut cursors = [0usize; HOUR_PERFORMERS];
    let mut typist = 0;
    let mut next_eval = t + HOUR_EVAL_EVERY_MS;
    let step = 3_600_000 / HOUR_OPS as u64;
    for i in 0..HOUR_OPS {
        t += step / 5 + rng.below(step * 8 / 5);
        if rng.below(25) == 0 {
            typist = rng.below(HOUR_PERFORMERS as u64) as usize;
        }
        let author = typist as i64 + 1;
        if rng.below(40) == 0 {
            cursors[typist] = rng.below(doc.len() as u64 + 1) as usize;
            seq += 1;
            let mark = LiveMessage::Mark { seq, time_ms: t, id: author, index: cursors[typist] as i64 };
            record(seq, t, "mark", None, mark);
        }
        let len = doc.len() as u64;
        let pos = cursors[typist];
        let delete_share = if doc.len() > 4000 { 60 } else { 40 };
        let mut op = Operation::new();
        if pos > 0 && rng.below(100) < delete_share {
            op.retain(pos as u64 - 1).delete(1).retain(len - pos as u64);
            doc.remove(pos - 1);
            for c in cursors.iter_mut() {
                if *c >= pos {
                    *c -= 1;
                }
            }
            cursors[typist] = pos - 1;
        } else {
            let key = if rng.below(25) == 0 { b'\n' } else { KEYS[rng.below(KEYS.len() as u64) as usize] };
            let key = (key as char).to_string();
            op.retain(pos as u64).insert(&key).retain(len - pos as u64);
            doc.insert_str(pos, &key);
            for c in cursors.iter_mut() {
                if *c > pos {
                    *c += 1;
                }
            }
            cursors[typist] = pos + 1;
        }
        seq += 1;
        let ops = serde_json::to_value(&op).expect("an operation as JSON");
        record(seq, t, "operation", None, LiveMessage::Operation { seq, time_ms: t, author, ops });
        if t >= next_eval {
            next_eval += HOUR_EVAL_EVERY_MS;
            let (text, start, end) = block(&doc, cursors[typist]);
            seq += 1;
            let kind = "block".to_string();
            let eval =
                LiveMessage::Evaluate { seq, time_ms: t, author, kind, text, start: Some(start), end: Some(end) };
            record(seq, t, "evaluate", None, eval);
        }
        if i % 4096 == 4095 {
            archive.flush().await; // the writer's queue holds 65,536 lines at most
        }
    }
    archive.finish(&id, t + 1000, "its owner left", Some(doc.clone()));
    archive.flush().await;
    drop(archive);
    hour.document = doc;
    hour.generate_secs = began.elapsed().as_secs_f64();
    hour
}

/// The document a timeline gives, applied from empty (as tests/archive.rs replays it), and
/// its line count.
fn replay(timeline: &str) -> (String, usize) {
    let (mut doc, mut n) = (String::new(), 0);
    for line in timeline.lines() {
        n += 1;
        let m: Value = serde_json::from_str(line).expect("each line is JSON");
        match m["type"].as_str() {
            Some("snapshot") => doc = m["document"].as_str().unwrap_or_default().to_string(),
            Some("operation") => {
                let op: Operation = serde_json::from_value(m["ops"].clone()).expect("an operation");
                doc = op.apply(&doc).expect("each operation fits");
            }
            _ => {}
        }
    }
    (doc, n)
}

/// An HTTP GET timed to its first byte and to the end of its body.
struct Timed {
    status: u16,
    first_byte_ms: f64,
    total_ms: f64,
    body: String,
}

async fn timed_get(addr: SocketAddr, path: &str, header: (&str, &str)) -> Timed {
    let began = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect to the HTTP port");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{}: {}\r\n\r\n", header.0, header.1);
    s.write_all(req.as_bytes()).await.expect("send the request");
    let mut raw = Vec::with_capacity(8 << 20);
    let n = tokio::time::timeout(T, s.read_buf(&mut raw)).await.expect("an answer in time").expect("read");
    assert!(n > 0, "the hub closed the connection without an answer");
    let first_byte_ms = ms(began.elapsed());
    tokio::time::timeout(T, s.read_to_end(&mut raw)).await.expect("the whole answer in time").expect("read");
    let total_ms = ms(began.elapsed());
    let text = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    // The timeline streams in chunks as the archive is read.
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        common::dechunk(body)
    } else {
        body.to_string()
    };
    Timed { status, first_byte_ms, total_ms, body }
}

/// First and median of timed repetitions, ms.
#[derive(Clone, Copy, serde::Serialize)]
struct Reads {
    first_ms: f64,
    median_ms: f64,
    min_ms: f64,
}

impl Reads {
    fn of(v: &[f64]) -> Reads {
        Reads {
            first_ms: v.first().copied().unwrap_or(f64::NAN),
            median_ms: median(v),
            min_ms: v.iter().copied().fold(f64::INFINITY, f64::min),
        }
    }
}

/// The replay page in chromium: ms from navigation to state "ready", ms of its timeline
/// fetch (request to response end, from the page's resource timing), lines it read.
struct PageRun {
    ready_ms: f64,
    timeline_fetch_ms: f64,
    lines: u64,
}

/// Records when the page's `data-state` first becomes "ready" (ms since navigation start).
const READY_PROBE: &str = r#"new MutationObserver(function () {
  if (!window.__benchReady && document.body && document.body.dataset.state === "ready") window.__benchReady = performance.now();
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-state"] });"#;

const TIMELINE_FETCH: &str = r#"(() => { const e = performance.getEntriesByType("resource").find(r => r.name.endsWith("/timeline"));
  return e ? e.responseEnd - e.startTime : null; })()"#;

async fn replay_page(hub: &TestHub, id: &str, runs: usize) -> Vec<PageRun> {
    let origin = format!("http://{}", hub.http);
    let mut page = Page::launch(BASIC_STATE).await;
    // The archive form leaves a token for the performance in the tab's sessionStorage.
    let access = http(
        hub.http,
        "POST",
        &format!("/api/v1/archive/{id}/access"),
        None,
        Some(&json!({"password": HOUR_PW}).to_string()),
    )
    .await;
    let token = access.json()["token"].as_str().unwrap_or_default().to_string();
    page.open(&format!("{origin}/archive")).await;
    let key = serde_json::to_string(&format!("troop-archive-token:{id}")).expect("a JS string");
    page.eval(&format!("sessionStorage.setItem({key}, {})", json!(token))).await;
    page.call("Page.addScriptToEvaluateOnNewDocument", json!({"source": READY_PROBE})).await;
    let url = format!("{origin}/a/{id}");
    loads(&mut page, &url, runs).await
}

/// The performance kept as one file, opened from disk `runs` times.
async fn file_page(path: &Path, runs: usize) -> Vec<PageRun> {
    let mut page = Page::launch(BASIC_STATE).await;
    page.call("Page.addScriptToEvaluateOnNewDocument", json!({"source": READY_PROBE})).await;
    loads(&mut page, &format!("file://{}", path.display()), runs).await
}

/// Navigates to `url` `runs` times, each until the replay is ready.
async fn loads(page: &mut Page, url: &str, runs: usize) -> Vec<PageRun> {
    let mut out = Vec::new();
    for _ in 0..runs {
        let r = page.call("Page.navigate", json!({"url": url})).await;
        assert!(r.get("errorText").is_none(), "opening {url}: {r}");
        let deadline = Instant::now() + Duration::from_secs(120);
        page.wait_for(
            &format!("location.href === {} && window.__benchReady", json!(url)),
            deadline,
            "the replay page is ready",
        )
        .await;
        out.push(PageRun {
            ready_ms: page.eval("window.__benchReady").await.as_f64().unwrap_or(f64::NAN),
            timeline_fetch_ms: page.eval(TIMELINE_FETCH).await.as_f64().unwrap_or(f64::NAN),
            lines: page.eval("troopReplay.lines").await.as_u64().unwrap_or(0),
        });
    }
    out
}

/// The size of `path` gzipped (`gzip -c`), 0 without gzip.
fn gzip_len(path: &Path) -> u64 {
    std::process::Command::new("gzip").arg("-c").arg(path).output().map_or(0, |o| o.stdout.len() as u64)
}

fn chromium_available() -> bool {
    std::process::Command::new("chromium").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn main() {
    let secs: u64 = std::env::var("BENCH_PHASE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2).clamp(1, 3);
    let measured = Duration::from_secs(secs);
    let performer_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("performers")
        .enable_all()
        .build()
        .expect("runtime");
    let main_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let began = Instant::now();
    let idle_busy = machine_busy_now();
    main_rt.block_on(async {
        let prt = performer_rt.handle().clone();

        // ---- 1 and 2 ----
        let mut runs = Vec::new();
        for _ in 0..rounds {
            for mode in [Mode::Off, Mode::On, Mode::On, Mode::Off] {
                runs.push(load_run(&prt, mode, measured).await);
            }
        }
        let pooled = |m: Mode, f: fn(&LoadRun) -> &Vec<u64>| -> Vec<u64> {
            runs.iter().filter(|r| r.mode == m).flat_map(|r| f(r).iter().copied()).collect()
        };
        let mean_cpu = |m: Mode| {
            let of: Vec<&LoadRun> = runs.iter().filter(|r| r.mode == m).collect();
            let n = of.len().max(1) as f64;
            let sum = |f: fn(&CpuUse) -> f64| of.iter().map(|r| f(&r.cpu)).sum::<f64>() / n;
            CpuUse {
                hub: sum(|c| c.hub),
                archive_writer: sum(|c| c.archive_writer),
                server: sum(|c| c.server),
                performers: sum(|c| c.performers),
                machine: sum(|c| c.machine),
            }
        };
        let (off_relay, on_relay) = (pooled(Mode::Off, |r| &r.relay), pooled(Mode::On, |r| &r.relay));
        let (off_ack, on_ack) = (pooled(Mode::Off, |r| &r.ack), pooled(Mode::On, |r| &r.ack));
        let (off, on) = (summary(off_relay.clone()), summary(on_relay.clone()));
        let (off_a, on_a) = (summary(off_ack.clone()), summary(on_ack.clone()));
        let (cpu_off, cpu_on) = (mean_cpu(Mode::Off), mean_cpu(Mode::On));
        let ratio50 = on.0 / off.0;
        let ratio99 = on.1 / off.1;
        let hub_ratio = cpu_on.hub / cpu_off.hub;
        // The run-to-run spread: the largest ratio between two runs of the same kind.
        let spread = |m: Mode, i: usize| {
            let v: Vec<f64> = runs
                .iter()
                .filter(|r| r.mode == m)
                .map(|r| {
                    let s = summary(r.relay.clone());
                    [s.0, s.1][i]
                })
                .collect();
            v.iter().copied().fold(0.0, f64::max) / v.iter().copied().fold(f64::INFINITY, f64::min)
        };
        let (spread50, spread99) = (spread(Mode::Off, 0), spread(Mode::Off, 1));
        let (on_spread50, on_spread99) = (spread(Mode::On, 0), spread(Mode::On, 1));
        let stored: Vec<Stored> = runs.iter().filter_map(|r| r.stored).collect();
        let mean = |f: fn(&Stored) -> f64| stored.iter().map(f).sum::<f64>() / stored.len().max(1) as f64;
        let per_op = mean(Stored::per_op);
        let file_per_op = mean(Stored::file_per_op);
        let per_hour = mean(Stored::per_hour);
        let file_per_hour = mean(Stored::file_per_hour);
        let busy_rate = mean(Stored::ops_per_s);
        // Timeline lines the hub recorded per second (operations and the rest), and the hub's
        // and its writer thread's CPU per line.
        // The hub's extra CPU and its writer thread's, per recorded operation (the load's
        // timeline is its operations, and a join line per performer).
        let us_per_op = (cpu_on.hub - cpu_off.hub) / 100.0 / busy_rate * 1e6;
        let writer_us_per_op = cpu_on.archive_writer / 100.0 / busy_rate * 1e6;
        let real_hour = per_op * REAL_RATE * 3600.0;
        let real_file_hour = file_per_op * REAL_RATE * 3600.0;
        let cap = 16.0 * MIB; // the default max_session_bytes
        let truncated = stored.iter().any(|s| s.truncated);

        // ---- 3 ----
        let mut hub = TestHub::new("");
        let db = hub.dir.path().join("data").join("hour.db");
        let hour = generate_hour(&db).await;
        let hour_file = db_bytes(&db);
        let reader = Archive::open(ArchiveSettings {
            path: db.clone(),
            keep: Duration::from_secs(30 * 24 * 3600),
            max_session_bytes: 64 << 20,
            max_total_bytes: 1 << 30,
        })
        .expect("reopen the archive");
        let mut in_process = Vec::new();
        let mut body_len = 0;
        for _ in 0..READS {
            let t0 = Instant::now();
            let mut body = String::new();
            let found = reader
                .timeline(&hour.id, &mut |line| {
                    body.push_str(line);
                    body.push('\n');
                })
                .expect("read the timeline");
            in_process.push(ms(t0.elapsed()));
            assert!(found);
            body_len = body.len();
        }
        let t0 = Instant::now();
        assert!(reader.verify(&hour.id, HOUR_PW).expect("verify"), "the hour's password");
        let verify_ms = ms(t0.elapsed());
        drop(reader);

        hub.extra_yaml = format!("idle_exit: null\narchive: {{path: {}}}\n", db.display());
        hub.envs.push(("TROOP_HUB_ADMIN_TOKEN".into(), TOKEN.into()));
        let hub = hub.start().await;
        let path = format!("/api/v1/archive/{}/timeline", hour.id);
        let admin = format!("Bearer {TOKEN}");
        let (mut by_admin, mut by_password, mut first_bytes) = (Vec::new(), Vec::new(), Vec::new());
        let mut http_body = String::new();
        for _ in 0..READS {
            let r = timed_get(hub.http, &path, ("Authorization", &admin)).await;
            assert_eq!(r.status, 200, "{}", r.body);
            by_admin.push(r.total_ms);
            first_bytes.push(r.first_byte_ms);
            http_body = r.body;
        }
        for _ in 0..READS {
            let r = timed_get(hub.http, &path, ("X-Session-Password", HOUR_PW)).await;
            assert_eq!(r.status, 200, "{}", r.body);
            by_password.push(r.total_ms);
        }
        // The replay page's requests: the summary, then the timeline and the code together.
        let mut page_requests = Vec::new();
        for _ in 0..READS {
            let t0 = Instant::now();
            let s = timed_get(hub.http, &format!("/api/v1/archive/{}", hour.id), ("X-Session-Password", HOUR_PW)).await;
            assert_eq!(s.status, 200, "{}", s.body);
            let code = format!("/api/v1/archive/{}/code", hour.id);
            let (tl, code) = tokio::join!(
                timed_get(hub.http, &path, ("X-Session-Password", HOUR_PW)),
                timed_get(hub.http, &code, ("X-Session-Password", HOUR_PW))
            );
            assert_eq!((tl.status, code.status), (200, 200));
            page_requests.push(ms(t0.elapsed()));
        }
        let summary_v: Value = serde_json::from_str(
            &timed_get(hub.http, &format!("/api/v1/archive/{}", hour.id), ("Authorization", &admin)).await.body,
        )
        .expect("a summary");
        let (replayed, lines) = replay(&http_body);
        assert_eq!(replayed, hour.document, "the timeline replays to the generated document");
        assert_eq!(lines, hour.lines, "every generated line is served");
        assert_eq!(http_body.len(), body_len, "the hub serves what the store reads");

        // (c) The hour as one file.
        let file_path = format!("/api/v1/archive/{}/replay.html", hour.id);
        let (mut file_gets, mut file_body) = (Vec::new(), String::new());
        for _ in 0..READS {
            let r = timed_get(hub.http, &file_path, ("Authorization", &admin)).await;
            assert_eq!(r.status, 200, "{}", r.body);
            file_gets.push(r.total_ms);
            file_body = r.body;
        }
        let kept = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-one-hour-replay.html"));
        std::fs::write(&kept, &file_body).expect("the one-hour file written");
        let file_gzip = gzip_len(&kept);

        let (page_runs, file_runs, page_note) = if chromium_available() {
            (replay_page(&hub, &hour.id, 3).await, file_page(&kept, 3).await, None)
        } else {
            (Vec::new(), Vec::new(), Some("skipped: no chromium (apt-get install chromium)"))
        };
        drop(hub);
        for p in &file_runs {
            assert_eq!(p.lines as usize, hour.lines, "the file replays every line");
        }
        for p in &page_runs {
            assert_eq!(p.lines as usize, hour.lines, "the page read every line");
        }

        let in_process = Reads::of(&in_process);
        let by_admin = Reads::of(&by_admin);
        let by_password = Reads::of(&by_password);
        let page_requests = Reads::of(&page_requests);
        let ready = Reads::of(&page_runs.iter().map(|p| p.ready_ms).collect::<Vec<_>>());
        let file_ready = Reads::of(&file_runs.iter().map(|p| p.ready_ms).collect::<Vec<_>>());
        let file_gets = Reads::of(&file_gets);
        let page_fetch = Reads::of(&page_runs.iter().map(|p| p.timeline_fetch_ms).collect::<Vec<_>>());
        let first_byte = median(&first_bytes);

        // ---- the table ----
        println!(
            "\narchive: 1 session, {PERFORMERS} performers at {RATE} ops/s in total, {secs} s measured per run (after {} s warm-up); a fresh hub per run, in the order off, on, on, off{}",
            WARMUP.as_secs(),
            if rounds > 1 { format!(" ({rounds} times)") } else { String::new() }
        );
        println!("machine busy before the run: {idle_busy:.1} % of all cores");
        println!("1. recording cost");
        println!("run (archive)   relay p50  relay p99  relay max   ack p50   ack p99   ops/s  late | CPU % of a core: hub  (writer)  server  performers | machine %  hub RSS MiB");
        let mut nth = [0, 0];
        for r in &runs {
            let (p50, p99, max, _) = summary(r.relay.clone());
            let (a50, a99, _, _) = summary(r.ack.clone());
            let i = (r.mode == Mode::On) as usize;
            nth[i] += 1;
            let c = r.cpu;
            println!(
                "{:<15} {p50:9.3}  {p99:9.3}  {max:9.3}  {a50:8.3}  {a99:8.3}  {:6.0}  {:4} | {:20.1}  {:8.1}  {:6.1}  {:10.1} | {:9.1}  {:11.1}",
                format!("{} #{}", if i == 1 { "on" } else { "off" }, nth[i]),
                r.ops_per_s,
                r.late,
                c.hub,
                c.archive_writer,
                c.server,
                c.performers,
                c.machine,
                r.rss_mib
            );
        }
        for (name, l, a, c) in [("off, pooled", off, off_a, cpu_off), ("on, pooled", on, on_a, cpu_on)] {
            println!(
                "{name:<15} {:9.3}  {:9.3}  {:9.3}  {:8.3}  {:8.3}  {:>6}  {:>4} | {:20.1}  {:8.1}  {:6.1}  {:10.1} | {:9.1}",
                l.0, l.1, l.2, a.0, a.1, "", "", c.hub, c.archive_writer, c.server, c.performers, c.machine
            );
        }
        println!(
            "on/off          relay p50 {ratio50:.2}  relay p99 {ratio99:.2}   (run-to-run spread, largest/smallest: off p50 {spread50:.2} p99 {spread99:.2}; on p50 {on_spread50:.2} p99 {on_spread99:.2})"
        );
        println!(
            "                hub CPU {hub_ratio:.2}: +{:.1} % of a core = {us_per_op:.1} us per recorded operation, of which the archive-writer thread {:.1} % = {writer_us_per_op:.1} us",
            cpu_on.hub - cpu_off.hub,
            cpu_on.archive_writer
        );
        println!("2. bytes of a busy session (the bench's {busy_rate:.0} ops/s: 8 performers typing 125 keystrokes/s each; real live coding is ~1-10 ops/s per session)");
        println!("        during the load (API bytes)                          | db+wal bytes before, after | db at the session's end, checkpointed");
        println!("run     operations  timeline bytes  bytes/op  MiB per hour |                            |  operations    MiB  bytes/op  MiB per hour");
        for (i, s) in stored.iter().enumerate() {
            println!(
                "on #{:<3} {:10}  {:14}  {:8.1}  {:12.1} | {:12} {:13} | {:11}  {:5.2}  {:8.1}  {:12.1}",
                i + 1,
                s.operations,
                s.bytes,
                s.per_op(),
                s.per_hour() / MIB,
                s.file_before,
                s.file_after,
                s.session_operations,
                s.file_end_checkpointed as f64 / MIB,
                s.file_per_op(),
                s.file_per_hour() / MIB
            );
        }
        println!(
            "busy ({busy_rate:.0} ops/s): {:.1} MiB of timeline per hour ({:.1} MiB of file); the default max_session_bytes (16 MiB) is full after {:.1} min",
            per_hour / MIB,
            file_per_hour / MIB,
            cap / (per_hour / 3600.0) / 60.0
        );
        println!(
            "scaled to {REAL_RATE} ops/s: {:.2} MiB of timeline per hour ({:.2} MiB of file); 16 MiB lasts {:.1} h. measured on part 3's generated hour: {:.2} MiB of timeline ({:.1} bytes/line), {:.2} MiB of file",
            real_hour / MIB,
            real_file_hour / MIB,
            cap / real_hour,
            hour.bytes as f64 / MIB,
            hour.bytes as f64 / hour.lines as f64,
            hour_file as f64 / MIB
        );
        println!(
            "3. a one-hour replay: {HOUR_PERFORMERS} performers, {REAL_RATE} ops/s, an evaluation every {} s: {} lines ({} operations, {} evaluations, {} cursor marks), {:.2} MiB body, db {:.2} MiB; written through the Archive API in {:.1} s",
            HOUR_EVAL_EVERY_MS / 1000,
            hour.lines,
            hour.operations,
            hour.evaluations,
            hour.marks,
            http_body.len() as f64 / MIB,
            hour_file as f64 / MIB,
            hour.generate_secs
        );
        println!("ms ({READS} reads each)                                    first   median      min");
        let row = |name: &str, r: Reads| println!("{name:<54} {:7.1}  {:7.1}  {:7.1}", r.first_ms, r.median_ms, r.min_ms);
        row("baseline: Archive::timeline in-process (to a String)", in_process);
        row("GET .../timeline, admin token (to the full body)", by_admin);
        row("GET .../timeline, X-Session-Password (+ argon2)", by_password);
        row("the page's requests: summary, then timeline + code", page_requests);
        println!(
            "  first byte of the admin GET: median {first_byte:.1} ms (the timeline streams as it is read); argon2 verify in-process {verify_ms:.1} ms; HTTP/in-process median {:.2}",
            by_admin.median_ms / in_process.median_ms
        );
        match page_note {
            Some(note) => println!("replay page in chromium: {note}"),
            None => {
                println!(
                    "replay page in chromium, navigation to state \"ready\" ({} loads, ms)       {:7.1}  {:7.1}  {:7.1}",
                    page_runs.len(),
                    ready.first_ms,
                    ready.median_ms,
                    ready.min_ms
                );
                println!(
                    "  of which its timeline fetch (resource timing)          {:7.1}  {:7.1}  {:7.1}",
                    page_fetch.first_ms, page_fetch.median_ms, page_fetch.min_ms
                );
            }
        }
        println!(
            "the hour kept as one file (replay.html): {:.2} MiB ({:.2}x the timeline body; {:.2} MiB gzipped), GET {:.1} ms median ({:.2}x the timeline GET)",
            file_body.len() as f64 / MIB,
            file_body.len() as f64 / http_body.len().max(1) as f64,
            file_gzip as f64 / MIB,
            file_gets.median_ms,
            file_gets.median_ms / by_admin.median_ms
        );
        if page_note.is_none() {
            println!(
                "  opened from file:// in chromium, to state \"ready\" ({} loads, ms)      {:7.1}  {:7.1}  {:7.1}   ({:.2}x the hub's replay page)",
                file_runs.len(),
                file_ready.first_ms,
                file_ready.median_ms,
                file_ready.min_ms,
                file_ready.median_ms / ready.median_ms
            );
        }
        let problems: Vec<String> = [
            (ratio99 > 1.10).then(|| {
                let within = if ratio99 <= spread99.max(on_spread99) {
                    "within the run-to-run spread of runs of one kind"
                } else {
                    "beyond the run-to-run spread of runs of one kind"
                };
                format!("relay p99 on/off {ratio99:.2} is over 1.10 ({within}: off {spread99:.2}, on {on_spread99:.2})")
            }),
            truncated.then(|| "a recorded session was truncated".to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        for p in &problems {
            println!("PROBLEM: {p}");
        }

        let run_json = |r: &LoadRun| {
            json!({"archive": format!("{:?}", r.mode).to_lowercase(), "relay_ms": latency_json(&r.relay), "ack_ms": latency_json(&r.ack),
                   "ops_per_s": r.ops_per_s, "late_sends": r.late, "cpu_percent": r.cpu, "hub_rss_mib": r.rss_mib, "stored": r.stored})
        };
        let page_json: Vec<Value> = page_runs
            .iter()
            .map(|p| json!({"ready_ms": p.ready_ms, "timeline_fetch_ms": p.timeline_fetch_ms, "lines": p.lines}))
            .collect();
        let report = json!({
            "machine_busy_percent_before": idle_busy, "performers": PERFORMERS, "ops_per_s_target": RATE,
            "measured_seconds_per_run": secs, "order": ["off", "on", "on", "off"], "rounds": rounds,
            "recording_cost": {
                "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
                "off_pooled": {"relay_ms": latency_json(&off_relay), "ack_ms": latency_json(&off_ack), "cpu_percent": cpu_off},
                "on_pooled": {"relay_ms": latency_json(&on_relay), "ack_ms": latency_json(&on_ack), "cpu_percent": cpu_on},
                "on_over_off": {"relay_p50": ratio50, "relay_p99": ratio99, "hub_cpu": hub_ratio},
                "spread_largest_over_smallest": {"off": {"relay_p50": spread50, "relay_p99": spread99},
                                                 "on": {"relay_p50": on_spread50, "relay_p99": on_spread99}},
                "hub_extra_cpu_us_per_op": us_per_op, "archive_writer_cpu_us_per_op": writer_us_per_op,
            },
            "busy_session": {
                "ops_per_s": busy_rate, "bytes_per_op": per_op, "file_bytes_per_op": file_per_op,
                "timeline_mib_per_hour": per_hour / MIB, "file_mib_per_hour": file_per_hour / MIB,
                "minutes_to_default_session_cap": cap / (per_hour / 3600.0) / 60.0,
                "scaled_to_real_rate": {"ops_per_s": REAL_RATE, "timeline_mib_per_hour": real_hour / MIB,
                                        "file_mib_per_hour": real_file_hour / MIB, "hours_to_default_session_cap": cap / real_hour},
            },
            "one_hour_replay": {
                "performers": HOUR_PERFORMERS, "ops_per_s": REAL_RATE, "evaluation_every_s": HOUR_EVAL_EVERY_MS / 1000,
                "lines": hour.lines, "operations": hour.operations, "evaluations": hour.evaluations, "marks": hour.marks,
                "timeline_bytes": hour.bytes, "body_bytes": http_body.len(), "db_bytes": hour_file,
                "summary": summary_v, "generate_seconds": hour.generate_secs,
                "in_process_timeline_ms": in_process, "http_timeline_admin_ms": by_admin,
                "http_timeline_password_ms": by_password, "http_first_byte_admin_median_ms": first_byte,
                "page_requests_ms": page_requests, "argon2_verify_ms": verify_ms,
                "replay_page": if page_runs.is_empty() { json!(page_note) } else {
                    json!({"ready_ms": ready, "timeline_fetch_ms": page_fetch, "loads": page_json}) },
                "one_file": {"bytes": file_body.len(), "gzip_bytes": file_gzip, "get_ms": file_gets,
                             "file_ready_ms": if file_runs.is_empty() { json!(page_note) } else { json!(file_ready) }},
            },
            "problems": problems,
        });
        let out = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-archive.json");
        let _ = std::fs::write(out, serde_json::to_string_pretty(&report).unwrap_or_default());
    });
    println!("archive bench took {:.1} s", began.elapsed().as_secs_f64());
}
