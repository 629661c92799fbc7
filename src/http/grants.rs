//! [`Grants`]: short-lived tokens that stand for a proved session password on the archive.
//! One password proof (one slow hash) yields a token bound to the archived sessions it
//! opened; the replay page then reads their summary, code and timeline with the token
//! (`X-Archive-Token`) instead of the password, so neither a replay's several requests nor a
//! tab reload costs another hash, and the page never keeps the password. HTTP-only state:
//! it lives beside the router, not in the hub.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a token opens its sessions.
pub const GRANT_TTL: Duration = Duration::from_secs(15 * 60);
/// Tokens held at most; the oldest goes first.
pub const MAX_GRANTS: usize = 10_000;

struct Grant {
    ids: Vec<String>,
    expires: Instant,
}

/// Tokens by their SHA-256 (a token is never kept as given).
#[derive(Default)]
pub struct Grants {
    by_digest: Mutex<HashMap<[u8; 32], Grant>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Grants {
    /// A new token that opens archived sessions `ids` for [`GRANT_TTL`]; `None` if the system
    /// has no randomness.
    pub fn issue(&self, ids: Vec<String>) -> Option<String> {
        let token = crate::random::hex(16)?;
        let now = Instant::now();
        let mut map = self.by_digest.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_GRANTS {
            map.retain(|_, g| g.expires > now);
        }
        if map.len() >= MAX_GRANTS {
            if let Some(oldest) = map.iter().min_by_key(|(_, g)| g.expires).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(digest(&token), Grant { ids, expires: now + GRANT_TTL });
        Some(token)
    }

    /// Whether `token` opens archived session `id` now.
    pub fn allows(&self, token: &str, id: &str) -> bool {
        let map = self.by_digest.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&digest(token)).is_some_and(|g| g.expires > Instant::now() && g.ids.iter().any(|i| i == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_only_its_own_sessions() {
        let grants = Grants::default();
        let token = grants.issue(vec!["a".into(), "b".into()]).unwrap_or_default();
        assert_eq!(token.len(), 32);
        assert!(grants.allows(&token, "a") && grants.allows(&token, "b"));
        assert!(!grants.allows(&token, "c"), "not a session it was given for");
        assert!(!grants.allows("0123456789abcdef0123456789abcdef", "a"), "a made-up token");
        let other = grants.issue(vec!["c".into()]).unwrap_or_default();
        assert_ne!(token, other);
    }

    #[test]
    fn memory_stays_bounded() {
        let grants = Grants::default();
        for i in 0..(MAX_GRANTS + 10) {
            let _ = grants.issue(vec![i.to_string()]);
        }
        assert!(grants.by_digest.lock().map(|m| m.len()).unwrap_or(0) <= MAX_GRANTS);
    }
}
