//! The network side of the session server: accepting, the session task, shutdown.
//!
//! One task owns the [`Session`] and handles every event in arrival order, so all clients see
//! relays in one global order, as upstream's single relay thread gives. Each connection has a
//! reader task (decodes messages, sends them to the session task) and a writer task (drains a
//! bounded queue into the socket, batching); both are in `conn.rs`. A client whose queue
//! overflows is dropped, so a slow or dead client never stalls the others. Every socket has
//! TCP_NODELAY. The hub's control channel shares the port and the caps (`control.rs`).

mod conn;
mod control;
pub mod proxy;

use crate::control::ControlSecret;
use crate::message::Message;
use crate::session::{login_reply, Action, ClientId, Limits, Session};
use conn::{Counts, Outbox, Slot};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, info, warn};

/// Everything the server loop needs besides the listener.
#[derive(Debug, Clone)]
pub struct Config {
    /// md5 hex of the session password (what clients send); unused while `locked`.
    pub password_md5: String,
    /// Refuse every login (as a wrong password) until the hub arms the session over the
    /// control channel (which then needs `control`).
    pub locked: bool,
    /// The control channel's secret; `None` refuses every control connection.
    pub control: Option<ControlSecret>,
    pub limits: Limits,
    /// Send KEEP_ALIVE every second (and drop joined clients silent for 30 s).
    pub keepalive: bool,
    /// Exit once no client has been logged in for this long (the hub's `arm` may change it).
    pub idle_exit: Option<Duration>,
    /// Largest single message, in bytes.
    pub max_message: usize,
    /// Messages queued to one client before it is dropped as too slow.
    pub queue: usize,
    /// Bytes queued to one client before it is dropped as too slow.
    pub queue_bytes: usize,
    /// Frames queued to one control connection (a subscriber's events) before it is dropped.
    pub control_queue: usize,
    /// Bytes queued to one control connection before it is dropped.
    pub control_queue_bytes: usize,
    /// Control connections subscribed at once, at most.
    pub max_subscribers: usize,
    /// Time a new connection has to complete its login (or its control line).
    pub login_timeout: Duration,
    /// Open connections at most, in all and from one address (more are closed at once).
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    /// Read a PROXY protocol v2 header when a connection starts with one ([`proxy`]): only
    /// for a server whose port nobody but the hub's front door can reach.
    pub proxy_protocol: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            password_md5: crate::md5_hex(""),
            locked: false,
            control: None,
            limits: Limits::default(),
            keepalive: false,
            idle_exit: None,
            max_message: 1 << 20,
            queue: 4096,
            queue_bytes: 16 << 20,
            control_queue: 8192,
            control_queue_bytes: 8 << 20,
            max_subscribers: 4,
            login_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_connections_per_address: 64,
            proxy_protocol: false,
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
    /// The hub ended the session over the control channel.
    Ended,
}

type ConnKey = u64;

/// How long shutdown waits for queues to drain: on a signal, and on the hub's `end`.
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(1500);
const END_FLUSH: Duration = Duration::from_secs(1);

/// A Troop client's login, as its reader hands it to the session task.
struct Login {
    key: ConnKey,
    addr: SocketAddr,
    password: String,
    name: String,
    version: String,
    outbox: Outbox,
    writer: AbortHandle,
    kill: oneshot::Sender<()>,
}

enum Event {
    Login(Box<Login>),
    Message(ConnKey, Message),
    Closed(ConnKey, Option<String>),
    Control(control::ControlEvent),
}

/// A logged-in connection as the session task sees it.
struct Handle {
    id: ClientId,
    outbox: Outbox,
    writer: AbortHandle,
    /// Dropping it stops the reader.
    _kill: oneshot::Sender<()>,
}

/// Why the loop stops.
enum Stop {
    Signal,
    Idle,
    /// The hub's `end` from this control connection.
    End {
        key: ConnKey,
        reason: String,
    },
}

/// The session task's state.
struct Loop {
    config: Config,
    session: Session,
    handles: HashMap<ConnKey, Handle>,
    by_id: HashMap<ClientId, ConnKey>,
    controls: HashMap<ConnKey, control::Control>,
    writers: JoinSet<()>,
    readers: JoinSet<()>,
    /// Connections whose PROXY header is being read (`proxy_protocol`), with their source.
    arriving: JoinSet<Option<(TcpStream, SocketAddr)>>,
    events: mpsc::Sender<Event>,
    next_key: ConnKey,
    counts: Counts,
    last_ping: Instant,
    idle_since: Option<Instant>,
    idle_exit: Option<Duration>,
    /// The display name the hub gave with `arm`.
    name: Option<String>,
    bytes_relayed: u64,
    /// The event number last published, and when.
    last_seq: u64,
    last_activity_ms: Option<u64>,
    /// Where each event is encoded (once, for every subscriber).
    frame: Vec<u8>,
}

/// Resolves when the idle exit is due (never without one).
async fn idle_due(idle_exit: Option<Duration>, idle_since: Option<Instant>) {
    match (idle_exit, idle_since) {
        (Some(limit), Some(since)) => tokio::time::sleep_until((since + limit).into()).await,
        (Some(limit), None) => tokio::time::sleep(limit).await,
        (None, _) => std::future::pending().await,
    }
}

/// Runs the server on `listener` until `shutdown` resolves, the idle timeout passes or the hub
/// ends the session. Then every joined client gets MSG_KILL, queues are flushed (a bounded
/// time) and every connection is closed.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> std::io::Result<Exit> {
    let (events_tx, mut events) = mpsc::channel::<Event>(1024);
    let mut lp = Loop::new(config, events_tx);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let stop = loop {
        let stop = tokio::select! {
            biased;
            () = &mut shutdown => Some(Stop::Signal),
            accepted = listener.accept() => {
                lp.accept(accepted).await;
                None
            }
            Some(event) = events.recv() => lp.on_event(event),
            // Timeouts and keepalives concern joined clients: with none, the server sleeps
            // until its idle exit is due instead of waking 4 times a second (1,000 idle
            // sessions on one host made 4,000 wake-ups a second).
            _ = tick.tick(), if lp.session.live_count() > 0 => {
                lp.on_tick();
                None
            }
            () = idle_due(lp.idle_exit, lp.idle_since), if lp.session.live_count() == 0 => None,
            Some(arrived) = lp.arriving.join_next() => {
                if let Ok(Some((stream, addr))) = arrived {
                    lp.admit(stream, addr);
                }
                None
            }
            Some(_) = lp.readers.join_next() => None,
            Some(_) = lp.writers.join_next() => None,
        };
        if let Some(stop) = stop {
            break stop;
        }
        lp.execute();
        lp.publish();
        if let Some(stop) = lp.idle() {
            break stop;
        }
    };
    let exit = lp.finish(stop).await;
    drop(events);
    Ok(exit)
}

impl Loop {
    fn new(config: Config, events: mpsc::Sender<Event>) -> Loop {
        let session = if config.locked {
            Session::locked(config.limits.clone())
        } else {
            Session::new(config.password_md5.clone(), config.limits.clone())
        };
        Loop {
            idle_exit: config.idle_exit,
            config,
            session,
            handles: HashMap::new(),
            by_id: HashMap::new(),
            controls: HashMap::new(),
            writers: JoinSet::new(),
            readers: JoinSet::new(),
            arriving: JoinSet::new(),
            events,
            next_key: 0,
            counts: Counts::default(),
            last_ping: Instant::now(),
            idle_since: Some(Instant::now()),
            name: None,
            bytes_relayed: 0,
            last_seq: 0,
            last_activity_ms: None,
            frame: Vec::new(),
        }
    }

    /// A new connection: admitted at once, or, behind a front door, once its PROXY header
    /// (if any) says where it really comes from.
    async fn accept(&mut self, accepted: std::io::Result<(TcpStream, SocketAddr)>) {
        let (mut stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "accept failed");
                return tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        if !self.config.proxy_protocol {
            return self.admit(stream, addr);
        }
        if self.arriving.len() >= self.config.max_connections {
            return debug!(peer = %addr, "too many connections arriving; closing");
        }
        let within = self.config.login_timeout;
        self.arriving.spawn(async move {
            match proxy::real_source(&mut stream, addr, within).await {
                Ok(source) => Some((stream, source)),
                Err(e) => {
                    debug!(peer = %addr, error = %e, "connection closed before it began");
                    None
                }
            }
        });
    }

    /// A connection from `addr`: a slot, a writer and a reader, or closed at once over the caps.
    fn admit(&mut self, stream: TcpStream, addr: SocketAddr) {
        let Some(slot) = Slot::take(&self.counts, addr.ip(), &self.config) else {
            return debug!(peer = %addr, "too many connections; closing");
        };
        let _ = stream.set_nodelay(true);
        self.next_key += 1;
        let (source, sink) = stream.into_split();
        let c = &self.config;
        let (outbox, drain) = Outbox::new(c.queue.max(c.control_queue), c.queue.max(2), c.queue_bytes.max(4096));
        let writer = self.writers.spawn(conn::writer(sink, drain));
        let (key, config, events) = (self.next_key, self.config.clone(), self.events.clone());
        self.readers.spawn(async move {
            conn::connection(key, source, addr, (outbox, writer), config, events).await;
            drop(slot);
        });
    }

    fn on_event(&mut self, event: Event) -> Option<Stop> {
        let now = Instant::now();
        match event {
            Event::Login(login) => self.login(*login, now),
            Event::Message(key, msg) => {
                if let Some(id) = self.handles.get(&key).map(|h| h.id) {
                    self.session.receive(id, msg, now);
                }
            }
            Event::Closed(key, reason) => {
                if let Some(id) = self.handles.get(&key).map(|h| h.id) {
                    match reason {
                        Some(r) => info!(client = id, reason = %r, "client dropped for bad input"),
                        None => info!(client = id, "client disconnected"),
                    }
                    self.session.leave(id);
                }
            }
            Event::Control(event) => return self.on_control(event),
        }
        None
    }

    fn login(&mut self, l: Login, now: Instant) {
        let result = self.session.login(l.addr.ip(), l.addr.port(), &l.password, &l.name, &l.version, now);
        let code = match result {
            Ok(id) => {
                info!(client = id, name = %l.name, peer = %l.addr, "logged in");
                self.by_id.insert(id, l.key);
                id
            }
            Err(e) => {
                info!(name = %l.name, peer = %l.addr, reason = %e, "login refused");
                e.code()
            }
        };
        let _ = l.outbox.push(login_reply(code));
        // A refused login drops its handle at once: the reply is flushed, then closed.
        if code >= 0 {
            self.handles.insert(l.key, Handle { id: code, outbox: l.outbox, writer: l.writer, _kill: l.kill });
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        self.session.tick(now);
        if self.config.keepalive && now.duration_since(self.last_ping) >= Duration::from_secs(1) {
            self.last_ping = now;
            self.session.ping();
        }
    }

    /// Carries out the session's actions; a client whose queue is full or gone is dropped (its
    /// connection closed at once), which may produce more actions.
    fn execute(&mut self) {
        loop {
            for (id, reason) in self.session.take_dropped() {
                warn!(client = id, %reason, "dropping client");
            }
            let actions = self.session.take_actions();
            if actions.is_empty() {
                return;
            }
            let mut overflowed = Vec::new();
            for action in actions {
                match action {
                    Action::Send(id, bytes) => {
                        let Some(handle) = self.by_id.get(&id).and_then(|k| self.handles.get(k)) else {
                            continue;
                        };
                        let len = bytes.len() as u64;
                        if handle.outbox.push(bytes) {
                            self.bytes_relayed += len;
                        } else {
                            handle.writer.abort();
                            overflowed.push(id);
                        }
                    }
                    Action::Close(id) => {
                        if let Some(key) = self.by_id.remove(&id) {
                            self.handles.remove(&key);
                        }
                    }
                }
            }
            for id in overflowed {
                warn!(client = id, "client is not reading: outbound queue full, dropping it");
                self.session.leave(id);
            }
        }
    }

    /// `Some(Idle)` once nobody has been logged in for the idle-exit time.
    fn idle(&mut self) -> Option<Stop> {
        if self.session.live_count() > 0 {
            self.idle_since = None;
            return None;
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        let limit = self.idle_exit?;
        (since.elapsed() >= limit).then_some(Stop::Idle)
    }

    /// MSG_KILL to every joined client, queues flushed (bounded), connections closed. For the
    /// hub's `end`, its reply goes out after the performers' queues are flushed.
    async fn finish(mut self, stop: Stop) -> Exit {
        let (exit, requester) = match stop {
            Stop::Signal => {
                self.session.shutdown();
                (Exit::Shutdown, None)
            }
            Stop::Idle => {
                self.session.shutdown();
                (Exit::Idle, None)
            }
            Stop::End { key, reason } => {
                self.session.end(&reason);
                (Exit::Ended, self.controls.remove(&key))
            }
        };
        self.execute();
        self.publish();
        self.handles.clear();
        self.controls.clear();
        self.readers.abort_all();
        let keep = requester.as_ref().map(control::Control::writer_id);
        let bound = if requester.is_some() { END_FLUSH } else { SHUTDOWN_FLUSH };
        if !self.drain_writers(bound, keep).await {
            warn!("some clients did not take their last messages in time");
        }
        if let Some(requester) = requester {
            requester.reply(crate::control::wire::ok(serde_json::json!({})));
            drop(requester);
            self.drain_writers(END_FLUSH, None).await;
        }
        exit
    }

    /// Waits up to `bound` for every writer but `keep` to finish; false on timeout.
    async fn drain_writers(&mut self, bound: Duration, keep: Option<tokio::task::Id>) -> bool {
        let writers = &mut self.writers;
        let wait = async {
            let mut kept = keep.is_some();
            while writers.len() > usize::from(kept) {
                let id = match writers.join_next_with_id().await {
                    Some(Ok((id, ()))) => id,
                    Some(Err(e)) => e.id(),
                    None => break,
                };
                if Some(id) == keep {
                    kept = false;
                }
            }
        };
        tokio::time::timeout(bound, wait).await.is_ok()
    }
}
