//! The owner's moderation of a running session, carried out by its server over the control
//! channel: removing a performer (who gets the hub's sentence, Troop's MSG_KILL, so their
//! client shows it) and locking the session to new performers. Both land in the session's
//! event order, so viewers, the archive's timeline and the replay show them; the hub logs them
//! without passwords. The caller has checked the owner's password or the admin token.

use super::{control, lock, Hub};
use crate::audience::StatsByName;
use crate::registry::ControlAccess;
use tracing::info;

/// The most characters of an owner's reason a removed performer is shown.
pub const MAX_REASON: usize = 200;

/// Why a moderation request did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ModerationError {
    #[error("No session named '{0}' is running")]
    NoSession(String),
    #[error("Session '{0}' runs an image without the hub's control channel, which cannot do this")]
    NoControl(String),
    #[error("Nobody called '{performer}' is playing in session '{session}'")]
    NoPerformer { session: String, performer: String },
    #[error("Session '{session}' did not answer: {error}")]
    Unanswered { session: String, error: String },
}

/// The sentence a removed performer reads: the hub's, then the owner's reason (one line,
/// control characters dropped, at most [`MAX_REASON`] characters).
pub fn removal_sentence(reason: Option<&str>) -> String {
    let base = "Troop Hub: the session's owner removed you from the session";
    let reason: String = reason
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect::<String>()
        .trim()
        .to_string();
    if reason.is_empty() {
        format!("{base}.")
    } else {
        format!("{base}: {reason}")
    }
}

/// What a control call's failure says, for session `name`.
fn unanswered(name: &str) -> impl Fn(troop_server::control::ControlError) -> ModerationError + Copy + '_ {
    move |e| ModerationError::Unanswered { session: name.to_string(), error: e.to_string() }
}

impl Hub {
    /// Session `name`'s id and control channel.
    fn control_of(&self, name: &str) -> Result<(String, ControlAccess), ModerationError> {
        let registry = lock(&self.registry);
        let session = registry.running(name).ok_or_else(|| ModerationError::NoSession(name.to_string()))?;
        let access = session.control.clone().ok_or_else(|| ModerationError::NoControl(name.to_string()))?;
        Ok((session.id.clone(), access))
    }

    /// Removes performer `performer` from session `name`; they read [`removal_sentence`].
    pub async fn remove_performer(
        &self,
        name: &str,
        performer: &str,
        reason: Option<&str>,
    ) -> Result<Vec<i64>, ModerationError> {
        let (id, access) = self.control_of(name)?;
        let unanswered = unanswered(name);
        self.seats.removing(&id, performer);
        let removed = async {
            let mut client = control::connect(&access).await?;
            client.remove(performer, &removal_sentence(reason)).await
        };
        let ids = match removed.await {
            Ok(ids) => ids,
            Err(e) => {
                self.seats.take_removed(&id, performer);
                return Err(unanswered(e));
            }
        };
        if ids.is_empty() {
            self.seats.take_removed(&id, performer);
            return Err(ModerationError::NoPerformer { session: name.to_string(), performer: performer.to_string() });
        }
        self.metrics.moderation(false);
        info!(session = %name, performer, clients = ?ids, "performer removed by the session's owner");
        Ok(ids)
    }

    /// Locks session `name` to new performers, or unlocks it; whether it is locked now.
    pub async fn lock_session(&self, name: &str, locked: bool) -> Result<bool, ModerationError> {
        let (id, access) = self.control_of(name)?;
        let unanswered = unanswered(name);
        let mut client = control::connect(&access).await.map_err(unanswered)?;
        let now = client.lock(locked).await.map_err(unanswered)?;
        // Said at once (its event, which says the same, may still be on its way).
        let was = self.live.with(&id, |f| std::mem::replace(&mut f.view.locked, now));
        if now && was == Some(false) {
            self.metrics.moderation(true);
        }
        info!(session = %name, locked = now, "session locked to new performers by its owner (or unlocked)");
        Ok(now)
    }

    /// Whether running session `name`'s owner locked it to new performers.
    pub fn session_locked(&self, name: &str) -> bool {
        let Some(id) = lock(&self.registry).running(name).map(|s| s.id.clone()) else { return false };
        self.live.with(&id, |f| f.view.locked).unwrap_or(false)
    }

    /// Statistics per performer of running session `name`, if the hub follows it.
    pub fn session_stats(&self, name: &str) -> Option<StatsByName> {
        let id = lock(&self.registry).running(name)?.id.clone();
        self.live.with(&id, |f| f.stats())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sentence_keeps_one_short_line_of_the_reason() {
        assert_eq!(removal_sentence(None), "Troop Hub: the session's owner removed you from the session.");
        assert_eq!(removal_sentence(Some("  ")), removal_sentence(None));
        assert_eq!(
            removal_sentence(Some("spam\nagain")),
            "Troop Hub: the session's owner removed you from the session: spam again"
        );
        let long = removal_sentence(Some(&"é".repeat(500)));
        assert_eq!(long.chars().filter(|&c| c == 'é').count(), MAX_REASON);
    }
}
