//! Connections and their lifecycle: the accept loop and each connection's life. Connections
//! are capped in all ([`MAX_CONNECTIONS`]) and per address ([`MAX_PER_ADDRESS`]; a trusted
//! proxy's are not, it carries many clients); one over a cap is still answered, with a 503 and
//! `Retry-After` ([`MAX_REFUSING`] such answers at once). A connection must send its first
//! byte and its headers within [`HEADER_TIMEOUT`] (slowloris, and silent sockets) and lives
//! at most [`CONNECTION_LIFETIME`]. A viewer's WebSocket keeps its connection's place until it
//! has given the session's password ([`ConnectionSlot`]). Once the shutdown token is cancelled
//! the listener closes and every open connection is shut down gracefully: a request in flight
//! (a POST waiting on a session start) is answered, then the connection closes; idle
//! keep-alive connections close at once. Serving ends within [`DRAIN_TIMEOUT`].

use crate::accept::AcceptBackoff;
use crate::hub::Hub;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// Open HTTP connections at most (each costs a task and hyper's buffers, a few KiB; an
/// upgraded viewer leaves its place once it has given the password). More are answered 503.
pub const MAX_CONNECTIONS: usize = 1024;
/// Open HTTP connections from one address (an IPv6 /56) at most, unless it is a trusted proxy.
/// A venue's or a school's audience shares one address behind its NAT, and a viewer holds a
/// connection only until its upgrade (or its password): a quarter of [`MAX_CONNECTIONS`].
pub const MAX_PER_ADDRESS: usize = 256;
/// Connections over a cap being answered 503 at once; beyond that they are closed unanswered.
pub const MAX_REFUSING: usize = 256;
/// A client must send its first byte and its request headers within this (slowloris).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// No connection lives longer than this.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// At shutdown, requests in flight get this long to be answered; then their connections are
/// cut. Within compose's `stop_grace_period: 30s`, leaving the rest for the hub itself.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// The places open connections hold, in all and by address.
#[derive(Default)]
struct Places {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Why a connection gets no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    Hub,
    Address,
}

/// The connection caps, shared by the accept loop and every connection's place.
#[derive(Clone, Default)]
struct Caps(Arc<Mutex<Places>>);

impl Caps {
    /// A place for a connection from `key` (`None`: a trusted proxy, not capped by address).
    fn take(&self, key: Option<IpAddr>) -> Result<Place, Full> {
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if p.total >= MAX_CONNECTIONS {
            return Err(Full::Hub);
        }
        if let Some(k) = key {
            let n = p.by_address.entry(k).or_default();
            if *n >= MAX_PER_ADDRESS {
                return Err(Full::Address);
            }
            *n += 1;
        }
        p.total += 1;
        Ok(Place { caps: self.clone(), key })
    }
}

/// One connection's place; freed when dropped.
pub struct Place {
    caps: Caps,
    key: Option<IpAddr>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut p = self.caps.0.lock().unwrap_or_else(|e| e.into_inner());
        p.total = p.total.saturating_sub(1);
        if let Some(k) = self.key {
            if let Some(n) = p.by_address.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    p.by_address.remove(&k);
                }
            }
        }
    }
}

/// The connection's place, on each of its requests: a viewer's WebSocket takes it along
/// ([`ConnectionSlot::take`]) and holds it until it has given the session's password, so
/// sockets waiting to authenticate count against the caps like any other connection.
#[derive(Clone)]
pub struct ConnectionSlot(Arc<Mutex<Option<Place>>>);

impl ConnectionSlot {
    pub fn take(&self) -> Option<Place> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The connection's socket, on each of its requests: an upgraded viewer's WebSocket bounds
/// its kernel send buffer ([`SocketFd::bound_send_buffer`]).
#[derive(Clone, Copy)]
pub struct SocketFd(std::os::fd::RawFd);

/// What a viewer's socket may hold unsent in the kernel, asked (Linux doubles it). Unbounded,
/// the kernel grows it to `tcp_wmem`'s maximum (MiBs), absorbing a viewer's whole backlog, so
/// one that stops reading is never seen to fall behind; bounded, its backlog stays in the
/// hub's feed, where the lag rule drops it.
pub const VIEWER_SEND_BUFFER: usize = 64 * 1024;

impl SocketFd {
    /// Bounds the socket's send buffer to [`VIEWER_SEND_BUFFER`]. Call only while the
    /// connection is open (its upgraded stream owns the descriptor then).
    pub fn bound_send_buffer(self) {
        let size = VIEWER_SEND_BUFFER as libc::c_int;
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int; the
        // descriptor is the connection's own socket, open while its stream lives.
        let done = unsafe {
            libc::setsockopt(
                self.0,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if done != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "could not bound a viewer's send buffer");
        }
    }
}

/// The answer a connection over a cap gets.
fn refusal(full: Full) -> Vec<u8> {
    let body = match full {
        Full::Hub => r#"{"error":"The hub is serving as many connections as it can; try again in a few seconds"}"#,
        Full::Address => r#"{"error":"Too many open connections from your address; close some and try again"}"#,
    };
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers a connection over a cap with a 503, then closes it: what it sent is read (and
/// dropped) for a moment first, so the close does not reset the answer away.
async fn refuse(mut stream: TcpStream, full: Full) {
    let answer = async {
        stream.write_all(&refusal(full)).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), answer).await;
}

/// Serves `hub`'s HTTP application on `listener` until `shutdown` is cancelled, then drains
/// the open connections (at most [`DRAIN_TIMEOUT`]) and returns.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>, shutdown: CancellationToken) {
    let app = super::router(hub.clone());
    let caps = Caps::default();
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let connections = TaskTracker::new();
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(e) => {
                let pause = backoff.failed("http", &e);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let ip = peer.ip().to_canonical();
        let proxy = hub.config().trusted_proxies.iter().any(|n| n.contains(&ip));
        match caps.take((!proxy).then(|| crate::gate::address_key(ip))) {
            Ok(place) => {
                // Live messages are small and go out as they happen (a viewer's edit, a
                // seat's echo): Nagle would hold each behind the client's delayed ACK (40 ms).
                let _ = stream.set_nodelay(true);
                connections.spawn(connection(stream, peer, app.clone(), shutdown.clone(), place));
            }
            Err(full) => {
                // Answered while there is room to answer; beyond that, closed.
                if let Ok(turn) = refusing.clone().try_acquire_owned() {
                    connections.spawn(async move {
                        refuse(stream, full).await;
                        drop(turn);
                    });
                }
            }
        }
    }
    drop(listener);
    connections.close();
    if !connections.is_empty() {
        tracing::info!(open = connections.len(), "HTTP: answering the requests in flight before closing");
    }
    // Each connection bounds its own drain; this is only a backstop.
    let drained = tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(1), connections.wait()).await;
    if drained.is_err() {
        tracing::warn!(open = connections.len(), "HTTP connections still open after the drain timeout");
    }
}

/// One connection, from its first byte until it closes, is cut at its lifetime, or has been
/// shut down gracefully (bounded by [`DRAIN_TIMEOUT`]) after `shutdown`.
async fn connection(stream: TcpStream, peer: SocketAddr, app: Router, shutdown: CancellationToken, place: Place) {
    let cut_at = Instant::now() + CONNECTION_LIFETIME;
    // hyper's header timeout starts with the first byte: a socket that sends nothing is
    // closed here, at the same timeout.
    let mut first = [0u8; 1];
    match tokio::time::timeout(HEADER_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    let slot = ConnectionSlot(Arc::new(Mutex::new(Some(place))));
    let fd = SocketFd(std::os::fd::AsRawFd::as_raw_fd(&stream));
    // Every request knows its peer (`ConnectInfo`, read by `ClientIp`) and its place.
    let app = app.map_request(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(slot.clone());
        req.extensions_mut().insert(fd);
        req
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    // An upgraded connection (an audience viewer's WebSocket) leaves this task, its slot and
    // its lifetime: the viewer caps and the session's end bound it instead.
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = tokio::time::sleep_until(cut_at) => return,
        _ = shutdown.cancelled() => {}
    }
    // No new request on this connection; the one in flight is answered first.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout_at(cut_at.min(Instant::now() + DRAIN_TIMEOUT), conn).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_capped_per_address_and_in_all_and_freed_when_dropped() {
        let caps = Caps::default();
        let a = Some(IpAddr::from([192, 0, 2, 1]));
        let mine: Vec<Place> = (0..MAX_PER_ADDRESS).filter_map(|_| caps.take(a).ok()).collect();
        assert_eq!(mine.len(), MAX_PER_ADDRESS);
        assert!(matches!(caps.take(a), Err(Full::Address)));
        assert!(caps.take(Some(IpAddr::from([192, 0, 2, 2]))).is_ok(), "another address has room");
        // A trusted proxy (no key) is capped only by the total.
        let proxied: Vec<Place> = (0..MAX_CONNECTIONS).map_while(|_| caps.take(None).ok()).collect();
        assert_eq!(proxied.len() + mine.len(), MAX_CONNECTIONS);
        assert!(matches!(caps.take(None), Err(Full::Hub)));
        drop(proxied);
        drop(mine);
        assert!(caps.take(a).is_ok(), "places come back when connections close");
        let p = caps.0.lock().unwrap_or_else(|e| e.into_inner());
        assert!(p.by_address.is_empty() && p.total == 0, "nothing left behind");
    }

    #[test]
    fn a_refusal_is_a_whole_http_answer() {
        let text = String::from_utf8(refusal(Full::Hub)).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("HTTP/1.1 503") && head.contains("Retry-After: 5"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| v["error"].is_string()), "{body}");
    }
}
