//! One connection's tasks: telling a Troop client from a control connection by its first
//! bytes, the Troop login and reader, and the writer that drains a bounded queue into the
//! socket. Connection slots are counted here.

use super::{control, Config, ConnKey, Event, Login};
use crate::control::MAGIC;
use crate::frame::Decoder;
use crate::message::{Body, Message};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::debug;

/// The largest login message (a PASSWORD is well under 1 KiB).
const MAX_LOGIN: usize = 4096;

/// How long a coalescing writer (a control subscriber's) lets frames pile up before a write:
/// one write per event would cost the server a system call per operation.
const COALESCE: Duration = Duration::from_millis(2);

/// A coalescing writer's buffers keep at most this much room once written (a backlog's worth
/// is given back).
const KEEP_CAPACITY: usize = 256 << 10;

/// Open connections per address, shared by the accept loop and the connection tasks.
pub(super) type Counts = Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>;

/// A connection's slot; freed when its task ends.
pub(super) struct Slot(Counts, IpAddr);

impl Slot {
    /// A slot for `ip`, unless the caps are reached.
    pub(super) fn take(counts: &Counts, ip: IpAddr, config: &Config) -> Option<Slot> {
        let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = c.values().sum();
        let here = c.get(&ip).copied().unwrap_or(0);
        if total >= config.max_connections || here >= config.max_connections_per_address {
            return None;
        }
        *c.entry(ip).or_default() += 1;
        Some(Slot(counts.clone(), ip))
    }
}

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

/// The sending side of one connection's bounded queue, counted in messages and in bytes.
#[derive(Clone)]
pub(super) struct Outbox {
    tx: mpsc::Sender<Bytes>,
    /// Bytes queued and not yet written (in the channel, in `pending`, or being written).
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    max_messages: usize,
    /// Take one message of any size into an empty queue (control replies carry documents).
    any_size_when_empty: bool,
    coalesce: Arc<Coalesce>,
}

/// A coalescing connection's frames: once [`Outbox::coalesce`] is on, frames are appended to
/// one buffer (no allocation, queue slot or wake-up per frame), and the writer is woken once
/// per batch, when the buffer stops being empty.
#[derive(Default)]
struct Coalesce {
    on: AtomicBool,
    pending: std::sync::Mutex<Pending>,
    notify: Notify,
}

/// Frames appended and not yet taken by the writer.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    frames: usize,
}

/// The writer's side of an [`Outbox`].
pub(super) struct Drain {
    queue: mpsc::Receiver<Bytes>,
    queued: Arc<AtomicUsize>,
    coalesce: Arc<Coalesce>,
}

impl Outbox {
    /// A queue of at most `max_messages` messages (and `capacity` at most, the channel's) and
    /// `max_bytes` bytes, drained by [`writer`].
    pub(super) fn new(capacity: usize, max_messages: usize, max_bytes: usize) -> (Outbox, Drain) {
        let (tx, queue) = mpsc::channel(capacity.max(2));
        let queued = Arc::new(AtomicUsize::new(0));
        let coalesce = Arc::new(Coalesce::default());
        let outbox = Outbox {
            tx,
            queued: queued.clone(),
            max_bytes,
            max_messages,
            any_size_when_empty: false,
            coalesce: coalesce.clone(),
        };
        (outbox, Drain { queue, queued, coalesce })
    }

    /// From now on frames are appended to one buffer, and the writer waits [`COALESCE`] after
    /// the first and writes everything appended by then in one go (for a subscriber, whose events
    /// need no sub-millisecond latency). What was queued before is written first.
    pub(super) fn coalesce(&self) {
        self.coalesce.on.store(true, Ordering::Relaxed);
        // An empty frame wakes a writer waiting on the channel, so it starts coalescing.
        let _ = self.tx.try_send(Bytes::new());
    }

    /// The same queue with other bounds (a control connection's).
    pub(super) fn with_limits(mut self, max_messages: usize, max_bytes: usize) -> Outbox {
        self.max_messages = max_messages;
        self.max_bytes = max_bytes;
        self.any_size_when_empty = true;
        self
    }

    /// Queues `b`; false if the queue is full (in messages or bytes) or the writer is gone.
    pub(super) fn push(&self, b: Bytes) -> bool {
        if self.coalesce.on.load(Ordering::Relaxed) {
            return self.push_slice(&b);
        }
        let len = b.len();
        let queued = self.queued.load(Ordering::Relaxed);
        let fits = queued + len <= self.max_bytes || (self.any_size_when_empty && queued == 0);
        let messages = self.tx.max_capacity() - self.tx.capacity();
        if !fits || messages >= self.max_messages {
            return false;
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        if self.tx.try_send(b).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Appends a copy of `frame` to a coalescing connection's buffer (see [`Outbox::push`]); the
    /// same bounds, frames counted as messages.
    pub(super) fn push_slice(&self, frame: &[u8]) -> bool {
        let len = frame.len();
        let queued = self.queued.load(Ordering::Relaxed);
        let fits = queued + len <= self.max_bytes || (self.any_size_when_empty && queued == 0);
        if !fits || self.tx.is_closed() {
            return false;
        }
        let messages = self.tx.max_capacity() - self.tx.capacity();
        let mut pending = self.coalesce.pending.lock().unwrap_or_else(|p| p.into_inner());
        if messages + pending.frames >= self.max_messages {
            return false;
        }
        let first = pending.buf.is_empty();
        pending.buf.extend_from_slice(frame);
        pending.frames += 1;
        drop(pending);
        self.queued.fetch_add(len, Ordering::Relaxed);
        if first {
            self.coalesce.notify.notify_one();
        }
        true
    }
}

/// One connection: the first bytes say whether it is a control connection; a Troop client
/// logs in, then its messages go to the session task until EOF, bad input or kill.
pub(super) async fn connection(
    key: ConnKey,
    mut source: OwnedReadHalf,
    addr: SocketAddr,
    (outbox, writer): (Outbox, AbortHandle),
    config: Config,
    events: mpsc::Sender<Event>,
) {
    // Until the login succeeds a connection may buffer only a login's worth of bytes.
    let mut decoder = Decoder::new(MAX_LOGIN);
    let deadline = Instant::now() + config.login_timeout;
    match tokio::time::timeout_at(deadline, sniff(&mut source, decoder.buffer())).await {
        Ok(Ok(true)) => {
            let buf = std::mem::take(decoder.buffer());
            let conn = control::Conn { key, addr, outbox, writer, deadline };
            return control::connection(conn, source, buf, config, events).await;
        }
        Ok(Ok(false)) => {}
        Ok(Err(reason)) => return debug!(peer = %addr, %reason, "no login; closing"),
        Err(_) => return debug!(peer = %addr, "no login in time; closing"),
    }
    let first = tokio::time::timeout_at(deadline, read_first(&mut source, &mut decoder)).await;
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
    let login = Event::Login(Box::new(Login { key, addr, password, name, version, outbox, writer, kill }));
    if events.send(login).await.is_err() {
        return;
    }
    let reason = tokio::select! {
        reason = read_loop(&mut source, &mut decoder, key, &events) => reason,
        _ = &mut killed => return,
    };
    let _ = events.send(Event::Closed(key, reason)).await;
}

/// Reads until the first bytes differ from the control line's start (false: a Troop client,
/// whose bytes stay in `buf`) or match all of it (true).
async fn sniff(source: &mut OwnedReadHalf, buf: &mut BytesMut) -> Result<bool, String> {
    loop {
        let n = buf.len().min(MAGIC.len());
        if buf[..n] != MAGIC[..n] {
            return Ok(false);
        }
        if n == MAGIC.len() {
            return Ok(true);
        }
        match source.read_buf(buf).await {
            Ok(0) => return Err("closed before logging in".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The writer: drains the queue into the socket, many messages per write when they pile up;
/// once the connection coalesces, the channel's last messages and then the appended frames.
pub(super) async fn writer(mut sink: OwnedWriteHalf, drain: Drain) {
    let Drain { mut queue, queued, coalesce } = drain;
    let mut batch = Vec::with_capacity(64);
    let mut buf = BytesMut::new();
    while queue.recv_many(&mut batch, 64).await > 0 {
        if write_batch(&mut sink, &mut batch, &mut buf, &queued).await.is_err() {
            return;
        }
        if coalesce.on.load(Ordering::Relaxed) {
            return coalescing(sink, queue, queued, &coalesce).await;
        }
    }
    let _ = sink.shutdown().await;
}

/// Writes `batch` (one write) and forgets it.
async fn write_batch(
    sink: &mut OwnedWriteHalf,
    batch: &mut Vec<Bytes>,
    buf: &mut BytesMut,
    queued: &AtomicUsize,
) -> std::io::Result<()> {
    let written: usize = batch.iter().map(Bytes::len).sum();
    let result = match batch.as_slice() {
        [] => Ok(()),
        _ if written == 0 => Ok(()),
        [one] => sink.write_all(one).await,
        many => {
            buf.clear();
            for b in many {
                buf.extend_from_slice(b);
            }
            sink.write_all(buf).await
        }
    };
    queued.fetch_sub(written, Ordering::Relaxed);
    batch.clear();
    result
}

/// A coalescing writer: woken when the buffer stops being empty, it waits [`COALESCE`], then
/// writes what the channel still held (queued before coalescing began) and everything appended
/// by then, in one write. Ends, after a last flush, once every [`Outbox`] is gone.
async fn coalescing(
    mut sink: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Bytes>,
    queued: Arc<AtomicUsize>,
    c: &Coalesce,
) {
    let mut batch = Vec::new();
    let mut buf = BytesMut::new();
    let mut spare = Vec::new();
    let mut open = true;
    while open {
        tokio::select! {
            () = c.notify.notified() => tokio::time::sleep(COALESCE).await,
            n = queue.recv_many(&mut batch, 64) => open = n > 0,
        }
        while let Ok(b) = queue.try_recv() {
            batch.push(b);
        }
        if write_batch(&mut sink, &mut batch, &mut buf, &queued).await.is_err() {
            return;
        }
        {
            let mut pending = c.pending.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut pending.buf, &mut spare);
            pending.frames = 0;
        }
        if spare.is_empty() {
            continue;
        }
        let result = sink.write_all(&spare).await;
        queued.fetch_sub(spare.len(), Ordering::Relaxed);
        spare.clear();
        if spare.capacity() > KEEP_CAPACITY {
            spare = Vec::new();
        }
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
