//! The hub's control channel: its protocol (constants, the secret, request / reply / event
//! types, framing) and an async client for the hub and the tests. `CONTROL.md` at the crate
//! root is the specification; the server side lives in `server/control.rs`.
//!
//! A connection to the Troop port whose first line is `TROOP-HUB-CONTROL/1 <secret>\n` is a
//! control connection; after the line both directions carry frames (a 4-byte big-endian
//! length, then a UTF-8 JSON object).

mod client;
mod types;
pub mod wire;

pub use client::{ControlClient, ControlError, EventStream};
pub use types::{Counters, EvalKind, Event, EventKind, Performer, Request, Snapshot};

use crate::session::{constant_time_eq, ClientId};
use std::sync::Arc;

/// What a control connection's first line starts with (then the secret and `\n`).
pub const MAGIC: &[u8] = b"TROOP-HUB-CONTROL/1 ";

/// The longest first line, newline included.
pub const MAX_LINE: usize = 256;

/// The largest request frame body the server accepts (a larger one drops the connection).
pub const MAX_REQUEST: usize = 64 << 10;

/// The shortest secret: 32 hex digits, 128 bits.
pub const MIN_SECRET: usize = 32;

/// The longest secret that still fits the first line.
pub const MAX_SECRET: usize = MAX_LINE - MAGIC.len() - 1;

/// The environment variable the server reads the secret from (never a flag).
pub const SECRET_ENV: &str = "TROOP_CONTROL_SECRET";

/// Upstream Troop's default peer palette (`src/config.py`, `COLOURS["Peers"]`); a peer with
/// client id `id` is drawn in `PALETTE[id % 10]` (`src/interface/peer.py`, `PeerFormatting`).
pub const PALETTE: [&str; 10] =
    ["#66D9EF", "#F92672", "#ffd549", "#A6E22E", "#ff108f", "#fffd56", "#0589e7", "#c345f5", "#ff411f", "#05cc50"];

/// The colour index upstream Troop uses for a peer: `id % 10`, an index into [`PALETTE`].
pub fn peer_colour(id: ClientId) -> u8 {
    id.rem_euclid(PALETTE.len() as i64) as u8
}

/// The control secret. Its `Debug` shows nothing of it, and it has no `Display`.
#[derive(Clone)]
pub struct ControlSecret(Arc<[u8]>);

/// Why a secret is refused (the message never contains the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{SECRET_ENV} must be {MIN_SECRET} to {MAX_SECRET} hex digits (at least 128 bits)")]
pub struct SecretError;

impl ControlSecret {
    /// A secret of `MIN_SECRET..=MAX_SECRET` hex digits (either case).
    pub fn new(value: &str) -> Result<Self, SecretError> {
        let ok = (MIN_SECRET..=MAX_SECRET).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok {
            return Err(SecretError);
        }
        Ok(ControlSecret(Arc::from(value.as_bytes())))
    }

    /// Compares in time that depends only on the lengths.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(candidate, &self.0)
    }
}

impl std::fmt::Debug for ControlSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlSecret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn secrets_are_checked_and_never_printed() {
        let s = ControlSecret::new(SECRET).unwrap();
        assert_eq!(format!("{s:?}"), "ControlSecret(..)");
        assert!(s.matches(SECRET.as_bytes()));
        assert!(!s.matches(b"00112233445566778899aabbccddeefe"));
        assert!(ControlSecret::new(&SECRET[1..]).is_err(), "too short");
        assert!(ControlSecret::new(&SECRET.replace('f', "g")).is_err(), "not hex");
        assert!(ControlSecret::new(&"a".repeat(MAX_SECRET + 1)).is_err(), "does not fit the line");
        assert!(!SecretError.to_string().contains(SECRET));
    }

    #[test]
    fn colours_follow_upstream() {
        assert_eq!(peer_colour(0), 0);
        assert_eq!(peer_colour(9), 9);
        assert_eq!(peer_colour(10), 0);
        assert_eq!(peer_colour(61), 1);
    }
}
