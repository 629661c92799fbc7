//! Starting a session: checks, then a warm pool member armed with the password when one is
//! ready, else a cold start: placement (a pool member gives way when the hub is full), a turn
//! in the queue for the engine, the runtime's start (moved to another port when a stranger
//! holds it, to another node when it fails on its own). Then the session goes live with its
//! owner's channel in place. An adopted session waiting for its owner is handed back to
//! whoever repeats its name with the same password.

use super::{control, lock, now, short, Hub, HubError};
use crate::registry::{ControlAccess, Gone, NewSession, Placement, RegistryError, Taken};
use crate::runtime::{Credentials, SessionSpec, StartError, Started};
use secrecy::{ExposeSecret, SecretString};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

/// How a session is asked for.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub name: String,
    pub password: SecretString,
    /// Not tied to the requesting connection.
    pub daemon: bool,
    /// The requester's address; `None` for the admin API (trusted).
    pub peer: Option<IpAddr>,
    /// API sessions end when this runs out.
    pub ttl: Option<Duration>,
}

/// A session the caller owns: its address, and a channel that yields the sentence to pass
/// on when the session ends for a reason other than the owner.
pub struct Owned {
    pub name: String,
    pub id: String,
    pub host: String,
    pub port: u16,
    pub ended: mpsc::UnboundedReceiver<String>,
}

/// The failures of one start so far: the first (what the performer hears) and the nodes
/// tried (never tried twice).
#[derive(Default)]
struct Failed {
    first: Option<StartError>,
    nodes: Vec<String>,
}

/// What to do after a start failed.
enum Next {
    Retry(Placement),
    GiveUp(HubError),
}

impl Hub {
    /// Starts a session and returns once its server accepts connections.
    ///
    /// The start runs on a task of its own, so a caller that goes away (a client hanging up)
    /// never cancels it half-way and leaves a server the registry does not know; shutdown
    /// waits for the starts in flight (and cancels them, so they undo themselves).
    pub async fn start_session(self: &Arc<Self>, req: StartRequest) -> Result<Owned, HubError> {
        let hub = self.clone();
        let result = self
            .starts
            .spawn(async move { hub.try_start(&req).await })
            .await
            .unwrap_or_else(|_| Err(HubError::StartFailed("the start was interrupted".into())));
        match &result {
            Ok(_) => self.metrics.request("server", "ok"),
            Err(e) => {
                self.metrics.request("server", "error");
                self.metrics.start_failed(e.label());
                if matches!(e, HubError::EngineDown | HubError::StartFailed(_)) {
                    self.metrics.docker_error();
                }
            }
        }
        result
    }

    async fn try_start(self: &Arc<Self>, req: &StartRequest) -> Result<Owned, HubError> {
        debug!(session = %req.name, daemon = req.daemon, "start requested");
        let config = self.config();
        let trusted = req.peer.is_none_or(|ip| config.is_trusted(ip));
        if req.daemon && !trusted {
            return Err(HubError::DaemonNotTrusted);
        }
        if self.shutdown.is_cancelled() {
            return Err(HubError::shutting_down());
        }
        let password_md5 = SecretString::from(troop_server::md5_hex(req.password.expose_secret()));
        // A session waiting for its owner (adopted after a restart) goes back to that owner;
        // API and daemon requests never take one over.
        if !req.daemon {
            let peer = req.peer.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            if let Some(owned) = self.reclaim(&req.name, password_md5.expose_secret(), peer).await? {
                return Ok(owned);
            }
        }
        let id = crate::random::session_id()
            .ok_or_else(|| HubError::StartFailed("the hub has no randomness for a session id".into()))?;
        let begun = Instant::now();
        let new = NewSession {
            id: id.clone(),
            name: req.name.clone(),
            password_md5: password_md5.clone(),
            owner_ip: req.peer,
            trusted,
            daemon: req.daemon,
            expires: req.ttl.map(|t| now() + t),
        };
        if let Some(owned) = self.start_warm(&new, &password_md5, begun).await {
            return owned;
        }
        self.pool.cold_starts.fetch_add(1, Ordering::Relaxed);
        let credentials = match config.control_channel {
            true => match control::new_secret() {
                Some(secret) => Credentials::Control(secret),
                None => return Err(HubError::StartFailed("the hub has no randomness for its secret".into())),
            },
            false => Credentials::PasswordMd5(password_md5.clone()),
        };
        // A full hub (or port range) takes a pool member out before it refuses anyone.
        let placed = loop {
            let reserved = lock(&self.registry).reserve(new.clone(), now());
            match reserved {
                Err(RegistryError::Full | RegistryError::NoPort) if self.give_way().await => continue,
                other => break other?,
            }
        };
        let span = info_span!("session", session = %req.name, id = %id);
        let cancel = self.shutdown.child_token();
        lock(&self.starting).insert(id.clone(), cancel.clone());
        let launch = self.launch(&id, &req.name, placed, credentials, &password_md5, cancel);
        let launched = launch.instrument(span.clone()).await;
        lock(&self.starting).remove(&id);
        match &launched {
            Ok(o) => {
                self.metrics.session_started(begun.elapsed());
                let elapsed_ms = begun.elapsed().as_millis() as u64;
                span.in_scope(|| info!(port = o.port, elapsed_ms, daemon = req.daemon, "session ready"));
            }
            Err(e) => span.in_scope(|| warn!(error = %e, "session start failed")),
        }
        launched
    }

    /// Takes a ready warm pool member for the session and arms it. `None` when no member is
    /// ready, or the one taken did not take its password (it is removed; start cold then).
    async fn start_warm(
        self: &Arc<Self>,
        new: &NewSession,
        password_md5: &SecretString,
        begun: Instant,
    ) -> Option<Result<Owned, HubError>> {
        let taken = match lock(&self.registry).take_member(new.clone(), self.pool.generation(), now()) {
            Ok(taken) => taken?,
            Err(e) => return Some(Err(e.into())),
        };
        let span = info_span!("session", session = %new.name, id = %taken.id);
        let armed = self.arm_member(taken, &new.name, password_md5).instrument(span.clone()).await;
        // The refill starts once this start is done, and a moment later (`keep_pool`).
        self.pool.poke_after_start();
        let armed = armed?;
        if let Ok(o) = &armed {
            self.pool.warm_starts.fetch_add(1, Ordering::Relaxed);
            self.metrics.session_started(begun.elapsed());
            let elapsed_us = begun.elapsed().as_micros() as u64;
            span.in_scope(|| info!(port = o.port, elapsed_us, daemon = new.daemon, "session ready (warm pool)"));
        }
        Some(armed)
    }

    /// Arms a taken pool member with the session's password, name and idle exit (counted
    /// from now), then makes it live. `None` if it did not take them (it is removed).
    async fn arm_member(
        self: &Arc<Self>,
        taken: Taken,
        name: &str,
        md5: &SecretString,
    ) -> Option<Result<Owned, HubError>> {
        let Taken { id, handle, control: access, .. } = taken;
        let idle = self.config().idle_exit;
        let t = Instant::now();
        let armed = control::arm(&access, md5, name, idle).await;
        debug!(arm_us = t.elapsed().as_micros() as u64, "armed over the control channel");
        let subscription = match armed {
            Ok(subscription) => subscription,
            Err(e) => {
                warn!(container = %short(&handle), error = %e, "a warm pool member did not take its password; starting cold");
                self.discard(&id, handle).await;
                return None;
            }
        };
        let started = Started { handle, control: access.addr };
        Some(self.go_live(&id, name, started, Some((access, subscription))).await)
    }

    /// Starts the placed session's server (retrying elsewhere while that helps), then makes
    /// it live. On failure nothing of it is left and its slot is freed.
    async fn launch(
        self: &Arc<Self>,
        id: &str,
        name: &str,
        mut placed: Placement,
        credentials: Credentials,
        password_md5: &SecretString,
        cancel: CancellationToken,
    ) -> Result<Owned, HubError> {
        let start_timeout = self.config().start_timeout;
        let mut failed = Failed::default();
        // Cold starts queue in request order, a few at a time; the slot is already held, so
        // the cap refuses the rest at once. The time limit counts from the head of the queue.
        let _permit = tokio::select! {
            permit = self.cold_starts.acquire() => permit.ok(),
            _ = cancel.cancelled() => None,
        };
        let deadline = Instant::now() + start_timeout;
        if cancel.is_cancelled() {
            return Err(
                match self.after_failed_start(id, StartError::Cancelled, deadline, start_timeout, &mut failed) {
                    Next::GiveUp(e) => e,
                    Next::Retry(_) => HubError::ended_while_starting(),
                },
            );
        }
        let started = loop {
            let spec = SessionSpec {
                id: id.into(),
                name: name.into(),
                pooled: false,
                node: placed.node.clone(),
                port: placed.port,
                credentials: credentials.clone(),
                deadline,
                cancel: cancel.clone(),
            };
            match self.runtime.start(spec).await {
                Ok(started) => break started,
                Err(e) => match self.after_failed_start(id, e, deadline, start_timeout, &mut failed) {
                    Next::Retry(p) => placed = p,
                    Next::GiveUp(err) => return Err(err),
                },
            }
        };
        let access = match credentials {
            Credentials::Control(secret) => Some(ControlAccess { addr: started.control, secret }),
            Credentials::PasswordMd5(_) => None,
        };
        let followed = match access {
            Some(access) => {
                let idle = self.config().idle_exit;
                match control::arm(&access, password_md5, name, idle).await {
                    Ok(subscription) => Some((access, subscription)),
                    Err(e) => {
                        warn!(error = %e, "the server did not take its password over the control channel");
                        self.discard(id, started.handle).await;
                        return Err(HubError::StartFailed(
                            "its server did not answer the hub (details in the hub's log)".into(),
                        ));
                    }
                }
            }
            None => None,
        };
        self.go_live(id, name, started, followed).await
    }

    /// Removes the server of a start that cannot go live, and frees the session's slot.
    async fn discard(&self, id: &str, handle: String) {
        lock(&self.registry).release(id);
        let removed = self.runtime.remove(handle).await;
        let gone = if removed.is_ok() { Gone::Removed } else { Gone::Unsure };
        lock(&self.registry).free(id, gone, now());
    }

    /// Decides, after a start failed (the runtime has undone it), whether to try another
    /// port or node, or to give up and free the session's slot.
    fn after_failed_start(
        &self,
        id: &str,
        e: StartError,
        deadline: Instant,
        start_timeout: Duration,
        failed: &mut Failed,
    ) -> Next {
        let mut registry = lock(&self.registry);
        let time_left = deadline.saturating_duration_since(Instant::now());
        match &e {
            StartError::PortTaken(port) if !time_left.is_zero() && registry.by_id(id).is_some() => {
                warn!(port, "host port taken by something else; trying the next one");
                return match registry.repick_port(id, now()) {
                    Ok(p) => Next::Retry(p),
                    Err(err) => Next::GiveUp(err.into()),
                };
            }
            // Another node only with a fair share of the time left; the performer hears of the
            // first failure (the later ones may be mere timeouts).
            StartError::NodeFailed { detail, .. } if time_left >= start_timeout / 3 => {
                failed.nodes.extend(registry.by_id(id).map(|s| s.node.clone()));
                if let Some(p) = registry.place_elsewhere(id, now(), &failed.nodes) {
                    warn!(error = %detail, node = %p.node, "the session failed on this node; trying another");
                    failed.first.get_or_insert(e);
                    return Next::Retry(p);
                }
            }
            _ => {}
        }
        warn!(error = %e, "the engine did not start the session");
        // Ended meanwhile (killed, hub stopping): whoever ended it has released it.
        let ended_meanwhile = registry.release(id).is_none();
        // A port held by a stranger is set aside, not handed out again.
        let gone = if matches!(e, StartError::PortTaken(_)) { Gone::Unsure } else { Gone::Removed };
        registry.free(id, gone, now());
        let cut_short = ended_meanwhile || matches!(e, StartError::Cancelled);
        Next::GiveUp(match (cut_short, self.shutdown.is_cancelled()) {
            (true, true) => HubError::shutting_down(),
            (true, false) => HubError::ended_while_starting(),
            _ => failed.first.take().unwrap_or(e).into(),
        })
    }

    /// The server listens (and is armed): record it and its owner's channel, mark it
    /// running and follow it (from the subscription its arming opened), unless it was ended
    /// meanwhile (then its server goes).
    async fn go_live(
        self: &Arc<Self>,
        id: &str,
        name: &str,
        started: Started,
        followed: Option<(ControlAccess, Option<control::Subscription>)>,
    ) -> Result<Owned, HubError> {
        let access = followed.as_ref().map(|(access, _)| access.clone());
        let handle = started.handle;
        let (tx, ended) = mpsc::unbounded_channel();
        let live = {
            let mut registry = lock(&self.registry);
            // The owner's channel is in place before anyone can see the session running, so
            // an end that comes right after is always passed on.
            let live = registry.set_handle(id, &handle, access.clone()) && registry.set_running(id);
            if access.is_none() {
                registry.set_reach(id, started.control);
            }
            if live {
                lock(&self.owners).insert(id.to_string(), tx);
            }
            live.then(|| registry.by_id(id).map(|s| (self.host_for(s.host.as_ref()), s.port))).flatten()
        };
        let Some((host, port)) = live else {
            self.discard(id, handle).await;
            return Err(match self.shutdown.is_cancelled() {
                true => HubError::shutting_down(),
                false => HubError::ended_while_starting(),
            });
        };
        if let Some((access, subscription)) = followed {
            // Followed before the owner hears of it: the archive and the live view see
            // everything performers do from their first login.
            self.follow(id, name, access, subscription);
        }
        info!(container = %short(&handle), port, "session live");
        Ok(Owned { name: name.into(), id: id.into(), host, port, ended })
    }

    /// Gives a running session that has no owner (adopted after a restart) to whoever knows
    /// its password: checked against the md5 the hub knows, else by its server, through the
    /// password gate like every other check (a wrong guess is charged to `peer` and the name;
    /// too many are refused). `Ok(None)`: no such session waits, or the password is not its.
    async fn reclaim(&self, name: &str, password_md5: &str, peer: IpAddr) -> Result<Option<Owned>, HubError> {
        let waiting = {
            let r = lock(&self.registry);
            r.running(name)
                .filter(|s| !s.owner_connected && !s.daemon)
                .map(|s| (s.id.clone(), s.password_md5.clone(), s.control.clone()))
        };
        let Some((id, known, access)) = waiting else { return Ok(None) };
        let charge = self.gate.take(peer, name).map_err(HubError::Refused)?;
        let same = match (known, access) {
            (Some(md5), _) => crate::gate::secret::same(md5.expose_secret().as_bytes(), password_md5.as_bytes()),
            (None, Some(access)) => control::verify(&access, password_md5).await,
            (None, None) => false,
        };
        if !same {
            charge.wrong();
            return Ok(None);
        }
        Ok(self.hand_over(name, &id))
    }

    /// Makes the caller the owner of adopted session `id`, unless someone was quicker.
    fn hand_over(&self, name: &str, id: &str) -> Option<Owned> {
        let id = id.to_string();
        let mut registry = lock(&self.registry);
        let s = registry.by_id(&id).filter(|s| !s.owner_connected)?;
        let port = s.port;
        let host = self.host_for(s.host.as_ref());
        let (tx, ended) = mpsc::unbounded_channel();
        lock(&self.owners).insert(id.clone(), tx);
        registry.set_owner_connected(&id, true);
        drop(registry);
        info!(session = %name, id = %id, "owner reclaimed an adopted session");
        Some(Owned { name: name.into(), id, host, port, ended })
    }
}
