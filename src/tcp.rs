//! The Troop hub protocol's front door: what `run-server.py --hub` and `run-client.py --hub`
//! talk to. One request per connection; a `server` request's connection then belongs to the
//! session's owner until it closes, sends `{"kill": ...}`, or the hub ends the session and
//! tells it why in an `error` frame. Connections are capped in all and per address, and one
//! that sends nothing in time is closed.

use crate::accept::AcceptBackoff;
use crate::hub::{Hub, StartRequest};
use crate::wire::{self, Request, WireError};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::{debug, info};

/// Open connections, in all and per address.
#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Releases a connection's slot when it ends.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A slot for a new connection from `ip`, unless the caps are reached. Trusted addresses
/// (operators, the host itself) are held only to the total cap.
fn admit(counts: &Arc<Mutex<Counts>>, config: &crate::config::Config, ip: IpAddr) -> Option<Slot> {
    let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
    let from_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
    let per_ip_full = from_ip >= config.max_connections_per_address && !config.is_trusted(ip);
    if c.total >= config.max_connections || per_ip_full {
        return None;
    }
    c.total += 1;
    *c.per_ip.entry(ip).or_default() += 1;
    Some(Slot { counts: counts.clone(), ip })
}

/// Serves until the hub starts shutting down, then waits (a little) for open connections to
/// pass on the shutdown message.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>) {
    let counts = Arc::new(Mutex::new(Counts::default()));
    let mut tasks = JoinSet::new();
    let shutdown = hub.shutdown_token();
    let mut backoff = AcceptBackoff::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => {
                let accepted_at = std::time::Instant::now();
                let (stream, peer) = match accepted {
                    Ok(a) => {
                        backoff.reset();
                        a
                    }
                    Err(e) => {
                        tokio::time::sleep(backoff.failed("tcp", &e)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                match admit(&counts, &hub.config(), peer.ip()) {
                    Some(slot) => {
                        let hub = hub.clone();
                        tasks.spawn(async move {
                            hub.metrics.connection_opened();
                            handle(stream, peer, hub.clone(), slot, accepted_at).await;
                            hub.metrics.connection_closed();
                        });
                    }
                    None => {
                        debug!(%peer, "too many connections; refusing");
                        tasks.spawn(async move {
                            let mut stream = stream;
                            let _ = stream.write_all(&wire::error_frame("Too many connections to the hub; try again later")).await;
                        });
                    }
                }
            }
            Some(_) = tasks.join_next() => {}
        }
    }
    drop(listener);
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(3), async { while tasks.join_next().await.is_some() {} })
            .await;
}

async fn reply(stream: &mut TcpStream, v: Value) {
    match wire::encode(&v) {
        Ok(frame) => {
            let _ = stream.write_all(&frame).await;
        }
        Err(_) => {
            let _ = stream.write_all(&wire::error_frame("The reply is too large for the hub protocol")).await;
        }
    }
}

async fn error(stream: &mut TcpStream, message: &str) {
    let _ = stream.write_all(&wire::error_frame(message)).await;
}

/// `slot` is the connection's place under the connection caps, held until it ends, except by
/// an owner: an owner's connection lasts as long as its session, which `max_sessions` and the
/// per-address session limit already bound (1,000 owners would otherwise fill the default cap
/// of 1,024 and leave no room for a query). `accepted_at`: when the connection was accepted,
/// from which a query is timed.
async fn handle(mut stream: TcpStream, peer: SocketAddr, hub: Arc<Hub>, slot: Slot, accepted_at: std::time::Instant) {
    let config = hub.config();
    let first = tokio::time::timeout(config.request_timeout, wire::read_frame(&mut stream)).await;
    let request = match first {
        Err(_) => return error(&mut stream, "No request received in time").await,
        Ok(Err(WireError::Closed)) => return,
        Ok(Err(e)) => {
            hub.metrics.request("bad_request", "error");
            return error(&mut stream, &e.to_string()).await;
        }
        Ok(Ok(v)) => match wire::parse_request(&v) {
            Ok(r) => r,
            Err(e) => {
                hub.metrics.request("bad_request", "error");
                return error(&mut stream, &e.to_string()).await;
            }
        },
    };
    let trusted = config.is_trusted(peer.ip());
    debug!(%peer, kind = request.kind(), "request");
    match request {
        Request::Query { name } => {
            let result = hub.query(&name).map(|(host, port)| json!([host, port]));
            hub.metrics.request("query", "ok");
            reply(&mut stream, json!({ "result": result })).await;
            hub.metrics.query_answered(accepted_at.elapsed());
        }
        Request::List if trusted => {
            hub.metrics.request("list", "ok");
            reply(&mut stream, list_reply(&hub)).await;
        }
        Request::List => {
            hub.metrics.request("list", "error");
            error(&mut stream, &format!("Status request made from invalid address {}", peer.ip())).await
        }
        Request::Kill { name } if trusted => {
            if hub.kill(&name).await {
                hub.metrics.request("kill", "ok");
                info!(session = %name, %peer, "killed by admin request");
                reply(&mut stream, json!({ "data": "success" })).await;
            } else {
                error(&mut stream, &format!("No session named '{name}' is running")).await;
            }
        }
        Request::Kill { .. } => {
            hub.metrics.request("kill", "error");
            error(&mut stream, "External kill request denied").await
        }
        Request::Server { name, password, daemon } => {
            let req = StartRequest { name, password, daemon, peer: Some(peer.ip()), ttl: None };
            match hub.start_session(req).await {
                Ok(owned) => {
                    if daemon {
                        reply(&mut stream, json!({ "address": [owned.host, owned.port] })).await;
                    } else {
                        // An owner from here on: its place is free before it hears the reply
                        // (and may send its next request).
                        drop(slot);
                        reply(&mut stream, json!({ "address": [owned.host, owned.port] })).await;
                        return own(stream, owned, &hub).await;
                    }
                }
                Err(e) => error(&mut stream, &e.to_string()).await,
            }
        }
    }
    client_closes_first(&mut stream).await;
}

/// How long the hub waits, after a one-shot reply, for the client to close first.
pub const CLIENT_CLOSES_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// After a one-shot reply the hub lets the client close first (Troop's client does at once),
/// so TCP's TIME_WAIT stays on the client's side. A hub that closes first keeps a TIME_WAIT
/// entry per client port; a busy client (256 querying at once) soon reuses a port, its SYN
/// meets the old entry and is dropped, and it retries only after a second.
async fn client_closes_first(stream: &mut TcpStream) {
    let mut sink = [0u8; 256];
    let _ = tokio::time::timeout(CLIENT_CLOSES_WITHIN, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// The `list` reply: one frame holds at most 9999 bytes, so past that the list is cut and
/// says so (GET /api/v1/sessions has them all).
fn list_reply(hub: &Hub) -> Value {
    let mut data: Vec<Value> = hub
        .list()
        .into_iter()
        .map(|s| {
            json!({
                "name": s.name, "id": s.id, "host": s.host, "port": s.port, "state": s.state,
                "created": s.created, "owner_connected": s.owner_connected, "daemon": s.daemon,
                "performers": s.performers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let total = data.len();
    while wire::encode(&json!({ "data": data, "truncated": total })).is_err() && !data.is_empty() {
        data.pop();
    }
    if data.len() < total {
        json!({ "data": data, "truncated": total })
    } else {
        json!({ "data": data })
    }
}

/// The connection is the session's owner from here on: it ends the session by closing or
/// sending `kill`, and hears why when the hub ends it.
async fn own(stream: TcpStream, mut owned: crate::hub::Owned, hub: &Hub) {
    let (mut source, mut sink) = stream.into_split();
    let killed = loop {
        tokio::select! {
            frame = wire::read_frame(&mut source) => match frame {
                Ok(v) if v.get("kill").is_some() => break true,
                Ok(_) => continue,
                Err(_) => break false,
            },
            msg = owned.ended.recv() => {
                if let Some(msg) = msg {
                    let _ = sink.write_all(&wire::error_frame(&msg)).await;
                }
                let _ = sink.shutdown().await;
                return;
            }
        }
    };
    hub.owner_gone(&owned.id, killed).await;
}
