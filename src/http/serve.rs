//! Connections and their lifecycle: the accept loop and each connection's life. Connections
//! are capped ([`MAX_CONNECTIONS`]), must send their headers within [`HEADER_TIMEOUT`]
//! (slowloris) and live at most [`CONNECTION_LIFETIME`]. Once the shutdown token is cancelled
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
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// Open HTTP connections at most; more are closed at once.
pub const MAX_CONNECTIONS: usize = 256;
/// A client must send its request headers within this (slowloris).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// No connection lives longer than this.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// At shutdown, requests in flight get this long to be answered; then their connections are
/// cut. Within compose's `stop_grace_period: 30s`, leaving the rest for the hub itself.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves `hub`'s HTTP application on `listener` until `shutdown` is cancelled, then drains
/// the open connections (at most [`DRAIN_TIMEOUT`]) and returns.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>, shutdown: CancellationToken) {
    let app = super::router(hub);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        // Over the cap: the stream is dropped, which closes it.
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
        connections.spawn(connection(stream, peer, app.clone(), shutdown.clone(), slot));
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
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    // Every request knows its peer (`ConnectInfo`, read by `ClientIp`).
    let app = app.map_request(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    // An upgraded connection (an audience viewer's WebSocket) leaves this task, its slot and
    // its lifetime: the viewer caps and the session's end bound it instead.
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let cut_at = Instant::now() + CONNECTION_LIFETIME;
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = tokio::time::sleep_until(cut_at) => return,
        _ = shutdown.cancelled() => {}
    }
    // No new request on this connection; the one in flight is answered first.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout_at(cut_at.min(Instant::now() + DRAIN_TIMEOUT), conn).await;
}
