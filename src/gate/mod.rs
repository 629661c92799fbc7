//! The password gate: every session password a client asks the hub to check (the audience
//! view and its public switch, the archive, an owner re-claiming an adopted session) and
//! every admin token presented over HTTP passes here first.
//!
//! - Wrong passwords are limited per source address (IPv6 by its /56, which one home or
//!   office usually holds whole) *and* per session name across all addresses, so neither one
//!   address nor many can guess a session's password: see [`ADDRESS_RATE`], [`SESSION_RATE`].
//! - A check is paid for before it is made ([`PasswordGate::take`] hands back a [`Charge`]) and
//!   refunded unless it is judged wrong: a right password, a busy hub and a client that hangs
//!   up half-way cost nothing.
//! - Slow checks (the archive's argon2id) run at most [`SLOW_CHECKS`] at a time on the
//!   blocking pool, each holding its turn until the hash is done ([`PasswordGate::slow`]).
//! - [`secret`]: comparing secrets, and how strong an admin token is.

mod limiter;
pub mod secret;

pub use limiter::{Limiter, Rate};

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Wrong passwords one address may send at once, then one more every 6 s (10 a minute).
pub const ADDRESS_RATE: Rate = Rate { burst: 10.0, refill: Duration::from_secs(6) };
/// Wrong passwords for one session name from all addresses together: 30 at once, then 20 a
/// minute. A distributed guesser gets no more than that; a rightful performer who meets the
/// limit on the web page still plays from Troop, and waits seconds on the page.
pub const SESSION_RATE: Rate = Rate { burst: 30.0, refill: Duration::from_secs(3) };
/// Addresses and session names remembered at most (each).
pub const MAX_KEYS: usize = 10_000;
/// Slow password hashes at once (each takes ~20 ms of a core and 19 MiB).
pub const SLOW_CHECKS: usize = 2;
/// A slow check waits at most this long for its turn; then the hub is busy (503).
pub const SLOW_WAIT: Duration = Duration::from_secs(5);

/// Why a check was not made. `Display` is the sentence the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("Too many wrong passwords from your address; try again in {} s", secs(*.0))]
    Address(Duration),
    #[error("Too many wrong passwords for this session; try again in {} s", secs(*.0))]
    Session(Duration),
    #[error("The hub is busy checking passwords; try again in a moment")]
    Busy,
}

impl Refused {
    /// Whole seconds the client should wait before it tries again.
    pub fn retry_after(&self) -> u64 {
        match self {
            Refused::Address(d) | Refused::Session(d) => secs(*d),
            Refused::Busy => 1,
        }
    }
}

fn secs(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

/// The key an address counts under: itself (IPv4), or its /56 (IPv6).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3] & 0xff00, 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The limits and the slow-check turns; see the module's documentation.
#[derive(Debug)]
pub struct PasswordGate {
    addresses: Limiter<IpAddr>,
    sessions: Limiter<String>,
    slow: Arc<Semaphore>,
}

impl Default for PasswordGate {
    fn default() -> Self {
        PasswordGate {
            addresses: Limiter::new(ADDRESS_RATE, MAX_KEYS),
            sessions: Limiter::new(SESSION_RATE, MAX_KEYS),
            slow: Arc::new(Semaphore::new(SLOW_CHECKS)),
        }
    }
}

/// One check paid for: refunded when dropped, unless [`Charge::wrong`] keeps it.
#[must_use = "a charge is refunded when dropped; call wrong() to keep it"]
#[derive(Debug)]
pub struct Charge<'g> {
    gate: &'g PasswordGate,
    ip: IpAddr,
    session: Option<String>,
    kept: bool,
}

impl Charge<'_> {
    /// The password (or token) was wrong: the charge stays paid.
    pub fn wrong(mut self) {
        self.kept = true;
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let now = Instant::now();
        self.gate.addresses.refund(&self.ip, now);
        if let Some(s) = &self.session {
            self.gate.sessions.refund(s, now);
        }
    }
}

impl PasswordGate {
    /// Whether `ip` may have session `session`'s password checked now (nothing is paid).
    pub fn check(&self, ip: IpAddr, session: &str) -> Result<(), Refused> {
        let now = Instant::now();
        self.addresses.check(&address_key(ip), now).map_err(Refused::Address)?;
        self.sessions.check(&session.to_string(), now).map_err(Refused::Session)
    }

    /// Pays for one check of session `session`'s password asked by `ip`.
    pub fn take(&self, ip: IpAddr, session: &str) -> Result<Charge<'_>, Refused> {
        let now = Instant::now();
        let ip = address_key(ip);
        let session = session.to_string();
        self.addresses.take(&ip, now).map_err(Refused::Address)?;
        if let Err(wait) = self.sessions.take(&session, now) {
            self.addresses.refund(&ip, now);
            return Err(Refused::Session(wait));
        }
        Ok(Charge { gate: self, ip, session: Some(session), kept: false })
    }

    /// Pays for one check of an admin token presented by `ip` (limited per address only).
    pub fn take_admin(&self, ip: IpAddr) -> Result<Charge<'_>, Refused> {
        let ip = address_key(ip);
        self.addresses.take(&ip, Instant::now()).map_err(Refused::Address)?;
        Ok(Charge { gate: self, ip, session: None, kept: false })
    }

    /// `ip` failed to give session `session`'s password (sent none in time).
    pub fn failed(&self, ip: IpAddr, session: &str) {
        let now = Instant::now();
        self.addresses.failed(&address_key(ip), now);
        self.sessions.failed(&session.to_string(), now);
    }

    /// Runs a slow check `f` on the blocking pool once it has a turn (waiting at most
    /// [`SLOW_WAIT`], else [`Refused::Busy`]). The turn is held until `f` returns, even when
    /// the caller has gone: an abandoned hash still counts against [`SLOW_CHECKS`].
    pub async fn slow<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Refused> {
        let turn = tokio::time::timeout(SLOW_WAIT, self.slow.clone().acquire_owned()).await;
        let Ok(Ok(permit)) = turn else { return Err(Refused::Busy) };
        tokio::task::spawn_blocking(move || {
            let _turn = permit;
            f()
        })
        .await
        .map_err(|_| Refused::Busy)
    }

    /// Slow checks running now (tests and metrics).
    pub fn slow_running(&self) -> usize {
        SLOW_CHECKS - self.slow.available_permits()
    }
}

#[cfg(test)]
mod tests;
