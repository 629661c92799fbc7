//! [`Links`]: share links, which let their holder watch a running session's view, or replay
//! an archived performance, without its password. The owner (or the admin) makes one with an
//! expiry; it never grants typing. The hub keeps only each token's SHA-256, so a link cannot
//! be read back (its `id` names it for listing and revoking). Links live in the hub's memory:
//! a restart of the hub forgets them, and a session's go when it ends.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest a link may last.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Links one session or archived performance may have at once.
pub const PER_TARGET: usize = 50;
/// Links the hub holds at most.
pub const MAX_LINKS: usize = 10_000;

/// What a link opens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// The view of session `name` while it is the run `id` (not a later session of the name).
    Session { name: String, id: String },
    /// The archived performance `id`.
    Archive { id: String },
}

/// A link as its owner lists it (never its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub id: String,
    /// Unix times in seconds.
    pub created: u64,
    pub expires: u64,
}

/// Why no link was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("This already has {PER_TARGET} share links; revoke one first")]
    TooManyHere,
    #[error("The hub holds as many share links as it may ({MAX_LINKS}); try again later")]
    Full,
    #[error("A link must last between 1 second and 30 days")]
    BadExpiry,
    #[error("The hub has no randomness for a link right now")]
    NoRandomness,
}

struct Entry {
    target: Target,
    link: Link,
}

/// Every live link, by its token's digest.
#[derive(Default)]
pub struct Links {
    by_digest: Mutex<HashMap<[u8; 32], Entry>>,
}

/// A token as the hub keeps it.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `"30m"`, `"2h"`, `"1d 12h"` (humantime) or a number of seconds, as JSON gives it.
pub fn parse_expiry(value: &serde_json::Value) -> Result<Duration, LinkError> {
    let ttl = match value {
        serde_json::Value::Number(n) => n.as_u64().map(Duration::from_secs),
        serde_json::Value::String(s) => match s.trim().parse::<u64>() {
            Ok(secs) => Some(Duration::from_secs(secs)),
            Err(_) => humantime::parse_duration(s.trim()).ok(),
        },
        _ => None,
    };
    ttl.filter(|t| *t >= Duration::from_secs(1) && *t <= MAX_TTL).ok_or(LinkError::BadExpiry)
}

impl Links {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.by_digest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new link to `target` for `ttl`: its token (for the URL, shown once) and its record.
    pub fn create(&self, target: Target, ttl: Duration) -> Result<(String, Link), LinkError> {
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(LinkError::BadExpiry);
        }
        let token = crate::random::hex(32).ok_or(LinkError::NoRandomness)?;
        let id = crate::random::hex(8).ok_or(LinkError::NoRandomness)?;
        let now = unix_now();
        let mut map = self.entries();
        map.retain(|_, e| e.link.expires > now);
        if map.values().filter(|e| e.target == target).count() >= PER_TARGET {
            return Err(LinkError::TooManyHere);
        }
        if map.len() >= MAX_LINKS {
            return Err(LinkError::Full);
        }
        let link = Link { id, created: now, expires: now + ttl.as_secs() };
        map.insert(digest(&token), Entry { target, link: link.clone() });
        Ok((token, link))
    }

    /// What `token` opens now, if anything.
    pub fn opens(&self, token: &str) -> Option<Target> {
        let map = self.entries();
        map.get(&digest(token)).filter(|e| e.link.expires > unix_now()).map(|e| e.target.clone())
    }

    /// Whether the link whose token has this digest still holds (not expired or revoked).
    pub fn holds(&self, digest: &[u8; 32]) -> bool {
        self.entries().get(digest).is_some_and(|e| e.link.expires > unix_now())
    }

    /// The live links to `target`, oldest first.
    pub fn list(&self, target: &Target) -> Vec<Link> {
        let now = unix_now();
        let map = self.entries();
        let mut links: Vec<Link> =
            map.values().filter(|e| &e.target == target && e.link.expires > now).map(|e| e.link.clone()).collect();
        links.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        links
    }

    /// Revokes link `id` to `target`; false if it has no such link.
    pub fn revoke(&self, target: &Target, id: &str) -> bool {
        let mut map = self.entries();
        let before = map.len();
        map.retain(|_, e| !(&e.target == target && e.link.id == id));
        map.len() < before
    }

    /// Forgets the links to the session run `id` (it ended).
    pub fn forget_session(&self, id: &str) {
        self.entries().retain(|_, e| !matches!(&e.target, Target::Session { id: i, .. } if i == id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn session(id: &str) -> Target {
        Target::Session { name: "jam".into(), id: id.into() }
    }

    #[test]
    fn a_link_opens_its_target_until_revoked_or_its_run_ends() {
        let links = Links::default();
        let (token, link) = links.create(session("run1"), Duration::from_secs(60)).expect("created");
        assert_eq!(token.len(), 64, "256 bits");
        assert_eq!(links.opens(&token), Some(session("run1")));
        assert_eq!(links.opens("0".repeat(64).as_str()), None, "a made-up token");
        assert_eq!(links.list(&session("run1")), vec![link.clone()]);
        assert!(links.list(&session("run2")).is_empty(), "another run of the same name has none");
        assert!(!links.revoke(&session("run2"), &link.id), "revoked only through its own target");
        assert!(links.revoke(&session("run1"), &link.id));
        assert_eq!(links.opens(&token), None);
        let (again, _) = links.create(session("run1"), Duration::from_secs(60)).expect("created");
        let (archived, _) =
            links.create(Target::Archive { id: "run0".into() }, Duration::from_secs(60)).expect("created");
        links.forget_session("run1");
        assert_eq!(links.opens(&again), None, "the session ended");
        assert_eq!(links.opens(&archived), Some(Target::Archive { id: "run0".into() }));
    }

    #[test]
    fn links_are_capped_per_target_and_expiries_are_checked() {
        let links = Links::default();
        for _ in 0..PER_TARGET {
            links.create(session("r"), Duration::from_secs(60)).expect("under the cap");
        }
        assert_eq!(links.create(session("r"), Duration::from_secs(60)), Err(LinkError::TooManyHere));
        assert!(links.create(session("other"), Duration::from_secs(60)).is_ok());
        assert_eq!(links.create(session("x"), MAX_TTL + Duration::from_secs(1)), Err(LinkError::BadExpiry));
        assert_eq!(parse_expiry(&json!("30m")), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_expiry(&json!(90)), Ok(Duration::from_secs(90)));
        assert_eq!(parse_expiry(&json!("90")), Ok(Duration::from_secs(90)));
        assert_eq!(parse_expiry(&json!("1d 12h")), Ok(Duration::from_secs(36 * 3600)));
        for bad in [json!(0), json!(-5), json!("soon"), json!("31d"), json!(null), json!([1])] {
            assert_eq!(parse_expiry(&bad), Err(LinkError::BadExpiry), "{bad}");
        }
    }
}
