//! The warm pool's bookkeeping: session servers started ahead of demand, locked until a
//! performer's start takes one. A member holds a slot (node and port) like a session and
//! counts against `max_sessions`, so the cap and the port range hold with the pool in them;
//! a start that finds no room takes a member out of the pool ([`Registry::evict_member`])
//! before it refuses anyone. A member is taken at most once: [`Registry::take_member`] moves
//! it out of the pool into the session table under the registry's lock.

use super::{ControlAccess, NewSession, Placement, Registry, RegistryError, Session, State};
use std::time::{Instant, SystemTime};

/// One pool member.
#[derive(Debug, Clone)]
pub struct Member {
    /// The uuid of its container; the session it becomes keeps it.
    pub id: String,
    pub node: String,
    pub host: Option<String>,
    pub port: u16,
    /// Set once its server listens (ready to be taken).
    pub ready: Option<Ready>,
    /// When it was placed, on the hub's monotonic clock (for its maximum age).
    pub born: Instant,
    /// The pool generation it was started for (a reload of image or limits starts a new one).
    pub generation: u64,
}

/// A member whose server listens, locked.
#[derive(Debug, Clone)]
pub struct Ready {
    pub handle: String,
    pub control: ControlAccess,
}

/// A member taken for a session: where it is and how to arm it.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The member's id, now the session's.
    pub id: String,
    pub placed: Placement,
    pub handle: String,
    pub control: ControlAccess,
}

impl Registry {
    /// Pool members, started or starting.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.pool.values()
    }

    pub fn members_on(&self, node: &str) -> usize {
        self.pool.values().filter(|m| m.node == node).count()
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.pool.get(id)
    }

    pub fn member_by_handle(&self, handle: &str) -> Option<&Member> {
        self.pool.values().find(|m| m.ready.as_ref().is_some_and(|r| r.handle == handle))
    }

    /// Places a new pool member on `node` when the cap leaves room for it.
    pub fn reserve_member(
        &mut self,
        id: &str,
        node: &str,
        generation: u64,
        now: Instant,
    ) -> Result<Placement, RegistryError> {
        if self.sessions.len() + self.pool.len() >= self.max_sessions {
            return Err(RegistryError::Full);
        }
        let others: Vec<String> = self.nodes.iter().filter(|n| n.id != node).map(|n| n.id.clone()).collect();
        let placed = self.place(now, &others)?;
        self.hold((placed.node.clone(), placed.port), id);
        let member = Member {
            id: id.to_string(),
            node: placed.node.clone(),
            host: placed.host.clone(),
            port: placed.port,
            ready: None,
            born: now,
            generation,
        };
        self.pool.insert(id.to_string(), member);
        Ok(placed)
    }

    /// The member's server listens; false if it left the pool meanwhile.
    pub fn member_ready(&mut self, id: &str, ready: Ready) -> bool {
        self.pool.get_mut(id).map(|m| m.ready = Some(ready)).is_some()
    }

    /// Takes member `id` out of the pool (its slot stays held until [`Registry::free`]).
    pub fn remove_member(&mut self, id: &str) -> Option<Member> {
        self.pool.remove(id)
    }

    /// Takes a ready member of `generation` for a new session, with the same checks as
    /// [`Registry::reserve`]; `Ok(None)` when none is ready. The session takes the member's
    /// id (not `new.id`), slot, server and control channel, and starts its life (age) now.
    pub fn take_member(
        &mut self,
        new: NewSession,
        generation: u64,
        now: Instant,
    ) -> Result<Option<Taken>, RegistryError> {
        self.admit(&new)?;
        let usable = |node: &str| self.nodes.iter().any(|n| n.id == node && n.usable);
        let Some(id) = self
            .pool
            .values()
            .filter(|m| m.ready.is_some() && m.generation == generation && usable(&m.node))
            .min_by_key(|m| (self.sessions_on(&m.node), m.born))
            .map(|m| m.id.clone())
        else {
            return Ok(None);
        };
        let Some(Member { id: member_id, node, host, port, ready: Some(ready), .. }) = self.pool.remove(&id) else {
            return Ok(None);
        };
        let session = Session {
            id: member_id.clone(),
            name: new.name.clone(),
            node: node.clone(),
            host: host.clone(),
            port,
            password_md5: Some(new.password_md5),
            control: Some(ready.control.clone()),
            reach: None,
            owner_ip: new.owner_ip,
            counts_for_address: !new.trusted,
            daemon: new.daemon,
            owner_connected: !new.daemon,
            handle: Some(ready.handle.clone()),
            state: State::Starting,
            created: SystemTime::now(),
            started: now,
            expires: new.expires,
        };
        self.insert_session(session);
        let placed = Placement { node, host, port };
        Ok(Some(Taken { id: member_id, placed, handle: ready.handle, control: ready.control }))
    }

    /// When the cap or the ports leave no room for a new session, the pool gives way: a
    /// member still starting goes first (nobody waits on it yet), else the youngest. `None`
    /// when the pool is empty.
    pub fn evict_member(&mut self) -> Option<Member> {
        let id = self.pool.values().max_by_key(|m| (m.ready.is_none(), m.born)).map(|m| m.id.clone())?;
        self.pool.remove(&id)
    }
}
