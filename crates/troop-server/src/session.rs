//! The state of one Troop session: logins, peers, the document, the operation history and the
//! join barrier. Pure logic, no I/O: every method records what should be sent or closed as
//! [`Action`]s, which the network loop (`server.rs`) carries out in order. The order of those
//! actions is what Troop clients see, and it follows upstream 0.10.3 (see the conformance
//! transcripts) except where upstream breaks: those places say so.

use crate::message::{Body, Message, KILL_TEXT};
use crate::ot::{Operation, OtError};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

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
}

impl LoginError {
    pub fn code(self) -> i64 {
        match self {
            LoginError::WrongPassword => -1,
            LoginError::TooManyUsers => -2,
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
}

/// One Troop session.
#[derive(Debug)]
pub struct Session {
    password_md5: String,
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
}

impl Session {
    /// A session whose password has this md5 hex digest.
    pub fn new(password_md5: impl Into<String>, limits: Limits) -> Self {
        let constraint = Message::new(-1, Body::Constraint { constraint_id: 0 }).encode();
        Session {
            password_md5: password_md5.into(),
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
        if !constant_time_eq(password_md5.as_bytes(), self.password_md5.as_bytes()) {
            return Err(LoginError::WrongPassword);
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
                    self.relay(&msg);
                } else {
                    self.drop_client(from, DropReason::UnknownPeer(msg.src_id));
                }
            }
            Body::Constraint { .. } => {
                self.constraint = Bytes::from(msg.encode());
                let bytes = self.constraint.clone();
                self.broadcast(bytes, None);
            }
            _ => self.relay(&msg),
        }
    }

    /// The connection of `id` ended (EOF, read error, bad input, overflow): everyone joined
    /// gets REMOVE. Safe to call twice.
    pub fn leave(&mut self, id: ClientId) {
        if self.live.remove(&id).is_none() {
            return;
        }
        if let Some(peer) = self.peer_mut(id) {
            peer.connected = false;
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
        let kill = Bytes::from(Message::new(-1, Body::Kill { string: KILL_TEXT.into() }).encode());
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

    /// MSG_CONNECT: register the peer, introduce it, raise the barrier, clear the history.
    fn join(&mut self, id: ClientId, name: String, dummy: i64, now: Instant) {
        let Some(conn) = self.live.get(&id) else {
            return;
        };
        let peer = Peer { id, name, ip: conn.ip, port: conn.port, dummy, index: 0, connected: true };
        match self.peers.iter().position(|p| p.id == id) {
            Some(k) => self.peers[k] = peer,
            None => self.peers.push(peer),
        }
        let about = |p: &Peer| {
            Bytes::from(
                Message::new(
                    p.id,
                    Body::Connect {
                        name: p.name.clone(),
                        hostname: p.ip.to_string(),
                        port: i64::from(p.port),
                        dummy: p.dummy,
                    },
                )
                .encode(),
            )
        };
        let Some(newcomer) = self.peers.iter().find(|p| p.id == id).map(about) else {
            return;
        };
        for peer in self.peers.iter().filter(|p| p.connected) {
            self.actions.push(Action::Send(peer.id, newcomer.clone()));
            if peer.id != id {
                self.actions.push(Action::Send(id, about(peer)));
            }
        }
        self.barrier = Some(Barrier { acked: HashSet::new(), since: now });
        let raise = Bytes::from(Message::new(-1, Body::RequestAck { flag: 1, reply: json!(0) }).encode());
        self.broadcast(raise, None);
        self.history.clear();
        self.base = 0;
        self.history_size = 0;
    }

    /// Once every joined client has acknowledged: RESET + CONSTRAINT to each, barrier down.
    fn finish_barrier_if_acked(&mut self) {
        let Some(b) = &self.barrier else { return };
        if !self.connected_ids().all(|id| b.acked.contains(&id)) {
            return;
        }
        self.barrier = None;
        let reset = Bytes::from(
            Message::new(
                -1,
                Body::Reset {
                    document: self.document.clone(),
                    peer_tag_loc: self.tag_ranges(),
                    peer_loc: self.locations(),
                },
            )
            .encode(),
        );
        let constraint = self.constraint.clone();
        let ids: Vec<ClientId> = self.connected_ids().collect();
        for &id in &ids {
            self.actions.push(Action::Send(id, reset.clone()));
            self.actions.push(Action::Send(id, constraint.clone()));
        }
        let lower = Bytes::from(Message::new(-1, Body::RequestAck { flag: 0, reply: json!(0) }).encode());
        for id in ids {
            self.actions.push(Action::Send(id, lower.clone()));
        }
    }

    /// `[[id, count], ...]`: who typed each run of the document.
    fn tag_ranges(&self) -> Value {
        let mut runs: Vec<Value> = Vec::new();
        let mut current: Option<(u8, u64)> = None;
        for &t in &self.tags {
            match &mut current {
                Some((c, n)) if *c == t => *n += 1,
                _ => {
                    if let Some((c, n)) = current {
                        runs.push(json!([peer_id(c), n]));
                    }
                    current = Some((t, 1));
                }
            }
        }
        if let Some((c, n)) = current {
            runs.push(json!([peer_id(c), n]));
        }
        Value::Array(runs)
    }

    /// `{"id": index}` for every peer ever joined, in registration order.
    fn locations(&self) -> Value {
        let map: Map<String, Value> = self.peers.iter().map(|p| (p.id.to_string(), json!(p.index))).collect();
        Value::Object(map)
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

fn peer_id(c: u8) -> i64 {
    PEER_CHARS.iter().position(|&p| p == c).map_or(-1, |k| k as i64)
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Decoder;
    use std::net::Ipv4Addr;

    const PW: &str = "2e50a1e45ce0e092669ae02336db5e7d";
    const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn msg(wire: &str) -> Message {
        let mut d = Decoder::new(1 << 20);
        d.feed(wire.as_bytes());
        d.next_message().unwrap().unwrap()
    }

    fn sent_to(actions: &[Action], id: ClientId) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(to, b) if *to == id => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    /// A session with `n` joined clients named c0, c1, ... on ports 1000, 1001, ...
    fn joined(n: i64) -> Session {
        let mut s = Session::new(PW, Limits::default());
        let now = Instant::now();
        for id in 0..n {
            assert_eq!(s.login(IP, 1000 + id as u16, PW, &format!("c{id}"), VERSION, now), Ok(id));
            s.receive(id, msg(&format!("<1><0><{id}><\"c{id}\"><\"h\"><57890><0>")), now);
            for k in 0..=id {
                s.receive(k, msg(&format!("<13><1><{k}><0>")), now);
            }
        }
        s.take_actions();
        s
    }

    #[test]
    fn login_checks_in_upstream_order() {
        let mut s = joined(1);
        let now = Instant::now();
        assert_eq!(s.login(IP, 1, "bad", "c0", "0.1", now), Err(LoginError::WrongPassword));
        assert_eq!(s.login(IP, 1, PW, "c0", "0.1", now), Err(LoginError::NameTaken));
        assert_eq!(s.login(IP, 1, PW, "new", "0.1", now), Err(LoginError::VersionMismatch));
        s.leave(0);
        assert_eq!(s.login(IP, 1, PW, "c0", "0.1", now), Ok(0), "a returning name gets its id back");
    }

    #[test]
    fn ids_run_out_after_max_clients() {
        let limits = Limits { max_clients: 2, ..Limits::default() };
        let mut s = Session::new(PW, limits);
        let now = Instant::now();
        assert_eq!(s.login(IP, 1, PW, "a", VERSION, now), Ok(0));
        assert_eq!(s.login(IP, 2, PW, "b", VERSION, now), Ok(1));
        assert_eq!(s.login(IP, 3, PW, "c", VERSION, now), Err(LoginError::TooManyUsers));
    }

    #[test]
    fn bad_operation_drops_the_sender_and_keeps_the_document() {
        let mut s = joined(2);
        let now = Instant::now();
        s.receive(0, msg("<2><1><0><[\"abc\"]><0>"), now);
        s.take_actions();
        s.receive(1, msg("<2><1><1><[10, \"x\"]><1>"), now);
        let actions = s.take_actions();
        assert_eq!(s.document(), "abc");
        assert!(actions.contains(&Action::Close(1)));
        assert_eq!(sent_to(&actions, 0), vec!["<5><0><1>"]);
        assert!(matches!(s.take_dropped()[..], [(1, DropReason::BadOperation(_))]));
    }

    #[test]
    fn history_is_bounded_and_stale_revisions_are_refused() {
        let limits = Limits { history: 4, ..Limits::default() };
        let mut s = Session::new(PW, limits);
        let now = Instant::now();
        s.login(IP, 1, PW, "a", VERSION, now).unwrap();
        s.receive(0, msg("<1><0><0><\"a\"><\"h\"><1><0>"), now);
        s.receive(0, msg("<13><1><0><0>"), now);
        for rev in 0..10 {
            s.receive(0, msg(&format!("<2><1><0><[\"x\", {rev}]><{rev}>")), now);
        }
        assert_eq!(s.history.len(), 4);
        let limits = Limits { history_bytes: 1000, ..Limits::default() };
        let mut big = Session::new(PW, limits);
        big.login(IP, 1, PW, "a", VERSION, now).unwrap();
        big.receive(0, msg("<1><0><0><\"a\"><\"h\"><1><0>"), now);
        big.receive(0, msg("<13><1><0><0>"), now);
        for rev in 0..5 {
            let text = "y".repeat(400);
            big.receive(0, msg(&format!("<2><1><0><[\"{text}\", {}]><{rev}>", rev * 400)), now);
        }
        assert_eq!(big.document().len(), 2000, "every operation applied");
        assert!(big.history_size <= 1000 && big.history.len() == 2, "history bounded in bytes");
        assert_eq!(s.document().len(), 10);
        s.receive(0, msg("<2><1><0><[\"y\", 4]><4>"), now);
        assert!(matches!(s.take_dropped()[..], [(0, DropReason::StaleRevision(4))]));
    }

    #[test]
    fn a_leaving_client_does_not_hold_the_barrier_up() {
        let mut s = joined(2);
        let now = Instant::now();
        s.login(IP, 3, PW, "late", VERSION, now).unwrap();
        s.receive(2, msg("<1><0><2><\"late\"><\"h\"><1><0>"), now);
        s.receive(2, msg("<13><1><2><0>"), now);
        s.receive(0, msg("<13><1><0><0>"), now);
        s.take_actions();
        s.leave(1);
        let to_late = sent_to(&s.take_actions(), 2);
        assert_eq!(to_late[0], "<5><0><1>");
        assert!(to_late[1].starts_with("<11>"), "RESET once the rest acked: {to_late:?}");
    }

    #[test]
    fn barrier_timeout_drops_the_silent() {
        let mut s = joined(1);
        let now = Instant::now();
        s.login(IP, 3, PW, "late", VERSION, now).unwrap();
        s.receive(1, msg("<1><0><1><\"late\"><\"h\"><1><0>"), now);
        s.receive(1, msg("<13><1><1><0>"), now);
        s.tick(now + Duration::from_secs(11));
        assert!(matches!(s.take_dropped()[..], [(0, DropReason::NoAck)]));
        assert!(sent_to(&s.take_actions(), 1).iter().any(|m| m.starts_with("<11>")));
    }
}
