//! What the hub's control channel sees of a session: its password (arming, verifying), the
//! numbered events in the session's one order, the joined performers and the counters.
//!
//! Every event takes the next sequence number whether or not anyone listens; the event itself
//! is built only while the server has a subscriber ([`Session::set_observed`]), so an
//! unobserved session pays one increment per event.

use super::{ClientId, Session};
use crate::control::{peer_colour, EvalKind, EventKind, Performer};
use crate::message::{Body, Message};
use std::time::Instant;

/// The session's event counter, the events not yet taken, and its totals.
#[derive(Debug, Default)]
pub(super) struct Observer {
    seq: u64,
    on: bool,
    pending: Vec<(u64, EventKind)>,
    pub(super) operations: u64,
    pub(super) evaluations: u64,
}

impl Session {
    /// Sets the password md5 (a locked session accepts logins from now on). The caller checks
    /// that it is an md5 digest.
    pub fn arm(&mut self, password_md5: &str) {
        self.password_md5 = Some(password_md5.to_string());
    }

    /// Whether `password_md5` is the session's, in constant time; false while locked.
    pub fn verify(&self, password_md5: &str) -> bool {
        match &self.password_md5 {
            Some(own) => super::constant_time_eq(password_md5.as_bytes(), own.as_bytes()),
            None => false,
        }
    }

    /// False while locked.
    pub fn is_armed(&self) -> bool {
        self.password_md5.is_some()
    }

    /// The number of the last event.
    pub fn seq(&self) -> u64 {
        self.obs.seq
    }

    /// Operations applied and evaluations relayed since the start.
    pub fn totals(&self) -> (u64, u64) {
        (self.obs.operations, self.obs.evaluations)
    }

    /// Whether to build events for [`Session::drain_events`]; turning it off drops any pending.
    pub fn set_observed(&mut self, on: bool) {
        self.obs.on = on;
        if !on {
            self.obs.pending.clear();
        }
    }

    /// Events since the last call, with their numbers (none while not observed).
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, (u64, EventKind)> {
        self.obs.pending.drain(..)
    }

    /// Joined, connected performers in the order they first joined; `unix_ms` converts a
    /// join time.
    pub fn performers(&self, unix_ms: impl Fn(Instant) -> u64) -> Vec<Performer> {
        let connected = self.peers.iter().filter(|p| p.connected);
        connected
            .map(|p| Performer {
                id: p.id,
                name: p.name.clone(),
                colour: peer_colour(p.id),
                since_ms: unix_ms(p.since),
                address: p.ip.to_string(),
            })
            .collect()
    }

    /// Numbers the next event, and records it if observed.
    pub(super) fn emit(&mut self, make: impl FnOnce(&Session) -> EventKind) {
        self.obs.seq += 1;
        if self.obs.on {
            let event = make(self);
            self.obs.pending.push((self.obs.seq, event));
        }
    }

    pub(super) fn join_event(&self, id: ClientId) -> EventKind {
        match self.peers.iter().find(|p| p.id == id) {
            Some(p) => EventKind::Join { id, name: p.name.clone(), colour: peer_colour(id), address: p.ip.to_string() },
            None => EventKind::Join { id, name: String::new(), colour: peer_colour(id), address: String::new() },
        }
    }

    /// The event for a message relayed as it is (evaluate, select, console), if it has one.
    pub(super) fn observe_relay(&mut self, msg: &Message) {
        let src = msg.src_id;
        match &msg.body {
            Body::EvaluateString { string, .. } => {
                self.obs.evaluations += 1;
                self.emit(|_| EventKind::Evaluate {
                    author: src,
                    kind: EvalKind::String,
                    text: string.clone(),
                    start: None,
                    end: None,
                });
            }
            &Body::EvaluateBlock { start, end, .. } => {
                self.obs.evaluations += 1;
                self.emit(|s| EventKind::Evaluate {
                    author: src,
                    kind: EvalKind::Block,
                    text: block_text(&s.document, start, end),
                    start: Some(start),
                    end: Some(end),
                });
            }
            &Body::Select { start, end, .. } => self.emit(|_| EventKind::Select { id: src, start, end }),
            Body::Console { string } => self.emit(|_| EventKind::Console { author: src, text: string.clone() }),
            _ => {}
        }
    }
}

/// The text a Troop client evaluates for EVALUATE_BLOCK `start`, `end` (upstream
/// `Peer.highlight`): document lines `start..end`, 1-based, `end` excluded, a single line
/// when `start == end`, joined with `\n`. Line numbers below 1 and past the last line are
/// left out (upstream's Tk widget would repeat line 1 or add empty lines), so the text is never
/// longer than the document.
pub fn block_text(document: &str, start: i64, end: i64) -> String {
    let end = if start == end { end.saturating_add(1) } else { end };
    let first = start.max(1);
    if end <= first {
        return String::new();
    }
    let skip = usize::try_from(first - 1).unwrap_or(usize::MAX);
    let take = usize::try_from(end - first).unwrap_or(usize::MAX);
    let lines: Vec<&str> = document.split('\n').skip(skip).take(take).collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::block_text;

    #[test]
    fn block_text_follows_upstream_highlight() {
        let doc = "a\nbb\nccc";
        assert_eq!(block_text(doc, 1, 1), "a");
        assert_eq!(block_text(doc, 2, 2), "bb");
        assert_eq!(block_text(doc, 1, 3), "a\nbb");
        assert_eq!(block_text(doc, 2, 9), "bb\nccc");
        assert_eq!(block_text(doc, 0, 2), "a");
        assert_eq!(block_text(doc, 3, 2), "");
        assert_eq!(block_text(doc, 7, 7), "");
        assert_eq!(block_text(doc, i64::MIN, i64::MAX), doc);
        assert_eq!(block_text("", 1, 1), "");
    }
}
