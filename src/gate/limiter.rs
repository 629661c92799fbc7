//! [`Limiter`]: a table of allowances by key (a source address, a session name). Each key may
//! fail `burst` times at once, then once more every `refill`; beyond that it is refused until
//! it has waited. A check is paid for before it is made ([`Limiter::take`]) and refunded when
//! it went right, so many checks at once cannot all slip through.
//!
//! Memory is bounded: at most `capacity` keys are remembered. When the table is full, keys
//! back to a full allowance are forgotten first; a key that is still limited is never
//! forgotten (cycling through addresses must not reset anyone's allowance). New keys that find
//! the table full of limited keys share one overflow allowance, so a flood of fresh addresses
//! is limited as a whole.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Allowance {
    left: f64,
    at: Instant,
}

/// How much a key may fail, and how fast that comes back.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Failures at once.
    pub burst: f64,
    /// One more failure allowed every this long.
    pub refill: Duration,
}

impl Rate {
    fn left(self, a: Allowance, now: Instant) -> f64 {
        let refilled = now.saturating_duration_since(a.at).as_secs_f64() / self.refill.as_secs_f64();
        (a.left + refilled).min(self.burst)
    }

    /// How long until one more failure is allowed, when fewer than one is left.
    fn wait(self, left: f64) -> Option<Duration> {
        (left < 1.0).then(|| self.refill.mul_f64(1.0 - left))
    }
}

#[derive(Debug)]
struct Table<K> {
    keys: HashMap<K, Allowance>,
    /// Shared by the keys that found the table full of limited keys.
    overflow: Option<Allowance>,
}

/// Allowances by key; see the module's documentation.
#[derive(Debug)]
pub struct Limiter<K> {
    rate: Rate,
    capacity: usize,
    table: Mutex<Table<K>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(rate: Rate, capacity: usize) -> Limiter<K> {
        Limiter { rate, capacity: capacity.max(1), table: Mutex::new(Table { keys: HashMap::new(), overflow: None }) }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table<K>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(wait)` if `key` has no failure left: it may try again after `wait`.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut t = self.table();
        let left = match self.slot(&mut t, key, now, false) {
            Some(a) => self.rate.left(*a, now),
            None => self.rate.burst,
        };
        self.rate.wait(left).map_or(Ok(()), Err)
    }

    /// Pays for one check by `key` before it is made (`Err(wait)` if nothing is left);
    /// [`Limiter::refund`] gives it back when the check went right.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        self.check(key, now)?;
        self.failed(key, now);
        Ok(())
    }

    /// Gives back what [`Limiter::take`] paid.
    pub fn refund(&self, key: &K, now: Instant) {
        let mut t = self.table();
        let rate = self.rate;
        if let Some(a) = self.slot(&mut t, key, now, false) {
            *a = Allowance { left: (rate.left(*a, now) + 1.0).min(rate.burst), at: now };
        }
    }

    /// `key` failed a check (a wrong password, or none in time).
    pub fn failed(&self, key: &K, now: Instant) {
        let mut t = self.table();
        let rate = self.rate;
        if let Some(a) = self.slot(&mut t, key, now, true) {
            *a = Allowance { left: (rate.left(*a, now) - 1.0).max(0.0), at: now };
        }
    }

    /// The allowance `key` counts against: its own, the overflow when the table is full of
    /// limited keys, or (`make` false) none when it has never failed.
    fn slot<'t>(&self, t: &'t mut Table<K>, key: &K, now: Instant, make: bool) -> Option<&'t mut Allowance> {
        let full = Allowance { left: self.rate.burst, at: now };
        if !t.keys.contains_key(key) && t.keys.len() >= self.capacity {
            let rate = self.rate;
            t.keys.retain(|_, a| rate.left(*a, now) < rate.burst);
            if t.keys.len() >= self.capacity {
                return Some(t.overflow.get_or_insert(full));
            }
        }
        match make {
            true => Some(t.keys.entry(key.clone()).or_insert(full)),
            false => t.keys.get_mut(key),
        }
    }

    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.table().keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate { burst: 10.0, refill: Duration::from_secs(6) };

    #[test]
    fn a_key_gets_ten_failures_then_one_every_six_seconds() {
        let l = Limiter::new(RATE, 100);
        let t = Instant::now();
        for _ in 0..10 {
            assert!(l.check(&"a", t).is_ok());
            l.failed(&"a", t);
        }
        let wait = l.check(&"a", t).unwrap_err();
        assert!(wait > Duration::from_secs(5) && wait <= RATE.refill, "{wait:?}");
        assert!(l.check(&"b", t).is_ok(), "other keys are not affected");
        assert!(l.check(&"a", t + RATE.refill).is_ok());
        l.failed(&"a", t + RATE.refill);
        assert!(l.check(&"a", t + RATE.refill).is_err());
    }

    #[test]
    fn checks_are_paid_before_and_refunded_when_right() {
        let l = Limiter::new(RATE, 100);
        let t = Instant::now();
        for _ in 0..10 {
            assert!(l.take(&"a", t).is_ok());
        }
        assert!(l.take(&"a", t).is_err(), "no eleventh check while ten are in flight");
        for _ in 0..10 {
            l.refund(&"a", t);
        }
        assert!(l.take(&"a", t).is_ok(), "right checks cost nothing");
    }

    #[test]
    fn a_full_table_never_forgets_a_limited_key() {
        let l = Limiter::new(RATE, 50);
        let t = Instant::now();
        for _ in 0..10 {
            l.failed(&0u32, t);
        }
        // Cycling through many fresh keys (as an attacker cycling addresses would) ...
        for k in 1..1_000u32 {
            let _ = l.take(&k, t);
        }
        assert!(l.remembered() <= 50, "memory stays bounded");
        // ... neither resets the limited key's allowance ...
        assert!(l.check(&0, t).is_err(), "the limited key is still limited");
        // ... nor gives the fresh keys more than one shared allowance between them.
        assert!(l.check(&5_000, t).is_err(), "keys beyond the table share the overflow's allowance");
        // Keys back to a full allowance are forgotten first: once everyone has waited, the
        // table takes new keys again.
        let later = t + RATE.refill * 20;
        l.failed(&6_000, later);
        assert!(l.check(&6_001, later).is_ok());
        assert!(l.check(&0, later).is_ok());
    }
}
