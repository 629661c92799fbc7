//! Who has which session: names, nodes, ports and owner addresses, and the limits on them.
//!
//! Pure bookkeeping with no I/O: the cap, the per-address limit, unique names, and a port
//! table per node that never hands out a port twice on one node (the same port may be used
//! once on each node). A new session goes to the usable node with the fewest sessions. A port
//! that turns out to be taken by something outside the hub is set aside for a while and the
//! next one is tried. Each session holds a lease on its slot, keyed by its id: releasing a
//! session frees its name at once, its slot only when [`Registry::free`] hears its server is
//! gone. The local Docker runtime is one node, [`LOCAL_NODE`].
//!
//! Nothing here walks every session for one request: sessions are indexed by name, id and
//! handle, and counted per node and per owner address as they come and go; finding a free port
//! scans the range's integers on one node without allocating (1,000 sessions measured in
//! BENCHMARKS.md "A thousand sessions").

use secrecy::SecretString;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

/// Why a session cannot be registered. The texts are upstream's where it had one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("Max number of running Troop instances reached")]
    Full,
    #[error("A running Troop server has already been started from this address")]
    AddressLimit,
    #[error("A running Troop server already exists with this name")]
    NameTaken,
    #[error("No free port is left for a new session; try again later")]
    NoPort,
    #[error("No machine of the hub can take a new session right now; try again later")]
    NoNode,
}

/// The node id of the local Docker runtime (the only node it has).
pub const LOCAL_NODE: &str = "local";

/// A machine sessions can run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The engine's node id (`LOCAL_NODE` for the local runtime).
    pub id: String,
    /// The host performers are given for sessions on this node; `None`: the hub's own.
    pub host: Option<String>,
    /// Ready and active: may get new sessions (drained or down nodes keep what they have).
    pub usable: bool,
}

impl Node {
    pub fn local() -> Node {
        Node { id: LOCAL_NODE.into(), host: None, usable: true }
    }
}

/// A port on a node.
type Slot = (String, u16);

/// Where a session was placed: its node, the host performers dial there, and its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub node: String,
    pub host: Option<String>,
    pub port: u16,
}

/// Where a session is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Registered, its server being started.
    Starting,
    /// Its server accepts connections.
    Running,
}

/// One session as the hub tracks it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The uuid that names its container or service; never reused.
    pub id: String,
    pub name: String,
    /// The node it runs on, and the host performers are given (`None`: the hub's own).
    pub node: String,
    pub host: Option<String>,
    pub port: u16,
    /// md5 hex of the password, when the hub knows it (it started the session, or adopted
    /// one without a control channel); else its server checks it (`verify`).
    pub password_md5: Option<SecretString>,
    /// How the hub reaches its server's control channel (`None` for images without one).
    pub control: Option<ControlAccess>,
    /// Where the hub reaches its Troop port, for a server without a control channel (with
    /// one, that is the control channel's address).
    pub reach: Option<SocketAddr>,
    pub owner_ip: Option<IpAddr>,
    /// Counted against the per-address limit.
    pub counts_for_address: bool,
    pub daemon: bool,
    pub owner_connected: bool,
    /// The runtime's handle on its server (a container id, or a Swarm service id).
    pub handle: Option<String>,
    pub state: State,
    /// Wall-clock creation time (shown to people).
    pub created: SystemTime,
    /// When it was created, on the hub's monotonic clock (ages and deadlines).
    pub started: Instant,
    /// When an API-owned session's ttl runs out.
    pub expires: Option<Instant>,
}

impl Session {
    /// Where the hub itself reaches its Troop port (browser seats connect there).
    pub fn troop_addr(&self) -> Option<SocketAddr> {
        self.control.as_ref().map(|c| c.addr).or(self.reach)
    }
}

/// How the hub reaches a session server's control channel: its address and secret.
#[derive(Debug, Clone)]
pub struct ControlAccess {
    pub addr: SocketAddr,
    pub secret: SecretString,
}

/// What a new session needs to be registered.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub name: String,
    pub password_md5: SecretString,
    pub owner_ip: Option<IpAddr>,
    pub trusted: bool,
    pub daemon: bool,
    pub expires: Option<Instant>,
}

/// How a released session's server went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// Removed: its port is free for the next session.
    Removed,
    /// Not known to be gone (removal failed, or a stranger holds the port): the port is set
    /// aside for a while instead of being handed out at once.
    Unsure,
}

/// One node's port table: held ports by the id holding each, and ports set aside until when.
#[derive(Debug, Default)]
struct NodePorts {
    held: HashMap<u16, String>,
    aside: HashMap<u16, Instant>,
}

impl NodePorts {
    fn free(&self, p: u16, now: Instant) -> bool {
        !self.held.contains_key(&p) && self.aside.get(&p).is_none_or(|until| *until <= now)
    }
}

/// The session table.
#[derive(Debug)]
pub struct Registry {
    sessions: BTreeMap<String, Session>,
    /// Indexes into `sessions`: name by id, id by handle; counts per node and per address.
    names_by_id: HashMap<String, String>,
    ids_by_handle: HashMap<String, String>,
    per_node: HashMap<String, usize>,
    per_address: HashMap<IpAddr, usize>,
    nodes: Vec<Node>,
    ports: (u16, u16),
    /// Each node's held and set-aside ports, and each holder's slot (ids are never reused; a
    /// name is, while the old session's server may still hold its slot).
    slots: HashMap<String, NodePorts>,
    leases: HashMap<String, Slot>,
    /// Nodes where a start failed recently: placed on only when no other node has room.
    cooling: HashMap<String, Instant>,
    /// Warm pool members by id (see [`pool`]).
    pool: BTreeMap<String, pool::Member>,
    max_sessions: usize,
    max_per_address: usize,
}

/// How long a port found taken by someone else is skipped.
pub const SET_ASIDE: Duration = Duration::from_secs(60);
/// How long a node where a start failed is avoided.
pub const NODE_COOLDOWN: Duration = Duration::from_secs(60);

impl Registry {
    /// An empty table with no nodes: sessions are placed once [`Registry::set_nodes`] has
    /// told it where they can run.
    pub fn new(ports: (u16, u16), max_sessions: usize, max_per_address: usize) -> Self {
        Registry {
            sessions: BTreeMap::new(),
            names_by_id: HashMap::new(),
            ids_by_handle: HashMap::new(),
            per_node: HashMap::new(),
            per_address: HashMap::new(),
            nodes: Vec::new(),
            ports,
            slots: HashMap::new(),
            leases: HashMap::new(),
            cooling: HashMap::new(),
            pool: BTreeMap::new(),
            max_sessions,
            max_per_address,
        }
    }

    /// Changes the limits for new sessions; running sessions are never ended by this.
    pub fn set_limits(&mut self, max_sessions: usize, max_per_address: usize) {
        self.max_sessions = max_sessions;
        self.max_per_address = max_per_address;
    }

    /// Widens (or, when no live session is outside it, narrows) the port range.
    pub fn set_ports(&mut self, ports: (u16, u16)) -> Result<(), String> {
        let outside = self.slots.values().flat_map(|n| n.held.keys()).find(|p| **p < ports.0 || **p > ports.1);
        if let Some(p) = outside {
            return Err(format!("port {p} is in use by a session outside the new range"));
        }
        self.ports = ports;
        Ok(())
    }

    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Replaces the node list (from the engine). Sessions on a node that left keep their
    /// slot until they end; sessions on a listed node follow its current public host.
    pub fn set_nodes(&mut self, nodes: Vec<Node>) {
        if self.nodes == nodes {
            return; // asked every few seconds; the sessions change only when the nodes do
        }
        for s in self.sessions.values_mut() {
            if let Some(n) = nodes.iter().find(|n| n.id == s.node) {
                s.host = n.host.clone();
            }
        }
        self.nodes = nodes;
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Sessions on a node (pool members not counted).
    pub fn sessions_on(&self, node: &str) -> usize {
        self.per_node.get(node).copied().unwrap_or(0)
    }

    /// Ports neither used nor set aside, summed over the usable nodes.
    pub fn free_ports(&self, now: Instant) -> usize {
        self.nodes.iter().filter(|n| n.usable).map(|n| self.free_ports_on(&n.id, now)).sum()
    }

    /// Ports of one node neither used nor set aside (held ports are all in the range: see
    /// [`Registry::set_ports`]).
    pub fn free_ports_on(&self, node: &str, now: Instant) -> usize {
        let all = usize::from(self.ports.1 - self.ports.0) + 1;
        let Some(n) = self.slots.get(node) else { return all };
        let (lo, hi) = self.ports;
        let aside =
            n.aside.iter().filter(|(p, until)| **until > now && (lo..=hi).contains(*p) && !n.held.contains_key(*p));
        all.saturating_sub(n.held.len() + aside.count())
    }

    /// The lowest free port on `node`.
    fn lowest_free(&self, node: &str, now: Instant) -> Option<u16> {
        let (lo, hi) = self.ports;
        match self.slots.get(node) {
            Some(n) => (lo..=hi).find(|p| n.free(*p, now)),
            None => Some(lo),
        }
    }

    /// Adds `s` to the table and its indexes.
    fn insert_session(&mut self, s: Session) {
        self.names_by_id.insert(s.id.clone(), s.name.clone());
        if let Some(h) = &s.handle {
            self.ids_by_handle.insert(h.clone(), s.id.clone());
        }
        *self.per_node.entry(s.node.clone()).or_insert(0) += 1;
        if let (true, Some(ip)) = (s.counts_for_address, s.owner_ip) {
            *self.per_address.entry(ip).or_insert(0) += 1;
        }
        self.sessions.insert(s.name.clone(), s);
    }

    /// Takes session `name` out of the table and its indexes.
    fn remove_session(&mut self, name: &str) -> Option<Session> {
        let s = self.sessions.remove(name)?;
        self.names_by_id.remove(&s.id);
        if let Some(h) = &s.handle {
            self.ids_by_handle.remove(h);
        }
        decrement(&mut self.per_node, &s.node);
        if let (true, Some(ip)) = (s.counts_for_address, s.owner_ip) {
            decrement(&mut self.per_address, &ip);
        }
        Some(s)
    }

    /// The usable node with the fewest sessions that has a free port (ties: the node listed
    /// first; nodes where a start failed lately come last, `except` not at all), and its
    /// lowest free port.
    fn place(&self, now: Instant, except: &[String]) -> Result<Placement, RegistryError> {
        let mut usable: Vec<&Node> = self.nodes.iter().filter(|n| n.usable && !except.contains(&n.id)).collect();
        if usable.is_empty() {
            return Err(RegistryError::NoNode);
        }
        let cooling = |id: &str| self.cooling.get(id).is_some_and(|until| *until > now);
        usable.sort_by_key(|n| (cooling(&n.id), self.sessions_on(&n.id)));
        usable
            .into_iter()
            .find_map(|n| {
                self.lowest_free(&n.id, now).map(|port| Placement { node: n.id.clone(), host: n.host.clone(), port })
            })
            .ok_or(RegistryError::NoPort)
    }

    fn hold(&mut self, slot: Slot, id: &str) {
        if let Some(old) = self.leases.insert(id.to_string(), slot.clone()) {
            self.unhold(&old);
        }
        self.slots.entry(slot.0).or_default().held.insert(slot.1, id.to_string());
    }

    fn unhold(&mut self, (node, port): &Slot) {
        if let Some(n) = self.slots.get_mut(node) {
            n.held.remove(port);
        }
    }

    fn set_aside(&mut self, (node, port): Slot, now: Instant) {
        let n = self.slots.entry(node).or_default();
        n.aside.retain(|_, until| *until > now); // forget those whose time is up
        n.aside.insert(port, now + SET_ASIDE);
    }

    fn is_held(&self, (node, port): &Slot) -> bool {
        self.slots.get(node).is_some_and(|n| n.held.contains_key(port))
    }

    /// The checks every new session passes: a free name, the cap, the per-address limit.
    fn admit(&self, new: &NewSession) -> Result<(), RegistryError> {
        if self.sessions.contains_key(&new.name) {
            return Err(RegistryError::NameTaken);
        }
        if self.sessions.len() >= self.max_sessions {
            return Err(RegistryError::Full);
        }
        if let (false, Some(ip)) = (new.trusted, new.owner_ip) {
            let from_ip = self.per_address.get(&ip).copied().unwrap_or(0);
            if from_ip >= self.max_per_address {
                return Err(RegistryError::AddressLimit);
            }
        }
        Ok(())
    }

    /// Registers a session in `Starting` state with a slot of its own. `Full` or `NoPort`
    /// while pool members hold the room: the caller evicts one ([`Registry::evict_member`])
    /// and asks again.
    pub fn reserve(&mut self, new: NewSession, now: Instant) -> Result<Placement, RegistryError> {
        self.admit(&new)?;
        if self.sessions.len() + self.pool.len() >= self.max_sessions {
            return Err(RegistryError::Full);
        }
        let placed = self.place(now, &[])?;
        self.hold((placed.node.clone(), placed.port), &new.id);
        let session = Session {
            id: new.id,
            name: new.name.clone(),
            node: placed.node.clone(),
            host: placed.host.clone(),
            port: placed.port,
            password_md5: Some(new.password_md5),
            control: None,
            reach: None,
            owner_ip: new.owner_ip,
            counts_for_address: !new.trusted,
            daemon: new.daemon,
            owner_connected: !new.daemon,
            handle: None,
            state: State::Starting,
            created: SystemTime::now(),
            started: now,
            expires: new.expires,
        };
        self.insert_session(session);
        Ok(placed)
    }

    fn by_id_mut(&mut self, id: &str) -> Option<&mut Session> {
        self.sessions.get_mut(self.names_by_id.get(id)?)
    }

    /// Moves a registered session to `placed`.
    fn move_to(&mut self, id: &str, placed: &Placement) {
        self.hold((placed.node.clone(), placed.port), id);
        let Some(s) = self.by_id_mut(id) else { return };
        let old = std::mem::replace(&mut s.node, placed.node.clone());
        s.host = placed.host.clone();
        s.port = placed.port;
        decrement(&mut self.per_node, &old);
        *self.per_node.entry(placed.node.clone()).or_insert(0) += 1;
    }

    /// The session's port was taken by something else: set it aside and place the session
    /// again (on the same node or another). With no room left the session goes.
    pub fn repick_port(&mut self, id: &str, now: Instant) -> Result<Placement, RegistryError> {
        let name = self.names_by_id.get(id).cloned().ok_or(RegistryError::NoPort)?;
        if let Some(old) = self.leases.remove(id) {
            self.unhold(&old);
            self.set_aside(old, now);
        }
        match self.place(now, &[]) {
            Ok(placed) => {
                self.move_to(id, &placed);
                Ok(placed)
            }
            Err(e) => {
                self.remove_session(&name);
                Err(e)
            }
        }
    }

    /// The session's start failed on its node (the runtime undid it): that node is avoided
    /// for a while, and the session moves to another usable node with room that this start
    /// has not `tried` yet, if there is one.
    pub fn place_elsewhere(&mut self, id: &str, now: Instant, tried: &[String]) -> Option<Placement> {
        let node = self.by_id(id)?.node.clone();
        self.cooling.insert(node.clone(), now + NODE_COOLDOWN);
        let mut except = tried.to_vec();
        except.push(node);
        let placed = self.place(now, &except).ok()?;
        self.move_to(id, &placed);
        Some(placed)
    }

    /// Registers a session found running from before (adoption). Refused if its name or port
    /// is already taken.
    pub fn adopt(&mut self, mut session: Session) -> Result<(), RegistryError> {
        if self.sessions.contains_key(&session.name) {
            return Err(RegistryError::NameTaken);
        }
        let slot = (session.node.clone(), session.port);
        if self.is_held(&slot) {
            return Err(RegistryError::NoPort);
        }
        self.hold(slot, &session.id);
        if let Some(n) = self.nodes.iter().find(|n| n.id == session.node) {
            session.host = n.host.clone();
        }
        self.insert_session(session);
        Ok(())
    }

    /// Records where the hub reaches session `id`'s Troop port, for a server without a control
    /// channel.
    pub fn set_reach(&mut self, id: &str, addr: SocketAddr) {
        if let Some(s) = self.by_id_mut(id) {
            s.reach = Some(addr);
        }
    }

    /// Records the handle of session `id`'s server (and how to reach its control channel);
    /// false if the session is gone.
    pub fn set_handle(&mut self, id: &str, handle: &str, control: Option<ControlAccess>) -> bool {
        let Some(s) = self.by_id_mut(id) else { return false };
        let old = s.handle.replace(handle.to_string());
        s.control = control;
        if let Some(old) = old {
            self.ids_by_handle.remove(&old);
        }
        self.ids_by_handle.insert(handle.to_string(), id.to_string());
        true
    }

    /// Marks session `id` running; false if the session is gone.
    pub fn set_running(&mut self, id: &str) -> bool {
        self.by_id_mut(id).map(|s| s.state = State::Running).is_some()
    }

    pub fn set_owner_connected(&mut self, id: &str, connected: bool) {
        if let Some(s) = self.by_id_mut(id) {
            s.owner_connected = connected;
        }
    }

    pub fn get(&self, name: &str) -> Option<&Session> {
        self.sessions.get(name)
    }

    pub fn by_id(&self, id: &str) -> Option<&Session> {
        self.sessions.get(self.names_by_id.get(id)?)
    }

    /// The running session of this name (a starting one is not reachable yet).
    pub fn running(&self, name: &str) -> Option<&Session> {
        self.sessions.get(name).filter(|s| s.state == State::Running)
    }

    pub fn by_handle(&self, handle: &str) -> Option<&Session> {
        self.by_id(self.ids_by_handle.get(handle)?)
    }

    /// Removes session `id` and frees its name at once. Its slot stays held: its server (or
    /// one still being started) holds the host port until it is removed, so the slot waits
    /// for [`Registry::free`] (handing it out earlier makes the next start fail with "port is
    /// already allocated").
    pub fn release(&mut self, id: &str) -> Option<Session> {
        let name = self.names_by_id.get(id)?.clone();
        self.remove_session(&name)
    }

    /// The released session `id`'s server is gone (or, `Unsure`, may not be): its slot is
    /// freed (or set aside). Does nothing while the session is still registered.
    pub fn free(&mut self, id: &str, gone: Gone, now: Instant) {
        if self.by_id(id).is_some() || self.pool.contains_key(id) {
            return;
        }
        if let Some(slot) = self.leases.remove(id) {
            self.unhold(&slot);
            if gone == Gone::Unsure {
                self.set_aside(slot, now);
            }
        }
    }

    /// Whether `id` (a session, a member, or one released but not yet gone) holds a slot.
    pub fn holds(&self, id: &str) -> bool {
        self.leases.contains_key(id)
    }

    /// Every session, by name.
    pub fn list(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// Ports the table holds, on every node (for consistency checks).
    pub fn ports_in_use(&self) -> Vec<u16> {
        let mut p: Vec<u16> = self.slots.values().flat_map(|n| n.held.keys().copied()).collect();
        p.sort_unstable();
        p
    }

    /// Slots (node, port) the table holds.
    pub fn slots_in_use(&self) -> Vec<(String, u16)> {
        let mut p: Vec<Slot> =
            self.slots.iter().flat_map(|(node, n)| n.held.keys().map(|p| (node.clone(), *p))).collect();
        p.sort_unstable();
        p
    }
}

/// One less of `key`; the entry goes at zero.
fn decrement<K: std::hash::Hash + Eq + Clone>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

mod pool;
#[cfg(test)]
mod tests;

pub use pool::{Member, Ready, Taken};
