//! Browser seats: who plays from a browser in which session, which sessions' owners turned
//! seats off, and the signal that tells open seats to check they are still let in. A seat's
//! place is a [`SeatPlace`] that gives itself back when dropped, so no path leaks one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;

/// Why a seat is not given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeatRefusal {
    #[error("Browser seats are off for this session")]
    Off,
    #[error("The hub has as many browser seats as it allows ({0}); try again later")]
    HubFull(usize),
    #[error("The name '{0}' is taken in this session: choose another")]
    NameTaken(String),
    #[error("This session has as many browser seats as the hub allows ({0}); try again later")]
    SessionFull(usize),
}

/// Browser seats one session may have at once (Troop gives out 62 client ids over a
/// session's life; the rest are left for its Troop clients).
pub const SEATS_PER_SESSION: usize = 32;
/// Bytes queued for all pages together; a page whose next message would pass it is let go
/// as fallen behind.
pub const QUEUED_BYTES_TOTAL: usize = 256 << 20;

#[derive(Debug, Default)]
struct PerSession {
    /// Names of the seats open now.
    names: Vec<String>,
    /// Its owner (or the admin) turned seats off.
    off: bool,
    /// The hub's sentence, once the session is ending.
    ending: Option<String>,
    /// The session ended: the entry goes with its last seat.
    ended: bool,
    /// Performers its owner is removing, whose seats end with the server's sentence.
    removed: Vec<String>,
}

#[derive(Debug, Default)]
struct Inner {
    by_session: HashMap<String, PerSession>,
    total: usize,
}

/// Every session's browser seats.
#[derive(Debug)]
pub struct Seats {
    inner: Mutex<Inner>,
    /// Bytes queued for pages, all seats together (every message to a page passes here, so
    /// it is an atomic, not under the lock).
    queued: AtomicUsize,
    /// Bumped when who may sit may have changed (a session's switch, hub.yaml).
    epoch: watch::Sender<u64>,
}

impl Default for Seats {
    fn default() -> Self {
        Seats { inner: Mutex::new(Inner::default()), queued: AtomicUsize::new(0), epoch: watch::channel(0).0 }
    }
}

impl Seats {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A seat named `name` in session `session` (its id), if seats are on there, the name is
    /// free among its seats and the hub has fewer than `total_max`.
    pub fn take(self: &Arc<Self>, session: &str, name: &str, total_max: usize) -> Result<SeatPlace, SeatRefusal> {
        let mut inner = self.inner();
        if inner.total >= total_max {
            return Err(SeatRefusal::HubFull(total_max));
        }
        let per = inner.by_session.entry(session.to_string()).or_default();
        if per.off {
            return Err(SeatRefusal::Off);
        }
        if per.names.iter().any(|n| n == name) {
            return Err(SeatRefusal::NameTaken(name.to_string()));
        }
        if per.names.len() >= SEATS_PER_SESSION {
            return Err(SeatRefusal::SessionFull(SEATS_PER_SESSION));
        }
        per.names.push(name.to_string());
        inner.total += 1;
        Ok(SeatPlace { seats: self.clone(), session: session.to_string(), name: name.to_string() })
    }

    /// Turns session `session`'s seats on or off; open seats check again.
    pub fn set_enabled(&self, session: &str, on: bool) {
        self.inner().by_session.entry(session.to_string()).or_default().off = !on;
        self.changed();
    }

    /// Whether session `session`'s owner left its seats on.
    pub fn enabled(&self, session: &str) -> bool {
        self.inner().by_session.get(session).is_none_or(|p| !p.off)
    }

    /// Seats open in session `session`.
    pub fn count(&self, session: &str) -> usize {
        self.inner().by_session.get(session).map_or(0, |p| p.names.len())
    }

    /// Seats open in all sessions.
    pub fn total(&self) -> usize {
        self.inner().total
    }

    /// Records why session `session` ends, for its open seats (if any) to say.
    pub fn ending(&self, session: &str, sentence: &str) {
        if let Some(per) = self.inner().by_session.get_mut(session) {
            per.ending = Some(sentence.to_string());
        }
    }

    /// The owner is removing performer `name` from session `session`: a seat playing as
    /// them ends with the server's sentence instead of offering to join again.
    pub fn removing(&self, session: &str, name: &str) {
        if let Some(per) = self.inner().by_session.get_mut(session) {
            if per.names.iter().any(|n| n == name) && !per.removed.iter().any(|n| n == name) {
                per.removed.push(name.to_string());
            }
        }
    }

    /// Whether seat `name` of session `session` is being removed (once: it is forgotten).
    pub fn take_removed(&self, session: &str, name: &str) -> bool {
        let mut inner = self.inner();
        let Some(per) = inner.by_session.get_mut(session) else { return false };
        let before = per.removed.len();
        per.removed.retain(|n| n != name);
        per.removed.len() < before
    }

    /// The hub's sentence for session `session`, once it is ending.
    pub fn ending_sentence(&self, session: &str) -> Option<String> {
        self.inner().by_session.get(session).and_then(|p| p.ending.clone())
    }

    /// Forgets an ended session (its open seats give their places back themselves; its
    /// entry goes with the last of them).
    pub fn forget(&self, session: &str) {
        let mut inner = self.inner();
        match inner.by_session.get_mut(session) {
            Some(p) if p.names.is_empty() => {
                inner.by_session.remove(session);
            }
            Some(p) => p.ended = true,
            None => {}
        }
    }

    /// Takes `len` bytes of the pages' shared queue budget; false if it is spent.
    pub fn reserve(&self, len: usize) -> bool {
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > QUEUED_BYTES_TOTAL {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Gives back what [`Seats::reserve`] took.
    pub fn release(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::Relaxed);
    }

    /// Tells open seats to check whether they are still let in.
    pub fn changed(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }

    /// A receiver that sees [`Seats::changed`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }
}

/// One open seat's place; given back on drop.
#[derive(Debug)]
pub struct SeatPlace {
    seats: Arc<Seats>,
    session: String,
    name: String,
}

impl Drop for SeatPlace {
    fn drop(&mut self) {
        let mut inner = self.seats.inner();
        let mut empty = false;
        if let Some(per) = inner.by_session.get_mut(&self.session) {
            if let Some(k) = per.names.iter().position(|n| *n == self.name) {
                per.names.swap_remove(k);
            }
            empty = per.names.is_empty() && (per.ended || !per.off);
        }
        if empty {
            inner.by_session.remove(&self.session);
        }
        inner.total = inner.total.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_given_back_and_names_are_unique_per_session() {
        let seats = Arc::new(Seats::default());
        let a = seats.take("s1", "alice", 3).unwrap();
        assert_eq!(seats.take("s1", "alice", 3).unwrap_err(), SeatRefusal::NameTaken("alice".into()));
        let b = seats.take("s2", "alice", 3).unwrap();
        let _c = seats.take("s1", "bob", 3).unwrap();
        assert_eq!(seats.take("s1", "carol", 3).unwrap_err(), SeatRefusal::HubFull(3));
        assert_eq!((seats.count("s1"), seats.count("s2"), seats.total()), (2, 1, 3));
        drop(a);
        drop(b);
        assert_eq!((seats.count("s1"), seats.count("s2"), seats.total()), (1, 0, 1));
        assert!(seats.take("s1", "alice", 3).is_ok(), "the name is free again");
    }

    #[test]
    fn a_session_has_at_most_its_share_of_seats_and_the_pages_share_a_byte_budget() {
        let seats = Arc::new(Seats::default());
        let open: Vec<SeatPlace> =
            (0..SEATS_PER_SESSION).map(|k| seats.take("s1", &format!("p{k}"), 1000).unwrap()).collect();
        assert_eq!(seats.take("s1", "one more", 1000).unwrap_err(), SeatRefusal::SessionFull(SEATS_PER_SESSION));
        assert!(seats.take("s2", "elsewhere", 1000).is_ok());
        drop(open);
        assert!(seats.reserve(QUEUED_BYTES_TOTAL - 10));
        assert!(!seats.reserve(11), "the shared budget is spent");
        seats.release(QUEUED_BYTES_TOTAL - 10);
        assert!(seats.reserve(11));
    }

    #[test]
    fn an_ended_session_goes_with_its_last_seat_even_when_its_seats_were_off() {
        let seats = Arc::new(Seats::default());
        let open = seats.take("s1", "alice", 10).unwrap();
        seats.set_enabled("s1", false);
        seats.forget("s1");
        drop(open);
        assert!(seats.inner().by_session.is_empty(), "nothing kept for an ended session");
    }

    #[test]
    fn a_session_turned_off_refuses_seats_and_tells_open_ones() {
        let seats = Arc::new(Seats::default());
        let mut told = seats.subscribe();
        let _open = seats.take("s1", "alice", 10).unwrap();
        seats.set_enabled("s1", false);
        assert!(told.has_changed().unwrap());
        told.mark_unchanged();
        assert!(!seats.enabled("s1"));
        assert_eq!(seats.take("s1", "bob", 10).unwrap_err(), SeatRefusal::Off);
        assert!(seats.enabled("s2"));
        seats.set_enabled("s1", true);
        assert!(seats.take("s1", "bob", 10).is_ok());
        seats.forget("s1");
        assert_eq!(seats.count("s1"), 1, "open seats keep their places after forget");
    }
}
