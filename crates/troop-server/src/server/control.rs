//! The server side of the hub's control channel (see `CONTROL.md`): a control connection's
//! reader (the secret line, then request frames), and what the session task does with its
//! requests: arm, verify, snapshot, subscribe (events fanned out to bounded queues), the
//! owner's moderation (remove, lock) and end.
//!
//! Nothing here can hold up performers: replies and events go through the connection's own
//! bounded queue and writer; a control connection that does not keep up is closed.

use super::conn::Outbox;
use super::{ConnKey, Event, Loop, Stop};
use crate::control::wire;
use crate::control::{Counters, Event as Numbered, Request, Snapshot, MAGIC, MAX_LINE, MAX_REQUEST};
use bytes::{Bytes, BytesMut};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

/// What a control connection's reader tells the session task.
pub(super) enum ControlEvent {
    /// The secret matched: the connection's queue, writer and kill switch.
    Open { key: ConnKey, outbox: Outbox, writer: AbortHandle, kill: oneshot::Sender<()> },
    /// One request (or why its JSON is not one); `done` is dropped once the reply is queued.
    Request { key: ConnKey, request: Result<Request, String>, done: oneshot::Sender<()> },
    /// The connection ended (EOF, or why its input was refused).
    Closed(ConnKey, Option<String>),
}

/// A control connection as the session task sees it.
pub(super) struct Control {
    outbox: Outbox,
    writer: AbortHandle,
    subscribed: bool,
    /// Dropping it stops the reader.
    _kill: oneshot::Sender<()>,
}

impl Control {
    pub(super) fn writer_id(&self) -> tokio::task::Id {
        self.writer.id()
    }

    /// Queues one frame; false if the queue is full or gone.
    pub(super) fn reply(&self, frame: Bytes) -> bool {
        self.outbox.push(frame)
    }
}

/// A connection that began with the control line's prefix, as the accept path hands it over.
pub(super) struct Conn {
    pub(super) key: ConnKey,
    pub(super) addr: SocketAddr,
    pub(super) outbox: Outbox,
    pub(super) writer: AbortHandle,
    /// The login deadline, which the whole line must meet.
    pub(super) deadline: tokio::time::Instant,
}

/// Checks the line (closing silently on a wrong or unconfigured secret), then forwards
/// requests until EOF, bad input or kill.
pub(super) async fn connection(
    conn: Conn,
    mut source: OwnedReadHalf,
    mut buf: BytesMut,
    config: super::Config,
    events: mpsc::Sender<Event>,
) {
    let secret = match tokio::time::timeout_at(conn.deadline, read_line(&mut source, &mut buf)).await {
        Ok(Ok(secret)) => secret,
        Ok(Err(reason)) => return debug!(peer = %conn.addr, %reason, "bad control line; closing"),
        Err(_) => return debug!(peer = %conn.addr, "no control line in time; closing"),
    };
    if !config.control.as_ref().is_some_and(|s| s.matches(&secret)) {
        return info!(peer = %conn.addr, "control connection refused: no control secret configured, or another one");
    }
    drop(secret);
    info!(peer = %conn.addr, "control connection from the hub");
    let (key, (kill, mut killed)) = (conn.key, oneshot::channel());
    let outbox = conn.outbox.with_limits(config.control_queue.max(2), config.control_queue_bytes);
    let open = ControlEvent::Open { key, outbox, writer: conn.writer, kill };
    if events.send(Event::Control(open)).await.is_err() {
        return;
    }
    let reason = tokio::select! {
        reason = requests(&mut source, &mut buf, key, &events, config.login_timeout) => reason,
        _ = &mut killed => return,
    };
    let _ = events.send(Event::Control(ControlEvent::Closed(key, reason))).await;
}

/// Reads `TROOP-HUB-CONTROL/1 <secret>\n` (at most [`MAX_LINE`] bytes) and returns the secret;
/// what follows the line stays in `buf`.
async fn read_line(source: &mut OwnedReadHalf, buf: &mut BytesMut) -> Result<Bytes, String> {
    loop {
        if let Some(end) = buf.iter().take(MAX_LINE).position(|&b| b == b'\n') {
            let line = buf.split_to(end + 1).freeze();
            return Ok(line.slice(MAGIC.len()..end));
        }
        if buf.len() >= MAX_LINE {
            return Err(format!("control line longer than {MAX_LINE} bytes"));
        }
        match source.read_buf(buf).await {
            Ok(0) => return Err("closed in the control line".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Forwards requests one at a time (the next is read once the reply is queued); returns why
/// it stopped (None for EOF).
async fn requests(
    source: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    key: ConnKey,
    events: &mpsc::Sender<Event>,
    frame_timeout: Duration,
) -> Option<String> {
    loop {
        let body = match read_request(source, buf, frame_timeout).await {
            Ok(Some(body)) => body,
            Ok(None) => return None,
            Err(reason) => return Some(reason),
        };
        let request = match wire::object(&body) {
            Ok(map) => serde_json::from_value::<Request>(map.into()).map_err(|e| e.to_string()),
            Err(e) => return Some(e.to_string()),
        };
        let (done, replied) = oneshot::channel();
        if events.send(Event::Control(ControlEvent::Request { key, request, done })).await.is_err() {
            return None;
        }
        let _ = replied.await;
    }
}

/// One request frame body; `None` on EOF between frames. A frame, once begun, must go on
/// arriving (no gap over `frame_timeout`).
async fn read_request(
    source: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    frame_timeout: Duration,
) -> Result<Option<Bytes>, String> {
    loop {
        if let Some(body) = wire::split(buf, MAX_REQUEST).map_err(|e| e.to_string())? {
            return Ok(Some(body));
        }
        let partial = !buf.is_empty();
        let read = if partial {
            let timed = tokio::time::timeout(frame_timeout, source.read_buf(buf)).await;
            timed.map_err(|_| "request frame not completed in time".to_string())?
        } else {
            source.read_buf(buf).await
        };
        match read {
            Ok(0) if partial => return Err("closed in the middle of a frame".into()),
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The subscribe reply's body.
#[derive(Serialize)]
struct Subscribed<'a> {
    snapshot: &'a Snapshot,
}

/// Unix time in milliseconds.
fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Unix time in milliseconds of a past `Instant`.
fn unix_ms_at(then: Instant) -> u64 {
    unix_ms().saturating_sub(then.elapsed().as_millis() as u64)
}

impl Loop {
    pub(super) fn on_control(&mut self, event: ControlEvent) -> Option<Stop> {
        match event {
            ControlEvent::Open { key, outbox, writer, kill } => {
                self.controls.insert(key, Control { outbox, writer, subscribed: false, _kill: kill });
            }
            ControlEvent::Request { key, request, done } => {
                let stop = self.control_request(key, request);
                drop(done);
                return stop;
            }
            ControlEvent::Closed(key, reason) => {
                if let Some(reason) = reason {
                    info!(%reason, "control connection dropped for bad input");
                }
                self.drop_control(key, false);
            }
        }
        None
    }

    fn control_request(&mut self, key: ConnKey, request: Result<Request, String>) -> Option<Stop> {
        if self.controls.get(&key)?.subscribed {
            warn!("a control subscriber sent a request; closing it");
            self.drop_control(key, true);
            return None;
        }
        let reply = match request {
            Err(e) => wire::error(&e),
            // A server is armed for one session only: its password is never replaced, whatever
            // the request says (`once` is kept on the wire for older hubs).
            Ok(Request::Arm { .. }) if self.session.is_armed() => wire::error("already armed"),
            Ok(Request::Arm { password_md5, name, idle_exit_ms, .. }) => self.arm(&password_md5, name, idle_exit_ms),
            Ok(Request::Verify { password_md5 }) => {
                wire::ok(serde_json::json!({ "match": self.session.verify(&password_md5) }))
            }
            Ok(Request::Snapshot) => wire::ok(self.snapshot()),
            Ok(Request::Subscribe) => self.subscribe(key),
            Ok(Request::End { reason }) => return Some(Stop::End { key, reason }),
            Ok(Request::Remove { name, reason }) => {
                let removed = self.session.remove(&name, &reason);
                info!(performer = %name, clients = ?removed, "performer removed by the hub");
                wire::ok(serde_json::json!({ "removed": removed }))
            }
            Ok(Request::Lock { locked }) => {
                self.session.set_locked(locked);
                info!(locked, "session locked to new performers by the hub (or unlocked)");
                wire::ok(serde_json::json!({ "locked": self.session.is_locked() }))
            }
        };
        match self.controls.get(&key) {
            Some(c) if c.reply(reply) => {
                if c.subscribed {
                    // Only now: the subscribe reply goes out at once, the events after it coalesce.
                    c.outbox.coalesce();
                }
            }
            _ => {
                warn!("a control connection is not reading its replies; closing it");
                self.drop_control(key, true);
            }
        }
        None
    }

    fn arm(&mut self, md5: &str, name: Option<Option<String>>, idle_exit_ms: Option<Option<u64>>) -> Bytes {
        if !crate::is_md5_hex(md5) {
            return wire::error("password_md5 must be 32 lowercase hex digits");
        }
        self.session.arm(md5);
        if let Some(name) = name {
            self.name = name;
        }
        if let Some(ms) = idle_exit_ms {
            self.idle_exit = ms.map(Duration::from_millis);
        }
        self.idle_since = Some(Instant::now());
        info!(name = self.name.as_deref().unwrap_or(""), idle_exit = ?self.idle_exit, "armed by the hub");
        wire::ok(serde_json::json!({}))
    }

    fn subscribe(&mut self, key: ConnKey) -> Bytes {
        if self.controls.values().filter(|c| c.subscribed).count() >= self.config.max_subscribers {
            return wire::error("too many subscribers");
        }
        // Every event so far has been published, so the snapshot and the queue join up.
        let snapshot = self.snapshot();
        if let Some(c) = self.controls.get_mut(&key) {
            c.subscribed = true;
        }
        self.session.set_observed(true);
        info!(seq = snapshot.seq, "control subscriber attached");
        wire::ok(Subscribed { snapshot: &snapshot })
    }

    fn snapshot(&self) -> Snapshot {
        let (operations, evaluations) = self.session.totals();
        Snapshot {
            armed: self.session.is_armed(),
            name: self.name.clone(),
            seq: self.session.seq(),
            document: self.session.document().to_owned(),
            performers: self.session.performers(unix_ms_at),
            counters: Counters { operations, evaluations, bytes_relayed: self.bytes_relayed },
            last_activity_ms: self.last_activity_ms,
            locked: self.session.is_locked(),
        }
    }

    /// Sends the session's new events to every subscriber; one that cannot take them is
    /// dropped (and gets nothing after the gap).
    pub(super) fn publish(&mut self) {
        let seq = self.session.seq();
        if seq == self.last_seq {
            return;
        }
        self.last_seq = seq;
        let time_ms = unix_ms();
        self.last_activity_ms = Some(time_ms);
        let mut dropped: Vec<ConnKey> = Vec::new();
        let mut frame = std::mem::take(&mut self.frame);
        for (seq, kind) in self.session.drain_events() {
            wire::encode_into(&mut frame, &Numbered { seq, time_ms, kind });
            for (&key, c) in self.controls.iter().filter(|(_, c)| c.subscribed) {
                if !dropped.contains(&key) && !c.outbox.push_slice(&frame) {
                    dropped.push(key);
                }
            }
        }
        self.frame = frame;
        for key in dropped {
            warn!("a control subscriber is not keeping up; dropping it");
            self.drop_control(key, true);
        }
    }

    /// Forgets a control connection; `abort` closes it at once instead of flushing its queue.
    pub(super) fn drop_control(&mut self, key: ConnKey, abort: bool) {
        if let Some(c) = self.controls.remove(&key) {
            if abort {
                c.writer.abort();
            }
        }
        if !self.controls.values().any(|c| c.subscribed) {
            self.session.set_observed(false);
        }
    }
}
