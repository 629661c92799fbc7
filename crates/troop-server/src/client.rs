//! A Troop 0.10.3 client: login, join, the acknowledgement barrier, and client-side OT
//! (upstream `src/ot/client.py`: synchronized / awaiting confirm / awaiting with buffer).
//!
//! Used by the tests, the benchmarks and the hub's tests to act exactly as a Troop client
//! does on the wire. Every wait takes a deadline; nothing here sleeps and hopes.

use crate::frame::{Decoder, FrameError};
use crate::message::{Body, Message};
use crate::ot::{Operation, OtError};
use crate::session::{ClientId, VERSION};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};
use tokio::time::Instant;

/// What went wrong talking to a Troop server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("login refused with code {0}")]
    Refused(i64),
    #[error("unexpected login reply {0:?}")]
    BadReply(String),
    #[error("the server closed the connection")]
    Closed,
    #[error("bad data from the server: {0}")]
    Frame(#[from] FrameError),
    #[error("OT state broke: {0}")]
    Ot(#[from] OtError),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

/// Client-side OT state.
#[derive(Debug, Clone)]
enum OtState {
    Synchronized,
    AwaitingConfirm(Operation),
    AwaitingWithBuffer(Operation, Operation),
}

/// Logs in and returns the stream and the id; `Refused(code)` for a negative reply.
pub async fn login(addr: SocketAddr, name: &str, password: &str) -> Result<(TcpStream, ClientId), ClientError> {
    login_with_version(addr, name, password, VERSION).await
}

/// [`login`] presenting another client version.
pub async fn login_with_version(
    addr: SocketAddr,
    name: &str,
    password: &str,
    version: &str,
) -> Result<(TcpStream, ClientId), ClientError> {
    login_from(None, addr, name, password, version).await
}

/// [`login_with_version`] from a chosen local address (to test what the server sees).
pub async fn login_from(
    local: Option<std::net::IpAddr>,
    addr: SocketAddr,
    name: &str,
    password: &str,
    version: &str,
) -> Result<(TcpStream, ClientId), ClientError> {
    let mut stream = match local {
        None => TcpStream::connect(addr).await?,
        Some(ip) => {
            let socket = if ip.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(addr).await?
        }
    };
    stream.set_nodelay(true)?;
    let hello = Message::new(
        -1,
        Body::Password { password: crate::md5_hex(password), name: name.into(), version: version.into() },
    );
    stream.write_all(hello.encode().as_bytes()).await?;
    let mut reply = [0u8; 4];
    match stream.read_exact(&mut reply).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ClientError::Closed),
        Err(e) => return Err(e.into()),
    }
    let text = String::from_utf8_lossy(&reply).into_owned();
    let code: i64 = text.parse().map_err(|_| ClientError::BadReply(text.clone()))?;
    if code < 0 {
        return Err(ClientError::Refused(code));
    }
    Ok((stream, code))
}

/// The sending side, shared with the reader task (which answers barrier requests itself).
struct Writer {
    half: OwnedWriteHalf,
    id: ClientId,
    next_msg_id: i64,
}

impl Writer {
    async fn send(&mut self, body: Body) -> Result<(), ClientError> {
        let msg = Message { msg_id: self.next_msg_id, src_id: self.id, body };
        self.next_msg_id += 1;
        self.half.write_all(msg.encode().as_bytes()).await?;
        Ok(())
    }
}

/// A joined Troop client. A background task reads the socket all the time, as Troop's own
/// client thread does, and acknowledges join barriers at once; everything it reads is handed
/// to [`TroopClient::recv`], which applies it to the document.
pub struct TroopClient {
    pub id: ClientId,
    pub name: String,
    writer: Arc<Mutex<Writer>>,
    inbox: mpsc::UnboundedReceiver<Result<Message, ClientError>>,
    reader: tokio::task::JoinHandle<()>,
    document: String,
    revision: i64,
    state: OtState,
    peers: std::collections::BTreeMap<ClientId, (String, String)>,
}

impl Drop for TroopClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Reads and decodes the socket; answers REQUEST_ACK 1 and KEEP_ALIVE; forwards everything.
async fn read_task(
    mut half: OwnedReadHalf,
    writer: Arc<Mutex<Writer>>,
    inbox: mpsc::UnboundedSender<Result<Message, ClientError>>,
) {
    let mut decoder = Decoder::new(64 << 20);
    loop {
        loop {
            match decoder.next_message() {
                Ok(Some(msg)) => {
                    let answer = match msg.body {
                        Body::RequestAck { flag: 1, .. } => Some(Body::ConnectAck { reply: json!(0) }),
                        Body::KeepAlive => Some(Body::KeepAlive),
                        _ => None,
                    };
                    if let Some(body) = answer {
                        if let Err(e) = writer.lock().await.send(body).await {
                            let _ = inbox.send(Err(e));
                            return;
                        }
                    }
                    if inbox.send(Ok(msg)).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = inbox.send(Err(e.into()));
                    return;
                }
            }
        }
        match half.read_buf(decoder.buffer()).await {
            Ok(0) => {
                let _ = inbox.send(Err(ClientError::Closed));
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = inbox.send(Err(e.into()));
                return;
            }
        }
    }
}

impl TroopClient {
    /// Logs in, sends CONNECT and waits (up to `timeout`) until the join barrier is down.
    pub async fn join(addr: SocketAddr, name: &str, password: &str, timeout: Duration) -> Result<Self, ClientError> {
        Self::join_from(None, addr, name, password, timeout).await
    }

    /// [`TroopClient::join`] from a chosen local address.
    pub async fn join_from(
        local: Option<std::net::IpAddr>,
        addr: SocketAddr,
        name: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let deadline = Instant::now() + timeout;
        let (stream, id) = tokio::time::timeout_at(deadline, login_from(local, addr, name, password, VERSION))
            .await
            .map_err(|_| ClientError::Timeout("login"))??;
        let (read_half, write_half) = stream.into_split();
        let writer = Arc::new(Mutex::new(Writer { half: write_half, id, next_msg_id: 0 }));
        let (tx, inbox) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_task(read_half, writer.clone(), tx));
        let mut client = TroopClient {
            id,
            name: name.into(),
            writer,
            inbox,
            reader,
            document: String::new(),
            revision: 0,
            state: OtState::Synchronized,
            peers: Default::default(),
        };
        let connect = Body::Connect {
            name: name.into(),
            hostname: addr.ip().to_string(),
            port: i64::from(addr.port()),
            dummy: 1,
        };
        client.send(connect).await?;
        let mut reset = false;
        loop {
            let msg = client.recv_until(deadline).await?;
            match msg.body {
                Body::Reset { .. } => reset = true,
                Body::RequestAck { flag: 0, .. } if reset => return Ok(client),
                _ => {}
            }
        }
    }

    /// The document as this client sees it.
    pub fn document(&self) -> &str {
        &self.document
    }

    /// Operations applied since the last RESET (what the next operation carries).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Peers the server announced (MSG_CONNECT): id -> (name, address the server saw).
    pub fn peers(&self) -> &std::collections::BTreeMap<ClientId, (String, String)> {
        &self.peers
    }

    /// True when no own operation waits for the server's acknowledgement.
    pub fn is_synchronized(&self) -> bool {
        matches!(self.state, OtState::Synchronized)
    }

    /// Sends one message with this client's id and the next msg_id; returns that msg_id.
    pub async fn send(&mut self, body: Body) -> Result<i64, ClientError> {
        let mut w = self.writer.lock().await;
        let msg_id = w.next_msg_id;
        w.send(body).await?;
        Ok(msg_id)
    }

    /// Writes raw bytes (for tests of bad input).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.writer.lock().await.half.write_all(bytes).await?;
        Ok(())
    }

    /// A local edit: applied to the document at once, sent when the OT state allows.
    /// Returns the msg_id it went out with, or `None` if it was buffered behind an
    /// unacknowledged operation.
    pub async fn edit(&mut self, op: Operation) -> Result<Option<i64>, ClientError> {
        self.document = op.apply(&self.document)?;
        let mut sent = None;
        self.state = match std::mem::replace(&mut self.state, OtState::Synchronized) {
            OtState::Synchronized => {
                sent = Some(self.send_operation(op.clone()).await?);
                OtState::AwaitingConfirm(op)
            }
            OtState::AwaitingConfirm(outstanding) => OtState::AwaitingWithBuffer(outstanding, op),
            OtState::AwaitingWithBuffer(outstanding, buffer) => {
                OtState::AwaitingWithBuffer(outstanding, Operation::compose(&buffer, &op)?)
            }
        };
        Ok(sent)
    }

    /// Inserts `text` at character `pos`.
    pub async fn insert(&mut self, pos: u64, text: &str) -> Result<Option<i64>, ClientError> {
        let len = self.document.chars().count() as u64;
        let mut op = Operation::new();
        op.retain(pos.min(len)).insert(text).retain(len - pos.min(len));
        self.edit(op).await
    }

    /// Deletes `n` characters at character `pos`.
    pub async fn delete(&mut self, pos: u64, n: u64) -> Result<Option<i64>, ClientError> {
        let len = self.document.chars().count() as u64;
        let pos = pos.min(len);
        let n = n.min(len - pos);
        let mut op = Operation::new();
        op.retain(pos).delete(n).retain(len - pos - n);
        self.edit(op).await
    }

    async fn send_operation(&mut self, op: Operation) -> Result<i64, ClientError> {
        let revision = self.revision;
        self.send(Body::Operation { operation: op, revision }).await
    }

    /// The next message, after the client's own bookkeeping: barrier requests acknowledged,
    /// RESET adopted, operations transformed and applied.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Message, ClientError> {
        self.recv_until(Instant::now() + timeout).await
    }

    async fn recv_until(&mut self, deadline: Instant) -> Result<Message, ClientError> {
        let msg = tokio::time::timeout_at(deadline, self.inbox.recv())
            .await
            .map_err(|_| ClientError::Timeout("a message"))?
            .unwrap_or(Err(ClientError::Closed))?;
        self.handle(&msg).await?;
        Ok(msg)
    }

    /// A message that has already arrived, if any (never waits).
    pub async fn try_recv(&mut self) -> Result<Option<Message>, ClientError> {
        match self.inbox.try_recv() {
            Ok(msg) => {
                let msg = msg?;
                self.handle(&msg).await?;
                Ok(Some(msg))
            }
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(ClientError::Closed),
        }
    }

    async fn handle(&mut self, msg: &Message) -> Result<(), ClientError> {
        match &msg.body {
            Body::Connect { name, hostname, .. } => {
                self.peers.insert(msg.src_id, (name.clone(), hostname.clone()));
            }
            Body::Reset { document, .. } => {
                self.document = document.clone();
                self.revision = 0;
                self.state = OtState::Synchronized;
            }
            Body::Operation { operation, .. } if msg.src_id == self.id => {
                self.revision += 1;
                self.state = match std::mem::replace(&mut self.state, OtState::Synchronized) {
                    OtState::AwaitingWithBuffer(_, buffer) => {
                        self.send_operation(buffer.clone()).await?;
                        OtState::AwaitingConfirm(buffer)
                    }
                    _ => OtState::Synchronized,
                };
            }
            Body::Operation { operation, .. } => {
                self.revision += 1;
                let (state, apply) = match std::mem::replace(&mut self.state, OtState::Synchronized) {
                    OtState::Synchronized => (OtState::Synchronized, operation.clone()),
                    OtState::AwaitingConfirm(outstanding) => {
                        let (outstanding, op) = Operation::transform(&outstanding, operation)?;
                        (OtState::AwaitingConfirm(outstanding), op)
                    }
                    OtState::AwaitingWithBuffer(outstanding, buffer) => {
                        let (outstanding, op) = Operation::transform(&outstanding, operation)?;
                        let (buffer, op) = Operation::transform(&buffer, &op)?;
                        (OtState::AwaitingWithBuffer(outstanding, buffer), op)
                    }
                };
                self.state = state;
                self.document = apply.apply(&self.document)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Receives until `done(self, message)` holds, or fails at the deadline.
    pub async fn recv_until_match(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Self, &Message) -> bool,
    ) -> Result<Message, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let msg = self.recv_until(deadline).await?;
            if done(self, &msg) {
                return Ok(msg);
            }
        }
    }

    /// Receives until the server closes the connection (Ok) or the deadline passes.
    pub async fn expect_closed(&mut self, timeout: Duration) -> Result<Vec<Message>, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            match self.recv_until(deadline).await {
                Ok(m) => seen.push(m),
                Err(ClientError::Closed) => return Ok(seen),
                Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(seen),
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self.writer.lock().await.half.shutdown().await;
        self.reader.abort();
    }
}
