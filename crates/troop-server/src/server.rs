//! The network side of the session server: accepting, reading, writing, shutdown.
//!
//! One task owns the [`Session`] and handles every event in arrival order, so all clients see
//! relays in one global order, as upstream's single relay thread gives. Each connection has a
//! reader task (decodes messages, sends them to the session task) and a writer task (drains a
//! bounded queue into the socket, batching). A client whose queue overflows is dropped, so a
//! slow or dead client never stalls the others. Every socket has TCP_NODELAY.

use crate::frame::Decoder;
use crate::message::{Body, Message};
use crate::session::{login_reply, Action, ClientId, Limits, Session};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// Everything the server loop needs besides the listener.
#[derive(Debug, Clone)]
pub struct Config {
    /// md5 hex of the session password (what clients send).
    pub password_md5: String,
    pub limits: Limits,
    /// Send KEEP_ALIVE every second (and drop joined clients silent for 30 s).
    pub keepalive: bool,
    /// Exit once no client has been logged in for this long.
    pub idle_exit: Option<Duration>,
    /// Largest single message, in bytes.
    pub max_message: usize,
    /// Messages queued to one client before it is dropped as too slow.
    pub queue: usize,
    /// Bytes queued to one client before it is dropped as too slow.
    pub queue_bytes: usize,
    /// Time a new connection has to complete its login.
    pub login_timeout: Duration,
    /// Open connections at most, in all and from one address (more are closed at once).
    pub max_connections: usize,
    pub max_connections_per_address: usize,
}

/// The largest login message (a PASSWORD is well under 1 KiB).
const MAX_LOGIN: usize = 4096;

/// Open connections per address, shared by the accept loop and the connection tasks.
type Counts = Arc<std::sync::Mutex<HashMap<std::net::IpAddr, usize>>>;

/// Frees a connection's slot when its task ends.
struct Slot(Counts, std::net::IpAddr);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.1);
            }
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            password_md5: crate::md5_hex(""),
            limits: Limits::default(),
            keepalive: false,
            idle_exit: None,
            max_message: 1 << 20,
            queue: 4096,
            queue_bytes: 16 << 20,
            login_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_connections_per_address: 64,
        }
    }
}

/// Why the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The shutdown future resolved (a signal).
    Shutdown,
    /// No client for the idle-exit duration.
    Idle,
}

type ConnKey = u64;

/// The sending side of one client's bounded queue, counted in messages and in bytes.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::Sender<Bytes>,
    queued: Arc<AtomicUsize>,
    limit: usize,
}

impl Outbox {
    /// Queues `b`; false if the queue is full (in messages or bytes) or the writer is gone.
    fn push(&self, b: Bytes) -> bool {
        let len = b.len();
        if self.queued.load(Ordering::Relaxed) + len > self.limit {
            return false;
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        if self.tx.try_send(b).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }
}

enum Event {
    Login {
        key: ConnKey,
        addr: SocketAddr,
        password: String,
        name: String,
        version: String,
        outbox: Outbox,
        kill: oneshot::Sender<()>,
    },
    Message(ConnKey, Message),
    Closed(ConnKey, Option<String>),
}

/// A logged-in connection as the session task sees it.
struct Handle {
    id: Option<ClientId>,
    outbox: Outbox,
    /// Dropping it stops the reader.
    _kill: oneshot::Sender<()>,
}

/// Runs the server on `listener` until `shutdown` resolves or the idle timeout passes.
/// On shutdown every joined client gets MSG_KILL, queues are flushed (up to 1.5 s) and
/// every connection is closed.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> std::io::Result<Exit> {
    let (events_tx, mut events) = mpsc::channel::<Event>(1024);
    let mut session = Session::new(config.password_md5.clone(), config.limits.clone());
    let mut handles: HashMap<ConnKey, Handle> = HashMap::new();
    let mut by_id: HashMap<ClientId, ConnKey> = HashMap::new();
    let mut writers = JoinSet::new();
    let mut readers = JoinSet::new();
    let mut next_key: ConnKey = 0;
    let counts: Counts = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ping = Instant::now();
    let mut idle_since = Some(Instant::now());
    tokio::pin!(shutdown);

    let exit = loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break Exit::Shutdown,
            accepted = listener.accept() => {
                let (stream, addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let slot = {
                    let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
                    let total: usize = c.values().sum();
                    let here = c.get(&addr.ip()).copied().unwrap_or(0);
                    if total >= config.max_connections || here >= config.max_connections_per_address {
                        None
                    } else {
                        *c.entry(addr.ip()).or_default() += 1;
                        Some(Slot(counts.clone(), addr.ip()))
                    }
                };
                let Some(slot) = slot else {
                    debug!(peer = %addr, "too many connections; closing");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                next_key += 1;
                let (source, sink) = stream.into_split();
                let (tx, queue) = mpsc::channel(config.queue.max(2));
                let queued = Arc::new(AtomicUsize::new(0));
                let outbox = Outbox { tx, queued: queued.clone(), limit: config.queue_bytes.max(4096) };
                writers.spawn(writer(sink, queue, queued));
                let (key, config, events) = (next_key, config.clone(), events_tx.clone());
                readers.spawn(async move {
                    connection(key, source, addr, outbox, config, events).await;
                    drop(slot);
                });
            }
            Some(event) = events.recv() => {
                let now = Instant::now();
                match event {
                    Event::Login { key, addr, password, name, version, outbox, kill } => {
                        let result = session.login(addr.ip(), addr.port(), &password, &name, &version, now);
                        let code = match result {
                            Ok(id) => {
                                info!(client = id, %name, peer = %addr, "logged in");
                                by_id.insert(id, key);
                                id
                            }
                            Err(e) => {
                                info!(%name, peer = %addr, reason = %e, "login refused");
                                e.code()
                            }
                        };
                        let _ = outbox.push(login_reply(code));
                        // A refused login drops its handle at once: the reply is flushed, then closed.
                        if code >= 0 {
                            handles.insert(key, Handle { id: Some(code), outbox, _kill: kill });
                        }
                    }
                    Event::Message(key, msg) => {
                        if let Some(id) = handles.get(&key).and_then(|h| h.id) {
                            session.receive(id, msg, now);
                        }
                    }
                    Event::Closed(key, reason) => {
                        if let Some(id) = handles.get(&key).and_then(|h| h.id) {
                            match reason {
                                Some(r) => info!(client = id, reason = %r, "client dropped for bad input"),
                                None => info!(client = id, "client disconnected"),
                            }
                            session.leave(id);
                        }
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                session.tick(now);
                if config.keepalive && now.duration_since(last_ping) >= Duration::from_secs(1) {
                    last_ping = now;
                    session.ping();
                }
            }
            Some(_) = readers.join_next() => {}
            Some(_) = writers.join_next() => {}
        }
        execute(&mut session, &mut handles, &mut by_id);
        if session.live_count() == 0 {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if let Some(limit) = config.idle_exit {
                if since.elapsed() >= limit {
                    break Exit::Idle;
                }
            }
        } else {
            idle_since = None;
        }
    };

    session.shutdown();
    execute(&mut session, &mut handles, &mut by_id);
    handles.clear();
    readers.abort_all();
    drop(events);
    let flushed =
        tokio::time::timeout(Duration::from_millis(1500), async { while writers.join_next().await.is_some() {} }).await;
    if flushed.is_err() {
        warn!("some clients did not take their last messages in time");
    }
    Ok(exit)
}

/// Carries out the session's actions; a client whose queue is full or gone is dropped, which
/// may produce more actions.
fn execute(session: &mut Session, handles: &mut HashMap<ConnKey, Handle>, by_id: &mut HashMap<ClientId, ConnKey>) {
    loop {
        for (id, reason) in session.take_dropped() {
            warn!(client = id, %reason, "dropping client");
        }
        let actions = session.take_actions();
        if actions.is_empty() {
            return;
        }
        let mut overflowed = Vec::new();
        for action in actions {
            match action {
                Action::Send(id, bytes) => {
                    let Some(handle) = by_id.get(&id).and_then(|k| handles.get(k)) else {
                        continue;
                    };
                    if !handle.outbox.push(bytes) {
                        overflowed.push(id);
                    }
                }
                Action::Close(id) => {
                    if let Some(key) = by_id.remove(&id) {
                        handles.remove(&key);
                    }
                }
            }
        }
        for id in overflowed {
            warn!(client = id, "client is not reading: outbound queue full, dropping it");
            session.leave(id);
        }
    }
}

/// One connection: login, then messages to the session task until EOF, bad input or kill.
async fn connection(
    key: ConnKey,
    mut source: OwnedReadHalf,
    addr: SocketAddr,
    outbox: Outbox,
    config: Config,
    events: mpsc::Sender<Event>,
) {
    // Until the login succeeds a connection may buffer only a login's worth of bytes.
    let mut decoder = Decoder::new(MAX_LOGIN);
    let first = tokio::time::timeout(config.login_timeout, read_first(&mut source, &mut decoder)).await;
    let (password, name, version) = match first {
        Ok(Ok(Message { body: Body::Password { password, name, version }, .. })) => (password, name, version),
        Ok(Ok(other)) => {
            return debug!(peer = %addr, type_id = other.type_id(), "first message is not a login; closing")
        }
        Ok(Err(reason)) => return debug!(peer = %addr, %reason, "no login; closing"),
        Err(_) => return debug!(peer = %addr, "no login in time; closing"),
    };
    decoder.set_max_message(config.max_message);
    let (kill, mut killed) = oneshot::channel();
    let login = Event::Login { key, addr, password, name, version, outbox, kill };
    if events.send(login).await.is_err() {
        return;
    }
    let reason = tokio::select! {
        reason = read_loop(&mut source, &mut decoder, key, &events) => reason,
        _ = &mut killed => return,
    };
    let _ = events.send(Event::Closed(key, reason)).await;
}

/// The writer: drains the queue into the socket, many messages per write when they pile up.
async fn writer(mut sink: OwnedWriteHalf, mut queue: mpsc::Receiver<Bytes>, queued: Arc<AtomicUsize>) {
    let mut batch = Vec::with_capacity(64);
    let mut buf = BytesMut::new();
    while queue.recv_many(&mut batch, 64).await > 0 {
        let result = if batch.len() == 1 {
            sink.write_all(&batch[0]).await
        } else {
            buf.clear();
            for b in &batch {
                buf.extend_from_slice(b);
            }
            sink.write_all(&buf).await
        };
        let written: usize = batch.iter().map(Bytes::len).sum();
        queued.fetch_sub(written, Ordering::Relaxed);
        batch.clear();
        if result.is_err() {
            return;
        }
    }
    let _ = sink.shutdown().await;
}

/// Reads until one complete message is decoded (the login), within the login timeout.
async fn read_first(source: &mut OwnedReadHalf, decoder: &mut Decoder) -> Result<Message, String> {
    loop {
        match decoder.next_message() {
            Ok(Some(m)) => return Ok(m),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        match source.read_buf(decoder.buffer()).await {
            Ok(0) => return Err("closed before logging in".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Reads messages after login and forwards them; returns why it stopped (None for EOF).
async fn read_loop(
    source: &mut OwnedReadHalf,
    decoder: &mut Decoder,
    key: ConnKey,
    events: &mpsc::Sender<Event>,
) -> Option<String> {
    loop {
        loop {
            match decoder.next_message() {
                Ok(Some(m)) => {
                    if events.send(Event::Message(key, m)).await.is_err() {
                        return None;
                    }
                }
                Ok(None) => break,
                Err(e) => return Some(e.to_string()),
            }
        }
        match source.read_buf(decoder.buffer()).await {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => return Some(e.to_string()),
        }
    }
}
