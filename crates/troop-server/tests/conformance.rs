//! Conformance with upstream Troop 0.10.3: replays the golden transcripts in
//! `tests/conformance/transcripts` (recorded from the upstream server, see the README there)
//! against our `troop-server` binary, one fresh server per scenario, and requires every byte
//! each connection receives to match. This file owns the replayer; the transcripts are data.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const EXPECTED_TRANSCRIPTS: usize = 30;
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
const START_TIMEOUT: Duration = Duration::from_secs(15);
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(90);
const WORKERS: usize = 4;

/// Port picking and server start-up run one at a time, so two scenarios never race for a port.
static START_LOCK: Mutex<()> = Mutex::new(());

fn transcript_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/transcripts")
}

/// Every transcript, sorted by file name. A missing folder or unreadable file panics.
fn load_transcripts() -> Vec<Value> {
    let dir = transcript_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("transcripts at {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("read transcript folder").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let parse = |p: &PathBuf| {
        let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    files.iter().map(parse).collect()
}

fn name_of(tr: &Value) -> String {
    tr["name"].as_str().unwrap_or("?").to_string()
}

/// One `troop-server` child with its output collected; killed when dropped.
struct Server {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<u8>>>,
    drains: Vec<JoinHandle<()>>,
}

impl Server {
    /// Starts a server on a free loopback port, trying a new port if the first is taken.
    fn start(password: &str) -> Result<Server, String> {
        let _turn = START_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let mut server = Server::spawn(port, password)?;
            match server.wait_ready() {
                Ok(()) => return Ok(server),
                Err(e) => last = format!("{e}\n{}", server.stop_and_log()),
            }
        }
        Err(format!("server did not start: {last}"))
    }

    fn spawn(port: u16, password: &str) -> Result<Server, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_troop-server"))
            .args(["--port", &port.to_string(), "--password", password])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start troop-server: {e}"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("piped stdout"));
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("piped stderr"));
        let drains = [out, err].into_iter().map(|r| drain(r, log.clone())).collect();
        Ok(Server { child, port, log, drains })
    }

    /// Polls until the port accepts (the probe sends nothing and closes), the child exits, or
    /// 15 s pass.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("server exited ({status}) before accepting on port {}", self.port));
            }
            match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                // A probe can connect to itself when nothing listens yet; that is not the server.
                Ok(probe) if probe.local_addr().ok() != Some(addr) => return Ok(()),
                _ if Instant::now() > deadline => {
                    return Err(format!("server did not accept on port {} within {START_TIMEOUT:?}", self.port))
                }
                _ => thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn signal(&mut self, sig: &str) -> Result<(), String> {
        if !matches!(sig, "INT" | "TERM") {
            return Err(format!("unsupported signal {sig:?}"));
        }
        if !matches!(self.child.try_wait(), Ok(None)) {
            return Ok(()); // already gone: nothing to signal, as the kit does
        }
        let pid = self.child.id();
        // The shell's built-in kill: /usr/bin/kill (procps) is missing from minimal images.
        let status = Command::new("sh").arg("-c").arg(format!("kill -{sig} {pid}")).status();
        match status {
            Ok(s) if s.success() => Ok(()),
            other => Err(format!("kill -{sig} {pid} failed: {other:?}")),
        }
    }

    /// Kills the child, waits for its output to end and returns the last lines of it.
    fn stop_and_log(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for d in self.drains.drain(..) {
            let _ = d.join();
        }
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&log);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].iter().map(|l| format!("        {l}\n"));
        format!("      server output (tail):\n{}", tail.collect::<String>())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn drain(mut from: Box<dyn Read + Send>, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = from.read(&mut chunk) {
            into.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&chunk[..n]);
        }
    })
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("no free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| format!("no free port: {e}"))
}

/// A client connection and what it has received but no step has consumed yet.
struct Conn {
    sock: Option<TcpStream>, // None once a `close` step closed it
    buf: Vec<u8>,
    eof: bool,
}

impl Conn {
    /// One read, bounded by `deadline`. False on timeout, or when nothing more can come.
    fn fill(&mut self, deadline: Instant) -> bool {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Some(sock) = self.sock.as_mut().filter(|_| !self.eof && !remaining.is_zero()) else {
            return false;
        };
        let mut chunk = [0u8; 65536];
        let result = sock.set_read_timeout(Some(remaining)).and_then(|()| sock.read(&mut chunk));
        match result {
            Ok(0) => self.eof = true,
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => self.eof = true, // a reset counts as the server closing
        }
        true
    }
}

/// The state of one scenario's replay.
struct Replay<'a> {
    server: &'a mut Server,
    conns: BTreeMap<String, Conn>,
    vars: HashMap<String, String>,
    hard_deadline: Instant,
}

/// Starts a fresh server and replays `tr` against it. Err holds the failure message.
fn replay(tr: &Value) -> Result<(), String> {
    let password = tr["password"].as_str().ok_or("transcript has no password")?;
    let steps = tr["steps"].as_array().ok_or("transcript has no steps")?;
    let mut server = Server::start(password)?;
    let hard_deadline = Instant::now() + SCENARIO_TIMEOUT;
    let mut replay = Replay { server: &mut server, conns: BTreeMap::new(), vars: HashMap::new(), hard_deadline };
    let result = steps.iter().enumerate().try_for_each(|(i, st)| {
        let label = st["c"].as_str().unwrap_or("-");
        let what = format!(
            "step {} ({label} {}{})",
            i + 1,
            str_of(st, "do"),
            st["t"].as_str().map_or(String::new(), |t| format!(" {t}"))
        );
        if Instant::now() > replay.hard_deadline {
            return Err(format!("scenario exceeded {SCENARIO_TIMEOUT:?} at {what}"));
        }
        replay.step(st).map_err(|e| format!("{what}: {e}"))
    });
    drop(replay);
    result.map_err(|e| format!("{e}\n{}", server.stop_and_log()))
}

fn str_of<'v>(st: &'v Value, key: &str) -> &'v str {
    st[key].as_str().unwrap_or("")
}

fn ms(st: &Value) -> Result<Duration, String> {
    st["ms"].as_u64().map(Duration::from_millis).ok_or_else(|| "step has no \"ms\"".to_string())
}

impl Replay<'_> {
    fn step(&mut self, st: &Value) -> Result<(), String> {
        match str_of(st, "do") {
            "connect" => self.connect(str_of(st, "c")),
            "send" => self.send(st),
            "recv" => self.recv(st),
            "eof" => self.eof(str_of(st, "c")),
            "close" => self.conn(str_of(st, "c")).map(|c| c.sock = None),
            "quiet" => self.quiet(st),
            "sleep" => ms(st).map(thread::sleep),
            "signal" => self.server.signal(str_of(st, "sig")),
            other => Err(format!("unknown step kind {other:?} in transcript")),
        }
    }

    fn conn(&mut self, label: &str) -> Result<&mut Conn, String> {
        match self.conns.get_mut(label) {
            Some(c) if c.sock.is_some() => Ok(c),
            Some(_) => Err(format!("connection {label} was closed by an earlier step")),
            None => Err(format!("no connection {label}")),
        }
    }

    fn deadline(&self, after: Duration) -> Instant {
        (Instant::now() + after).min(self.hard_deadline)
    }

    fn connect(&mut self, label: &str) -> Result<(), String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.server.port));
        let sock = TcpStream::connect_timeout(&addr, RECV_TIMEOUT).map_err(|e| format!("connect failed: {e}"))?;
        sock.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let local = sock.local_addr().map_err(|e| format!("local address: {e}"))?;
        self.vars.insert(format!("host:{label}"), local.ip().to_string());
        self.vars.insert(format!("port:{label}"), local.port().to_string());
        self.conns.insert(label.to_string(), Conn { sock: Some(sock), buf: Vec::new(), eof: false });
        Ok(())
    }

    fn send(&mut self, st: &Value) -> Result<(), String> {
        let chunks: Vec<Vec<u8>> = if let Some(chunks) = st["chunks"].as_array() {
            chunks
                .iter()
                .map(|c| c.as_str().map(|s| s.as_bytes().to_vec()).ok_or("non-string chunk"))
                .collect::<Result<_, _>>()?
        } else if let Some(hex) = st["hex"].as_str() {
            vec![from_hex(hex)?]
        } else {
            vec![st["data"].as_str().ok_or("send step without data")?.as_bytes().to_vec()]
        };
        let gap = Duration::from_millis(st["gap_ms"].as_u64().unwrap_or(0));
        let sock = self.conn(str_of(st, "c"))?.sock.as_mut().expect("checked open");
        sock.set_write_timeout(Some(RECV_TIMEOUT)).map_err(|e| format!("send failed: {e}"))?;
        for (i, chunk) in chunks.iter().enumerate() {
            if i > 0 {
                thread::sleep(gap);
            }
            sock.write_all(chunk).map_err(|e| format!("send failed: {e}"))?;
        }
        Ok(())
    }

    fn recv(&mut self, st: &Value) -> Result<(), String> {
        let want = substitute(st["data"].as_str().ok_or("recv step without data")?, &self.vars)?.into_bytes();
        let deadline = self.deadline(RECV_TIMEOUT);
        let c = self.conn(str_of(st, "c"))?;
        while c.buf.len() < want.len() && want.starts_with(&c.buf) && c.fill(deadline) {}
        let got = &c.buf[..c.buf.len().min(want.len())];
        if got == want.as_slice() {
            c.buf.drain(..want.len());
            return Ok(());
        }
        let at = got.iter().zip(&want).position(|(g, w)| g != w).unwrap_or(got.len());
        let why = match (want.starts_with(got), c.eof) {
            (true, false) => "timed out".to_string(),
            (true, true) => "connection closed".to_string(),
            (false, _) => format!("mismatch at byte {at}"),
        };
        Err(format!("{why}\n      expected: {}\n      got:      {}", excerpt(&want, at), excerpt(got, at)))
    }

    fn eof(&mut self, label: &str) -> Result<(), String> {
        let deadline = self.deadline(RECV_TIMEOUT);
        let c = self.conn(label)?;
        while !c.eof && c.buf.is_empty() && c.fill(deadline) {}
        match (c.buf.is_empty(), c.eof) {
            (false, _) => Err(format!("expected the server to close, got data: {}", excerpt(&c.buf, 0))),
            (true, false) => Err(format!("server did not close the connection within {RECV_TIMEOUT:?}")),
            (true, true) => Ok(()),
        }
    }

    /// Nothing may arrive on the watched connections for `ms`, nor may they close unless `eof_ok`.
    fn quiet(&mut self, st: &Value) -> Result<(), String> {
        let eof_ok = st["eof_ok"].as_bool().unwrap_or(false);
        let labels: Vec<String> = match st["clients"].as_array() {
            Some(list) => list.iter().map(|l| l.as_str().unwrap_or("").to_string()).collect(),
            None => self.conns.iter().filter(|(_, c)| c.sock.is_some() && !c.eof).map(|(l, _)| l.clone()).collect(),
        };
        let deadline = self.deadline(ms(st)?);
        let mut watched: Vec<(&String, &mut Conn)> =
            self.conns.iter_mut().filter(|(l, _)| labels.contains(l)).collect();
        if watched.len() != labels.len() || watched.iter().any(|(_, c)| c.sock.is_none()) {
            return Err(format!("quiet on connections that are not open: {labels:?}"));
        }
        while Instant::now() < deadline {
            let slice = (Instant::now() + Duration::from_millis(20)).min(deadline);
            for (_, c) in watched.iter_mut() {
                c.fill(slice);
            }
            let noisy = watched.iter().any(|(_, c)| !c.buf.is_empty() || (c.eof && !eof_ok));
            if noisy || watched.iter().all(|(_, c)| c.eof) {
                break;
            }
        }
        for (label, c) in &watched {
            if !c.buf.is_empty() {
                return Err(format!("unexpected data for {label}: {}", excerpt(&c.buf, 0)));
            }
            if c.eof && !eof_ok {
                return Err(format!("server unexpectedly closed {label}"));
            }
        }
        Ok(())
    }
}

/// Replaces `${host:X}` / `${port:X}` (any `${word:word}`) with the recorded connection's value.
fn substitute(template: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let is_word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 2..];
        let key = tail.find('}').map(|end| &tail[..end]);
        match key.filter(|k| k.split_once(':').is_some_and(|(a, b)| is_word(a) && is_word(b))) {
            Some(key) => {
                out.push_str(vars.get(key).ok_or(format!("${{{key}}} names no connected client"))?);
                rest = &tail[key.len() + 1..];
            }
            None => {
                out.push('$');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn from_hex(hex: &str) -> Result<Vec<u8>, String> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return Err(format!("bad hex {hex:?}"));
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| format!("bad hex {hex:?}: {e}"));
    (0..hex.len()).step_by(2).map(byte).collect()
}

/// About 90 bytes of `bytes` around offset `at`, printable (other bytes as `\xNN`).
fn excerpt(bytes: &[u8], at: usize) -> String {
    let start = at.saturating_sub(30).min(bytes.len());
    let end = (start + 90).min(bytes.len());
    let mut s = String::from(if start > 0 { "..." } else { "" });
    for &b in &bytes[start..end] {
        match b {
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if end < bytes.len() {
        s.push_str("...");
    }
    s
}

/// Replays every transcript, a few at a time; returns (name, time, result) in input order.
fn replay_all(transcripts: &[Value]) -> Vec<(String, Duration, Result<(), String>)> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| {
                let mut index = next.fetch_add(1, Ordering::SeqCst);
                while let Some(tr) = transcripts.get(index) {
                    let started = Instant::now();
                    let result = replay(tr);
                    let done = (index, name_of(tr), started.elapsed(), result);
                    results.lock().unwrap_or_else(|e| e.into_inner()).push(done);
                    index = next.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|r| r.0);
    results.into_iter().map(|(_, name, took, result)| (name, took, result)).collect()
}

#[test]
fn upstream_transcripts_all_pass() {
    let transcripts = load_transcripts();
    let results = replay_all(&transcripts);
    let mut failed = Vec::new();
    for (name, took, result) in &results {
        match result {
            Ok(()) => println!("PASS {name} ({:.1}s)", took.as_secs_f64()),
            Err(e) => {
                println!("FAIL {name}: {e}");
                failed.push(name.as_str());
            }
        }
    }
    println!("{} passed, {} failed", results.len() - failed.len(), failed.len());
    assert!(failed.is_empty(), "conformance failed: {failed:?}");
    assert_eq!(
        results.len(),
        EXPECTED_TRANSCRIPTS,
        "expected {EXPECTED_TRANSCRIPTS} transcripts in {}",
        transcript_dir().display()
    );
}

/// The replayer must notice a difference: one byte of one expected message changed.
#[test]
fn replayer_reports_a_mismatch() {
    let mut tr = load_transcripts().into_iter().find(|t| name_of(t) == "login_ok").expect("login_ok transcript");
    let steps = tr["steps"].as_array_mut().expect("steps");
    let recv = steps.iter_mut().find(|s| s["do"] == "recv").expect("a recv step");
    let mut data = recv["data"].as_str().expect("recv data").to_string(); // "0000", the login reply
    let last = data.pop().expect("non-empty recv data");
    data.push(if last == '0' { '1' } else { '0' });
    recv["data"] = Value::String(data.clone());
    let err = replay(&tr).expect_err("an altered transcript must fail");
    println!("altered transcript fails as it should: {err}");
    assert!(err.contains(&format!("mismatch at byte {}", data.len() - 1)), "unexpected failure: {err}");
}
