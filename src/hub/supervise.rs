//! Watching the engine: session exits as they happen (and a reconcile when the event stream
//! breaks or every 30 s), adoption or removal of servers left by an earlier hub process,
//! session deadlines (max age, ttl), and the node list. Each loop runs until shutdown.

use super::{lock, now, short, EndReason, Hub};
use crate::config::Orphans;
use crate::registry::{ControlAccess, Session, State, LOCAL_NODE};
use crate::runtime::{Credentials, Existing, RuntimeError, RuntimeEvent};
use futures_util::StreamExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

/// How often the hub asks the runtime for its nodes.
pub const NODE_REFRESH: Duration = Duration::from_secs(3);

/// A server younger than this that is not running yet may still be starting.
const YOUNG: Duration = Duration::from_secs(10);

fn young(c: &Existing) -> bool {
    !c.running && c.created.is_some_and(|t| SystemTime::now().duration_since(t).is_ok_and(|age| age < YOUNG))
}

impl Hub {
    /// Asks the runtime for its nodes and updates the placement table; on failure the last
    /// known list stays.
    pub async fn refresh_nodes(&self) {
        match self.runtime.nodes().await {
            Ok(nodes) => {
                let mut r = lock(&self.registry);
                if r.nodes() != nodes.as_slice() {
                    let usable = nodes.iter().filter(|n| n.usable).count();
                    info!(nodes = nodes.len(), usable, "the session nodes changed");
                }
                r.set_nodes(nodes);
            }
            Err(e) => warn!(error = %e, "could not list the session nodes; keeping the last known list"),
        }
    }

    /// Refreshes the node list every few seconds (a drained node stops getting sessions).
    pub async fn watch_nodes(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(NODE_REFRESH) => {}
            }
            self.refresh_nodes().await;
        }
    }

    /// At start: find this hub's servers from before and adopt or remove them.
    pub async fn recover(self: &Arc<Self>) -> Result<(), RuntimeError> {
        let mut found = self.runtime.list().await?;
        // A hub killed mid-start leaves servers the engine is still starting: give them a few
        // seconds to settle (running: adopted; exited: removed) rather than force-removing
        // one under its own start (Docker 20.10 can then leave its network unremovable).
        let settle = tokio::time::Instant::now() + Duration::from_secs(5);
        while found.iter().any(young) && tokio::time::Instant::now() < settle {
            tokio::time::sleep(Duration::from_millis(250)).await;
            found = self.runtime.list().await?;
        }
        self.recovered.store(true, Ordering::SeqCst);
        for c in found {
            // A session started since this hub came up (recovery ran late: the engine was away).
            let current = c.session_id.as_ref().is_some_and(|sid| {
                let r = lock(&self.registry);
                r.by_id(sid).is_some() || r.member(sid).is_some()
            });
            if current {
                continue;
            }
            let c = match c.pooled {
                true => self.armed_as(c).await,
                false => c,
            };
            // An adoptable server is made reachable again first (the front door's port).
            let reachable = match c.running && c.name.is_some() {
                true => self.runtime.reopen(&c).await,
                false => Ok(()),
            };
            if let Err(e) = &reachable {
                warn!(session = ?c.name, container = %short(&c.handle), error = %e, "cannot listen on its port again");
            }
            if reachable.is_err() || !self.adopt(&c) {
                info!(container = %short(&c.handle), "removing a session server left from before");
                if let Err(e) = self.runtime.remove(c.handle.clone()).await {
                    warn!(container = %short(&c.handle), error = %e, "could not remove; the next reconcile retries");
                }
            }
        }
        // Only now does the hub know what it adopted (also after a late recovery).
        self.close_unfinished().await;
        Ok(())
    }

    /// A warm pool member from before: its labels name no session, so its server is asked.
    /// Armed, it is a session like any other (its server knows the name it was armed with);
    /// still locked, it was never handed out and goes (the pool refills). Never put back in
    /// the pool: a member this hub did not start is not handed out.
    async fn armed_as(&self, mut c: Existing) -> Existing {
        let access = match (&c.credentials, c.control, c.running) {
            (Some(Credentials::Control(secret)), Some(addr), true) => ControlAccess { addr, secret: secret.clone() },
            _ => return c,
        };
        c.name = match super::control::snapshot(&access).await {
            Some(snap) if snap.armed => snap.name,
            _ => None,
        };
        c
    }

    /// Registers a running server from before as a session waiting for its owner, when
    /// `orphans: adopt` and its labels say what it is, and follows it again. False if it
    /// should go. The owner's password is then checked by the server (control channel), or
    /// against the md5 in its environment (images without one).
    fn adopt(self: &Arc<Self>, c: &Existing) -> bool {
        let (Some(id), Some(name), Some(port)) = (&c.session_id, &c.name, c.port) else {
            return false;
        };
        let (password_md5, control) = match (&c.credentials, c.control) {
            (Some(Credentials::Control(secret)), Some(addr)) => {
                (None, Some(ControlAccess { addr, secret: secret.clone() }))
            }
            (Some(Credentials::PasswordMd5(md5)), _) => (Some(md5.clone()), None),
            _ => return false,
        };
        if self.config().orphans != Orphans::Adopt || !c.running {
            return false;
        }
        let created = c.created.unwrap_or_else(SystemTime::now);
        let age = SystemTime::now().duration_since(created).unwrap_or_default();
        let session = Session {
            id: id.clone(),
            name: name.clone(),
            node: c.node.clone().unwrap_or_else(|| LOCAL_NODE.to_string()),
            host: None,
            port,
            password_md5,
            control: control.clone(),
            reach: if control.is_none() { c.control } else { None },
            owner_ip: None,
            counts_for_address: false,
            daemon: false,
            owner_connected: false,
            handle: Some(c.handle.clone()),
            state: State::Running,
            created,
            started: now().checked_sub(age).unwrap_or_else(now),
            expires: None,
        };
        // (The registry's lock is released before following: `follow` takes it too.)
        let adopted = lock(&self.registry).adopt(session);
        match adopted {
            Ok(()) => {
                info!(session = %name, container = %short(&c.handle), "adopted a session from before the restart");
                if let Some(access) = control {
                    self.follow(id, name, access, None);
                }
                true
            }
            Err(e) => {
                warn!(session = %name, error = %e, "cannot adopt; removing");
                false
            }
        }
    }

    /// Ends sessions whose server exited, as the engine reports it; reconnects to the
    /// engine's event stream when it breaks and then reconciles with what is running.
    pub async fn watch_engine(self: Arc<Self>) {
        // Also reconcile now and then: it retries removals that failed while the engine was away.
        let mut every = tokio::time::interval(Duration::from_secs(30));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Exits are handled beside the event stream, each in a task of its own: the stream is
        // never held up (dockerd may drop events for a subscriber that does not read), and the
        // servers' removals wait for their turns in `finish`.
        loop {
            if let Ok(mut events) = self.runtime.events().await {
                loop {
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = every.tick() => self.reconcile().await,
                        ev = events.next() => match ev {
                            Some(Ok(RuntimeEvent::Exited { handle, reason, idle })) => {
                                let hub = self.clone();
                                tokio::spawn(async move { hub.exited(&handle, reason, idle).await });
                            }
                            Some(Err(e)) => {
                                self.metrics.docker_error();
                                warn!(error = %e, "lost the engine's event stream; reconnecting");
                                break;
                            }
                            None => break,
                        }
                    }
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            self.reconcile().await;
        }
    }

    async fn exited(&self, handle: &str, reason: String, idle: bool) {
        if self.member_exited(handle).await {
            return;
        }
        let id = lock(&self.registry).by_handle(handle).map(|s| s.id.clone());
        if let Some(id) = id {
            let why = if idle { EndReason::Idle } else { EndReason::ContainerExited(reason) };
            self.end_session(&id, why).await;
        }
    }

    /// Ends sessions whose servers are gone (events missed while the engine was away) and
    /// removes servers no session owns.
    pub(super) async fn reconcile(self: &Arc<Self>) {
        // The engine was away when the hub started: adopt or remove per `orphans` first.
        if !self.recovered.load(Ordering::SeqCst) && self.recover().await.is_err() {
            return;
        }
        // The registry first: a session that turns running after this snapshot is not judged
        // by a list taken before it existed.
        let running: Vec<(String, String)> = lock(&self.registry)
            .list()
            .filter(|s| s.state == State::Running)
            .filter_map(|s| Some((s.id.clone(), s.handle.clone()?)))
            .collect();
        let members = self.ready_members();
        let Ok(found) = self.runtime.list_brief().await else { return };
        let up: Vec<String> = found.iter().filter(|c| c.running).map(|c| c.handle.clone()).collect();
        self.check_members(members, &up).await;
        let up: std::collections::HashSet<&str> = up.iter().map(String::as_str).collect();
        let gone = running
            .into_iter()
            .filter(|(_, handle)| !up.contains(handle.as_str()))
            .map(|(id, _)| (id, EndReason::ContainerExited("the session container is gone".into())));
        self.end_together(gone.collect()).await;
        self.remove_strays(found).await;
        self.runtime.sweep().await;
    }

    /// Servers of this hub that no session owns (a removal that failed earlier), old enough
    /// not to be a start in progress.
    async fn remove_strays(&self, found: Vec<Existing>) {
        let grace = self.config().start_timeout + Duration::from_secs(10);
        let now = SystemTime::now();
        for c in found {
            let owned = {
                let r = lock(&self.registry);
                r.by_handle(&c.handle).is_some()
                    || r.member_by_handle(&c.handle).is_some()
                    // A session being ended (released, waiting for its turn) still owns its server.
                    || c.session_id.as_ref().is_some_and(|sid| r.by_id(sid).is_some() || r.member(sid).is_some() || r.holds(sid))
            };
            let old = c.created.is_none_or(|t| now.duration_since(t).is_ok_and(|age| age > grace));
            if !owned && old {
                info!(container = %short(&c.handle), "removing a session server no session owns");
                if let Err(e) = self.runtime.remove(c.handle.clone()).await {
                    warn!(container = %short(&c.handle), error = %e, "could not remove; will retry");
                }
            }
        }
    }

    /// Ends sessions older than `max_session_age` or past their ttl, checked every second.
    pub async fn enforce_deadlines(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let max = self.config().max_session_age;
            let now = now();
            let due: Vec<(String, EndReason)> = lock(&self.registry)
                .list()
                .filter_map(|s| {
                    let too_old = max.is_some_and(|m| now.saturating_duration_since(s.started) >= m);
                    let expired = s.expires.is_some_and(|e| now >= e);
                    let reason = if too_old { EndReason::MaxAge } else { EndReason::Expired };
                    (too_old || expired).then(|| (s.id.clone(), reason))
                })
                .collect();
            self.end_together(due).await;
        }
    }

    /// Ends `sessions` together (deadlines reached together, a reconcile after the engine was
    /// away): every owner is told at once, their servers end a few at a time (`finish`).
    async fn end_together(&self, sessions: Vec<(String, EndReason)>) {
        let ends = sessions.iter().map(|(id, reason)| self.end_session(id, reason.clone()));
        futures_util::future::join_all(ends).await;
    }
}
