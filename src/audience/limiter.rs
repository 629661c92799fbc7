//! The limit on wrong session passwords per source address (the audience view, its public
//! switch): each address may get [`BURST`] wrong, then one more every [`REFILL`]; beyond that
//! it is refused without the password being checked, until it has waited. Memory is bounded:
//! at most [`MAX_ADDRESSES`] addresses are remembered, and addresses back to a full allowance
//! are forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong passwords an address may send at once.
pub const BURST: f64 = 10.0;
/// ... then one more every this long (10 a minute).
pub const REFILL: Duration = Duration::from_secs(6);
/// Addresses remembered at most.
pub const MAX_ADDRESSES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Allowance {
    left: f64,
    at: Instant,
}

impl Allowance {
    fn now(self, now: Instant) -> f64 {
        let refilled = now.saturating_duration_since(self.at).as_secs_f64() / REFILL.as_secs_f64();
        (self.left + refilled).min(BURST)
    }
}

/// Wrong-password allowances by address.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    addresses: Mutex<HashMap<IpAddr, Allowance>>,
}

impl FailureLimiter {
    /// `Err(wait)` if `ip` has used up its wrong passwords: it may try again after `wait`.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let map = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&ip).map(|a| a.now(now)) {
            Some(left) if left < 1.0 => Err(REFILL.mul_f64(1.0 - left)),
            _ => Ok(()),
        }
    }

    /// `ip` sent a wrong password.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut map = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&ip) {
            map.retain(|_, a| a.now(now) < BURST);
            if map.len() >= MAX_ADDRESSES {
                // Everyone remembered is still limited: forget the one that waited longest.
                if let Some(oldest) = map.iter().min_by_key(|(_, a)| a.at).map(|(ip, _)| *ip) {
                    map.remove(&oldest);
                }
            }
        }
        let left = map.get(&ip).map_or(BURST, |a| a.now(now));
        map.insert(ip, Allowance { left: (left - 1.0).max(0.0), at: now });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_ten_wrong_then_one_every_six_seconds() {
        let l = FailureLimiter::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t = Instant::now();
        for _ in 0..10 {
            assert!(l.check(a, t).is_ok());
            l.failed(a, t);
        }
        let wait = l.check(a, t).unwrap_err();
        assert!(wait > Duration::from_secs(5) && wait <= REFILL, "{wait:?}");
        assert!(l.check(b, t).is_ok(), "other addresses are not affected");
        assert!(l.check(a, t + REFILL).is_ok());
        l.failed(a, t + REFILL);
        assert!(l.check(a, t + REFILL).is_err());
    }

    #[test]
    fn memory_stays_bounded() {
        let l = FailureLimiter::default();
        let t = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 50) {
            l.failed(IpAddr::from(i.to_be_bytes()), t);
        }
        assert!(l.addresses.lock().unwrap().len() <= MAX_ADDRESSES);
    }
}
