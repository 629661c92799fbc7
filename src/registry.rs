//! Who has which session: names, nodes, ports and owner addresses, and the limits on them.
//!
//! Pure bookkeeping with no I/O: the cap, the per-address limit, unique names, and a port
//! table per node that never hands out a port twice on one node (the same port may be used
//! once on each node). A new session goes to the usable node with the fewest sessions. A port
//! that turns out to be taken by something outside the hub is set aside for a while and the
//! next one is tried. The local Docker runtime is one node, [`LOCAL_NODE`].

use secrecy::SecretString;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
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

/// Where a session is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Registered, its container being created or not yet listening.
    Starting,
    /// Its server accepts connections.
    Running,
}

/// One session as the hub tracks it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The uuid that names its container.
    pub id: String,
    pub name: String,
    /// The node it runs on, and the host performers are given (`None`: the hub's own).
    pub node: String,
    pub host: Option<String>,
    pub port: u16,
    /// md5 hex of the password (what the container got); used to give an adopted session
    /// back to its owner.
    pub password_md5: SecretString,
    pub owner_ip: Option<IpAddr>,
    /// Counted against the per-address limit.
    pub counts_for_address: bool,
    pub daemon: bool,
    pub owner_connected: bool,
    pub container_id: Option<String>,
    pub state: State,
    pub created: SystemTime,
    pub started: Instant,
    /// When an API-owned session's ttl runs out.
    pub expires: Option<SystemTime>,
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
    pub expires: Option<SystemTime>,
}

/// The session table.
#[derive(Debug)]
pub struct Registry {
    sessions: BTreeMap<String, Session>,
    nodes: Vec<Node>,
    ports: (u16, u16),
    /// Held slots and the id of the session holding each (ids are never reused; a name is,
    /// while the old session's container may still hold its slot).
    in_use: HashMap<Slot, String>,
    set_aside: HashMap<Slot, Instant>,
    /// Nodes where a start failed recently: placed on only when no other node has room.
    cooling: HashMap<String, Instant>,
    max_sessions: usize,
    max_per_address: usize,
}

/// How long a port found taken by someone else is skipped.
pub const SET_ASIDE: Duration = Duration::from_secs(60);
/// How long a node where a start failed is avoided.
pub const NODE_COOLDOWN: Duration = Duration::from_secs(60);

impl Registry {
    pub fn new(ports: (u16, u16), max_sessions: usize, max_per_address: usize) -> Self {
        Registry {
            sessions: BTreeMap::new(),
            nodes: vec![Node::local()],
            ports,
            in_use: HashMap::new(),
            set_aside: HashMap::new(),
            cooling: HashMap::new(),
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
        if let Some((_, p)) = self.in_use.keys().find(|(_, p)| *p < ports.0 || *p > ports.1) {
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

    /// Sessions on a node.
    pub fn sessions_on(&self, node: &str) -> usize {
        self.sessions.values().filter(|s| s.node == node).count()
    }

    /// Ports neither used nor set aside, summed over the usable nodes.
    pub fn free_ports(&self, now: Instant) -> usize {
        self.nodes.iter().filter(|n| n.usable).map(|n| self.free_ports_on(&n.id, now)).sum()
    }

    /// Ports of one node neither used nor set aside.
    pub fn free_ports_on(&self, node: &str, now: Instant) -> usize {
        (self.ports.0..=self.ports.1).filter(|p| self.port_free(node, *p, now)).count()
    }

    fn port_free(&self, node: &str, p: u16, now: Instant) -> bool {
        let slot = (node.to_string(), p);
        !self.in_use.contains_key(&slot) && self.set_aside.get(&slot).is_none_or(|until| *until <= now)
    }

    /// The usable node with the fewest sessions that has a free port (ties: the node listed
    /// first; nodes where a start failed lately come last), and its lowest free port.
    fn place(&self, now: Instant) -> Result<(Node, u16), RegistryError> {
        self.place_except(now, None)
    }

    fn place_except(&self, now: Instant, except: Option<&str>) -> Result<(Node, u16), RegistryError> {
        let mut usable: Vec<&Node> = self.nodes.iter().filter(|n| n.usable && Some(n.id.as_str()) != except).collect();
        if usable.is_empty() {
            return Err(RegistryError::NoNode);
        }
        let cooling = |id: &str| self.cooling.get(id).is_some_and(|until| *until > now);
        usable.sort_by_key(|n| (cooling(&n.id), self.sessions_on(&n.id)));
        usable
            .into_iter()
            .find_map(|n| {
                (self.ports.0..=self.ports.1).find(|p| self.port_free(&n.id, *p, now)).map(|p| (n.clone(), p))
            })
            .ok_or(RegistryError::NoPort)
    }

    /// Registers a session in `Starting` state with a port of its own.
    pub fn reserve(&mut self, new: NewSession, now: Instant) -> Result<&Session, RegistryError> {
        if self.sessions.contains_key(&new.name) {
            return Err(RegistryError::NameTaken);
        }
        if self.sessions.len() >= self.max_sessions {
            return Err(RegistryError::Full);
        }
        if !new.trusted {
            if let Some(ip) = new.owner_ip {
                let from_ip = self.sessions.values().filter(|s| s.counts_for_address && s.owner_ip == Some(ip)).count();
                if from_ip >= self.max_per_address {
                    return Err(RegistryError::AddressLimit);
                }
            }
        }
        let (node, port) = self.place(now)?;
        self.in_use.insert((node.id.clone(), port), new.id.clone());
        let session = Session {
            id: new.id,
            name: new.name.clone(),
            node: node.id,
            host: node.host,
            port,
            password_md5: new.password_md5,
            owner_ip: new.owner_ip,
            counts_for_address: !new.trusted,
            daemon: new.daemon,
            owner_connected: !new.daemon,
            container_id: None,
            state: State::Starting,
            created: SystemTime::now(),
            started: now,
            expires: new.expires,
        };
        Ok(self.sessions.entry(new.name).or_insert(session))
    }

    /// The session's port was taken by something else: set it aside, place the session again
    /// (on the same node or another). Returns the new node and port.
    pub fn move_port(&mut self, name: &str, id: &str, now: Instant) -> Result<(String, u16), RegistryError> {
        let session = self.sessions.get(name).filter(|s| s.id == id).ok_or(RegistryError::NoPort)?;
        let old = (session.node.clone(), session.port);
        self.set_aside.insert(old.clone(), now + SET_ASIDE);
        self.in_use.remove(&old);
        let (node, port) = match self.place(now) {
            Ok(placed) => placed,
            Err(e) => {
                self.sessions.remove(name);
                return Err(e);
            }
        };
        self.in_use.insert((node.id.clone(), port), id.to_string());
        if let Some(s) = self.sessions.get_mut(name) {
            s.node = node.id.clone();
            s.host = node.host;
            s.port = port;
        }
        Ok((node.id, port))
    }

    /// The session's start failed on its node (the runtime undid it): that node is avoided
    /// for a while, and the session moves to another usable node with room, if there is one.
    pub fn place_elsewhere(&mut self, name: &str, id: &str, now: Instant) -> Option<(String, u16)> {
        let s = self.sessions.get(name).filter(|s| s.id == id)?;
        let old = (s.node.clone(), s.port);
        self.cooling.insert(old.0.clone(), now + NODE_COOLDOWN);
        let (node, port) = self.place_except(now, Some(&old.0)).ok()?;
        self.in_use.remove(&old);
        self.in_use.insert((node.id.clone(), port), id.to_string());
        let s = self.sessions.get_mut(name)?;
        s.node = node.id.clone();
        s.host = node.host;
        s.port = port;
        Some((node.id, port))
    }

    /// Registers a session found running from before (adoption). Refused if its name or port
    /// is already taken.
    pub fn adopt(&mut self, session: Session) -> Result<(), RegistryError> {
        if self.sessions.contains_key(&session.name) {
            return Err(RegistryError::NameTaken);
        }
        let slot = (session.node.clone(), session.port);
        if self.in_use.contains_key(&slot) {
            return Err(RegistryError::NoPort);
        }
        self.in_use.insert(slot, session.id.clone());
        let mut session = session;
        if let Some(n) = self.nodes.iter().find(|n| n.id == session.node) {
            session.host = n.host.clone();
        }
        self.sessions.insert(session.name.clone(), session);
        Ok(())
    }

    /// Records the container of the session `name` if it is still the one with `id`.
    pub fn set_container(&mut self, name: &str, id: &str, container_id: &str) -> bool {
        match self.sessions.get_mut(name).filter(|s| s.id == id) {
            Some(s) => {
                s.container_id = Some(container_id.to_string());
                true
            }
            None => false,
        }
    }

    /// Marks the session `name` running if it is still the one with `id`.
    pub fn set_running(&mut self, name: &str, id: &str) -> bool {
        match self.sessions.get_mut(name).filter(|s| s.id == id) {
            Some(s) => {
                s.state = State::Running;
                true
            }
            None => false,
        }
    }

    pub fn set_owner_connected(&mut self, name: &str, connected: bool) {
        if let Some(s) = self.sessions.get_mut(name) {
            s.owner_connected = connected;
        }
    }

    pub fn get(&self, name: &str) -> Option<&Session> {
        self.sessions.get(name)
    }

    /// The running session of this name (a starting one is not reachable yet).
    pub fn running(&self, name: &str) -> Option<&Session> {
        self.sessions.get(name).filter(|s| s.state == State::Running)
    }

    pub fn by_container(&self, container_id: &str) -> Option<&Session> {
        self.sessions.values().find(|s| s.container_id.as_deref() == Some(container_id))
    }

    /// Removes a session if it is still the one with this id and frees its name at once. Its
    /// slot stays held: its container (or one still being created) holds the host port until
    /// it is removed, so the slot waits for [`Registry::free_port`] (handing it out earlier
    /// makes the next start fail with "port is already allocated").
    pub fn release(&mut self, name: &str, id: &str) -> Option<Session> {
        if self.sessions.get(name)?.id != id {
            return None;
        }
        self.sessions.remove(name)
    }

    /// The released session `id`'s container is gone (`removed`), or could not be removed:
    /// then the port is set aside for a while instead of being handed out at once.
    pub fn free_port(&mut self, node: &str, port: u16, id: &str, removed: bool, now: Instant) {
        let slot = (node.to_string(), port);
        let held_by_it = self.in_use.get(&slot).is_some_and(|holder| holder == id);
        if held_by_it && self.sessions.values().all(|s| s.id != id) {
            self.in_use.remove(&slot);
            if !removed {
                self.set_aside.insert(slot, now + SET_ASIDE);
            }
        }
    }

    /// Every session, by name.
    pub fn list(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// Ports the table holds, on every node (for consistency checks).
    pub fn ports_in_use(&self) -> Vec<u16> {
        let mut p: Vec<u16> = self.in_use.keys().map(|(_, p)| *p).collect();
        p.sort_unstable();
        p
    }

    /// Slots (node, port) the table holds.
    pub fn slots_in_use(&self) -> Vec<(String, u16)> {
        let mut p: Vec<Slot> = self.in_use.keys().cloned().collect();
        p.sort_unstable();
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str, ip: &str, trusted: bool) -> NewSession {
        NewSession {
            id: format!("id-{name}"),
            name: name.into(),
            password_md5: SecretString::from(""),
            owner_ip: Some(ip.parse().unwrap()),
            trusted,
            daemon: false,
            expires: None,
        }
    }

    #[test]
    fn names_ports_and_limits() {
        let now = Instant::now();
        let mut r = Registry::new((100, 102), 3, 1);
        assert_eq!(r.reserve(new("a", "1.1.1.1", false), now).unwrap().port, 100);
        assert_eq!(r.reserve(new("a", "2.2.2.2", false), now).unwrap_err(), RegistryError::NameTaken);
        assert_eq!(r.reserve(new("b", "1.1.1.1", false), now).unwrap_err(), RegistryError::AddressLimit);
        assert_eq!(r.reserve(new("b", "127.0.0.1", true), now).unwrap().port, 101, "trusted is exempt");
        assert_eq!(r.reserve(new("c", "3.3.3.3", false), now).unwrap().port, 102);
        assert_eq!(r.reserve(new("d", "4.4.4.4", false), now).unwrap_err(), RegistryError::Full);
        r.set_container("b", "id-b", "container-b");
        assert!(r.release("b", "id-b").is_some());
        assert!(r.release("b", "id-b").is_none(), "released once");
        assert_eq!(
            r.reserve(new("d", "4.4.4.4", false), now).unwrap_err(),
            RegistryError::NoPort,
            "port held until its container is gone"
        );
        r.free_port(LOCAL_NODE, 101, "id-other", true, now);
        assert_eq!(r.free_ports(now), 0, "only its own session frees a slot");
        r.free_port(LOCAL_NODE, 101, "id-b", true, now);
        assert_eq!(r.reserve(new("d", "4.4.4.4", false), now).unwrap().port, 101, "port reused after release");
    }

    #[test]
    fn a_lowered_cap_ends_nothing_and_refuses_new_starts() {
        let now = Instant::now();
        let mut r = Registry::new((100, 110), 3, 5);
        for n in ["a", "b", "c"] {
            r.reserve(new(n, "1.1.1.1", false), now).unwrap();
        }
        r.set_limits(1, 5);
        assert_eq!(r.len(), 3);
        assert_eq!(r.reserve(new("d", "1.1.1.1", false), now).unwrap_err(), RegistryError::Full);
    }

    #[test]
    fn a_port_taken_outside_is_set_aside() {
        let now = Instant::now();
        let mut r = Registry::new((100, 101), 5, 5);
        r.reserve(new("a", "1.1.1.1", false), now).unwrap();
        assert_eq!(r.move_port("a", "id-a", now), Ok((LOCAL_NODE.to_string(), 101)));
        assert_eq!(r.ports_in_use(), vec![101]);
        assert_eq!(r.free_ports(now), 0, "100 is set aside");
        assert_eq!(r.reserve(new("b", "1.1.1.1", false), now).unwrap_err(), RegistryError::NoPort);
        assert_eq!(r.free_ports(now + SET_ASIDE), 1);
        assert_eq!(r.move_port("a", "other", now), Err(RegistryError::NoPort), "another session's id changes nothing");
        assert_eq!(r.ports_in_use(), vec![101]);
        assert_eq!(r.move_port("a", "id-a", now), Err(RegistryError::NoPort), "no port left: the reservation goes");
        assert!(r.get("a").is_none());
    }

    #[test]
    fn ports_are_never_handed_out_twice() {
        let now = Instant::now();
        let mut r = Registry::new((100, 199), 100, 100);
        for k in 0..100 {
            r.reserve(new(&format!("s{k}"), "1.1.1.1", false), now).unwrap();
        }
        let mut ports: Vec<u16> = r.list().map(|s| s.port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 100);
    }

    fn node(id: &str, host: &str, usable: bool) -> Node {
        Node { id: id.into(), host: Some(host.into()), usable }
    }

    #[test]
    fn one_port_table_per_node_and_the_emptiest_node_first() {
        let now = Instant::now();
        let mut r = Registry::new((100, 101), 10, 10);
        r.set_nodes(vec![node("n1", "a.example", true), node("n2", "b.example", true)]);
        assert_eq!(r.free_ports(now), 4, "capacity is the range times the usable nodes");
        let placed: Vec<(String, u16, Option<String>)> = ["s1", "s2", "s3", "s4"]
            .iter()
            .map(|n| {
                let s = r.reserve(new(n, "1.1.1.1", true), now).unwrap();
                (s.node.clone(), s.port, s.host.clone())
            })
            .collect();
        assert_eq!(
            placed,
            vec![
                ("n1".into(), 100, Some("a.example".into())),
                ("n2".into(), 100, Some("b.example".into())),
                ("n1".into(), 101, Some("a.example".into())),
                ("n2".into(), 101, Some("b.example".into())),
            ],
            "the same port once on each node, sessions spread evenly"
        );
        assert_eq!(r.reserve(new("s5", "1.1.1.1", true), now).unwrap_err(), RegistryError::NoPort);
        // n1 loses a session: the next one goes there, to the port it freed.
        assert!(r.release("s1", "id-s1").is_some());
        r.free_port("n1", 100, "id-s1", true, now);
        let s = r.reserve(new("s5", "1.1.1.1", true), now).unwrap();
        assert_eq!((s.node.as_str(), s.port), ("n1", 100));
    }

    #[test]
    fn drained_nodes_get_nothing_new_and_keep_what_they_have() {
        let now = Instant::now();
        let mut r = Registry::new((100, 109), 100, 100);
        r.set_nodes(vec![node("n1", "a", true), node("n2", "b", true)]);
        r.reserve(new("on-n1", "1.1.1.1", true), now).unwrap();
        r.set_nodes(vec![node("n1", "a2", false), node("n2", "b", true)]);
        assert_eq!(r.get("on-n1").unwrap().host.as_deref(), Some("a2"), "a relabelled node's host is followed");
        assert_eq!(r.free_ports(now), 10, "only n2 counts");
        for k in 0..3 {
            assert_eq!(r.reserve(new(&format!("x{k}"), "1.1.1.1", true), now).unwrap().node, "n2");
        }
        r.set_nodes(vec![node("n1", "a", false), node("n2", "b", false)]);
        assert_eq!(r.reserve(new("y", "1.1.1.1", true), now).unwrap_err(), RegistryError::NoNode);
        assert_eq!(r.len(), 4, "nothing was ended");
        assert_eq!(r.free_ports(now), 0);
    }

    #[test]
    fn capacity_is_capped_by_max_sessions() {
        let now = Instant::now();
        let mut r = Registry::new((100, 104), 3, 100);
        r.set_nodes(vec![node("n1", "a", true), node("n2", "b", true), node("n3", "c", true)]);
        assert_eq!(r.free_ports(now), 15);
        for k in 0..3 {
            r.reserve(new(&format!("s{k}"), "1.1.1.1", true), now).unwrap();
        }
        assert_eq!(r.reserve(new("s3", "1.1.1.1", true), now).unwrap_err(), RegistryError::Full);
        assert_eq!(r.sessions_on("n1") + r.sessions_on("n2") + r.sessions_on("n3"), 3);
        assert!(["n1", "n2", "n3"].iter().all(|n| r.sessions_on(n) == 1));
    }

    #[test]
    fn adoption_and_freeing_are_per_node() {
        let now = Instant::now();
        let mut r = Registry::new((100, 100), 10, 10);
        r.set_nodes(vec![node("n1", "a", true), node("n2", "b", true)]);
        let adopted = |name: &str, node: &str| Session {
            id: format!("id-{name}"),
            name: name.into(),
            node: node.into(),
            host: None,
            port: 100,
            password_md5: SecretString::from(""),
            owner_ip: None,
            counts_for_address: false,
            daemon: false,
            owner_connected: false,
            container_id: Some(format!("c-{name}")),
            state: State::Running,
            created: SystemTime::now(),
            started: now,
            expires: None,
        };
        r.adopt(adopted("a", "n1")).unwrap();
        assert_eq!(r.get("a").unwrap().host.as_deref(), Some("a"), "an adopted session gets its node's host");
        r.adopt(adopted("b", "n2")).unwrap();
        assert_eq!(r.adopt(adopted("c", "n2")), Err(RegistryError::NoPort), "port 100 is taken on n2");
        r.release("a", "id-a");
        assert_eq!(r.slots_in_use(), vec![("n1".into(), 100), ("n2".into(), 100)], "held until removed");
        r.free_port("n1", 100, "id-a", true, now);
        assert_eq!(r.slots_in_use(), vec![("n2".into(), 100)]);
        assert_eq!(r.reserve(new("d", "1.1.1.1", true), now).unwrap().node, "n1");
    }

    #[test]
    fn a_name_restarted_before_its_old_container_is_gone_frees_the_old_slot_later() {
        let now = Instant::now();
        let mut r = Registry::new((100, 101), 10, 10);
        let mut first = new("foo", "1.1.1.1", true);
        first.id = "first".into();
        r.reserve(first, now).unwrap();
        r.set_container("foo", "first", "c1");
        r.release("foo", "first");
        // The performer starts "foo" again while the old container is still being removed.
        let mut second = new("foo", "1.1.1.1", true);
        second.id = "second".into();
        assert_eq!(r.reserve(second, now).unwrap().port, 101);
        r.free_port(LOCAL_NODE, 100, "first", true, now);
        assert_eq!(r.slots_in_use(), vec![(LOCAL_NODE.to_string(), 101)], "the old slot is free again");
        assert_eq!(r.free_ports(now), 1);
    }

    #[test]
    fn a_starting_session_ended_by_someone_else_keeps_its_slot_until_its_start_is_undone() {
        let now = Instant::now();
        let mut r = Registry::new((100, 100), 10, 10);
        r.reserve(new("s", "1.1.1.1", true), now).unwrap();
        assert!(r.release("s", "id-s").is_some(), "killed while its container is being created");
        assert_eq!(r.reserve(new("t", "1.1.1.1", true), now).unwrap_err(), RegistryError::NoPort);
        r.free_port(LOCAL_NODE, 100, "id-s", true, now);
        assert_eq!(r.reserve(new("t", "1.1.1.1", true), now).unwrap().port, 100);
    }

    #[test]
    fn a_node_where_starts_fail_is_avoided_while_others_have_room() {
        let now = Instant::now();
        let mut r = Registry::new((100, 101), 10, 10);
        r.set_nodes(vec![node("broken", "a", true), node("good", "b", true)]);
        assert_eq!(r.reserve(new("s", "1.1.1.1", true), now).unwrap().node, "broken", "emptiest, listed first");
        assert_eq!(r.place_elsewhere("s", "id-s", now), Some(("good".into(), 100)));
        assert_eq!(r.slots_in_use(), vec![("good".into(), 100)], "the failed slot is free");
        // The broken node has no session, yet new ones go to the good node while it cools.
        assert_eq!(r.reserve(new("t", "1.1.1.1", true), now).unwrap().node, "good");
        // With no room left elsewhere, the cooling node is still used; after the cooldown it
        // is an ordinary node again.
        assert_eq!(r.reserve(new("u", "1.1.1.1", true), now).unwrap().node, "broken");
        assert_eq!(r.reserve(new("v", "1.1.1.1", true), now + NODE_COOLDOWN).unwrap().node, "broken");
        // No other node: nothing to move to.
        let mut lone = Registry::new((100, 101), 10, 10);
        lone.set_nodes(vec![node("only", "a", true)]);
        lone.reserve(new("s", "1.1.1.1", true), now).unwrap();
        assert_eq!(lone.place_elsewhere("s", "id-s", now), None);
    }
}
