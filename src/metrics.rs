//! The hub's counters and their Prometheus text rendering (`GET /metrics`, names prefixed
//! `troop_hub_`). Plain atomics and small maps; no metrics library needed for a dozen series.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the start latency histogram buckets.
/// (The smallest ones are for starts served by the warm pool.)
const LATENCY_BUCKETS: [f64; 16] =
    [0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 15.0];

/// Upper bounds (seconds) of the query time histogram. The hub's own work on a query is tens
/// of microseconds; the larger buckets show a connection that waited for a busy machine.
const QUERY_BUCKETS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// A Prometheus histogram over `N` bounds (cumulative counts, as exposed).
struct Histogram<const N: usize> {
    counts: [u64; N],
    count: u64,
    sum: f64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Histogram { counts: [0; N], count: 0, sum: 0.0 }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&mut self, bounds: &[f64; N], d: Duration) {
        let secs = d.as_secs_f64();
        for (k, bound) in bounds.iter().enumerate() {
            if secs <= *bound {
                self.counts[k] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    fn render(&self, out: &mut String, bounds: &[f64; N], name: &str, help: &str) {
        let _ = writeln!(out, "# HELP troop_hub_{name} {help}\n# TYPE troop_hub_{name} histogram");
        for (k, bound) in bounds.iter().enumerate() {
            let _ = writeln!(out, "troop_hub_{name}_bucket{{le=\"{bound}\"}} {}", self.counts[k]);
        }
        let _ = writeln!(out, "troop_hub_{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "troop_hub_{name}_sum {}", self.sum);
        let _ = writeln!(out, "troop_hub_{name}_count {}", self.count);
    }
}

/// Everything the hub counts.
#[derive(Default)]
pub struct Metrics {
    started: AtomicU64,
    ended: Mutex<BTreeMap<&'static str, u64>>,
    start_failures: Mutex<BTreeMap<&'static str, u64>>,
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    latency: Mutex<Histogram<{ LATENCY_BUCKETS.len() }>>,
    /// Hub-protocol queries, from their connection accepted to the reply written.
    queries: Mutex<Histogram<{ QUERY_BUCKETS.len() }>>,
    docker_errors: AtomicU64,
    /// Operations applied and evaluations, over every session (from their live streams).
    operations: AtomicU64,
    evaluations: AtomicU64,
    /// Characters typed and deleted, over every session (no label per performer).
    typed: AtomicU64,
    deleted: AtomicU64,
    /// Performers removed by owners, and locks set.
    removals: AtomicU64,
    locks: AtomicU64,
    open_connections: AtomicI64,
    reloads: Mutex<BTreeMap<&'static str, u64>>,
}

fn bump<K: Ord>(m: &Mutex<BTreeMap<K, u64>>, key: K) {
    let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
    *m.entry(key).or_default() += 1;
}

/// Gauges read from the hub when rendering.
pub struct Gauges {
    pub running: usize,
    pub free_ports: usize,
    pub cap: usize,
    /// Nodes that take new sessions (1 for the local Docker runtime).
    pub nodes_usable: usize,
    /// Performers connected, over every session.
    pub performers: usize,
    /// Audience viewers watching, over every session.
    pub viewers: usize,
    /// Browser seats open, over every session.
    pub seats: usize,
    pub pool: crate::hub::PoolInfo,
    /// The archive's writer, when the hub keeps one.
    pub archive: Option<ArchiveGauges>,
}

/// How the archive's writer is doing.
#[derive(Debug, Clone, Copy, Default)]
pub struct ArchiveGauges {
    pub write_errors: u64,
    pub dropped_lines: u64,
    pub queue_depth: usize,
}

impl Metrics {
    pub fn session_started(&self, latency: Duration) {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.latency.lock().unwrap_or_else(|p| p.into_inner()).observe(&LATENCY_BUCKETS, latency);
    }

    /// A hub-protocol query answered, `took` after its connection was accepted.
    pub fn query_answered(&self, took: Duration) {
        self.queries.lock().unwrap_or_else(|p| p.into_inner()).observe(&QUERY_BUCKETS, took);
    }

    pub fn session_ended(&self, reason: &'static str) {
        bump(&self.ended, reason);
    }

    pub fn start_failed(&self, reason: &'static str) {
        bump(&self.start_failures, reason);
    }

    /// One hub request: `kind` (server, query, kill, list, http_*) and `outcome` (ok, error).
    pub fn request(&self, kind: &'static str, outcome: &'static str) {
        bump(&self.requests, (kind, outcome));
    }

    /// A performer's operation was applied in some session.
    pub fn operation(&self) {
        self.operations.fetch_add(1, Ordering::Relaxed);
    }

    /// A performer evaluated code in some session.
    pub fn evaluation(&self) {
        self.evaluations.fetch_add(1, Ordering::Relaxed);
    }

    /// An edit typed `typed` characters and deleted `deleted`.
    pub fn characters(&self, typed: u64, deleted: u64) {
        self.typed.fetch_add(typed, Ordering::Relaxed);
        self.deleted.fetch_add(deleted, Ordering::Relaxed);
    }

    /// An owner removed a performer (`lock: false`) or locked a session (`lock: true`).
    pub fn moderation(&self, lock: bool) {
        let counter = if lock { &self.locks } else { &self.removals };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn docker_error(&self) {
        self.docker_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reload(&self, outcome: &'static str) {
        bump(&self.reloads, outcome);
    }

    pub fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let mut gauge = |name: &str, help: &str, v: f64| {
            let _ =
                writeln!(out, "# HELP troop_hub_{name} {help}\n# TYPE troop_hub_{name} gauge\ntroop_hub_{name} {v}");
        };
        gauge("sessions_running", "Sessions registered (starting or running).", g.running as f64);
        gauge("ports_free", "Session ports neither used nor set aside.", g.free_ports as f64);
        gauge("sessions_cap", "The configured session cap (max_sessions).", g.cap as f64);
        gauge("nodes_usable", "Nodes that take new sessions (ready and active).", g.nodes_usable as f64);
        gauge("performers", "Performers connected, over every session.", g.performers as f64);
        gauge("viewers", "Audience viewers watching in a browser, over every session.", g.viewers as f64);
        gauge("seats", "Performers playing from a browser seat, over every session.", g.seats as f64);
        gauge(
            "pool_target",
            "Warm pool members wanted now (warm_pool per node, within the cap).",
            g.pool.target as f64,
        );
        gauge("pool_ready", "Warm pool members started, locked and ready to be taken.", g.pool.ready as f64);
        gauge("pool_starting", "Warm pool members being started.", g.pool.starting as f64);
        gauge(
            "tcp_connections_open",
            "Open connections to the hub protocol port.",
            self.open_connections.load(Ordering::Relaxed) as f64,
        );
        if let Some(a) = g.archive {
            gauge("archive_queue_depth", "Timeline lines waiting for the archive's writer.", a.queue_depth as f64);
            let _ = writeln!(
                out,
                "# HELP troop_hub_archive_write_errors_total Archive writes that failed (each failed attempt; a failing batch is retried).\n# TYPE troop_hub_archive_write_errors_total counter\ntroop_hub_archive_write_errors_total {}\n# HELP troop_hub_archive_dropped_lines_total Timeline lines dropped because the archive's queue was full (their sessions are marked truncated).\n# TYPE troop_hub_archive_dropped_lines_total counter\ntroop_hub_archive_dropped_lines_total {}",
                a.write_errors, a.dropped_lines
            );
        }
        let _ = writeln!(
            out,
            "# HELP troop_hub_sessions_started_total Sessions that became ready.\n# TYPE troop_hub_sessions_started_total counter\ntroop_hub_sessions_started_total {}",
            self.started.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP troop_hub_docker_errors_total Docker Engine API calls that failed.\n# TYPE troop_hub_docker_errors_total counter\ntroop_hub_docker_errors_total {}",
            self.docker_errors.load(Ordering::Relaxed)
        );
        for (name, help, v) in [
            ("session_operations_total", "Edits applied, over every session.", &self.operations),
            ("session_evaluations_total", "Code evaluations, over every session.", &self.evaluations),
            ("session_typed_characters_total", "Characters performers typed, over every session.", &self.typed),
            ("session_deleted_characters_total", "Characters performers deleted, over every session.", &self.deleted),
            ("performers_removed_total", "Performers removed from their session by its owner.", &self.removals),
            ("session_locks_total", "Sessions locked to new performers by their owner.", &self.locks),
        ] {
            let v = v.load(Ordering::Relaxed);
            let _ =
                writeln!(out, "# HELP troop_hub_{name} {help}\n# TYPE troop_hub_{name} counter\ntroop_hub_{name} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP troop_hub_pool_refills_total Warm pool member starts, by result.\n# TYPE troop_hub_pool_refills_total counter\ntroop_hub_pool_refills_total{{result=\"ready\"}} {}\ntroop_hub_pool_refills_total{{result=\"failed\"}} {}",
            g.pool.refilled, g.pool.refill_failures
        );
        let _ = writeln!(
            out,
            "# HELP troop_hub_session_starts_total Session starts, by path: a warm pool member armed, or a container started.\n# TYPE troop_hub_session_starts_total counter\ntroop_hub_session_starts_total{{from=\"pool\"}} {}\ntroop_hub_session_starts_total{{from=\"cold\"}} {}",
            g.pool.warm_starts, g.pool.cold_starts
        );
        let labelled =
            |out: &mut String, name: &str, help: &str, label: &str, m: &Mutex<BTreeMap<&'static str, u64>>| {
                let _ = writeln!(out, "# HELP troop_hub_{name} {help}\n# TYPE troop_hub_{name} counter");
                for (k, v) in m.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                    let _ = writeln!(out, "troop_hub_{name}{{{label}=\"{k}\"}} {v}");
                }
            };
        labelled(&mut out, "sessions_ended_total", "Sessions ended, by reason.", "reason", &self.ended);
        labelled(
            &mut out,
            "session_start_failures_total",
            "Session starts refused or failed, by reason.",
            "reason",
            &self.start_failures,
        );
        labelled(&mut out, "config_reloads_total", "hub.yaml reloads, by outcome.", "outcome", &self.reloads);
        let _ = writeln!(
            out,
            "# HELP troop_hub_requests_total Requests, by type and outcome.\n# TYPE troop_hub_requests_total counter"
        );
        for ((kind, outcome), v) in self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "troop_hub_requests_total{{type=\"{kind}\",outcome=\"{outcome}\"}} {v}");
        }
        self.latency.lock().unwrap_or_else(|p| p.into_inner()).render(
            &mut out,
            &LATENCY_BUCKETS,
            "session_start_seconds",
            "Time from a start request to the session accepting connections.",
        );
        self.queries.lock().unwrap_or_else(|p| p.into_inner()).render(
            &mut out,
            &QUERY_BUCKETS,
            "query_seconds",
            "Hub-protocol queries, from their connection accepted to the reply written (without the wait in the kernel's accept queue; with the wait for the client's request).",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.session_started(Duration::from_millis(180));
        m.session_ended("owner_left");
        m.request("query", "ok");
        m.query_answered(Duration::from_micros(300));
        let pool = crate::hub::PoolInfo { target: 2, ready: 1, starting: 1, warm_starts: 5, ..Default::default() };
        let archive = Some(ArchiveGauges { write_errors: 4, dropped_lines: 5, queue_depth: 6 });
        let g = Gauges {
            running: 1,
            free_ports: 9,
            cap: 10,
            nodes_usable: 1,
            performers: 2,
            viewers: 3,
            seats: 4,
            pool,
            archive,
        };
        let text = m.render(&g);
        assert!(text.contains("troop_hub_sessions_started_total 1"));
        assert!(text.contains("troop_hub_sessions_ended_total{reason=\"owner_left\"} 1"));
        assert!(text.contains("troop_hub_requests_total{type=\"query\",outcome=\"ok\"} 1"));
        assert!(text.contains("troop_hub_session_start_seconds_bucket{le=\"0.15\"} 0"));
        assert!(text.contains("troop_hub_session_start_seconds_bucket{le=\"0.2\"} 1"));
        assert!(text.contains("troop_hub_query_seconds_bucket{le=\"0.00025\"} 0\n"));
        assert!(text.contains("troop_hub_query_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("troop_hub_query_seconds_count 1\n"));
        assert!(text.contains("troop_hub_sessions_cap 10"));
        assert!(text.contains("troop_hub_nodes_usable 1"));
        assert!(text.contains("troop_hub_performers 2"));
        assert!(text.contains("troop_hub_viewers 3"));
        assert!(text.contains("troop_hub_seats 4"));
        assert!(text.contains("troop_hub_session_operations_total 0"));
        assert!(text.contains("troop_hub_pool_target 2\n"));
        assert!(text.contains("troop_hub_pool_ready 1\n"));
        assert!(text.contains("troop_hub_session_starts_total{from=\"pool\"} 5\n"));
        assert!(text.contains("troop_hub_archive_write_errors_total 4\n"));
        assert!(text.contains("troop_hub_archive_dropped_lines_total 5\n"));
        assert!(text.contains("troop_hub_archive_queue_depth 6\n"));
    }
}
