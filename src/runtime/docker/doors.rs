//! The hub as its sessions' front door (`front_door: on`, issue 27). The hub listens on each
//! session's host port itself and relays every connection to the server's own address on its
//! network, a PROXY protocol v2 header first, so the server (`--proxy-protocol`) sees the
//! performer's address. The container publishes nothing: the engine adds no iptables rules
//! and no docker-proxy per session, which is what made its starts grow with their number.
//! [`Doors`] owns the listeners, by container id. A relay ends when the server closes its
//! side (so a performer who never closes holds nothing); relays are bounded per door and in
//! all, so connections cannot take the hub's open files.

use super::super::RuntimeError;
use ppp::v2::{Builder, Command, Protocol, Version};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long reaching a session server may take before a performer's connection is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Each direction's relay buffer: Troop's messages are small, and 1,000 sessions with a few
/// performers each keep thousands of relays.
const BUFFER: usize = 4096;
/// Relayed connections through one door at once (troop-server's own `--max-connections`).
pub const PER_DOOR: usize = 256;
/// Relayed connections through all doors at once: 2 open files each.
pub const IN_ALL: usize = 16_384;
/// After a performer closes its side, how long the server has to finish and close its own.
const LINGER: Duration = Duration::from_secs(5);

/// A session port the hub holds, before its server is ready.
pub struct Reserved {
    listener: TcpListener,
}

/// The open front doors, by container id.
pub struct Doors {
    open: Mutex<HashMap<String, Door>>,
    /// Relays through all doors ([`IN_ALL`]).
    relays: Arc<Semaphore>,
}

/// One door: its listener's stop and its relays' stop, apart, so a session's last words (its
/// server's MSG_KILL as it stops) still reach its performers after nobody new may come in.
struct Door {
    listener: CancellationToken,
    relays: CancellationToken,
}

impl Door {
    /// Stops the listener and every relay.
    fn shut(&self) {
        self.listener.cancel();
        self.relays.cancel();
    }
}

impl Default for Doors {
    fn default() -> Self {
        Doors { open: Mutex::default(), relays: Arc::new(Semaphore::new(IN_ALL)) }
    }
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
        let door = Door { listener: CancellationToken::new(), relays: CancellationToken::new() };
        let relays =
            Relays { stop: door.relays.clone(), here: Arc::new(Semaphore::new(PER_DOOR)), all: self.relays.clone() };
        let stop = door.listener.clone();
        if let Some(old) = self.lock().insert(container.to_string(), door) {
            old.shut();
        }
        tokio::spawn(listen(reserved.listener, server, stop, relays, short(container)));
    }

    /// Stops letting anyone in through a container's door; its relays go on until its server
    /// closes them or [`Doors::cut`].
    pub fn close(&self, container: &str) {
        if let Some(door) = self.lock().get(container) {
            door.listener.cancel();
        }
    }

    /// Forgets a container's door and cuts what is left of its relays.
    pub fn cut(&self, container: &str) {
        if let Some(door) = self.lock().remove(container) {
            door.shut();
        }
    }

    /// Closes every door and relay (shutdown, after the sessions are gone).
    pub fn close_all(&self) {
        for (_, door) in self.lock().drain() {
            door.shut();
        }
    }

    /// Doors open now.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Door>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn short(container: &str) -> String {
    container.chars().take(12).collect()
}

/// What a door's relays share: their stop, and their bounds (this door's and everyone's).
struct Relays {
    stop: CancellationToken,
    here: Arc<Semaphore>,
    all: Arc<Semaphore>,
}

/// When an accept last failed, as ms since the Unix epoch: warned at most every 10 s, since
/// 1,000 doors out of files at once would warn 20,000 times a second.
static LAST_WARNED_MS: AtomicU64 = AtomicU64::new(0);

/// Accepts until `stop`; each connection is relayed in a task of its own, or closed at once
/// over the bounds.
async fn listen(listener: TcpListener, server: SocketAddr, stop: CancellationToken, relays: Relays, container: String) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((inbound, peer)) => {
                let (Ok(here), Ok(all)) =
                    (relays.here.clone().try_acquire_owned(), relays.all.clone().try_acquire_owned())
                else {
                    debug!(container = %container, peer = %peer, "too many relayed connections; closing");
                    continue;
                };
                let (stop, container) = (relays.stop.clone(), container.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        relayed = relay(inbound, peer, server) => if let Err(e) = relayed {
                            debug!(container = %container, peer = %peer, error = %e, "front door relay ended");
                        }
                    }
                    drop((here, all));
                });
            }
            Err(e) => {
                // Out of files, most likely: wait rather than spin, and say so now and then.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                if now.saturating_sub(LAST_WARNED_MS.swap(now, Ordering::Relaxed)) >= 10_000 {
                    warn!(container = %container, error = %e, "front door accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One performer's connection: the server is reached, told who it is, then bytes both ways
/// until the server closes (a performer who closes first gives it [`LINGER`] to follow).
async fn relay(mut inbound: TcpStream, peer: SocketAddr, server: SocketAddr) -> std::io::Result<()> {
    let local = inbound.local_addr()?;
    let mut out = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(server))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the session server did not answer"))??;
    inbound.set_nodelay(true)?;
    out.set_nodelay(true)?;
    out.write_all(&header(peer, local)?).await?;
    let (performer_in, mut performer_out) = inbound.split();
    let (server_in, mut server_out) = out.split();
    let mut performer_in = BufReader::with_capacity(BUFFER, performer_in);
    let mut server_in = BufReader::with_capacity(BUFFER, server_in);
    let to_performer = tokio::io::copy_buf(&mut server_in, &mut performer_out);
    tokio::pin!(to_performer);
    tokio::select! {
        // The server closed (or failed): the relay is over, whatever the performer does.
        done = &mut to_performer => done.map(drop),
        sent = tokio::io::copy_buf(&mut performer_in, &mut server_out) => {
            sent?;
            server_out.shutdown().await?;
            match tokio::time::timeout(LINGER, to_performer).await {
                Ok(done) => done.map(drop),
                Err(_) => Ok(()),
            }
        }
    }
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

        // Closed: nobody new gets in, but a relay lives until its server closes or it is cut.
        doors.close("c1");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "the closed door still lets people in");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        inside.write_all(b"bye").await.unwrap();
        let mut bye = [0u8; 3];
        performer.read_exact(&mut bye).await.unwrap();
        assert_eq!(&bye, b"bye", "the session's last words pass a closed door");
        doors.cut("c1");
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

#[cfg(test)]
mod relay_tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A door to a fresh loopback server; returns the door's port and the server.
    async fn door(doors: &Doors) -> (u16, TcpListener) {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let reserved = Doors::reserve("127.0.0.1".parse().unwrap(), 0).await.unwrap();
        let port = reserved.listener.local_addr().unwrap().port();
        doors.serve("c", reserved, server.local_addr().unwrap());
        (port, server)
    }

    #[tokio::test]
    async fn a_relay_ends_when_the_server_closes_even_if_the_performer_never_does() {
        let doors = Doors::default();
        let (port, server) = door(&doors).await;
        let mut performer = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (inside, _) = server.accept().await.unwrap();
        drop(inside);
        let mut buf = [0u8; 8];
        // The performer keeps its side open; the hub lets go of the connection all the same.
        let got = tokio::time::timeout(Duration::from_secs(5), performer.read(&mut buf)).await;
        assert!(matches!(got, Ok(Ok(0)) | Ok(Err(_))), "the relay outlived its server: {got:?}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while doors.relays.available_permits() != IN_ALL {
            assert!(tokio::time::Instant::now() < deadline, "the relay still holds its place");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn relays_past_a_doors_bound_are_closed_at_once_and_the_others_carry_on() {
        let doors = Doors::default();
        let (port, server) = door(&doors).await;
        let mut held = Vec::new();
        let mut inside = Vec::new();
        for _ in 0..PER_DOOR {
            held.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
            inside.push(server.accept().await.unwrap().0);
        }
        let mut extra = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut buf = [0u8; 8];
        let got = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf)).await;
        assert!(matches!(got, Ok(Ok(0)) | Ok(Err(_))), "a relay past the bound was kept: {got:?}");
        held[0].write_all(b"x").await.unwrap();
        let mut head = [0u8; 16];
        inside[0].read_exact(&mut head).await.unwrap();
        assert_eq!(&head[..12], b"\r\n\r\n\0\r\nQUIT\n", "the first relay still works");
    }
}
