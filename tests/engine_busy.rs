//! The hub with a busy but answering Docker engine. Docker 20.10 walks the host's whole
//! connection-tracking table for every container that ends (it purges the entries of the
//! container's address when it leaves its network), one container at a time: with the table
//! nearly full, each end costs the engine about a second. A SIGTERM must still remove every
//! session, taking the busy engine for what it is, not for one that is gone.
//!
//! The table is filled with UDP datagrams to closed loopback ports (each destination one entry,
//! kept 30 s after its last datagram), so it empties by itself after the test.

mod common;

use common::{eventually, T};
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
    fn fill() -> FullTable {
        let (before, max) = (read_netfilter("nf_conntrack_count"), read_netfilter("nf_conntrack_max"));
        let entries = (max / 10 * 8).saturating_sub(before);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let filler = std::thread::spawn(move || {
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a UDP socket");
            while !flag.load(Ordering::Relaxed) {
                // 60,000 ports on each of 127.0.9.1, .2, ...: one entry per destination.
                for i in 0..entries {
                    let host = Ipv4Addr::new(127, 0, 9, 1 + (i / 60_000) as u8);
                    let _ = socket.send_to(b"x", (host, 2_000 + (i % 60_000) as u16));
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
    eprintln!("SIGTERM of {n} sessions with the connection-tracking table full: the hub exited after {took:?}");
    drop(table);
}
