//! The registry's rules: names, caps, per-address limits, one port table per node, leases
//! freed by session id, set-aside ports and cooling nodes.
use super::*;

fn new(name: &str, ip: &str, trusted: bool) -> NewSession {
    NewSession {
        id: format!("id-{name}"),
        name: name.into(),
        password_md5: SecretString::from(""),
        owner_ip: Some(ip.parse().unwrap()),
        trusted,
        daemon: false,
        expires: None,
    }
}

/// A table with the local node, as the Docker runtime gives it.
fn local(ports: (u16, u16), max: usize, per_address: usize) -> Registry {
    let mut r = Registry::new(ports, max, per_address);
    r.set_nodes(vec![Node::local()]);
    r
}

#[test]
fn without_nodes_nothing_is_placed() {
    let mut r = Registry::new((100, 102), 3, 1);
    assert_eq!(r.reserve(new("a", "1.1.1.1", false), Instant::now()).unwrap_err(), RegistryError::NoNode);
}

#[test]
fn names_ports_and_limits() {
    let now = Instant::now();
    let mut r = local((100, 102), 3, 1);
    assert_eq!(r.reserve(new("a", "1.1.1.1", false), now).unwrap().port, 100);
    assert_eq!(r.reserve(new("a", "2.2.2.2", false), now).unwrap_err(), RegistryError::NameTaken);
    assert_eq!(r.reserve(new("b", "1.1.1.1", false), now).unwrap_err(), RegistryError::AddressLimit);
    assert_eq!(r.reserve(new("b", "127.0.0.1", true), now).unwrap().port, 101, "trusted is exempt");
    assert_eq!(r.reserve(new("c", "3.3.3.3", false), now).unwrap().port, 102);
    assert_eq!(r.reserve(new("d", "4.4.4.4", false), now).unwrap_err(), RegistryError::Full);
    r.set_handle("id-b", "container-b", None);
    assert_eq!(r.by_handle("container-b").map(|s| s.name.as_str()), Some("b"));
    assert!(r.release("id-b").is_some());
    assert!(r.release("id-b").is_none(), "released once");
    assert_eq!(
        r.reserve(new("d", "4.4.4.4", false), now).unwrap_err(),
        RegistryError::NoPort,
        "port held until its container is gone"
    );
    r.free("id-other", Gone::Removed, now);
    assert_eq!(r.free_ports(now), 0, "only its own session frees a slot");
    r.free("id-a", Gone::Removed, now);
    assert_eq!(r.free_ports(now), 0, "a live session's slot is never freed");
    r.free("id-b", Gone::Removed, now);
    assert_eq!(r.reserve(new("d", "4.4.4.4", false), now).unwrap().port, 101, "port reused after release");
}

#[test]
fn a_lowered_cap_ends_nothing_and_refuses_new_starts() {
    let now = Instant::now();
    let mut r = local((100, 110), 3, 5);
    for n in ["a", "b", "c"] {
        r.reserve(new(n, "1.1.1.1", false), now).unwrap();
    }
    r.set_limits(1, 5);
    assert_eq!(r.len(), 3);
    assert_eq!(r.reserve(new("d", "1.1.1.1", false), now).unwrap_err(), RegistryError::Full);
}

#[test]
fn a_port_taken_outside_is_set_aside() {
    let now = Instant::now();
    let mut r = local((100, 101), 5, 5);
    r.reserve(new("a", "1.1.1.1", false), now).unwrap();
    assert_eq!(r.repick_port("id-a", now).map(|p| (p.node, p.port)), Ok((LOCAL_NODE.to_string(), 101)));
    assert_eq!(r.ports_in_use(), vec![101]);
    assert_eq!(r.free_ports(now), 0, "100 is set aside");
    assert_eq!(r.reserve(new("b", "1.1.1.1", false), now).unwrap_err(), RegistryError::NoPort);
    assert_eq!(r.free_ports(now + SET_ASIDE), 1);
    assert_eq!(r.repick_port("other", now), Err(RegistryError::NoPort), "another session's id changes nothing");
    assert_eq!(r.ports_in_use(), vec![101]);
    assert_eq!(r.repick_port("id-a", now), Err(RegistryError::NoPort), "no port left: the reservation goes");
    assert!(r.ports_in_use().is_empty(), "and its lease with it");
    assert!(r.get("a").is_none());
}

#[test]
fn ports_are_never_handed_out_twice() {
    let now = Instant::now();
    let mut r = local((100, 199), 100, 100);
    for k in 0..100 {
        r.reserve(new(&format!("s{k}"), "1.1.1.1", false), now).unwrap();
    }
    let mut ports: Vec<u16> = r.list().map(|s| s.port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 100);
}

fn node(id: &str, host: &str, usable: bool) -> Node {
    Node { id: id.into(), host: Some(host.into()), usable }
}

#[test]
fn one_port_table_per_node_and_the_emptiest_node_first() {
    let now = Instant::now();
    let mut r = Registry::new((100, 101), 10, 10);
    r.set_nodes(vec![node("n1", "a.example", true), node("n2", "b.example", true)]);
    assert_eq!(r.free_ports(now), 4, "capacity is the range times the usable nodes");
    let placed: Vec<(String, u16, Option<String>)> = ["s1", "s2", "s3", "s4"]
        .iter()
        .map(|n| {
            let s = r.reserve(new(n, "1.1.1.1", true), now).unwrap();
            (s.node.clone(), s.port, s.host.clone())
        })
        .collect();
    assert_eq!(
        placed,
        vec![
            ("n1".into(), 100, Some("a.example".into())),
            ("n2".into(), 100, Some("b.example".into())),
            ("n1".into(), 101, Some("a.example".into())),
            ("n2".into(), 101, Some("b.example".into())),
        ],
        "the same port once on each node, sessions spread evenly"
    );
    assert_eq!(r.reserve(new("s5", "1.1.1.1", true), now).unwrap_err(), RegistryError::NoPort);
    // n1 loses a session: the next one goes there, to the port it freed.
    assert!(r.release("id-s1").is_some());
    r.free("id-s1", Gone::Removed, now);
    let s = r.reserve(new("s5", "1.1.1.1", true), now).unwrap();
    assert_eq!((s.node.as_str(), s.port), ("n1", 100));
}

#[test]
fn drained_nodes_get_nothing_new_and_keep_what_they_have() {
    let now = Instant::now();
    let mut r = Registry::new((100, 109), 100, 100);
    r.set_nodes(vec![node("n1", "a", true), node("n2", "b", true)]);
    r.reserve(new("on-n1", "1.1.1.1", true), now).unwrap();
    r.set_nodes(vec![node("n1", "a2", false), node("n2", "b", true)]);
    assert_eq!(r.get("on-n1").unwrap().host.as_deref(), Some("a2"), "a relabelled node's host is followed");
    assert_eq!(r.free_ports(now), 10, "only n2 counts");
    for k in 0..3 {
        assert_eq!(r.reserve(new(&format!("x{k}"), "1.1.1.1", true), now).unwrap().node, "n2");
    }
    r.set_nodes(vec![node("n1", "a", false), node("n2", "b", false)]);
    assert_eq!(r.reserve(new("y", "1.1.1.1", true), now).unwrap_err(), RegistryError::NoNode);
    assert_eq!(r.len(), 4, "nothing was ended");
    assert_eq!(r.free_ports(now), 0);
}

#[test]
fn capacity_is_capped_by_max_sessions() {
    let now = Instant::now();
    let mut r = Registry::new((100, 104), 3, 100);
    r.set_nodes(vec![node("n1", "a", true), node("n2", "b", true), node("n3", "c", true)]);
    assert_eq!(r.free_ports(now), 15);
    for k in 0..3 {
        r.reserve(new(&format!("s{k}"), "1.1.1.1", true), now).unwrap();
    }
    assert_eq!(r.reserve(new("s3", "1.1.1.1", true), now).unwrap_err(), RegistryError::Full);
    assert_eq!(r.sessions_on("n1") + r.sessions_on("n2") + r.sessions_on("n3"), 3);
    assert!(["n1", "n2", "n3"].iter().all(|n| r.sessions_on(n) == 1));
}

#[test]
fn adoption_and_freeing_are_per_node() {
    let now = Instant::now();
    let mut r = Registry::new((100, 100), 10, 10);
    r.set_nodes(vec![node("n1", "a", true), node("n2", "b", true)]);
    let adopted = |name: &str, node: &str| Session {
        id: format!("id-{name}"),
        name: name.into(),
        node: node.into(),
        host: None,
        port: 100,
        password_md5: None,
        control: None,
        reach: None,
        owner_ip: None,
        counts_for_address: false,
        daemon: false,
        owner_connected: false,
        handle: Some(format!("c-{name}")),
        state: State::Running,
        created: SystemTime::now(),
        started: now,
        expires: None,
    };
    r.adopt(adopted("a", "n1")).unwrap();
    assert_eq!(r.get("a").unwrap().host.as_deref(), Some("a"), "an adopted session gets its node's host");
    r.adopt(adopted("b", "n2")).unwrap();
    assert_eq!(r.adopt(adopted("c", "n2")), Err(RegistryError::NoPort), "port 100 is taken on n2");
    r.release("id-a");
    assert_eq!(r.slots_in_use(), vec![("n1".into(), 100), ("n2".into(), 100)], "held until removed");
    r.free("id-a", Gone::Removed, now);
    assert_eq!(r.slots_in_use(), vec![("n2".into(), 100)]);
    assert_eq!(r.reserve(new("d", "1.1.1.1", true), now).unwrap().node, "n1");
}

#[test]
fn a_name_restarted_before_its_old_container_is_gone_frees_the_old_slot_later() {
    let now = Instant::now();
    let mut r = local((100, 101), 10, 10);
    let mut first = new("foo", "1.1.1.1", true);
    first.id = "first".into();
    r.reserve(first, now).unwrap();
    r.set_handle("first", "c1", None);
    r.release("first");
    // The performer starts "foo" again while the old container is still being removed.
    let mut second = new("foo", "1.1.1.1", true);
    second.id = "second".into();
    assert_eq!(r.reserve(second, now).unwrap().port, 101);
    r.free("first", Gone::Removed, now);
    assert_eq!(r.slots_in_use(), vec![(LOCAL_NODE.to_string(), 101)], "the old slot is free again");
    assert_eq!(r.free_ports(now), 1);
}

#[test]
fn a_starting_session_ended_by_someone_else_keeps_its_slot_until_its_start_is_undone() {
    let now = Instant::now();
    let mut r = local((100, 100), 10, 10);
    r.reserve(new("s", "1.1.1.1", true), now).unwrap();
    assert!(r.release("id-s").is_some(), "killed while its container is being created");
    assert_eq!(r.reserve(new("t", "1.1.1.1", true), now).unwrap_err(), RegistryError::NoPort);
    r.free("id-s", Gone::Removed, now);
    assert_eq!(r.reserve(new("t", "1.1.1.1", true), now).unwrap().port, 100);
}

#[test]
fn a_slot_whose_server_may_live_on_is_set_aside() {
    let now = Instant::now();
    let mut r = local((100, 101), 10, 10);
    r.reserve(new("s", "1.1.1.1", true), now).unwrap();
    r.release("id-s");
    r.free("id-s", Gone::Unsure, now);
    assert!(r.slots_in_use().is_empty());
    assert_eq!(r.reserve(new("t", "1.1.1.1", true), now).unwrap().port, 101, "100 is set aside");
    assert_eq!(r.free_ports(now + SET_ASIDE), 1);
}

#[test]
fn a_node_where_starts_fail_is_avoided_while_others_have_room() {
    let now = Instant::now();
    let mut r = Registry::new((100, 101), 10, 10);
    r.set_nodes(vec![node("broken", "a", true), node("good", "b", true)]);
    assert_eq!(r.reserve(new("s", "1.1.1.1", true), now).unwrap().node, "broken", "emptiest, listed first");
    assert_eq!(r.place_elsewhere("id-s", now, &[]).map(|p| (p.node, p.port)), Some(("good".into(), 100)));
    assert_eq!(r.slots_in_use(), vec![("good".into(), 100)], "the failed slot is free");
    // The broken node has no session, yet new ones go to the good node while it cools.
    assert_eq!(r.reserve(new("t", "1.1.1.1", true), now).unwrap().node, "good");
    // With no room left elsewhere, the cooling node is still used; after the cooldown it
    // is an ordinary node again.
    assert_eq!(r.reserve(new("u", "1.1.1.1", true), now).unwrap().node, "broken");
    assert_eq!(r.reserve(new("v", "1.1.1.1", true), now + NODE_COOLDOWN).unwrap().node, "broken");
    // No other node: nothing to move to.
    let mut lone = Registry::new((100, 101), 10, 10);
    lone.set_nodes(vec![node("only", "a", true)]);
    lone.reserve(new("s", "1.1.1.1", true), now).unwrap();
    assert_eq!(lone.place_elsewhere("id-s", now, &[]), None);
}

fn ready(r: &mut Registry, id: &str) {
    let control = ControlAccess { addr: "127.0.0.1:1".parse().unwrap(), secret: SecretString::from("s") };
    assert!(r.member_ready(id, Ready { handle: format!("c-{id}"), control }));
}

#[test]
fn pool_members_hold_ports_count_against_the_cap_and_are_taken_once() {
    let now = Instant::now();
    let mut r = local((100, 103), 3, 1);
    assert_eq!(r.reserve_member("m1", LOCAL_NODE, 0, now).unwrap().port, 100);
    assert_eq!(r.reserve_member("m2", LOCAL_NODE, 0, now).unwrap().port, 101);
    assert_eq!(r.take_member(new("a", "1.1.1.1", false), 0, now).unwrap().map(|t| t.id), None, "none ready yet");
    ready(&mut r, "m1");
    let taken = r.take_member(new("a", "1.1.1.1", false), 0, now).unwrap().expect("a ready member");
    assert_eq!((taken.id.as_str(), taken.placed.port, taken.handle.as_str()), ("m1", 100, "c-m1"));
    let s = r.get("a").unwrap();
    assert_eq!((s.id.as_str(), s.state.clone(), s.handle.as_deref()), ("m1", State::Starting, Some("c-m1")));
    assert!(r.member("m1").is_none(), "taken out of the pool");
    assert_eq!(r.take_member(new("b", "2.2.2.2", false), 0, now).unwrap().map(|t| t.id), None, "m1 is not taken twice");
    // 1 session + 2 members would exceed the cap of 3: the pool is full, a start must evict.
    assert_eq!(r.reserve_member("m3", LOCAL_NODE, 0, now).unwrap().port, 102);
    assert_eq!(r.reserve_member("m4", LOCAL_NODE, 0, now).unwrap_err(), RegistryError::Full);
    assert_eq!(r.reserve(new("b", "2.2.2.2", false), now).unwrap_err(), RegistryError::Full);
    let evicted = r.evict_member().expect("the pool gives way");
    assert!(evicted.ready.is_none(), "a member still starting goes first");
    r.free(&evicted.id, Gone::Removed, now);
    assert_eq!(r.reserve(new("b", "2.2.2.2", false), now).unwrap().port, 102, "its port is free again");
    assert_eq!(r.ports_in_use(), vec![100, 101, 102]);
    // The ordinary checks hold for a taken member too.
    ready(&mut r, "m2");
    assert_eq!(r.take_member(new("a", "3.3.3.3", false), 0, now).unwrap_err(), RegistryError::NameTaken);
    assert_eq!(r.take_member(new("c", "3.3.3.3", false), 0, now).unwrap().map(|t| t.placed.port), Some(101));
    assert_eq!(r.take_member(new("d", "4.4.4.4", false), 0, now).unwrap_err(), RegistryError::Full);
    assert_eq!(r.evict_member().map(|m| m.id), None, "the pool is empty");
}

#[test]
fn a_member_of_an_older_generation_is_not_handed_out_and_a_held_slot_waits_for_free() {
    let now = Instant::now();
    let mut r = local((100, 101), 2, 1);
    r.reserve_member("old", LOCAL_NODE, 0, now).unwrap();
    ready(&mut r, "old");
    assert!(r.take_member(new("a", "1.1.1.1", false), 1, now).unwrap().is_none());
    let m = r.remove_member("old").unwrap();
    assert!(r.holds(&m.id), "its server still holds the port");
    r.free(&m.id, Gone::Removed, now);
    assert!(!r.holds(&m.id));
    assert!(!r.member_ready(
        "old",
        Ready {
            handle: "x".into(),
            control: ControlAccess { addr: "127.0.0.1:1".parse().unwrap(), secret: SecretString::from("s") }
        }
    ));
}

/// The indexes (by id, by handle, per node, per address, free ports) answer what a walk over
/// every session answers, through a long random run of starts, moves, releases and frees.
#[test]
fn the_indexes_agree_with_a_walk_over_every_session() {
    let mut seed = 0x2545f4914f6cdd1du64;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let now = Instant::now();
    let mut r = Registry::new((100, 160), 40, 3);
    r.set_nodes(vec![node("n1", "a", true), node("n2", "b", true)]);
    let mut released: Vec<String> = Vec::new();
    let mut most = 0;
    for step in 0..4000 {
        let name = format!("s{}", rnd(60));
        match rnd(6) {
            0 | 1 => {
                let ip = format!("10.0.0.{}", rnd(5));
                let mut n = new(&name, &ip, rnd(4) == 0);
                n.id = format!("id-{step}"); // ids are never reused
                let _ = r.reserve(n, now);
            }
            2 => {
                if let Some(id) = r.get(&name).map(|s| s.id.clone()) {
                    r.set_handle(&id, &format!("h{step}"), None);
                }
            }
            3 => {
                if let Some(id) = r.get(&name).map(|s| s.id.clone()) {
                    if rnd(2) == 0 {
                        let _ = r.repick_port(&id, now);
                    } else {
                        let _ = r.place_elsewhere(&id, now, &[]);
                    }
                }
            }
            4 => {
                if let Some(s) = r.get(&name).map(|s| s.id.clone()).and_then(|id| r.release(&id)) {
                    released.push(s.id);
                }
            }
            _ => {
                if !released.is_empty() {
                    let id = released.swap_remove(rnd(released.len() as u64) as usize);
                    r.free(&id, if rnd(3) == 0 { Gone::Unsure } else { Gone::Removed }, now);
                }
            }
        }
        let all: Vec<Session> = r.list().cloned().collect();
        most = most.max(all.len());
        for s in &all {
            assert_eq!(r.by_id(&s.id).map(|x| &x.name), Some(&s.name), "step {step}: by id");
            if let Some(h) = &s.handle {
                assert_eq!(r.by_handle(h).map(|x| &x.name), Some(&s.name), "step {step}: by handle");
            }
        }
        for n in ["n1", "n2"] {
            assert_eq!(r.sessions_on(n), all.iter().filter(|s| s.node == n).count(), "step {step}: on {n}");
            let held = r.slots_in_use().iter().filter(|(node, _)| node == n).count();
            let free = (100..=160).count() - held;
            assert!(r.free_ports_on(n, now) <= free, "step {step}: free ports on {n}");
        }
        for k in 0..5 {
            let ip: IpAddr = format!("10.0.0.{k}").parse().unwrap();
            let counted = all.iter().filter(|s| s.counts_for_address && s.owner_ip == Some(ip)).count();
            assert!(counted <= 3, "step {step}: the per-address limit held ({counted} from {ip})");
            assert_eq!(r.per_address.get(&ip).copied().unwrap_or(0), counted, "step {step}: per address");
        }
        let mut slots = r.slots_in_use();
        let n = slots.len();
        slots.dedup();
        assert_eq!(slots.len(), n, "step {step}: a slot held twice");
    }
    assert!(most > 20, "the run kept many sessions at once (at most {most})");
}
