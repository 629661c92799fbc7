//! A paced load of Troop performers (real clients with full client-side OT) in one session,
//! and the figures the benches take of it.
//!
//! [`PERFORMERS`] performers edit at [`RATE`] operations/s in total. Every operation inserts a
//! unique token (`p3n417 `) at a pseudo-random position and, once the document is over
//! [`MAX_DOC`] characters, deletes as many characters right after it, so the document stays
//! bounded. A token's send time (ns since the [`Clock`]'s base) is kept per performer and
//! token number; whoever receives an operation looks its tokens up: relay latency (another
//! performer's operation, send to receipt) and acknowledgement (one's own).

use super::T;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use troop_server::client::{ClientError, TroopClient};
use troop_server::message::Body;
use troop_server::ot::{Operation, Part};

pub const PERFORMERS: usize = 8;
/// Operations per second, all performers together.
pub const RATE: f64 = 1000.0;
/// Send times kept per performer (125/s for three phases of 11 s is ~4,200).
pub const SLOTS: usize = 1 << 15;
pub const MAX_DOC: u64 = 2000;
pub const WARMUP: Duration = Duration::from_secs(1);
/// After the last send, receivers keep reading this long for operations still in flight.
pub const DRAIN: Duration = Duration::from_millis(500);

/// A common clock: send times of every token, as ns since `base` plus one (0: not sent).
pub struct Clock {
    pub base: Instant,
    sent: Vec<Vec<AtomicU64>>,
    /// Only tokens sent at or after this (ns since `base`) are measured.
    pub measure_from: AtomicU64,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            base: Instant::now(),
            sent: (0..PERFORMERS).map(|_| (0..SLOTS).map(|_| AtomicU64::new(0)).collect()).collect(),
            measure_from: AtomicU64::new(u64::MAX),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn mark_sent(&self, k: usize, n: u64) {
        if let Some(slot) = self.sent[k].get(n as usize) {
            slot.store(self.now_ns() + 1, Ordering::Relaxed);
        }
    }

    /// The send time of token `p{k}n{n}` if it is one to measure.
    pub fn measured(&self, token: &str) -> Option<u64> {
        let (k, n) = token.strip_prefix('p')?.split_once('n')?;
        let (k, n): (usize, usize) = (k.parse().ok()?, n.parse().ok()?);
        let sent = self.sent.get(k)?.get(n)?.load(Ordering::Relaxed).checked_sub(1)?;
        (sent >= self.measure_from.load(Ordering::Relaxed)).then_some(sent)
    }
}

/// Percentile `p` of sorted nanoseconds, in ms.
pub fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1e6
}

/// p50, p99, max in ms, and the number of samples.
pub fn summary(mut v: Vec<u64>) -> (f64, f64, f64, usize) {
    v.sort_unstable();
    (pct(&v, 0.5), pct(&v, 0.99), pct(&v, 1.0), v.len())
}

/// A `key:` line of a /proc status file, in KiB.
pub fn proc_kib(file: &str, key: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU ticks (user + system, 1/100 s) in a `/proc/.../stat` file.
pub fn ticks(stat_file: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_file).unwrap_or_default();
    // After the command name (in parentheses) the state is field 3; utime is 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    field(11) + field(12)
}

/// CPU ticks of process `pid`'s threads named `name` ("self": this process).
pub fn named_thread_ticks(pid: &str, name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0.0 };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .map(|t| ticks(&t.path().join("stat").to_string_lossy()))
        .sum()
}

/// CPU ticks of this process's threads named `name` (a runtime's workers).
pub fn thread_ticks(name: &str) -> f64 {
    named_thread_ticks("self", name)
}

/// Machine-wide (busy, all) ticks from /proc/stat.
pub fn machine_ticks() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let all: f64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0.0) + f.get(4).copied().unwrap_or(0.0);
    (all - idle, all)
}

/// How busy the machine is over the next second (percent of all cores): others' load.
pub fn machine_busy_now() -> f64 {
    let (busy0, all0) = machine_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let (busy1, all1) = machine_ticks();
    (busy1 - busy0) / (all1 - all0).max(1.0) * 100.0
}

/// What one performer measured in one phase (ns).
#[derive(Default)]
pub struct PerformerStats {
    /// Others' operations: their send to this performer's receipt.
    pub relay: Vec<u64>,
    /// Own operations: the send to the server's acknowledgement.
    pub ack: Vec<u64>,
    pub sent: u64,
    /// Sends more than one interval late (the OT state or the thread held them back).
    pub late: u64,
}

/// A performer between phases.
pub struct Performer {
    pub c: TroopClient,
    pub k: usize,
    next_token: u64,
    rng: u64,
}

impl Performer {
    pub fn new(c: TroopClient, k: usize) -> Performer {
        Performer { c, k, next_token: 0, rng: 0x9E37_79B9_7F4A_7C15 ^ ((k as u64 + 1) * 7919) }
    }

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
pub async fn settle(performers: &mut [Performer]) {
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

/// [`PERFORMERS`] performers join the session at `addr` one by one on runtime `rt`, then
/// settle past every join's RESET.
pub async fn join(rt: &Handle, addr: SocketAddr, password: &str) -> Vec<Performer> {
    let password = password.to_string();
    rt.spawn(async move {
        let mut ps = Vec::new();
        for k in 0..PERFORMERS {
            let c = TroopClient::join(addr, &format!("p{k}"), &password, T).await.expect("a performer joins");
            ps.push(Performer::new(c, k));
        }
        settle(&mut ps).await;
        ps
    })
    .await
    .expect("performers join")
}

/// The performers leave (on their runtime).
pub async fn leave(rt: &Handle, performers: Vec<Performer>) {
    rt.spawn(async move {
        for p in performers {
            p.c.close().await;
        }
    })
    .await
    .expect("performers leave");
}

/// One phase of all performers on their runtime: 1 s warm-up, then `measured`. Returns the
/// performers, what they measured together, and how long they sent.
pub async fn phase(
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

/// A multi-threaded runtime with one worker thread named `name`: the benches run performers
/// and viewers each on a thread of their own, so one side's reading does not queue behind the
/// other's.
pub fn one_thread_runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Waits until `c`'s operations in flight are all acknowledged.
pub async fn synced(c: &mut TroopClient) {
    while !c.is_synchronized() {
        c.recv(T).await.expect("ack");
    }
}

/// Waits until an operation holding `token` reaches `c`.
pub async fn receive_token(c: &mut TroopClient, token: &str) {
    c.recv_until_match(
        T,
        |_, m| matches!(&m.body, Body::Operation { operation, .. } if operation.to_string().contains(token)),
    )
    .await
    .expect("the token arrives");
}

/// Prints latency rows (ns) as a table, each against the first row of its group (its
/// baseline), and returns them as JSON rows (`path`, `p50_ms`, `p99_ms`, `max_ms`, `n`).
pub fn latency_table(groups: Vec<Vec<(&str, Vec<u64>)>>) -> Vec<serde_json::Value> {
    let width = groups.iter().flatten().map(|(name, _)| name.len()).max().unwrap_or(4);
    println!("{:<width$} {:>9} {:>9} {:>9} {:>7}", "path", "p50 ms", "p99 ms", "max ms", "n");
    let mut rows = Vec::new();
    for group in groups {
        let mut baseline = None;
        for (name, v) in group {
            let (p50, p99, max, count) = summary(v);
            let (b50, b99) = *baseline.get_or_insert((p50, p99));
            println!(
                "{name:<width$} {p50:>9.3} {p99:>9.3} {max:>9.3} {count:>7}   p50 {:.2}x, p99 {:.2}x its baseline",
                p50 / b50,
                p99 / b99
            );
            rows.push(serde_json::json!({"path": name, "p50_ms": p50, "p99_ms": p99, "max_ms": max, "n": count}));
        }
    }
    rows
}
