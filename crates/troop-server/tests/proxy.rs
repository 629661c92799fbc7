//! `--proxy-protocol` over real sockets: behind a relay that puts a PROXY v2 header first, the
//! server sees each performer's own address (its snapshot, its per-address cap); connections
//! without the header still work; a broken header closes only its own connection; a server
//! without the flag treats a header as the bad input it is.

use ppp::v2::{Builder, Command, Protocol, Version};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use troop_server::client::{login, TroopClient};
use troop_server::control::{ControlClient, ControlSecret};
use troop_server::server::{self, Config};

const PW: &str = "pw";
const SECRET: &str = "0123456789abcdef0123456789ABCDEF";
const T: Duration = Duration::from_secs(5);

async fn server(config: Config) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = Config {
        password_md5: troop_server::md5_hex(PW),
        control: Some(ControlSecret::new(SECRET).expect("secret")),
        ..config
    };
    tokio::spawn(server::run(listener, config, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// A relay in front of `to` that says each connection comes from `source`.
async fn relay(to: SocketAddr, source: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut out = TcpStream::connect(to).await.expect("server");
                // Both addresses of one family, as the header needs.
                let dst = match (source, to) {
                    (SocketAddr::V6(_), SocketAddr::V4(v4)) => SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port())),
                    _ => to,
                };
                let header = Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (source, dst))
                    .build()
                    .expect("header");
                out.write_all(&header).await.expect("header sent");
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
            });
        }
    });
    addr
}

/// The performers' addresses, asked over a control connection without a header (as the hub's
/// own control calls, probes and browser seats connect).
async fn addresses(server: SocketAddr) -> Vec<(String, String)> {
    let mut ctl = ControlClient::connect(server, SECRET, T).await.expect("control without a header");
    let snap = ctl.snapshot().await.expect("snapshot");
    snap.performers.into_iter().map(|p| (p.name, p.address)).collect()
}

#[tokio::test]
async fn behind_a_relay_each_performer_is_seen_at_their_own_address() {
    let (addr, _stop) =
        server(Config { proxy_protocol: true, max_connections_per_address: 1, ..Config::default() }).await;
    let alice = relay(addr, "203.0.113.7:5000".parse().unwrap()).await;
    let bob = relay(addr, "[2001:db8::9]:6000".parse().unwrap()).await;
    let mut a = TroopClient::join(alice, "alice", PW, T).await.expect("alice joins through the relay");
    let mut b = TroopClient::join(bob, "bob", PW, T).await.expect("bob joins through the relay");
    a.insert(0, "hi").await.expect("edit");
    b.recv_until_match(T, |c, _| c.document() == "hi").await.expect("relayed through both doors");
    let mut seen = addresses(addr).await;
    seen.sort();
    assert_eq!(
        seen,
        vec![("alice".to_string(), "203.0.113.7".to_string()), ("bob".to_string(), "2001:db8::9".to_string())]
    );
    // The cap of 1 per address counts alice's own address, not the relay's.
    match tokio::time::timeout(T, login(alice, "carol", PW)).await {
        Ok(Err(_)) => {}
        other => panic!("a second connection from alice's address was let in: {other:?}"),
    }
}

#[tokio::test]
async fn a_broken_header_closes_its_connection_only_and_a_server_without_the_flag_refuses_headers() {
    let (addr, _stop) = server(Config { proxy_protocol: true, ..Config::default() }).await;
    let mut a = TroopClient::join(addr, "alice", PW, T).await.expect("alice");
    for bad in [&b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff"[..], b"\r\n\r\nnot a header at all....", b"\r"] {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(bad).await.expect("write");
        if bad.len() == 1 {
            s.shutdown().await.expect("half-close");
        }
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(T, tokio::io::AsyncReadExt::read(&mut s, &mut buf)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{bad:?} was not closed: {n:?}");
    }
    a.insert(0, "still here").await.expect("alice plays on");
    assert_eq!(addresses(addr).await, vec![("alice".to_string(), "127.0.0.1".to_string())]);

    let (plain, _stop2) = server(Config::default()).await;
    let door = relay(plain, "203.0.113.7:5000".parse().unwrap()).await;
    assert!(TroopClient::join(door, "mallory", PW, T).await.is_err(), "a header was trusted without --proxy-protocol");
    assert!(addresses(plain).await.is_empty());
}
