//! The hub with a busy but answering Docker engine. Docker 20.10 walks the host's whole
//! connection-tracking table for every container that ends (it purges the entries of the
//! container's address when it leaves its network), one container at a time: with the table
//! nearly full, each end costs the engine about a second. A SIGTERM must still remove every
//! session, taking the busy engine for what it is, not for one that is gone.
//!
//! The table is filled with UDP datagrams from this test to itself at 200,000 loopback addresses
//! (each destination one entry, kept 30 s after its last datagram), so nothing else receives
//! them and the table empties by itself after the test.

mod common;

use common::{docker_ok, eventually, T};
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NETFILTER: &str = "/proc/sys/net/netfilter";

fn read_netfilter(name: &str) -> u64 {
    let path = format!("{NETFILTER}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read {path} ({e}): this test needs the kernel's connection tracking, which Docker loads")
    });
    text.trim().parse().unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Keeps the connection-tracking table nearly full until dropped, then waits for it to drain.
struct FullTable {
    stop: Arc<AtomicBool>,
    filler: Option<std::thread::JoinHandle<()>>,
    before: u64,
}

impl FullTable {
    /// 200,000 entries (a walk of about a second on this machine), or 80 % of a smaller table.
    fn fill() -> FullTable {
        let (before, max) = (read_netfilter("nf_conntrack_count"), read_netfilter("nf_conntrack_max"));
        let entries = (max / 10 * 8).min(200_000).saturating_sub(before);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // The datagrams' only receiver; it never reads them (the kernel drops what overflows).
        let sink = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("a UDP socket");
        let port = sink.local_addr().expect("its port").port();
        let filler = std::thread::spawn(move || {
            let _sink = sink;
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a UDP socket");
            while !flag.load(Ordering::Relaxed) {
                // 127.10.1.1, 127.10.1.2, ...: every address of 127/8 is this host's own.
                for i in 0..entries {
                    let (a, b, c) = (10 + i / 62_500, 1 + (i / 250) % 250, 1 + i % 250);
                    let _ = socket.send_to(b"x", (Ipv4Addr::new(127, a as u8, b as u8, c as u8), port));
                }
                // Sent again well within the entries' 30 s.
                for _ in 0..50 {
                    if flag.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        let table = FullTable { stop, filler: Some(filler), before };
        let want = before + entries / 10 * 9;
        let t = Instant::now();
        while read_netfilter("nf_conntrack_count") < want {
            assert!(t.elapsed() < T, "the table did not fill: {} of {max}", read_netfilter("nf_conntrack_count"));
            std::thread::sleep(Duration::from_millis(100));
        }
        table
    }
}

impl Drop for FullTable {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(filler) = self.filler.take() {
            let _ = filler.join();
        }
        // The next tests find the table as this one did (the entries go 30 s after the last datagram).
        let t = Instant::now();
        while read_netfilter("nf_conntrack_count") > self.before + 10_000 && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_with_the_engine_busy_removes_every_session() {
    common::session_image();
    // 30 sessions whose ends cost the engine about a second each: told all at once, the last
    // server's removal would wait about 30 s behind the others, longer than the hub allows a
    // removal (engine_timeout x 6 = 18 s) before it takes the engine for gone.
    let n = 30;
    let mut hub = common::hub_for_many(n, "3s").start().await;
    let owners = common::start_many(&hub, "s", n, T).await;
    hub.wait_containers(n).await;

    let table = FullTable::fill();
    // The table must cost the engine what this test is about: one removal of a container on the
    // sessions' network, timed (an engine that does not walk the table would prove nothing).
    let probe = docker_ok(&[
        "run",
        "-d",
        "--label",
        "io.troop-hub.managed=true",
        "--label",
        &format!("io.troop-hub.hub={}", hub.id),
        "--network",
        &format!("{}-net", hub.id),
        "troop-hub/troop-server:latest",
    ]);
    let t = Instant::now();
    docker_ok(&["rm", "-f", probe.trim()]);
    let walk = t.elapsed();
    assert!(
        walk >= Duration::from_millis(300),
        "one removal took {walk:?} with the table full: this engine does not walk it, and the test proves nothing here"
    );
    let t = Instant::now();
    hub.signal("TERM");
    let code = hub.wait_exit(Duration::from_secs(300)).await;
    let took = t.elapsed();
    drop(owners);
    let log = hub.log();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        !log.contains("left running for the next hub"),
        "a busy engine taken for a gone one after {took:?}:\n{log}"
    );
    assert!(!log.contains("could not remove"), "{log}");
    eventually("no container left", T, async || match hub.containers().len() {
        0 => Ok(()),
        left => Err(format!("{left} left")),
    })
    .await;
    eprintln!("SIGTERM of {n} sessions with the connection-tracking table full (one removal {walk:?}): the hub exited after {took:?}");
    drop(table);
}
