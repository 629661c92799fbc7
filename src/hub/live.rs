//! The hub's live view of each session: one subscription to its server's event stream
//! (performers joining and leaving, edits, evaluations), kept while the session lives and
//! re-established when it breaks (also for sessions adopted after a restart). The status page,
//! the API, `list` and Prometheus read it. The same stream keeps the session's document for
//! its audience ([`Followed::doc`]) and is fanned out to viewers ([`super::audience`]): the
//! session server always has one subscriber, the hub, however many watch.

use super::control::Subscription;
use super::record::{Recorder, DOCUMENT_EVERY};
use super::{lock, EndReason, Hub};
use crate::audience::{LiveDoc, LiveMessage, LiveSnapshot, Stats, StatsByName};
use crate::registry::ControlAccess;
use axum::extract::ws::Utf8Bytes;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use troop_server::control::{ControlClient, Counters, Event, EventKind, Performer, Snapshot};

/// Messages a session's viewers may fall behind by before they are dropped.
pub const FEED_BACKLOG: usize = 1024;

/// A followed session: what the hub knows of it and what its viewers get.
pub(super) struct Followed {
    pub view: LiveView,
    /// Stops following it.
    pub stop: CancellationToken,
    /// The document as of event `seq`, once the first snapshot arrived.
    pub doc: Option<(LiveDoc, u64)>,
    /// Every viewer message, serialised once and shared by every viewer (no copy each). Made
    /// for the first viewer and let go after the last: its backlog's slots cost 64 KiB, which
    /// every idle session without viewers would otherwise hold.
    pub feed: Option<broadcast::Sender<Utf8Bytes>>,
    /// The owner (or the admin) opened its view to everyone.
    pub public: bool,
    /// Viewers watching it now.
    pub viewers: usize,
    pub name: String,
    /// Its recording in the archive, when the hub keeps one.
    pub recorder: Option<Recorder>,
    /// The task reading the server's events.
    pub task: Option<tokio::task::JoinHandle<()>>,
    /// The snapshot viewers get on arrival, serialised (in parts) once per change (made when
    /// the first viewer after a change asks; dropped on every change).
    pub snapshot_text: Option<Arc<[Utf8Bytes]>>,
    /// Its performers as counted in the hub's total (`None` once it is no longer followed).
    pub counted: Option<usize>,
    /// Statistics per performer since the hub followed it.
    pub stats: Stats,
}

impl Followed {
    /// The snapshot a viewer arriving now gets, serialised in its parts, if the hub has one yet.
    pub fn snapshot_text(&mut self) -> Option<Arc<[Utf8Bytes]>> {
        if self.snapshot_text.is_none() {
            self.snapshot_text = self.snapshot_parts().map(Arc::from);
        }
        self.snapshot_text.clone()
    }

    /// A viewer's snapshot of it now, in the messages viewers get (see [`LiveSnapshot::into_parts`]).
    fn snapshot_parts(&self) -> Option<Vec<Utf8Bytes>> {
        let (doc, seq) = self.doc.as_ref()?;
        let snapshot = LiveSnapshot::new(&self.name, *seq, doc, &self.view.performers, self.public);
        Some(snapshot.into_parts().into_iter().map(Utf8Bytes::from).collect())
    }

    /// Statistics per performer, with their shares of the document now.
    pub fn stats(&self) -> StatsByName {
        self.doc.as_ref().map(|(doc, _)| self.stats.report(doc)).unwrap_or_default()
    }

    /// The owner's public switch.
    pub fn set_public(&mut self, public: bool) {
        self.public = public;
        self.snapshot_text = None;
    }

    /// A viewer's snapshot of it now, if it has one.
    pub fn snapshot(&self) -> Option<LiveMessage> {
        let (doc, seq) = self.doc.as_ref()?;
        Some(LiveMessage::Snapshot(LiveSnapshot::new(&self.name, *seq, doc, &self.view.performers, self.public)))
    }

    /// Sends `message` to every viewer (none listening is fine).
    pub fn publish(&self, message: &LiveMessage) {
        if self.watched() {
            self.publish_text(Utf8Bytes::from(message.to_text()));
        }
    }

    fn publish_text(&self, text: Utf8Bytes) {
        if let Some(feed) = self.feed.as_ref().filter(|f| f.receiver_count() > 0) {
            let _ = feed.send(text);
        }
    }

    /// Someone is watching.
    fn watched(&self) -> bool {
        self.feed.as_ref().is_some_and(|f| f.receiver_count() > 0)
    }

    /// A receiver of the feed for a new viewer (the feed is made for the first).
    pub fn subscribe(&mut self) -> broadcast::Receiver<Utf8Bytes> {
        self.feed.get_or_insert_with(|| broadcast::channel(FEED_BACKLOG).0).subscribe()
    }

    /// A fresh snapshot from the server: the view, the document, and every viewer resynchronised.
    fn resync(&mut self, s: Snapshot) {
        let doc = LiveDoc::from_snapshot(&s.document, self.doc.as_ref().map(|(d, _)| d));
        let seq = s.seq;
        self.snapshot_text = None;
        self.doc = Some((doc, seq));
        self.view = LiveView::from_snapshot(s);
        if let Some(mut m) = self.snapshot() {
            self.stats.observe(&m);
            // Every viewer starts again from it, in parts (one after the other on the feed).
            if self.watched() {
                for part in self.snapshot_parts().unwrap_or_default() {
                    self.publish_text(part);
                }
            }
            if let (Some(recorder), Some((doc, _)), LiveMessage::Snapshot(snap)) =
                (&mut self.recorder, &self.doc, &mut m)
            {
                snap.time_ms = Some(super::record::unix_ms());
                recorder.snapshot(seq, &m, doc);
            }
        }
    }

    /// Gives the recording the document if it changed and was not written lately.
    fn keep_document(&mut self) {
        if let (Some(recorder), Some((doc, seq))) = (&mut self.recorder, &self.doc) {
            recorder.tick(doc, *seq);
        }
    }

    /// One event, in order. False if the document went out of step (then resubscribe).
    fn apply(&mut self, e: &Event) -> bool {
        self.view.apply(e);
        self.snapshot_text = None;
        let Some((doc, seq)) = self.doc.as_mut() else { return true };
        if e.seq != *seq + 1 {
            return false;
        }
        *seq = e.seq;
        let fits = match &e.kind {
            EventKind::Operation { author, ops } => doc.apply(*author, ops).is_ok(),
            EventKind::Mark { id, index } => {
                doc.set_mark(*id, *index);
                true
            }
            EventKind::Leave { id } => {
                doc.remove_mark(*id);
                true
            }
            _ => true,
        };
        if fits {
            if let Some(m) = LiveMessage::from_event(e) {
                self.stats.observe(&m);
                if self.recorder.is_some() || self.watched() {
                    let text = m.to_text();
                    if let (Some(recorder), Some((doc, _))) = (&mut self.recorder, &self.doc) {
                        recorder.event(&m, &text, doc);
                    }
                    self.publish_text(Utf8Bytes::from(text));
                }
            }
        }
        fits
    }
}

/// What the hub knows of a live session.
#[derive(Debug, Clone, Default)]
pub struct LiveView {
    /// Joined, connected performers, in the order they joined.
    pub performers: Vec<Performer>,
    pub counters: Counters,
    /// Unix time (ms) of the last thing that happened in the session.
    pub last_activity_ms: Option<u64>,
    /// Its owner locked it to new performers.
    pub locked: bool,
}

impl LiveView {
    fn from_snapshot(s: Snapshot) -> LiveView {
        LiveView {
            performers: s.performers,
            counters: s.counters,
            last_activity_ms: s.last_activity_ms,
            locked: s.locked,
        }
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
            EventKind::Lock { locked } => self.locked = *locked,
            _ => {}
        }
    }
}

/// Waits between attempts to (re)subscribe, growing to this.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Hub {
    /// Starts following session `id`'s server (until the session ends).
    /// `first`: a subscription already open (a start's, opened right after arming), used
    /// before any new one.
    pub(super) fn follow(self: &Arc<Self>, id: &str, name: &str, access: ControlAccess, first: Option<Subscription>) {
        // Its own token, not the hub's shutdown: at shutdown the session is ended like any
        // other, and its last events are still taken in (`drain_follow`).
        let stop = CancellationToken::new();
        // Registry, then live (the hub's lock order), held together: a session ended
        // meanwhile is not followed at all, so nothing is left behind.
        let registry = lock(&self.registry);
        let Some(session) = registry.by_id(id) else { return };
        let recorder = self.archive.get().map(|archive| {
            let started = session.created.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64);
            let md5 = session.password_md5.as_ref().map(|m| m.expose_secret().to_string());
            Recorder::begin(archive.clone(), id, name, started.unwrap_or(0), md5)
        });
        let followed = Followed {
            recorder,
            task: None,
            view: LiveView::default(),
            stop: stop.clone(),
            doc: None,
            feed: None,
            public: false,
            viewers: 0,
            name: name.to_string(),
            snapshot_text: None,
            counted: None,
            stats: Stats::default(),
        };
        self.live.insert(id, followed);
        drop(registry);
        let task = tokio::spawn(self.clone().subscribe_loop(id.to_string(), access, stop, first));
        self.live.with(id, |f| f.task = Some(task));
    }

    /// Waits (at most `limit`) for session `id`'s event stream to end: once its server has
    /// been told to end, every event it sent before exiting has been taken in.
    pub(super) async fn drain_follow(&self, id: &str, limit: Duration) {
        let task = self.live.with(id, |f| f.task.take()).flatten();
        if let Some(task) = task {
            if tokio::time::timeout(limit, task).await.is_err() {
                debug!(id, "the session's event stream did not end in time");
            }
        }
    }

    /// Stops following session `id`, which ended for `reason`: its viewers hear why and are
    /// let go, its recording gets the final code.
    pub(super) fn unfollow(&self, id: &str, reason: &EndReason) {
        self.links.forget_session(id);
        let Some(followed) = self.live.remove(id) else { return };
        let mut followed = lock(&followed);
        followed.stop.cancel();
        if let Some(reason) = reason.audience_message() {
            followed.publish(&LiveMessage::Ended { reason });
        }
        if let Some(recorder) = followed.recorder.take() {
            recorder.finish(&reason.archive_reason(), followed.doc.as_ref().map(|(d, _)| d));
        }
    }

    /// The live view of session `id`, if the hub follows it.
    pub fn live_view(&self, id: &str) -> Option<LiveView> {
        self.live.with(id, |f| f.view.clone())
    }

    async fn subscribe_loop(
        self: Arc<Self>,
        id: String,
        access: ControlAccess,
        stop: CancellationToken,
        mut first: Option<Subscription>,
    ) {
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() && lock(&self.registry).by_id(&id).is_some() {
            if self.subscribe_once(&id, &access, &stop, &mut first).await {
                backoff = Duration::from_millis(100);
            }
            if lock(&self.registry).by_id(&id).is_none() {
                break; // the session ended: its stream ran to its end
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One subscription, until it breaks or `stop`. True if it got as far as a snapshot.
    async fn subscribe_once(
        &self,
        id: &str,
        access: &ControlAccess,
        stop: &CancellationToken,
        first: &mut Option<Subscription>,
    ) -> bool {
        let timeout = super::control::CONTROL_TIMEOUT;
        let subscribed = async {
            if let Some(open) = first.take() {
                return Ok(open);
            }
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
        self.live.with(id, |f| f.resync(snapshot));
        let mut timer = tokio::time::interval(DOCUMENT_EVERY);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer.reset();
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return true,
                e = events.next() => e,
                _ = timer.tick() => {
                    self.live.with(id, Followed::keep_document);
                    continue;
                }
            };
            let Ok(Some(event)) = event else { return true };
            match &event.kind {
                EventKind::Operation { ops, .. } => {
                    self.metrics.operation();
                    self.metrics.characters(ops.inserted_chars(), ops.deleted_chars());
                }
                EventKind::Evaluate { .. } => self.metrics.evaluation(),
                _ => {}
            }
            let in_step = self.live.with(id, |f| f.apply(&event)).unwrap_or(true);
            if !in_step {
                warn!(id, seq = event.seq, "the session's document went out of step; resubscribing");
                return true;
            }
        }
    }
}
