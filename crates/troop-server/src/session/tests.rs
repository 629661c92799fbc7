//! Unit tests of the session state machine (no I/O).

use super::*;
use crate::frame::Decoder;
use std::net::Ipv4Addr;

const PW: &str = "2e50a1e45ce0e092669ae02336db5e7d";
const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn msg(wire: &str) -> Message {
    let mut d = Decoder::new(1 << 20);
    d.feed(wire.as_bytes());
    d.next_message().unwrap().unwrap()
}

fn sent_to(actions: &[Action], id: ClientId) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(to, b) if *to == id => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

/// A session with `n` joined clients named c0, c1, ... on ports 1000, 1001, ...
fn joined(n: i64) -> Session {
    let mut s = Session::new(PW, Limits::default());
    let now = Instant::now();
    for id in 0..n {
        assert_eq!(s.login(IP, 1000 + id as u16, PW, &format!("c{id}"), VERSION, now), Ok(id));
        s.receive(id, msg(&format!("<1><0><{id}><\"c{id}\"><\"h\"><57890><0>")), now);
        for k in 0..=id {
            s.receive(k, msg(&format!("<13><1><{k}><0>")), now);
        }
    }
    s.take_actions();
    s
}

#[test]
fn login_checks_in_upstream_order() {
    let mut s = joined(1);
    let now = Instant::now();
    assert_eq!(s.login(IP, 1, "bad", "c0", "0.1", now), Err(LoginError::WrongPassword));
    assert_eq!(s.login(IP, 1, PW, "c0", "0.1", now), Err(LoginError::NameTaken));
    assert_eq!(s.login(IP, 1, PW, "new", "0.1", now), Err(LoginError::VersionMismatch));
    s.leave(0);
    assert_eq!(s.login(IP, 1, PW, "c0", "0.1", now), Ok(0), "a returning name gets its id back");
}

#[test]
fn ids_run_out_after_max_clients() {
    let limits = Limits { max_clients: 2, ..Limits::default() };
    let mut s = Session::new(PW, limits);
    let now = Instant::now();
    assert_eq!(s.login(IP, 1, PW, "a", VERSION, now), Ok(0));
    assert_eq!(s.login(IP, 2, PW, "b", VERSION, now), Ok(1));
    assert_eq!(s.login(IP, 3, PW, "c", VERSION, now), Err(LoginError::TooManyUsers));
}

#[test]
fn bad_operation_drops_the_sender_and_keeps_the_document() {
    let mut s = joined(2);
    let now = Instant::now();
    s.receive(0, msg("<2><1><0><[\"abc\"]><0>"), now);
    s.take_actions();
    s.receive(1, msg("<2><1><1><[10, \"x\"]><1>"), now);
    let actions = s.take_actions();
    assert_eq!(s.document(), "abc");
    assert!(actions.contains(&Action::Close(1)));
    assert_eq!(sent_to(&actions, 0), vec!["<5><0><1>"]);
    assert!(matches!(s.take_dropped()[..], [(1, DropReason::BadOperation(_))]));
}

#[test]
fn history_is_bounded_and_stale_revisions_are_refused() {
    let limits = Limits { history: 4, ..Limits::default() };
    let mut s = Session::new(PW, limits);
    let now = Instant::now();
    s.login(IP, 1, PW, "a", VERSION, now).unwrap();
    s.receive(0, msg("<1><0><0><\"a\"><\"h\"><1><0>"), now);
    s.receive(0, msg("<13><1><0><0>"), now);
    for rev in 0..10 {
        s.receive(0, msg(&format!("<2><1><0><[\"x\", {rev}]><{rev}>")), now);
    }
    assert_eq!(s.history.len(), 4);
    let limits = Limits { history_bytes: 1000, ..Limits::default() };
    let mut big = Session::new(PW, limits);
    big.login(IP, 1, PW, "a", VERSION, now).unwrap();
    big.receive(0, msg("<1><0><0><\"a\"><\"h\"><1><0>"), now);
    big.receive(0, msg("<13><1><0><0>"), now);
    for rev in 0..5 {
        let text = "y".repeat(400);
        big.receive(0, msg(&format!("<2><1><0><[\"{text}\", {}]><{rev}>", rev * 400)), now);
    }
    assert_eq!(big.document().len(), 2000, "every operation applied");
    assert!(big.history_size <= 1000 && big.history.len() == 2, "history bounded in bytes");
    assert_eq!(s.document().len(), 10);
    s.receive(0, msg("<2><1><0><[\"y\", 4]><4>"), now);
    assert!(matches!(s.take_dropped()[..], [(0, DropReason::StaleRevision(4))]));
}

#[test]
fn a_leaving_client_does_not_hold_the_barrier_up() {
    let mut s = joined(2);
    let now = Instant::now();
    s.login(IP, 3, PW, "late", VERSION, now).unwrap();
    s.receive(2, msg("<1><0><2><\"late\"><\"h\"><1><0>"), now);
    s.receive(2, msg("<13><1><2><0>"), now);
    s.receive(0, msg("<13><1><0><0>"), now);
    s.take_actions();
    s.leave(1);
    let to_late = sent_to(&s.take_actions(), 2);
    assert_eq!(to_late[0], "<5><0><1>");
    assert!(to_late[1].starts_with("<11>"), "RESET once the rest acked: {to_late:?}");
}

#[test]
fn barrier_timeout_drops_the_silent() {
    let mut s = joined(1);
    let now = Instant::now();
    s.login(IP, 3, PW, "late", VERSION, now).unwrap();
    s.receive(1, msg("<1><0><1><\"late\"><\"h\"><1><0>"), now);
    s.receive(1, msg("<13><1><1><0>"), now);
    s.tick(now + Duration::from_secs(11));
    assert!(matches!(s.take_dropped()[..], [(0, DropReason::NoAck)]));
    assert!(sent_to(&s.take_actions(), 1).iter().any(|m| m.starts_with("<11>")));
}
