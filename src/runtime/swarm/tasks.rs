//! Swarm tasks as the swarm runtime reads them: their states, Swarm's words on them, when a
//! session's task has ended and why, and the task watch that turns that into exit events
//! (Swarm has no task events: the watch lists this hub's tasks twice a second; one list, not
//! the services too, since a removed service's tasks say so and then vanish with it).

use super::super::engine::{hub_filter, timed_within};
use super::super::{exit_reason, RuntimeError, RuntimeEvent};
use bollard::models::Task;
use bollard::query_parameters::ListTasksOptions;
use bollard::Docker;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;
use tracing::debug;

/// How often the task watch looks at the tasks.
pub(super) const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Task states after which a task never runs again.
pub(super) fn finished(state: &str) -> bool {
    matches!(state, "complete" | "shutdown" | "failed" | "rejected" | "remove" | "orphaned")
}

pub(super) fn task_state(t: &Task) -> String {
    t.status.as_ref().and_then(|s| s.state.as_ref()).map(|s| s.to_string()).unwrap_or_default()
}

/// Swarm's own words on a task: its error, else its message.
pub(super) fn task_words(t: &Task) -> String {
    let status = t.status.as_ref();
    let err = status.and_then(|s| s.err.clone()).filter(|e| !e.is_empty());
    err.or_else(|| status.and_then(|s| s.message.clone())).unwrap_or_default()
}

pub(super) fn task_exit_code(t: &Task) -> Option<i64> {
    t.status.as_ref().and_then(|s| s.container_status.as_ref()).and_then(|c| c.exit_code)
}

pub(super) fn desired_state(t: &Task) -> String {
    t.desired_state.as_ref().map(|s| s.to_string()).unwrap_or_default()
}

/// The newest task of a list (a service has one, restart `none`).
pub(super) fn newest(tasks: &[Task]) -> Option<&Task> {
    tasks.iter().max_by_key(|t| t.version.as_ref().and_then(|v| v.index))
}

/// The newest task of each service, by service id.
pub(super) fn newest_by_service(tasks: &[Task]) -> HashMap<&str, &Task> {
    let index = |t: &Task| t.version.as_ref().and_then(|v| v.index);
    let mut out: HashMap<&str, &Task> = HashMap::with_capacity(tasks.len());
    for t in tasks {
        let Some(service) = t.service_id.as_deref() else { continue };
        let entry = out.entry(service).or_insert(t);
        // Ties go to the later one, as with `newest`'s `max_by_key`.
        if index(t) >= index(entry) {
            *entry = t;
        }
    }
    out
}

/// Has the task ended, or will it never run on (Swarm wants it shut down: its node is down
/// or drained)? Then the owner's reason, and whether it was the server's own idle exit.
pub(super) fn task_end(t: &Task) -> Option<(String, bool)> {
    let state = task_state(t);
    let code = task_exit_code(t);
    if finished(&state) {
        let reason = match (state.as_str(), code) {
            // Its own exit with 0 is the idle timer; a stop from outside also gives 0.
            ("complete", Some(0)) => return Some((exit_reason(Some(0)), true)),
            // Stopped because its service was removed (a look may first see it here).
            ("shutdown", _) if desired_state(t) == "remove" => SERVICE_REMOVED.to_string(),
            ("shutdown", _) => "its machine was drained or its service stopped".to_string(),
            (_, Some(_)) => exit_reason(code),
            _ => format!("its Swarm task {state}: {}", task_words(t)),
        };
        return Some((reason, false));
    }
    match desired_state(t).as_str() {
        // Swarm wants a removed service's tasks removed.
        "remove" => Some((SERVICE_REMOVED.to_string(), false)),
        "shutdown" => Some(("its machine went down or was drained".to_string(), false)),
        _ => None,
    }
}

/// Why a session ended whose service was removed from outside the hub.
pub(super) const SERVICE_REMOVED: &str = "the session's service was removed";

/// The state of the task watch behind [`SwarmRuntime::events`].
pub(super) struct TaskWatch {
    pub(super) docker: Docker,
    pub(super) hub_id: String,
    pub(super) limit: Duration,
    /// Services seen (to notice one removed from outside).
    pub(super) seen: HashSet<String>,
    /// Services already reported as ended.
    pub(super) reported: HashSet<String>,
    pub(super) pending: VecDeque<RuntimeEvent>,
    pub(super) first: bool,
}

impl TaskWatch {
    /// One look at this hub's tasks; ended sessions are queued as events. A service removed
    /// from outside first shows its task with the desired state `remove`; once Swarm has
    /// stopped it, the service's tasks are gone from the list, which also ends its session.
    /// (The services were listed too, twice a second: with 1,000 sessions that decoded 1,000
    /// service specs each time to learn what the tasks already say.)
    pub(super) async fn poll(&mut self) -> Result<(), RuntimeError> {
        let opts = ListTasksOptions { filters: Some(hub_filter(&self.hub_id)) };
        let tasks = timed_within(self.limit, self.docker.list_tasks(Some(opts))).await?;
        // Each service's newest task, in one pass over the tasks (matching every service
        // against every task cost N x N comparisons twice a second).
        let by_service = newest_by_service(&tasks);
        for (id, t) in &by_service {
            if !self.seen.contains(*id) {
                self.seen.insert(id.to_string());
            }
            if self.reported.contains(*id) {
                continue;
            }
            if let Some((reason, idle)) = task_end(t) {
                self.reported.insert(id.to_string());
                debug!(service = %id, state = %task_state(t), "session task ended");
                self.pending.push_back(RuntimeEvent::Exited { handle: id.to_string(), reason, idle });
            }
        }
        // Services whose tasks are gone: removed (reported now unless their end already was).
        let gone: Vec<String> = self.seen.iter().filter(|id| !by_service.contains_key(id.as_str())).cloned().collect();
        for id in gone {
            self.seen.remove(&id);
            if self.reported.insert(id.clone()) {
                self.pending.push_back(RuntimeEvent::Exited {
                    handle: id,
                    reason: SERVICE_REMOVED.into(),
                    idle: false,
                });
            }
        }
        self.reported.retain(|id| by_service.contains_key(id.as_str()));
        Ok(())
    }
}
