//! [`Grants`]: short-lived tokens that stand for a proved session password on the archive.
//! One password proof (one slow hash) yields a token bound to the archived sessions it
//! opened; the replay page then reads their summary, code and timeline with the token
//! (`X-Archive-Token`) instead of the password, so neither a replay's several requests nor a
//! tab reload costs another hash, and the page never keeps the password. A share link to a
//! performance yields a token too, marked as the link's: it reads only while the link holds
//! and never manages links. HTTP-only state: it lives beside the router, not in the hub.

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
    /// Given for a share link (the digest of its token): it reads only while the link holds,
    /// and never manages links.
    link: Option<[u8; 32]>,
}

/// What a token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proved {
    /// A proved password.
    Password,
    /// A share link (the digest of its token), which must still hold.
    Link([u8; 32]),
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
    /// A new token that opens archived sessions `ids` for [`GRANT_TTL`] (`link`: the digest of
    /// the share link's token it was given for, if any); `None` if the system has no randomness.
    pub fn issue_for(&self, ids: Vec<String>, link: Option<[u8; 32]>) -> Option<String> {
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
        map.insert(digest(&token), Grant { ids, expires: now + GRANT_TTL, link });
        Some(token)
    }

    /// What `token` stands for on archived session `id` now, if it opens it.
    pub fn granted(&self, token: &str, id: &str) -> Option<Proved> {
        let map = self.by_digest.lock().unwrap_or_else(|p| p.into_inner());
        let g = map.get(&digest(token)).filter(|g| g.expires > Instant::now() && g.ids.iter().any(|i| i == id))?;
        Some(g.link.map_or(Proved::Password, Proved::Link))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_only_its_own_sessions() {
        let grants = Grants::default();
        let token = grants.issue_for(vec!["a".into(), "b".into()], None).unwrap_or_default();
        assert_eq!(token.len(), 32);
        assert!(grants.granted(&token, "a").is_some() && grants.granted(&token, "b").is_some());
        assert!(grants.granted(&token, "c").is_none(), "not a session it was given for");
        assert!(grants.granted("0123456789abcdef0123456789abcdef", "a").is_none(), "a made-up token");
        let other = grants.issue_for(vec!["c".into()], None).unwrap_or_default();
        assert_ne!(token, other);
        let shared = grants.issue_for(vec!["c".into()], Some([7; 32])).unwrap_or_default();
        assert_eq!(grants.granted(&shared, "c"), Some(Proved::Link([7; 32])), "a share link's grant says so");
        assert_eq!(grants.granted(&other, "c"), Some(Proved::Password));
    }

    #[test]
    fn memory_stays_bounded() {
        let grants = Grants::default();
        for i in 0..(MAX_GRANTS + 10) {
            let _ = grants.issue_for(vec![i.to_string()], None);
        }
        assert!(grants.by_digest.lock().map(|m| m.len()).unwrap_or(0) <= MAX_GRANTS);
    }
}
