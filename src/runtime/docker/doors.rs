//! The hub as its sessions' front door (`front_door: on`, issue 27). The hub listens on each
//! session's host port itself and relays every connection to the server's own address on its
//! network, a PROXY protocol v2 header first, so the server (`--proxy-protocol`) sees the
//! performer's address. The container publishes nothing: the engine adds no iptables rules
//! and no docker-proxy per session, which is what made its starts grow with their number.
//! [`Doors`] owns the listeners, by container id; closing one stops its listener and relays.

use super::super::RuntimeError;
use ppp::v2::{Builder, Command, Protocol, Version};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long reaching a session server may take before a performer's connection is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Each direction's relay buffer: Troop's messages are small, and 1,000 sessions with a few
/// performers each keep thousands of relays.
const BUFFER: usize = 4096;

/// A session port the hub holds, before its server is ready.
pub struct Reserved {
    listener: TcpListener,
}

/// The open front doors, by container id.
#[derive(Default)]
pub struct Doors {
    open: Mutex<HashMap<String, CancellationToken>>,
}

impl Doors {
    /// Takes `bind:port` for a session; another holder is [`RuntimeError::PortTaken`].
    pub async fn reserve(bind: IpAddr, port: u16) -> Result<Reserved, RuntimeError> {
        match TcpListener::bind(SocketAddr::new(bind, port)).await {
            Ok(listener) => Ok(Reserved { listener }),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(RuntimeError::PortTaken(port)),
            Err(e) => Err(RuntimeError::Failed(format!("the hub cannot listen on {bind}:{port}: {e}"))),
        }
    }

    /// Opens the door: connections to the reserved port go to `server` from now on.
    pub fn serve(&self, container: &str, reserved: Reserved, server: SocketAddr) {
        let stop = CancellationToken::new();
        if let Some(old) = self.lock().insert(container.to_string(), stop.clone()) {
            old.cancel();
        }
        tokio::spawn(listen(reserved.listener, server, stop, short(container)));
    }

    /// Closes a container's door and its relays (nothing if it has none).
    pub fn close(&self, container: &str) {
        if let Some(stop) = self.lock().remove(container) {
            stop.cancel();
        }
    }

    /// Closes every door (shutdown, after the sessions are gone).
    pub fn close_all(&self) {
        for (_, stop) in self.lock().drain() {
            stop.cancel();
        }
    }

    /// Doors open now.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn short(container: &str) -> String {
    container.chars().take(12).collect()
}

/// Accepts until `stop`; each connection is relayed in a task of its own.
async fn listen(listener: TcpListener, server: SocketAddr, stop: CancellationToken, container: String) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((inbound, peer)) => {
                let (stop, container) = (stop.clone(), container.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        relayed = relay(inbound, peer, server) => if let Err(e) = relayed {
                            debug!(container = %container, peer = %peer, error = %e, "front door relay ended");
                        }
                    }
                });
            }
            Err(e) => {
                // Out of files, most likely: wait rather than spin.
                warn!(container = %container, error = %e, "front door accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One performer's connection: the server is reached, told who it is, then bytes both ways.
async fn relay(mut inbound: TcpStream, peer: SocketAddr, server: SocketAddr) -> std::io::Result<()> {
    let local = inbound.local_addr()?;
    let mut out = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(server))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the session server did not answer"))??;
    inbound.set_nodelay(true)?;
    out.set_nodelay(true)?;
    out.write_all(&header(peer, local)?).await?;
    tokio::io::copy_bidirectional_with_sizes(&mut inbound, &mut out, BUFFER, BUFFER).await?;
    Ok(())
}

/// The PROXY v2 header saying `peer` connected to `local`, both in one address family.
pub fn header(peer: SocketAddr, local: SocketAddr) -> std::io::Result<Vec<u8>> {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let v6 = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port())),
        v6 => v6,
    };
    let (peer, local) = match (canonical(peer), canonical(local)) {
        (p @ SocketAddr::V4(_), l @ SocketAddr::V4(_)) => (p, l),
        (p, l) => (v6(p), v6(l)),
    };
    Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (peer, local)).build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn the_header_names_the_performer_in_one_family() {
        for (peer, local, want) in [
            ("203.0.113.7:5000", "10.0.0.1:30001", "203.0.113.7:5000"),
            ("[::ffff:203.0.113.7]:5000", "[::ffff:10.0.0.1]:30001", "203.0.113.7:5000"),
            ("[2001:db8::7]:5000", "10.0.0.1:30001", "[2001:db8::7]:5000"),
            ("203.0.113.7:5000", "[2001:db8::1]:30001", "[::ffff:203.0.113.7]:5000"),
        ] {
            let bytes = header(peer.parse().unwrap(), local.parse().unwrap()).unwrap();
            let parsed = troop_server::server::proxy::source(&bytes, "127.0.0.1:1".parse().unwrap()).unwrap();
            assert_eq!(parsed.to_string(), want, "{peer} -> {local}");
        }
    }

    #[tokio::test]
    async fn a_door_relays_with_the_header_first_and_closing_it_frees_the_port_and_cuts_relays() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let doors = Doors::default();
        let reserved = Doors::reserve("127.0.0.1".parse().unwrap(), 0).await.unwrap();
        let port = reserved.listener.local_addr().unwrap().port();
        assert!(matches!(
            Doors::reserve("127.0.0.1".parse().unwrap(), port).await,
            Err(RuntimeError::PortTaken(p)) if p == port
        ));
        doors.serve("c1", reserved, server_addr);
        let mut performer = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        performer.write_all(b"hello").await.unwrap();
        let (mut inside, _) = server.accept().await.unwrap();
        let mut got = vec![0u8; 5];
        let mut head = [0u8; 16];
        inside.read_exact(&mut head).await.unwrap();
        let mut rest = vec![0u8; usize::from(u16::from_be_bytes([head[14], head[15]]))];
        inside.read_exact(&mut rest).await.unwrap();
        let whole = [&head[..], &rest].concat();
        let seen = troop_server::server::proxy::source(&whole, server_addr).unwrap();
        assert_eq!(seen, performer.local_addr().unwrap());
        inside.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        inside.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        performer.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");

        doors.close("c1");
        assert_eq!(doors.count(), 0);
        let mut buf = [0u8; 8];
        let cut = tokio::time::timeout(Duration::from_secs(5), performer.read(&mut buf)).await;
        assert!(matches!(cut, Ok(Ok(0)) | Ok(Err(_))), "the relay outlived its door: {cut:?}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while Doors::reserve("127.0.0.1".parse().unwrap(), port).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "the port stayed taken after its door closed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
