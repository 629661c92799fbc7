//! The owner's moderation, as the hub asks for it over the control channel: removing a
//! performer (MSG_KILL with the owner's sentence, as upstream's shutdown sends each client,
//! then the same REMOVE every other client gets when someone leaves) and locking the session
//! to new performers. A lock admits the names joined when it was set, so a performer whose
//! connection drops can come back; a removed performer's name leaves that set.

use super::{Action, ClientId, Session};
use crate::control::EventKind;
use crate::message::{Body, Message};
use bytes::Bytes;

impl Session {
    /// Locks the session to new performers (the names joined now may come back) or unlocks
    /// it. An event only when it changes.
    pub fn set_locked(&mut self, locked: bool) {
        if locked == self.admitted.is_some() {
            return;
        }
        self.admitted = locked.then(|| self.peers.iter().filter(|p| p.connected).map(|p| p.name.clone()).collect());
        self.emit(|_| EventKind::Lock { locked });
    }

    /// Whether the owner locked the session to new performers.
    pub fn is_locked(&self) -> bool {
        self.admitted.is_some()
    }

    /// Whether client `id` (a login: `None`) may play as `name`: always, unless locked; then
    /// only an admitted name that no other joined client holds (a stranger with the password
    /// cannot take a name the lock admits while its performer plays).
    pub(super) fn admits(&self, name: &str, id: Option<ClientId>) -> bool {
        let Some(names) = &self.admitted else { return true };
        names.contains(name) && !self.peers.iter().any(|p| p.connected && p.name == name && Some(p.id) != id)
    }

    /// Removes every joined performer called `name`: each gets MSG_KILL with `reason`, then
    /// leaves as if it had disconnected. Returns their ids (none when nobody by that name is
    /// joined). While locked, the name may not come back.
    pub fn remove(&mut self, name: &str, reason: &str) -> Vec<ClientId> {
        if let Some(names) = &mut self.admitted {
            names.remove(name);
        }
        let ids: Vec<ClientId> = self.peers.iter().filter(|p| p.connected && p.name == name).map(|p| p.id).collect();
        let kill = Bytes::from(Message::new(-1, Body::Kill { string: reason.into() }).encode());
        for &id in &ids {
            self.emit(|_| EventKind::Removed { id, name: name.to_string(), reason: reason.to_string() });
            self.actions.push(Action::Send(id, kill.clone()));
            self.leave(id);
        }
        ids
    }
}
