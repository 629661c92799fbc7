//! What the hub benches measure with, shared by `hub`, `scale` and `swarm_scale`: percentiles
//! of durations, the engine's own start floor, query clients (reniced or pinned to CPUs) and
//! the trivial query floor, the time inside the hub from its query histogram, host memory and
//! CPU by process, and the cleanup of floor containers.

#[allow(unused_imports)] // used by `hub` and `scale`, not by every bench
pub use super::load::proc_kib;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
}

pub fn summary(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    (pct(&v, 0.5), pct(&v, 0.9), pct(&v, 0.99))
}

/// What a floor container carries besides the image and its port: the hub's settings, added
/// one at a time by the anatomy section to see what each costs.
#[derive(Clone, Copy, Default)]
pub struct Extras {
    /// The hub's own sessions' network (ICC off) instead of the default bridge.
    pub network: bool,
    /// Memory, swap, CPU and pids limits.
    pub limits: bool,
    /// No capabilities, no-new-privileges, read-only root, an unprivileged user.
    pub hardening: bool,
    /// The json-file log driver with rotation.
    pub logs: bool,
    /// A control secret in the environment (the server starts locked), as the hub runs it.
    pub control: bool,
    /// No published port (the hub's front door: `front_door: on`).
    pub unpublished: bool,
}

/// The engine floor: create + start one container with a published port (none when
/// `unpublished`, as behind the hub's front door) until its server accepts.
pub async fn floor_once(docker: &bollard::Docker, port: u16, run: &str, unpublished: bool) -> Duration {
    engine_start(docker, port, run, Extras { unpublished, ..Extras::default() }).await
}

/// Create + start one container with a published port and `extras`, until its server accepts;
/// then removes it.
pub async fn engine_start(docker: &bollard::Docker, port: u16, run: &str, extras: Extras) -> Duration {
    let t = Instant::now();
    let binding = PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(port.to_string()) };
    let mut host_config = HostConfig {
        port_bindings: (!extras.unpublished).then(|| HashMap::from([("57890/tcp".into(), Some(vec![binding]))])),
        ..Default::default()
    };
    if extras.network {
        host_config.network_mode = Some(format!("{run}-net"));
    }
    if extras.limits {
        host_config.memory = Some(64 << 20);
        host_config.memory_swap = Some(64 << 20);
        host_config.nano_cpus = Some(500_000_000);
        host_config.pids_limit = Some(64);
    }
    if extras.hardening {
        host_config.cap_drop = Some(vec!["ALL".into()]);
        host_config.security_opt = Some(vec!["no-new-privileges=true".into()]);
        host_config.readonly_rootfs = Some(true);
    }
    if extras.logs {
        host_config.log_config = Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([("max-size".into(), "1m".into()), ("max-file".into(), "2".into())])),
        });
    }
    let body = ContainerCreateBody {
        image: Some("troop-hub/troop-server:latest".into()),
        cmd: Some(vec!["--port".into(), "57890".into()]),
        env: extras.control.then(|| vec!["TROOP_CONTROL_SECRET=0123456789abcdef0123456789abcdef".into()]),
        user: extras.hardening.then(|| "65534:65534".into()),
        // Not the hub's id: the hub would take the container for one of its own left from
        // before and remove it under the probe.
        labels: Some(HashMap::from([
            ("io.troop-hub.managed".into(), "true".into()),
            ("io.troop-hub.hub".into(), format!("{run}-floor")),
        ])),
        exposed_ports: Some(vec!["57890/tcp".into()]),
        host_config: Some(host_config),
        ..Default::default()
    };
    let id = docker.create_container(None::<CreateContainerOptions>, body).await.expect("create").id;
    docker.start_container(&id, None).await.expect("start");
    let info = docker.inspect_container(&id, None).await.expect("inspect");
    let ip = info
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|nets| nets.values().find_map(|e| e.ip_address.clone()))
        .filter(|ip| !ip.is_empty())
        .expect("container address");
    let probe: SocketAddr = format!("{ip}:57890").parse().expect("address");
    let mut accepted = true;
    while TcpStream::connect(probe).await.is_err() {
        if t.elapsed() > Duration::from_secs(30) {
            accepted = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let elapsed = t.elapsed();
    // Removed before any verdict: the floor's containers are not the test hub's to clean up.
    docker
        .remove_container(&id, Some(RemoveContainerOptions { force: true, ..Default::default() }))
        .await
        .expect("remove");
    assert!(accepted, "floor container {id} did not accept within 30 s");
    elapsed
}

/// One second of queries from one client, not counted: the first level of two runs met the
/// hub's own start-up work (its first reconcile with the engine, the archive's first prune)
/// and had a 44-49 ms outlier.
pub async fn query_warm_up(hub: SocketAddr) {
    let _ = queries(hub, &[std::net::IpAddr::from([127, 0, 9, 1])], 1, Duration::from_secs(1), None).await;
}

/// The query every bench client sends, and the answer both the hub and the floor give (no
/// session is called "bench").
pub fn query_frames() -> (Vec<u8>, Vec<u8>) {
    let ask = troop_hub::wire::encode(&json!({"type": "query", "name": "bench"})).expect("frame");
    let answer = troop_hub::wire::encode(&json!({"result": null})).expect("frame");
    (ask, answer)
}

/// One query from `source` (a loopback address), as Troop sends it: connect, send the frame,
/// read the answer; true if the answer came whole within 5 s (an error frame, such as "too
/// many connections", is a failure).
pub async fn query_from(source: std::net::IpAddr, addr: SocketAddr, ask: &[u8], answer: &[u8]) -> bool {
    let go = async {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|_| Failure::Socket)?;
        // The port is picked at connect (for the whole 4-tuple), not at bind: bind's own search
        // for a free port slows down as thousands are taken.
        let one: libc::c_int = 1;
        // SAFETY: a valid socket and an int option of the right size.
        let set = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if set != 0 {
            return Err(Failure::Socket);
        }
        socket.bind(SocketAddr::new(source, 0)).map_err(|_| Failure::Socket)?;
        let mut s = socket.connect(addr).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Failure::Refused,
            std::io::ErrorKind::AddrNotAvailable => Failure::NoPort,
            _ => Failure::Connect,
        })?;
        s.write_all(ask).await.map_err(|_| Failure::Io)?;
        let mut got = Vec::with_capacity(answer.len());
        let mut buf = [0u8; 64];
        while got.len() < answer.len() {
            let n = s.read(&mut buf).await.map_err(|_| Failure::Io)?;
            if n == 0 {
                return Err(Failure::Io);
            }
            got.extend_from_slice(&buf[..n]);
        }
        if got == answer {
            Ok(())
        } else {
            Err(Failure::Wrong)
        }
    };
    let failure = match tokio::time::timeout(Duration::from_secs(5), go).await {
        Ok(Ok(())) => return true,
        Ok(Err(f)) => f,
        Err(_) => Failure::Timeout,
    };
    FAILURES[failure as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    false
}

/// Why a query failed, counted over the run (see [`failures`]).
#[derive(Clone, Copy)]
enum Failure {
    Socket,
    Refused,
    NoPort,
    Connect,
    Io,
    Wrong,
    Timeout,
}

static FAILURES: [std::sync::atomic::AtomicUsize; 7] = [const { std::sync::atomic::AtomicUsize::new(0) }; 7];

/// Failed queries so far by why (and resets the counts): "refused 3, timeout 1".
pub fn failures() -> String {
    let names = ["socket", "refused", "no local port", "connect", "reset or closed", "wrong answer", "timeout"];
    let parts: Vec<String> = names
        .iter()
        .zip(&FAILURES)
        .filter_map(|(name, n)| {
            let n = n.swap(0, std::sync::atomic::Ordering::Relaxed);
            (n > 0).then(|| format!("{name} {n}"))
        })
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// Queries from `clients` concurrent clients for `run`, one query per connection, client `i`
/// from `sources[i % len]`: loopback addresses of the level's own. (A fresh address finds
/// every ephemeral port free: one address reused for every level ran out of its 28,000 ports
/// within 2 s, and from then on each connect reused a port still in TIME_WAIT, which made the
/// tails the load generator's. Give each address at most ~20,000 connections.)
///
/// With `rate` unset, a closed loop: each client sends its next query when the last is
/// answered (throughput). With `rate`, paced: the clients together offer `rate` queries a
/// second (tails); a client that falls behind sends at once, and its latency counts from when
/// the query was due (no coordinated omission), otherwise from the timer's wake-up (tokio's
/// timer wakes up to 1 ms late, which is the generator's, not the server's). Returns every
/// answered query's latency and the number of failed ones (refused, reset, wrong or over 5 s).
pub async fn queries(
    addr: SocketAddr,
    sources: &[std::net::IpAddr],
    clients: usize,
    run: Duration,
    rate: Option<f64>,
) -> (Vec<Duration>, usize) {
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let interval = rate.map_or(Duration::ZERO, |rate| Duration::from_secs_f64(clients as f64 / rate));
    // Encoded once: the generator's own work per query is the same for the hub and the floor,
    // and as little as it can be.
    let frames = std::sync::Arc::new(query_frames());
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let source = sources[i % sources.len()];
            let frames = frames.clone();
            tokio::spawn(async move {
                let (ask, answer) = (&frames.0, &frames.1);
                let (mut lat, mut failed) = (Vec::new(), 0usize);
                let mut due = start + interval.mul_f64(i as f64 / clients as f64);
                while due < start + run {
                    let t0 = if tokio::time::Instant::now() >= due {
                        due
                    } else {
                        tokio::time::sleep_until(due).await;
                        tokio::time::Instant::now()
                    };
                    if query_from(source, addr, ask, answer).await {
                        lat.push(t0.elapsed());
                    } else {
                        failed += 1;
                    }
                    due = if rate.is_some() { due + interval } else { tokio::time::Instant::now() };
                }
                (lat, failed)
            })
        })
        .collect();
    let (mut all, mut failed) = (Vec::new(), 0);
    for t in tasks {
        let (lat, f) = t.await.expect("task");
        all.extend(lat);
        failed += f;
    }
    (all, failed)
}

/// `nf_conntrack_count` (entries in the kernel's connection-tracking table) or
/// `nf_conntrack_max`; None without connection tracking.
pub fn conntrack(f: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/net/netfilter/{f}")).ok()?.trim().parse::<u64>().ok()
}

/// Waits (up to 150 s: the kernel forgets a closed connection after 120 s) until the kernel's
/// connection-tracking table has room for `connections` more with a tenth to spare: a full
/// table drops SYNs host-wide, and every figure after it would be the kernel's. A table too
/// small for the level is waited on until it is 80 % free (the level may then fill it: the
/// failed column shows it). Without connection tracking (no `nf_conntrack` module) there is
/// nothing to wait for.
pub async fn conntrack_room(connections: u64) {
    let Some(max) = conntrack("nf_conntrack_max") else { return };
    let connections = connections.min(max / 10 * 8);
    let t = Instant::now();
    let mut said = false;
    while let Some(count) = conntrack("nf_conntrack_count") {
        if count + connections <= max - max / 10 {
            return;
        }
        if !said {
            println!(
                "(waiting for the connection-tracking table to drain: {count} of {max} entries, {connections} to come)"
            );
            said = true;
        }
        assert!(t.elapsed() < Duration::from_secs(150), "the connection-tracking table stays full: {count} of {max}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The query floor, in a process of its own like the hub (in the bench's own runtime it was
/// spared the switches between processes that the hub pays on two busy cores): this bench
/// binary run again with `BENCH_QUERY_FLOOR` set, see [`serve_query_floor`]. Killed when
/// dropped; it also ends by itself when the bench dies (its stdin closes).
pub struct QueryFloor {
    pub addr: SocketAddr,
    child: std::process::Child,
}

impl QueryFloor {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for QueryFloor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn query_floor() -> QueryFloor {
    use std::io::BufRead;
    let exe = std::env::current_exe().expect("the bench binary's path");
    let mut child = std::process::Command::new(exe)
        .env("BENCH_QUERY_FLOOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the query floor's process");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("the query floor's stdout");
    std::io::BufReader::new(stdout).read_line(&mut line).expect("the query floor's address");
    let addr = line.trim().parse().expect("the query floor's address");
    QueryFloor { addr, child }
}

/// The query floor's process: a runtime like the hub's (multi-threaded, a worker per core) and
/// the hub's accept queue (troop_hub::accept::listen); it accepts, reads a frame, answers a
/// fixed frame and lets the client close first, as the hub does, until its stdin closes.
pub fn serve_query_floor() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let l = troop_hub::accept::listen("127.0.0.1:0".parse().expect("address")).expect("bind");
        println!("{}", l.local_addr().expect("addr"));
        tokio::spawn(async move {
            let (_, reply) = query_frames();
            while let Ok((mut s, _)) = l.accept().await {
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 256];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(&reply).await;
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        let _ = tokio::task::spawn_blocking(|| {
            let mut byte = [0u8; 1];
            while matches!(std::io::Read::read(&mut std::io::stdin(), &mut byte), Ok(n) if n > 0) {}
        })
        .await;
    });
}

/// The processes an idle session adds on the host, by name (`/proc/PID/comm`, at most 15
/// characters: the shim is `containerd-shim`).
pub const SESSION_PROCESSES: [&str; 7] =
    ["containerd-shim", "troop-server", "docker-proxy", "fuse-overlayfs", "dockerd", "containerd", "troop-hub"];

/// Proportional set size (KiB) of every process on the host, summed by process name, and how
/// many processes could not be read (not root: the engine's are then missing from the sums).
pub fn pss_by_process() -> (HashMap<String, u64>, usize) {
    let (mut sums, mut unreadable) = (HashMap::new(), 0);
    let Ok(dir) = std::fs::read_dir("/proc") else { return (sums, 0) };
    for entry in dir.flatten() {
        let path = entry.path();
        if !entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default().trim().to_string();
        match std::fs::read_to_string(path.join("smaps_rollup")) {
            Ok(text) => {
                let pss = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Pss:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .unwrap_or(0);
                *sums.entry(name).or_insert(0) += pss;
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => unreadable += 1,
            // Gone meanwhile.
            Err(_) => {}
        }
    }
    (sums, unreadable)
}

/// Removes the floor's containers when the bench ends, also when it fails: their label
/// (`{run}-floor`) is not the test hub's, so the hub's own cleanup does not match them.
pub struct FloorCleanup(pub String);

impl Drop for FloorCleanup {
    fn drop(&mut self) {
        let filter = format!("label=io.troop-hub.hub={}-floor", self.0);
        let Ok(out) = std::process::Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output() else {
            return;
        };
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = std::process::Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

/// The `elapsed_us` of every log line holding `what`.
pub fn hub_timings(log: &str, what: &str) -> Vec<Duration> {
    log_micros(log, what, "elapsed_us")
}

/// The microseconds in field `field` of every log line holding `what`.
pub fn log_micros(log: &str, what: &str, field: &str) -> Vec<Duration> {
    let key = format!("{field}=");
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| l.split(key.as_str()).nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .map(Duration::from_micros)
        .collect()
}

/// A runtime for query clients whose threads run at `nice` (set as each thread starts), on
/// the CPUs `cpus` (empty: any). At -10 the clients stand in for performers on other machines:
/// their own waits for these two busy cores are then mostly not counted, and what is left is
/// the server's. On a core of their own they do not take the server's either.
pub fn generator(nice: i32, cpus: &'static [usize]) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("generator")
        .enable_all()
        .on_thread_start(move || {
            // SAFETY: setpriority on the calling thread (who = 0); an error leaves it as it was.
            unsafe { libc::setpriority(libc::PRIO_PROCESS as _, 0, nice) };
            pin(0, cpus);
        })
        .build()
        .expect("the generator's runtime")
}

/// Puts thread `tid` (0: the calling one) on the CPUs `cpus` (empty: every CPU the kernel
/// allows it); whether it took.
fn pin(tid: libc::pid_t, cpus: &[usize]) -> bool {
    if cpus.iter().any(|&c| c >= libc::CPU_SETSIZE as usize) {
        return false;
    }
    // SAFETY: a zeroed cpu_set_t is the empty set (a plain bit array).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // Every CPU: all bits (the kernel keeps those of the thread's allowed CPUs, as `taskset`).
    let chosen: Vec<usize> = if cpus.is_empty() { (0..libc::CPU_SETSIZE as usize).collect() } else { cpus.to_vec() };
    for c in chosen {
        // SAFETY: c < CPU_SETSIZE (checked above), so the bit is inside the set.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: the set is a valid cpu_set_t of the size given; only that thread's placement changes.
    unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 }
}

/// Puts every thread of process `pid` on the CPUs `cpus` (empty: every CPU); returns how many
/// threads took it. Threads the process starts later inherit it from the one starting them.
pub fn pin_threads(pid: u32, cpus: &[usize]) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| t.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|&tid| pin(tid, cpus))
        .count()
}

/// The time inside the hub of the queries answered between two `/metrics` pages, from its
/// `troop_hub_query_seconds` histogram (connection accepted to reply written, which holds the
/// wait for the client's request but not the wait in the accept queue): the share answered
/// within 5 ms, and the bucket bound (ms) under which 99 % were answered.
pub fn hub_own_query_times(before: &str, after: &str) -> (f64, f64) {
    let buckets = |page: &str| -> Vec<(f64, f64)> {
        page.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("troop_hub_query_seconds_bucket{le=\"")?;
                let (bound, count) = rest.split_once("\"} ")?;
                let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().ok()? };
                Some((bound, count.trim().parse().ok()?))
            })
            .collect()
    };
    let (b, a) = (buckets(before), buckets(after));
    let grown: Vec<(f64, f64)> = a.iter().zip(&b).map(|(&(bound, n), &(_, m))| (bound, n - m)).collect();
    let total = grown.last().map_or(0.0, |&(_, n)| n);
    if total == 0.0 {
        return (f64::NAN, f64::NAN);
    }
    let within_5ms = grown.iter().find(|&&(bound, _)| bound >= 0.005).map_or(0.0, |&(_, n)| n / total);
    let p99 = grown.iter().find(|&&(_, n)| n >= total * 0.99).map_or(f64::INFINITY, |&(bound, _)| bound * 1000.0);
    (within_5ms, p99)
}

/// Sets the nice value of every thread of process `pid` (Linux's is per thread); returns how
/// many threads took it.
pub fn renice_threads(pid: u32, nice: i32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| t.file_name().to_str()?.parse::<libc::id_t>().ok())
        // SAFETY: setpriority on one thread id; an error leaves it as it was.
        .filter(|&tid| unsafe { libc::setpriority(libc::PRIO_PROCESS as _, tid, nice) } == 0)
        .count()
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50, p99 and max of `v`, in ms.
pub fn tails(mut v: Vec<Duration>) -> [f64; 3] {
    v.sort();
    [pct(&v, 0.5), pct(&v, 0.99), v.last().map_or(f64::NAN, |d| ms(*d))]
}

pub fn pids_named(name: &str) -> Vec<u32> {
    let out = std::process::Command::new("pgrep").args(["-x", name]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// Share of one core each of `pids` used over `window`, summed.
pub async fn cpu_share(pids: &[u32], window: Duration) -> f64 {
    let used = || -> f64 { pids.iter().map(|p| super::load::ticks(&format!("/proc/{p}/stat"))).sum() };
    let before = used();
    tokio::time::sleep(window).await;
    (used() - before).max(0.0) / 100.0 / window.as_secs_f64()
}

pub fn timed_cli(args: &[&str]) -> Duration {
    let t = Instant::now();
    let _ = std::process::Command::new("docker").args(args).output();
    t.elapsed()
}

/// One start, request to reply; the session is ended at once (its owner kills it).
pub async fn next_start(hub: &super::TestHub, name: &str) -> Result<Duration, String> {
    let t = Instant::now();
    let o = troop_hub::admin::start_session(hub.addr, name, "pw", Duration::from_secs(60))
        .await
        .map_err(|e| e.to_string())??;
    let took = t.elapsed();
    o.kill().await;
    Ok(took)
}

/// Loopback sources nobody used yet in this run (each level its own: no TIME_WAIT reuse).
pub fn sources(step: usize, kind: u8, n: u8) -> Vec<std::net::IpAddr> {
    (0..n).map(|k| std::net::IpAddr::from([127, 1 + step as u8, kind, 10 + k])).collect()
}

/// The sizes a scale bench grows through: `var` (numbers, comma-separated), else `default`.
pub fn steps_from_env(var: &str, default: &str) -> Vec<usize> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().parse().unwrap_or_else(|_| panic!("{var}: numbers, comma-separated")))
        .collect()
}

/// Starts sessions `d{i}`, `at_once` at a time, until `owners` holds `n`, their owners'
/// connections held open; panics, with the hub's log, on the first refusal.
pub async fn grow(hub: &super::TestHub, owners: &mut Vec<(String, troop_hub::admin::Owner)>, n: usize, at_once: usize) {
    while owners.len() < n {
        let batch: Vec<String> = (owners.len()..n.min(owners.len() + at_once)).map(|i| format!("d{i}")).collect();
        let started = futures_util::future::join_all(batch.iter().map(|name| async move {
            (name.clone(), troop_hub::admin::start_session(hub.addr, name, "pw", Duration::from_secs(180)).await)
        }))
        .await;
        for (name, r) in started {
            match r {
                Ok(Ok(o)) => owners.push((name, o)),
                Ok(Err(e)) => panic!("growing to {n}: {name} refused: {e}\n{}", hub.log()),
                Err(e) => panic!("growing to {n}: {name}: {e}"),
            }
        }
    }
}

/// SIGKILLs the hub and starts it again; returns how long until it had adopted all `n`
/// sessions (`d0`..: the last one answers a query and the metrics count `n` running).
pub async fn restart_and_adopt(hub: &mut super::TestHub, n: usize, within: Duration) -> Duration {
    hub.signal("KILL");
    hub.wait_exit(Duration::from_secs(30)).await;
    let t = Instant::now();
    hub.spawn().await;
    hub.eventually("every session adopted", within, async || {
        let ask = json!({"type": "query", "name": format!("d{}", n - 1)});
        let last = troop_hub::admin::request(hub.addr, &ask, super::T).await.map_err(|e| e.to_string())?;
        let m = super::http(hub.http, "GET", "/metrics", None, None).await.body;
        let running = super::metric(&m, "troop_hub_sessions_running");
        if last["result"].is_array() && running as usize >= n {
            Ok(t.elapsed())
        } else {
            Err(format!("{running} of {n} running"))
        }
    })
    .await
}
