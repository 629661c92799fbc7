//! The state of one Troop session: logins, peers, the document, the operation history and the
//! join barrier. Pure logic, no I/O: every method records what should be sent or closed as
//! [`Action`]s, which the network loop (`server/`) carries out in order. The order of those
//! actions is what Troop clients see, and it follows upstream 0.10.3 (see the conformance
//! transcripts) except where upstream breaks: those places say so. What the hub's control
//! channel sees of it (events, performers, arming) is in `observe.rs`.

use crate::control::EventKind;
use crate::message::{Body, Message, KILL_TEXT};
use crate::ot::{Operation, OtError};
use bytes::Bytes;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

mod join;
mod moderate;
mod observe;
pub use observe::block_text;

/// A client id: `0..62`, one per peer character.
pub type ClientId = i64;

/// The characters that tag each peer's text, indexed by client id.
pub const PEER_CHARS: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// The version string a new client must present.
pub const VERSION: &str = "0.10.3";

/// Refused logins, with the 4-byte reply upstream sends for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("wrong password")]
    WrongPassword,
    #[error("no client id left")]
    TooManyUsers,
    #[error("name already connected from this address")]
    NameTaken,
    #[error("client version does not match")]
    VersionMismatch,
    /// The owner locked the session to new performers; Troop's client shows its "maximum
    /// number of users" sentence for it, the closest it has.
    #[error("the session is locked to new performers")]
    Locked,
}

impl LoginError {
    pub fn code(self) -> i64 {
        match self {
            LoginError::WrongPassword => -1,
            LoginError::TooManyUsers | LoginError::Locked => -2,
            LoginError::NameTaken => -3,
            LoginError::VersionMismatch => -4,
        }
    }
}

/// The 4 ASCII bytes that answer a login: `%04d` of the id or error code.
pub fn login_reply(code: i64) -> Bytes {
    Bytes::from(format!("{code:04}"))
}

/// What the network loop must do, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Queue these bytes to this client.
    Send(ClientId, Bytes),
    /// Flush what is queued to this client, then close its connection.
    Close(ClientId),
}

/// Limits beyond upstream's (which has none).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Client ids handed out over the session's life (upstream: 62).
    pub max_clients: usize,
    /// Largest document, in bytes of UTF-8.
    pub max_document: usize,
    /// Operations kept for transforming late operations...
    pub history: usize,
    /// ... and at most this many bytes of them.
    pub history_bytes: usize,
    /// How long a join barrier waits for acknowledgements before dropping the silent.
    pub barrier_timeout: Duration,
    /// Drop joined clients silent for this long (the `--keepalive` behaviour).
    pub keepalive_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: PEER_CHARS.len(),
            max_document: 4 << 20,
            history: 8192,
            history_bytes: 16 << 20,
            barrier_timeout: Duration::from_secs(10),
            keepalive_timeout: None,
        }
    }
}

/// A logged-in connection.
#[derive(Debug)]
struct Conn {
    ip: IpAddr,
    port: u16,
    last_seen: Instant,
}

/// A joined peer (upstream's `Client`): kept after it leaves, for ids and locations.
#[derive(Debug)]
struct Peer {
    id: ClientId,
    name: String,
    ip: IpAddr,
    port: u16,
    dummy: i64,
    index: i64,
    connected: bool,
    /// When it joined.
    since: Instant,
}

#[derive(Debug)]
struct Barrier {
    acked: HashSet<ClientId>,
    since: Instant,
}

/// Why a client is dropped by the session (logged by the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    #[error("operation from an unknown peer id {0}")]
    UnknownPeer(ClientId),
    #[error("operation on revision {0}, outside the kept history")]
    StaleRevision(i64),
    #[error("operation does not fit the document: {0}")]
    BadOperation(OtError),
    #[error("empty operation")]
    EmptyOperation,
    #[error("document would exceed {0} bytes")]
    DocumentTooLarge(usize),
    #[error("did not acknowledge a join in time")]
    NoAck,
    #[error("silent for longer than the keepalive timeout")]
    KeepaliveTimeout,
    #[error("joined as {0:?}, a name the owner's lock does not admit")]
    LockedOut(String),
}

/// One Troop session.
#[derive(Debug)]
pub struct Session {
    /// `None` while locked: every login is refused until [`Session::arm`].
    password_md5: Option<String>,
    limits: Limits,
    issued: usize,
    live: HashMap<ClientId, Conn>,
    peers: Vec<Peer>,
    document: String,
    document_chars: u64,
    tags: Vec<u8>,
    history: VecDeque<Operation>,
    /// Revision of `history[0]`.
    base: i64,
    /// Approximate memory held by `history`.
    history_size: usize,
    barrier: Option<Barrier>,
    constraint: Bytes,
    actions: Vec<Action>,
    dropped: Vec<(ClientId, DropReason)>,
    obs: observe::Observer,
    /// While locked by the owner: the names that may still log in (see `moderate.rs`).
    admitted: Option<HashSet<String>>,
}

impl Session {
    /// A session whose password has this md5 hex digest.
    pub fn new(password_md5: impl Into<String>, limits: Limits) -> Self {
        let mut session = Session::locked(limits);
        session.password_md5 = Some(password_md5.into());
        session
    }

    /// A session that refuses every login (as a wrong password) until it is armed.
    pub fn locked(limits: Limits) -> Self {
        let constraint = Message::new(-1, Body::Constraint { constraint_id: 0 }).encode();
        Session {
            password_md5: None,
            limits,
            issued: 0,
            live: HashMap::new(),
            peers: Vec::new(),
            document: String::new(),
            document_chars: 0,
            tags: Vec::new(),
            history: VecDeque::new(),
            base: 0,
            history_size: 0,
            barrier: None,
            constraint: Bytes::from(constraint),
            actions: Vec::new(),
            dropped: Vec::new(),
            obs: observe::Observer::default(),
            admitted: None,
        }
    }

    /// What to send and close, in order, since the last call.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Clients the session dropped since the last call, and why.
    pub fn take_dropped(&mut self) -> Vec<(ClientId, DropReason)> {
        std::mem::take(&mut self.dropped)
    }

    /// The current document.
    pub fn document(&self) -> &str {
        &self.document
    }

    /// Logged-in connections.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// Checks a login (upstream's order: password, known name, version, free id) and
    /// registers the connection under its id.
    pub fn login(
        &mut self,
        ip: IpAddr,
        port: u16,
        password_md5: &str,
        name: &str,
        version: &str,
        now: Instant,
    ) -> Result<ClientId, LoginError> {
        if !self.verify(password_md5) {
            return Err(LoginError::WrongPassword);
        }
        if !self.admits(name, None) {
            return Err(LoginError::Locked);
        }
        let known = self.peers.iter().find(|p| p.ip == ip && p.name == name);
        let id = match known {
            // Upstream only checks the peer record; a returning id already held by another
            // live connection is refused too, so two sockets never share an id.
            Some(p) if p.connected || self.live.contains_key(&p.id) => return Err(LoginError::NameTaken),
            Some(p) => p.id,
            None if version != VERSION => return Err(LoginError::VersionMismatch),
            None if self.issued >= self.limits.max_clients.min(PEER_CHARS.len()) => {
                return Err(LoginError::TooManyUsers)
            }
            None => {
                self.issued += 1;
                (self.issued - 1) as ClientId
            }
        };
        let conn = Conn { ip, port, last_seen: now };
        self.live.insert(id, conn);
        Ok(id)
    }

    /// Handles one message from the connection logged in as `from`.
    pub fn receive(&mut self, from: ClientId, msg: Message, now: Instant) {
        let Some(conn) = self.live.get_mut(&from) else {
            return;
        };
        conn.last_seen = now;
        match msg.body {
            Body::Connect { name, dummy, .. } => self.join(from, name, dummy, now),
            Body::KeepAlive => {}
            Body::ConnectAck { .. } if self.barrier.is_some() => {
                if let Some(b) = &mut self.barrier {
                    b.acked.insert(from);
                }
                self.finish_barrier_if_acked();
            }
            // Upstream discards everything else while a join is in progress.
            _ if self.barrier.is_some() => {}
            Body::Operation { .. } => self.operation(from, msg),
            Body::SetMark { index, .. } => {
                if let Some(peer) = self.peer_mut(msg.src_id) {
                    peer.index = index;
                    self.emit(|_| EventKind::Mark { id: msg.src_id, index });
                    self.relay(&msg);
                } else {
                    self.drop_client(from, DropReason::UnknownPeer(msg.src_id));
                }
            }
            Body::Constraint { constraint_id } => {
                self.emit(|_| EventKind::Constraint { id: constraint_id });
                self.constraint = Bytes::from(msg.encode());
                let bytes = self.constraint.clone();
                self.broadcast(bytes, None);
            }
            _ => {
                self.observe_relay(&msg);
                self.relay(&msg);
            }
        }
    }

    /// The connection of `id` ended (EOF, read error, bad input, overflow): everyone joined
    /// gets REMOVE. Safe to call twice.
    pub fn leave(&mut self, id: ClientId) {
        if self.live.remove(&id).is_none() {
            return;
        }
        if let Some(peer) = self.peer_mut(id).filter(|p| p.connected) {
            peer.connected = false;
            self.emit(|_| EventKind::Leave { id });
        }
        self.actions.push(Action::Close(id));
        let remove = Bytes::from(Message::new(id, Body::Remove).encode());
        self.broadcast(remove, None);
        if self.barrier.is_some() {
            self.finish_barrier_if_acked();
        }
    }

    /// Drops a client for misbehaving; the reason is kept for the log.
    pub fn drop_client(&mut self, id: ClientId, reason: DropReason) {
        if self.live.contains_key(&id) {
            self.dropped.push((id, reason));
            self.leave(id);
        }
    }

    /// Upstream's shutdown: for each joined client in order, KILL to it, then REMOVE with its
    /// id to the others still connected. Then every connection is closed.
    pub fn shutdown(&mut self) {
        self.kill_all(KILL_TEXT);
    }

    /// [`Session::shutdown`] with another MSG_KILL text (the hub ending the session).
    pub fn end(&mut self, reason: &str) {
        self.kill_all(reason);
    }

    fn kill_all(&mut self, text: &str) {
        let kill = Bytes::from(Message::new(-1, Body::Kill { string: text.into() }).encode());
        let ids: Vec<ClientId> = self.peers.iter().filter(|p| p.connected).map(|p| p.id).collect();
        for id in ids {
            self.actions.push(Action::Send(id, kill.clone()));
            self.leave(id);
        }
        let mut rest: Vec<ClientId> = self.live.keys().copied().collect();
        rest.sort_unstable();
        for id in rest {
            self.live.remove(&id);
            self.actions.push(Action::Close(id));
        }
    }

    /// Time-driven duties: a join barrier that waited too long, silent clients.
    pub fn tick(&mut self, now: Instant) {
        if let Some(b) = &self.barrier {
            if now.duration_since(b.since) >= self.limits.barrier_timeout {
                let silent: Vec<ClientId> = self.connected_ids().filter(|id| !b.acked.contains(id)).collect();
                for id in silent {
                    self.drop_client(id, DropReason::NoAck);
                }
            }
        }
        if let Some(timeout) = self.limits.keepalive_timeout {
            let silent: Vec<ClientId> = self
                .connected_ids()
                .filter(|id| self.live.get(id).is_some_and(|c| now.duration_since(c.last_seen) >= timeout))
                .collect();
            for id in silent {
                self.drop_client(id, DropReason::KeepaliveTimeout);
            }
        }
    }

    /// Sends a server KEEP_ALIVE to every joined client (with `--keepalive`, every second).
    pub fn ping(&mut self) {
        let ping = Bytes::from(Message::new(-1, Body::KeepAlive).encode());
        self.broadcast(ping, None);
    }

    fn connected_ids(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.peers.iter().filter(|p| p.connected).map(|p| p.id)
    }

    fn peer_mut(&mut self, id: ClientId) -> Option<&mut Peer> {
        self.peers.iter_mut().find(|p| p.id == id)
    }

    /// Sends `bytes` to every joined client in registration order, except `skip`.
    fn broadcast(&mut self, bytes: Bytes, skip: Option<ClientId>) {
        for peer in self.peers.iter().filter(|p| p.connected && Some(p.id) != skip) {
            self.actions.push(Action::Send(peer.id, bytes.clone()));
        }
    }

    /// Relays a client message: to everyone, but not back to its sender (by `src_id`) when
    /// it has a `reply` field that is not 1.
    fn relay(&mut self, msg: &Message) {
        let skip = match msg.reply_is_one() {
            Some(false) => Some(msg.src_id),
            _ => None,
        };
        self.broadcast(Bytes::from(msg.encode()), skip);
    }

    /// MSG_OPERATION: transform against what the sender had not seen, apply, broadcast.
    fn operation(&mut self, from: ClientId, msg: Message) {
        let Body::Operation { operation, revision } = msg.body else {
            return;
        };
        let src = msg.src_id;
        let Some(tag) =
            usize::try_from(src).ok().filter(|_| self.peers.iter().any(|p| p.id == src)).map(|k| PEER_CHARS[k])
        else {
            return self.drop_client(from, DropReason::UnknownPeer(src));
        };
        if operation.parts.is_empty() {
            return self.drop_client(from, DropReason::EmptyOperation);
        }
        let head = self.base + self.history.len() as i64;
        if revision < self.base || revision > head {
            return self.drop_client(from, DropReason::StaleRevision(revision));
        }
        let mut op = operation;
        for earlier in self.history.range((revision - self.base) as usize..) {
            match Operation::transform(&op, earlier) {
                Ok((transformed, _)) => op = transformed,
                Err(e) => return self.drop_client(from, DropReason::BadOperation(e)),
            }
        }
        let document = match op.apply_counted(&self.document, self.document_chars) {
            Ok(d) => d,
            Err(e) => return self.drop_client(from, DropReason::BadOperation(e)),
        };
        if document.len() > self.limits.max_document {
            return self.drop_client(from, DropReason::DocumentTooLarge(self.limits.max_document));
        }
        let tags = match op.apply_tags(&self.tags, tag) {
            Ok(t) => t,
            Err(e) => return self.drop_client(from, DropReason::BadOperation(e)),
        };
        self.document_chars = tags.len() as u64;
        self.document = document;
        self.tags = tags;
        if let Some(peer) = self.peer_mut(src) {
            peer.index = op.cursor_after();
        }
        self.obs.operations += 1;
        self.emit(|_| EventKind::Operation { author: src, ops: op.clone() });
        let out =
            Message { msg_id: msg.msg_id, src_id: src, body: Body::Operation { operation: op.clone(), revision } };
        self.history_size += op_size(&op);
        self.history.push_back(op);
        while self.history.len() > self.limits.history.max(1)
            || (self.history_size > self.limits.history_bytes && self.history.len() > 1)
        {
            if let Some(old) = self.history.pop_front() {
                self.history_size -= op_size(&old);
            }
            self.base += 1;
        }
        self.broadcast(Bytes::from(out.encode()), None);
    }
}

/// Approximate bytes an operation holds in the history.
fn op_size(op: &Operation) -> usize {
    op.parts
        .iter()
        .map(|p| match p {
            crate::ot::Part::Insert(s) => s.len() + 24,
            crate::ot::Part::Int(_) => 24,
        })
        .sum()
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
