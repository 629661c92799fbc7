//! [`LiveSessions`]: every followed session's live state ([`Followed`]), each behind a lock
//! of its own. The map's lock is held only to find, add or remove a session; applying an edit,
//! serialising a snapshot or fanning an event out to viewers locks that one session, so a busy
//! session (a 4 MiB document, a crowd of viewers arriving) never stalls another.

use super::live::Followed;
use super::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub(super) struct LiveSessions {
    by_id: Mutex<HashMap<String, Arc<Mutex<Followed>>>>,
}

impl LiveSessions {
    pub fn insert(&self, id: &str, followed: Followed) {
        lock(&self.by_id).insert(id.to_string(), Arc::new(Mutex::new(followed)));
    }

    /// Takes session `id` out (it is no longer followed); its state stays with the caller.
    pub fn remove(&self, id: &str) -> Option<Arc<Mutex<Followed>>> {
        lock(&self.by_id).remove(id)
    }

    /// Runs `f` on session `id`'s state under its own lock only.
    pub fn with<R>(&self, id: &str, f: impl FnOnce(&mut Followed) -> R) -> Option<R> {
        let session = lock(&self.by_id).get(id).cloned()?;
        let mut followed = lock(&session);
        Some(f(&mut followed))
    }

    /// Performers connected, over every followed session.
    pub fn performers(&self) -> usize {
        let all: Vec<Arc<Mutex<Followed>>> = lock(&self.by_id).values().cloned().collect();
        all.iter().map(|s| lock(s).view.performers.len()).sum()
    }
}
