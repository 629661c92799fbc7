//! The hub's side of the control channel: [`ControlClient`] for requests (each bounded by the
//! client's timeout) and [`EventStream`] for a subscription.

use super::types::{Event, Request, Snapshot};
use super::wire::{self, WireError};
use super::{MAGIC, MAX_LINE};
use bytes::BytesMut;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest frame the client accepts from the server (a snapshot carries the document).
pub const MAX_SERVER_FRAME: usize = 256 << 20;

/// A new connection's read buffer. A quiet subscription (most of a hub's) never needs more,
/// so the hub holds 4 KiB per idle session instead of a busy stream's 64.
const FIRST_BUFFER: usize = 4 << 10;

/// A buffer with less room than this grows before the next read: doubling, up to
/// [`READ_CHUNK`] more at a time, so a busy stream is read in few system calls.
const MIN_ROOM: usize = 1 << 10;

/// The most a read buffer grows by at once.
const READ_CHUNK: usize = 64 << 10;

/// What went wrong on the control channel. Never contains the secret.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The server closed the connection: a wrong (or no configured) secret, a subscriber that
    /// fell behind, or the session ended.
    #[error("the server closed the control connection")]
    Closed,
    #[error("the server refused the request: {0}")]
    Refused(String),
    #[error("bad data from the server: {0}")]
    Protocol(String),
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
}

impl From<WireError> for ControlError {
    fn from(e: WireError) -> Self {
        ControlError::Protocol(e.to_string())
    }
}

/// A control connection. One request at a time; every call gives up after `timeout`.
#[derive(Debug)]
pub struct ControlClient {
    stream: TcpStream,
    buf: BytesMut,
    timeout: Duration,
}

impl ControlClient {
    /// Connects and sends the control line. A wrong secret is not reported here (the server
    /// answers nothing): the first request then fails with [`ControlError::Closed`].
    pub async fn connect(addr: SocketAddr, secret: &str, timeout: Duration) -> Result<ControlClient, ControlError> {
        if secret.contains('\n') || MAGIC.len() + secret.len() + 1 > MAX_LINE {
            return Err(ControlError::Invalid("the secret must fit one line of at most 256 bytes"));
        }
        let mut line = Vec::with_capacity(MAX_LINE);
        line.extend_from_slice(MAGIC);
        line.extend_from_slice(secret.as_bytes());
        line.push(b'\n');
        let connect = async {
            let mut stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            stream.write_all(&line).await?;
            Ok::<_, std::io::Error>(stream)
        };
        let stream =
            tokio::time::timeout(timeout, connect).await.map_err(|_| ControlError::Timeout("the connection"))??;
        Ok(ControlClient { stream, buf: BytesMut::with_capacity(FIRST_BUFFER), timeout })
    }

    /// Sets the session's password md5 (and display name, and idle-exit time counted from
    /// now; `idle_exit: None` means never). A locked server accepts logins from then on.
    pub async fn arm(
        &mut self,
        md5: &str,
        name: Option<&str>,
        idle_exit: Option<Duration>,
    ) -> Result<(), ControlError> {
        self.call(&arm_request(md5, name, idle_exit, false)).await.map(drop)
    }

    /// [`ControlClient::arm`], saying on the wire that it must be the first (servers refuse
    /// every arm once armed, so a server is never armed for two sessions).
    pub async fn arm_once(
        &mut self,
        md5: &str,
        name: Option<&str>,
        idle_exit: Option<Duration>,
    ) -> Result<(), ControlError> {
        self.call(&arm_request(md5, name, idle_exit, true)).await.map(drop)
    }

    /// Whether `md5` is the session's password md5 (compared in constant time by the server).
    pub async fn verify(&mut self, md5: &str) -> Result<bool, ControlError> {
        let reply = self.call(&Request::Verify { password_md5: md5.into() }).await?;
        reply.get("match").and_then(Value::as_bool).ok_or(ControlError::Protocol("verify reply without match".into()))
    }

    /// The session now.
    pub async fn snapshot(&mut self) -> Result<Snapshot, ControlError> {
        let reply = self.call(&Request::Snapshot).await?;
        parse(Value::Object(reply))
    }

    /// Ends the session: every performer gets MSG_KILL with `reason`, then the server exits.
    /// Returns once the server has flushed the performers (at most about a second).
    pub async fn end(&mut self, reason: &str) -> Result<(), ControlError> {
        self.call(&Request::End { reason: reason.into() }).await.map(drop)
    }

    /// Removes every joined performer called `name` (each gets MSG_KILL with `reason`);
    /// returns their client ids, none when nobody by that name is joined.
    pub async fn remove(&mut self, name: &str, reason: &str) -> Result<Vec<i64>, ControlError> {
        let reply = self.call(&Request::Remove { name: name.into(), reason: reason.into() }).await?;
        let ids = reply.get("removed").cloned().unwrap_or(Value::Null);
        parse(ids)
    }

    /// Locks the session to new performers, or unlocks it; returns whether it is locked now.
    pub async fn lock(&mut self, locked: bool) -> Result<bool, ControlError> {
        let reply = self.call(&Request::Lock { locked }).await?;
        reply.get("locked").and_then(Value::as_bool).ok_or(ControlError::Protocol("lock reply without locked".into()))
    }

    /// Subscribes: the snapshot the events start from, and the events after it.
    pub async fn subscribe(mut self) -> Result<(Snapshot, EventStream), ControlError> {
        let mut reply = self.call(&Request::Subscribe).await?;
        let snapshot = parse(reply.remove("snapshot").unwrap_or(Value::Null))?;
        Ok((snapshot, EventStream { stream: self.stream, buf: self.buf }))
    }

    /// Sends one request and returns the reply's fields, or `Refused` for `{"ok": false}`.
    async fn call(&mut self, request: &Request) -> Result<Map<String, Value>, ControlError> {
        let frame = wire::encode(request);
        let exchange = async {
            self.stream.write_all(&frame).await.map_err(closed_or_io)?;
            read_frame(&mut self.stream, &mut self.buf).await?.ok_or(ControlError::Closed)
        };
        let body =
            tokio::time::timeout(self.timeout, exchange).await.map_err(|_| ControlError::Timeout("a reply"))??;
        let mut reply = wire::object(&body)?;
        match reply.remove("ok") {
            Some(Value::Bool(true)) => Ok(reply),
            Some(Value::Bool(false)) => {
                let error = reply.get("error").and_then(Value::as_str).unwrap_or("no reason given");
                Err(ControlError::Refused(error.to_string()))
            }
            _ => Err(ControlError::Protocol("reply without ok".into())),
        }
    }
}

/// A connection the server closed (reset, broken pipe) is `Closed`; other errors are I/O.
fn closed_or_io(e: std::io::Error) -> ControlError {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    match e.kind() {
        BrokenPipe | ConnectionReset | ConnectionAborted => ControlError::Closed,
        _ => ControlError::Io(e),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(value: Value) -> Result<T, ControlError> {
    serde_json::from_value(value).map_err(|e| ControlError::Protocol(e.to_string()))
}

/// Reads one frame body; `None` if the server closed at a frame boundary. Cancel-safe: what
/// was read stays in `buf`.
async fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Option<bytes::Bytes>, ControlError> {
    loop {
        if let Some(body) = wire::split(buf, MAX_SERVER_FRAME)? {
            return Ok(Some(body));
        }
        if buf.capacity() - buf.len() < MIN_ROOM {
            buf.reserve(buf.capacity().clamp(FIRST_BUFFER, READ_CHUNK));
        }
        match stream.read_buf(buf).await.map_err(closed_or_io)? {
            0 if buf.is_empty() => return Ok(None),
            0 => return Err(ControlError::Closed),
            _ => {}
        }
    }
}

/// The events of a subscription, in order.
#[derive(Debug)]
pub struct EventStream {
    stream: TcpStream,
    buf: BytesMut,
}

impl EventStream {
    /// The next event; `Ok(None)` once the server has closed the stream (the session ended,
    /// or this subscriber fell behind and was dropped), `Err(Closed)` if that cut a frame. Waits as long as the session is quiet;
    /// cancel-safe, so it can sit in a `select!` with the caller's own deadline.
    pub async fn next(&mut self) -> Result<Option<Event>, ControlError> {
        match read_frame(&mut self.stream, &mut self.buf).await? {
            Some(body) => serde_json::from_slice(&body).map(Some).map_err(|e| ControlError::Protocol(e.to_string())),
            None => Ok(None),
        }
    }

    /// [`EventStream::next`], failing with `Timeout` after `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Result<Option<Event>, ControlError> {
        tokio::time::timeout(timeout, self.next()).await.map_err(|_| ControlError::Timeout("an event"))?
    }
}

fn arm_request(md5: &str, name: Option<&str>, idle_exit: Option<Duration>, once: bool) -> Request {
    let idle_exit_ms = idle_exit.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Request::Arm {
        password_md5: md5.into(),
        name: name.map(|n| Some(n.to_string())),
        idle_exit_ms: Some(idle_exit_ms),
        once,
    }
}
