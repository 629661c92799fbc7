//! The gate's rules, with no hub: limits per address and per session, charges refunded unless
//! judged wrong, slow checks bounded even when their callers leave.

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

#[test]
fn an_address_gets_ten_wrong_passwords_then_429() {
    let gate = PasswordGate::default();
    for i in 0..10 {
        gate.take(ip("192.0.2.1"), &format!("s{i}")).map(Charge::wrong).expect("within the burst");
    }
    assert!(matches!(gate.take(ip("192.0.2.1"), "other"), Err(Refused::Address(_))));
    assert!(gate.take(ip("192.0.2.2"), "other").is_ok(), "another address is not affected");
}

#[test]
fn ipv6_counts_by_its_56_not_its_64() {
    let gate = PasswordGate::default();
    // Every /64 of one /56 (a home's usual delegation) is the same guesser.
    for i in 0..10u16 {
        let a = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, i, 0, 0, 0, 1));
        gate.take(a, &format!("s{i}")).map(Charge::wrong).expect("within the burst");
    }
    assert!(gate.check(ip("2001:db8:0:ff::9"), "x").is_err(), "the same /56");
    assert!(gate.check(ip("2001:db8:0:100::1"), "x").is_ok(), "the next /56");
    assert!(gate.check(ip("::ffff:192.0.2.9"), "x").is_ok(), "a v4-mapped address counts as its v4");
}

#[test]
fn many_addresses_share_one_budget_per_session() {
    let gate = PasswordGate::default();
    // 30 addresses, one wrong guess each: the session's budget is spent ...
    for i in 0..30u8 {
        gate.take(IpAddr::from([198, 51, 100, i]), "gig").map(Charge::wrong).expect("within the session's burst");
    }
    // ... so a 31st address is refused for that session, and only for that session.
    let fresh = ip("203.0.113.7");
    assert!(matches!(gate.take(fresh, "gig"), Err(Refused::Session(_))));
    assert!(gate.take(fresh, "another-gig").is_ok());
    // The refused check did not cost the fresh address anything.
    for i in 0..9 {
        gate.take(fresh, &format!("n{i}"))
            .map(Charge::wrong)
            .expect("nine more: one was spent above, none on the refusal");
    }
}

#[test]
fn only_a_wrong_password_keeps_its_charge() {
    let gate = PasswordGate::default();
    let me = ip("192.0.2.50");
    // Right passwords, busy hubs and hung-up clients all drop their charge: refunded.
    for _ in 0..100 {
        let charge = gate.take(me, "gig").expect("refunded each time");
        drop(charge);
    }
    // Ten in flight at once take the whole allowance; the eleventh waits.
    let in_flight: Vec<_> = (0..10).map(|_| gate.take(me, "gig")).collect();
    assert!(in_flight.iter().all(Result::is_ok));
    assert!(gate.take(me, "gig").is_err());
    drop(in_flight);
    assert!(gate.take(me, "gig").is_ok(), "all refunded when they ended");
}

#[test]
fn admin_tokens_are_limited_per_address() {
    let gate = PasswordGate::default();
    for _ in 0..10 {
        gate.take_admin(ip("192.0.2.60")).map(Charge::wrong).expect("within the burst");
    }
    assert!(gate.take_admin(ip("192.0.2.60")).is_err());
    assert!(gate.take_admin(ip("192.0.2.61")).is_ok());
}

#[tokio::test]
async fn an_abandoned_slow_check_keeps_its_turn_until_it_finishes() {
    let gate = Arc::new(PasswordGate::default());
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let wait = Arc::new(std::sync::Mutex::new(wait));
    // Two checks start; their callers then go away (a client hanging up).
    let mut callers = Vec::new();
    for _ in 0..SLOW_CHECKS {
        let (g, w, s) = (gate.clone(), wait.clone(), started_tx.clone());
        callers.push(tokio::spawn(async move {
            g.slow(move || {
                let _ = s.send(());
                let _ = w.lock().map(|r| r.recv());
            })
            .await
        }));
    }
    for _ in 0..SLOW_CHECKS {
        started.recv().await.expect("the check started");
    }
    for caller in callers {
        caller.abort();
        assert!(caller.await.is_err_and(|e| e.is_cancelled()), "the caller went away");
    }
    // Their hashes still run and hold their turns, so a third check waits for one to end.
    assert_eq!(gate.slow_running(), SLOW_CHECKS, "the abandoned checks hold their turns");
    let third = tokio::spawn({
        let g = gate.clone();
        async move { g.slow(|| 7).await }
    });
    assert!(!third.is_finished());
    for _ in 0..SLOW_CHECKS {
        let _ = release.send(());
    }
    assert_eq!(third.await.ok(), Some(Ok(7)));
    // The abandoned checks give their turns back as their threads finish.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gate.slow_running() > 0 {
        assert!(std::time::Instant::now() < deadline, "turns still held: {}", gate.slow_running());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
