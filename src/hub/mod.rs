//! The hub's shared state: one [`Hub`] is shared by the TCP and HTTP front doors, so both
//! always agree. This file owns the state and the small accessors (configuration and its live
//! reload, the admin token, the public host); the lifecycles live beside it:
//! - [`start`]: starting a session (placement retries, the owner's channel, reclaiming);
//! - [`end`]: ending one for any reason, and shutting the hub down;
//! - [`supervise`]: the engine's events, reconcile, recovery after a restart, deadlines, nodes;
//! - [`views`]: what the front doors read (queries, lists, nodes, gauges, warnings);
//! - [`control`]: talking to session servers (arm, verify an owner, say why a session ends);
//! - [`live`]: one subscription per live session, for who is playing and what they do;
//! - [`live_sessions`]: every followed session's state, each behind a lock of its own;
//! - [`moderate`]: the owner removing a performer and locking the session;
//! - [`audience`]: who may watch a session in a browser, and admitting viewers to its feed;
//! - [`record`]: recording each followed session into the archive;
//! - [`pool`]: the warm pool of started, locked servers a start takes instead of waiting;
//! - [`outcome`]: why sessions end and why requests are refused.
//!
//! The registry sits behind a plain mutex held only for bookkeeping, never across an engine
//! call. Shutdown is one [`CancellationToken`]; starts run on a [`TaskTracker`] so shutdown
//! can wait for them.

mod audience;
mod control;
mod end;
mod live;
mod live_sessions;
#[cfg(test)]
mod live_tests;
mod moderate;
mod outcome;
mod pool;
mod record;
mod seats;
mod start;
mod supervise;
#[cfg(test)]
mod tests;
mod views;

pub use audience::{LobbyEntry, Watch, WatchError};
pub use live::{LiveView, FEED_BACKLOG};
pub use moderate::{removal_sentence, ModerationError, MAX_REASON};
pub use outcome::{EndReason, HubError};
pub use pool::{PoolInfo, MEMBER_MAX_AGE, REFILLS_AT_ONCE};
pub use seats::{SeatPlace, SeatRefusal, Seats};
pub use start::{Owned, StartRequest};
pub use views::{NodeInfo, PerformerInfo, SessionInfo};

use crate::archive::Archive;
use crate::config::Config;
use crate::gate::PasswordGate;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::runtime::Runtime;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

/// The hub.
pub struct Hub {
    config: RwLock<Arc<Config>>,
    registry: Mutex<Registry>,
    runtime: Arc<dyn Runtime>,
    /// Each running session's owner channel, by session id: the sentence to pass on when
    /// the session ends for a reason other than its owner.
    owners: Mutex<HashMap<String, mpsc::UnboundedSender<String>>>,
    /// The warm pool's own state (its members are in the registry).
    pool: pool::Pool,
    /// Starts in flight by session id: cancelled when the session is ended meanwhile.
    starting: Mutex<HashMap<String, CancellationToken>>,
    /// The live view of each followed session by id, and what stops following it.
    live: live_sessions::LiveSessions,
    /// Audience viewers watching now, in all.
    viewers: AtomicUsize,
    /// Where sessions are recorded, once the archive is open.
    archive: OnceLock<Archive>,
    /// The limits on guessing session passwords and the admin token (every front door).
    pub gate: PasswordGate,
    /// Browser seats by session, and each session's switch for them.
    pub seats: Arc<Seats>,
    /// Share links to running sessions' views and archived performances.
    pub links: crate::links::Links,
    /// Bumped when who may watch may have changed (viewers check again).
    audience_epoch: tokio::sync::watch::Sender<u64>,
    /// Cold starts at once ([`COLD_STARTS_AT_ONCE`]); the rest wait in request order (the
    /// semaphore is fair), so a burst does not drown the engine.
    cold_starts: tokio::sync::Semaphore,
    /// Servers being told to end and removed at once ([`Runtime::ends_at_once`]); the rest
    /// wait in order (the semaphore is fair), their owners already told. Every server that
    /// exits costs Docker 20.10 a walk of the host's whole connection-tracking table (one exit
    /// at a time: about a second each with the table nearly full). Told all at once, 1,000
    /// servers would queue 1,000 such walks, and a removal waiting behind them would take a
    /// busy engine for a gone one; a few at a time, each waits for a few walks only.
    ends: tokio::sync::Semaphore,
    public_host: String,
    /// Set when performers outside this network would be given an address they cannot reach.
    public_host_warning: Option<String>,
    /// Cancelled once the hub begins shutting down.
    shutdown: CancellationToken,
    /// Session starts under way (shutdown waits for them).
    starts: TaskTracker,
    pub metrics: Metrics,
    admin_token: RwLock<Option<SecretString>>,
    /// Set once the sessions left from before were adopted or removed (`recover`); until
    /// then reconciling must not take them for strays.
    recovered: AtomicBool,
    /// Set when a removal during shutdown found the engine not answering (said once; the
    /// runtime fails the removals left at once, and the next hub adopts or removes them).
    engine_gone_at_shutdown: AtomicBool,
}

/// Container starts the hub asks of the engine at once for sessions (Docker 20.10 on two
/// cores answers 50 concurrent creates slower than `engine_timeout`).
pub const COLD_STARTS_AT_ONCE: usize = 8;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Now on the hub's clock (tokio's, so tests can pause it), as the registry takes it.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// The 12-character form of a container or service id.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The address clients are given: `public_host`, else this machine's outbound address (found
/// the way upstream did, by routing a UDP socket; nothing is sent), else 127.0.0.1.
pub fn detect_public_host(config: &Config) -> String {
    if let Some(h) = &config.public_host {
        return h.clone();
    }
    let routed = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("8.8.8.8:80").map(|_| s))
        .and_then(|s| s.local_addr());
    match routed {
        Ok(a) if !a.ip().is_unspecified() => a.ip().to_string(),
        _ => "127.0.0.1".into(),
    }
}

/// True for an address only this network (or this machine) reaches.
fn local_only(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || v6.is_unspecified() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// A warning when the hub listens on every interface but gives performers a host that only
/// this network can reach: `public_host` unset (detected) or resolving to a loopback,
/// private or link-local address.
pub fn unreachable_public_host(config: &Config, public_host: &str) -> Option<String> {
    if !config.listen.ip().is_unspecified() {
        return None;
    }
    let addrs: Vec<IpAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(public_host, 0))
        .map(|a| a.map(|a| a.ip()).collect())
        .unwrap_or_default();
    let how = "set public_host in hub.yaml (or TROOP_HUB_PUBLIC_HOST) to this hub's DNS name or public address";
    match (&config.public_host, addrs.iter().all(local_only)) {
        (None, true) => Some(format!(
            "public_host is not set and the detected address {public_host} is local to this network: performers \
             outside it will not reach sessions; {how}"
        )),
        (None, false) => Some(format!(
            "public_host is not set: performers are given the detected address {public_host}; if they cannot reach \
             it, {how}"
        )),
        (Some(h), true) if addrs.is_empty() => {
            Some(format!("public_host {h} does not resolve here: performers may not reach sessions; {how}"))
        }
        (Some(h), true) => Some(format!(
            "public_host {h} is a loopback or private address: performers outside this network will not reach \
             sessions; {how}"
        )),
        (Some(_), false) => None,
    }
}

impl Hub {
    /// A hub with no nodes yet: call [`Hub::refresh_nodes`] (then [`Hub::recover`]) before
    /// serving, so sessions can be placed.
    pub fn new(config: Config, runtime: Arc<dyn Runtime>) -> Arc<Hub> {
        let public_host = detect_public_host(&config);
        let ends_at_once = runtime.ends_at_once().max(1);
        let public_host_warning = unreachable_public_host(&config, &public_host);
        if let Some(w) = &public_host_warning {
            warn!("{w}");
        }
        let registry = Registry::new(config.ports, config.max_sessions, config.max_sessions_per_address);
        Arc::new(Hub {
            config: RwLock::new(Arc::new(config)),
            registry: Mutex::new(registry),
            runtime,
            owners: Mutex::new(HashMap::new()),
            starting: Mutex::new(HashMap::new()),
            pool: pool::Pool::default(),
            live: live_sessions::LiveSessions::default(),
            viewers: AtomicUsize::new(0),
            archive: OnceLock::new(),
            gate: PasswordGate::default(),
            seats: Arc::default(),
            links: crate::links::Links::default(),
            cold_starts: tokio::sync::Semaphore::new(COLD_STARTS_AT_ONCE),
            ends: tokio::sync::Semaphore::new(ends_at_once),
            audience_epoch: tokio::sync::watch::Sender::new(0),
            public_host,
            public_host_warning,
            shutdown: CancellationToken::new(),
            starts: TaskTracker::new(),
            metrics: Metrics::default(),
            admin_token: RwLock::new(None),
            recovered: AtomicBool::new(false),
            engine_gone_at_shutdown: AtomicBool::new(false),
        })
    }

    /// Records every session followed from now on into `archive` (set once, at start).
    pub fn set_archive(&self, archive: Archive) {
        let _ = self.archive.set(archive);
    }

    /// The archive, if the hub keeps one.
    pub fn archive(&self) -> Option<&Archive> {
        self.archive.get()
    }

    /// Sets the admin token (from the environment or `admin_token_file`).
    pub fn set_admin_token(&self, token: Option<SecretString>) {
        if let Ok(mut t) = self.admin_token.write() {
            *t = token.filter(|t| !t.expose_secret().is_empty());
        }
    }

    /// Checks a presented admin token (as digests, in constant time). `None` when no token is
    /// configured.
    pub fn check_admin_token(&self, presented: &str) -> Option<bool> {
        let t = self.admin_token.read().ok()?;
        t.as_ref().map(|t| crate::gate::secret::same(t.expose_secret().as_bytes(), presented.as_bytes()))
    }

    /// Whether the hub has an admin token at all.
    pub fn has_admin_token(&self) -> bool {
        self.admin_token.read().is_ok_and(|t| t.is_some())
    }

    /// Applies a reloaded configuration. Keys that need a restart keep their running value
    /// (one warning each is returned); the rest applies to new sessions at once. Lowering the
    /// cap ends nothing.
    pub fn apply_config(&self, mut new: Config) -> Vec<String> {
        let old = self.config();
        let mut warnings = Vec::new();
        macro_rules! restart_only {
            ($($key:ident),*) => {$(
                if new.$key != old.$key {
                    warnings.push(format!("`{}` changes only with a restart; keeping the running value", stringify!($key)));
                    new.$key = old.$key.clone();
                }
            )*};
        }
        restart_only!(
            hub_id,
            listen,
            http_listen,
            public_host,
            network,
            session_port,
            bind_address,
            runtime,
            front_door,
            archive
        );
        if new.front_door && !new.control_channel {
            // The running front door needs the hub's own image (its --proxy-protocol).
            warnings.push(
                "`control_channel: false` needs `front_door: off`, which changes only with a restart; keeping control_channel: true"
                    .to_string(),
            );
            new.control_channel = true;
        }
        {
            let mut r = lock(&self.registry);
            if new.ports != old.ports {
                if let Err(why) = r.set_ports(new.ports) {
                    warnings.push(format!("`ports` cannot change now ({why}); keeping the running range"));
                    new.ports = old.ports;
                }
            }
            r.set_limits(new.max_sessions, new.max_sessions_per_address);
        }
        self.runtime.reconfigure(new.clone());
        let audience_changed = new.audience != old.audience;
        let seats_changed = new.browser_seats != old.browser_seats;
        let members_differ = pool::members_differ(&old, &new);
        if let Ok(mut c) = self.config.write() {
            *c = Arc::new(new);
        }
        self.pool_reconfigured(members_differ);
        if audience_changed {
            self.audience_changed();
        }
        if seats_changed {
            self.seats.changed();
        }
        warnings
    }

    /// The running configuration (shared, not copied: every connection reads it).
    pub fn config(&self) -> Arc<Config> {
        self.config.read().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn public_host(&self) -> &str {
        &self.public_host
    }

    /// The host performers dial for a session on a node: the node's own public host, else
    /// the hub's.
    fn host_for(&self, node_host: Option<&String>) -> String {
        node_host.cloned().unwrap_or_else(|| self.public_host.clone())
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    /// Cancelled once the hub begins shutting down (front doors stop accepting then).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}
