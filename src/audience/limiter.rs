//! The limit on wrong session passwords per source address (the audience view, its public
//! switch, the archive): each address may get [`BURST`] wrong, then one more every [`REFILL`];
//! beyond that it is refused without the password being checked, until it has waited. A check
//! is paid for before the password is looked at ([`FailureLimiter::take`]) and refunded when
//! it was right, so many requests at once cannot all slip through. IPv6 addresses count by
//! their /64 (one host usually has the whole /64). Memory is bounded: at most
//! [`MAX_ADDRESSES`] addresses are remembered, those back to a full allowance forgotten first.

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

/// The key an address counts under: itself (IPv4), or its /64 (IPv6).
fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl FailureLimiter {
    /// `Err(wait)` if `ip` has used up its wrong passwords: it may try again after `wait`.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let map = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&key(ip)).map(|a| a.now(now)) {
            Some(left) if left < 1.0 => Err(REFILL.mul_f64(1.0 - left)),
            _ => Ok(()),
        }
    }

    /// Pays for one password check from `ip`'s allowance before it is made (`Err(wait)` if
    /// none is left); [`FailureLimiter::refund`] gives it back when the password was right.
    pub fn take(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut map = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(left) = map.get(&key(ip)).map(|a| a.now(now)).filter(|left| *left < 1.0) {
            return Err(REFILL.mul_f64(1.0 - left));
        }
        Self::charge(&mut map, key(ip), now);
        Ok(())
    }

    /// The password `ip` paid for with [`FailureLimiter::take`] was right.
    pub fn refund(&self, ip: IpAddr, now: Instant) {
        let mut map = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = map.get_mut(&key(ip)) {
            *a = Allowance { left: (a.now(now) + 1.0).min(BURST), at: now };
        }
    }

    /// `ip` sent a wrong password (or none in time).
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut map = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        Self::charge(&mut map, key(ip), now);
    }

    fn charge(map: &mut HashMap<IpAddr, Allowance>, ip: IpAddr, now: Instant) {
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
    fn checks_are_paid_before_and_refunded_when_right() {
        let l = FailureLimiter::default();
        let ip: IpAddr = "10.0.0.3".parse().unwrap();
        let t = Instant::now();
        // Ten checks in flight at once use the whole allowance; the eleventh waits.
        for _ in 0..10 {
            assert!(l.take(ip, t).is_ok());
        }
        assert!(l.take(ip, t).is_err(), "no eleventh check while ten are in flight");
        for _ in 0..10 {
            l.refund(ip, t);
        }
        assert!(l.take(ip, t).is_ok(), "right passwords cost nothing");
        // A whole IPv6 /64 is one address.
        let (a, b): (IpAddr, IpAddr) = ("2001:db8::1".parse().unwrap(), "2001:db8::ffff:2".parse().unwrap());
        for _ in 0..10 {
            l.failed(a, t);
        }
        assert!(l.check(b, t).is_err(), "the same /64");
        assert!(l.check("2001:db8:0:1::1".parse().unwrap(), t).is_ok(), "another /64");
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
