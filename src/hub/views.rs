//! What the front doors read of the hub: a session's public address, the session list, the
//! placement table, the gauges for metrics and the status page, warnings for /readyz. Read
//! only; never a password.

use super::{lock, now, short, Hub};
use crate::metrics::Gauges;
use crate::registry::{Node, Session, State};
use std::time::{Instant, SystemTime};

/// What the list requests show of a session (never its password).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    pub name: String,
    pub id: String,
    pub host: String,
    /// The node it runs on ("local" for the local Docker runtime).
    pub node: String,
    pub port: u16,
    pub state: &'static str,
    pub created: u64,
    pub age_seconds: u64,
    pub owner_connected: bool,
    pub daemon: bool,
    /// The short id of its container (swarm: its service).
    pub container: Option<String>,
    /// Performers connected now (from the session's live stream; empty for images without
    /// a control channel).
    pub performers: Vec<PerformerInfo>,
    /// Unix time (seconds) of the last thing that happened in it, if known.
    pub last_activity: Option<u64>,
    /// Edits applied and evaluations so far.
    pub operations: u64,
    pub evaluations: u64,
    /// Performers playing from a browser seat now, and whether its seats are on.
    pub seats: usize,
    pub seats_on: bool,
    /// Its owner locked it to new performers.
    pub locked: bool,
    /// Statistics per performer since the hub followed it: for one session
    /// ([`Hub::session`]), not in the list (each would walk its document's authors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<crate::audience::StatsByName>,
}

/// A performer as the lists show it (never its address).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PerformerInfo {
    /// Its Troop client id in the session.
    pub id: i64,
    pub name: String,
    /// Unix time (seconds) it joined.
    pub since: u64,
}

/// A node as the placement table sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeInfo {
    pub id: String,
    /// The host performers are given for sessions on it.
    pub host: String,
    /// Ready and active (drained or down nodes get no new sessions).
    pub usable: bool,
    pub sessions: usize,
    pub free_ports: usize,
    /// Warm pool members on it, ready or starting.
    pub pool_members: usize,
}

impl Hub {
    /// The public address of a running session.
    pub fn query(&self, name: &str) -> Option<(String, u16)> {
        lock(&self.registry).running(name).map(|s| (self.host_for(s.host.as_ref()), s.port))
    }

    /// Every session, by name.
    pub fn list(&self) -> Vec<SessionInfo> {
        let registry = lock(&self.registry);
        let (now, seats_on_hub) = (now(), self.config().browser_seats);
        registry.list().map(|s| self.info(s, now, seats_on_hub)).collect()
    }

    /// One session, by name.
    pub fn session(&self, name: &str) -> Option<SessionInfo> {
        let registry = lock(&self.registry);
        let mut info = registry.get(name).map(|s| self.info(s, now(), self.config().browser_seats))?;
        info.stats = Some(self.live.with(&info.id, |f| f.stats()).unwrap_or_default());
        Some(info)
    }

    fn info(&self, s: &Session, now: Instant, seats_on_hub: bool) -> SessionInfo {
        let live = self.live_view(&s.id).unwrap_or_default();
        SessionInfo {
            name: s.name.clone(),
            id: s.id.clone(),
            host: self.host_for(s.host.as_ref()),
            node: s.node.clone(),
            port: s.port,
            state: match s.state {
                State::Starting => "starting",
                State::Running => "running",
            },
            created: s.created.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            age_seconds: now.saturating_duration_since(s.started).as_secs(),
            owner_connected: s.owner_connected,
            daemon: s.daemon,
            container: s.handle.as_deref().map(|c| short(c).to_string()),
            performers: live
                .performers
                .iter()
                .map(|p| PerformerInfo { id: p.id, name: p.name.clone(), since: p.since_ms / 1000 })
                .collect(),
            last_activity: live.last_activity_ms.map(|t| t / 1000),
            operations: live.counters.operations,
            evaluations: live.counters.evaluations,
            seats: self.seats.count(&s.id),
            seats_on: seats_on_hub && self.seats.enabled(&s.id),
            locked: live.locked,
            stats: None,
        }
    }

    /// The nodes as the hub places sessions on them.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let r = lock(&self.registry);
        let now = now();
        r.nodes()
            .iter()
            .map(|n: &Node| NodeInfo {
                id: n.id.clone(),
                host: self.host_for(n.host.as_ref()),
                usable: n.usable,
                sessions: r.sessions_on(&n.id),
                free_ports: r.free_ports_on(&n.id, now),
                pool_members: r.members_on(&n.id),
            })
            .collect()
    }

    /// Gauges for the metrics page and the status page.
    pub fn gauges(&self) -> Gauges {
        let pool = self.pool_info();
        let r = lock(&self.registry);
        Gauges {
            running: r.len(),
            free_ports: r.free_ports(now()),
            cap: r.max_sessions(),
            nodes_usable: r.nodes().iter().filter(|n| n.usable).count(),
            performers: self.live.performers(),
            viewers: self.viewer_count(),
            seats: self.seats.total(),
            pool,
            archive: self.archive.get().map(|a| crate::metrics::ArchiveGauges {
                write_errors: a.write_errors(),
                dropped_lines: a.dropped_lines(),
                queue_depth: a.queue_depth(),
            }),
        }
    }

    /// Warnings for the operator, shown on /readyz.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = self.runtime.warnings();
        w.extend(self.public_host_warning.clone());
        w.extend(
            self.archive.get().and_then(|a| a.problem()).map(|p| format!("{p}; sessions play on and recording waits")),
        );
        w
    }

    /// Session `name`'s id and where the hub reaches its Troop port, while it runs.
    pub fn troop_target(&self, name: &str) -> Option<(String, std::net::SocketAddr)> {
        lock(&self.registry).running(name).and_then(|s| Some((s.id.clone(), s.troop_addr()?)))
    }

    /// Names of the performers connected to session `id` now, as its live view knows them.
    pub fn performer_names(&self, id: &str) -> Vec<String> {
        self.live.with(id, |f| f.view.performers.iter().map(|p| p.name.clone()).collect()).unwrap_or_default()
    }

    /// Ports the registry holds (for tests and consistency checks).
    pub fn ports_in_use(&self) -> Vec<u16> {
        lock(&self.registry).ports_in_use()
    }
}
