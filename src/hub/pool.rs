//! The warm pool: `warm_pool` session servers per node kept started, listening and locked
//! (their server refuses every login until armed), so a start only takes one and arms it over
//! the control channel instead of waiting for a container. [`Hub::keep_pool`] refills it in
//! the background (a few starts at once, backing off while starts fail), recycles members
//! of an older configuration (image, limits, arguments) or past [`MEMBER_MAX_AGE`], and
//! removes the rest at shutdown. The bookkeeping (slots, the cap, taking a member once) is
//! the registry's ([`crate::registry::Member`]).

use super::{control, lock, now, short, Hub};
use crate::config::Config;
use crate::registry::{ControlAccess, Gone, Member, Ready};
use crate::runtime::{Credentials, SessionSpec, StartError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

/// Pool members started at once.
pub const REFILLS_AT_ONCE: usize = 2;
/// A member older than this is replaced (an image rebuilt under the same tag gets used).
pub const MEMBER_MAX_AGE: Duration = Duration::from_secs(30 * 60);
/// How often the pool is looked at without being poked.
const TICK: Duration = Duration::from_secs(1);
/// How long a refill waits after a start took a member (see `keep_pool`); other pokes refill at once.
const REFILL_SETTLE: Duration = Duration::from_millis(100);
/// The longest wait after failed refills.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The pool's state outside the registry.
#[derive(Default)]
pub struct Pool {
    /// Bumped when a reload changes what members are started with.
    generation: AtomicU64,
    /// Wakes the keeper (a member taken, a session ended, a reload).
    poke: Notify,
    /// The last poke came from a start that took a member: the keeper lets it settle first.
    settle: AtomicBool,
    /// Members being started, by id, and what cancels each.
    filling: Mutex<HashMap<String, CancellationToken>>,
    /// Refills since the hub started: ready, failed.
    pub refilled: AtomicU64,
    pub refill_failures: AtomicU64,
    /// Starts served from the pool, and cold.
    pub warm_starts: AtomicU64,
    pub cold_starts: AtomicU64,
    /// Failed refills in a row, and when the next may be tried.
    backoff: Mutex<(u32, Option<Instant>)>,
}

/// The warm pool now: session servers started and locked ahead of demand (status page,
/// `GET /api/v1/nodes`, metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PoolInfo {
    /// Members wanted now (`warm_pool` per usable node, within the session cap).
    pub target: usize,
    /// Started, locked, ready to be taken by a start.
    pub ready: usize,
    /// Being started.
    pub starting: usize,
    /// Members that became ready, and member starts that failed, since the hub started.
    pub refilled: u64,
    pub refill_failures: u64,
    /// Session starts served from the pool, and by starting a container.
    pub warm_starts: u64,
    pub cold_starts: u64,
}

impl Pool {
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Wakes the keeper.
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// Wakes the keeper after a start took a member: it refills [`REFILL_SETTLE`] later.
    pub fn poke_after_start(&self) {
        self.settle.store(true, Ordering::SeqCst);
        self.poke.notify_one();
    }

    fn filling(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        lock(&self.filling)
    }
}

/// Whether members started under `old` must be replaced under `new`.
pub fn members_differ(old: &Config, new: &Config) -> bool {
    (&old.image, &old.limits, &old.user, &old.session_args, old.control_channel)
        != (&new.image, &new.limits, &new.user, &new.session_args, new.control_channel)
}

impl Hub {
    /// The pool now.
    pub fn pool_info(&self) -> PoolInfo {
        let per_node = self.config().pool_size();
        let r = lock(&self.registry);
        let usable = r.nodes().iter().filter(|n| n.usable).count();
        let room = r.max_sessions().saturating_sub(r.len());
        let (ready, starting) = r.members().fold((0, 0), |(a, b), m| match m.ready.is_some() {
            true => (a + 1, b),
            false => (a, b + 1),
        });
        PoolInfo {
            target: (per_node * usable).min(room),
            ready,
            starting,
            refilled: self.pool.refilled.load(Ordering::Relaxed),
            refill_failures: self.pool.refill_failures.load(Ordering::Relaxed),
            warm_starts: self.pool.warm_starts.load(Ordering::Relaxed),
            cold_starts: self.pool.cold_starts.load(Ordering::Relaxed),
        }
    }

    /// A reloaded configuration: members started under the old one are replaced when what
    /// they run changed; the keeper looks again either way (the size may have changed).
    pub(super) fn pool_reconfigured(&self, members_differ: bool) {
        if members_differ {
            self.pool.generation.fetch_add(1, Ordering::SeqCst);
            info!("the session image, limits or arguments changed: the warm pool is replaced");
        }
        self.pool.poke();
    }

    /// Keeps the pool filled until shutdown ([`Hub::shutdown`] removes it then).
    pub async fn keep_pool(self: Arc<Self>) {
        loop {
            if self.recovered.load(Ordering::SeqCst) {
                self.recycle().await;
                self.refill();
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.pool.poke.notified() => {
                    // After a start that has just taken a member, its reply and its
                    // performers' first logins go first (a container being created would
                    // compete with them for the cores). Other pokes refill at once.
                    if self.pool.settle.swap(false, Ordering::SeqCst) {
                        tokio::select! {
                            _ = self.shutdown.cancelled() => return,
                            _ = tokio::time::sleep(REFILL_SETTLE) => {}
                        }
                    }
                }
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Starts members where the pool is short, at most [`REFILLS_AT_ONCE`] at a time.
    fn refill(self: &Arc<Self>) {
        let (failures, not_before) = *lock(&self.pool.backoff);
        if failures > 0 && not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let per_node = self.config().pool_size();
        let generation = self.pool.generation();
        loop {
            if self.pool.filling().len() >= REFILLS_AT_ONCE || self.shutdown.is_cancelled() {
                return;
            }
            let placed = {
                let mut r = lock(&self.registry);
                let short_node = r
                    .nodes()
                    .iter()
                    .filter(|n| n.usable)
                    .map(|n| (r.members_on(&n.id), n.id.clone()))
                    .filter(|(members, _)| *members < per_node)
                    .min();
                let Some((_, node)) = short_node else { return };
                let Some(id) = crate::random::session_id() else { return };
                match r.reserve_member(&id, &node, generation, now()) {
                    Ok(placed) => (id, placed),
                    Err(_) => return,
                }
            };
            let (id, placed) = placed;
            let cancel = self.shutdown.child_token();
            self.pool.filling().insert(id.clone(), cancel.clone());
            let hub = self.clone();
            let span = info_span!("pool", id = %id, port = placed.port);
            self.starts.spawn(async move { hub.fill(id, placed.node, placed.port, cancel).await }.instrument(span));
        }
    }

    /// Starts one member's server and marks it ready, or frees its slot.
    async fn fill(self: Arc<Self>, id: String, node: String, port: u16, cancel: CancellationToken) {
        let begun = Instant::now();
        let Some(secret) = control::new_secret() else {
            self.member_failed(&id, Gone::Removed, "the hub has no randomness for a secret");
            return;
        };
        let spec = SessionSpec {
            id: id.clone(),
            name: String::new(),
            pooled: true,
            node,
            port,
            credentials: Credentials::Control(secret.clone()),
            deadline: tokio::time::Instant::now() + self.config().start_timeout,
            cancel,
        };
        let started = self.runtime.start(spec).await;
        self.pool.filling().remove(&id);
        match started {
            Ok(s) => {
                let ready = Ready { handle: s.handle.clone(), control: ControlAccess { addr: s.control, secret } };
                if lock(&self.registry).member_ready(&id, ready) {
                    self.pool.refilled.fetch_add(1, Ordering::Relaxed);
                    *lock(&self.pool.backoff) = (0, None);
                    let elapsed_ms = begun.elapsed().as_millis() as u64;
                    debug!(container = %short(&s.handle), elapsed_ms, "pool member ready");
                } else {
                    // Taken out of the pool while it started (the hub was full, or stopping).
                    self.remove_server(&id, s.handle).await;
                }
            }
            Err(StartError::Cancelled) => self.member_failed(&id, Gone::Removed, ""),
            Err(e) => {
                let gone = if matches!(e, StartError::PortTaken(_)) { Gone::Unsure } else { Gone::Removed };
                self.member_failed(&id, gone, &e.to_string());
            }
        }
        self.pool.poke();
    }

    /// A member's start failed (the runtime undid it): its slot is freed and, unless it was
    /// cancelled (`why` empty), refills back off.
    fn member_failed(&self, id: &str, gone: Gone, why: &str) {
        {
            let mut r = lock(&self.registry);
            r.remove_member(id);
            r.free(id, gone, now());
        }
        if why.is_empty() {
            return;
        }
        self.pool.refill_failures.fetch_add(1, Ordering::Relaxed);
        let mut backoff = lock(&self.pool.backoff);
        let failures = backoff.0.saturating_add(1);
        let wait = Duration::from_millis(250 << failures.min(8)).min(MAX_BACKOFF);
        *backoff = (failures, Some(Instant::now() + wait));
        warn!(error = %why, retry_in_ms = wait.as_millis() as u64, "a warm pool member did not start");
    }

    /// Removes a server that left the pool (or never got in) and frees its slot.
    async fn remove_server(&self, id: &str, handle: String) {
        let removed = self.runtime.remove(handle.clone()).await;
        if let Err(e) = &removed {
            warn!(container = %short(&handle), error = %e, "could not remove a warm pool member; reconcile retries");
        }
        let gone = if removed.is_ok() { Gone::Removed } else { Gone::Unsure };
        lock(&self.registry).free(id, gone, now());
    }

    /// Gets rid of a member already taken out of the pool: a started one is removed, one
    /// still starting is cancelled (its start undoes itself and frees the slot).
    pub(super) async fn drop_member(&self, member: Member) {
        match member.ready {
            Some(ready) => self.remove_server(&member.id, ready.handle).await,
            None => {
                if let Some(cancel) = self.pool.filling().get(&member.id) {
                    cancel.cancel();
                }
            }
        }
    }

    /// Makes room for a start the cap or the ports would refuse: takes a member out of the
    /// pool and waits (briefly) until its slot is free. False when the pool is empty.
    pub(super) async fn give_way(&self) -> bool {
        let Some(member) = lock(&self.registry).evict_member() else { return false };
        let id = member.id.clone();
        info!(id = %id, "the hub is full: a warm pool member gives way to a start");
        self.drop_member(member).await;
        let deadline = Instant::now() + self.config().engine_timeout;
        while lock(&self.registry).holds(&id) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Removes members the pool no longer wants: of an older generation, too old, on a
    /// node that takes no sessions, or beyond the wanted size or the cap (a reload lowered
    /// them).
    async fn recycle(&self) {
        let per_node = self.config().pool_size();
        let generation = self.pool.generation();
        let now = now();
        let out: Vec<Member> = {
            let mut r = lock(&self.registry);
            let mut kept: HashMap<String, usize> = HashMap::new();
            let mut room = r.max_sessions().saturating_sub(r.len());
            let mut members: Vec<Member> = r.members().cloned().collect();
            // The oldest ready members are kept first.
            members.sort_by_key(|m| (m.ready.is_none(), m.born));
            let usable: Vec<String> = r.nodes().iter().filter(|n| n.usable).map(|n| n.id.clone()).collect();
            let mut out = Vec::new();
            for m in members {
                let stale = m.generation != generation || now.saturating_duration_since(m.born) >= MEMBER_MAX_AGE;
                let count = kept.entry(m.node.clone()).or_default();
                if stale || !usable.contains(&m.node) || *count >= per_node || room == 0 {
                    out.extend(r.remove_member(&m.id));
                } else {
                    *count += 1;
                    room -= 1;
                }
            }
            out
        };
        for m in out {
            debug!(id = %m.id, "recycling a warm pool member");
            self.drop_member(m).await;
        }
    }

    /// A member's server exited or vanished: it leaves the pool. True if `handle` was one.
    pub(super) async fn member_exited(&self, handle: &str) -> bool {
        let member = {
            let mut r = lock(&self.registry);
            let id = r.member_by_handle(handle).map(|m| m.id.clone());
            id.and_then(|id| r.remove_member(&id))
        };
        let Some(member) = member else { return false };
        warn!(id = %member.id, container = %short(handle), "a warm pool member stopped; replacing it");
        self.drop_member(member).await;
        self.pool.poke();
        true
    }

    /// The handles of the ready members, taken before the engine's list (so a member that
    /// gets ready meanwhile is not judged by a list taken before it existed).
    pub(super) fn ready_members(&self) -> Vec<String> {
        lock(&self.registry).members().filter_map(|m| m.ready.as_ref().map(|r| r.handle.clone())).collect()
    }

    /// Ready members (as [`Hub::ready_members`] saw them) whose server is not `running`.
    pub(super) async fn check_members(&self, members: Vec<String>, running: &[String]) {
        for handle in members.into_iter().filter(|h| !running.contains(h)) {
            self.member_exited(&handle).await;
        }
    }

    /// At shutdown: every member goes (those starting are cancelled and undo themselves).
    pub(super) async fn drain_pool(&self) {
        let members: Vec<Member> = {
            let mut r = lock(&self.registry);
            let ids: Vec<String> = r.members().map(|m| m.id.clone()).collect();
            ids.iter().filter_map(|id| r.remove_member(id)).collect()
        };
        let removals = members.into_iter().map(|m| self.drop_member(m));
        futures_util::future::join_all(removals).await;
    }
}
