//! The audience side of live sessions: who may watch a session ([`Hub::audience_access`]),
//! the owner's public switch, the lobby of public sessions, checking a session password or a
//! share link (`crate::links`) for a viewer, and admitting viewers to a session's feed within the caps (a [`Watch`] holds a
//! viewer's place until it is dropped).

use super::{control, live::Followed, lock, now, Hub};
use crate::audience::Access;
use crate::config::Audience;
use axum::extract::ws::Utf8Bytes;
use secrecy::ExposeSecret;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Why a viewer cannot watch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("No session named '{0}' is running")]
    NoSession(String),
    #[error("The session '{0}' cannot be watched: its server has no control channel")]
    NotFollowed(String),
    #[error("The session '{name}' has as many viewers as the hub allows ({cap}); try again later")]
    SessionFull { name: String, cap: usize },
    #[error("The hub has as many viewers as it allows ({0}); try again later")]
    HubFull(usize),
}

/// A viewer admitted to a session's feed: the snapshot to start from (none yet if the hub has
/// not heard from the server; it follows on the feed) and the feed. Dropping it frees the place.
pub struct Watch {
    /// The snapshot's messages (more than one for a large document), shared by every viewer.
    pub snapshot: Option<Arc<[Utf8Bytes]>>,
    pub feed: broadcast::Receiver<Utf8Bytes>,
    _place: ViewerPlace,
}

struct ViewerPlace {
    hub: Arc<Hub>,
    id: String,
}

impl Drop for ViewerPlace {
    fn drop(&mut self) {
        self.hub.viewers.fetch_sub(1, Ordering::Relaxed);
        self.hub.live.with(&self.id, |f| {
            f.viewers = f.viewers.saturating_sub(1);
            // The last viewer's receiver went before its place (field order in `Watch`).
            if f.viewers == 0 {
                f.feed = None;
            }
        });
    }
}

/// A session in the lobby: its view is public.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LobbyEntry {
    pub name: String,
    pub performers: usize,
    pub age_seconds: u64,
    /// Statistics of the performers playing now, by name.
    pub stats: crate::audience::StatsByName,
}

impl Hub {
    /// How session `name`'s view may be watched now; `None` if no such session is running.
    pub fn audience_access(&self, name: &str) -> Option<Access> {
        let id = lock(&self.registry).running(name).map(|s| s.id.clone())?;
        let public = self.live.with(&id, |f| f.public).unwrap_or(false);
        Some(match self.config().audience {
            Audience::Off => Access::Off,
            Audience::Public => Access::Public,
            Audience::Password if public => Access::Public,
            Audience::Password => Access::Password,
        })
    }

    /// Opens session `name`'s view to everyone, or closes it again. False if the hub does
    /// not follow such a session.
    pub fn set_audience_public(&self, name: &str, public: bool) -> bool {
        let Some(id) = lock(&self.registry).running(name).map(|s| s.id.clone()) else { return false };
        let switched = self.live.with(&id, |f| f.set_public(public)).is_some();
        if switched {
            self.audience_changed();
        }
        switched
    }

    /// Sessions whose view is public now, by name (the status page's lobby).
    pub fn lobby(&self) -> Vec<LobbyEntry> {
        let everyone = match self.config().audience {
            Audience::Off => return Vec::new(),
            Audience::Public => true,
            Audience::Password => false,
        };
        let registry = lock(&self.registry);
        let now = now();
        let mut lobby: Vec<LobbyEntry> = registry
            .list()
            .filter_map(|s| {
                let (performers, stats) = self.live.with(&s.id, |f| {
                    let mut stats = f.stats();
                    stats.retain(|name, _| f.view.performers.iter().any(|p| &p.name == name));
                    (everyone || f.public).then_some((f.view.performers.len(), stats))
                })??;
                let age_seconds = now.saturating_duration_since(s.started).as_secs();
                Some(LobbyEntry { name: s.name.clone(), performers, age_seconds, stats })
            })
            .collect();
        lobby.sort_by(|a, b| a.name.cmp(&b.name));
        lobby
    }

    /// Whether `password` is running session `name`'s password (`None`: no such session),
    /// judged like a Troop server judges it: by its md5, against what the hub knows, else by
    /// the session's own server (sessions adopted after a restart).
    pub async fn check_session_password(&self, name: &str, password: &str) -> Option<bool> {
        let md5 = troop_server::md5_hex(password);
        let (known, access) = {
            let r = lock(&self.registry);
            let s = r.running(name)?;
            (s.password_md5.clone(), s.control.clone())
        };
        Some(match (known, access) {
            (Some(known), _) => crate::gate::secret::same(known.expose_secret().as_bytes(), md5.as_bytes()),
            (None, Some(access)) => control::verify(&access, &md5).await,
            (None, None) => false,
        })
    }

    /// The share-link target of running session `name` (this run of it).
    pub fn link_target(&self, name: &str) -> Option<crate::links::Target> {
        let id = lock(&self.registry).running(name)?.id.clone();
        Some(crate::links::Target::Session { name: name.to_string(), id })
    }

    /// Whether share link `token` opens running session `name`'s view now.
    pub fn link_opens_session(&self, name: &str, token: &str) -> bool {
        self.links.opens(token).is_some_and(|t| Some(t) == self.link_target(name))
    }

    /// Revokes link `link` to running session `name`; viewers it let in are let go.
    pub fn revoke_session_link(&self, name: &str, link: &str) -> bool {
        let revoked = self.link_target(name).is_some_and(|t| self.links.revoke(&t, link));
        if revoked {
            self.audience_changed();
        }
        revoked
    }

    /// Whether a viewer could be admitted to session `name` now (nothing is reserved).
    pub fn can_watch(&self, name: &str) -> Result<(), WatchError> {
        let config = self.config();
        let id = lock(&self.registry)
            .running(name)
            .map(|s| s.id.clone())
            .ok_or_else(|| WatchError::NoSession(name.to_string()))?;
        let viewers = self.live.with(&id, |f| f.viewers).ok_or_else(|| WatchError::NotFollowed(name.to_string()))?;
        if viewers >= config.audience_viewers_per_session {
            return Err(WatchError::SessionFull { name: name.to_string(), cap: config.audience_viewers_per_session });
        }
        if self.viewers.load(Ordering::Relaxed) >= config.audience_viewers_total {
            return Err(WatchError::HubFull(config.audience_viewers_total));
        }
        Ok(())
    }

    /// Changes whenever who may watch may have changed (a public switch, a reload): viewers
    /// check again then.
    pub fn audience_epoch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.audience_epoch.subscribe()
    }

    pub(super) fn audience_changed(&self) {
        self.audience_epoch.send_modify(|n| *n += 1);
    }

    /// Admits a viewer to session `name`'s feed, within the per-session and total caps.
    pub fn watch(self: &Arc<Self>, name: &str) -> Result<Watch, WatchError> {
        let config = self.config();
        let id = lock(&self.registry)
            .running(name)
            .map(|s| s.id.clone())
            .ok_or_else(|| WatchError::NoSession(name.to_string()))?;
        let admitted = self.live.with(&id, |f: &mut Followed| {
            if f.viewers >= config.audience_viewers_per_session {
                return Err(WatchError::SessionFull {
                    name: name.to_string(),
                    cap: config.audience_viewers_per_session,
                });
            }
            let total = config.audience_viewers_total;
            let taken =
                self.viewers.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < total).then_some(n + 1));
            if taken.is_err() {
                return Err(WatchError::HubFull(total));
            }
            f.viewers += 1;
            // Serialised once per change of the session, shared by every viewer who arrives.
            Ok((f.snapshot_text(), f.subscribe()))
        });
        let (snapshot, feed) = admitted.ok_or_else(|| WatchError::NotFollowed(name.to_string()))??;
        Ok(Watch { snapshot, feed, _place: ViewerPlace { hub: self.clone(), id } })
    }

    /// Viewers watching now, in all.
    pub fn viewer_count(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }
}
