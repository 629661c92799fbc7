//! Who has which session: names, ports and owner addresses, and the limits on them.
//!
//! Pure bookkeeping with no I/O: the cap, the per-address limit, unique names, and a port
//! table that never hands out a port twice. A port that turns out to be taken by something
//! outside the hub is set aside for a while and the next one is tried.

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
}

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
    pub port: u16,
    /// md5 hex of the password (what the container got); used to give an adopted session
    /// back to its owner.
    pub password_md5: String,
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
    pub password_md5: String,
    pub owner_ip: Option<IpAddr>,
    pub trusted: bool,
    pub daemon: bool,
    pub expires: Option<SystemTime>,
}

/// The session table.
#[derive(Debug)]
pub struct Registry {
    sessions: BTreeMap<String, Session>,
    ports: (u16, u16),
    in_use: HashMap<u16, String>,
    set_aside: HashMap<u16, Instant>,
    max_sessions: usize,
    max_per_address: usize,
}

/// How long a port found taken by someone else is skipped.
pub const SET_ASIDE: Duration = Duration::from_secs(60);

impl Registry {
    pub fn new(ports: (u16, u16), max_sessions: usize, max_per_address: usize) -> Self {
        Registry {
            sessions: BTreeMap::new(),
            ports,
            in_use: HashMap::new(),
            set_aside: HashMap::new(),
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
        if let Some(p) = self.in_use.keys().find(|p| **p < ports.0 || **p > ports.1) {
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

    /// Ports of the range neither used nor set aside.
    pub fn free_ports(&self, now: Instant) -> usize {
        (self.ports.0..=self.ports.1).filter(|p| self.port_free(*p, now)).count()
    }

    fn port_free(&self, p: u16, now: Instant) -> bool {
        !self.in_use.contains_key(&p) && self.set_aside.get(&p).is_none_or(|until| *until <= now)
    }

    fn pick_port(&self, now: Instant) -> Option<u16> {
        (self.ports.0..=self.ports.1).find(|p| self.port_free(*p, now))
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
        let port = self.pick_port(now).ok_or(RegistryError::NoPort)?;
        self.in_use.insert(port, new.name.clone());
        let session = Session {
            id: new.id,
            name: new.name.clone(),
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

    /// The session's port was taken by something else: set it aside, give the session another.
    pub fn move_port(&mut self, name: &str, id: &str, now: Instant) -> Result<u16, RegistryError> {
        let session = self.sessions.get(name).filter(|s| s.id == id).ok_or(RegistryError::NoPort)?;
        let old = session.port;
        self.set_aside.insert(old, now + SET_ASIDE);
        self.in_use.remove(&old);
        let Some(port) = self.pick_port(now) else {
            self.sessions.remove(name);
            return Err(RegistryError::NoPort);
        };
        self.in_use.insert(port, name.to_string());
        if let Some(s) = self.sessions.get_mut(name) {
            s.port = port;
        }
        Ok(port)
    }

    /// Registers a session found running from before (adoption). Refused if its name or port
    /// is already taken.
    pub fn adopt(&mut self, session: Session) -> Result<(), RegistryError> {
        if self.sessions.contains_key(&session.name) {
            return Err(RegistryError::NameTaken);
        }
        if self.in_use.contains_key(&session.port) {
            return Err(RegistryError::NoPort);
        }
        self.in_use.insert(session.port, session.name.clone());
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

    /// Removes a session if it is still the one with this id and frees its name. Its port is
    /// freed too unless it has a container: that container holds the host port until it is
    /// removed, so the port waits for [`Registry::free_port`] (handing it out earlier makes
    /// the next start fail with "port is already allocated").
    pub fn release(&mut self, name: &str, id: &str) -> Option<Session> {
        if self.sessions.get(name)?.id != id {
            return None;
        }
        let s = self.sessions.remove(name)?;
        if s.container_id.is_none() {
            self.in_use.remove(&s.port);
        }
        Some(s)
    }

    /// A released session's container is gone (`removed`), or could not be removed: then the
    /// port is set aside for a while instead of being handed out at once.
    pub fn free_port(&mut self, port: u16, removed: bool, now: Instant) {
        if self.in_use.get(&port).is_some_and(|holder| !self.sessions.contains_key(holder)) {
            self.in_use.remove(&port);
            if !removed {
                self.set_aside.insert(port, now + SET_ASIDE);
            }
        }
    }

    /// Every session, by name.
    pub fn list(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// Ports the table holds (for consistency checks).
    pub fn ports_in_use(&self) -> Vec<u16> {
        let mut p: Vec<u16> = self.in_use.keys().copied().collect();
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
            password_md5: String::new(),
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
        r.free_port(101, true, now);
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
        assert_eq!(r.move_port("a", "id-a", now), Ok(101));
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
}
