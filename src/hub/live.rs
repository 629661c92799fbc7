//! The hub's live view of each session: one subscription to its server's event stream
//! (performers joining and leaving, edits, evaluations), kept while the session lives and
//! re-established when it breaks (also for sessions adopted after a restart). The status page,
//! the API, `list` and Prometheus read it.

use super::{lock, Hub};
use crate::registry::ControlAccess;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use troop_server::control::{ControlClient, Counters, Event, EventKind, Performer, Snapshot};

/// What the hub knows of a live session.
#[derive(Debug, Clone, Default)]
pub struct LiveView {
    /// Joined, connected performers, in the order they joined.
    pub performers: Vec<Performer>,
    pub counters: Counters,
    /// Unix time (ms) of the last thing that happened in the session.
    pub last_activity_ms: Option<u64>,
}

impl LiveView {
    fn from_snapshot(s: Snapshot) -> LiveView {
        LiveView { performers: s.performers, counters: s.counters, last_activity_ms: s.last_activity_ms }
    }

    fn apply(&mut self, e: &Event) {
        self.last_activity_ms = Some(e.time_ms);
        match &e.kind {
            EventKind::Join { id, name, colour, address } => {
                self.performers.retain(|p| p.id != *id);
                let (name, address) = (name.clone(), address.clone());
                self.performers.push(Performer { id: *id, name, colour: *colour, since_ms: e.time_ms, address });
            }
            EventKind::Leave { id } => self.performers.retain(|p| p.id != *id),
            EventKind::Operation { .. } => self.counters.operations += 1,
            EventKind::Evaluate { .. } => self.counters.evaluations += 1,
            _ => {}
        }
    }
}

/// Waits between attempts to (re)subscribe, growing to this.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Hub {
    /// Starts following session `id`'s server (until the session ends).
    pub(super) fn follow(self: &Arc<Self>, id: &str, access: ControlAccess) {
        let stop = self.shutdown.child_token();
        lock(&self.live).insert(id.to_string(), (LiveView::default(), stop.clone()));
        tokio::spawn(self.clone().subscribe_loop(id.to_string(), access, stop));
    }

    /// Stops following session `id`.
    pub(super) fn unfollow(&self, id: &str) {
        if let Some((_, stop)) = lock(&self.live).remove(id) {
            stop.cancel();
        }
    }

    /// The live view of session `id`, if the hub follows it.
    pub fn live_view(&self, id: &str) -> Option<LiveView> {
        lock(&self.live).get(id).map(|(v, _)| v.clone())
    }

    async fn subscribe_loop(self: Arc<Self>, id: String, access: ControlAccess, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() && lock(&self.registry).by_id(&id).is_some() {
            if self.subscribe_once(&id, &access, &stop).await {
                backoff = Duration::from_millis(100);
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One subscription, until it breaks or `stop`. True if it got as far as a snapshot.
    async fn subscribe_once(&self, id: &str, access: &ControlAccess, stop: &CancellationToken) -> bool {
        let timeout = super::control::CONTROL_TIMEOUT;
        let subscribed = async {
            let client = ControlClient::connect(access.addr, access.secret.expose_secret(), timeout).await?;
            client.subscribe().await
        };
        let (snapshot, mut events) = match subscribed.await {
            Ok(s) => s,
            Err(e) => {
                debug!(id, error = %e, "could not subscribe to the session; retrying");
                return false;
            }
        };
        if let Some(entry) = lock(&self.live).get_mut(id) {
            entry.0 = LiveView::from_snapshot(snapshot);
        }
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return true,
                e = events.next() => e,
            };
            let Ok(Some(event)) = event else { return true };
            match &event.kind {
                EventKind::Operation { .. } => self.metrics.operation(),
                EventKind::Evaluate { .. } => self.metrics.evaluation(),
                _ => {}
            }
            if let Some(entry) = lock(&self.live).get_mut(id) {
                entry.0.apply(&event);
            }
        }
    }
}
