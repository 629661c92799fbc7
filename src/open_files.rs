//! The hub's open files: each session holds two (its owner's connection and its control
//! channel), three behind the hub's front door (its port's listener; each relayed performer
//! then takes two more, at most `FRONT_DOOR_RELAYS` at once), so 1,000 sessions need more
//! than the 1,024 a process gets by default under systemd. At start the soft limit is raised
//! to the hard one; a session range the hub could not hold is refused at start (and in a
//! reload), naming the limit and how to raise it.

use crate::config::{Config, RuntimeKind};

/// Files each session keeps open in the hub: its owner's connection and its control channel.
pub const PER_SESSION: u64 = 2;
/// Files the hub needs besides sessions: listeners, the engine's connections, the archive,
/// logs, a margin for connections being accepted.
pub const BASE: u64 = 256;

/// Sessions the configuration can hold at once: on one engine no more than its ports.
pub fn sessions(c: &Config) -> u64 {
    let ports = u64::from(c.ports.1 - c.ports.0) + 1;
    match c.runtime {
        RuntimeKind::Docker => ports.min(c.max_sessions as u64),
        RuntimeKind::Swarm => c.max_sessions as u64,
    }
}

/// Files needed for every session at once, and with every connection cap full too.
pub fn needed(c: &Config) -> (u64, u64) {
    let each = PER_SESSION + u64::from(c.front_door);
    let sessions = each * sessions(c) + BASE;
    let relays = if c.front_door { 2 * crate::runtime::docker::FRONT_DOOR_RELAYS as u64 } else { 0 };
    let connections = c.max_connections as u64
        + relays
        + crate::http::MAX_CONNECTIONS as u64
        + if c.browser_seats { c.browser_seats_total as u64 } else { 0 };
    (sessions, sessions + connections)
}

/// Whether a process allowed `limit` open files can hold `c`'s sessions: `Err` says why not in
/// one line; `Ok(Some(..))` warns that full connection caps could run out.
pub fn check(c: &Config, limit: u64) -> Result<Option<String>, String> {
    let (sessions, everything) = needed(c);
    if limit < sessions {
        return Err(format!(
            "ports {}-{} and max_sessions {} let {} sessions run, which need about {sessions} open files, but this process may open {limit} (ulimit -n): raise the limit (systemd LimitNOFILE=65536, docker run --ulimit nofile=65536, compose `ulimits: {{nofile: 65536}}`) or narrow `ports`",
            c.ports.0,
            c.ports.1,
            c.max_sessions,
            self::sessions(c)
        ));
    }
    Ok((limit < everything).then(|| {
        format!("the hub may open {limit} files (ulimit -n); full sessions and full connection caps need about {everything}: raise the limit to be safe")
    }))
}

/// Raises the soft limit on open files to the hard one; returns the limit now in force.
pub fn raise() -> u64 {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, hard)) if soft < hard => rlimit::increase_nofile_limit(hard).unwrap_or(soft),
        _ => current(),
    }
}

/// The limit in force now (`u64::MAX` when it cannot be read: then nothing is refused).
pub fn current() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(u64::MAX, |(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::from_yaml(&format!("{yaml}\narchive: off")).expect("valid")
    }

    #[test]
    fn a_thousand_sessions_need_more_than_systemds_default_and_the_refusal_names_the_fix() {
        let c = config("ports: 20000-20999\nmax_sessions: 1000");
        assert_eq!(sessions(&c), 1000);
        let why = check(&c, 1024).expect_err("1,024 files cannot hold 1,000 sessions");
        assert!(why.starts_with("ports 20000-20999 and max_sessions 1000 let 1000 sessions run"), "{why}");
        assert!(why.contains("need about 2256 open files") && why.contains("may open 1024 (ulimit -n)"), "{why}");
        assert!(why.contains("LimitNOFILE"), "{why}");
        assert_eq!(check(&c, 1 << 20), Ok(None));
        assert!(check(&c, 3000).expect("enough for the sessions").is_some_and(|w| w.contains("connection caps")));
    }

    #[test]
    fn the_smaller_of_the_ports_and_the_cap_counts() {
        assert_eq!(sessions(&config("ports: 20000-29999\nmax_sessions: 10")), 10);
        assert_eq!(sessions(&config("ports: 20000-20004\nmax_sessions: 100")), 5);
        assert!(check(&config("ports: 57991-58000"), 1024).is_ok(), "the defaults fit systemd's 1,024");
    }
}
