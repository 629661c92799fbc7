//! [`LiveSessions`]: every followed session's live state ([`Followed`]), each behind a lock
//! of its own. The map's lock is held only to find, add or remove a session; applying an edit,
//! serialising a snapshot or fanning an event out to viewers locks that one session, so a busy
//! session (a 4 MiB document, a crowd of viewers arriving) never stalls another. The number
//! of performers over every session is kept as sessions change, not counted per scrape.

use super::live::Followed;
use super::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub(super) struct LiveSessions {
    by_id: Mutex<HashMap<String, Arc<Mutex<Followed>>>>,
    /// Performers over every followed session.
    performers: AtomicUsize,
}

impl LiveSessions {
    pub fn insert(&self, id: &str, mut followed: Followed) {
        let joined = followed.view.performers.len();
        followed.counted = Some(joined);
        self.performers.fetch_add(joined, Ordering::Relaxed);
        if let Some(old) = lock(&self.by_id).insert(id.to_string(), Arc::new(Mutex::new(followed))) {
            self.uncount(&mut lock(&old));
        }
    }

    /// Takes session `id` out (it is no longer followed); its state stays with the caller.
    pub fn remove(&self, id: &str) -> Option<Arc<Mutex<Followed>>> {
        let gone = lock(&self.by_id).remove(id)?;
        self.uncount(&mut lock(&gone));
        Some(gone)
    }

    /// Runs `f` on session `id`'s state under its own lock only.
    pub fn with<R>(&self, id: &str, f: impl FnOnce(&mut Followed) -> R) -> Option<R> {
        let session = lock(&self.by_id).get(id).cloned()?;
        let mut followed = lock(&session);
        let r = f(&mut followed);
        // A session removed meanwhile (`counted` taken) is no longer counted.
        if let Some(counted) = followed.counted {
            let now = followed.view.performers.len();
            followed.counted = Some(now);
            self.performers.fetch_add(now, Ordering::Relaxed);
            self.performers.fetch_sub(counted, Ordering::Relaxed);
        }
        Some(r)
    }

    fn uncount(&self, followed: &mut Followed) {
        if let Some(counted) = followed.counted.take() {
            self.performers.fetch_sub(counted, Ordering::Relaxed);
        }
    }

    /// Performers connected, over every followed session.
    pub fn performers(&self) -> usize {
        self.performers.load(Ordering::Relaxed)
    }
}
