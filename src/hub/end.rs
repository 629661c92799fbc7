//! Ending sessions: for any reason (owner left, killed, server exited, too old, hub
//! stopping) the owner is told why, every performer is told by their own server (MSG_KILL
//! with the hub's sentence, over the control channel), the server is stopped gently (SIGTERM
//! first) and removed, the name freed at once and the port once the server is gone. A
//! session still starting is cancelled and undoes itself. Shutting the hub down ends them all.

use super::{control, lock, now, short, EndReason, Hub};
use crate::registry::{Gone, Session, State};
use crate::runtime::RuntimeError;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::{info, warn};

/// How long an ended session's last events may take to reach the hub.
const DRAIN_EVENTS: Duration = Duration::from_secs(2);

/// How long shutdown waits for the archive to commit what it was given.
const SHUTDOWN_FLUSH: std::time::Duration = std::time::Duration::from_secs(10);

impl Hub {
    /// Ends session `id` if it is still registered. False if it was not.
    pub async fn end_session(&self, id: &str, reason: EndReason) -> bool {
        let Some(session) = lock(&self.registry).release(id) else {
            return false;
        };
        if let Some(start) = lock(&self.starting).get(id) {
            // Its start undoes itself and frees the slot.
            start.cancel();
        }
        // Browser seats say the hub's sentence when their connection closes, as native
        // performers hear it from their server.
        if let Some(sentence) = reason.performer_message() {
            self.seats.ending(id, &sentence);
        }
        // The server is told to end and removed first; the events it sent until then are
        // taken in (for the archive and viewers) before the hub stops following it.
        let followed = self.finish(session, reason.clone()).await;
        if followed {
            self.drain_follow(id, DRAIN_EVENTS).await;
        }
        self.unfollow(id, &reason);
        self.seats.forget(id);
        // Its slot may be the pool's again.
        self.pool.poke();
        true
    }

    /// Tells the owner and the performers, stops and removes the server. True if the server
    /// was running with a control channel (its event stream then ends with it).
    async fn finish(&self, session: Session, reason: EndReason) -> bool {
        let owner = lock(&self.owners).remove(&session.id);
        if let (Some(owner), Some(msg)) = (owner, reason.owner_message()) {
            let _ = owner.send(msg);
        }
        if session.state == State::Running {
            self.metrics.session_ended(reason.label());
        }
        let handle = session.handle.clone().unwrap_or_default();
        info!(session = %session.name, id = %session.id, container = %short(&handle), reason = reason.label(), "session ended");
        let followed = session.control.is_some() && session.state == State::Running;
        let Some(handle) = session.handle else { return followed };
        // A few servers end at once (`Runtime::ends_at_once`); the owner above was told at once.
        let _turn = self.ends.acquire().await;
        if self.engine_gone_at_shutdown.load(Ordering::Relaxed) {
            // The engine stopped answering during shutdown: this session is left running as it
            // is, for the next hub to adopt (its performers play on meanwhile).
            lock(&self.registry).free(&session.id, Gone::Unsure, now());
            return false;
        }
        // Performers hear why from their own server; if it cannot be told, the gentle stop
        // below still makes it say goodbye (troop-server sends MSG_KILL on SIGTERM).
        if let (Some(access), Some(sentence), State::Running) =
            (&session.control, reason.performer_message(), &session.state)
        {
            if !control::end(access, &sentence).await {
                info!(session = %session.name, "the server could not be told to end; stopping it");
            }
        }
        let removed = self.runtime.remove(handle.clone()).await;
        match &removed {
            Err(RuntimeError::Unreachable(_)) if self.shutdown.is_cancelled() => {
                if !self.engine_gone_at_shutdown.swap(true, Ordering::Relaxed) {
                    warn!("the Docker engine does not answer: the sessions not yet ended are left running for the next hub to adopt, and the servers not yet removed for it to remove (orphans)");
                }
            }
            Err(e) => {
                self.metrics.docker_error();
                warn!(session = %session.name, container = %short(&handle), error = %e, "could not remove the session's server");
            }
            Ok(()) => {}
        }
        let gone = if removed.is_ok() { Gone::Removed } else { Gone::Unsure };
        lock(&self.registry).free(&session.id, gone, now());
        followed
    }

    /// Admin kill by name.
    pub async fn kill(&self, name: &str) -> bool {
        let id = lock(&self.registry).get(name).map(|s| s.id.clone());
        match id {
            Some(id) => self.end_session(&id, EndReason::AdminKilled).await,
            None => false,
        }
    }

    /// The owner's connection closed or it sent `kill`.
    pub async fn owner_gone(&self, id: &str, killed: bool) {
        let reason = if killed { EndReason::OwnerKilled } else { EndReason::OwnerLeft };
        self.end_session(id, reason).await;
    }

    /// Ends every session (owners told at once, servers removed) and tears down what
    /// sessions share. Starts in flight are cancelled (new ones refused) and waited for: they
    /// undo themselves, so nothing is left behind.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.starts.close();
        let all: Vec<String> = lock(&self.registry).list().map(|s| s.id.clone()).collect();
        let ends = all.iter().map(|id| self.end_session(id, EndReason::HubShutdown));
        futures_util::future::join(futures_util::future::join_all(ends), self.drain_pool()).await;
        if let Some(archive) = self.archive.get() {
            // Every ended session's final code is on disk before the hub exits, unless the
            // archive cannot write (a full disk): then the hub does not wait for ever.
            if tokio::time::timeout(SHUTDOWN_FLUSH, archive.flush()).await.is_err() {
                warn!("the archive could not write everything before the hub stopped (see the archive's errors above)");
            }
        }
        let c = self.config();
        let limit = c.start_timeout + c.engine_timeout * 7;
        if tokio::time::timeout(limit, self.starts.wait()).await.is_err() {
            warn!("session starts still in flight at shutdown; the next hub adopts or removes them");
        }
        self.runtime.teardown().await;
    }
}
